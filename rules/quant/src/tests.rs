use kflow_model::{Model, Weights, infer_shapes};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use kflow_ai8x::network::WeightBits;

use crate::*;

fn model(json: serde_json::Value) -> Model {
    serde_json::from_value(json).unwrap()
}

/// The repository's baseline CNN (graphs/host/BUILD.toml), smaller.
fn cnn1d() -> Model {
    model(serde_json::json!({
        "format": "kflow-model/1", "name": "cnn1d", "task": {"kind": "classifier", "classes": 2}, "input": [17, 16],
        "layers": [
            {"name": "conv0", "op": "conv1d", "out_channels": 8, "kernel": 3, "padding": 1, "bias": false},
            {"name": "bn0", "op": "batch_norm"},
            {"name": "act0", "op": "relu"},
            {"name": "conv1", "op": "conv1d", "out_channels": 8, "kernel": 3, "padding": 1, "bias": false},
            {"name": "bn1", "op": "batch_norm"},
            {"name": "act1", "op": "relu"},
            {"name": "pool1", "op": "max_pool", "kernel": 2, "stride": 2},
            {"name": "conv2", "op": "conv1d", "out_channels": 12, "kernel": 3, "padding": 1, "bias": false},
            {"name": "bn2", "op": "batch_norm"},
            {"name": "act2", "op": "relu"},
            {"name": "pool2", "op": "max_pool", "kernel": 2, "stride": 2},
            {"name": "flatten", "op": "flatten"},
            {"name": "fc0", "op": "linear", "out_features": 16},
            {"name": "fc0_act", "op": "relu"},
            {"name": "out", "op": "linear", "out_features": 2}
        ]
    }))
}

fn cnn2d() -> Model {
    model(serde_json::json!({
        "format": "kflow-model/1", "name": "cnn2d", "task": {"kind": "classifier", "classes": 2}, "input": [2, 8, 8],
        "layers": [
            {"name": "c0", "op": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
            {"name": "bn0", "op": "batch_norm"},
            {"name": "a0", "op": "abs"},
            {"name": "c1", "op": "conv2d", "out_channels": 4, "kernel": 1, "padding": 0},
            {"name": "sum", "op": "add", "inputs": ["a0", "c1"]},
            {"name": "p0", "op": "avg_pool", "kernel": 2, "stride": 2},
            {"name": "up", "op": "conv_transpose2d", "out_channels": 3, "kernel": 3, "padding": 1, "stride": 2, "output_padding": 1},
            {"name": "a1", "op": "relu"},
            {"name": "flatten", "op": "flatten"},
            {"name": "out", "op": "linear", "out_features": 2}
        ]
    }))
}

/// Seeded weights, with batch-norm statistics away from their identity
/// defaults so that folding is exercised.
fn weights(m: &Model, seed: u64) -> Weights {
    let mut w = Weights::init(m, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, t) in w.tensors.iter_mut() {
        if name.ends_with("running_var") {
            t.data.iter_mut().for_each(|v| *v = rng.random_range(0.5..2.0));
        } else if name.ends_with("running_mean") || (name.starts_with("bn") && name.ends_with(".bias")) {
            t.data.iter_mut().for_each(|v| *v = rng.random_range(-0.3..0.3));
        } else if name.starts_with("bn") && name.ends_with(".weight") {
            t.data.iter_mut().for_each(|v| *v = rng.random_range(0.5..1.5));
        }
    }
    w
}

fn samples(m: &Model, n: usize, seed: u64) -> Vec<f32> {
    let per: usize = m.input.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * per).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn ir_names(f: &Fused) -> Vec<Vec<&str>> {
    f.layers
        .iter()
        .map(|l| l.ir_layers.iter().map(String::as_str).collect())
        .collect()
}

#[test]
fn the_baseline_fuses_into_accelerator_layers() {
    let m = cnn1d();
    let f = fuse(&m, &weights(&m, 1)).unwrap();
    assert_eq!(
        ir_names(&f),
        vec![
            vec!["conv0", "bn0", "act0"],
            vec!["conv1", "bn1", "act1"],
            vec!["pool1", "conv2", "bn2", "act2"],
            // Pooling and flatten cannot share a layer (spec §2.5).
            vec!["pool2"],
            vec!["flatten", "fc0", "fc0_act"],
            vec!["out"],
        ]
    );
    assert_eq!(f.layers[3].op, HwOp::Passthrough);
    assert!(f.layers[4].flatten);
    assert_eq!(f.layers[4].operator_input_shape, vec![48]);
    assert_eq!(f.layers[2].pool.map(|p| p.kind), Some(PoolKind::Max));
    // Folding gave the bias-less convolutions a bias.
    assert!(f.layers[0].bias.is_some());
}

/// The fused float network computes what the IR computes (candle's forward
/// pass in kflow-train).
fn assert_same_function(m: &Model) {
    let w = weights(m, 3);
    let f = fuse(m, &w).unwrap();
    let n = 8;
    let x = samples(m, n, 4);
    let want = kflow_train::forward(m, &w, &x, n).unwrap();
    let per: usize = m.input.iter().product();
    let outputs = infer_shapes(m).unwrap().output.iter().product::<usize>();
    for (s, sample) in x.chunks_exact(per).enumerate() {
        let got = forward::layer_outputs(&f, sample).unwrap().pop().unwrap();
        for (k, g) in got.iter().enumerate() {
            let e = want[s * outputs + k];
            assert!((g - e).abs() < 1e-4, "{}: sample {s} output {k}: {g} vs {e}", m.name);
        }
    }
}

#[test]
fn fusion_and_folding_keep_the_function_1d() {
    assert_same_function(&cnn1d());
}

#[test]
fn fusion_keeps_the_function_with_add_avg_pool_and_transposed_convolution() {
    let m = cnn2d();
    let f = fuse(&m, &weights(&m, 1)).unwrap();
    assert_eq!(
        ir_names(&f),
        vec![
            vec!["c0", "bn0", "a0"],
            vec!["c1"],
            vec!["sum"],
            vec!["p0", "up", "a1"],
            vec!["flatten", "out"]
        ]
    );
    assert_eq!(f.layers[1].sources, vec![HwSource::Layer(0)]);
    assert_eq!(f.layers[2].sources, vec![HwSource::Layer(0), HwSource::Layer(1)]);
    assert!(f.layers[2].eltwise_add);
    assert_same_function(&m);
}

fn fuse_error(m: &Model) -> String {
    fuse(m, &Weights::init(m, 0).unwrap()).unwrap_err().to_string()
}

#[test]
fn layers_without_a_hardware_place_are_named() {
    let mut m = cnn1d();
    m.layers.swap(1, 2); // relu before batch norm
    assert_eq!(
        fuse_error(&m),
        "layer 2 `bn0` (batch_norm) cannot map to an accelerator layer: batch norm folds into the convolution or linear layer right before it, and there is none"
    );
    let mut m = cnn1d();
    m.layers.insert(11, m.layers[9].clone()); // relu after a pooling-only layer
    m.layers[11].name = "late".into();
    assert!(
        fuse_error(&m).starts_with("layer 11 `late` (relu) cannot map"),
        "{}",
        fuse_error(&m)
    );
}

#[test]
fn quantization_reproduces_the_worked_example() {
    // spec §3.12: one conv1d output channel, 8-bit weights.
    let w = [0.21, -0.30, 0.05, 0.125, 0.17, -0.08];
    let (q, b, shift) = quantize_layer(&w, Some(&[0.04]), WeightBits::Eight, 1.0);
    assert_eq!(q, vec![54, -77, 13, 32, 44, -20]);
    assert_eq!(b, Some(vec![10]));
    assert_eq!(shift, -1);
    // At 4 bits the factor is 16 and the hardware shift S = −1 + 4 = 3.
    let (q4, _, shift4) = quantize_layer(&w, Some(&[0.04]), WeightBits::Four, 1.0);
    assert_eq!(shift4, -1);
    assert_eq!(q4, vec![3, -5, 1, 2, 3, -1]);
    // All zeros: shift 0, zeros.
    assert_eq!(
        quantize_layer(&[0.0; 3], None, WeightBits::Eight, 1.0),
        (vec![0; 3], None, 0)
    );
}

#[test]
fn quantized_layers_fit_the_hardware_ranges() {
    let m = cnn1d();
    let w = weights(&m, 5);
    let f = fuse(&m, &w).unwrap();
    let x = samples(&m, 32, 6);
    let mut options = QuantOptions::default();
    options.layer_bits.insert("conv1".into(), Bits(WeightBits::Four));
    let q = quantize(&f, &x, 32, &options).unwrap();
    assert_eq!(q.layers.len(), f.layers.len());
    for l in &q.layers {
        let b = l.weight_bits.0.bits() as i32;
        let s = l.output_shift + 8 - b;
        assert!((-15..=15).contains(&s), "{}: S = {s}", l.layer.name);
        let (lo, hi) = (-(1i32 << (b - 1)), (1i32 << (b - 1)) - 1);
        assert!(
            l.weight.iter().all(|&v| (lo..=hi).contains(&i32::from(v))),
            "{}",
            l.layer.name
        );
        assert_eq!(l.weight.len(), l.layer.weight.as_ref().map_or(0, |t| t.data.len()));
        assert!(l.scale > 0.0);
    }
    assert_eq!(q.layers[1].weight_bits, Bits(WeightBits::Four));
    assert_eq!(q.layers.last().unwrap().output_width, 32);
    assert_eq!(q.layers[0].output_width, 8);
    // Bad options are errors, not panics.
    let bad = QuantOptions {
        shift_quantile: 0.0,
        ..QuantOptions::default()
    };
    assert!(quantize(&f, &x, 32, &bad).is_err());
    assert!(quantize(&f, &x[..10], 32, &options).is_err());
}

#[test]
fn channel_pruning_narrows_the_network_and_keeps_it_valid() {
    let m = cnn1d();
    let w = weights(&m, 7);
    let (pm, pw, report) = prune(&m, &w, PruneKind::Channels, 0.5).unwrap();
    pw.check(&pm).unwrap();
    let widths: Vec<(String, usize, usize)> = report
        .layers
        .iter()
        .map(|l| (l.layer.clone(), l.before, l.after))
        .collect();
    assert_eq!(
        widths,
        vec![("conv0".into(), 8, 4), ("conv1".into(), 8, 4), ("conv2".into(), 12, 6)]
    );
    assert_eq!(pw.get("fc0.weight").unwrap().shape, vec![16, 6 * 4]);
    let x = samples(&m, 4, 8);
    let pruned = kflow_train::forward(&pm, &pw, &x, 4).unwrap();
    assert!(pruned.iter().all(|v| v.is_finite()));
}

#[test]
fn unstructured_pruning_zeroes_the_smallest_weights() {
    let m = cnn1d();
    let w = weights(&m, 9);
    let (pm, pw, report) = prune(&m, &w, PruneKind::Unstructured, 0.3).unwrap();
    assert_eq!(pm, m);
    for l in &report.layers {
        assert_eq!(
            l.after,
            l.before - (l.before as f64 * 0.3).floor() as usize,
            "{}",
            l.layer
        );
        let t = pw.get(&format!("{}.weight", l.layer)).unwrap();
        let smallest_kept = t
            .data
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| v.abs())
            .fold(f32::INFINITY, f32::min);
        let original = w.get(&format!("{}.weight", l.layer)).unwrap();
        let largest_removed = original
            .data
            .iter()
            .zip(&t.data)
            .filter(|(_, p)| **p == 0.0)
            .map(|(o, _)| o.abs())
            .fold(0.0, f32::max);
        assert!(largest_removed <= smallest_kept, "{}", l.layer);
    }
    assert!(prune(&m, &w, PruneKind::Unstructured, 1.0).is_err());
}

/// The quantized network on the simulated accelerator predicts what the
/// float network predicts.
#[test]
fn the_simulated_accelerator_agrees_with_the_float_model() {
    let m = cnn1d();
    let w = weights(&m, 11);
    let f = fuse(&m, &w).unwrap();
    let calibration = samples(&m, 64, 12);
    let q = quantize(&f, &calibration, 64, &QuantOptions::default()).unwrap();
    // Through the files the `quantize` rule writes, as `evaluate` reads them.
    let json = serde_json::to_vec(&q).unwrap();
    let q = Quantized::from_files(&json, &q.to_safetensors().unwrap()).unwrap();
    let (net, sim_weights) = to_sim(&q, kflow_ai8x::Device::Max78002);
    let n = 200;
    let x = samples(&m, n, 13);
    let per: usize = m.input.iter().product();
    let float = kflow_train::forward(&m, &w, &x, n).unwrap();
    let mut agree = 0;
    let mut max_err = 0f64;
    for (s, sample) in x.chunks_exact(per).enumerate() {
        let got = simulate_sample(&q, &net, &sim_weights, sample).unwrap();
        let want = &float[s * 2..s * 2 + 2];
        for (g, w) in got.iter().zip(want) {
            max_err = max_err.max((g - f64::from(*w)).abs());
        }
        agree += usize::from((got[1] > got[0]) == (want[1] > want[0]));
    }
    // Random weights give logits close to each other, the hardest case for
    // agreement; trained models separate them more.
    assert!(agree * 100 >= n * 90, "{agree} of {n} agree (max error {max_err})");
    assert!(max_err < 0.2, "max error {max_err}");
}

/// Samples whose every channel wanders as a time series does: each value
/// near the one before it (sensor windows, not independent noise).
fn walks(m: &Model, n: usize, seed: u64) -> Vec<f32> {
    let length = *m.input.last().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::new();
    for _ in 0..n * m.input.iter().product::<usize>() / length {
        let mut v: f32 = rng.random_range(-0.5..0.5);
        for _ in 0..length {
            v = (v + rng.random_range(-0.1..0.1)).clamp(-1.0, 1.0);
            x.push(v);
        }
    }
    x
}

/// The mean absolute difference of the simulated accelerator's outputs from
/// the float model's, over `n` seeded samples.
fn simulation_error(m: &Model, w: &Weights, options: &QuantOptions) -> f64 {
    simulation_error_on(m, w, options, samples)
}

fn simulation_error_on(
    m: &Model,
    w: &Weights,
    options: &QuantOptions,
    samples: fn(&Model, usize, u64) -> Vec<f32>,
) -> f64 {
    let f = fuse(m, w).unwrap();
    let q = quantize(&f, &samples(m, 64, 12), 64, options).unwrap();
    let (net, sim_weights) = to_sim(&q, kflow_ai8x::Device::Max78002);
    let n = 200;
    let x = samples(m, n, 13);
    let per: usize = m.input.iter().product();
    let float = kflow_train::forward(m, w, &x, n).unwrap();
    let outputs = float.len() / n;
    let mut sum = 0.0;
    for (s, sample) in x.chunks_exact(per).enumerate() {
        let got = simulate_sample(&q, &net, &sim_weights, sample).unwrap();
        sum += got
            .iter()
            .zip(&float[s * outputs..(s + 1) * outputs])
            .map(|(g, w)| (g - f64::from(*w)).abs())
            .sum::<f64>();
    }
    sum / float.len() as f64
}

#[test]
fn aligned_shifts_fill_the_weight_range_and_lose_no_accuracy() {
    let m = cnn1d();
    let plain = QuantOptions {
        rounding: Rounding::Nearest,
        ..QuantOptions::default()
    };
    let aligned = QuantOptions {
        align_shifts: true,
        ..plain.clone()
    };
    let mut totals = (0.0, 0.0);
    for seed in [11, 21, 31, 41, 51, 61, 71] {
        let w = weights(&m, seed);
        let f = fuse(&m, &w).unwrap();
        let q = quantize(&f, &samples(&m, 64, 12), 64, &aligned).unwrap();
        let last = q.layers.last().unwrap();
        let largest = last
            .weight
            .iter()
            .chain(last.bias.iter().flatten())
            .map(|v| i32::from(*v).abs())
            .max()
            .unwrap_or(0);
        assert!(
            largest >= 126,
            "seed {seed}: largest weight of the last layer {largest}"
        );
        let (before, after) = (simulation_error(&m, &w, &plain), simulation_error(&m, &w, &aligned));
        totals.0 += before;
        totals.1 += after;
    }
    assert!(totals.1 < 0.9 * totals.0, "mean error {totals:?} (before, aligned)");
}

/// A forecaster's shape (a wide first convolution over every channel, a
/// 1×1 convolution to the predictions) with weights of very different
/// sizes, as trained forecasters have: most weights get few levels.
fn forecaster() -> Model {
    model(serde_json::json!({
        "format": "kflow-model/1", "name": "forecaster", "task": {"kind": "forecaster", "from_channel": 7}, "input": [17, 16],
        "layers": [
            {"name": "conv0", "op": "conv1d", "out_channels": 24, "kernel": 7, "padding": 0},
            {"name": "act0", "op": "relu"},
            {"name": "out", "op": "conv1d", "out_channels": 10, "kernel": 1, "padding": 0}
        ]
    }))
}

/// Compensated rounding chooses other levels, and on time-series inputs the accelerator's
/// outputs come closer to the float model's than with quantize.py's
/// nearest rounding.
#[test]
fn compensated_rounding_cuts_the_error_on_time_series() {
    let nearest = QuantOptions {
        rounding: Rounding::Nearest,
        ..QuantOptions::default()
    };
    let compensated = QuantOptions::default();
    assert_eq!(compensated.rounding, Rounding::Compensated);
    let m = forecaster();
    let mut totals = (0.0, 0.0);
    for seed in [11, 23, 37, 41, 53] {
        let mut w = weights(&m, seed);
        // A few large weights per row, the rest small.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for v in &mut w.tensors.get_mut("conv0.weight").unwrap().data {
            *v *= if rng.random_range(0.0..1.0) < 0.05 { 8.0 } else { 1.0 };
        }
        let f = fuse(&m, &w).unwrap();
        let x = walks(&m, 64, 12);
        let (a, b) = (
            quantize(&f, &x, 64, &nearest).unwrap(),
            quantize(&f, &x, 64, &compensated).unwrap(),
        );
        let changed: usize = (a.layers.iter().zip(&b.layers))
            .map(|(la, lb)| la.weight.iter().zip(&lb.weight).filter(|(p, q)| p != q).count())
            .sum();
        assert!(changed > 0, "seed {seed}: no level changed");
        let (before, after) = (
            simulation_error_on(&m, &w, &nearest, walks),
            simulation_error_on(&m, &w, &compensated, walks),
        );
        assert!(
            after < before,
            "seed {seed}: error {after} compensated, {before} nearest"
        );
        totals.0 += before;
        totals.1 += after;
    }
    assert!(
        totals.1 < 0.8 * totals.0,
        "mean error {totals:?} (nearest, compensated)"
    );
}

/// The quantized baseline, allocated for the MAX78002, written as ai8x
/// YAML and read back, passes the constraint checker; so does the float
/// model judged by shapes alone.
#[test]
fn quantized_layers_allocate_and_pass_the_ai8x_checker() {
    use kflow_ai8x::{Device, allocate, check, parse_network, to_yaml};
    let m = cnn1d();
    let w = weights(&m, 21);
    let f = fuse(&m, &w).unwrap();
    let q = quantize(&f, &samples(&m, 32, 22), 32, &QuantOptions::default()).unwrap();
    for (what, q) in [("quantized", q), ("float", unquantized(&f))] {
        let (layers, ai_weights, input) = to_ai8x(&q);
        let allocation = allocate(Device::Max78002, &layers).unwrap();
        let yaml = to_yaml(&allocation.to_network("cnn1d", "test"));
        let network = parse_network(&yaml).unwrap();
        let report = check(Device::Max78002, &network, &ai_weights, input);
        assert!(report.passed, "{what}: {:?}\n{yaml}", report.violations);
        let resources = report.resources.unwrap();
        assert_eq!(resources.layers, 6, "{what}");
        assert!(resources.weight_bytes > 0);
    }
}

#[test]
fn folding_batch_norm_into_the_model_keeps_its_function() {
    for m in [cnn1d(), cnn2d()] {
        let w = weights(&m, 31);
        let (folded, fw) = fold_batchnorm(&m, &w).unwrap();
        assert!(folded.layers.iter().all(|l| l.op.kind() != "batch_norm"), "{}", m.name);
        assert_eq!(
            folded.layers.len(),
            m.layers.len() - if m.name == "cnn1d" { 3 } else { 1 }
        );
        let n = 8;
        let x = samples(&m, n, 32);
        let want = kflow_train::forward(&m, &w, &x, n).unwrap();
        let got = kflow_train::forward(&folded, &fw, &x, n).unwrap();
        for (k, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!((g - e).abs() < 1e-4, "{}: output {k}: {g} vs {e}", m.name);
        }
    }
}

/// What the forward pass sees during quantization-aware training is, layer
/// by layer, exactly what the final quantization will produce from the
/// same weights.
#[test]
fn the_fake_quantized_view_is_what_quantization_produces() {
    let m = cnn1d();
    let (m, w) = fold_batchnorm(&m, &weights(&m, 41)).unwrap();
    let x = samples(&m, 32, 42);
    for bits in [WeightBits::Eight, WeightBits::Two, WeightBits::Binary] {
        // The view rounds to nearest (compensated rounding needs the
        // calibration inputs of every layer, once, at the end).
        let options = QuantOptions {
            weight_bits: Bits(bits),
            rounding: Rounding::Nearest,
            ..QuantOptions::default()
        };
        let seen = FakeQuant::calibrate(&m, &w, &x, 32, &options)
            .unwrap()
            .apply(&w)
            .unwrap();
        let q = quantize(&fuse(&m, &w).unwrap(), &x, 32, &options).unwrap();
        let mut scale_in = 1.0;
        for l in &q.layers {
            if l.weight.is_empty() {
                continue;
            }
            let step = dequantize_step(l.weight_bits.0, l.output_shift);
            let factor = l.scale / scale_in;
            let viewed = &seen.get(&format!("{}.weight", l.layer.name)).unwrap().data;
            for (v, &q) in viewed.iter().zip(&l.weight) {
                let want = f64::from(q) * step / factor;
                assert!(
                    (f64::from(*v) - want).abs() <= 1e-6 * want.abs().max(1e-3),
                    "{bits}: {}",
                    l.layer.name
                );
            }
            scale_in = l.scale;
        }
        // Activations are rounded where the accelerator rounds them: the
        // input, and each layer's int8 output at its scale (not a wide one).
        let grid = FakeQuant::calibrate(&m, &w, &x, 32, &options)
            .unwrap()
            .activations()
            .clone();
        assert_eq!(grid.input, 1.0);
        let rounded: std::collections::BTreeMap<String, f64> = q
            .layers
            .iter()
            .filter(|l| !l.weight.is_empty() && l.output_width == 8)
            .map(|l| (l.layer.ir_layers.last().unwrap().clone(), l.scale))
            .collect();
        assert!(!rounded.is_empty());
        assert_eq!(grid.layers, rounded, "{bits}");
        assert!(q.layers.iter().any(|l| l.output_width == 32), "the last layer is wide");
    }
    // A model whose batch norms are not folded is refused, not misread.
    let raw = cnn1d();
    let err = FakeQuant::calibrate(&raw, &weights(&raw, 41), &x, 32, &QuantOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("fold batch norms"), "{err}");
}

#[test]
fn binary_layers_are_signs_at_the_mean_magnitude() {
    let w = [0.3, -0.2, 0.0, -0.1];
    let (q, b, shift) = quantize_layer(&w, Some(&[0.05, -3.0]), WeightBits::Binary, 1.0);
    assert_eq!(q, vec![1, -1, 1, -1]);
    // Mean magnitude 0.15: the nearest power of two is 2^−3 (log2 ≈ −2.74).
    assert_eq!(shift, -3);
    // The bias keeps the factor 2^3 and saturates at the bias memory's 8 bits.
    assert_eq!(b, Some(vec![0, -24]));
}

/// A binary network is valid on the MAX78002 and not on the MAX78000, and
/// its simulation runs.
#[test]
fn binary_quantization_passes_the_max78002_checker() {
    use kflow_ai8x::{Device, allocate, check};
    let m = cnn1d();
    let w = weights(&m, 51);
    let f = fuse(&m, &w).unwrap();
    // The flatten layer stays at 8 bits: the checker rejects narrower
    // flatten weights, whose kernel packing kflow cannot write.
    let options = QuantOptions {
        weight_bits: Bits(WeightBits::Binary),
        layer_bits: [("fc0".to_owned(), Bits(WeightBits::Eight))].into(),
        ..QuantOptions::default()
    };
    let q = quantize(&f, &samples(&m, 32, 52), 32, &options).unwrap();
    let json: serde_json::Value = serde_json::to_value(&q).unwrap();
    assert_eq!(json["layers"][0]["weight_bits"], "binary");
    assert_eq!(json["layers"][4]["weight_bits"], 8);
    let (layers, ai_weights, input) = to_ai8x(&q);
    let allocation = allocate(Device::Max78002, &layers).unwrap();
    let report = check(Device::Max78002, &allocation.to_network("b", "t"), &ai_weights, input);
    assert!(report.passed, "{:?}", report.violations);
    let report = check(Device::Max78000, &allocation.to_network("b", "t"), &ai_weights, input);
    assert!(report.violations.iter().any(|v| v.to_string().contains("binary")));
    let (net, sim_weights) = to_sim(&q, Device::Max78002);
    let out = simulate_sample(&q, &net, &sim_weights, &samples(&m, 1, 53)).unwrap();
    assert_eq!(out.len(), 2);
}
