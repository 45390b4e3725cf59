//! What each layer reads and the shapes between its steps, after the
//! simulator has validated the network, so that the generated code indexes
//! nothing the simulator would refuse.

use kflow_ai8x_sim::{Layer, LayerWeights, Network, Op, Shape, Source};

use crate::error::CodegenError;

/// One layer's data flow.
#[derive(Clone, Debug)]
pub(crate) struct LayerGeometry {
    /// Resolved: never empty.
    pub sources: Vec<Source>,
    /// Channels of each source, in order (the concatenation's parts).
    pub source_channels: Vec<usize>,
    /// One operand (or the concatenation), after `in_dim`.
    pub operand: Shape,
    /// What the operator reads.
    pub pooled: Shape,
    pub output: Shape,
}

impl LayerGeometry {
    /// Whether the operator input has to be assembled: anything but one
    /// source read as it is.
    pub fn needs_prepare(&self, layer: &Layer) -> bool {
        layer.pool.is_some() || layer.eltwise.is_some() || self.sources.len() > 1 || layer.op == Op::None
    }
}

pub(crate) fn geometry(net: &Network) -> Result<Vec<LayerGeometry>, CodegenError> {
    let outputs = kflow_ai8x_sim::output_shapes(net)?;
    let mut out = Vec::with_capacity(net.layers.len());
    for (index, (layer, &output)) in net.layers.iter().zip(&outputs).enumerate() {
        let sources = if layer.inputs.is_empty() {
            vec![if index == 0 {
                Source::Input
            } else {
                Source::Layer(index - 1)
            }]
        } else {
            layer.inputs.clone()
        };
        let shape_of = |s: &Source| match *s {
            Source::Input => net.input,
            // The simulator accepted the network: every source runs earlier.
            Source::Layer(j) => outputs[j],
        };
        let first = shape_of(&sources[0]);
        let source_channels: Vec<usize> = sources.iter().map(|s| shape_of(s).channels).collect();
        let mut operand = match layer.eltwise {
            Some(_) => first,
            None => Shape {
                channels: source_channels.iter().sum(),
                ..first
            },
        };
        if let Some([rows, columns]) = layer.in_dim {
            operand.height = rows;
            operand.width = columns;
        }
        let pooled = match &layer.pool {
            Some(p) => Shape {
                channels: operand.channels,
                height: (operand.height - p.size[0]) / p.stride + 1,
                width: (operand.width - p.size[1]) / p.stride + 1,
            },
            None => operand,
        };
        out.push(LayerGeometry {
            sources,
            source_channels,
            operand,
            pooled,
            output,
        });
    }
    Ok(out)
}

/// A short name of the layer's kind for messages and comments.
pub(crate) fn kind(layer: &Layer) -> String {
    let mut name = match layer.op {
        Op::None => "passthrough".to_owned(),
        Op::Conv1d { kernel, pad } => format!("conv1d k{kernel} pad {pad}"),
        Op::Conv2d { kernel, pad, depthwise } => format!(
            "conv2d {kernel}x{kernel} pad {pad}{}",
            if depthwise { " depthwise" } else { "" }
        ),
        Op::ConvTranspose2d { pad } => format!("convtranspose2d pad {pad}"),
        Op::Linear { flatten: true } => "linear flatten".to_owned(),
        Op::Linear { flatten: false } => "linear".to_owned(),
    };
    if let Some(e) = layer.eltwise {
        name.push_str(&format!(" + {e:?}"));
    }
    if let Some(p) = layer.pool {
        name.push_str(&format!(" + {:?} pool", p.kind));
    }
    name
}

/// The weight count the operator reads, in PyTorch's layout.
fn weight_len(layer: &Layer, g: &LayerGeometry) -> usize {
    let (inp, out) = (layer.in_channels, layer.out_channels);
    match layer.op {
        Op::None => 0,
        Op::Conv1d { kernel, .. } => out * inp * kernel,
        Op::Conv2d {
            kernel,
            depthwise: true,
            ..
        } => out * kernel * kernel,
        Op::Conv2d { kernel, .. } => out * inp * kernel * kernel,
        Op::ConvTranspose2d { .. } => inp * out * 9,
        Op::Linear { .. } => out * g.pooled.len(),
    }
}

/// The lengths the generated arrays are indexed by; the values themselves
/// are the simulator's to judge.
pub(crate) fn check_weights(
    net: &Network,
    geometry: &[LayerGeometry],
    weights: &[LayerWeights],
) -> Result<(), CodegenError> {
    if weights.len() != net.layers.len() {
        return Err(CodegenError::WeightCount {
            layers: net.layers.len(),
            weights: weights.len(),
        });
    }
    for (layer_index, ((layer, g), w)) in net.layers.iter().zip(geometry).zip(weights).enumerate() {
        let fail = |reason: String| CodegenError::Weights {
            layer: layer_index,
            kind: kind(layer),
            reason,
        };
        let expected = weight_len(layer, g);
        if w.weight.len() != expected {
            return Err(fail(format!(
                "{} weights given, the operator needs {expected}",
                w.weight.len()
            )));
        }
        if let Some(bias) = &w.bias {
            if layer.op == Op::None {
                return Err(fail("a passthrough layer has no bias".into()));
            }
            if bias.len() != layer.out_channels {
                return Err(fail(format!(
                    "{} bias values for {} output channels",
                    bias.len(),
                    layer.out_channels
                )));
            }
        }
    }
    Ok(())
}
