//! kflow's datasets.
