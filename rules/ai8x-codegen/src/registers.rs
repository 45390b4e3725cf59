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
    let mut writes = Vec::new();
    for (index, (layer, geometry)) in checked.program.layers.iter().zip(&checked.layers).enumerate() {
        let chw = index == 0 && checked.program.input_format == DataFormat::Chw;
        let common = LayerValues::new(device, layer, geometry, chw);
        for &quadrant in &checked.used_quadrants {
            for register in WRITE_ORDER {
                let (Some(r), value) = (register.index(device), common.value(register, layer, quadrant)) else {
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

/// The values shared by all quadrants; LCTL, POST and ENA get their
/// per-quadrant bits in `value`.
struct LayerValues {
    device: Device,
    rcnt: u32,
    ccnt: u32,
    stride: u32,
    wptr_base: u32,
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
    fn new(device: Device, layer: &Layer, g: &LayerGeometry, chw: bool) -> LayerValues {
        let (h, w) = (layer.input.height, layer.input.width);
        let [ph, pw] = g.pool;
        let s = g.pool_stride;
        let [kh, kw] = layer.kernel;
        let in_expand = g.in_passes.count;
        let out_expand = g.out_passes.count;
        let pad_h = layer.pad;
        let pad_w = if layer.operator == Operator::Conv2d {
            layer.pad
        } else {
            0
        };
        let shift = device.instance_word_shift();
        let (rcnt, ccnt, stride) = match device {
            // §6.3: RCNT = (H − 1 + 2·pad_h) | pad_h << 16; columns likewise.
            Device::Max78000 => (
                (h - 1 + 2 * pad_h) | pad_h << 16,
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
                let step = (row_c_tail + (s - 1) * w) * in_expand;
                (
                    (h - r_tail) | step << 16 | pad_bits(pad_h),
                    (w - c_tail) | c_tail << 16 | pad_bits(pad_w),
                    // STRIDE = (s − 1) | (s·operands·in_expand) << 4.
                    (s - 1) | (s * in_expand) << 4,
                )
            }
        };
        let first_out = layer.output_processors.trailing_zeros();
        let mut lctl = 0x20 | 1 << 11;
        if chw {
            lctl |= 0x40;
        }
        if layer.pool.is_some() {
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
        // §6.3 LCTL2: ((fls(outmap) − (ffs(outmap) & ~3))·8) << 12 (MAX78000:
        // << 8) | (out_expand·(write_gap + 1) − 1) << 4 | (in_expand − 1).
        let span_shift = if device == Device::Max78002 { 12 } else { 8 };
        let lctl2 = ((fls(layer.output_processors) - (first_out & !3)) * 8) << span_shift
            | (out_expand - 1) << 4
            | (in_expand - 1);
        // §6.3 MCNT: koffs = 9·kern_offs/ksize·8, kl = (kern_count − 1)·8.
        // A passthrough layer has no kernel memory: koffs = kl = 0 (kc = 1).
        let passthrough = layer.operator == Operator::Passthrough;
        let koffs = if passthrough {
            0
        } else {
            9 * layer.kernel_offset / g.taps * 8
        };
        let kl = (g.kernel_count - 1) * 8;
        let (mcnt1, mcnt2) = match device {
            Device::Max78000 => (koffs << 16 | (koffs + kl), 0),
            Device::Max78002 => (koffs + kl, koffs),
        };
        // §6.3 ONED: conv1d k << 8 | 1 << 12; linear, 1×1 and passthrough:
        // 1 << 8.
        let oned = match (layer.operator, kh * kw) {
            (Operator::Conv1d, _) => kh << 8 | 1 << 12,
            (Operator::Linear | Operator::Passthrough, _) | (Operator::Conv2d, 1) => 1 << 8,
            (Operator::Conv2d, _) => 0,
        };
        // TRAM max, 3×3 conv2d only: W_p + 2·pad − 3 (izer output:
        // 27 for 28-wide MNIST, 36 and 17 for the 37- and 18-wide pooled
        // layers of ADI's svhn_tinierssd).
        let tptr = if layer.operator == Operator::Conv2d && kw == 3 {
            (g.pooled[1] + 2 * layer.pad).saturating_sub(3)
        } else {
            0
        };
        let mut post = 0;
        // §2.11: the shift is ignored for 32-bit outputs.
        if layer.output_width == OutputWidth::Bits8 {
            post |= layer.output_shift.unsigned_abs() << 13;
            if layer.output_shift < 0 {
                post |= 1 << 17;
            }
        }
        if layer.activation == Activation::Abs {
            post |= 1 << 26;
        }
        if layer.flatten {
            post |= 1 << 27;
        }
        // §6.3 POST bits 24–25: passthrough 3 << 24.
        if passthrough {
            post |= 3 << 24;
        }
        let choffs = match (out_expand > 1, layer.output_width) {
            (false, _) => 0,
            // (output_width/8)·(write_gap + 1)
            (true, OutputWidth::Bits8) => 1,
            (true, OutputWidth::Bits32) => 4,
        };
        LayerValues {
            device,
            rcnt,
            ccnt,
            stride,
            wptr_base: (layer.out_offset / 4) | ((first_out / 4) << shift),
            lctl,
            lctl2,
            mcnt1,
            mcnt2,
            ochan: g.kernel_count - 1,
            oned,
            tptr,
            post,
            prcnt: ph - 1,
            pccnt: pw - 1,
            choffs,
        }
    }

    fn value(&self, register: LayerRegister, layer: &Layer, quadrant: u32) -> u32 {
        let enabled = quadrant_map(layer.processors, quadrant);
        match register {
            LayerRegister::Rcnt => self.rcnt,
            LayerRegister::Ccnt => self.ccnt,
            LayerRegister::Prcnt => self.prcnt,
            LayerRegister::Pccnt => self.pccnt,
            LayerRegister::Stride => self.stride,
            LayerRegister::WptrBase => self.wptr_base,
            LayerRegister::WptrToffs => u32::from(layer.operator == Operator::Linear),
            LayerRegister::WptrMoffs => 1 << self.device.instance_word_shift(),
            LayerRegister::WptrChoffs => self.choffs,
            LayerRegister::RptrBase => layer.in_offset / 4,
            LayerRegister::Lctl => self.lctl | source_quadrants(layer, quadrant),
            LayerRegister::Lctl2 => self.lctl2,
            LayerRegister::Mcnt1 => self.mcnt1,
            LayerRegister::Mcnt2 => self.mcnt2,
            LayerRegister::Ochan => self.ochan,
            LayerRegister::Oned => self.oned,
            LayerRegister::Tptr => self.tptr,
            LayerRegister::Post => match &layer.bias {
                Some(bias) if bias.quadrant == quadrant => self.post | 1 << 12 | bias.offset,
                _ => self.post,
            },
            LayerRegister::Ena => enabled | enabled << 16,
        }
    }
}

/// LCTL bits 12–15 (§6.3): on the layer's first quadrant only, the other
/// quadrants with enabled input processors, plus the bias quadrant; for
/// operator layers only, so never for a passthrough layer.
fn source_quadrants(layer: &Layer, quadrant: u32) -> u32 {
    if layer.operator == Operator::Passthrough {
        return 0;
    }
    let mut quadrants: u32 = (0..4)
        .filter(|q| quadrant_map(layer.processors, *q) != 0)
        .map(|q| 1 << q)
        .sum();
    if quadrants.trailing_zeros() != quadrant {
        return 0;
    }
    if let Some(bias) = &layer.bias {
        quadrants |= 1 << bias.quadrant;
    }
    (quadrants & !(1 << quadrant)) << 12
}

#[cfg(test)]
mod tests;
