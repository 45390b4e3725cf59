//! The comparison of kflow's generated accelerator program with ADI's
//! izer on the reference cases of tests/data/izer-reference.

pub mod case;
pub mod compare;
pub mod run;
