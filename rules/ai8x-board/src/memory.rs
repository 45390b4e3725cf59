//! The board's memories as the generated driver fills them: the register
//! file (`cnn_init`, `cnn_configure`, `cnn_start` writes), kernel memory
//! (the kernel chunks of `cnn_model.bin`, §6.4) and bias memory (its bias
//! chunks, §6.5). Every write is checked against the device's address map
//! (spec/max78002.md §1, §1.1, §6.3); anything outside it is refused with
//! the address.

use std::collections::{BTreeMap, HashMap};

use kflow_ai8x_codegen::{
    COLUMN_BYTES, ControlRegister, Device, LayerRegister, ModelBlob, QUADRANTS, RegisterList, WRITE_ORDER, Write,
};

use crate::Refusal;

/// What a configure write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerSlot {
    pub quadrant: u32,
    pub layer: u32,
    pub register: LayerRegister,
}

/// The register and memory address map of one device.
pub struct AddressMap {
    pub device: Device,
    layer_registers: HashMap<u32, LayerSlot>,
}

impl AddressMap {
    pub fn new(device: Device) -> AddressMap {
        let mut layer_registers = HashMap::new();
        for quadrant in 0..QUADRANTS {
            for layer in 0..device.max_layers() as u32 {
                for register in WRITE_ORDER {
                    if let Some(index) = register.index(device) {
                        layer_registers.insert(
                            device.layer_register_address(quadrant, layer, index),
                            LayerSlot {
                                quadrant,
                                layer,
                                register,
                            },
                        );
                    }
                }
            }
        }
        AddressMap {
            device,
            layer_registers,
        }
    }

    pub fn layer_register(&self, address: u32) -> Option<LayerSlot> {
        self.layer_registers.get(&address).copied()
    }

    /// A quadrant control register or the AON control register.
    pub fn control_register(&self, address: u32) -> Option<(u32, Option<ControlRegister>)> {
        if address == self.device.aon_control_address() {
            return Some((0, None));
        }
        (0..QUADRANTS).find_map(|q| {
            [
                ControlRegister::Ctl,
                ControlRegister::Sram,
                ControlRegister::LcntMax,
                ControlRegister::SramTest,
            ]
            .into_iter()
            .find(|r| self.device.control_address(q, *r) == address)
            .map(|r| (q, Some(r)))
        })
    }

    /// `NAME (layer L, quadrant Q) at 0x…` for a message.
    pub fn describe(&self, address: u32) -> String {
        if let Some(slot) = self.layer_register(address) {
            return format!(
                "{} of layer {} in quadrant {} (0x{address:08x})",
                slot.register.name(),
                slot.layer,
                slot.quadrant
            );
        }
        match self.control_register(address) {
            Some((_, None)) => format!("AON control (0x{address:08x})"),
            Some((q, Some(r))) => format!("{} of quadrant {q} (0x{address:08x})", control_name(r)),
            None => format!("address 0x{address:08x}"),
        }
    }
}

pub fn control_name(r: ControlRegister) -> &'static str {
    match r {
        ControlRegister::Ctl => "CTL",
        ControlRegister::Sram => "SRAM",
        ControlRegister::LcntMax => "LCNT_MAX",
        ControlRegister::SramTest => "SRAM_TEST",
    }
}

/// The register file after the driver's three phases.
#[derive(Default)]
pub struct Registers {
    /// Layer registers by slot.
    pub layers: HashMap<LayerSlot, u32>,
    /// Control registers after `cnn_init`: (quadrant, register) → value.
    pub init: BTreeMap<(u32, u8), u32>,
    /// CTL values `cnn_start` wrote, in order: (quadrant, value).
    pub start: Vec<(u32, u32)>,
    /// The writes of `cnn_init` and `cnn_start` in order, as received.
    pub init_sequence: Vec<Write>,
    pub start_sequence: Vec<Write>,
}

impl Registers {
    /// Replays `list` into a register file, refusing a write to anything
    /// that is not a register its phase may write.
    pub fn load(map: &AddressMap, list: &RegisterList) -> Result<Registers, Refusal> {
        let mut registers = Registers {
            init_sequence: list.init.clone(),
            start_sequence: list.start.clone(),
            ..Registers::default()
        };
        let refuse = |phase: &str, w: &Write, what: &str| {
            Refusal::new(format!(
                "{phase} writes 0x{:08x} to {}, {what}",
                w.value,
                map.describe(w.address)
            ))
        };
        for w in &list.init {
            match map.control_register(w.address) {
                Some((_, None)) => {}
                Some((q, Some(r))) => {
                    registers.init.insert((q, r as u8), w.value);
                }
                None => return Err(refuse("cnn_init", w, "which is no control register of this board")),
            }
        }
        for w in &list.configure {
            let Some(slot) = map.layer_register(w.address) else {
                return Err(refuse("cnn_configure", w, "which is no layer register of this board"));
            };
            registers.layers.insert(slot, w.value);
        }
        for w in &list.start {
            match map.control_register(w.address) {
                Some((q, Some(ControlRegister::Ctl))) => registers.start.push((q, w.value)),
                _ => return Err(refuse("cnn_start", w, "but cnn_start writes only CTL registers")),
            }
        }
        Ok(registers)
    }

    pub fn layer(&self, quadrant: u32, layer: u32, register: LayerRegister) -> u32 {
        self.layers
            .get(&LayerSlot {
                quadrant,
                layer,
                register,
            })
            .copied()
            .unwrap_or(0)
    }
}

/// Kernel and bias memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memories {
    /// `(processor, column)` → the column's bytes in byte-index order.
    pub kernels: BTreeMap<(u32, u32), [u8; COLUMN_BYTES]>,
    /// Per quadrant, bias bytes from 0 (unwritten bytes 0).
    pub bias: [Vec<u8>; QUADRANTS as usize],
}

impl Memories {
    /// Writes the chunks of a parsed `cnn_model.bin` as the driver's
    /// loader does, refusing a chunk that falls outside the kernel or bias
    /// memory of the device.
    pub fn load(device: Device, blob: &ModelBlob) -> Result<Memories, Refusal> {
        let mut memories = Memories::default();
        for chunk in &blob.kernels {
            let Some((processor, first)) = device.kernel_load_target(chunk.address) else {
                return Err(Refusal::new(format!(
                    "cnn_model.bin: kernel chunk at 0x{:08x} is not in the kernel memory of any processor of the {}",
                    chunk.address,
                    device.name()
                )));
            };
            // §6.4: 9 bytes per column, packed big-endian into words, the
            // last word zero-padded.
            let bytes: Vec<u8> = chunk.words.iter().flat_map(|w| w.to_be_bytes()).collect();
            let columns = bytes.len() / COLUMN_BYTES;
            if bytes[columns * COLUMN_BYTES..].iter().any(|b| *b != 0) || bytes.len() - columns * COLUMN_BYTES >= 4 {
                return Err(Refusal::new(format!(
                    "cnn_model.bin: kernel chunk at 0x{:08x} has {} words, not whole 9-byte columns plus zero padding",
                    chunk.address,
                    chunk.words.len()
                )));
            }
            let limit = device.kernel_columns(processor);
            let end = first + columns as u32;
            if end > limit {
                return Err(Refusal::new(format!(
                    "cnn_model.bin: kernel chunk at 0x{:08x} writes columns {first}..{end} of processor {processor}, which has {limit}",
                    chunk.address
                )));
            }
            for (i, column) in bytes.chunks_exact(COLUMN_BYTES).enumerate() {
                let mut c = [0u8; COLUMN_BYTES];
                c.copy_from_slice(column);
                memories.kernels.insert((processor, first + i as u32), c);
            }
        }
        for chunk in &blob.biases {
            let Some(quadrant) = (0..QUADRANTS).find(|q| {
                let (start, end) = device.bias_range(*q);
                (start..end).contains(&chunk.address)
            }) else {
                return Err(Refusal::new(format!(
                    "cnn_model.bin: bias chunk at 0x{:08x} is not in the bias memory of the {}",
                    chunk.address,
                    device.name()
                )));
            };
            let (start, _) = device.bias_range(quadrant);
            let offset = chunk.address - start;
            if !offset.is_multiple_of(4) {
                return Err(Refusal::new(format!(
                    "cnn_model.bin: bias chunk at 0x{:08x} is not word-aligned",
                    chunk.address
                )));
            }
            let first = (offset / 4) as usize;
            let end = first + chunk.words.len();
            if end > device.bias_bytes() as usize {
                return Err(Refusal::new(format!(
                    "cnn_model.bin: bias chunk at 0x{:08x} writes bias bytes {first}..{end} of quadrant {quadrant}, which has {}",
                    chunk.address,
                    device.bias_bytes()
                )));
            }
            let memory = &mut memories.bias[quadrant as usize];
            if memory.len() < end {
                memory.resize(end, 0);
            }
            for (i, word) in chunk.words.iter().enumerate() {
                // §6.4: one zero-extended byte per word.
                let Ok(byte) = u8::try_from(*word) else {
                    return Err(Refusal::new(format!(
                        "cnn_model.bin: bias word 0x{word:08x} at 0x{:08x} holds more than one byte",
                        chunk.address + 4 * i as u32
                    )));
                };
                memory[first + i] = byte;
            }
        }
        Ok(memories)
    }

    /// The first place where `self` and `other` (the memories a decoded
    /// network needs) differ, as a message naming the address.
    pub fn first_difference(&self, device: Device, expected: &Memories) -> Option<String> {
        let zero = [0u8; COLUMN_BYTES];
        let keys: std::collections::BTreeSet<_> = self.kernels.keys().chain(expected.kernels.keys()).collect();
        for key in keys {
            let got = self.kernels.get(key).unwrap_or(&zero);
            let want = expected.kernels.get(key).unwrap_or(&zero);
            if got != want {
                let (p, c) = *key;
                return Some(format!(
                    "kernel memory at 0x{:08x} (processor {p}, column {c}) holds {} where the layers the registers describe place {}",
                    device.kernel_load_address(p, c),
                    hex(got),
                    hex(want)
                ));
            }
        }
        for q in 0..QUADRANTS as usize {
            let n = self.bias[q].len().max(expected.bias[q].len());
            for i in 0..n {
                let got = self.bias[q].get(i).copied().unwrap_or(0);
                let want = expected.bias[q].get(i).copied().unwrap_or(0);
                if got != want {
                    return Some(format!(
                        "bias memory at 0x{:08x} (quadrant {q}, byte {i}) holds 0x{got:02x} where the layers the registers describe place 0x{want:02x}",
                        device.bias_address(q as u32, i as u32)
                    ));
                }
            }
        }
        None
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
