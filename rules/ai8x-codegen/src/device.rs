//! The two accelerators and their address map (spec/max78002.md §1, §1.1).

use serde::{Deserialize, Serialize};

/// Quadrants (ADI: "groups") of 16 processors.
pub const QUADRANTS: u32 = 4;
/// Processors per device.
pub const PROCESSORS: u32 = 64;
/// Processors per quadrant.
pub const PROCESSORS_PER_QUADRANT: u32 = 16;
/// Processors sharing one data-memory instance.
pub const PROCESSORS_PER_INSTANCE: u32 = 4;
/// Bytes in one 72-bit kernel-memory column.
pub const COLUMN_BYTES: usize = 9;

/// A CNN accelerator (spelled as in `kflow-ai8x`, so that its JSON converts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// Die AI85.
    Max78000,
    /// Die AI87.
    Max78002,
}

/// Quadrant control registers (§1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRegister {
    Ctl = 0,
    Sram = 1,
    LcntMax = 2,
    SramTest = 3,
}

impl Device {
    /// ADI's device id (85, 87).
    pub fn id(self) -> u32 {
        match self {
            Device::Max78000 => 85,
            Device::Max78002 => 87,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Max78000 => "MAX78000",
            Device::Max78002 => "MAX78002",
        }
    }

    /// Hardware layers (§1), counting standalone passthrough/element-wise
    /// layers and hidden helper layers.
    pub fn max_layers(self) -> usize {
        match self {
            Device::Max78000 => 32,
            Device::Max78002 => 128,
        }
    }

    /// Rows or columns of any layer's input or output (§1). The README says
    /// 1023 / 2047; the code accepts 1024 / 2048 (§10 item 3).
    pub fn max_rows_cols(self) -> u32 {
        match self {
            Device::Max78000 => 1024,
            Device::Max78002 => 2048,
        }
    }

    /// Kernel-memory columns of processor `p` (§1).
    pub fn kernel_columns(self, processor: u32) -> u32 {
        match self {
            Device::Max78000 => 768,
            // 4×1024 + 4×256 on the first processor of each quadrant,
            // 4×1024 elsewhere.
            Device::Max78002 if processor.is_multiple_of(PROCESSORS_PER_QUADRANT) => 5120,
            Device::Max78002 => 4096,
        }
    }

    /// Bias bytes per quadrant (§1).
    pub fn bias_bytes(self) -> u32 {
        match self {
            Device::Max78000 => 512,
            Device::Max78002 => 2048,
        }
    }

    /// Bytes of one data-memory instance (§1).
    pub fn instance_bytes(self) -> u32 {
        match self {
            Device::Max78000 => 0x8000,
            // Five physical 4096 × 32-bit RAMs.
            Device::Max78002 => 0x14000,
        }
    }

    /// Address stride between data-memory instances of one quadrant (only
    /// `instance_bytes` of it are populated).
    pub fn instance_stride(self) -> u32 {
        match self {
            Device::Max78000 => 0x8000,
            Device::Max78002 => 0x2_0000,
        }
    }

    /// `log2` of the word stride between data-memory instances as the write
    /// pointer sees it: 13 on the MAX78000, 15 on the MAX78002 (§6.3
    /// WPTR_BASE and WPTR_MOFFS).
    pub fn instance_word_shift(self) -> u32 {
        match self {
            Device::Max78000 => 13,
            Device::Max78002 => 15,
        }
    }

    fn quadrant_stride(self) -> u32 {
        match self {
            Device::Max78000 => 0x40_0000,
            Device::Max78002 => 0x100_0000,
        }
    }

    /// Address of a quadrant control register.
    pub fn control_address(self, quadrant: u32, register: ControlRegister) -> u32 {
        let base = match self {
            Device::Max78000 => 0x5010_0000,
            Device::Max78002 => 0x5100_0000,
        };
        base + self.quadrant_stride() * quadrant + 4 * register as u32
    }

    /// Address of per-layer register `index` of `layer` in `quadrant`.
    pub fn layer_register_address(self, quadrant: u32, layer: u32, index: u32) -> u32 {
        match self {
            Device::Max78000 => 0x5010_0010 + self.quadrant_stride() * quadrant + 0x80 * index + 4 * layer,
            Device::Max78002 => 0x5110_0000 + self.quadrant_stride() * quadrant + 4 * index + 0x100 * layer,
        }
    }

    /// The AON control register, cleared by `cnn_init` (§6.3).
    pub fn aon_control_address(self) -> u32 {
        0x5000_1000
    }

    /// Address of bias byte `i` of `quadrant`; each byte has its own word.
    pub fn bias_address(self, quadrant: u32, byte: u32) -> u32 {
        let base = match self {
            Device::Max78000 => 0x5010_8000,
            Device::Max78002 => 0x5118_0000,
        };
        base + self.quadrant_stride() * quadrant + 4 * byte
    }

    fn kernel_stride(self) -> u32 {
        match self {
            Device::Max78000 => 0x4000,
            Device::Max78002 => 0x2_0000,
        }
    }

    /// Kernel-memory base of processor `p`.
    fn kernel_base(self, processor: u32) -> u32 {
        let base = match self {
            Device::Max78000 => 0x5018_0000,
            Device::Max78002 => 0x5140_0000,
        };
        let quadrant = processor / PROCESSORS_PER_QUADRANT;
        base + self.quadrant_stride() * quadrant + self.kernel_stride() * (processor % PROCESSORS_PER_QUADRANT)
    }

    /// The address a kernel chunk starting at `column` of `processor` is
    /// loaded to: `weight_base(p) + 4·first_col` (§6.4).
    pub fn kernel_load_address(self, processor: u32, column: u32) -> u32 {
        self.kernel_base(processor) + 4 * column
    }

    /// `(processor, column)` of a kernel-chunk address, the inverse of
    /// `kernel_load_address`.
    pub fn kernel_load_target(self, address: u32) -> Option<(u32, u32)> {
        (0..PROCESSORS).find_map(|p| {
            let base = self.kernel_base(p);
            let offset = address.checked_sub(base)?;
            (offset % 4 == 0 && offset / 4 < self.kernel_columns(p)).then_some((p, offset / 4))
        })
    }

    /// `[start, end)` of the addresses kernel chunks of `quadrant` may
    /// write: a chunk of `n` words writes `address .. address + 4n`, more
    /// than 4 bytes per column, so the range is the quadrant's whole window.
    pub fn kernel_load_range(self, quadrant: u32) -> (u32, u32) {
        let first = self.kernel_base(quadrant * PROCESSORS_PER_QUADRANT);
        (first, first + PROCESSORS_PER_QUADRANT * self.kernel_stride())
    }

    /// `[start, end)` of `quadrant`'s bias memory.
    pub fn bias_range(self, quadrant: u32) -> (u32, u32) {
        (
            self.bias_address(quadrant, 0),
            self.bias_address(quadrant, self.bias_bytes()),
        )
    }

    /// Address of byte offset `offset` in global data-memory instance
    /// `instance` (0..15).
    pub fn data_address(self, instance: u32, offset: u32) -> u32 {
        let base = match self {
            Device::Max78000 => 0x5040_0000,
            Device::Max78002 => 0x5180_0000,
        };
        let quadrant = instance / (PROCESSORS_PER_QUADRANT / PROCESSORS_PER_INSTANCE);
        let local = instance % (PROCESSORS_PER_QUADRANT / PROCESSORS_PER_INSTANCE);
        base + self.quadrant_stride() * quadrant + self.instance_stride() * local + offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max78002_addresses_match_the_spec_examples() {
        // §6.4: processor 0's chunks of the §4.5 network.
        assert_eq!(Device::Max78002.kernel_load_address(0, 12), 0x5140_0030);
        // §5.2: the §4.5 input instances.
        let input: Vec<u32> = [0, 1, 2, 3, 4]
            .iter()
            .map(|i| Device::Max78002.data_address(*i, 0))
            .collect();
        assert_eq!(input, [0x5180_0000, 0x5182_0000, 0x5184_0000, 0x5186_0000, 0x5280_0000]);
        assert_eq!(Device::Max78002.layer_register_address(1, 0, 1), 0x5210_0004);
        assert_eq!(Device::Max78002.bias_address(1, 2), 0x5218_0008);
        assert_eq!(
            Device::Max78002.control_address(3, ControlRegister::SramTest),
            0x5400_000C
        );
    }

    #[test]
    fn kernel_load_target_inverts_kernel_load_address() {
        for device in [Device::Max78000, Device::Max78002] {
            for (p, col) in [(0, 0), (17, 100), (63, 767), (48, 5), (31, 400)] {
                let address = device.kernel_load_address(p, col);
                assert_eq!(device.kernel_load_target(address), Some((p, col)));
            }
        }
    }
}
