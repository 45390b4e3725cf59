//! kflow's training.
