//! A simulated board for the device tests: `kflow device-sim` on a free
//! loopback port, and a model image generated from an izer reference case
//! to flash to it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kflow_ai8x_board::ModelImage;

use super::KillOnDrop;

const CASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/rules/ai8x/tests/data/izer-reference/001-conv2d"
);

/// `kflow device-sim --board max78002 ARGS`, once it has said where it
/// serves, and the last word of what it said (the board's URL).
pub fn start(args: &[&str]) -> (KillOnDrop, String) {
    let mut board = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kflow"))
            .args(["device-sim", "--board", "max78002"])
            .args(args)
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
    (board, url)
}

/// `kflow device-sim --board max78002` listening on a free port of
/// 127.0.0.1, and the `tcp://` URL it printed.
pub fn start_tcp() -> (KillOnDrop, String) {
    let (board, url) = start(&["--listen", "127.0.0.1:0"]);
    assert!(url.starts_with("tcp://127.0.0.1:"), "{url}");
    (board, url)
}

/// `kflow device-sim` on one end of a pseudo-terminal pair (socat), and
/// the `serial://` URL of the other end, for the host.
pub struct SerialBoard {
    pub url: String,
    _board: KillOnDrop,
    _socat: KillOnDrop,
    _dir: tempfile::TempDir,
}

pub fn start_serial() -> SerialBoard {
    let dir = tempfile::tempdir().unwrap();
    let (board_end, host_end) = (dir.path().join("board"), dir.path().join("host"));
    let socat = KillOnDrop(
        Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", board_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", host_end.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run socat: install the Debian package socat (scripts/test.sh does)"),
    );
    let start_time = std::time::Instant::now();
    while !(board_end.exists() && host_end.exists()) {
        assert!(start_time.elapsed().as_secs() < 10, "socat made no pseudo-terminals");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (board, said) = start(&["--serial", &board_end.display().to_string(), "--baud", "921600"]);
    assert!(said.starts_with("serial://"), "{said}");
    SerialBoard {
        url: format!("serial://{}?baud=921600", host_end.display()),
        _board: board,
        _socat: socat,
        _dir: dir,
    }
}

/// The image of the reference case and the length of its input in
/// `cnn_load_input` words (as bytes).
pub fn model() -> (Vec<u8>, usize) {
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
