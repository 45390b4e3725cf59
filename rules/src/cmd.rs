//! `[[cmd]]`: a user's shell step. The command runs under `sh -c` in a fresh
//! directory that holds only its staged inputs, with an environment cleared
//! down to `PATH`, `HOME` and what the target declares, so that its outputs
//! depend on nothing the key does not cover.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, ArtifactRef, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule,
    Source, Target, relative_path,
};
use serde::{Deserialize, Serialize};

pub struct Cmd;

/// The params of one `cmd` action, as hashed into its key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdParams {
    pub cmd: String,
    /// Staged input paths in declaration order: the value of `$SRCS`.
    pub srcs: Vec<String>,
    pub outs: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required("cmd", AttrType::String, "the command, run by `sh -c`"),
    AttrSpec::required(
        "outs",
        AttrType::StringList,
        "declared output paths, relative to the sandbox",
    ),
    AttrSpec::optional(
        "srcs",
        AttrType::Sources,
        "package files, or labels whose outputs are used; staged into the sandbox",
    ),
    AttrSpec::optional("env", AttrType::StringMap, "extra environment variables"),
];

/// How many lines of stderr a failure shows.
const STDERR_TAIL_LINES: usize = 20;

/// Variables the command always sees (the rest of the environment is
/// cleared); their values are not part of the key, as in any build system
/// that lets a command find its tools.
const PASSED_THROUGH: &[&str] = &["PATH", "HOME"];

impl Rule for Cmd {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "cmd"
    }

    fn version(&self) -> u32 {
        1
    }

    /// A user's shell step: its sandbox and sources travel with it.
    fn remote(&self, _: &serde_json::Value) -> bool {
        true
    }

    fn summary(&self) -> &'static str {
        "a shell command with declared inputs and outputs, run in a clean sandbox"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs = &target.attrs;
        let mut inputs: Vec<(String, ArtifactRef)> = Vec::new();
        for source in attrs.sources("srcs") {
            match source {
                Source::File(path) => inputs.push((path.clone(), ArtifactRef::Source(path.clone()))),
                Source::Target(label) => inputs.extend(planner.outputs_of(label)?),
            }
        }
        let mut staged = BTreeSet::new();
        for (path, _) in &inputs {
            if !staged.insert(path.as_str()) {
                return Err(planner.error("srcs", format!("two inputs would be staged at `{path}`")));
            }
        }
        let mut outs = Vec::new();
        for out in attrs.strings("outs") {
            let out = output_path(out).map_err(|m| planner.error("outs", m))?;
            if staged.contains(out.as_str()) {
                return Err(planner.error("outs", format!("output `{out}` has the same path as an input")));
            }
            if outs.contains(&out) {
                return Err(planner.error("outs", format!("output `{out}` is declared twice")));
            }
            outs.push(out);
        }
        if outs.is_empty() {
            return Err(planner.error("outs", "a `cmd` target must declare at least one output"));
        }
        let env: BTreeMap<String, String> = attrs
            .string_map("env")
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if let Some(reserved) = env
            .keys()
            .find(|k| ["SRCS", "OUTS", "OUT"].contains(&k.as_str()) || PASSED_THROUGH.contains(&k.as_str()))
        {
            return Err(planner.error("env", format!("`{reserved}` is set by kflow and cannot be overridden")));
        }
        let params = CmdParams {
            cmd: attrs.str("cmd").unwrap_or_default().to_owned(),
            srcs: inputs.iter().map(|(p, _)| p.clone()).collect(),
            outs: outs.clone(),
            env,
        };
        let action = planner.add_action(ActionDecl {
            name: String::new(),
            rule: "cmd".to_owned(),
            params: serde_json::to_value(&params).map_err(|e| Diagnostic::new(e.to_string()))?,
            inputs,
            outputs: outs.clone(),
        });
        for out in outs {
            let artifact = planner.output_of(action, &out);
            planner.expose(out, artifact);
        }
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: CmdParams = cx.params_as()?;
        let sandbox = cx.work_dir();
        for name in cx.inputs().keys() {
            cx.stage_input(name, &sandbox.join(name))?;
        }
        for out in &params.outs {
            if let Some(parent) = sandbox.join(out).parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| ActionError::new(format!("cannot create {}: {e}", parent.display())))?;
            }
        }
        let mut command = sandboxed_sh(&params.cmd, sandbox);
        command
            .stdin(Stdio::null())
            .envs(&params.env)
            .env("SRCS", params.srcs.join(" "))
            .env("OUTS", params.outs.join(" "))
            .env("OUT", params.outs.first().map(String::as_str).unwrap_or_default());
        let output = command
            .output()
            .map_err(|e| ActionError::new(format!("cannot run `sh`: {e}")))?;
        cx.log("stdout", &output.stdout)?;
        cx.log("stderr", &output.stderr)?;
        if !output.status.success() {
            let how = match output.status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_owned(),
            };
            return Err(ActionError::new(format!(
                "command {how}{}",
                stderr_tail(&output.stderr)
            )));
        }
        let missing: Vec<&str> = params
            .outs
            .iter()
            .filter(|o| !sandbox.join(o).is_file())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(ActionError::new(format!(
                "command succeeded but did not create declared output{} `{}`{}",
                if missing.len() > 1 { "s" } else { "" },
                missing.join("`, `"),
                stderr_tail(&output.stderr)
            )));
        }
        Ok(Outcome::Done)
    }
}

/// `sh -c script` in `dir`, with the environment cleared down to
/// [`PASSED_THROUGH`]: how user commands run (`cmd`, external checks).
pub(crate) fn sandboxed_sh(script: &str, dir: &std::path::Path) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg(script).current_dir(dir).env_clear();
    for var in PASSED_THROUGH {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    command
}

/// A declared output must stay inside the sandbox.
fn output_path(out: &str) -> Result<String, String> {
    relative_path(out).map_err(|why| format!("output `{out}` {why}; outputs are paths inside the sandbox"))
}

fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    format!(
        "\n--- stderr (last {} lines) ---\n{}",
        lines.len() - start,
        lines[start..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_stay_inside_the_sandbox() {
        assert_eq!(output_path("a/./b.txt").unwrap(), "a/b.txt");
        assert!(output_path("../x").is_err());
        assert!(output_path("/tmp/x").is_err());
        assert!(output_path("a/../../x").is_err());
        assert!(output_path("").is_err());
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(text.as_bytes());
        assert!(tail.contains("line 29"));
        assert!(tail.contains("line 10"));
        assert!(!tail.contains("line 9\n"));
        assert_eq!(stderr_tail(b""), "");
    }
}
