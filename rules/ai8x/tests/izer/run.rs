//! kflow's side of a case: the network loaded and allocated as
//! `kflow ai8x synthesize` does, the generated C compiled on the host with
//! `CNN_WRITE32`/`CNN_WRITE8` recording (the codegen crate's
//! tests/data/shim.h), and run in the izer's call order; plus kflow's
//! simulation of input.npy.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use kflow_ai8x::{Allocation, Device, Operator, Shape};
use kflow_ai8x_codegen::InputLayout;
use kflow_ai8x_sim::{Output, SimOptions, Tensor};

use super::case::{Case, read_npy};

const SHIM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ai8x-codegen/tests/data/shim.h");
const HOST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/izer_host.c");

/// What kflow does with a case.
pub struct Run {
    pub allocation: Allocation,
    /// Generated and run, or why not.
    pub trace: Result<Trace, String>,
    /// kflow's simulated output (C order), or why there is none.
    pub output: Result<Vec<i32>, String>,
}

/// The accelerator writes of the generated driver, by phase.
#[derive(Default)]
pub struct Trace {
    pub writes: BTreeMap<String, Vec<(u32, u32)>>,
    /// `cnn_load_weights()`'s mexpress chunks: the words written after
    /// each "set address" byte, from that address on.
    pub kernels: Vec<(u32, Vec<u32>)>,
    /// The address each output byte of `cnn_unload()` was read from.
    pub unload: Vec<u32>,
    /// The registers `cnn_init()` reads (its polls), in order.
    pub init_reads: Vec<u32>,
}

/// `[C, L]` is `C × L × 1` on the device.
fn device_shape(dims: &[usize]) -> Shape {
    match *dims {
        [c, l] => Shape::new(c as u32, l as u32, 1),
        [c, h, w] => Shape::new(c as u32, h as u32, w as u32),
        _ => panic!("input of {} dimensions", dims.len()),
    }
}

pub fn run(case: &Case) -> Result<Run, String> {
    let device: Device = case.izer["device"].as_str().unwrap().to_lowercase().parse().unwrap();
    let text = std::fs::read_to_string(case.file("network.yaml")).unwrap();
    let network = kflow_ai8x::parse_network(&text).map_err(|e| format!("network.yaml: {e}"))?;
    let weights_file = std::fs::read(case.file("weights.safetensors")).unwrap();
    let weights = kflow_ai8x::Weights::from_safetensors(&weights_file).map_err(|e| e.to_string())?;
    let input = read_npy(&case.file("input.npy"));
    let shape = device_shape(&input.shape);
    let report = kflow_ai8x::check(device, &network, &weights, shape);
    let allocation = match report.allocation {
        Some(a) if report.passed => a,
        _ => {
            let why: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
            return Err(format!("check: {}", why.join("; ")));
        }
    };
    let values = kflow_ai8x::int8_values(&weights_file).map_err(|e| e.to_string())?;
    let output = simulate(device, &allocation, shape, &values, &input.values);
    let trace = kflow_ai8x::codegen::program(&allocation, &values)
        .map_err(|e| e.to_string())
        .and_then(|program| {
            let generated = kflow_ai8x_codegen::generate(&program).map_err(|e| e.to_string())?;
            let chw: Vec<i8> = input.values.iter().map(|v| *v as i8).collect();
            let words = InputLayout::new(&program).pack(&chw);
            Ok(run_on_host(device, &generated.files, &words))
        });
    Ok(Run {
        allocation,
        trace,
        output,
    })
}

fn simulate(
    device: Device,
    allocation: &Allocation,
    shape: Shape,
    values: &BTreeMap<usize, kflow_ai8x::Int8Layer>,
    input: &[i32],
) -> Result<Vec<i32>, String> {
    let layers: Vec<kflow_ai8x::HwLayer> = allocation.layers.iter().map(|a| a.layer.clone()).collect();
    let (network, weights) = kflow_ai8x::sim::to_sim(device, &layers, shape, values);
    let data = input.iter().map(|v| *v as i8).collect();
    let tensor = Tensor::new(network.input, data).ok_or("input shape")?;
    match kflow_ai8x_sim::simulate(&network, &weights, &tensor, SimOptions::default()).map_err(|e| e.to_string())? {
        Output::Int8(t) => Ok(t.data.into_iter().map(i32::from).collect()),
        Output::Int32(t) => Ok(t.data),
    }
}

fn run_on_host(device: Device, files: &BTreeMap<String, Vec<u8>>, input: &[u32]) -> Trace {
    let dir = tempfile::tempdir().unwrap();
    for name in ["cnn_model.c", "cnn_model.h", "cnn_model_weights.h"] {
        std::fs::write(dir.path().join(name), &files[name]).unwrap();
    }
    let bytes: Vec<u8> = input.iter().flat_map(|w| w.to_le_bytes()).collect();
    std::fs::write(dir.path().join("input.bin"), bytes).unwrap();
    let (base, stride) = match device {
        Device::Max78000 => (0x5010_0000u32, 0x40_0000u32),
        Device::Max78002 => (0x5100_0000, 0x100_0000),
    };
    let exe = dir.path().join("host");
    let output = Command::new("gcc")
        .args(["-std=c99", "-O0", "-w", "-DCNN_MODEL_EMBED_WEIGHTS", "-I."])
        .args(["-include", SHIM])
        .arg(format!("-DSHIM_CTL_BASE=0x{base:08x}u"))
        .arg(format!("-DSHIM_QUADRANT_STRIDE=0x{stride:08x}u"))
        .args(["cnn_model.c", HOST, "-o"])
        .arg(&exe)
        .current_dir(dir.path())
        .output()
        .expect("cannot run gcc: install the Debian package gcc");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = Command::new(&exe).arg(dir.path().join("input.bin")).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    parse_trace(&String::from_utf8(output.stdout).unwrap(), dir.path())
}

fn parse_trace(text: &str, dir: &Path) -> Trace {
    let mut trace = Trace::default();
    let mut phase = String::new();
    let hex = |s: &str| u32::from_str_radix(s, 16).unwrap();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            ["#", name] => phase = name.to_owned(),
            ["rc", name, value] => assert_eq!(value, "0", "{name} failed in {}", dir.display()),
            ["w8", a, "01"] if phase == "kernels" => trace.kernels.push((hex(a) & !1, Vec::new())),
            ["w32", _, v] if phase == "kernels" => trace.kernels.last_mut().expect("set address first").1.push(hex(v)),
            ["w32", a, v] => trace.writes.entry(phase.clone()).or_default().push((hex(a), hex(v))),
            ["out", _, a] => trace.unload.push(hex(a)),
            ["r32", a] => trace.init_reads.push(hex(a)),
            _ => panic!("unexpected line `{line}`"),
        }
    }
    trace
}

/// A short name for a layer's kind, for the ranked list of differences.
pub fn layer_kind(allocation: &Allocation, layer: usize) -> String {
    let Some(a) = allocation.layers.get(layer) else {
        return format!("layer {layer}?");
    };
    let l = &a.layer;
    let mut kind = match l.operator {
        Operator::Conv1d => format!("conv1d k{}", l.kernel[0]),
        Operator::Conv2d if l.is_depthwise() => format!("conv2d {}x{} dw", l.kernel[0], l.kernel[1]),
        Operator::Conv2d => format!("conv2d {}x{}", l.kernel[0], l.kernel[1]),
        Operator::ConvTranspose2d => "convtranspose2d".to_owned(),
        Operator::Linear if l.flatten => "flatten+linear".to_owned(),
        Operator::Linear => "linear".to_owned(),
        Operator::None if l.eltwise.is_some() => "element-wise".to_owned(),
        Operator::None => "passthrough".to_owned(),
    };
    if l.eltwise.is_some() && l.operator != Operator::None {
        kind = format!("element-wise+{kind}");
    }
    if layer + 1 == allocation.layers.len() {
        kind.push_str(" (last)");
    }
    kind
}
