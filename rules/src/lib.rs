//! kflow's rules: the pipeline stages. Each rule is a pure function of its
//! params and input artifacts; the engine decides when and where it runs.
//! The domain code lives in the crates beside this one (`model`, `data`,
//! `train`, `search`, `host`); these modules connect it to the engine.

pub mod cmd;
mod dataset;
mod evaluate;
mod fanout;
mod generate;
mod json;
mod model;
mod search;
mod space;
mod split;
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
    rules.register(Arc::new(search::SearchRule));
    rules
}

/// Adds the rules that exist only to test the engine (`test_fanout`).
pub fn register_test_rules(rules: &mut RuleRegistry) {
    rules.register(Arc::new(fanout::FanOut));
}
