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

/// `kflow device-sim --board max78002` listening on a free port of
/// 127.0.0.1, and the `tcp://` URL it printed.
pub fn start_tcp() -> (KillOnDrop, String) {
    let mut board = KillOnDrop(
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
    (board, url)
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
