//! `prune`: magnitude pruning of a trained model, unstructured or by
//! channels, with optional fine-tune epochs (kflow-quant, kflow-train).

use kflow_engine::{
    ActionContext, ActionDecl, ActionError, AttrSpec, AttrType, Diagnostic, Outcome, Planner, Rule, Target,
};
use kflow_model::Weights;
use kflow_quant::PruneKind;
use kflow_train::{Checkpoint, Hyper};
use serde::{Deserialize, Serialize};

use crate::dataset::{TRAIN, VAL};
use crate::generate::one_output;
use crate::inputs;
use crate::json;
use crate::model::MODEL;
use crate::split::Learning;
use crate::train::WEIGHTS;

pub struct PruneRule;

pub const REPORT: &str = "prune.json";

const ATTRS: &[AttrSpec] = &[
    AttrSpec::required(
        "model",
        AttrType::Label,
        "the `[[model]]`, `[[generate]]` or `[[prune]]` target of the network",
    ),
    AttrSpec::required(
        "weights",
        AttrType::Label,
        "the `[[train]]` or `[[prune]]` target of its weights",
    ),
    AttrSpec::optional("kind", AttrType::String, "`unstructured` (default) or `channels`"),
    AttrSpec::optional(
        "amount",
        AttrType::Float,
        "fraction pruned in each layer, in [0, 1) (default 0.5)",
    ),
    AttrSpec::optional(
        "dataset",
        AttrType::Label,
        "the `[[dataset]]` to fine-tune on (with `epochs`)",
    ),
    AttrSpec::optional("epochs", AttrType::Int, "fine-tune epochs after pruning (default 0)"),
    AttrSpec::optional("lr", AttrType::Float, "fine-tune learning rate (default 0.0005)"),
    AttrSpec::optional("seed", AttrType::Int, "fine-tune batch order (default 0)"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(rename = "model")]
    _model: String,
    #[serde(rename = "weights")]
    _weights: String,
    kind: Option<PruneKind>,
    amount: Option<f64>,
    #[serde(rename = "dataset")]
    _dataset: Option<String>,
    epochs: Option<u32>,
    lr: Option<f64>,
    seed: Option<u64>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Params {
    pub kind: PruneKind,
    pub amount: f64,
    pub epochs: u32,
    pub hyper: Hyper,
}

impl Rule for PruneRule {
    crate::code::rule_code!();

    fn name(&self) -> &'static str {
        "prune"
    }

    fn version(&self) -> u32 {
        3
    }

    /// Pure work on a model's files.
    fn remote(&self, _: &serde_json::Value) -> bool {
        true
    }

    fn summary(&self) -> &'static str {
        "magnitude pruning (unstructured or whole channels) with optional fine-tuning"
    }

    fn attrs(&self) -> &'static [AttrSpec] {
        ATTRS
    }

    fn plan(&self, target: &Target, planner: &mut Planner<'_>) -> Result<(), Diagnostic> {
        let attrs: Attrs = planner.attrs_as()?;
        let amount = attrs.amount.unwrap_or(0.5);
        if !(0.0..1.0).contains(&amount) {
            return Err(planner.error("amount", format!("`amount` must be in [0, 1), not {amount}")));
        }
        let epochs = attrs.epochs.unwrap_or(0);
        let hyper = Hyper {
            lr: attrs.lr.unwrap_or(0.0005),
            seed: attrs.seed.unwrap_or(0),
            ..Hyper::default()
        };
        let mut inputs = vec![
            (MODEL.to_owned(), one_output(planner, target, "model", MODEL)?),
            (WEIGHTS.to_owned(), one_output(planner, target, "weights", WEIGHTS)?),
        ];
        match (epochs, target.attrs.labels("dataset").is_empty()) {
            (0, _) => {}
            (_, true) => return Err(planner.error("epochs", "fine-tuning needs a `dataset`")),
            (_, false) => {
                inputs.push((TRAIN.to_owned(), one_output(planner, target, "dataset", TRAIN)?));
                inputs.push((VAL.to_owned(), one_output(planner, target, "dataset", VAL)?));
            }
        }
        let params = Params {
            kind: attrs.kind.unwrap_or(PruneKind::Unstructured),
            amount,
            epochs,
            hyper,
        };
        planner.add_final_action(ActionDecl {
            name: String::new(),
            rule: self.name().to_owned(),
            params: json::to_value(&params)?,
            inputs,
            outputs: [MODEL, WEIGHTS, REPORT].map(str::to_owned).to_vec(),
        });
        Ok(())
    }

    fn execute(&self, cx: &ActionContext<'_>) -> Result<Outcome, ActionError> {
        let params: Params = cx.params_as()?;
        let model = inputs::model(cx)?;
        let weights = inputs::weights(cx, WEIGHTS)?;
        let (pruned, mut pruned_weights, report) = kflow_quant::prune(&model, &weights, params.kind, params.amount)
            .map_err(|e| ActionError::new(e.to_string()))?;
        cx.progress(&summary(&report));
        let mut losses = Vec::new();
        if params.epochs > 0 {
            let splits = Learning::read(cx, pruned.task)?;
            // Zeros of unstructured pruning stay zeros: the forward pass
            // sees the masked weights, and the mask is applied again to the
            // float weights after every epoch.
            let mask = pruned_weights.clone();
            let masked = |w: &Weights| {
                let mut w = w.clone();
                reapply_mask(&mut w, &mask);
                Ok(w)
            };
            let view: Option<&kflow_train::WeightView<'_>> =
                (params.kind == PruneKind::Unstructured).then_some(&masked);
            let mut checkpoint = Checkpoint::fresh(pruned_weights);
            for epoch in 1..=params.epochs {
                let (next, stats) = kflow_train::train_epoch_viewed(
                    &pruned,
                    checkpoint,
                    &splits.train(),
                    &splits.val(),
                    &params.hyper,
                    kflow_train::View {
                        weights: view,
                        activations: None,
                    },
                )
                .map_err(|e| ActionError::new(e.to_string()))?;
                cx.progress(&format!(
                    "fine-tune epoch {epoch}/{}: train loss {:.4}, val loss {:.4}",
                    params.epochs, stats.train_loss, stats.val_loss
                ));
                losses.push(stats);
                checkpoint = next;
                if params.kind == PruneKind::Unstructured {
                    reapply_mask(&mut checkpoint.weights, &mask);
                }
            }
            pruned_weights = checkpoint.weights;
        }
        cx.write_output(
            MODEL,
            pruned
                .to_json_pretty()
                .map_err(|e| ActionError::new(e.to_string()))?
                .as_bytes(),
        )?;
        cx.write_output(
            WEIGHTS,
            &pruned_weights
                .to_safetensors()
                .map_err(|e| ActionError::new(e.to_string()))?,
        )?;
        cx.write_output(
            REPORT,
            &json::pretty(&serde_json::json!({"prune": report, "fine_tune": losses}))?,
        )?;
        Ok(Outcome::Done)
    }
}

fn summary(report: &kflow_quant::PruneReport) -> String {
    let (before, after) = report
        .layers
        .iter()
        .fold((0, 0), |(b, a), l| (b + l.before, a + l.after));
    let what = match report.kind {
        PruneKind::Unstructured => "weights",
        PruneKind::Channels => "channels",
    };
    format!("{after} of {before} {what} kept")
}

fn reapply_mask(weights: &mut Weights, mask: &Weights) {
    for (name, t) in weights.tensors.iter_mut() {
        if let Some(m) = mask
            .get(name)
            .filter(|m| name.ends_with(".weight") && m.data.len() == t.data.len())
        {
            for (v, keep) in t.data.iter_mut().zip(&m.data) {
                if *keep == 0.0 {
                    *v = 0.0;
                }
            }
        }
    }
}
