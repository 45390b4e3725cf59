//! kflow's rules: the pipeline stages. Each rule is a pure function of its
//! params and input artifacts; the engine decides when and where it runs.

pub mod cmd;
mod fanout;

use std::sync::Arc;

use kflow_engine::RuleRegistry;

/// Every rule a user can declare in graph files.
pub fn registry() -> RuleRegistry {
    let mut rules = RuleRegistry::new();
    rules.register(Arc::new(cmd::Cmd));
    rules
}

/// Adds the rules that exist only to test the engine (`test_fanout`).
pub fn register_test_rules(rules: &mut RuleRegistry) {
    rules.register(Arc::new(fanout::FanOut));
}
