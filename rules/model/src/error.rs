//! What can be wrong with a model, its weights or their files.
//!
//! Every problem of one layer is a [`ModelError::Layer`], whose message
//! starts "layer 3 `c2` (conv1d):" so that a user of a generated network can
//! find it, then says what is wrong and what the limit or expected value is.

use std::fmt;

use thiserror::Error;

use crate::ir::FORMAT;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("the model's format is `{found}`, but this kflow reads `{}`", FORMAT)]
    Format { found: String },

    #[error("model `{model}` has no layers; it needs at least one")]
    NoLayers { model: String },

    #[error(
        "the model input {shape:?} has rank {}; expected [C, L] (rank 2) or [C, H, W] (rank 3), channels first, \
         without the batch dimension",
        shape.len()
    )]
    InputRank { shape: Vec<usize> },

    #[error("the model input {shape:?} has a zero dimension; every dimension must be at least 1")]
    InputZero { shape: Vec<usize> },

    #[error("layer {index} `{name}` ({op}): {problem}")]
    Layer {
        index: usize,
        name: String,
        op: &'static str,
        /// Boxed to keep every `Result<_, ModelError>` small.
        problem: Box<LayerProblem>,
    },

    #[error(
        "the model output (layer {index} `{name}`) is {output:?}, but a classifier with {classes} classes must output \
         [{classes}]"
    )]
    ClassifierOutput {
        index: usize,
        name: String,
        output: Vec<usize>,
        classes: usize,
    },

    #[error(
        "the model output (layer {index} `{name}`) is {output:?}, but an autoencoder must reproduce its input shape \
         {input:?}"
    )]
    AutoencoderOutput {
        index: usize,
        name: String,
        output: Vec<usize>,
        input: Vec<usize>,
    },

    #[error("the model output (layer {index} `{name}`) is {output:?}, but {problem}")]
    ForecasterOutput {
        index: usize,
        name: String,
        output: Vec<usize>,
        problem: String,
    },

    #[error("layer {index} `{name}` ({op}) {problem}: a forecaster's positions must not see the rows they predict")]
    ForecasterLayer {
        index: usize,
        name: String,
        op: &'static str,
        problem: &'static str,
    },

    #[error("the weights do not match the model: {}", Listed(problems))]
    Weights { problems: Vec<TensorProblem> },

    #[error("tensor `{name}` holds {values} values, but its shape {shape:?} needs {needed}")]
    TensorValues {
        name: String,
        values: usize,
        shape: Vec<usize>,
        needed: usize,
    },

    #[error("tensor `{name}` with shape {shape:?} has more elements than this machine can address")]
    TensorSize { name: String, shape: Vec<usize> },

    #[error("cannot allocate {values} values for tensor `{name}`")]
    Allocation { name: String, values: usize },

    #[error(
        "tensor `{name}` is {dtype}, but kflow weights are F32; convert the file (e.g. `tensor.float()` in PyTorch)"
    )]
    Dtype { name: String, dtype: String },

    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),

    #[error("model JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("ONNX: {message}")]
    Onnx { message: String },
}

/// What is wrong with one layer; [`ModelError::Layer`] says which layer.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum LayerProblem {
    #[error("the name is empty; every layer needs a unique, non-empty name")]
    EmptyName,

    #[error("the name is already used by layer {first}; layer names must be unique")]
    DuplicateName { first: usize },

    #[error("input `{input}` is not the name of any layer")]
    UnknownInput { input: String },

    #[error("input `{input}` is layer {at}, which does not come before this one; a layer can only read earlier layers")]
    LaterInput { input: String, at: usize },

    #[error("takes {expected} input(s), but has {found}{}", if *.found == 1 { " (name the others in `inputs`)" } else { "" })]
    InputCount { expected: &'static str, found: usize },

    #[error("inputs must have equal shapes, but `{first}` is {first_shape:?} and `{other}` is {other_shape:?}")]
    UnequalInputs {
        first: String,
        first_shape: Vec<usize>,
        other: String,
        other_shape: Vec<usize>,
    },

    #[error("needs {expected} input, but gets {found:?}{}", if *.flatten_hint { "; add a flatten layer before it" } else { "" })]
    InputRank {
        expected: &'static str,
        found: Vec<usize>,
        flatten_hint: bool,
    },

    #[error("{field} is 0; it must be at least 1")]
    Zero { field: &'static str },

    #[error("padding {padding} must be smaller than the kernel ({kernel})")]
    Padding { padding: usize, kernel: usize },

    #[error("output_padding {output_padding} must be smaller than the stride ({stride}), as in PyTorch")]
    OutputPadding { output_padding: usize, stride: usize },

    #[error("kernel {kernel} is {} than its {}input ({})", if .size.len() == 1 { "longer" } else { "larger" },
        if *.padded { "padded " } else { "" }, Extent(size))]
    KernelTooLarge {
        kernel: usize,
        /// The (padded) spatial extent the kernel has to fit in.
        size: Vec<usize>,
        padded: bool,
    },

    #[error(
        "the output would be empty: (size − 1)·stride − 2·padding + kernel + output_padding = ({size} − 1)·{stride} − \
         2·{padding} + {kernel} + {output_padding} is not positive; reduce padding"
    )]
    EmptyTransposeOutput {
        size: usize,
        stride: usize,
        padding: usize,
        kernel: usize,
        output_padding: usize,
    },

    #[error("eps is {eps}; it must be positive and finite")]
    Eps { eps: f64 },

    #[error("momentum is {momentum}; it must be between 0 and 1")]
    Momentum { momentum: f64 },

    #[error("its {what} does not fit in 64 bits")]
    TooLarge { what: &'static str },
}

/// One way in which a set of weights differs from what a model needs.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TensorProblem {
    #[error("`{name}` {shape:?} is missing (layer {layer} `{layer_name}`)")]
    Missing {
        name: String,
        shape: Vec<usize>,
        layer: usize,
        layer_name: String,
    },

    #[error("`{name}` is {found:?}, expected {expected:?} (layer {layer} `{layer_name}`)")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
        layer: usize,
        layer_name: String,
    },

    #[error("`{name}` holds {values} values, but its shape {shape:?} needs {needed}")]
    Values {
        name: String,
        values: usize,
        shape: Vec<usize>,
        needed: usize,
    },

    #[error("`{name}` is not used by any layer")]
    Extra { name: String },
}

/// Problems joined for one line.
struct Listed<'a>(&'a [TensorProblem]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// A spatial extent as people write it: `length 4`, `4×6`.
struct Extent<'a>(&'a [usize]);

impl fmt::Display for Extent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [length] => write!(f, "length {length}"),
            dims => {
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        f.write_str("×")?;
                    }
                    write!(f, "{d}")?;
                }
                Ok(())
            }
        }
    }
}
