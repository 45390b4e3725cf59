//! kflow's build engine. It knows labels, graph files, actions, keys, the
//! scheduler and build records, and nothing about machine learning: rules
//! plug in through [`Rule`], and the cache is reached only through
//! `kflow-cache`.

pub mod action_graph;
pub mod attrs;
pub mod build;
pub mod db;
pub mod diagnostic;
pub mod events;
pub mod explain;
pub mod graph_cache;
pub mod graph_file;
pub mod keys;
pub mod label;
pub mod materialize;
mod packing;
pub mod query;
pub mod registry;
pub mod remote_exec;
pub mod rule;
pub mod scheduler;
mod slots;
pub mod state;
pub mod target_graph;
mod timings;
pub mod watch;
pub mod workspace;

pub use attrs::{AttrSpec, AttrType, AttrValue, Attrs, Source, relative_path};
pub use diagnostic::Diagnostic;
pub use kflow_cache::{BlobRef, Digest};
pub use label::{Label, Pattern};
pub use registry::RuleRegistry;
pub use remote_exec::{ExecError, ExecRequest, Executor};
pub use rule::{
    ActionContext, ActionDecl, ActionError, ArtifactRef, ChildInput, ChildResult, ChildSpec, InputFile, Outcome,
    Planner, Rule, Status, Target, TargetPlan,
};
pub use workspace::Workspace;
