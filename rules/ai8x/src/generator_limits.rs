//! Layers the hardware may run but whose registers or kernel packing
//! neither the spec nor the izer reference establishes, so kflow's code
//! generator cannot write them. The checker reports them (rule
//! `Unsupported`), so that what `kflow ai8x check` accepts is what
//! `codegen` generates (tests/check_codegen_agree.rs); README.md lists
//! each case with its evidence.

use crate::alloc::LayerMaps;
use crate::data_memory::Passes;
use crate::device::Device;
use crate::layer::{At, Findings, HwLayer, Operator};
use crate::network::{OutputWidth, PoolKind, WeightBits};
use crate::violation::{Rule, Violation};

/// What no izer reference and no spec section shows.
const UNKNOWN: &str = "a layer the izer reference does not show (kflow cannot write its registers)";

pub(crate) fn check_generator_limits(device: Device, layers: &[HwLayer], maps: &[LayerMaps], findings: &mut Findings) {
    for (i, (hw, m)) in layers.iter().zip(maps).enumerate() {
        let at = At {
            index: hw.index,
            op: hw.op_name(),
        };
        let v = &mut findings.violations;
        v.extend(flatten_limits(&at, hw, m));
        v.extend(depthwise_limits(&at, hw, m));
        v.extend(output_map_limits(&at, hw, m));
        // §2.3: a dilated conv1d runs with zeros between its taps, and ±1
        // weights have no zero.
        if hw.operator == Operator::Conv1d && hw.dilation > 1 && hw.weight_bits == WeightBits::Binary {
            v.push(at.violation(
                Rule::Unsupported,
                "dilation with binary weights",
                hw.dilation,
                "1 (the zero-stuffed taps need weight 0, which ±1 weights cannot hold)",
            ));
        }
        // §5.5 says to golden-test or avoid this case. Its interleaved
        // slots carry (pass, output) pairs across the spec's per-pass
        // groups, so a skipped group of the short pass drops weights of the
        // full passes (the simulated board reads them back as zeros), and
        // the izer fills those slots with other channels' kernels.
        let passes = Passes::for_channels(hw.in_channels());
        if hw.weight_bits != WeightBits::Eight
            && !hw.flatten
            && !hw.is_depthwise()
            && hw.operator != Operator::None
            && passes.count * passes.per_pass != hw.in_channels()
        {
            v.push(at.violation(
                Rule::Unsupported,
                format!(
                    "{} weights over {} channels in {} passes",
                    match hw.weight_bits {
                        WeightBits::Binary => "binary".to_owned(),
                        bits => format!("{bits}-bit"),
                    },
                    hw.in_channels(),
                    passes.count
                ),
                "uneven passes",
                "passes of equal size, or 8-bit weights (the kernel packing of a short last pass is not established, spec §5.5)",
            ));
        }
        if hw.operator == Operator::ConvTranspose2d && hw.pool.is_some() {
            v.push(at.violation(
                Rule::Unsupported,
                "pooling before a transposed convolution",
                "set",
                UNKNOWN,
            ));
        }
        // The izer inserts a hidden "avg-pool reset" layer here (spec §2.7)
        // whose registers the reference does not show.
        let after_eltwise = i > 0 && layers[i - 1].eltwise.is_some();
        if device == Device::Max78002 && after_eltwise && hw.pool.is_some_and(|p| p.kind == PoolKind::Avg) {
            v.push(at.violation(
                Rule::Unsupported,
                "average pooling right after an element-wise layer",
                "set",
                "the izer's hidden avg-pool reset layer, which kflow cannot write",
            ));
        }
        // §5.2 verifies the 32-bit output layout without a gap only.
        if i + 1 == layers.len() && hw.write_gap != 0 && hw.output_width == OutputWidth::ThirtyTwo {
            v.push(at.violation(
                Rule::Unsupported,
                "write_gap on a 32-bit output layer",
                hw.write_gap,
                "0 (the gapped 32-bit output layout is unverified, spec §5.2)",
            ));
        }
    }
}

fn flatten_limits(at: &At, hw: &HwLayer, m: &LayerMaps) -> Vec<Violation> {
    let mut v = Vec::new();
    if !hw.flatten {
        return v;
    }
    if hw.weight_bits != WeightBits::Eight {
        v.push(at.violation(
            Rule::Unsupported,
            "flatten weights",
            hw.weight_bits,
            format!("8 ({UNKNOWN})"),
        ));
    }
    let passes = Passes::for_channels(hw.in_channels());
    if passes.count * passes.per_pass != hw.in_channels() {
        v.push(at.violation(
            Rule::Unsupported,
            format!("flatten of {} channels in {} passes", hw.in_channels(), passes.count),
            "uneven passes",
            "passes of equal size (the izer fails on the others)",
        ));
    }
    if !m.output_processors.trailing_zeros().is_multiple_of(4) {
        v.push(at.violation(
            Rule::Unsupported,
            "flatten output map",
            format!("{:#018x}", m.output_processors),
            format!("starting at a memory instance's first processor ({UNKNOWN})"),
        ));
    }
    v
}

/// The izer reference shows depthwise layers only in broadcast mode: one
/// pass, 8-bit weights, the input from a quadrant's first processor on,
/// the output map equal to the input map.
fn depthwise_limits(at: &At, hw: &HwLayer, m: &LayerMaps) -> Vec<Violation> {
    let mut v = Vec::new();
    if !hw.is_depthwise() {
        return v;
    }
    if hw.weight_bits != WeightBits::Eight {
        v.push(at.violation(
            Rule::Unsupported,
            "depthwise weights",
            hw.weight_bits,
            format!("8 ({UNKNOWN})"),
        ));
    }
    if Passes::for_channels(hw.out_channels).count > 1 {
        v.push(at.violation(
            Rule::Unsupported,
            "depthwise channels",
            hw.out_channels,
            format!("at most 64, one pass ({UNKNOWN})"),
        ));
    }
    let first = m.processors.trailing_zeros();
    let contiguous = (m.processors >> first.min(63)).trailing_ones() == m.processors.count_ones();
    if !first.is_multiple_of(16) || !contiguous {
        v.push(at.violation(
            Rule::Unsupported,
            "depthwise input map",
            format!("{:#018x}", m.processors),
            format!("contiguous from a quadrant's first processor ({UNKNOWN})"),
        ));
    }
    // The izer uses broadcast mode only when the output map is the input
    // map (ai8x-synthesis izer/backend/max7800x.py:976-977); otherwise it
    // moves the data across processors with other registers (OCHAN, ONED,
    // WPTR_TOFFS, no LCTL bit 29), which no reference case shows.
    if m.output_processors != m.processors {
        v.push(at.violation(
            Rule::Unsupported,
            "depthwise output map",
            format!("{:#018x}", m.output_processors),
            format!("the input map {:#018x}, broadcast mode ({UNKNOWN})", m.processors),
        ));
    } else if !m.output_processors.trailing_zeros().is_multiple_of(4) {
        v.push(at.violation(
            Rule::Unsupported,
            "depthwise output map",
            format!("{:#018x}", m.output_processors),
            format!("starting at a memory instance's first processor ({UNKNOWN})"),
        ));
    }
    v
}

/// §5.5: an output map that starts inside a memory instance leaves empty
/// kernel slots; the reference shows that for one output pass only.
fn output_map_limits(at: &At, hw: &HwLayer, m: &LayerMaps) -> Option<Violation> {
    let inside = !m.output_processors.trailing_zeros().is_multiple_of(4);
    (inside && Passes::for_channels(hw.out_channels).count > 1).then(|| {
        at.violation(
            Rule::Unsupported,
            "output map of a multi-pass layer",
            format!("{:#018x}", m.output_processors),
            format!("starting at a memory instance's first processor ({UNKNOWN})"),
        )
    })
}
