//! `kflow device-sim` serves a simulated board over TCP and over a serial
//! line (a pseudo-terminal pair from socat): a model generated from an
//! izer reference case flashes, runs, and gives the same output and cycles
//! as the in-process `sim://` board.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::KillOnDrop;
use common::board::{model, start_tcp};
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
    assert!(over_tcp.statistics.cycles > 1);
}

#[test]
fn device_sim_over_a_pseudo_terminal_pair_runs_a_generated_model() {
    let dir = tempfile::tempdir().unwrap();
    let (board_end, host_end) = (dir.path().join("board"), dir.path().join("host"));
    let _socat = KillOnDrop(
        Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", board_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", host_end.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run socat: install the Debian package socat (scripts/test.sh does)"),
    );
    let start = std::time::Instant::now();
    while !(board_end.exists() && host_end.exists()) {
        assert!(start.elapsed().as_secs() < 10, "socat made no pseudo-terminals");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_kflow"))
        .args(["device-sim", "--board", "max78002", "--serial"])
        .arg(&board_end)
        .args(["--baud", "921600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _board = KillOnDrop(child);
    assert!(line.contains("serial://"), "{line}");

    let (image, input_len) = model();
    let input: Vec<u8> = (0..input_len).map(|i| (i % 5) as u8).collect();
    let run = |mut client: Client<Box<dyn kflow_device::Transport>>| {
        client.flash(&image, |_| {}).unwrap();
        client.infer(&input).unwrap()
    };
    let serial: DeviceUrl = format!("serial://{}?baud=921600", host_end.display()).parse().unwrap();
    let over_serial = run(connect(&serial, LinkTimeouts::default(), RetryPolicy::default()).unwrap());
    let in_process = run(connect(
        &"sim://max78002".parse().unwrap(),
        LinkTimeouts::default(),
        RetryPolicy::default(),
    )
    .unwrap());
    assert_eq!(over_serial, in_process);
}
