//! Search spaces: the families of networks a search draws candidates from,
//! as declared in graph files (`[[space]]`), checked before any search runs.

use serde::{Deserialize, Serialize};

use crate::error::SpaceError;

/// An inclusive range of counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub min: usize,
    pub max: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvKind {
    Conv1d,
    Conv2d,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    None,
    Max,
    Avg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    None,
    Relu,
    Abs,
}

/// A family of networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Space {
    Cnn(CnnSpace),
    Autoencoder(AutoencoderSpace),
    Forecaster(ForecasterSpace),
}

/// Which channels a forecaster predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predict {
    /// The channels after the first `exogenous` (CATS' ten telemetry
    /// readings, which respond to the commands and stimuli before them).
    Telemetry,
    /// Every channel.
    All,
}

/// Classifiers: 1–6 convolution blocks (convolution, optional batch norm,
/// activation, optional pooling), then 0–3 hidden linear layers and a
/// linear layer to the class logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnSpace {
    pub blocks: Range,
    pub conv: Vec<ConvKind>,
    pub filters: Vec<usize>,
    pub kernel: Vec<usize>,
    pub padding: Vec<usize>,
    pub pool: Vec<Pool>,
    pub activation: Vec<Activation>,
    pub batchnorm: Vec<bool>,
    pub linear_layers: Range,
    pub linear_units: Vec<usize>,
    pub classes: usize,
}

/// Convolutional autoencoders over the channels: an encoder of 1–3 blocks
/// narrowing to a bottleneck, and a decoder mirroring it back to the input
/// channels. The anomaly score is the reconstruction error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderSpace {
    pub blocks: Range,
    pub filters: Vec<usize>,
    pub kernel: Vec<usize>,
    pub activation: Vec<Activation>,
    pub batchnorm: Vec<bool>,
    pub bottleneck: Vec<usize>,
}

/// One-step-ahead predictors: 0–4 hidden 1-D convolution blocks without
/// padding (a block's kernel is how many more past rows the prediction
/// sees), then a convolution to the predicted channels. The anomaly score is
/// the prediction error: label-free training that learns how the readings
/// follow the commands and each other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecasterSpace {
    pub blocks: Range,
    pub filters: Vec<usize>,
    pub kernel: Vec<usize>,
    pub activation: Vec<Activation>,
    pub batchnorm: Vec<bool>,
    /// Kernel sizes of the output convolution.
    pub out_kernel: Vec<usize>,
    pub predict: Vec<Predict>,
    /// Leading channels that are inputs only (CATS: the 7 `a*` commands and
    /// stimuli).
    #[serde(default = "cats_exogenous")]
    pub exogenous: usize,
}

fn cats_exogenous() -> usize {
    7
}

/// Limits a space may not exceed (what the target accelerators and the
/// issue's families allow).
const MAX_CNN_BLOCKS: usize = 6;
const MAX_LINEAR_LAYERS: usize = 3;
const MAX_AE_BLOCKS: usize = 3;
const MAX_FORECASTER_BLOCKS: usize = 4;
/// The accelerators' 1-D kernels (spec/max78002.md §2.3).
const MAX_CONV1D_KERNEL: usize = 9;
const MAX_CHANNELS: usize = 1024;

impl Space {
    /// Checks every field; the error names the field and the limit.
    pub fn validate(&self) -> Result<(), SpaceError> {
        match self {
            Space::Cnn(s) => s.validate(),
            Space::Autoencoder(s) => s.validate(),
            Space::Forecaster(s) => s.validate(),
        }
    }

    /// The family's name, as graph files write it.
    pub fn family(&self) -> &'static str {
        match self {
            Space::Cnn(_) => "cnn",
            Space::Autoencoder(_) => "autoencoder",
            Space::Forecaster(_) => "forecaster",
        }
    }
}

fn range(field: &str, r: Range, lo: usize, hi: usize) -> Result<(), SpaceError> {
    if r.min > r.max {
        return Err(SpaceError::new(
            field,
            format!("min {} is greater than max {}", r.min, r.max),
        ));
    }
    if r.min < lo || r.max > hi {
        return Err(SpaceError::new(
            field,
            format!("must lie within {lo}..={hi}, found {}..={}", r.min, r.max),
        ));
    }
    Ok(())
}

fn choices<T: PartialEq + std::fmt::Debug>(
    field: &str,
    values: &[T],
    ok: impl Fn(&T) -> bool,
    allowed: &str,
) -> Result<(), SpaceError> {
    if values.is_empty() {
        return Err(SpaceError::new(field, "needs at least one choice".to_owned()));
    }
    if let Some(bad) = values.iter().find(|v| !ok(v)) {
        return Err(SpaceError::new(field, format!("{bad:?} is not allowed ({allowed})")));
    }
    if let Some((i, v)) = values.iter().enumerate().find(|(i, v)| values[..*i].contains(v)) {
        return Err(SpaceError::new(
            field,
            format!("{v:?} is listed twice (position {})", i + 1),
        ));
    }
    Ok(())
}

fn channels(field: &str, values: &[usize]) -> Result<(), SpaceError> {
    choices(field, values, |&c| (1..=MAX_CHANNELS).contains(&c), "1..=1024")
}

impl CnnSpace {
    fn validate(&self) -> Result<(), SpaceError> {
        range("blocks", self.blocks, 1, MAX_CNN_BLOCKS)?;
        choices("conv", &self.conv, |_| true, "conv1d, conv2d")?;
        channels("filters", &self.filters)?;
        // 1×1 and 3×3 are the only 2-D kernels the accelerators run; the
        // family is shared by both convolution kinds.
        choices("kernel", &self.kernel, |&k| k == 1 || k == 3, "1 or 3")?;
        choices("padding", &self.padding, |&p| p <= 2, "0, 1 or 2")?;
        choices("pool", &self.pool, |_| true, "none, max, avg")?;
        choices("activation", &self.activation, |_| true, "none, relu, abs")?;
        choices("batchnorm", &self.batchnorm, |_| true, "true, false")?;
        range("linear_layers", self.linear_layers, 0, MAX_LINEAR_LAYERS)?;
        channels("linear_units", &self.linear_units)?;
        if self.classes < 2 {
            return Err(SpaceError::new(
                "classes",
                format!("needs at least 2, found {}", self.classes),
            ));
        }
        Ok(())
    }
}

impl AutoencoderSpace {
    fn validate(&self) -> Result<(), SpaceError> {
        range("blocks", self.blocks, 1, MAX_AE_BLOCKS)?;
        channels("filters", &self.filters)?;
        choices("kernel", &self.kernel, |&k| k == 1 || k == 3, "1 or 3")?;
        choices("activation", &self.activation, |_| true, "none, relu, abs")?;
        choices("batchnorm", &self.batchnorm, |_| true, "true, false")?;
        channels("bottleneck", &self.bottleneck)?;
        Ok(())
    }
}

impl ForecasterSpace {
    fn validate(&self) -> Result<(), SpaceError> {
        range("blocks", self.blocks, 0, MAX_FORECASTER_BLOCKS)?;
        channels("filters", &self.filters)?;
        let kernels = |k: &usize| (1..=MAX_CONV1D_KERNEL).contains(k);
        choices("kernel", &self.kernel, kernels, "1..=9")?;
        choices("out_kernel", &self.out_kernel, kernels, "1..=9")?;
        choices("activation", &self.activation, |_| true, "none, relu, abs")?;
        choices("batchnorm", &self.batchnorm, |_| true, "true, false")?;
        choices("predict", &self.predict, |_| true, "telemetry, all")?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn cnn() -> CnnSpace {
        CnnSpace {
            blocks: Range { min: 1, max: 6 },
            conv: vec![ConvKind::Conv1d, ConvKind::Conv2d],
            filters: vec![8, 16, 32],
            kernel: vec![1, 3],
            padding: vec![0, 1, 2],
            pool: vec![Pool::None, Pool::Max, Pool::Avg],
            activation: vec![Activation::None, Activation::Relu, Activation::Abs],
            batchnorm: vec![true, false],
            linear_layers: Range { min: 0, max: 3 },
            linear_units: vec![16, 32],
            classes: 2,
        }
    }

    pub fn autoencoder() -> AutoencoderSpace {
        AutoencoderSpace {
            blocks: Range { min: 1, max: 3 },
            filters: vec![8, 16],
            kernel: vec![1, 3],
            activation: vec![Activation::Relu, Activation::Abs],
            batchnorm: vec![true, false],
            bottleneck: vec![2, 4],
        }
    }

    pub fn forecaster() -> ForecasterSpace {
        ForecasterSpace {
            blocks: Range { min: 0, max: 2 },
            filters: vec![16, 32],
            kernel: vec![1, 3, 5],
            activation: vec![Activation::Relu, Activation::None],
            batchnorm: vec![true, false],
            out_kernel: vec![1, 3],
            predict: vec![Predict::Telemetry, Predict::All],
            exogenous: 7,
        }
    }

    #[test]
    fn the_issue_families_are_valid() {
        Space::Cnn(cnn()).validate().unwrap();
        Space::Autoencoder(autoencoder()).validate().unwrap();
        Space::Forecaster(forecaster()).validate().unwrap();
    }

    #[test]
    fn a_forecaster_kernel_is_a_1d_kernel_of_the_accelerator() {
        let mut s = forecaster();
        s.out_kernel = vec![11];
        let e = Space::Forecaster(s).validate().unwrap_err();
        assert_eq!(e.field, "out_kernel");
        assert!(e.message.contains("1..=9"), "{e}");
    }

    #[test]
    fn invalid_spaces_name_the_field() {
        let mut s = cnn();
        s.blocks = Range { min: 1, max: 7 };
        assert_eq!(Space::Cnn(s).validate().unwrap_err().field, "blocks");
        let mut s = cnn();
        s.kernel = vec![3, 5];
        let e = Space::Cnn(s).validate().unwrap_err();
        assert_eq!(e.field, "kernel");
        assert!(e.message.contains('5'), "{e}");
        let mut s = cnn();
        s.padding = vec![];
        assert_eq!(Space::Cnn(s).validate().unwrap_err().field, "padding");
        let mut s = cnn();
        s.filters = vec![8, 8];
        assert!(Space::Cnn(s).validate().unwrap_err().message.contains("twice"));
        let mut s = autoencoder();
        s.blocks = Range { min: 3, max: 2 };
        assert_eq!(Space::Autoencoder(s).validate().unwrap_err().field, "blocks");
    }

    #[test]
    fn spaces_read_from_json_with_their_family() {
        let json = serde_json::json!({"family": "autoencoder", "blocks": {"min": 1, "max": 2}, "filters": [8],
            "kernel": [3], "activation": ["relu"], "batchnorm": [false], "bottleneck": [4]});
        let space: Space = serde_json::from_value(json).unwrap();
        assert!(matches!(space, Space::Autoencoder(_)));
    }
}
