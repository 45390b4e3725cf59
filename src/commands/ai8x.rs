//! `kflow ai8x`: the accelerator toolchain for people who already have an
//! ai8x network YAML and its integer weights (SPEC.md §9).

use std::path::Path;

use kflow_ai8x::{CheckReport, Device, Shape};
use kflow_ai8x_sim::{Output, SimOptions, Tensor};
use kflow_engine::Diagnostic;
use ndarray::{ArrayD, IxDyn};

use super::on_every_core;
use crate::Failure;
use crate::cli::{Ai8xArgs, Ai8xCommand, Ai8xInputShape, Ai8xNetwork, OutputFormat};
use crate::output::line;

pub fn run(args: Ai8xArgs) -> Result<(), Failure> {
    match args.command {
        Ai8xCommand::Check { net, shape, output } => check(&net, &shape, output),
        Ai8xCommand::Simulate {
            net,
            input,
            output,
            avg_pool_rounding,
        } => simulate(&net, &input, &output, avg_pool_rounding),
        Ai8xCommand::Synthesize { net, shape, out } => synthesize(&net, &shape, &out),
    }
}

/// A problem with what the user gave: exit code 2.
fn usage(message: impl Into<String>) -> Failure {
    Failure::Graph(Diagnostic::new(message))
}

struct Loaded {
    device: Device,
    network: kflow_ai8x::Network,
    weights_file: Vec<u8>,
    weights: kflow_ai8x::Weights,
}

fn load(net: &Ai8xNetwork) -> Result<Loaded, Failure> {
    let device: Device = net.device.parse().map_err(|e| usage(format!("--device: {e}")))?;
    let text = std::fs::read_to_string(&net.network)
        .map_err(|e| usage(format!("cannot read {}: {e}", net.network.display())))?;
    let network = kflow_ai8x::parse_network(&text).map_err(|e| usage(format!("{}: {e}", net.network.display())))?;
    let weights_file =
        std::fs::read(&net.weights).map_err(|e| usage(format!("cannot read {}: {e}", net.weights.display())))?;
    let weights = kflow_ai8x::Weights::from_safetensors(&weights_file)
        .map_err(|e| usage(format!("{}: {e}", net.weights.display())))?;
    Ok(Loaded {
        device,
        network,
        weights_file,
        weights,
    })
}

/// `[C, L]` is `C × L × 1` on the device; `[C, H, W]` as it is.
fn device_shape(dims: &[usize]) -> Result<Shape, String> {
    let d = |v: usize| u32::try_from(v).map_err(|_| format!("dimension {v} is too large"));
    match *dims {
        [c, l] => Ok(Shape::new(d(c)?, d(l)?, 1)),
        [c, h, w] => Ok(Shape::new(d(c)?, d(h)?, d(w)?)),
        _ => Err(format!(
            "the input must be [C, L] or [C, H, W], not {} dimensions",
            dims.len()
        )),
    }
}

fn read_input(path: &Path) -> Result<ArrayD<i8>, Failure> {
    ndarray_npy::read_npy(path).map_err(|e| usage(format!("{}: not an int8 .npy array: {e}", path.display())))
}

fn input_shape(shape: &Ai8xInputShape) -> Result<Shape, Failure> {
    match (&shape.input, &shape.input_shape) {
        (Some(path), _) => {
            device_shape(read_input(path)?.shape()).map_err(|e| usage(format!("{}: {e}", path.display())))
        }
        (None, Some(dims)) => {
            let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            device_shape(&dims).map_err(|e| usage(format!("--input-shape: {e}")))
        }
        (None, None) => Err(usage(
            "the network file does not say its input's size: give --input-shape C,L (or C,H,W) or a sample --input x.npy",
        )),
    }
}

fn check(net: &Ai8xNetwork, shape: &Ai8xInputShape, output: OutputFormat) -> Result<(), Failure> {
    let loaded = load(net)?;
    let input = input_shape(shape)?;
    let report = kflow_ai8x::check(loaded.device, &loaded.network, &loaded.weights, input);
    match output {
        OutputFormat::Json => {
            let json = serde_json::json!({
                "report": report,
                "timing": report.allocation.as_ref().map(kflow_ai8x::timing::accelerator),
                "software_baseline": report.allocation.as_ref().map(kflow_ai8x::timing::software_baseline),
            });
            line(serde_json::to_string_pretty(&json).unwrap_or_default());
        }
        OutputFormat::Text => print_report(&report),
    }
    if report.passed {
        Ok(())
    } else {
        Err(Failure::Build(Some(format!(
            "the network does not fit the {}: {} violation(s)",
            loaded.device,
            report.violations.len()
        ))))
    }
}

fn print_report(report: &CheckReport) {
    for v in &report.violations {
        line(format!("error: {v}"));
    }
    for w in &report.warnings {
        line(format!("warning: {w}"));
    }
    if let Some(r) = &report.resources {
        let max_columns = r.kernel_columns_per_processor.iter().max().copied().unwrap_or(0);
        line(format!(
            "{}: {} layers, {} weight bytes + {} bias bytes = {} bytes, {} MACs",
            report.device, r.layers, r.weight_bytes, r.bias_bytes, r.total_bytes, r.macs
        ));
        line(format!(
            "kernel memory: {} bytes allocated, at most {max_columns} columns on one processor; bias bytes per quadrant: {:?}",
            r.kernel_bytes_allocated, r.bias_bytes_per_quadrant
        ));
        for l in &r.per_layer {
            line(format!(
                "  layer {:>3} {:<16} {}x{}x{} -> {}x{}x{}  processors {:>2} in / {:>2} out, passes {}/{}, offsets 0x{:04x} -> 0x{:04x}",
                l.index,
                l.op,
                l.input.channels,
                l.input.height,
                l.input.width,
                l.output.channels,
                l.output.height,
                l.output.width,
                l.processors,
                l.output_processors,
                l.in_passes,
                l.out_passes,
                l.in_offset,
                l.out_offset
            ));
        }
    }
    if let Some(a) = &report.allocation {
        print_timing(a);
    }
    if report.passed {
        line(format!("fits the {}", report.device));
    }
}

fn print_timing(allocation: &kflow_ai8x::Allocation) {
    let t = kflow_ai8x::timing::accelerator(allocation);
    let s = kflow_ai8x::timing::software_baseline(allocation);
    line(format!(
        "accelerator: {} cycles, {:.2} µs at {} MHz{}; Cortex-M4F software: {} instructions, {} cycles, {:.0} µs at {} MHz ({} cycles per instruction)",
        t.cycles,
        t.seconds * 1e6,
        t.clock_hz / 1_000_000,
        if t.validated {
            ""
        } else {
            " (estimate, model not validated on this device)"
        },
        s.instructions,
        s.cycles,
        s.seconds * 1e6,
        s.clock_hz / 1_000_000,
        s.cycles_per_instruction
    ));
}

fn simulate(net: &Ai8xNetwork, input_path: &Path, output_path: &Path, avg_pool_rounding: bool) -> Result<(), Failure> {
    let loaded = load(net)?;
    let input = read_input(input_path)?;
    let shape = device_shape(input.shape()).map_err(|e| usage(format!("{}: {e}", input_path.display())))?;
    let report = kflow_ai8x::check(loaded.device, &loaded.network, &loaded.weights, shape);
    let Some(allocation) = report.allocation.as_ref().filter(|_| report.passed) else {
        let reasons: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        return Err(Failure::Build(Some(format!(
            "the network does not run on the {}:\n{}",
            loaded.device,
            reasons.join("\n")
        ))));
    };
    let layers: Vec<kflow_ai8x::HwLayer> = allocation.layers.iter().map(|a| a.layer.clone()).collect();
    let values = kflow_ai8x::int8_values(&loaded.weights_file).map_err(|e| usage(e.to_string()))?;
    let (network, weights) = kflow_ai8x::sim::to_sim(loaded.device, &layers, shape, &values);
    let (data, _) = input.into_raw_vec_and_offset();
    let tensor = Tensor::new(network.input, data).ok_or_else(|| usage("the input's values do not match its shape"))?;
    // Large layers split their output channels over the cores.
    let result =
        on_every_core(|| kflow_ai8x_sim::simulate(&network, &weights, &tensor, SimOptions { avg_pool_rounding }))
            .map_err(|e| Failure::Build(Some(format!("simulation: {e}"))))?;
    let last = layers.last().ok_or_else(|| usage("the network has no layers"))?;
    let s = result.shape();
    // CHW as the user gave it: 1-D data stays [C, L]; a linear layer's
    // output is [C, 1, 1].
    let dims = if last.operator == kflow_ai8x::Operator::Linear {
        vec![s.channels, 1, 1]
    } else if input_rank(&tensor) == 2 {
        vec![s.channels, s.height]
    } else {
        vec![s.channels, s.height, s.width]
    };
    let written = match result {
        Output::Int8(t) => write_npy(output_path, &dims, t.data),
        Output::Int32(t) => write_npy(output_path, &dims, t.data),
    };
    written.map_err(|e| Failure::Build(Some(format!("cannot write {}: {e}", output_path.display()))))?;
    line(format!("wrote {} ({:?})", output_path.display(), dims));
    print_timing(allocation);
    Ok(())
}

/// 1-D inputs are stored `L × 1`.
fn input_rank(t: &Tensor<i8>) -> usize {
    if t.shape.width == 1 && t.shape.height > 1 { 2 } else { 3 }
}

fn write_npy<T: ndarray_npy::WritableElement>(path: &Path, dims: &[usize], data: Vec<T>) -> Result<(), String> {
    let array = ArrayD::from_shape_vec(IxDyn(dims), data).map_err(|e| e.to_string())?;
    ndarray_npy::write_npy(path, &array).map_err(|e| e.to_string())
}

fn synthesize(net: &Ai8xNetwork, shape: &Ai8xInputShape, out_dir: &Path) -> Result<(), Failure> {
    let loaded = load(net)?;
    let input = input_shape(shape)?;
    let report = kflow_ai8x::check(loaded.device, &loaded.network, &loaded.weights, input);
    let Some(allocation) = report.allocation.as_ref().filter(|_| report.passed) else {
        print_report(&report);
        return Err(Failure::Build(Some(format!(
            "the network does not fit the {}",
            loaded.device
        ))));
    };
    let arch = loaded.network.arch.clone();
    let yaml = kflow_ai8x::to_yaml(&allocation.to_network(&arch, &loaded.network.dataset));
    let allocation_json = serde_json::to_string_pretty(&serde_json::json!({
        "input": input,
        "allocation": allocation,
        "resources": report.resources,
        "timing": kflow_ai8x::timing::accelerator(allocation),
        "software_baseline": kflow_ai8x::timing::software_baseline(allocation),
    }))
    .map_err(|e| Failure::Build(Some(e.to_string())))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(out_dir)
            .and_then(|()| std::fs::write(out_dir.join(name), bytes))
            .map_err(|e| Failure::Build(Some(format!("cannot write {}: {e}", out_dir.join(name).display()))))
    };
    write("network.yaml", yaml.as_bytes())?;
    write("allocation.json", allocation_json.as_bytes())?;
    write("weights.safetensors", &loaded.weights_file)?;
    line(format!(
        "wrote network.yaml, allocation.json and weights.safetensors to {}",
        out_dir.display()
    ));
    print_timing(allocation);
    let values = kflow_ai8x::int8_values(&loaded.weights_file).map_err(|e| usage(e.to_string()))?;
    let generated = kflow_ai8x::codegen::program(allocation, &values)
        .map_err(|e| e.to_string())
        .and_then(|program| kflow_ai8x_codegen::generate(&program).map_err(|e| e.to_string()))
        .map_err(|e| Failure::Build(Some(format!("no C sources: {e}"))))?;
    for (name, bytes) in &generated.files {
        if let Some(parent) = out_dir.join(name).parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Failure::Build(Some(format!("cannot create {}: {e}", parent.display()))))?;
        }
        write(name, bytes)?;
    }
    line(format!(
        "wrote {} to {}",
        generated.files.keys().cloned().collect::<Vec<_>>().join(", "),
        out_dir.display()
    ));
    Ok(())
}
