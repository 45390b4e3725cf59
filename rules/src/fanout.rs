//! `[[test_fanout]]`: a rule for testing the engine's dynamic sub-graphs
//! without any machine learning. At run time it plans `count` children (each
//! a `cmd` action), waits for them, then plans a second round that reads the
//! first round's outputs, and concatenates the last round. It is registered
//! only when `KFLOW_TEST_RULES=1`.

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, ChildInput, ChildSpec, Diagnostic, Outcome, Planner,
    Rule, Status, Target,
};
use serde::{Deserialize, Serialize};

use crate::cmd::CmdParams;

pub struct FanOut;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FanOutParams {
    count: u32,
    rounds: u32,
    text: String,
}

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required("count", AttrType::Int, "children per round"),
    AttrSpec::optional(
        "rounds",
        AttrType::Int,
        "rounds of children, each reading the previous (default 2)",
    ),
    AttrSpec::optional("text", AttrType::String, "what each child writes (default \"child\")"),
];

const OUTPUT: &str = "combined.txt";

impl Rule for FanOut {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "test_fanout"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "engine test: plans children at run time"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let count = target.attrs.int("count").unwrap_or(0);
        let count = u32::try_from(count)
            .ok()
            .filter(|c| (1..=10_000).contains(c))
            .ok_or_else(|| planner.error("count", "`count` must be between 1 and 10000"))?;
        let rounds = target.attrs.int("rounds").unwrap_or(2);
        let rounds = u32::try_from(rounds)
            .ok()
            .filter(|r| (1..=10).contains(r))
            .ok_or_else(|| planner.error("rounds", "`rounds` must be between 1 and 10"))?;
        let text = target.attrs.str("text").unwrap_or("child");
        // Children quote it into shell commands.
        if !text.chars().all(|c| c.is_ascii_alphanumeric() || " _-.".contains(c)) {
            return Err(planner.error("text", "`text` may hold only letters, digits, spaces, `_`, `-` and `.`"));
        }
        let params = FanOutParams {
            count,
            rounds,
            text: text.to_owned(),
        };
        let action = planner.add_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: serde_json::to_value(&params).map_err(|e| Diagnostic::new(e.to_string()))?,
            inputs: Vec::new(),
            outputs: vec![OUTPUT.to_owned()],
        });
        let artifact = planner.output_of(action, OUTPUT);
        planner.expose(OUTPUT, artifact);
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: FanOutParams = cx.params_as()?;
        let mut previous: Vec<Option<kflow_engine::BlobRef>> = vec![None; params.count as usize];
        for round in 0..params.rounds {
            let batch: Vec<ChildSpec> = (0..params.count)
                .map(|i| child(&params.text, round, i, previous[i as usize]))
                .collect::<Result<_, _>>()?;
            let results = cx.submit(batch)?;
            for (i, result) in results.iter().enumerate() {
                if result.status != Status::Executed && result.status != Status::Cached {
                    return Err(ActionError::new(format!(
                        "child `{}` {}: {}",
                        result.id,
                        result.status.as_str(),
                        result.reason.as_deref().unwrap_or("")
                    )));
                }
                previous[i] = result.outputs.get("out.txt").copied();
            }
            cx.progress(&format!("round {}/{} done", round + 1, params.rounds));
        }
        let mut combined = Vec::new();
        for blob in previous.into_iter().flatten() {
            combined.extend(cx.read_artifact(&blob)?);
        }
        cx.write_output(OUTPUT, &combined)?;
        Ok(Outcome::Done)
    }
}

fn child(text: &str, round: u32, i: u32, previous: Option<kflow_engine::BlobRef>) -> Result<ChildSpec, ActionError> {
    let (cmd, srcs, inputs) = match previous {
        None => (format!("printf '%s\\n' '{text}-{i}' > out.txt"), vec![], vec![]),
        Some(blob) => (
            format!("cat prev.txt > out.txt && printf '%s\\n' 'round-{round}' >> out.txt"),
            vec!["prev.txt".to_owned()],
            vec![("prev.txt".to_owned(), ChildInput::Blob(blob))],
        ),
    };
    let params = CmdParams {
        cmd,
        srcs,
        outs: vec!["out.txt".to_owned()],
        env: Default::default(),
    };
    Ok(ChildSpec {
        group: format!("child-{i}"),
        name: format!("round-{round}"),
        rule: "cmd".to_owned(),
        params: serde_json::to_value(&params).map_err(|e| ActionError::new(e.to_string()))?,
        inputs,
        outputs: vec!["out.txt".to_owned()],
    })
}
