//! Latency estimates: the izer's accelerator cycle model (spec/max78002.md
//! §7.1), and a software-only Cortex-M4F baseline from MAC counts.

use serde::{Deserialize, Serialize};

use crate::alloc::{Allocation, LayerAllocation};
use crate::device::Device;
use crate::layer::Operator;

/// An accelerator latency estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcceleratorTiming {
    pub device: Device,
    /// Cycles per layer, in layer order.
    pub layer_cycles: Vec<u64>,
    /// One start-up cycle plus every layer.
    pub cycles: u64,
    pub clock_hz: u64,
    pub seconds: f64,
    /// Whether the model was validated against the device (MAX78000 only).
    pub validated: bool,
    pub note: String,
}

/// What the cycle model of §7.1 reads of one layer, so that a caller
/// without an [`Allocation`] (the simulated board, which has only register
/// values) costs a layer with the same formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CycleInputs {
    pub operator: Operator,
    /// Input passes (`in_expand`).
    pub in_passes: u32,
    /// Element-wise operands (1 without).
    pub operands: u32,
    pub pool_first: bool,
    /// Pool rows × columns, `None` without pooling.
    pub pool: Option<[u32; 2]>,
    /// Rows × columns after pooling (a transposed convolution's before its
    /// upsampling).
    pub pooled: [u32; 2],
    /// Rows × columns of the kernel: conv1d its taps × 1, conv2d its size.
    pub kernel: [u32; 2],
    pub pad: u32,
    pub flatten: bool,
    /// Columns of the output.
    pub output_width: u32,
    /// The kernel count `kc` of §5.5 (0 without kernels).
    pub kernel_count: u32,
}

impl CycleInputs {
    pub fn of(a: &LayerAllocation) -> CycleInputs {
        let l = &a.layer;
        CycleInputs {
            operator: l.operator,
            in_passes: a.in_passes.count,
            operands: l.operands,
            pool_first: l.pool_first,
            pool: l.pool.map(|p| p.size),
            pooled: [l.pooled.height, l.pooled.width],
            kernel: match l.operator {
                Operator::Conv1d => [l.kernel_taps(), 1],
                Operator::Conv2d | Operator::ConvTranspose2d => [l.kernel[0], l.kernel[1]],
                _ => [1, 1],
            },
            pad: l.pad,
            flatten: l.flatten,
            output_width: l.output.width,
            kernel_count: a.kernel.map_or(0, |k| k.count),
        }
    }
}

/// Cycles of one layer by §7.1 ([`cycles`] of its [`CycleInputs`]).
pub fn layer_cycles(a: &LayerAllocation) -> u64 {
    cycles(&CycleInputs::of(a))
}

/// Cycles of one layer by §7.1. Assumptions where the spec has no formula:
/// passthrough layers take one time slot per pass; ConvTranspose2d is
/// costed on its 2H×2W hardware input; the device-specific pre-read term of
/// `pool_first: false` is left out.
pub fn cycles(l: &CycleInputs) -> u64 {
    let mp = u64::from(l.in_passes);
    let e = u64::from(l.operands);
    let (ph, pw) = l.pool.map_or((1, 1), |p| (u64::from(p[0]), u64::from(p[1])));
    let (mut hp, mut wp) = (u64::from(l.pooled[0]), u64::from(l.pooled[1]));
    if l.operator == Operator::ConvTranspose2d {
        hp *= 2;
        wp *= 2;
    }
    let (a_, d, mu) = if l.pool_first || l.operands == 1 {
        (2 * mp * e, mp * e * (ph * pw + 1), 1)
    } else {
        (2 * mp, mp * (e * ph * pw + 1), mp)
    };
    if l.operator == Operator::None {
        return hp * wp * (d + mp);
    }
    let (kh, kw) = (u64::from(l.kernel[0]), u64::from(l.kernel[1]));
    let pad = u64::from(l.pad);
    let (pr, pc) = match l.operator {
        Operator::Conv1d => (pad, 0),
        Operator::Conv2d | Operator::ConvTranspose2d => (pad, pad),
        _ => (0, 0),
    };
    // Flatten layers are costed as a 1×1 conv over the pre-flatten grid
    // with the layer's outputs at each position.
    let wout = if l.flatten { wp } else { u64::from(l.output_width) };
    let kc = u64::from(l.kernel_count);
    let c = if l.flatten {
        kc / (mp * (hp * wp).max(1))
    } else {
        kc / mp
    };
    let meq1 = u64::from(c == 1 && mp == 1);
    // Signed: kernel taps shorter than the padding would go negative.
    let [a_, d, mu, pr, pc, kh, kw, hp, wp, wout, c, mp] =
        [a_, d, mu, pr, pc, kh, kw, hp, wp, wout, c, mp].map(|v| v as i64);
    let r_pad = 2 * pc * (a_ + 1) + mu * wp * (a_ + 1);
    let r_noconv = 2 * pc * (a_ + 1) + mu * wp * (d + 1);
    let r_conv = pc * (a_ + 1) + mu * (kw - 1 - pc) * (d + 1) + mu * (wout - pc) * d + a_ * pc;
    let r_bottom = pc * (a_ + 1) + mu * (kw - 1 - pc) * (a_ + 1) + mu * (wout - pc) * a_ + a_ * pc;
    let o = mp * wout * c + c * meq1 as i64;
    let t = pr * r_pad + (kh - 1 - pr) * r_noconv + (r_conv + o) * (hp - (kh - 1 - pr)) + pr * (r_bottom + o);
    t.max(0) as u64
}

/// The accelerator latency at the clock generated code infers at.
pub fn accelerator(allocation: &Allocation) -> AcceleratorTiming {
    let layer_cycles: Vec<u64> = allocation.layers.iter().map(layer_cycles).collect();
    let cycles = 1 + layer_cycles.iter().sum::<u64>();
    let clock_hz = allocation.device.clocks().cnn_inference_hz;
    let (validated, note) = match allocation.device {
        Device::Max78000 => (true, "izer latency model (ai8x-synthesis latency.py)".to_owned()),
        // §7.2: the izer has no MAX78002 model; cycle counts are assumed
        // close to the MAX78000's, at the 200 MHz inference clock.
        Device::Max78002 => (
            false,
            "estimate (MAX78000 cycle model ÷ 200 MHz), unvalidated; excludes input load, clock switching, start and unload".to_owned(),
        ),
    };
    AcceleratorTiming {
        device: allocation.device,
        layer_cycles,
        cycles,
        clock_hz,
        seconds: cycles as f64 / clock_hz as f64,
        validated,
        note,
    }
}

/// A software-only baseline on the device's Cortex-M4F.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftwareBaseline {
    pub macs: u64,
    pub cycles_per_mac: f64,
    pub cycles: u64,
    pub clock_hz: u64,
    pub seconds: f64,
    pub note: String,
}

/// Cycles per int8 MAC assumed for the Cortex-M4F. An assumption, not a
/// measurement (spec §7.3 found no MCU-only numbers): SMLAD retires two
/// 16-bit MACs per cycle, but widening int8 operands, loads, im2col and
/// requantization in CMSIS-NN-style s8 kernels bring the sustained rate to
/// about one MAC per two cycles.
pub const M4_CYCLES_PER_MAC: f64 = 2.0;

/// The baseline from the network's MACs at the CPU's IPO clock (100 MHz on
/// the MAX78000, 120 MHz on the MAX78002). Pooling and element-wise work
/// is not counted.
pub fn software_baseline(allocation: &Allocation) -> SoftwareBaseline {
    let macs: u64 = allocation.layers.iter().map(|a| a.layer.macs()).sum();
    let clock_hz = allocation.device.clocks().ipo_hz;
    let cycles = (macs as f64 * M4_CYCLES_PER_MAC).ceil() as u64;
    SoftwareBaseline {
        macs,
        cycles_per_mac: M4_CYCLES_PER_MAC,
        cycles,
        clock_hz,
        seconds: cycles as f64 / clock_hz as f64,
        note: format!("{M4_CYCLES_PER_MAC} cycles per int8 MAC (assumed, unmeasured)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::allocate;
    use crate::layer::{Findings, Shape, resolve};
    use crate::test_networks::{CATS_BARE, cats_weights};
    use crate::yaml::parse_network;

    fn cats(device: Device) -> Allocation {
        let mut findings = Findings::default();
        let network = parse_network(CATS_BARE).unwrap();
        let layers = resolve(&network, &cats_weights(), Shape::one_d(17, 8), &mut findings).unwrap();
        allocate(device, &layers).unwrap()
    }

    #[test]
    fn spec_example_costs_the_izers_437_cycles() {
        let t = accelerator(&cats(Device::Max78000));
        assert_eq!(t.layer_cycles, [278, 82, 72, 4]);
        assert_eq!(t.cycles, 437);
        assert!((t.seconds - 8.74e-6).abs() < 1e-9);
        assert!(t.validated);
    }

    #[test]
    fn max78002_runs_the_same_cycles_at_200_mhz_unvalidated() {
        let t = accelerator(&cats(Device::Max78002));
        assert_eq!(t.cycles, 437);
        assert!((t.seconds - 2.185e-6).abs() < 1e-9);
        assert!(!t.validated);
    }

    #[test]
    fn software_baseline_scales_the_macs() {
        let b = software_baseline(&cats(Device::Max78002));
        assert_eq!(b.macs, 20_256);
        assert_eq!(b.cycles, 40_512);
        assert_eq!(b.clock_hz, 120_000_000);
    }
}
