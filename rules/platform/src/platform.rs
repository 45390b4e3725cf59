use std::collections::BTreeMap;

use kflow_ai8x::Device;
use serde::{Deserialize, Serialize};

/// A deployment target. Memory sizes are what the MCU offers the
/// application (flash for code and weights, RAM for data); the
/// accelerator's own memories are facts of the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The CNN accelerator it carries, if any.
    pub accelerator: Option<Device>,
    /// The CPU core (for the software baseline), e.g. `cortex-m4f`.
    pub cpu: String,
    pub cpu_clock_mhz: f64,
    pub flash_kb: u64,
    pub ram_kb: u64,
    /// Flash and RAM the firmware needs besides the model.
    #[serde(default)]
    pub firmware_flash_kb: u64,
    #[serde(default)]
    pub firmware_ram_kb: u64,
    /// Expressions over the resource report that must hold, e.g.
    /// `weight_bytes <= 1_500_000`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Commands that read `{"model", "resources"}` as JSON on stdin and
    /// reject with a non-zero exit and a message on stderr.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// The files those checks read, by the name they have in a check's
    /// working directory: a platform whose check script changed is a
    /// different platform, and a check finds the file by its digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub check_files: BTreeMap<String, CheckFile>,
}

/// A file an external check reads, as stored: its blake3 digest (hex) and
/// length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    pub digest: String,
    pub size: u64,
}
