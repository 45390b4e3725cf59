//! `kflow device-sim` serves a simulated board over TCP and over a serial
//! line (a pseudo-terminal pair from socat): a model generated from an
//! izer reference case flashes, runs, and gives the same output and cycles
//! as the in-process `sim://` board.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kflow_ai8x_board::{ModelImage, connect};
use kflow_device::{Client, DeviceUrl, LinkTimeouts, RetryPolicy};

const CASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/rules/ai8x/tests/data/izer-reference/001-conv2d"
);

/// The image of the reference case and an input in `cnn_load_input` words
/// (all zero but a ramp, enough to compare two boards).
fn model() -> (Vec<u8>, usize) {
    let read = |f: &str| std::fs::read(format!("{CASE}/{f}")).unwrap();
    let network = kflow_ai8x::parse_network(&String::from_utf8(read("network.yaml")).unwrap()).unwrap();
    let weights_file = read("weights.safetensors");
    let weights = kflow_ai8x::Weights::from_safetensors(&weights_file).unwrap();
    let report = kflow_ai8x::check(
        kflow_ai8x::Device::Max78002,
        &network,
        &weights,
        kflow_ai8x::Shape::new(40, 12, 12),
    );
    let allocation = report.allocation.unwrap();
    let values = kflow_ai8x::int8_values(&weights_file).unwrap();
    let program = kflow_ai8x::codegen::program(&allocation, &values).unwrap();
    let files = kflow_ai8x_codegen::generate(&program).unwrap().files;
    let image = ModelImage::new(
        &program,
        files["cnn_model.regs"].clone(),
        files["cnn_model.bin"].clone(),
    )
    .unwrap();
    let loaded =
        kflow_ai8x_board::SimBoard::configure(kflow_ai8x_codegen::Device::Max78002, &image.to_bytes().unwrap())
            .unwrap();
    (image.to_bytes().unwrap(), loaded.input_bytes())
}

/// Kills a child process when dropped, so that a failing assertion does
/// not leave it running.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn device_sim_over_tcp_runs_a_generated_model_like_the_in_process_board() {
    let mut board = Killed(
        Command::new(env!("CARGO_BIN_EXE_kflow"))
            .args(["device-sim", "--board", "max78002", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(board.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("tcp://127.0.0.1:"), "{line}");

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
    let _socat = Killed(
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
    let _board = Killed(child);
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
