//! `platform`: a deployment target, checked when the graph is loaded.

use kflow_ai8x::Device;
use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_platform::Platform;
use serde::Deserialize;

use crate::check::{CHECK_FILE, USER_CHECKS, check_file_inputs};
use crate::json;

pub struct PlatformRule;

pub const PLATFORM: &str = "platform.json";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::optional(
        "accelerator",
        AttrType::String,
        "`max78000` or `max78002`; none for a CPU-only part",
    ),
    AttrSpec::required("cpu", AttrType::String, "the CPU core, e.g. `cortex-m4f`"),
    AttrSpec::required("cpu_clock_mhz", AttrType::Float, "the CPU clock"),
    AttrSpec::required("flash_kb", AttrType::Int, "flash for the application, KiB"),
    AttrSpec::required("ram_kb", AttrType::Int, "RAM for the application, KiB"),
    AttrSpec::optional(
        "firmware_flash_kb",
        AttrType::Int,
        "flash the firmware needs besides the model",
    ),
    AttrSpec::optional(
        "firmware_ram_kb",
        AttrType::Int,
        "RAM the firmware needs besides the model",
    ),
    AttrSpec::optional(
        "constraints",
        AttrType::StringList,
        "expressions over the resource report that must hold (`weight_bytes <= 1_500_000`)",
    ),
    AttrSpec::optional(
        "checks",
        AttrType::StringList,
        "commands that read the model and resource report (JSON, stdin) and reject with a non-zero exit",
    ),
    USER_CHECKS[3],
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    accelerator: Option<Device>,
    cpu: String,
    cpu_clock_mhz: f64,
    flash_kb: u64,
    ram_kb: u64,
    #[serde(default)]
    firmware_flash_kb: u64,
    #[serde(default)]
    firmware_ram_kb: u64,
    #[serde(default)]
    constraints: Vec<String>,
    #[serde(default)]
    checks: Vec<String>,
    #[serde(default, rename = "check_files")]
    _check_files: Vec<String>,
}

impl Rule for PlatformRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "platform"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "a deployment target: MCU memories, CPU, optional CNN accelerator, user constraints and checks"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let a: Attrs = planner.attrs_as()?;
        if !(a.cpu_clock_mhz.is_finite() && a.cpu_clock_mhz > 0.0) {
            return Err(planner.error("cpu_clock_mhz", "`cpu_clock_mhz` must be a positive number"));
        }
        for (attr, value) in [("flash_kb", a.flash_kb), ("ram_kb", a.ram_kb)] {
            if value == 0 {
                return Err(planner.error(attr, format!("`{attr}` must be at least 1")));
            }
        }
        // A constraint that cannot parse is a graph error, found now rather
        // than after training.
        for expression in &a.constraints {
            kflow_platform::validate(expression).map_err(|e| planner.error("constraints", e.to_string()))?;
        }
        let platform = Platform {
            name: target.label.name().to_owned(),
            accelerator: a.accelerator,
            cpu: a.cpu,
            cpu_clock_mhz: a.cpu_clock_mhz,
            flash_kb: a.flash_kb,
            ram_kb: a.ram_kb,
            firmware_flash_kb: a.firmware_flash_kb,
            firmware_ram_kb: a.firmware_ram_kb,
            constraints: a.constraints,
            checks: a.checks,
            check_files: Default::default(),
        };
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&platform)?,
            inputs: check_file_inputs(target, planner)?,
            outputs: vec![PLATFORM.to_owned()],
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let mut platform: Platform = cx.params_as()?;
        for (name, file) in cx.inputs() {
            if let Some(file_name) = name.strip_prefix(CHECK_FILE) {
                let stored = kflow_platform::CheckFile {
                    digest: file.blob.digest.to_string(),
                    size: file.blob.size,
                };
                platform.check_files.insert(file_name.to_owned(), stored);
            }
        }
        cx.write_output(PLATFORM, &json::pretty(&platform)?)?;
        Ok(Outcome::Done)
    }
}
