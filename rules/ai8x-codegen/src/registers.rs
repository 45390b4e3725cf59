//! Per-layer register values (spec/max78002.md §6.3) and the order
//! `cnn_configure` writes them in (§6.6).

use serde::Serialize;

use crate::device::Device;
use crate::error::CodegenError;
use crate::geometry::{Checked, LayerGeometry, check, quadrant_map};
use crate::program::{Activation, DataFormat, Layer, Operator, OutputWidth, PoolKind};

/// The layer registers kflow writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum LayerRegister {
    Rcnt,
    Ccnt,
    Prcnt,
    Pccnt,
    Stride,
    WptrBase,
    WptrToffs,
    WptrMoffs,
    WptrChoffs,
    RptrBase,
    Lctl,
    Lctl2,
    /// MCNT on the MAX78000 (offset and count in one word).
    Mcnt1,
    Mcnt2,
    Ochan,
    Oned,
    Tptr,
    Post,
    Ena,
}

/// §6.6: the izer's write order, ENA last.
pub const WRITE_ORDER: [LayerRegister; 19] = [
    LayerRegister::Rcnt,
    LayerRegister::Ccnt,
    LayerRegister::Prcnt,
    LayerRegister::Pccnt,
    LayerRegister::Stride,
    LayerRegister::WptrBase,
    LayerRegister::WptrToffs,
    LayerRegister::WptrMoffs,
    LayerRegister::WptrChoffs,
    LayerRegister::RptrBase,
    LayerRegister::Lctl,
    LayerRegister::Lctl2,
    LayerRegister::Mcnt1,
    LayerRegister::Mcnt2,
    LayerRegister::Ochan,
    LayerRegister::Oned,
    LayerRegister::Tptr,
    LayerRegister::Post,
    LayerRegister::Ena,
];

impl LayerRegister {
    pub fn name(self) -> &'static str {
        match self {
            LayerRegister::Rcnt => "RCNT",
            LayerRegister::Ccnt => "CCNT",
            LayerRegister::Prcnt => "PRCNT",
            LayerRegister::Pccnt => "PCCNT",
            LayerRegister::Stride => "STRIDE",
            LayerRegister::WptrBase => "WPTR_BASE",
            LayerRegister::WptrToffs => "WPTR_TOFFS",
            LayerRegister::WptrMoffs => "WPTR_MOFFS",
            LayerRegister::WptrChoffs => "WPTR_CHOFFS",
            LayerRegister::RptrBase => "RPTR_BASE",
            LayerRegister::Lctl => "LCTL",
            LayerRegister::Lctl2 => "LCTL2",
            LayerRegister::Mcnt1 => "MCNT1",
            LayerRegister::Mcnt2 => "MCNT2",
            LayerRegister::Ochan => "OCHAN",
            LayerRegister::Oned => "ONED",
            LayerRegister::Tptr => "TPTR",
            LayerRegister::Post => "POST",
            LayerRegister::Ena => "ENA",
        }
    }

    /// The register index `r` of §6.3's table; `None` where the device has
    /// no such register.
    pub fn index(self, device: Device) -> Option<u32> {
        use LayerRegister::*;
        let (max78000, max78002) = match self {
            Rcnt => (Some(0), 1),
            Ccnt => (Some(1), 2),
            Oned => (Some(2), 3),
            Prcnt => (Some(3), 4),
            Pccnt => (Some(4), 5),
            Stride => (Some(5), 6),
            WptrBase => (Some(6), 7),
            WptrToffs => (Some(7), 8),
            WptrMoffs => (Some(8), 9),
            WptrChoffs => (Some(9), 10),
            RptrBase => (Some(10), 11),
            Lctl => (Some(11), 12),
            Lctl2 => (Some(20), 13),
            Mcnt1 => (Some(12), 14),
            Mcnt2 => (None, 15),
            Ochan => (None, 16),
            Tptr => (Some(13), 17),
            Ena => (Some(14), 18),
            Post => (Some(15), 19),
        };
        match device {
            Device::Max78000 => max78000,
            Device::Max78002 => Some(max78002),
        }
    }
}

/// One write of `cnn_configure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RegisterWrite {
    pub layer: usize,
    pub quadrant: u32,
    pub register: LayerRegister,
    pub address: u32,
    pub value: u32,
}

/// Every register write of `cnn_configure`, in order: layer by layer, used
/// quadrant by used quadrant, §6.6's register order, zero values skipped.
pub fn layer_registers(program: &crate::program::Program) -> Result<Vec<RegisterWrite>, CodegenError> {
    Ok(register_writes(&check(program)?))
}

pub(crate) fn register_writes(checked: &Checked<'_>) -> Vec<RegisterWrite> {
    let device = checked.program.device;
    let master = checked.used_quadrants.first().copied().unwrap_or(0);
    let mut writes = Vec::new();
    for (index, (layer, geometry)) in checked.program.layers.iter().zip(&checked.layers).enumerate() {
        let chw = index == 0 && checked.program.input_format == DataFormat::Chw;
        let common = LayerValues::new(device, layer, geometry, chw, &checked.used_quadrants);
        for &quadrant in &checked.used_quadrants {
            for register in WRITE_ORDER {
                let (Some(r), value) = (register.index(device), common.value(register, layer, quadrant, master)) else {
                    continue;
                };
                if value != 0 {
                    writes.push(RegisterWrite {
                        layer: index,
                        quadrant,
                        register,
                        address: device.layer_register_address(quadrant, index as u32, r),
                        value,
                    });
                }
            }
        }
    }
    writes
}

fn fls(map: u64) -> u32 {
    63 - map.leading_zeros()
}

/// §6.3 RCNT/CCNT (MAX78002): `1 << 15 | (pad − 1) << 13` when padded.
fn pad_bits(pad: u32) -> u32 {
    if pad > 0 { 1 << 15 | (pad - 1) << 13 } else { 0 }
}

/// The values shared by all quadrants; LCTL, POST, ENA and a passthrough
/// layer's WPTR_BASE get their per-quadrant bits in `value`.
struct LayerValues {
    device: Device,
    rcnt: u32,
    ccnt: u32,
    stride: u32,
    wptr_toffs: u32,
    lctl: u32,
    lctl2: u32,
    mcnt1: u32,
    mcnt2: u32,
    ochan: u32,
    oned: u32,
    tptr: u32,
    post: u32,
    prcnt: u32,
    pccnt: u32,
    choffs: u32,
}

impl LayerValues {
    fn new(device: Device, layer: &Layer, g: &LayerGeometry, chw: bool, used_quadrants: &[u32]) -> LayerValues {
        let passthrough = layer.operator == Operator::Passthrough;
        // izer max7800x.py (row count): a flatten layer reads its whole
        // input as one 1×1 pixel per pass.
        // A transposed convolution reads its input upsampled to 2H × 2W,
        // padded with 2 − pad (izer max7800x.py, row count).
        let transposed = layer.operator == Operator::ConvTranspose2d;
        let (h, w) = if layer.flatten {
            (1, 1)
        } else if transposed {
            (2 * layer.input.height, 2 * layer.input.width)
        } else {
            (layer.input.height, layer.input.width)
        };
        let [ph, pw] = g.pool;
        let s = g.pool_stride;
        let [kh, kw] = layer.kernel;
        let in_expand = g.in_passes.count;
        let out_expand = g.out_passes.count;
        // §2.7: the operands of an element-wise stage are interleaved word
        // by word, so every read advances over all of them.
        let operands = layer.eltwise.map_or(1, |e| e.operands);
        let pad_h = if transposed { 2 - layer.pad } else { layer.pad };
        let pad_w = match layer.operator {
            Operator::Conv2d | Operator::ConvTranspose2d => pad_h,
            Operator::Conv1d | Operator::Linear | Operator::Passthrough => 0,
        };
        let shift = device.instance_word_shift();
        // The MAX78000 runs a multi-pass element-wise layer other than
        // 2 operands × 2 passes as one pass over `passes` times the rows
        // (ai8x-synthesis izer/tornadocnn.py EMULATE_ELTWISE_MP,
        // izer/backend/max7800x.py:984-990, 1658, 1898, 1967): RCNT counts
        // H·passes rows, the pass count is 0 and MCNT is 0.
        let emulated = device == Device::Max78000
            && passthrough
            && operands > 1
            && in_expand > 1
            && operands * in_expand != operands + in_expand;
        let rows = if emulated { h * in_expand } else { h };
        let (rcnt, ccnt, stride) = match device {
            // §6.3: RCNT = (H − 1 + 2·pad_h) | pad_h << 16; columns likewise.
            Device::Max78000 => (
                (rows - 1 + 2 * pad_h) | pad_h << 16,
                (w - 1 + 2 * pad_w) | pad_w << 16,
                s - 1,
            ),
            Device::Max78002 => {
                // §6.3: r_tail = H − ⌊(H − P_h)/s⌋·s; stop_row = H − r_tail;
                // c_tail = 1 for conv1d, else W − ⌊(W − P_w)/s⌋·s;
                // step = (c_tail + (s − 1)·W)·operands·in_expand.
                let r_tail = h - (h - ph) / s * s;
                let c_tail = w - (w - pw) / s * s;
                let row_c_tail = if layer.operator == Operator::Conv1d { 1 } else { c_tail };
                let step = (row_c_tail + (s - 1) * w) * operands * in_expand;
                (
                    (h - r_tail) | step << 16 | pad_bits(pad_h),
                    (w - c_tail) | c_tail << 16 | pad_bits(pad_w),
                    // STRIDE = (s − 1) | (s·operands·in_expand) << 4.
                    (s - 1) | (s * operands * in_expand) << 4,
                )
            }
        };
        let first_out = layer.output_processors.trailing_zeros();
        let mut lctl = 0x20 | 1 << 11;
        if chw {
            lctl |= 0x40;
        }
        // Bit 7, pool enable (spec §6.3 "LCTL bits"): only for a pool
        // larger than 1×1, as the izer writes it (ai8x-synthesis
        // izer/backend/max7800x.py:1843). A 1×1 pool with a stride keeps
        // its pool counts and stride and subsamples all the same.
        if layer.pool.is_some_and(|p| p.size[0] > 1 || p.size[1] > 1) {
            lctl |= 0x80;
        }
        if layer.pool.is_none_or(|p| p.kind != PoolKind::Avg) {
            lctl |= 0x100;
        }
        if layer.activation == Activation::Relu {
            lctl |= 0x200;
        }
        if layer.output_width == OutputWidth::Bits32 {
            lctl |= 1 << 16;
        }
        if device == Device::Max78002 {
            lctl |= (kw - 1) << 18 | (kh - 1) << 22;
        }
        // §6.3 LCTL bit 29: depthwise broadcast.
        if layer.depthwise {
            lctl |= 1 << 29;
        }
        // izer max7800x.py (LCTL2): a flatten layer's pass count is its
        // pixels times its passes ("flatten_prod"); bits 3–0 hold its low
        // four bits, POST and TPTR the rest.
        let flatten_prod = if layer.flatten {
            in_expand * g.pooled[0] * g.pooled[1] - 1
        } else {
            0
        };
        let in_count = if layer.flatten {
            flatten_prod & 0xf
        } else if emulated {
            0
        } else {
            in_expand - 1
        };
        // §6.3 LCTL2: ((fls(outmap) − (ffs(outmap) & ~3))·b) << 12 (MAX78000:
        // << 8) | wptr_skip << 4 | in_count. b is the weight width, 0 for
        // a passthrough layer; wptr_skip is out_expand·(write_gap + 1) − 1,
        // for a passthrough layer its write gap (izer max7800x.py, LCTL2).
        let span_shift = if device == Device::Max78002 { 12 } else { 8 };
        let bits = if passthrough { 0 } else { layer.weight_bits };
        let wptr_skip = if passthrough {
            layer.write_gap
        } else {
            out_expand * (layer.write_gap + 1) - 1
        };
        let lctl2 =
            ((fls(layer.output_processors) - (first_out & !3)) * bits) << span_shift | wptr_skip << 4 | in_count;
        // §6.3 MCNT: koffs = ⌊9·kern_offs/ksize⌋·8, kl = (kern_count − 1)·b;
        // the remainder of that division starts the kernel inside its
        // column and goes to ONED bits 7–4 (izer max7800x.py, "oned_sad").
        // A passthrough layer has no kernel memory; its mask offset is
        // (out_expand − 1)·8.
        let (koffs, oned_sad) = if passthrough {
            (0, 0)
        } else {
            (9 * layer.kernel_offset / g.taps * 8, 9 * layer.kernel_offset % g.taps)
        };
        let kl = (g.kernel_count - 1) * layer.weight_bits;
        let (mcnt1, mcnt2) = match (device, passthrough) {
            (Device::Max78000, false) => (koffs << 16 | (koffs + kl), 0),
            (Device::Max78000, true) if emulated => (0, 0),
            (Device::Max78000, true) => ((out_expand - 1) * 8, 0),
            (Device::Max78002, false) => (koffs + kl, koffs),
            (Device::Max78002, true) => (0, (out_expand - 1) * 8),
        };
        // Time slots of the widest quadrant, less one (izer max7800x.py,
        // "tscnt_max"), in ONED bits 3–0: for a passthrough layer its 4-byte
        // words, which is also its OCHAN; for a depthwise layer in
        // broadcast mode up to four output bytes.
        let width = if layer.output_width == OutputWidth::Bits32 {
            4
        } else {
            1
        };
        let counts = used_quadrants
            .iter()
            .map(|q| quadrant_map(layer.processors, *q).count_ones())
            .filter(|n| *n > 0);
        let tscnt_max = if passthrough {
            counts.map(|n| (n * width - 1) / 4).max().unwrap_or(0)
        } else if layer.depthwise {
            counts.map(|n| (n - 1).min(3) * width + width - 1).max().unwrap_or(0)
        } else {
            0
        };
        // §6.3 ONED: conv1d k << 8 | 1 << 12; linear, 1×1 and a one-operand
        // passthrough: 1 << 8. Element-wise: 1 << 13 | fn << 14 |
        // pool_first << 16 | operator << 17 | (operands − 1) << 18.
        let one_by_one = kh * kw == 1;
        let mut oned = match layer.operator {
            Operator::Conv1d => kh << 8 | 1 << 12,
            Operator::Passthrough if operands > 1 => 0,
            Operator::Linear | Operator::Passthrough => 1 << 8,
            Operator::Conv2d if one_by_one => 1 << 8,
            Operator::Conv2d | Operator::ConvTranspose2d => 0,
        } | oned_sad << 4
            | tscnt_max;
        if let Some(e) = layer.eltwise {
            oned |= 1 << 13 | e.op.code() << 14 | (e.operands - 1) << 18;
            if e.pool_first && layer.pool.is_some() {
                oned |= 1 << 16;
            }
            if !passthrough {
                oned |= 1 << 17;
            }
        }
        // TRAM max: conv1d, linear and 1×1 layers use it only for a flatten
        // of 16 or more passes (izer max7800x.py, "TRAM ptr max"); 3×3
        // conv2d: W_p + 2·pad − 3 (27 for 28-wide MNIST, 36 and 17 for the
        // 37- and 18-wide pooled layers of ADI's svhn_tinierssd).
        let tptr = if transposed {
            (w + 2 * pad_w).saturating_sub(3)
        } else if layer.operator == Operator::Conv2d && kw == 3 {
            (g.pooled[1] + 2 * layer.pad).saturating_sub(3)
        } else if flatten_prod >= 16 {
            flatten_prod << 16 | (2 * flatten_prod + 1)
        } else {
            0
        };
        // §6.3 POST bits 13–17: the izer writes output_shift + 8 − b (the
        // weight width's headroom; every layer of the izer reference), for
        // 32-bit outputs too. Bits 22–23: weight width, 8 → 0, 4 → 3,
        // 2 → 2, 1 → 1.
        let scale = layer.output_shift + 8 - layer.weight_bits as i32;
        let mut post = scale.unsigned_abs() << 13;
        if scale < 0 {
            post |= 1 << 17;
        }
        post |= match layer.weight_bits {
            4 => 3,
            2 => 2,
            1 => 1,
            _ => 0,
        } << 22;
        if layer.activation == Activation::Abs {
            post |= 1 << 26;
        }
        // Flatten enable with the pass count's high bits in 18–21, only
        // when LCTL2's four bits do not hold it (izer max7800x.py, POST).
        if flatten_prod >= 16 {
            post |= 1 << 27 | (flatten_prod >> 4) << 18;
        }
        // §6.3 POST bits 24–25: passthrough 3 << 24, element-wise 1 << 24;
        // depthwise 1 << 30 | 1 << 24.
        if passthrough {
            post |= if operands > 1 { 1 << 24 } else { 3 << 24 };
        }
        if layer.depthwise {
            post |= 1 << 30 | 1 << 24;
        }
        // §6.3 POST bit 28: transposed convolution.
        if transposed {
            post |= 1 << 28;
        }
        // §6.3 WPTR_CHOFFS: (output_width/8)·(write_gap + 1) between passes.
        let choffs = match (out_expand > 1, layer.output_width) {
            (false, _) => 0,
            (true, OutputWidth::Bits8) => layer.write_gap + 1,
            (true, OutputWidth::Bits32) => 4 * (layer.write_gap + 1),
        };
        // izer max7800x.py (WPTR_TOFFS): 1 for 1×1 conv2d and linear; for
        // a passthrough layer one instance (more than 4 processors, or
        // several operands in several passes: four instances) of data
        // memory in words.
        let wptr_toffs = match layer.operator {
            Operator::Linear => 1,
            Operator::Conv2d if one_by_one && !layer.depthwise => 1,
            Operator::Passthrough if layer.processors.count_ones() > 4 || (operands > 1 && in_expand > 1) => 1 << shift,
            Operator::Passthrough => 1 << (shift - 2),
            Operator::Conv1d | Operator::Conv2d | Operator::ConvTranspose2d => 0,
        };
        LayerValues {
            device,
            rcnt,
            ccnt,
            stride,
            wptr_toffs,
            lctl,
            lctl2,
            mcnt1,
            mcnt2,
            ochan: if passthrough {
                tscnt_max
            } else if layer.depthwise {
                // izer max7800x.py, OCHAN for groups > 1.
                (tscnt_max + 1) * in_expand - 1
            } else {
                g.kernel_count - 1
            },
            oned,
            tptr,
            post,
            prcnt: ph - 1,
            pccnt: pw - 1,
            choffs,
        }
    }

    fn value(&self, register: LayerRegister, layer: &Layer, quadrant: u32, master: u32) -> u32 {
        let enabled = quadrant_map(layer.processors, quadrant);
        let passthrough = layer.operator == Operator::Passthrough;
        let shift = self.device.instance_word_shift();
        match register {
            LayerRegister::Rcnt => self.rcnt,
            LayerRegister::Ccnt => self.ccnt,
            LayerRegister::Prcnt => self.prcnt,
            LayerRegister::Pccnt => self.pccnt,
            LayerRegister::Stride => self.stride,
            // §6.3 WPTR_BASE: the first output instance; a passthrough layer
            // writes each quadrant's share from that quadrant's first output
            // instance, 0 where it has none (izer max7800x.py, WPTR_BASE).
            LayerRegister::WptrBase => {
                let outputs = if passthrough {
                    layer.output_processors & 0xffff << (16 * quadrant)
                } else {
                    layer.output_processors
                };
                let instance = if outputs == 0 { 0 } else { outputs.trailing_zeros() / 4 };
                (layer.out_offset / 4) | (instance << shift)
            }
            LayerRegister::WptrToffs => self.wptr_toffs,
            // Operator layers only (izer max7800x.py, WPTR_MOFFS).
            LayerRegister::WptrMoffs if passthrough => 0,
            LayerRegister::WptrMoffs => 1 << shift,
            LayerRegister::WptrChoffs => self.choffs,
            LayerRegister::RptrBase => layer.in_offset / 4,
            LayerRegister::Lctl => self.lctl | source_quadrants(layer, quadrant, master),
            LayerRegister::Lctl2 => self.lctl2,
            LayerRegister::Mcnt1 => self.mcnt1,
            LayerRegister::Mcnt2 => self.mcnt2,
            LayerRegister::Ochan => self.ochan,
            LayerRegister::Oned => self.oned,
            LayerRegister::Tptr => self.tptr,
            // §6.3 POST bits 0–12: the bias in the quadrant that holds it; a
            // depthwise layer's in every quadrant it uses, its offset in
            // 4-byte units (izer max7800x.py, POST).
            LayerRegister::Post => match layer.bias.as_ref().map(|b| (b, b.broadcast)) {
                Some((_, Some(offsets))) => match offsets[quadrant as usize] {
                    Some(offset) => self.post | 1 << 12 | (offset / 4),
                    None => self.post,
                },
                Some((bias, None)) if bias.quadrant == quadrant => self.post | 1 << 12 | bias.offset,
                _ => self.post,
            },
            // §6.3 ENA: processor enables, plus the same mask enables for
            // operator layers only (izer max7800x.py, ENA).
            LayerRegister::Ena if passthrough => enabled,
            LayerRegister::Ena => enabled | enabled << 16,
        }
    }
}

/// LCTL bits 12–15 (§6.3; izer max7800x.py, LCTL): on the network's first
/// used quadrant only, for operator layers other than depthwise ones: the
/// later quadrants with
/// enabled input processors of this layer, plus the bias quadrant.
fn source_quadrants(layer: &Layer, quadrant: u32, master: u32) -> u32 {
    if layer.operator == Operator::Passthrough || layer.depthwise || quadrant != master {
        return 0;
    }
    let mut quadrants: u32 = (master + 1..4)
        .filter(|q| quadrant_map(layer.processors, *q) != 0)
        .map(|q| 1 << q)
        .sum();
    if let Some(bias) = &layer.bias
        && bias.quadrant != quadrant
    {
        quadrants |= 1 << bias.quadrant;
    }
    quadrants << 12
}

#[cfg(test)]
mod tests;
