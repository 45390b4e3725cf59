//! kflow's search spaces and strategies: which networks a search may try,
//! and, deterministically, which one it tries next.

mod error;
pub mod genome;
pub mod grid;
pub mod space;
pub mod strategy;

pub use error::SpaceError;
pub use genome::Genome;
pub use space::Space;
pub use strategy::{Evaluated, Evolution, evolve, random};
