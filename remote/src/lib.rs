//! Remote execution over the Remote Execution API (REAPI v2).
//!
//! - `execute`: the engine's [`kflow_engine::Executor`] on a REAPI
//!   Execution service: an action's input root and command go to the
//!   server's CAS, the result's files come back into the local store.
//! - `worker`: a bot on the Remote Workers API (BuildGrid's `Bots`
//!   service) that runs any REAPI command in a private directory.
//! - `bots`: the few Remote Workers API messages, which the
//!   `bazel-remote-apis` crate does not carry.

pub mod bots;
pub mod execute;
pub mod tree;
pub mod worker;
