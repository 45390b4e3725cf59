//! kflow's rules: the pipeline stages. Each rule is a pure function of its
//! params and input artifacts; the engine decides when and where it runs.
//! The domain code lives in the crates beside this one (`model`, `data`,
//! `train`, `search`, `host`, `quant`, `platform`); these modules connect it to the engine.

mod automl;
mod check;
pub mod cmd;
mod code;
mod codegen;
mod dataset;
pub mod device;
mod evaluate;
mod evaluate_device;
mod evaluate_sim;
mod fanout;
mod flash;
mod generate;
mod inputs;
mod json;
mod model;
mod platform;
mod prune;
mod quantize;
mod report;
mod space;
mod split;
mod still;
mod synthesize;
mod train;

use std::sync::Arc;

use kflow_engine::RuleRegistry;

/// Every rule a user can declare in graph files.
pub fn registry() -> RuleRegistry {
    let mut rules = RuleRegistry::new();
    rules.register(Arc::new(cmd::Cmd));
    rules.register(Arc::new(dataset::DatasetRule));
    rules.register(Arc::new(space::SpaceRule));
    rules.register(Arc::new(model::ModelRule));
    rules.register(Arc::new(generate::GenerateRule));
    rules.register(Arc::new(train::TrainRule));
    rules.register(Arc::new(evaluate::EvaluateRule));
    rules.register(Arc::new(prune::PruneRule));
    rules.register(Arc::new(quantize::QuantizeRule));
    rules.register(Arc::new(platform::PlatformRule));
    rules.register(Arc::new(check::CheckRule));
    rules.register(Arc::new(synthesize::SynthesizeRule));
    rules.register(Arc::new(codegen::CodegenRule));
    rules.register(Arc::new(flash::FlashRule));
    rules.register(Arc::new(evaluate_device::EvaluateDeviceRule));
    rules.register(Arc::new(automl::AutomlRule));
    rules.register(Arc::new(report::ReportRule));
    rules
}

/// Adds the rules that exist only to test the engine (`test_fanout`).
pub fn register_test_rules(rules: &mut RuleRegistry) {
    rules.register(Arc::new(fanout::FanOut));
}
