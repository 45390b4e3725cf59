//! Bare-metal firmware for QEMU's MPS2 boards (`mps2-an386`, a Cortex-M4,
//! and `mps2-an500`, a Cortex-M7) that serves kflow's device protocol (`kflow-device`, protocol version 2) on
//! UART0 around a model's generated C inference (`kflow-cm-codegen`), and
//! the command line that runs it.
//!
//! [`build`] compiles the firmware's C sources (in `firmware/`, held here
//! with `include_str!`) together with a model's `model.c` and `model.h`
//! with `arm-none-eabi-gcc` for one [`Target`] into an ELF that QEMU boots
//! with `-kernel`.
//! The weights are not part of it: the host flashes `model.bin` over the
//! protocol, and the firmware refuses a blob that is not the weights of
//! the model it was built with. Each run reports the exact number of
//! instructions `kflow_infer` executed (see README.md for why it is exact).

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use thiserror::Error;

/// The firmware's C sources, by file name.
pub const SOURCES: &[(&str, &str)] = &[
    ("board.c", include_str!("../firmware/board.c")),
    ("proto.c", include_str!("../firmware/proto.c")),
    ("proto.h", include_str!("../firmware/proto.h")),
    ("crc32.c", include_str!("../firmware/crc32.c")),
    ("crc32.h", include_str!("../firmware/crc32.h")),
    ("blake3.c", include_str!("../firmware/blake3.c")),
    ("blake3.h", include_str!("../firmware/blake3.h")),
    ("libc.c", include_str!("../firmware/libc.c")),
    ("count.S", include_str!("../firmware/count.S")),
    ("link.ld", include_str!("../firmware/link.ld")),
];

/// Sources that need no hardware and compile on the host too (the tests
/// check them against the Rust crates).
pub const HOST_SOURCES: &[&str] = &["crc32.c", "blake3.c", "proto.c"];

/// The cross compiler.
pub const COMPILER: &str = "arm-none-eabi-gcc";

/// The emulator.
pub const QEMU: &str = "qemu-system-arm";

/// A board the firmware runs on: the core it is compiled for and the one
/// place their memory maps differ (QEMU 7.2, `hw/arm/mps2.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// MPS2 with the AN386 image: a Cortex-M4.
    Mps2An386,
    /// MPS2 with the AN500 image: a Cortex-M7.
    Mps2An500,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Mps2An386, Target::Mps2An500];

    /// QEMU's name of the machine, which the board reports as its `board`.
    pub fn machine(self) -> &'static str {
        match self {
            Target::Mps2An386 => "mps2-an386",
            Target::Mps2An500 => "mps2-an500",
        }
    }

    /// gcc's `-mcpu`.
    pub fn cpu(self) -> &'static str {
        match self {
            Target::Mps2An386 => "cortex-m4",
            Target::Mps2An500 => "cortex-m7",
        }
    }

    /// The 16 MiB PSRAM, which holds the model buffers: the AN500 image
    /// maps it at 0x60000000 and leaves 0x21000000 unmapped.
    fn psram(self) -> u32 {
        match self {
            Target::Mps2An386 => 0x2100_0000,
            Target::Mps2An500 => 0x6000_0000,
        }
    }

    /// `memory.ld`, which `link.ld` includes.
    pub fn memory_ld(self) -> String {
        format!(
            "/* {} */\nMEMORY\n{{\n    CODE (rwx) : ORIGIN = 0x00000000, LENGTH = 4M\n    \
             RAM (rw)   : ORIGIN = 0x20000000, LENGTH = 4M\n    PSRAM (rw) : ORIGIN = {:#010x}, LENGTH = 16M\n}}\n",
            self.machine(),
            self.psram()
        )
    }

    /// The firmware's name in its version string.
    fn firmware_name(self) -> &'static str {
        match self {
            Target::Mps2An386 => "kflow-cm4",
            Target::Mps2An500 => "kflow-cm7",
        }
    }
}

/// The flags of every firmware build. `-g0` and the relative file names of
/// a build in its own directory keep the ELF free of paths, so that the
/// same sources give the same bytes from any directory.
pub const CFLAGS: &[&str] = &[
    "-mthumb",
    "-O2",
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-g0",
    "-ffunction-sections",
    "-fdata-sections",
    // libc.c's loops must not become calls to the functions they define.
    "-fno-tree-loop-distribute-patterns",
    "-nostdlib",
    "-nostartfiles",
    "-Wl,--gc-sections",
    "-Wl,--build-id=none",
];

/// Largest model image the firmware accepts (two such buffers and a 4 MiB
/// input staging area fill the board's 16 MiB PSRAM).
pub const MAX_MODEL_BYTES: u32 = 6 * 1024 * 1024;

/// The board's SYSCLK in QEMU.
pub const CLOCK_HZ: u64 = 25_000_000;

/// A built firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware {
    /// The ELF image QEMU boots with `-kernel`.
    pub elf: Vec<u8>,
    /// What the board reports as `firmware_version`:
    /// `kflow-cm4 <crate version> model <KFLOW_MODEL_ID>` (`kflow-cm7` on
    /// the Cortex-M7).
    pub version: String,
    /// `KFLOW_MODEL_ID` of the model it was built with.
    pub model_id: String,
    /// What the compiler said on success (empty: no warning under
    /// `-Wall -Wextra`).
    pub warnings: String,
}

#[derive(Debug, Error)]
pub enum FirmwareError {
    #[error("{COMPILER} not found; install it with `apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi`")]
    NoCompiler,
    #[error("model.h does not define KFLOW_MODEL_ID as a string of 1 to 64 characters [0-9A-Za-z_-]")]
    NoModelId,
    #[error("{COMPILER} failed:\n{stderr}")]
    Compiler { stderr: String },
    #[error("firmware build: {0}")]
    Io(#[from] std::io::Error),
}

/// The `KFLOW_MODEL_ID` string of a `model.h`.
pub fn model_id(model_h: &str) -> Option<String> {
    model_h.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("#define")?.trim_start();
        let value = rest.strip_prefix("KFLOW_MODEL_ID")?;
        if !value.starts_with([' ', '\t']) {
            return None;
        }
        let id = value.split('"').nth(1)?;
        let ok =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| id.to_owned())
    })
}

/// Writes the firmware's sources and the memory map of `target` into
/// `dir` (for people and tests who build it themselves).
pub fn write_sources(dir: &Path, target: Target) -> std::io::Result<()> {
    for (name, text) in SOURCES {
        std::fs::write(dir.join(name), text)?;
    }
    std::fs::write(dir.join("memory.ld"), target.memory_ld())
}

/// Which compiler [`build`] would run: the first line of its `--version`
/// (another GCC may emit other instructions, so other timings and other
/// firmware bytes), or why there is none. Asked once per process.
pub fn compiler_identity() -> &'static str {
    static IDENTITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IDENTITY.get_or_init(|| match Command::new(COMPILER).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        _ => format!("{COMPILER} missing"),
    })
}

/// Builds the firmware for `target` around a model's generated `model.c`
/// and `model.h`, in a private temporary directory.
pub fn build(target: Target, model_c: &str, model_h: &str) -> Result<Firmware, FirmwareError> {
    let model_id = model_id(model_h).ok_or(FirmwareError::NoModelId)?;
    let dir = tempfile::tempdir()?;
    write_sources(dir.path(), target)?;
    std::fs::write(dir.path().join("model.c"), model_c)?;
    std::fs::write(dir.path().join("model.h"), model_h)?;
    let version = format!("{} {}", target.firmware_name(), env!("CARGO_PKG_VERSION"));
    let defines = [
        format!("-mcpu={}", target.cpu()),
        format!("-DKF_FIRMWARE_VERSION=\"{version}\""),
        format!("-DKF_BOARD=\"{}\"", target.machine()),
    ];
    let prefix_map = format!("-ffile-prefix-map={}=.", dir.path().display());
    let output = Command::new(COMPILER)
        .args(CFLAGS)
        .args(&defines)
        .arg(prefix_map)
        .args(["-I.", "-T", "link.ld", "-o", "firmware.elf"])
        .args([
            "board.c", "proto.c", "crc32.c", "blake3.c", "libc.c", "count.S", "model.c",
        ])
        .arg("-lgcc")
        .current_dir(dir.path())
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => FirmwareError::NoCompiler,
            _ => FirmwareError::Io(e),
        })?;
    if !output.status.success() {
        return Err(FirmwareError::Compiler {
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let elf = std::fs::read(dir.path().join("firmware.elf"))?;
    Ok(Firmware {
        elf,
        version: format!("{version} model {model_id}"),
        model_id,
        warnings: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_id_is_read_from_model_h() {
        let h = "#ifndef X\n#define KFLOW_MODEL_ID \"00ff12ab00ff12ab\" /* net */\n";
        assert_eq!(model_id(h).as_deref(), Some("00ff12ab00ff12ab"));
        assert_eq!(model_id("#define KFLOW_MODEL_ID 3\n"), None);
        assert_eq!(model_id("#define KFLOW_MODEL_ID \"a\\\"b\"\n"), None);
        assert_eq!(model_id("#define KFLOW_MODEL_IDX \"ab\"\n"), None);
    }
}
