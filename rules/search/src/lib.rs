//! kflow's search spaces and strategies.
