//! The property the fast simulator is held to: on random valid networks it
//! computes every layer's output exactly as the simple reference does.

mod random_network;
mod reference;

use kflow_ai8x_sim::{Output, SimOptions, simulate_all};

const NETWORKS: u64 = 5000;
const LARGE_NETWORKS: u64 = 40;

fn as_i64(output: &Output) -> Vec<i64> {
    match output {
        Output::Int8(t) => t.data.iter().map(|&v| i64::from(v)).collect(),
        Output::Int32(t) => t.data.iter().map(|&v| i64::from(v)).collect(),
    }
}

/// Runs both simulators on every network; returns the number of layers.
fn compare(seeds: std::ops::Range<u64>, large: bool) -> usize {
    let mut layers = 0;
    for seed in seeds {
        let case = random_network::case(seed, large);
        let options = SimOptions {
            avg_pool_rounding: case.avg_rounding,
        };
        let fast = simulate_all(&case.net, &case.weights, &case.input, options)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{:#?}", case.net));
        let slow = reference::run(&case.net, &case.weights, &case.input.data, case.avg_rounding);
        for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
            assert_eq!(
                f.shape(),
                s.shape,
                "seed {seed}, layer {i}: shape\n{:#?}",
                case.net.layers[i]
            );
            assert!(
                as_i64(f) == s.data,
                "seed {seed}, layer {i} differs\n{:#?}",
                case.net.layers[i]
            );
        }
        layers += fast.len();
    }
    layers
}

#[test]
fn fast_simulator_equals_reference_on_random_valid_networks() {
    let layers = compare(0..NETWORKS, false);
    assert!(
        layers as u64 >= 2 * NETWORKS,
        "only {layers} layers in {NETWORKS} networks"
    );
}

#[test]
fn fast_simulator_equals_reference_on_random_large_networks() {
    let layers = compare(0..LARGE_NETWORKS, true);
    assert!(
        layers as u64 >= 2 * LARGE_NETWORKS,
        "only {layers} layers in {LARGE_NETWORKS} networks"
    );
}
