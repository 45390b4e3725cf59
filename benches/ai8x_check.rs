//! `kflow ai8x check` on a 100-layer network for the MAX78002: the whole
//! command as a process (reading the YAML and the weights, every rule,
//! the allocation, printing), and the check alone in-process.
//!
//! The network: 100 conv1d layers, 16 → 16 channels, kernel 3, pad 1,
//! ReLU, over a 16 × 256 input, ping-ponging between the two halves of
//! data memory; weights are seeded int8 values.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LAYERS: usize = 100;
const CHANNELS: usize = 16;
const LENGTH: usize = 256;
const RUNS: usize = 21;

fn yaml() -> String {
    let mut text = String::from("arch: bench\ndataset: none\nlayers:\n");
    for i in 0..LAYERS {
        let (in_offset, out_offset) = if i % 2 == 0 { (0, 0xa000) } else { (0xa000, 0) };
        text.push_str(&format!(
            "  - processors: 0x000000000000ffff\n    output_processors: 0x000000000000ffff\n    \
             in_offset: 0x{in_offset:04x}\n    out_offset: 0x{out_offset:04x}\n    op: conv1d\n    \
             kernel_size: 3\n    pad: 1\n    activate: ReLU\n    quantization: 8\n    output_shift: 0\n"
        ));
    }
    text
}

fn weights() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let data: Vec<Vec<u8>> = (0..LAYERS)
        .map(|_| (0..CHANNELS * CHANNELS * 3).map(|_| next()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I8, vec![CHANNELS, CHANNELS, 3], d)
                .expect("a tensor view");
            (format!("{i}.weight"), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("safetensors")
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (net, w) = (dir.path().join("net.yaml"), dir.path().join("w.safetensors"));
    std::fs::write(&net, yaml()).expect("write yaml");
    std::fs::write(&w, weights()).expect("write weights");

    let command = |net: &Path, w: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kflow"));
        c.args(["ai8x", "check", "--device", "max78002", "--network"])
            .arg(net)
            .arg("--weights")
            .arg(w)
            .args(["--input-shape", &format!("{CHANNELS},{LENGTH}")]);
        c
    };
    let first = command(&net, &w).output().expect("run kflow");
    assert!(
        first.status.success(),
        "the bench network must fit:\n{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let process: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let out = command(&net, &w).output().expect("run kflow");
            assert!(out.status.success());
            start.elapsed()
        })
        .collect();

    let text = std::fs::read_to_string(&net).expect("read yaml");
    let bytes = std::fs::read(&w).expect("read weights");
    let in_process: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let network = kflow_ai8x::parse_network(&text).expect("yaml");
            let weights = kflow_ai8x::Weights::from_safetensors(&bytes).expect("weights");
            let report = kflow_ai8x::check(
                kflow_ai8x::Device::Max78002,
                &network,
                &weights,
                kflow_ai8x::Shape::new(CHANNELS as u32, LENGTH as u32, 1),
            );
            assert!(report.passed);
            start.elapsed()
        })
        .collect();
    let (p, i) = (median(process), median(in_process));
    println!("kflow ai8x check, {LAYERS} conv1d layers ({CHANNELS}x{LENGTH}), MAX78002, medians of {RUNS}:");
    println!("  whole command (process):      {:8.2} ms", p.as_secs_f64() * 1e3);
    println!(
        "  parse + check, in-process:    {:8.2} ms ({:.1} µs per layer)",
        i.as_secs_f64() * 1e3,
        i.as_secs_f64() * 1e6 / LAYERS as f64
    );
}
