//! The set of rules a build knows, by name. The CLI fills it from
//! `kflow-rules`; the engine only looks rules up.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::rule::Rule;

#[derive(Clone, Default)]
pub struct RuleRegistry {
    rules: BTreeMap<&'static str, Arc<dyn Rule>>,
}

impl RuleRegistry {
    pub fn new() -> RuleRegistry {
        RuleRegistry::default()
    }

    pub fn register(&mut self, rule: Arc<dyn Rule>) {
        self.rules.insert(rule.name(), rule);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Rule>> {
        self.rules.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.rules.keys().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Rule>> {
        self.rules.values()
    }
}
