//! The register writes `cnn_model.c` performs, as data: `cnn_init`,
//! `cnn_configure` and `cnn_start` in call order (spec/max78002.md §6.3,
//! §6.6), for a board (or a simulator of one) that configures itself the
//! way the generated driver does. The C is written from the same values
//! (`c_source.rs` takes its constants from here and its layer table from
//! [`crate::registers`]), and a host-compiled trace of the C checks the
//! two against each other (tests/generated_code.rs).
//!
//! `cnn_model.regs`, little-endian throughout:
//!
//! ```text
//! magic  "KFRG"          4 bytes
//! version 1              u16
//! device  85 | 87        u16  (ADI's device id, §1)
//! for each phase (init, configure, start):
//!     count              u32
//!     count × (address u32, value u32)
//! ```
//!
//! Nothing follows the last phase. `cnn_init` is recorded for the used
//! quadrants (the driver's default; `CNN_INIT_ALL_QUADRANTS` is for KZR's
//! own start-up), without its polls of SRAM_TEST bit 25.

use crate::device::{ControlRegister, Device};
use crate::geometry::Checked;
use crate::program::Program;
use crate::registers::RegisterWrite;

/// `CTL` while the state machine is stopped: clock enable and mexpress
/// weight loading (bit 20), §6.3 `cnn_init`.
pub const CTL_INIT: u32 = 0x0010_0008;
/// `CTL` with only the clock enabled, the first write of the MAX78002's
/// `cnn_init` (§6.3).
pub const CTL_CLOCK: u32 = 0x0000_0008;
/// `SRAM` control: the value `cnn_init` writes (§6.3).
pub const SRAM_INIT: u32 = 0x0000_040e;
/// `CTL` bit 30: binary weights (§6.3 CTL bits).
pub const CTL_BINARY: u32 = 1 << 30;
/// `CTL` bits of `cnn_start` (§6.3): enable (0), master (11, on the
/// slaves' first write: slave-of-master).
pub const CTL_ENABLE: u32 = 0x001;
pub const CTL_MASTER_SLAVE: u32 = 0x800;

const MAGIC: &[u8; 4] = b"KFRG";
const VERSION: u16 = 1;
/// Every phase of every network kflow generates stays far below this
/// (128 layers × 4 quadrants × 19 registers); a longer list is not ours.
pub const MAX_WRITES: u32 = 1 << 16;

/// One 32-bit register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Write {
    pub address: u32,
    pub value: u32,
}

impl From<&RegisterWrite> for Write {
    fn from(w: &RegisterWrite) -> Write {
        Write {
            address: w.address,
            value: w.value,
        }
    }
}

/// The three phases of the driver's register writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterList {
    pub init: Vec<Write>,
    pub configure: Vec<Write>,
    pub start: Vec<Write>,
}

/// Why bytes are not a register list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterListError {
    #[error("not a register list (no KFRG magic)")]
    Magic,
    #[error("register list version {0}; this reader knows version 1")]
    Version(u16),
    #[error("register list for device id {0}; known ids are 85 (MAX78000) and 87 (MAX78002)")]
    Device(u16),
    #[error("register list ends inside the {phase} phase at byte {at}")]
    Truncated { phase: &'static str, at: usize },
    #[error("the {phase} phase declares {count} writes, more than the limit of {max}")]
    TooMany { phase: &'static str, count: u32, max: u32 },
    #[error("{0} bytes follow the start phase")]
    Trailing(usize),
}

/// The phases' names, in order.
pub const PHASES: [&str; 3] = ["init", "configure", "start"];

/// `SRAM_TEST`'s memory-clear word: it also clears the bias memory (bit
/// 10) only when some layer has a bias (izer max7800x.py:1251-1252).
pub(crate) fn sram_test_word(program: &Program) -> u32 {
    if program.layers.iter().any(|l| l.bias.is_some()) {
        0x1c80
    } else {
        0x1880
    }
}

/// `cnn_start`'s base word: `CTL_INIT`, plus the binary-weights bit.
pub(crate) fn ctl_run_word(program: &Program) -> u32 {
    if program.layers.iter().any(|l| l.binary) {
        CTL_INIT | CTL_BINARY
    } else {
        CTL_INIT
    }
}

/// The writes of `cnn_init`, `cnn_configure` and `cnn_start` for `program`.
pub fn register_list(program: &Program) -> Result<RegisterList, crate::CodegenError> {
    let checked = crate::geometry::check(program)?;
    let registers = crate::registers::register_writes(&checked);
    Ok(list(&checked, &registers))
}

pub(crate) fn list(checked: &Checked<'_>, registers: &[RegisterWrite]) -> RegisterList {
    let program = checked.program;
    let device = program.device;
    let used = &checked.used_quadrants;
    let ctl = |q: u32, r: ControlRegister, value: u32| Write {
        address: device.control_address(q, r),
        value,
    };
    let aon = Write {
        address: device.aon_control_address(),
        value: 0,
    };
    // §6.3: LCNT_MAX = last layer | start layer << 8, left unwritten when 0.
    let lcnt = program.layers.len() as u32 - 1;
    let mut init = Vec::new();
    match device {
        Device::Max78002 => {
            init.extend(used.iter().map(|q| ctl(*q, ControlRegister::Ctl, CTL_CLOCK)));
            init.push(aon);
            init.extend(used.iter().map(|q| ctl(*q, ControlRegister::Sram, SRAM_INIT)));
            let clear = sram_test_word(program);
            init.extend(used.iter().map(|q| ctl(*q, ControlRegister::SramTest, clear)));
            init.extend(used.iter().map(|q| ctl(*q, ControlRegister::SramTest, 0)));
            for &q in used {
                init.push(ctl(q, ControlRegister::Ctl, CTL_INIT));
                if lcnt != 0 {
                    init.push(ctl(q, ControlRegister::LcntMax, lcnt));
                }
            }
        }
        Device::Max78000 => {
            init.push(aon);
            for &q in used {
                init.push(ctl(q, ControlRegister::Ctl, CTL_INIT));
                init.push(ctl(q, ControlRegister::Sram, SRAM_INIT));
                if lcnt != 0 {
                    init.push(ctl(q, ControlRegister::LcntMax, lcnt));
                }
            }
        }
    }
    // §6.3 cnn_start: quadrant 0 as master, the other used quadrants as
    // slaves, then quadrant 0 enabled.
    let run = ctl_run_word(program);
    let mut start = vec![ctl(0, ControlRegister::Ctl, run | CTL_MASTER_SLAVE)];
    start.extend(
        used.iter()
            .filter(|q| **q != 0)
            .map(|q| ctl(*q, ControlRegister::Ctl, run | CTL_MASTER_SLAVE | CTL_ENABLE)),
    );
    start.push(ctl(0, ControlRegister::Ctl, run | CTL_ENABLE));
    RegisterList {
        init,
        configure: registers.iter().map(Write::from).collect(),
        start,
    }
}

impl RegisterList {
    pub fn phases(&self) -> [(&'static str, &[Write]); 3] {
        [
            (PHASES[0], &self.init),
            (PHASES[1], &self.configure),
            (PHASES[2], &self.start),
        ]
    }

    /// `cnn_model.regs` for `device`.
    pub fn to_bytes(&self, device: Device) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(device.id() as u16).to_le_bytes());
        for (_, writes) in self.phases() {
            bytes.extend_from_slice(&(writes.len() as u32).to_le_bytes());
            for w in writes {
                bytes.extend_from_slice(&w.address.to_le_bytes());
                bytes.extend_from_slice(&w.value.to_le_bytes());
            }
        }
        bytes
    }

    /// Reads `cnn_model.regs`: the device it was generated for and the
    /// writes. Every count is checked against the bytes that remain before
    /// anything is allocated.
    pub fn parse(bytes: &[u8]) -> Result<(Device, RegisterList), RegisterListError> {
        if bytes.get(..4) != Some(MAGIC.as_slice()) {
            return Err(RegisterListError::Magic);
        }
        let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let version = u16_at(4).ok_or(RegisterListError::Magic)?;
        if version != VERSION {
            return Err(RegisterListError::Version(version));
        }
        let device = match u16_at(6).ok_or(RegisterListError::Magic)? {
            85 => Device::Max78000,
            87 => Device::Max78002,
            other => return Err(RegisterListError::Device(other)),
        };
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let mut at = 8;
        let mut list = RegisterList::default();
        for (phase, writes) in PHASES
            .into_iter()
            .zip([&mut list.init, &mut list.configure, &mut list.start])
        {
            let count = u32_at(at).ok_or(RegisterListError::Truncated { phase, at })?;
            at += 4;
            if count > MAX_WRITES {
                return Err(RegisterListError::TooMany {
                    phase,
                    count,
                    max: MAX_WRITES,
                });
            }
            if bytes.len() - at < count as usize * 8 {
                return Err(RegisterListError::Truncated { phase, at: bytes.len() });
            }
            writes.reserve(count as usize);
            for _ in 0..count {
                let (Some(address), Some(value)) = (u32_at(at), u32_at(at + 4)) else {
                    return Err(RegisterListError::Truncated { phase, at });
                };
                writes.push(Write { address, value });
                at += 8;
            }
        }
        if at != bytes.len() {
            return Err(RegisterListError::Trailing(bytes.len() - at));
        }
        Ok((device, list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RegisterList {
        let w = |address, value| Write { address, value };
        RegisterList {
            init: vec![w(0x5100_0000, 8), w(0x5000_1000, 0)],
            configure: vec![w(0x5110_0004, 0x1234)],
            start: vec![w(0x5100_0000, 0x0010_0808), w(0x5100_0000, 0x0010_0009)],
        }
    }

    #[test]
    fn bytes_round_trip() {
        let list = sample();
        let bytes = list.to_bytes(Device::Max78002);
        assert_eq!(bytes.len(), 8 + 3 * 4 + 5 * 8);
        assert_eq!(RegisterList::parse(&bytes).unwrap(), (Device::Max78002, list));
    }

    #[test]
    fn every_truncation_and_a_trailing_byte_are_errors() {
        let bytes = sample().to_bytes(Device::Max78000);
        for end in 0..bytes.len() {
            assert!(RegisterList::parse(&bytes[..end]).is_err(), "{end}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(RegisterList::parse(&longer), Err(RegisterListError::Trailing(1)));
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut bytes = b"KFRG\x01\x00\x57\x00".to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RegisterList::parse(&bytes),
            Err(RegisterListError::TooMany { phase: "init", .. })
        ));
    }
}
