//! Fully resolved hardware layers: the network file plus the weights'
//! shapes plus the input shape give every layer's operator, channels,
//! kernel, padding, pooling, element-wise inputs and shapes, with the
//! reference tools' defaults filled in (spec/max78002.md §2, §4.2, §4.3).
//! The simulator, the allocator and the code generator work from these.

use serde::{Deserialize, Serialize};

use crate::network::{
    Activation, DataFormat, Dims, EltwiseOp, Network, Op, OutputWidth, PoolKind, SequenceRef, WeightBits,
};
use crate::violation::{Rule, Violation};
use crate::weights::Weights;

/// Channels × rows × columns. 1-D data of length `L` is `L × 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    pub channels: u32,
    pub height: u32,
    pub width: u32,
}

impl Shape {
    pub fn new(channels: u32, height: u32, width: u32) -> Shape {
        Shape {
            channels,
            height,
            width,
        }
    }

    /// `channels × length` data.
    pub fn one_d(channels: u32, length: u32) -> Shape {
        Shape::new(channels, length, 1)
    }

    pub fn pixels(&self) -> u64 {
        u64::from(self.height) * u64::from(self.width)
    }
}

/// The operator stage of a layer (§2.1 step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Linear,
    /// Passthrough: pooling-only or standalone element-wise layers.
    None,
}

/// Where a layer's input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// The network input.
    Input,
    /// The output of an earlier layer.
    Layer(usize),
}

/// A resolved pooling stage (dilation 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pool {
    pub kind: PoolKind,
    /// Rows × columns.
    pub size: [u32; 2],
    pub stride: [u32; 2],
}

/// One hardware layer with every default resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HwLayer {
    pub index: usize,
    pub name: Option<String>,
    pub operator: Operator,
    pub eltwise: Option<EltwiseOp>,
    /// 1 unless element-wise.
    pub operands: u32,
    /// Pool each operand before the element-wise op (the default).
    pub pool_first: bool,
    /// Several sources without `eltwise` are concatenated along channels.
    pub sources: Vec<Source>,
    pub data_format: DataFormat,
    /// One operand as stored in data memory, after `in_dim`.
    pub input: Shape,
    pub pool: Option<Pool>,
    /// After pooling; the operator's input (before flatten).
    pub pooled: Shape,
    pub out_channels: u32,
    /// Rows × columns: conv1d `[k, 1]`; linear and passthrough `[1, 1]`.
    pub kernel: [u32; 2],
    pub pad: u32,
    /// 1, or 2 for ConvTranspose2d.
    pub stride: u32,
    pub dilation: u32,
    pub groups: u32,
    pub flatten: bool,
    pub activation: Activation,
    pub output_shift: i32,
    pub weight_bits: WeightBits,
    pub output_width: OutputWidth,
    /// A bias that is present and not all zero.
    pub bias: bool,
    pub write_gap: u32,
    pub output: Shape,
}

impl HwLayer {
    /// Input channels per operand (the pre-flatten count for flatten).
    pub fn in_channels(&self) -> u32 {
        self.pooled.channels
    }

    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels() && self.groups == self.out_channels
    }

    /// Taps per kernel in weight memory (conv1d with dilation is
    /// zero-stuffed to `(k−1)·d + 1`, §2.3).
    pub fn kernel_taps(&self) -> u32 {
        match self.operator {
            Operator::Conv1d => (self.kernel[0].saturating_sub(1)) * self.dilation + 1,
            Operator::Conv2d | Operator::ConvTranspose2d => self.kernel[0] * self.kernel[1],
            Operator::Linear | Operator::None => 1,
        }
    }

    /// Weights of the layer (product of the weight tensor's dimensions).
    pub fn weight_count(&self) -> u64 {
        let cin = u64::from(self.in_channels());
        let cout = u64::from(self.out_channels);
        let groups = u64::from(self.groups.max(1));
        match self.operator {
            Operator::None => 0,
            Operator::Linear => {
                let features = if self.flatten { cin * self.pooled.pixels() } else { cin };
                features * cout
            }
            _ => cin / groups * cout * u64::from(self.kernel[0] * self.kernel[1]),
        }
    }

    /// Multiply-accumulates of one inference.
    pub fn macs(&self) -> u64 {
        match self.operator {
            Operator::None => 0,
            Operator::Linear => self.weight_count(),
            _ => self.weight_count() * self.output.pixels(),
        }
    }

    /// The spelling of the operation in messages and YAML.
    pub fn op_name(&self) -> &'static str {
        match (self.operator, self.eltwise) {
            (Operator::None, Some(e)) => e.as_str(),
            (Operator::None, None) => "passthrough",
            (Operator::Conv1d, _) => "conv1d",
            (Operator::Conv2d, _) => "conv2d",
            (Operator::ConvTranspose2d, _) => "convtranspose2d",
            (Operator::Linear, _) => "mlp",
        }
    }
}

/// Problems found while resolving and checking, kept apart from a hard
/// error: a rejected network is a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    pub violations: Vec<Violation>,
    /// Things the izer only warns about (a missing `pool_stride`, ...).
    pub warnings: Vec<String>,
}

/// Builds violations for one layer.
pub(crate) struct At {
    pub index: usize,
    pub op: &'static str,
}

impl At {
    pub fn violation(
        &self,
        rule: Rule,
        subject: impl Into<String>,
        actual: impl ToString,
        limit: impl ToString,
    ) -> Violation {
        Violation {
            layer: Some(self.index),
            op: Some(self.op.to_owned()),
            rule,
            subject: subject.into(),
            actual: actual.to_string(),
            limit: limit.to_string(),
        }
    }
}

/// Resolves every layer. Stops at the first layer whose shapes cannot be
/// computed (the violation says why) and returns `None` then.
pub fn resolve(network: &Network, weights: &Weights, input: Shape, findings: &mut Findings) -> Option<Vec<HwLayer>> {
    let mut layers: Vec<HwLayer> = Vec::with_capacity(network.layers.len());
    // §4.3: a conv1d layer without `pad` writes into the parser's shared
    // default, so later layers without `pad` get rows-only padding.
    let mut pad_default_aliased: Option<usize> = None;
    for index in 0..network.layers.len() {
        let layer = resolve_layer(
            network,
            index,
            &layers,
            weights,
            input,
            &mut pad_default_aliased,
            findings,
        )?;
        layers.push(layer);
    }
    Some(layers)
}

fn resolve_layer(
    network: &Network,
    index: usize,
    earlier: &[HwLayer],
    weights: &Weights,
    network_input: Shape,
    pad_default_aliased: &mut Option<usize>,
    findings: &mut Findings,
) -> Option<HwLayer> {
    let doc = &network.layers[index];
    let op = doc.op.unwrap_or_else(|| {
        findings
            .warnings
            .push(format!("layer {index}: no `op`; the izer assumes conv2d"));
        Op::Conv2d
    });
    let at = At { index, op: op.as_str() };
    let fail = |findings: &mut Findings, v: Violation| -> Option<HwLayer> {
        findings.violations.push(v);
        None
    };
    let (operator, mut eltwise) = match op {
        Op::Conv1d => (Operator::Conv1d, None),
        Op::Conv2d => (Operator::Conv2d, None),
        Op::ConvTranspose2d => (Operator::ConvTranspose2d, None),
        Op::Linear => (Operator::Linear, None),
        Op::Passthrough => (Operator::None, None),
        Op::Eltwise(e) => (Operator::None, Some(e)),
    };
    if let Some(e) = doc.eltwise {
        if eltwise.is_some() {
            findings.violations.push(at.violation(
                Rule::Eltwise,
                "`eltwise` on an element-wise layer",
                e.as_str(),
                "only on a convolution layer",
            ));
        }
        eltwise = Some(e);
    }

    let sources = match &doc.in_sequences {
        None if index == 0 => vec![Source::Input],
        None => vec![Source::Layer(index - 1)],
        Some(refs) => {
            let mut sources = Vec::with_capacity(refs.len());
            for r in refs {
                let found = match r {
                    SequenceRef::Input => Some(Source::Input),
                    SequenceRef::Index(j) => (*j < index).then_some(Source::Layer(*j)),
                    SequenceRef::Name(name) => network.layers[..index]
                        .iter()
                        .position(|l| l.name.as_deref() == Some(name.as_str()))
                        .map(Source::Layer),
                };
                let Some(source) = found else {
                    let shown = match r {
                        SequenceRef::Input => "input".to_owned(),
                        SequenceRef::Index(j) => j.to_string(),
                        SequenceRef::Name(n) => format!("`{n}`"),
                    };
                    return fail(
                        findings,
                        at.violation(
                            Rule::Shape,
                            "`in_sequences` entry",
                            shown,
                            "an earlier layer or -1 (input)",
                        ),
                    );
                };
                sources.push(source);
            }
            sources
        }
    };
    let shape_of = |s: &Source| match s {
        Source::Input => network_input,
        Source::Layer(j) => earlier[*j].output,
    };

    let operands = if eltwise.is_some() {
        if sources.len() < 2 {
            // Operands interleaved in one buffer by a producer kflow did not
            // see; the reference tests use this, kflow's networks never do.
            return fail(
                findings,
                at.violation(
                    Rule::Unsupported,
                    "element-wise operands from one source",
                    sources.len(),
                    "one `in_sequences` entry per operand",
                ),
            );
        }
        let n = sources.len() as u32;
        if let Some(declared) = doc.operands
            && declared != n
        {
            findings.violations.push(at.violation(
                Rule::Eltwise,
                "`operands` against `in_sequences` entries",
                declared,
                n,
            ));
        }
        n
    } else {
        if let Some(declared) = doc.operands.filter(|n| *n > 1) {
            findings
                .violations
                .push(at.violation(Rule::Eltwise, "`operands` without an element-wise op", declared, 1));
        }
        1
    };

    let first = shape_of(&sources[0]);
    let mut input = if eltwise.is_some() {
        if let Some(other) = sources.iter().map(shape_of).find(|s| *s != first) {
            return fail(
                findings,
                at.violation(
                    Rule::Shape,
                    "element-wise operand shapes",
                    shape_text(other),
                    format!("equal to the first operand's {}", shape_text(first)),
                ),
            );
        }
        first
    } else {
        let mut channels = 0u32;
        for s in &sources {
            let shape = shape_of(s);
            if (shape.height, shape.width) != (first.height, first.width) && doc.in_dim.is_none() {
                return fail(
                    findings,
                    at.violation(
                        Rule::Shape,
                        "concatenated input dimensions",
                        shape_text(shape),
                        format!("the first input's {}x{} (or an `in_dim`)", first.height, first.width),
                    ),
                );
            }
            channels = channels.saturating_add(shape.channels);
        }
        Shape { channels, ..first }
    };
    if let Some(dim) = doc.in_dim {
        let (h, w) = match dim {
            Dims::One(l) => (l, 1),
            Dims::Two(h, w) => (h, w),
        };
        if u64::from(h) * u64::from(w) != input.pixels() {
            return fail(
                findings,
                at.violation(
                    Rule::Shape,
                    "`in_dim` pixels",
                    format!("{h}x{w}"),
                    format!("{} pixels of the input {}", input.pixels(), shape_text(input)),
                ),
            );
        }
        input.height = h;
        input.width = w;
    }

    let pool = match doc.pool {
        None => None,
        Some((kind, size)) => {
            let size = match size {
                // 1-D data pools along its length only.
                Dims::One(p) if input.width == 1 => [p, 1],
                Dims::One(p) => [p, p],
                Dims::Two(r, c) => [r, c],
            };
            let stride = match doc.pool_stride {
                None => {
                    findings.warnings.push(format!(
                        "layer {index}: no `pool_stride`; the izer uses 1, not the pool size"
                    ));
                    [1, 1]
                }
                Some(Dims::One(s)) => [s, s],
                Some(Dims::Two(r, c)) => [r, c],
            };
            Some(Pool { kind, size, stride })
        }
    };
    let mut pooled = input;
    if let Some(p) = &pool {
        let dims = [(input.height, "rows"), (input.width, "columns")];
        let mut out = [0u32; 2];
        for (dim, (extent, name)) in dims.into_iter().enumerate() {
            let (size, stride) = (p.size[dim], p.stride[dim]);
            if size == 0 || stride == 0 || size > extent {
                return fail(
                    findings,
                    at.violation(
                        Rule::Pooling,
                        format!("pool {name} (size {size}, stride {stride})"),
                        format!("input of {extent} {name}"),
                        "size and stride ≥ 1, size ≤ input",
                    ),
                );
            }
            out[dim] = (extent - size) / stride + 1;
        }
        pooled.height = out[0];
        pooled.width = out[1];
    }

    let pad = match (doc.pad, operator) {
        (Some(p), _) => p,
        (None, Operator::Linear | Operator::None) => 0,
        (None, Operator::Conv1d) => {
            pad_default_aliased.get_or_insert(index);
            1
        }
        (None, Operator::Conv2d | Operator::ConvTranspose2d) => {
            if let Some(first) = *pad_default_aliased {
                findings.violations.push(at.violation(
                    Rule::Unsupported,
                    format!("`pad` absent after conv1d layer {first} also omitted it"),
                    "rows-only padding [1, 0] in the reference parser",
                    "an explicit `pad`",
                ));
            }
            1
        }
    };
    let groups = doc.groups.unwrap_or(1);
    let dilation = doc.dilation.unwrap_or(1);
    let flatten = doc.flatten.unwrap_or(false);
    let cin = pooled.channels;

    let layer_weights = weights.get(index);
    let (out_channels, kernel, output, stride) = if operator == Operator::None {
        (cin, [1, 1], pooled, 1)
    } else {
        let Some(w) = layer_weights else {
            return fail(
                findings,
                at.violation(
                    Rule::Shape,
                    "weights",
                    format!("no tensor `{index}.weight`"),
                    "one per operator layer",
                ),
            );
        };
        let dims: Vec<u32> = w.shape.iter().map(|d| u32::try_from(*d).unwrap_or(u32::MAX)).collect();
        let expected_rank = match operator {
            Operator::Conv1d => 3,
            Operator::Linear => 2,
            _ => 4,
        };
        if dims.len() != expected_rank {
            return fail(
                findings,
                at.violation(
                    Rule::Shape,
                    format!("`{index}.weight` rank"),
                    format!("{:?}", w.shape),
                    format!("{expected_rank} dimensions"),
                ),
            );
        }
        let per_group_in = match operator {
            Operator::ConvTranspose2d => dims[0],
            _ => dims[1],
        };
        let expected_in = match operator {
            Operator::Linear if flatten => u64::from(cin) * pooled.pixels(),
            Operator::ConvTranspose2d => u64::from(cin),
            _ => u64::from(cin / groups.max(1)),
        };
        if u64::from(per_group_in) != expected_in {
            findings.violations.push(at.violation(
                Rule::Shape,
                format!("input features of `{index}.weight` {:?}", w.shape),
                per_group_in,
                format!("{expected_in} from the input {}", shape_text(pooled)),
            ));
        }
        let cout = match operator {
            Operator::ConvTranspose2d => dims[1].saturating_mul(groups.max(1)),
            _ => dims[0],
        };
        // Stride-1 convolution: `extent + 2·pad − d·(k − 1)`.
        let length = |extent: u32, k: u32| -> Option<u32> {
            let span = i64::from(dilation) * i64::from(k.saturating_sub(1));
            let out = i64::from(extent) + 2 * i64::from(pad) - span;
            u32::try_from(out).ok().filter(|o| *o > 0)
        };
        let (kernel, out, stride) = match operator {
            Operator::Conv1d => {
                if pooled.width != 1 {
                    return fail(
                        findings,
                        at.violation(
                            Rule::Shape,
                            "conv1d input",
                            shape_text(pooled),
                            "1-D data (width 1); write `in_dim`",
                        ),
                    );
                }
                let k = dims[2];
                ([k, 1], length(pooled.height, k).map(|l| (l, 1)), 1)
            }
            Operator::Conv2d => {
                let (kh, kw) = (dims[2], dims[3]);
                let out = length(pooled.height, kh).zip(length(pooled.width, kw));
                ([kh, kw], out, 1)
            }
            Operator::ConvTranspose2d => {
                // §2.4: stride 2, output_pad 1: H_out = 2H − 2·pad + k − 1.
                let (kh, kw) = (dims[2], dims[3]);
                let t = |extent: u32, k: u32| {
                    let out = 2 * i64::from(extent) - 2 * i64::from(pad) + i64::from(k) - 1;
                    u32::try_from(out).ok().filter(|o| *o > 0)
                };
                ([kh, kw], t(pooled.height, kh).zip(t(pooled.width, kw)), 2)
            }
            Operator::Linear => {
                if !flatten && pooled.pixels() != 1 {
                    return fail(
                        findings,
                        at.violation(
                            Rule::Shape,
                            "linear input",
                            shape_text(pooled),
                            "1x1 data, or `flatten: true`",
                        ),
                    );
                }
                ([1, 1], Some((1, 1)), 1)
            }
            Operator::None => ([1, 1], Some((pooled.height, pooled.width)), 1),
        };
        let Some((h, w)) = out else {
            return fail(
                findings,
                at.violation(
                    Rule::Shape,
                    "output size",
                    format!(
                        "empty for input {} with kernel {}x{} and pad {pad}",
                        shape_text(pooled),
                        kernel[0],
                        kernel[1]
                    ),
                    "at least 1x1",
                ),
            );
        };
        (cout, kernel, Shape::new(cout, h, w), stride)
    };

    let bias = layer_weights.is_some_and(|w| w.has_bias()) && operator != Operator::None;
    if let Some(b) = layer_weights.and_then(|w| w.bias)
        && operator != Operator::None
        && b.len != out_channels as usize
    {
        findings.violations.push(at.violation(
            Rule::Shape,
            format!("`{index}.bias` length"),
            b.len,
            format!("{out_channels} output channels"),
        ));
    }
    for (key, declared, derived) in [
        ("in_channels", doc.in_channels, cin),
        ("out_channels", doc.out_channels, out_channels),
    ] {
        if let Some(declared) = declared
            && declared != derived
        {
            findings.violations.push(at.violation(
                Rule::Shape,
                format!("`{key}`"),
                declared,
                format!("{derived} from the weights and input"),
            ));
        }
    }

    if operator != Operator::None {
        if doc.output_shift.is_none() {
            findings.warnings.push(format!(
                "layer {index}: no `output_shift`; the izer would take the checkpoint's, kflow assumes 0"
            ));
        }
        if doc.quantization.is_none() {
            findings.warnings.push(format!(
                "layer {index}: no `quantization`; the izer would take the checkpoint's, kflow assumes 8"
            ));
        }
    }

    Some(HwLayer {
        index,
        name: doc.name.clone(),
        operator,
        eltwise,
        operands,
        pool_first: doc.pool_first.unwrap_or(true),
        sources,
        data_format: doc.data_format.unwrap_or_default(),
        input,
        pool,
        pooled,
        out_channels,
        kernel,
        pad,
        stride,
        dilation,
        groups,
        flatten,
        activation: doc.activate.unwrap_or_default(),
        output_shift: doc.output_shift.unwrap_or(0),
        weight_bits: doc.quantization.unwrap_or_default(),
        output_width: doc.output_width.unwrap_or_default(),
        bias,
        write_gap: doc.write_gap.unwrap_or(0),
        output,
    })
}

pub(crate) fn shape_text(s: Shape) -> String {
    format!("{}x{}x{}", s.channels, s.height, s.width)
}
