//! `kflow device-sim` serves a simulated board over TCP and over a serial
//! line (a pseudo-terminal pair from socat): a model generated from an
//! izer reference case flashes, runs, and gives the same output and cycles
//! as the in-process `sim://` board.

mod common;

use common::board::{model, start_serial, start_tcp};
use kflow_ai8x_board::connect;
use kflow_device::{Client, DeviceUrl, LinkTimeouts, RetryPolicy};

#[test]
fn device_sim_over_tcp_runs_a_generated_model_like_the_in_process_board() {
    let (_board, url) = start_tcp();
    let (image, input_len) = model();
    let input: Vec<u8> = (0..input_len).map(|i| (i % 7) as u8).collect();
    let run = |mut client: Client<Box<dyn kflow_device::Transport>>| {
        client.flash(&image, |_| {}).unwrap();
        client.infer(&input).unwrap()
    };
    let tcp: DeviceUrl = url.parse().unwrap();
    let over_tcp = run(connect(&tcp, LinkTimeouts::default(), RetryPolicy::default()).unwrap());
    let in_process = run(connect(
        &"sim://max78002".parse().unwrap(),
        LinkTimeouts::default(),
        RetryPolicy::default(),
    )
    .unwrap());
    assert_eq!(over_tcp, in_process);
    assert!(over_tcp.statistics.cycles.is_some_and(|c| c > 1));
}

#[test]
fn device_sim_over_a_pseudo_terminal_pair_runs_a_generated_model() {
    let board = start_serial();
    let (image, input_len) = model();
    let input: Vec<u8> = (0..input_len).map(|i| (i % 5) as u8).collect();
    let run = |mut client: Client<Box<dyn kflow_device::Transport>>| {
        client.flash(&image, |_| {}).unwrap();
        client.infer(&input).unwrap()
    };
    let serial: DeviceUrl = board.url.parse().unwrap();
    let over_serial = run(connect(&serial, LinkTimeouts::default(), RetryPolicy::default()).unwrap());
    let in_process = run(connect(
        &"sim://max78002".parse().unwrap(),
        LinkTimeouts::default(),
        RetryPolicy::default(),
    )
    .unwrap());
    assert_eq!(over_serial, in_process);
}
