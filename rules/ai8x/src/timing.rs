//! Latency estimates: the izer's accelerator cycle model (spec/max78002.md
//! §7.1), and a software-only Cortex-M4F baseline from a model of the
//! instructions kflow's generated C executes, fitted to QEMU's counts.

use serde::{Deserialize, Serialize};

use crate::alloc::{Allocation, LayerAllocation};
use crate::device::Device;
use crate::layer::{HwLayer, Operator};

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

/// A software-only baseline on the device's Cortex-M4F: the instructions
/// kflow's generated C inference (`kflow-cm-codegen`) would execute, by
/// [`M4_SOFTWARE`], turned into cycles by [`CORTEX_M4_CYCLES_PER_INSTRUCTION`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftwareBaseline {
    pub macs: u64,
    pub instructions: u64,
    pub cycles_per_instruction: f64,
    pub cycles: u64,
    pub clock_hz: u64,
    pub seconds: f64,
    pub note: String,
}

/// Cycles per instruction of kflow's generated kernels on a Cortex-M4
/// (QEMU counts instructions, not cycles). From the Technical Reference
/// Manual's instruction timings applied to the hot loop of the generated
/// kernels (`kf_rows_wide`, compiled `-O2`): per eight MACs two word loads
/// and one doubleword load (pipelined: 5 cycles), four SXTB16 and four
/// SMLAD (1 cycle each), two loop-counter operations (1 each) and one
/// taken branch (1 + a refill of 1 to 3, taken as 3): 18 cycles for 15
/// instructions, 1.2; rounded up to 1.25 for the stores, gathers and calls
/// around it. Code and data in zero-wait-state memory is assumed, as on
/// the MAX32690 and the MAX78002 at their clocks from SRAM and the flash
/// cache. The one figure for the M4: `kflow-platform`'s core timing reads
/// it from here.
pub const CORTEX_M4_CYCLES_PER_INSTRUCTION: f64 = 1.25;

/// What the software latency model distinguishes: the generated C runs
/// each kind through a different kernel, with a different cost per MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftwareKind {
    Conv1d,
    Conv2d,
    Depthwise,
    ConvTranspose2d,
    Linear,
    /// Pooling or element-wise only (no MACs).
    PoolOnly,
}

/// One layer as the software latency model sees it: the quantities
/// kflow's generated kernels (`kflow-cm-codegen`'s `runtime.c`) spend
/// their instructions on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareLayer {
    pub kind: SoftwareKind,
    /// The layer's MACs as the generated C computes them (padding, a
    /// transposed convolution's inserted zeros and a dilated kernel's
    /// zeros included), for reports; the model reads the two below.
    pub macs: u64,
    /// Products of the dot products' four-at-a-time loop (SXTB16 +
    /// SMLAD). Rows go in pairs, so an odd last row is computed twice;
    /// a depthwise channel is a pair of one row.
    pub simd_macs: u64,
    /// Products past the last multiple of four of each dot product, one
    /// at a time.
    pub tail_macs: u64,
    /// Calls of the dot-product kernel: one per output pixel, one per
    /// pixel and channel for a depthwise layer.
    pub calls: u64,
    /// Receptive-field elements gathered before the dot products (0 for
    /// linear layers, which read in place).
    pub gathered: u64,
    /// Kernel rows of those fields (each an input row located, checked
    /// against the padding and copied).
    pub field_rows: u64,
    /// Input elements read to assemble the operator's input before it
    /// runs (pooling windows, element-wise operands, concatenation,
    /// passthrough); 0 when the operator reads its input in place.
    pub assembled: u64,
    /// Elements written (each scaled, clamped and activated).
    pub outputs: u64,
}

impl SoftwareLayer {
    /// A layer computing `rows` dot products of length `n` at each of
    /// `pixels` positions; it gathers fields of kernel rows
    /// `kernel_width` long, or reads in place with `None`.
    pub fn of_dot_products(
        kind: SoftwareKind,
        pixels: u64,
        rows: u64,
        n: u64,
        kernel_width: Option<u64>,
        assembled: u64,
        outputs: u64,
    ) -> SoftwareLayer {
        // A depthwise layer runs one single-row dot product per channel.
        let (calls, rows_run) = match kind {
            SoftwareKind::Depthwise => (pixels * rows, 2),
            _ => (pixels, rows.div_ceil(2) * 2),
        };
        let tail = n % 4;
        let (gathered, field_rows) = match kernel_width {
            Some(w) => (calls * n, calls * n / w.max(1)),
            None => (0, 0),
        };
        SoftwareLayer {
            kind,
            macs: pixels * rows * n,
            simd_macs: calls * rows_run * (n - tail),
            tail_macs: calls * rows_run * tail,
            calls,
            gathered,
            field_rows,
            assembled,
            outputs,
        }
    }

    /// A layer of pooling or element-wise work only: it assembles
    /// `assembled` input elements into `outputs`.
    pub fn pool_only(assembled: u64, outputs: u64) -> SoftwareLayer {
        SoftwareLayer {
            kind: SoftwareKind::PoolOnly,
            macs: 0,
            simd_macs: 0,
            tail_macs: 0,
            calls: 0,
            gathered: 0,
            field_rows: 0,
            assembled,
            outputs,
        }
    }

    pub fn of(l: &HwLayer) -> SoftwareLayer {
        let operands = u64::from(l.operands.max(1));
        let assembled = match l.pool {
            Some(p) => u64::from(l.pooled.channels) * l.pooled.pixels() * u64::from(p.size[0] * p.size[1]) * operands,
            None if l.eltwise.is_some() || l.sources.len() > 1 || l.operator == Operator::None => {
                u64::from(l.input.channels) * l.input.pixels() * operands
            }
            None => 0,
        };
        let outputs = u64::from(l.output.channels) * l.output.pixels();
        let (cin, cout) = (u64::from(l.in_channels()), u64::from(l.out_channels));
        // A dilated conv1d runs as its zero-stuffed kernel (`kflow_ai8x::sim`).
        let taps = u64::from(l.kernel_taps());
        let pixels = l.output.pixels();
        match l.operator {
            Operator::None => SoftwareLayer::pool_only(assembled, outputs),
            Operator::Linear => {
                let n = if l.flatten { cin * l.pooled.pixels() } else { cin };
                SoftwareLayer::of_dot_products(SoftwareKind::Linear, 1, cout, n, None, assembled, outputs)
            }
            Operator::Conv1d => SoftwareLayer::of_dot_products(
                SoftwareKind::Conv1d,
                pixels,
                cout,
                cin * taps,
                Some(taps),
                assembled,
                outputs,
            ),
            Operator::Conv2d if l.is_depthwise() => {
                let width = Some(u64::from(l.kernel[1]));
                SoftwareLayer::of_dot_products(SoftwareKind::Depthwise, pixels, cout, taps, width, assembled, outputs)
            }
            Operator::Conv2d | Operator::ConvTranspose2d => {
                let kind = match l.operator {
                    Operator::Conv2d => SoftwareKind::Conv2d,
                    _ => SoftwareKind::ConvTranspose2d,
                };
                let width = Some(u64::from(l.kernel[1]));
                SoftwareLayer::of_dot_products(kind, pixels, cout, cin * taps, width, assembled, outputs)
            }
        }
    }
}

/// A linear model of the instructions of kflow's generated C inference:
/// per layer `per_simd_mac(kind)·simd_macs + per_tail_mac·tail_macs +
/// per_call·calls + per_gathered·gathered + per_field_row·field_rows +
/// per_assembled·assembled + per_output·outputs + per_layer`, plus
/// `per_inference` (see [`SoftwareLayer`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftwareModel {
    pub conv1d_per_simd_mac: f64,
    pub conv2d_per_simd_mac: f64,
    pub depthwise_per_simd_mac: f64,
    pub conv_transpose2d_per_simd_mac: f64,
    pub linear_per_simd_mac: f64,
    pub per_tail_mac: f64,
    pub per_call: f64,
    pub per_gathered: f64,
    pub per_field_row: f64,
    pub per_assembled: f64,
    pub per_output: f64,
    pub per_layer: f64,
    pub per_inference: f64,
}

impl SoftwareModel {
    pub fn per_simd_mac(&self, kind: SoftwareKind) -> f64 {
        match kind {
            SoftwareKind::Conv1d => self.conv1d_per_simd_mac,
            SoftwareKind::Conv2d => self.conv2d_per_simd_mac,
            SoftwareKind::Depthwise => self.depthwise_per_simd_mac,
            SoftwareKind::ConvTranspose2d => self.conv_transpose2d_per_simd_mac,
            SoftwareKind::Linear => self.linear_per_simd_mac,
            SoftwareKind::PoolOnly => 0.0,
        }
    }

    /// Instructions of one inference (never negative).
    pub fn instructions(&self, layers: &[SoftwareLayer]) -> f64 {
        let sum: f64 = layers
            .iter()
            .map(|l| {
                self.per_simd_mac(l.kind) * l.simd_macs as f64
                    + self.per_tail_mac * l.tail_macs as f64
                    + self.per_call * l.calls as f64
                    + self.per_gathered * l.gathered as f64
                    + self.per_field_row * l.field_rows as f64
                    + self.per_assembled * l.assembled as f64
                    + self.per_output * l.outputs as f64
                    + self.per_layer
            })
            .sum();
        (sum + self.per_inference).max(0.0)
    }
}

/// Fitted by least squares (relative residuals, no negative cost) to the
/// instructions QEMU counted (`-icount`, exact) for kflow's generated C on
/// the Cortex-M4 (`arm-none-eabi-gcc -O2`, kflow-cm-firmware) over 279
/// networks. Regenerate with `cargo bench --bench m4_kernels -- --fit`;
/// BENCHMARKS.md has the fit's quality.
pub const M4_SOFTWARE: SoftwareModel = SoftwareModel {
    conv1d_per_simd_mac: 2.024,
    conv2d_per_simd_mac: 2.116,
    // Came out negative (few depthwise layers; `per_call` carries their
    // cost): fitted without it.
    depthwise_per_simd_mac: 0.0,
    conv_transpose2d_per_simd_mac: 1.713,
    linear_per_simd_mac: 1.951,
    per_tail_mac: 11.94,
    per_call: 49.51,
    per_gathered: 19.88,
    per_field_row: 8.583,
    per_assembled: 19.59,
    per_output: 14.79,
    per_layer: 186.6,
    // Came out negative: fitted without it.
    per_inference: 0.0,
};

/// The baseline at the CPU's IPO clock (100 MHz on the MAX78000, 120 MHz
/// on the MAX78002).
pub fn software_baseline(allocation: &Allocation) -> SoftwareBaseline {
    let layers: Vec<SoftwareLayer> = allocation.layers.iter().map(|a| SoftwareLayer::of(&a.layer)).collect();
    let macs: u64 = layers.iter().map(|l| l.macs).sum();
    let instructions = M4_SOFTWARE.instructions(&layers).round() as u64;
    let clock_hz = allocation.device.clocks().ipo_hz;
    let cycles = (instructions as f64 * CORTEX_M4_CYCLES_PER_INSTRUCTION).ceil() as u64;
    SoftwareBaseline {
        macs,
        instructions,
        cycles_per_instruction: CORTEX_M4_CYCLES_PER_INSTRUCTION,
        cycles,
        clock_hz,
        seconds: cycles as f64 / clock_hz as f64,
        note: format!(
            "kflow's generated C: instructions from a model fitted to QEMU's instruction counts of it \
             (cargo bench --bench m4_kernels -- --fit), cycles at {CORTEX_M4_CYCLES_PER_INSTRUCTION} per instruction \
             (Cortex-M4 TRM timings of its inner loop)"
        ),
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
    fn software_baseline_is_the_fitted_instructions_at_the_m4s_cpi() {
        let allocation = cats(Device::Max78002);
        let b = software_baseline(&allocation);
        assert_eq!(b.macs, 20_256);
        let layers: Vec<SoftwareLayer> = allocation.layers.iter().map(|a| SoftwareLayer::of(&a.layer)).collect();
        assert_eq!(b.instructions, M4_SOFTWARE.instructions(&layers).round() as u64);
        // Dot products of a few instructions per MAC, plus the code around them.
        assert!(b.instructions > b.macs && b.instructions < 20 * b.macs, "{b:?}");
        assert_eq!(b.cycles, (b.instructions as f64 * 1.25).ceil() as u64);
        assert_eq!(b.clock_hz, 120_000_000);
        assert!(b.note.contains("QEMU"), "{}", b.note);
    }

    #[test]
    fn each_kind_costs_its_own_rate_per_mac_and_pooling_none() {
        let layer = |kind, simd_macs| SoftwareLayer {
            kind,
            macs: simd_macs,
            simd_macs,
            tail_macs: 0,
            calls: 0,
            gathered: 0,
            field_rows: 0,
            assembled: 0,
            outputs: 0,
        };
        let base = M4_SOFTWARE.instructions(&[layer(SoftwareKind::PoolOnly, 1000)]);
        assert_eq!(base, (M4_SOFTWARE.per_layer + M4_SOFTWARE.per_inference).max(0.0));
        for kind in [
            SoftwareKind::Conv1d,
            SoftwareKind::Conv2d,
            SoftwareKind::Depthwise,
            SoftwareKind::ConvTranspose2d,
            SoftwareKind::Linear,
        ] {
            assert!(M4_SOFTWARE.per_simd_mac(kind) >= 0.0, "{kind:?}");
            let big = |macs| M4_SOFTWARE.instructions(&[layer(kind, macs)]);
            assert!((big(2000) - big(1000) - 1000.0 * M4_SOFTWARE.per_simd_mac(kind)).abs() < 1e-6);
        }
    }

    #[test]
    fn odd_rows_and_lengths_past_four_cost_what_the_kernels_run() {
        // conv2d 3 → 3 channels, 3×3: fields of 27 in 9 rows, rows of weights in two pairs.
        let l = SoftwareLayer::of_dot_products(SoftwareKind::Conv2d, 10, 3, 27, Some(3), 0, 30);
        assert_eq!(l.macs, 10 * 3 * 27);
        assert_eq!((l.simd_macs, l.tail_macs), (10 * 4 * 24, 10 * 4 * 3));
        assert_eq!((l.calls, l.gathered, l.field_rows), (10, 10 * 27, 10 * 9));
        // A depthwise channel is a pair of one row, gathered alone.
        let d = SoftwareLayer::of_dot_products(SoftwareKind::Depthwise, 10, 5, 9, Some(3), 0, 50);
        assert_eq!(
            (d.simd_macs, d.tail_macs, d.calls, d.gathered),
            (50 * 2 * 8, 50 * 2, 50, 50 * 9)
        );
        let fc = SoftwareLayer::of_dot_products(SoftwareKind::Linear, 1, 10, 64, None, 0, 10);
        assert_eq!((fc.simd_macs, fc.tail_macs, fc.calls, fc.gathered), (640, 0, 1, 0));
    }
}
