//! `flash`: the generated code's model onto a board (SPEC.md §10): the
//! image of `cnn_model.regs` and `cnn_model.bin` is uploaded in chunks,
//! retried on a lost frame, and verified by digest. `flash.json` records
//! the board's identity and firmware, which key what is measured on it.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use serde::{Deserialize, Serialize};

use crate::codegen::{BIN, REGS};
use crate::device::{self, FLASH, FlashRecord, IMAGE};
use crate::generate::one_output;
use crate::json;
use crate::synthesize::{ALLOCATION, WEIGHTS};

pub struct FlashRule;

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required("code", AttrType::Label, "the `[[codegen]]` target whose model to flash"),
    AttrSpec::required(
        "synthesized",
        AttrType::Label,
        "the `[[ai8x_synthesize]]` target the code was generated from",
    ),
    AttrSpec::optional(
        "device",
        AttrType::String,
        "the board: `sim://max78002`, `sim://max78000`, `tcp://HOST:PORT` or `serial:///dev/ttyX?baud=N` (default: the simulated board of the synthesized device; `kflow build --device` wins)",
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "code")]
    _code: String,
    #[serde(rename = "synthesized")]
    _synthesized: String,
    device: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Params {
    /// Always present (null by default) so that `--device` can override it.
    pub device_url: Option<String>,
}

/// Checks a device URL where it is written.
pub(crate) fn check_url(planner: &Planner<'_>, attr: &str, url: Option<&str>) -> Result<(), Diagnostic> {
    match url.map(str::parse::<kflow_device::DeviceUrl>) {
        Some(Err(e)) => Err(planner.error(attr, e.to_string())),
        _ => Ok(()),
    }
}

impl Rule for FlashRule {
    fn name(&self) -> &'static str {
        "flash"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "flashes generated code's model to a board (sim://, tcp://, serial://) and verifies it by digest"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        check_url(planner, "device", attrs.device.as_deref())?;
        let mut inputs = Vec::new();
        for name in [ALLOCATION, WEIGHTS] {
            inputs.push((name.to_owned(), one_output(planner, target, "synthesized", name)?));
        }
        for name in [REGS, BIN] {
            inputs.push((name.to_owned(), one_output(planner, target, "code", name)?));
        }
        let params = Params {
            device_url: attrs.device,
        };
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs,
            outputs: vec![FLASH.to_owned(), IMAGE.to_owned()],
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let program = crate::codegen::program(cx)?;
        let image = device::image(cx, &program)?;
        let url = device::url(params.device_url.as_deref(), &program)?;
        let mut board = device::connect(cx, &url)?;
        let (info, summary) = device::ensure_flashed(cx, &mut board.client, &image)?;
        let record = FlashRecord::new(&url.to_string(), &info, summary);
        cx.progress(&format!(
            "{} bytes on {} ({}, {})",
            record.image_bytes, record.device, record.identity, record.firmware
        ));
        cx.write_output(IMAGE, &image)?;
        cx.write_output(FLASH, &json::pretty(&record)?)?;
        Ok(Outcome::Done)
    }
}
