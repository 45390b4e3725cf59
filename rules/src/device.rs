//! What `flash` and `evaluate_device` share: the device URL they name, the
//! model image a board receives, and a connection that makes sure the board
//! holds that image before anything runs on it.
//!
//! Caching (SPEC.md §10): a `sim://` board and `kflow device-sim` compute
//! with the same bit-exact simulator, so their results are cached like any
//! action's. The key of a flash holds the device URL and the image; the key
//! of an on-device evaluation holds `flash.json`, which records the board's
//! reported identity and firmware, so a result measured on one board or
//! firmware is never served for another that reported itself differently.
//! A physical board can change behind the same URL without telling
//! (reflashed firmware, a swapped kit): `kflow build --rerun-devices` runs
//! every device action again.

use std::fs::{File, OpenOptions, TryLockError};
use std::time::Duration;

use kflow_ai8x_board::ModelImage;
use kflow_ai8x_codegen::Program;
use kflow_device::{Client, DeviceInfo, DeviceUrl, LinkTimeouts, ModelSummary, QemuMachine, RetryPolicy, Transport};
use kflow_engine::{ActionContext, ActionError};
use serde::{Deserialize, Serialize};

use crate::codegen::{BIN, REGS};
use crate::json;

/// The param every device action names its board with; `kflow build
/// --device URL` overrides it build-wide.
pub const DEVICE_PARAM: &str = "device_url";
/// What `--rerun-devices` runs again: the rules whose actions talk to a
/// board, and `automl`, whose runs submit such actions as children.
pub const DEVICE_RULES: [&str; 3] = ["flash", "evaluate_device", "automl"];
/// What `flash` records.
pub const FLASH: &str = "flash.json";
/// The image flashed: `cnn_model.regs` and `cnn_model.bin` as the generated
/// code ships them, with the channel counts (kflow-ai8x-board's KFMD).
pub const IMAGE: &str = "cnn_model.kfmd";
/// kflow's firmware for a core without an accelerator, with the model's
/// code linked in.
pub const FIRMWARE: &str = "firmware.elf";

/// A flash, as recorded: where, onto which board, what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashRecord {
    pub device: String,
    pub board: String,
    pub identity: String,
    pub firmware: String,
    pub image_bytes: u32,
    /// blake3 of the image, as the board verified it.
    pub digest: String,
}

impl FlashRecord {
    pub fn new(device: &str, info: &DeviceInfo, summary: ModelSummary) -> FlashRecord {
        FlashRecord {
            device: device.to_owned(),
            board: info.board.clone(),
            identity: info.identity.clone(),
            firmware: info.firmware_version.clone(),
            image_bytes: summary.len,
            digest: summary.digest.to_string(),
        }
    }
}

/// The device URL of `params` (`None`: the simulated board of the
/// program's device).
pub fn url(given: Option<&str>, program: &Program) -> Result<DeviceUrl, ActionError> {
    match given {
        Some(url) => url
            .parse()
            .map_err(|e: kflow_device::url::UrlError| ActionError::new(e.to_string())),
        None => Ok(DeviceUrl::Sim(match program.device {
            kflow_ai8x_codegen::Device::Max78000 => kflow_device::SimBoard::Max78000,
            kflow_ai8x_codegen::Device::Max78002 => kflow_device::SimBoard::Max78002,
        })),
    }
}

/// The board CPU code is flashed to: `given`, or the emulated Cortex-M4.
pub fn cpu_url(given: Option<&str>) -> Result<DeviceUrl, ActionError> {
    given
        .unwrap_or(crate::flash::DEFAULT_CPU_BOARD)
        .parse()
        .map_err(|e: kflow_device::url::UrlError| ActionError::new(e.to_string()))
}

/// kflow's firmware for the board at `url` with the model's code linked in.
pub fn firmware_for(url: &DeviceUrl, model_c: &str, model_h: &str) -> Result<Vec<u8>, ActionError> {
    match url {
        DeviceUrl::Qemu { machine, .. } => kflow_cm_firmware::build(firmware_target(*machine), model_c, model_h)
            .map(|f| f.elf)
            .map_err(|e| ActionError::new(format!("firmware for {url}: {e}"))),
        _ => Err(ActionError::new(format!(
            "C inference runs on kflow's firmware, which kflow builds for `qemu://` boards only; {url} is not one"
        ))),
    }
}

fn firmware_target(machine: QemuMachine) -> kflow_cm_firmware::Target {
    match machine {
        QemuMachine::Mps2An386 => kflow_cm_firmware::Target::Mps2An386,
        QemuMachine::Mps2An500 => kflow_cm_firmware::Target::Mps2An500,
    }
}

/// `url` booting the firmware at `path` (a `qemu://` board boots it; other
/// boards run what they were flashed with).
pub fn booting(url: &DeviceUrl, path: &std::path::Path) -> DeviceUrl {
    url.with_firmware(&path.to_string_lossy())
}

/// The image of the generated `cnn_model.regs` and `cnn_model.bin`.
pub fn image(cx: &ActionContext<'_>, program: &Program) -> Result<Vec<u8>, ActionError> {
    ModelImage::new(program, json::input_bytes(cx, REGS)?, json::input_bytes(cx, BIN)?)
        .and_then(|i| i.to_bytes())
        .map_err(|e| ActionError::new(format!("model image: {e}")))
}

/// Long enough for a real kit to answer a run; a lost frame is retried.
fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        response_timeout: Duration::from_secs(10),
        ..RetryPolicy::default()
    }
}

/// A connection to the board at `url`, held alone: two actions never talk
/// to one board at once, in one build or across kflow processes (a board
/// holds one model, and a serial line carries one conversation). `sim://`
/// boards are private to their connection and need no turn.
pub struct Connection {
    pub client: Client<Box<dyn Transport>>,
    /// Closing it (also when the process dies) ends the turn.
    _turn: Option<File>,
}

pub fn connect(cx: &ActionContext<'_>, url: &DeviceUrl) -> Result<Connection, ActionError> {
    let turn = match url {
        // Each connection to these starts its own board.
        DeviceUrl::Sim(_) | DeviceUrl::Qemu { .. } => None,
        DeviceUrl::Tcp { host, port } => Some(turn(cx, url, &format!("tcp-{host}-{port}"))?),
        DeviceUrl::Serial { path, .. } => Some(turn(cx, url, &format!("serial-{path}"))?),
    };
    let client = kflow_ai8x_board::connect(url, LinkTimeouts::default(), policy())
        .map_err(|e| ActionError::new(format!("device {url}: {e}")))?;
    Ok(Connection { client, _turn: turn })
}

/// Waits for the board's lock file (in the system's temporary directory,
/// named for the board's address; `flock` locks, so handles in one process
/// exclude each other too).
fn turn(cx: &ActionContext<'_>, url: &DeviceUrl, board: &str) -> Result<File, ActionError> {
    let dir = std::env::temp_dir().join("kflow-devices");
    let name: String = board
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{name}.lock"));
    let fail = |e: std::io::Error| ActionError::new(format!("device {url}: lock file {}: {e}", path.display()));
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => {
            cx.progress(&format!(
                "waiting for {url}: another action or kflow process is using it"
            ));
            file.lock().map_err(fail)?;
            Ok(file)
        }
        Err(TryLockError::Error(e)) => Err(fail(e)),
    }
}

/// Flashes `image` unless the board already holds exactly it; reports
/// progress in bytes. Returns what the board says about itself and holds.
pub fn ensure_flashed(
    cx: &ActionContext<'_>,
    client: &mut Client<Box<dyn Transport>>,
    image: &[u8],
) -> Result<(DeviceInfo, ModelSummary), ActionError> {
    let err = |e: kflow_device::ClientError| ActionError::new(e.to_string());
    let info = client.device_info().map_err(err)?;
    let wanted = ModelSummary::of(image).ok_or_else(|| ActionError::new("the model image exceeds 4 GiB"))?;
    if client.verify().map_err(err)? == Some(wanted) {
        return Ok((info, wanted));
    }
    let device = client.device().to_owned();
    let mut reported = 0u64;
    let summary = client
        .flash(image, |p| {
            // A line per quarter: enough to see a slow link move.
            if p.sent_bytes == p.total_bytes || p.sent_bytes >= reported + p.total_bytes.div_ceil(4) {
                reported = p.sent_bytes;
                cx.progress(&format!(
                    "flashing {device}: {} of {} bytes",
                    p.sent_bytes, p.total_bytes
                ));
            }
        })
        .map_err(err)?;
    Ok((info, summary))
}
