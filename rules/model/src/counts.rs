//! Sizes a search ranks candidates by: parameters, buffers, multiply-
//! accumulates and activations.

use crate::error::{LayerProblem, ModelError};
use crate::ir::{Model, Op};
use crate::params::layer_params;
use crate::shape::{LayerShapes, numel};
use crate::validate::{infer_shapes, layer_error};

/// Counts for one layer, or summed over a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Trainable parameters (weights and biases, batch norm scale and shift).
    pub params: u64,
    /// Batch norm running statistics: state, but not trained.
    pub buffers: u64,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// Elements of the layer's output per sample.
    pub output_elements: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Per layer, by index.
    pub layers: Vec<Tally>,
    pub total: Tally,
}

/// Validates `model` and counts it.
pub fn counts(model: &Model) -> Result<Counts, ModelError> {
    let shapes = infer_shapes(model)?;
    let mut layers = Vec::with_capacity(model.layers.len());
    let mut total = Tally::default();
    for (index, (layer, layer_shapes)) in model.layers.iter().zip(&shapes.layers).enumerate() {
        let too_large = |what| layer_error(index, layer, LayerProblem::TooLarge { what });
        let tally = tally(&layer.op, layer_shapes).ok_or_else(|| too_large("parameter or MAC count"))?;
        total = Tally {
            params: total
                .params
                .checked_add(tally.params)
                .ok_or_else(|| too_large("parameter count up to here"))?,
            buffers: total
                .buffers
                .checked_add(tally.buffers)
                .ok_or_else(|| too_large("buffer count up to here"))?,
            macs: total
                .macs
                .checked_add(tally.macs)
                .ok_or_else(|| too_large("MAC count up to here"))?,
            output_elements: total
                .output_elements
                .checked_add(tally.output_elements)
                .ok_or_else(|| too_large("output size up to here"))?,
        };
        layers.push(tally);
    }
    Ok(Counts { layers, total })
}

/// `None` when a count does not fit in `u64`.
fn tally(op: &Op, shapes: &LayerShapes) -> Option<Tally> {
    let mut tally = Tally {
        output_elements: wide(numel(&shapes.output)?),
        ..Tally::default()
    };
    for param in layer_params(op, shapes.input()) {
        let n = wide(numel(&param.shape)?);
        if param.buffer {
            tally.buffers = tally.buffers.checked_add(n)?;
        } else {
            tally.params = tally.params.checked_add(n)?;
        }
    }
    let product = |factors: &[usize]| factors.iter().try_fold(1u64, |n, &f| n.checked_mul(wide(f)));
    let input = shapes.input();
    let channels = input.first().copied()?;
    tally.macs = match *op {
        // Every output element is a dot product over the whole receptive
        // field: C·k (1-D) or C·k² (2-D) terms.
        Op::Conv1d { kernel, .. } => product(&[numel(&shapes.output)?, channels, kernel])?,
        Op::Conv2d { kernel, .. } => product(&[numel(&shapes.output)?, channels, kernel, kernel])?,
        // Every input element is scattered into out·k² outputs.
        Op::ConvTranspose2d {
            out_channels, kernel, ..
        } => product(&[numel(input)?, out_channels, kernel, kernel])?,
        Op::Linear { out_features, .. } => product(&[out_features, channels])?,
        Op::Flatten | Op::BatchNorm { .. } | Op::MaxPool { .. } | Op::AvgPool { .. } | Op::Add | Op::Relu | Op::Abs => {
            0
        }
    };
    Some(tally)
}

fn wide(n: usize) -> u64 {
    n as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    fn tally(params: u64, buffers: u64, macs: u64, output_elements: u64) -> Tally {
        Tally {
            params,
            buffers,
            macs,
            output_elements,
        }
    }

    #[test]
    fn counts_1d_cnn_as_computed_by_hand() {
        let counts = counts(&cnn1d()).unwrap();
        assert_eq!(
            counts.layers,
            vec![
                // c0: weight 4·2·3 + bias 4; MACs out·L_out·C·k = 4·16·2·3.
                tally(28, 0, 384, 64),
                // bn0: weight and bias trained, running mean and variance not.
                tally(8, 8, 0, 64),
                tally(0, 0, 0, 64),
                tally(0, 0, 0, 32),
                tally(0, 0, 0, 32),
                // fc: weight 2·32 + bias 2; MACs out·F.
                tally(66, 0, 64, 2),
            ]
        );
        assert_eq!(counts.total, tally(102, 8, 448, 258));
    }

    #[test]
    fn counts_conv2d_over_output_pixels_and_conv_transpose_over_input_pixels() {
        let counts = counts(&autoencoder()).unwrap();
        // e0: out·H'·W'·C·k² = 4·8·8·1·9; weight 4·1·9 + bias 4.
        assert_eq!(counts.layers[0], tally(40, 0, 2304, 256));
        // d0: C·out·k²·H·W = 4·1·9·4·4; weight [4, 1, 3, 3] + bias 1.
        assert_eq!(counts.layers[4], tally(37, 0, 576, 64));
    }

    #[test]
    fn counts_no_bias_when_disabled() {
        let counts = counts(&cnn2d()).unwrap();
        // c1: weight 4·4·9 only; MACs 4·3·3·4·9.
        assert_eq!(counts.layers[3], tally(144, 0, 1296, 36));
    }
}
