//! The model IR, `kflow-model/1`: what a candidate network is, as JSON.
//!
//! A model is a list of named layers over one per-sample input tensor
//! (channels first, no batch dimension: `[C, L]` for 1-D data, `[C, H, W]`
//! for 2-D). A layer reads the previous layer's output unless it names its
//! inputs (element-wise `add` names two or more). Weights live beside the
//! IR in safetensors, named `<layer>.<param>` in PyTorch's layout (see
//! `weights.rs`).

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The format tag every IR document carries.
pub const FORMAT: &str = "kflow-model/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Always [`FORMAT`].
    pub format: String,
    pub name: String,
    pub task: Task,
    /// Per-sample input shape, channels first: `[C, L]` or `[C, H, W]`.
    pub input: Vec<usize>,
    pub layers: Vec<Layer>,
}

impl Model {
    /// Parses a model document. This checks the syntax only; [`crate::infer_shapes`]
    /// checks the rest.
    pub fn from_json(bytes: &[u8]) -> Result<Model, ModelError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The document as actions write it: fields in declaration order,
    /// two-space indents, a final newline. Equal models give equal text.
    pub fn to_json_pretty(&self) -> Result<String, ModelError> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        Ok(text)
    }
}

/// What the network's output means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Task {
    /// The output is `[classes]` logits; class 1 is "anomalous".
    Classifier { classes: usize },
    /// The output has the input's shape; the anomaly score is the mean
    /// squared reconstruction error.
    Autoencoder,
    /// A 1-D network over input `[C, L]` that predicts channels
    /// `from_channel..C`: output `[C − from_channel, L_out]`, where position
    /// `j` has seen rows `j ..= j + L − L_out` and predicts how the readings
    /// changed into the last of them. Its first layer is a convolution whose last kernel
    /// tap is zero for the predicted channels (`ForecastMask`), so that a
    /// reading is predicted from its own past and from the commands and
    /// stimuli up to its own row; no layer pads or pools. The anomaly score
    /// is the prediction error.
    Forecaster { from_channel: usize },
}

impl Task {
    /// Whether training reads the labels: a classifier's does; an
    /// autoencoder or a forecaster learns what nominal windows look like
    /// from them alone, so every anomalous window is unseen by it.
    pub fn learns_labels(self) -> bool {
        matches!(self, Task::Classifier { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Unique within the model; names the layer's weights.
    pub name: String,
    /// Layers whose outputs this one reads; empty means the previous layer
    /// (or the model input, for the first layer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    #[serde(flatten)]
    pub op: Op,
}

// Defaults for what graph authors may leave out (PyTorch's defaults); the
// serialized IR always spells every field.
fn yes() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-5
}

fn default_momentum() -> f64 {
    0.1
}

/// One operation. Convolutions have stride 1 and dilation 1 (what the
/// MAX78000/MAX78002 accelerators run); downsampling is pooling's job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Input `[C, L]`, weight `[out, C, kernel]`.
    Conv1d {
        out_channels: usize,
        kernel: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Input `[C, H, W]`, square kernel, weight `[out, C, kernel, kernel]`.
    Conv2d {
        out_channels: usize,
        kernel: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Input `[C, H, W]`, weight `[C, out, kernel, kernel]` (PyTorch's
    /// layout). `H_out = (H − 1)·stride − 2·padding + kernel + output_padding`.
    ConvTranspose2d {
        out_channels: usize,
        kernel: usize,
        #[serde(default)]
        padding: usize,
        stride: usize,
        #[serde(default)]
        output_padding: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Input `[F]`, weight `[out, F]`.
    Linear {
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// `[C, ...]` to `[C·...]`, channel-major (as `torch.flatten`).
    Flatten,
    /// Per channel (dimension 0): `weight`, `bias`, `running_mean`,
    /// `running_var`, all `[C]`.
    BatchNorm {
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default = "default_momentum")]
        momentum: f64,
    },
    /// Over the spatial dimensions (1 or 2 of them, by input rank), square
    /// window, no padding: `L_out = ⌊(L − kernel) / stride⌋ + 1`.
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
    },
    /// Element-wise sum of two or more inputs of equal shape.
    Add,
    Relu,
    Abs,
}

impl Op {
    /// The operation's name as written in the IR.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv1d { .. } => "conv1d",
            Op::Conv2d { .. } => "conv2d",
            Op::ConvTranspose2d { .. } => "conv_transpose2d",
            Op::Linear { .. } => "linear",
            Op::Flatten => "flatten",
            Op::BatchNorm { .. } => "batch_norm",
            Op::MaxPool { .. } => "max_pool",
            Op::AvgPool { .. } => "avg_pool",
            Op::Add => "add",
            Op::Relu => "relu",
            Op::Abs => "abs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_written_flat() {
        let layer = Layer {
            name: "c0".into(),
            inputs: vec![],
            op: Op::Conv1d {
                out_channels: 8,
                kernel: 3,
                padding: 1,
                bias: true,
            },
        };
        let json = serde_json::to_value(&layer).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "c0", "op": "conv1d", "out_channels": 8, "kernel": 3, "padding": 1, "bias": true})
        );
        assert_eq!(serde_json::from_value::<Layer>(json).unwrap(), layer);
    }

    #[test]
    fn model_json_round_trips() {
        for model in [
            crate::fixtures::cnn1d(),
            crate::fixtures::cnn2d(),
            crate::fixtures::autoencoder(),
        ] {
            let text = model.to_json_pretty().unwrap();
            assert_eq!(Model::from_json(text.as_bytes()).unwrap(), model);
        }
    }

    #[test]
    fn model_json_names_inputs_only_where_given() {
        let text = crate::fixtures::cnn2d().to_json_pretty().unwrap();
        assert_eq!(text.matches("\"inputs\"").count(), 1);
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn model_json_rejects_unknown_fields() {
        let mut json = serde_json::to_value(crate::fixtures::cnn1d()).unwrap();
        json["seed"] = 3.into();
        let error = Model::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains("unknown field `seed`"), "{error}");
    }
}
