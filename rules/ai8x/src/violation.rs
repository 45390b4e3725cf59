//! Reasons a network cannot run on a device, each naming the layer, the
//! rule, the limit and the value found (STYLE.md: "layer 3 (conv2d): kernel
//! memory of processor 17 needs 5,200 words, limit 4,096").

use std::fmt;

use serde::{Deserialize, Serialize};

/// The rules of spec/max78002.md §2.16 (C1–C20), plus the shape
/// consistency kflow needs and the features it does not model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    LayerCount,
    Channels,
    Passes,
    Dimensions,
    KernelSize,
    Padding,
    Stride,
    Dilation,
    Groups,
    Pooling,
    Flatten,
    Linear,
    OutputShift,
    Activation,
    WeightBits,
    BiasMemory,
    KernelMemory,
    DataMemory,
    ProcessorMap,
    Eltwise,
    /// `data_format` on a layer other than 0 (§2.13).
    DataFormat,
    /// Weights, channels and dimensions that do not fit together.
    Shape,
    /// Accepted by the reference tools, not modelled by kflow (§2.14, §2.15).
    Unsupported,
}

impl Rule {
    /// The row of spec §2.16 the rule implements.
    pub fn code(self) -> &'static str {
        match self {
            Rule::LayerCount => "C1",
            Rule::Channels => "C2",
            Rule::Passes => "C3",
            Rule::Dimensions => "C4",
            Rule::KernelSize => "C5",
            Rule::Padding => "C6",
            Rule::Stride => "C7",
            Rule::Dilation => "C8",
            Rule::Groups => "C9",
            Rule::Pooling => "C10",
            Rule::Flatten => "C11",
            Rule::Linear => "C12",
            Rule::OutputShift => "C13",
            Rule::Activation => "C14",
            Rule::WeightBits => "C15",
            Rule::BiasMemory => "C16",
            Rule::KernelMemory => "C17",
            Rule::DataMemory => "C18",
            Rule::ProcessorMap => "C19",
            Rule::Eltwise => "C20",
            Rule::DataFormat => "§2.13",
            Rule::Shape => "shape",
            Rule::Unsupported => "kflow",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Rule::LayerCount => "layer-count",
            Rule::Channels => "channels",
            Rule::Passes => "passes",
            Rule::Dimensions => "dimensions",
            Rule::KernelSize => "kernel-size",
            Rule::Padding => "padding",
            Rule::Stride => "stride",
            Rule::Dilation => "dilation",
            Rule::Groups => "groups",
            Rule::Pooling => "pooling",
            Rule::Flatten => "flatten",
            Rule::Linear => "linear",
            Rule::OutputShift => "output-shift",
            Rule::Activation => "activation",
            Rule::WeightBits => "weight-bits",
            Rule::BiasMemory => "bias-memory",
            Rule::KernelMemory => "kernel-memory",
            Rule::DataMemory => "data-memory",
            Rule::ProcessorMap => "processor-map",
            Rule::Eltwise => "eltwise",
            Rule::DataFormat => "data-format",
            Rule::Shape => "shape",
            Rule::Unsupported => "unsupported",
        }
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// 0-based index into the network's `layers`; `None` for the network.
    pub layer: Option<usize>,
    /// The layer's operation, for the message (`conv2d`, `mlp`, ...).
    pub op: Option<String>,
    pub rule: Rule,
    /// What was measured ("kernel size", "kernel memory of processor 17").
    pub subject: String,
    pub actual: String,
    pub limit: String,
}

impl Violation {
    pub fn network(rule: Rule, subject: impl Into<String>, actual: impl ToString, limit: impl ToString) -> Violation {
        Violation {
            layer: None,
            op: None,
            rule,
            subject: subject.into(),
            actual: actual.to_string(),
            limit: limit.to_string(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.layer, &self.op) {
            (Some(i), Some(op)) => write!(f, "layer {i} ({op}): ")?,
            (Some(i), None) => write!(f, "layer {i}: ")?,
            (None, _) => f.write_str("network: ")?,
        }
        write!(
            f,
            "{}: {}, limit {} ({} {})",
            self.subject,
            self.actual,
            self.limit,
            self.rule.code(),
            self.rule.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_layer_rule_limit_and_value() {
        let v = Violation {
            layer: Some(3),
            op: Some("conv2d".to_owned()),
            rule: Rule::KernelMemory,
            subject: "kernel memory of processor 17 (columns)".to_owned(),
            actual: "5200".to_owned(),
            limit: "4096".to_owned(),
        };
        assert_eq!(
            v.to_string(),
            "layer 3 (conv2d): kernel memory of processor 17 (columns): 5200, limit 4096 (C17 kernel-memory)"
        );
    }
}
