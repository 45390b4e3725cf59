//! kflow's host evaluation.
