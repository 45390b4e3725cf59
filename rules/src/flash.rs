//! `flash`: the generated code's model onto a board (SPEC.md §10), in
//! chunks, retried on a lost frame, and verified by digest. `flash.json`
//! records the board's identity and firmware, which key what is measured
//! on it.
//!
//! Accelerator code (with `synthesized`): the image of `cnn_model.regs` and
//! `cnn_model.bin` goes to a board whose firmware drives the CNN. Code for
//! a core without an accelerator (`model.c`, `model.h`, `model.bin`): the
//! model's code is linked into kflow's firmware for the board
//! (`firmware.elf`, kflow-cm-firmware), which then receives `model.bin`;
//! on `qemu://` boards the emulator boots that firmware.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use serde::{Deserialize, Serialize};

use kflow_cm_codegen::{MODEL_BIN, MODEL_C, MODEL_H};

use crate::codegen::{BIN, REGS};
use crate::device::{self, FIRMWARE, FLASH, FlashRecord, IMAGE};
use crate::generate::one_output;
use crate::json;
use crate::synthesize::{ALLOCATION, WEIGHTS};

pub struct FlashRule;

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required("code", AttrType::Label, "the `[[codegen]]` target whose model to flash"),
    AttrSpec::optional(
        "synthesized",
        AttrType::Label,
        "accelerator code: the `[[ai8x_synthesize]]` target it was generated from (without it, `code` is C inference for a core without an accelerator)",
    ),
    AttrSpec::optional(
        "device",
        AttrType::String,
        "the board: `sim://max78002`, `sim://max78000`, `tcp://HOST:PORT`, `serial:///dev/ttyX?baud=N`, `qemu://mps2-an386` or `qemu://mps2-an500` (default: the simulated board of the synthesized device, or `qemu://mps2-an386` for code without an accelerator; `kflow build --device` wins)",
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "code")]
    _code: String,
    synthesized: Option<String>,
    device: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Params {
    /// Present (null by default) where `--device` may override it.
    #[serde(default)]
    pub device_url: Option<String>,
    /// A board `--device` leaves alone: where an accelerator search runs
    /// its kept models in software too (see [`fixed_board_params`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_device: Option<String>,
    /// The code is C inference for a core without an accelerator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpu: bool,
}

/// The board CPU code runs on when no device is named.
pub(crate) const DEFAULT_CPU_BOARD: &str = "qemu://mps2-an386";

/// Checks a device URL where it is written.
pub(crate) fn check_url(planner: &Planner<'_>, attr: &str, url: Option<&str>) -> Result<(), Diagnostic> {
    match url.map(str::parse::<kflow_device::DeviceUrl>) {
        Some(Err(e)) => Err(planner.error(attr, e.to_string())),
        _ => Ok(()),
    }
}

impl Rule for FlashRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "flash"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "flashes generated code's model to a board (sim://, tcp://, serial://, qemu://) and verifies it by digest"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        check_url(planner, "device", attrs.device.as_deref())?;
        let cpu = attrs.synthesized.is_none();
        let from: &[(&str, &str)] = if cpu {
            &[(MODEL_C, "code"), (MODEL_H, "code"), (MODEL_BIN, "code")]
        } else {
            &[
                (ALLOCATION, "synthesized"),
                (WEIGHTS, "synthesized"),
                (REGS, "code"),
                (BIN, "code"),
            ]
        };
        let inputs = from
            .iter()
            .map(|(name, attr)| Ok(((*name).to_owned(), one_output(planner, target, attr, name)?)))
            .collect::<Result<Vec<_>, Diagnostic>>()?;
        let params = Params {
            device_url: attrs.device,
            fixed_device: None,
            cpu,
        };
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs,
            outputs: outputs(cpu),
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        if params.cpu {
            return flash_cpu(cx, &params);
        }
        let program = crate::codegen::program(cx)?;
        let image = device::image(cx, &program)?;
        let url = device::url(params.device_url.as_deref(), &program)?;
        flash_and_record(cx, (&url, &url), (IMAGE, &image))
    }
}

/// Flashes `image` to the board at `boot` (`url` with what it boots) and
/// writes it as output `name` beside `flash.json`, which names `url`.
fn flash_and_record(
    cx: &ActionContext<'_>,
    (url, boot): (&kflow_device::DeviceUrl, &kflow_device::DeviceUrl),
    (name, image): (&str, &[u8]),
) -> Result<Outcome, ActionError> {
    let mut board = device::connect(cx, boot)?;
    let (info, summary) = device::ensure_flashed(cx, &mut board.client, image)?;
    let record = FlashRecord::new(&url.to_string(), &info, summary);
    cx.progress(&format!(
        "{} bytes of {name} on {} ({}, {})",
        record.image_bytes, record.device, record.identity, record.firmware
    ));
    cx.write_output(name, image)?;
    cx.write_output(FLASH, &json::pretty(&record)?)?;
    Ok(Outcome::Done)
}

/// The params of a flash of CPU code to `board`, without the `device_url`
/// key that `--device` replaces.
pub(crate) fn fixed_board_params(board: &str) -> serde_json::Value {
    serde_json::json!({ "fixed_device": board, "cpu": true })
}

/// What a flash of accelerator or CPU code writes.
pub(crate) fn outputs(cpu: bool) -> Vec<String> {
    let names: &[&str] = if cpu {
        &[FLASH, FIRMWARE, MODEL_BIN]
    } else {
        &[FLASH, IMAGE]
    };
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Links the model's code into the board's firmware, boots it and loads
/// `model.bin`.
fn flash_cpu(cx: &ActionContext<'_>, params: &Params) -> Result<Outcome, ActionError> {
    let text = |name: &str| {
        String::from_utf8(json::input_bytes(cx, name)?)
            .map_err(|_| ActionError::new(format!("input `{name}` is not UTF-8 text")))
    };
    let image = json::input_bytes(cx, MODEL_BIN)?;
    let url = device::cpu_url(params.fixed_device.as_deref().or(params.device_url.as_deref()))?;
    cx.progress(&format!("building the firmware for {url} with arm-none-eabi-gcc"));
    let firmware = device::firmware_for(&url, &text(MODEL_C)?, &text(MODEL_H)?)?;
    cx.write_output(FIRMWARE, &firmware)?;
    let boot = device::booting(&url, &cx.output_path(FIRMWARE));
    flash_and_record(cx, (&url, &boot), (MODEL_BIN, &image))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--device` replaces a params key where the key is present: a fixed
    /// board's params must not have it, and must read back as that board.
    #[test]
    fn a_fixed_board_has_no_device_url_key_and_reads_back() {
        let value = fixed_board_params("qemu://mps2-an386");
        assert!(value.get(crate::device::DEVICE_PARAM).is_none(), "{value}");
        let params: Params = serde_json::from_value(value).unwrap();
        assert_eq!(params.fixed_device.as_deref(), Some("qemu://mps2-an386"));
        assert!(params.device_url.is_none() && params.cpu);
        let search = json::to_value(&Params {
            device_url: None,
            fixed_device: None,
            cpu: true,
        })
        .unwrap();
        assert!(search.get(crate::device::DEVICE_PARAM).is_some(), "{search}");
    }
}
