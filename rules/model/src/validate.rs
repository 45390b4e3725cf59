//! Whether a model is well formed, and the shapes that prove it.

use std::collections::HashMap;

use crate::error::{LayerProblem, ModelError};
use crate::ir::{FORMAT, Layer, Model, Op, Task};
use crate::params::layer_params;
use crate::shape::{LayerShapes, Shapes, Source, numel, output_shape};

/// Checks `model` and computes every layer's input and output shapes.
///
/// A model that passes is safe for everything else in this crate: names are
/// unique, every layer reads earlier layers only, and every tensor (output
/// or parameter) has a nonzero size that fits in memory arithmetic.
pub fn infer_shapes(model: &Model) -> Result<Shapes, ModelError> {
    if model.format != FORMAT {
        return Err(ModelError::Format {
            found: model.format.clone(),
        });
    }
    if model.layers.is_empty() {
        return Err(ModelError::NoLayers {
            model: model.name.clone(),
        });
    }
    check_input(&model.input)?;
    let by_name = index_names(&model.layers)?;

    let mut layers: Vec<LayerShapes> = Vec::with_capacity(model.layers.len());
    for (index, layer) in model.layers.iter().enumerate() {
        let fail = |problem| layer_error(index, layer, problem);
        let sources = resolve_inputs(index, layer, &by_name).map_err(fail)?;
        let inputs: Vec<Vec<usize>> = sources
            .iter()
            .map(|&source| match source {
                Source::Input => model.input.clone(),
                // `resolve_inputs` only returns earlier layers, which are in `layers` already.
                Source::Layer(j) => layers[j].output.clone(),
            })
            .collect();
        check_arity(&layer.op, &sources, &inputs, &model.layers).map_err(fail)?;
        let output = output_shape(&layer.op, &inputs[0]).map_err(fail)?;
        check_param_sizes(&layer.op, &inputs[0]).map_err(fail)?;
        layers.push(LayerShapes {
            sources,
            inputs,
            output,
        });
    }

    let last = model.layers.len() - 1;
    let output = layers[last].output.clone();
    check_task(model, last, &output)?;
    Ok(Shapes {
        input: model.input.clone(),
        layers,
        output,
    })
}

pub(crate) fn layer_error(index: usize, layer: &Layer, problem: LayerProblem) -> ModelError {
    ModelError::Layer {
        index,
        name: layer.name.clone(),
        op: layer.op.kind(),
        problem: Box::new(problem),
    }
}

fn check_input(shape: &[usize]) -> Result<(), ModelError> {
    if !matches!(shape.len(), 2 | 3) {
        return Err(ModelError::InputRank { shape: shape.to_vec() });
    }
    if shape.contains(&0) {
        return Err(ModelError::InputZero { shape: shape.to_vec() });
    }
    Ok(())
}

fn index_names(layers: &[Layer]) -> Result<HashMap<&str, usize>, ModelError> {
    let mut by_name = HashMap::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        if layer.name.is_empty() {
            return Err(layer_error(index, layer, LayerProblem::EmptyName));
        }
        if let Some(&first) = by_name.get(layer.name.as_str()) {
            return Err(layer_error(index, layer, LayerProblem::DuplicateName { first }));
        }
        by_name.insert(layer.name.as_str(), index);
    }
    Ok(by_name)
}

fn resolve_inputs(index: usize, layer: &Layer, by_name: &HashMap<&str, usize>) -> Result<Vec<Source>, LayerProblem> {
    if layer.inputs.is_empty() {
        return Ok(vec![match index {
            0 => Source::Input,
            _ => Source::Layer(index - 1),
        }]);
    }
    layer
        .inputs
        .iter()
        .map(|input| match by_name.get(input.as_str()) {
            None => Err(LayerProblem::UnknownInput { input: input.clone() }),
            Some(&at) if at >= index => Err(LayerProblem::LaterInput {
                input: input.clone(),
                at,
            }),
            Some(&at) => Ok(Source::Layer(at)),
        })
        .collect()
}

fn check_arity(op: &Op, sources: &[Source], inputs: &[Vec<usize>], layers: &[Layer]) -> Result<(), LayerProblem> {
    let (expected, ok) = match op {
        Op::Add => ("at least 2", sources.len() >= 2),
        _ => ("exactly 1", sources.len() == 1),
    };
    if !ok {
        return Err(LayerProblem::InputCount {
            expected,
            found: sources.len(),
        });
    }
    let name = |source: Source| match source {
        Source::Input => "the model input".to_owned(),
        Source::Layer(j) => layers[j].name.clone(),
    };
    for (k, shape) in inputs.iter().enumerate().skip(1) {
        if *shape != inputs[0] {
            return Err(LayerProblem::UnequalInputs {
                first: name(sources[0]),
                first_shape: inputs[0].clone(),
                other: name(sources[k]),
                other_shape: shape.clone(),
            });
        }
    }
    Ok(())
}

/// The output check bounds activations; a weight can still be larger than
/// any activation (out·C·k²), and everything after validation counts and
/// allocates weights without re-checking.
fn check_param_sizes(op: &Op, input: &[usize]) -> Result<(), LayerProblem> {
    for param in layer_params(op, input) {
        if numel(&param.shape).is_none() {
            return Err(LayerProblem::TooLarge { what: param.suffix });
        }
    }
    Ok(())
}

fn check_task(model: &Model, last: usize, output: &[usize]) -> Result<(), ModelError> {
    let name = model.layers[last].name.clone();
    match model.task {
        Task::Classifier { classes } if output != [classes] => Err(ModelError::ClassifierOutput {
            index: last,
            name,
            output: output.to_vec(),
            classes,
        }),
        Task::Autoencoder if output != model.input => Err(ModelError::AutoencoderOutput {
            index: last,
            name,
            output: output.to_vec(),
            input: model.input.clone(),
        }),
        Task::Forecaster { from_channel } => check_forecaster(model, last, output, from_channel),
        _ => Ok(()),
    }
}

/// A forecaster reads `[C, L]` and writes `[C − from_channel, L_out]`
/// through layers that keep position `j` aligned with rows `j ..`: a first
/// convolution of kernel 2 or more (its last tap is masked), then no
/// padding, pooling or flattening.
fn check_forecaster(model: &Model, last: usize, output: &[usize], from_channel: usize) -> Result<(), ModelError> {
    let problem = |problem: String| ModelError::ForecasterOutput {
        index: last,
        name: model.layers[last].name.clone(),
        output: output.to_vec(),
        problem,
    };
    let &[channels, length] = model.input.as_slice() else {
        return Err(problem(format!(
            "a forecaster reads 1-D windows [C, L], not {:?}",
            model.input
        )));
    };
    if from_channel >= channels {
        return Err(problem(format!(
            "it predicts channels {from_channel}.. of an input with {channels}"
        )));
    }
    match output {
        [c, l] if *c == channels - from_channel && (1..length).contains(l) => {}
        _ => {
            return Err(problem(format!(
                "a forecaster of channels {from_channel}..{channels} over {length} rows must output [{}, L] with 1 ≤ L < {length}",
                channels - from_channel
            )));
        }
    }
    for (index, layer) in model.layers.iter().enumerate() {
        let problem = match &layer.op {
            Op::Conv1d { kernel, .. } if index == 0 && *kernel < 2 => "has kernel 1 (a first layer needs a past row)",
            Op::Conv1d { padding, .. } if *padding > 0 => "pads",
            _ if index == 0 && !matches!(layer.op, Op::Conv1d { .. }) => "is not a 1-D convolution",
            Op::Conv2d { .. } | Op::ConvTranspose2d { .. } => "is 2-D",
            Op::MaxPool { .. } | Op::AvgPool { .. } => "pools",
            Op::Flatten | Op::Linear { .. } => "mixes positions",
            _ => continue,
        };
        return Err(ModelError::ForecasterLayer {
            index,
            name: layer.name.clone(),
            op: layer.op.kind(),
            problem,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    fn error(model: &Model) -> String {
        infer_shapes(model).unwrap_err().to_string()
    }

    fn outputs(shapes: &Shapes) -> Vec<Vec<usize>> {
        shapes.layers.iter().map(|l| l.output.clone()).collect()
    }

    /// A classifier over `[1, 10]` whose layer 3 `c2` is `op`.
    fn with_layer3(op: Op) -> Model {
        model(
            Task::Classifier { classes: 2 },
            &[1, 10],
            vec![
                layer("c0", conv1d(2, 3, 0)),
                layer("r0", Op::Relu),
                layer("p0", Op::MaxPool { kernel: 2, stride: 2 }),
                layer("c2", op),
                layer("flat", Op::Flatten),
                layer("fc", linear(2)),
            ],
        )
    }

    #[test]
    fn infers_shapes_of_1d_cnn() {
        let shapes = infer_shapes(&cnn1d()).unwrap();
        assert_eq!(
            outputs(&shapes),
            vec![vec![4, 16], vec![4, 16], vec![4, 16], vec![4, 8], vec![32], vec![2]]
        );
        assert_eq!(shapes.layers[0].sources, vec![Source::Input]);
        assert_eq!(shapes.layers[0].inputs, vec![vec![2, 16]]);
        assert_eq!(shapes.layers[5].sources, vec![Source::Layer(4)]);
        assert_eq!(shapes.output, vec![2]);
    }

    #[test]
    fn infers_shapes_of_2d_cnn_with_residual_add() {
        let shapes = infer_shapes(&cnn2d()).unwrap();
        assert_eq!(
            outputs(&shapes),
            vec![
                vec![4, 6, 6],
                vec![4, 6, 6],
                vec![4, 3, 3],
                vec![4, 3, 3],
                vec![4, 3, 3],
                vec![4, 3, 3],
                vec![36],
                vec![3]
            ]
        );
        assert_eq!(shapes.layers[4].sources, vec![Source::Layer(2), Source::Layer(3)]);
        assert_eq!(shapes.layers[4].inputs, vec![vec![4, 3, 3], vec![4, 3, 3]]);
    }

    #[test]
    fn infers_shapes_of_conv_transpose_autoencoder() {
        let shapes = infer_shapes(&autoencoder()).unwrap();
        assert_eq!(
            outputs(&shapes),
            vec![
                vec![4, 8, 8],
                vec![4, 8, 8],
                vec![4, 8, 8],
                vec![4, 4, 4],
                vec![1, 8, 8]
            ]
        );
        assert_eq!(shapes.output, shapes.input);
    }

    #[test]
    fn rejects_unknown_format() {
        let mut m = cnn1d();
        m.format = "kflow-model/0".into();
        assert_eq!(
            error(&m),
            "the model's format is `kflow-model/0`, but this kflow reads `kflow-model/1`"
        );
    }

    #[test]
    fn rejects_model_without_layers() {
        let m = model(Task::Autoencoder, &[1, 8], vec![]);
        assert_eq!(error(&m), "model `m` has no layers; it needs at least one");
    }

    #[test]
    fn rejects_input_of_rank_1() {
        let mut m = cnn1d();
        m.input = vec![16];
        assert!(error(&m).starts_with("the model input [16] has rank 1; expected [C, L] (rank 2) or [C, H, W]"));
    }

    #[test]
    fn rejects_input_with_zero_dimension() {
        let mut m = cnn1d();
        m.input = vec![2, 0];
        assert_eq!(
            error(&m),
            "the model input [2, 0] has a zero dimension; every dimension must be at least 1"
        );
    }

    #[test]
    fn rejects_empty_layer_name() {
        let mut m = cnn1d();
        m.layers[2].name.clear();
        assert_eq!(
            error(&m),
            "layer 2 `` (relu): the name is empty; every layer needs a unique, non-empty name"
        );
    }

    #[test]
    fn rejects_duplicate_layer_name() {
        let mut m = cnn1d();
        m.layers[3].name = "bn0".into();
        assert_eq!(
            error(&m),
            "layer 3 `bn0` (max_pool): the name is already used by layer 1; layer names must be unique"
        );
    }

    #[test]
    fn rejects_input_naming_no_layer() {
        let mut m = cnn1d();
        m.layers[2].inputs = vec!["bn9".into()];
        assert_eq!(
            error(&m),
            "layer 2 `r0` (relu): input `bn9` is not the name of any layer"
        );
    }

    #[test]
    fn rejects_input_naming_a_later_layer() {
        let mut m = cnn1d();
        m.layers[2].inputs = vec!["p0".into()];
        assert_eq!(
            error(&m),
            "layer 2 `r0` (relu): input `p0` is layer 3, which does not come before this one; a layer can only \
             read earlier layers"
        );
    }

    #[test]
    fn rejects_input_naming_its_own_layer() {
        let mut m = cnn1d();
        m.layers[2].inputs = vec!["r0".into()];
        assert!(error(&m).starts_with("layer 2 `r0` (relu): input `r0` is layer 2, which does not come before"));
    }

    #[test]
    fn rejects_add_with_one_input() {
        let mut m = cnn2d();
        m.layers[4].inputs.clear();
        assert_eq!(
            error(&m),
            "layer 4 `sum` (add): takes at least 2 input(s), but has 1 (name the others in `inputs`)"
        );
    }

    #[test]
    fn rejects_add_of_unequal_shapes() {
        let mut m = cnn2d();
        m.layers[4].inputs = vec!["p0".into(), "r0".into()];
        assert_eq!(
            error(&m),
            "layer 4 `sum` (add): inputs must have equal shapes, but `p0` is [4, 3, 3] and `r0` is [4, 6, 6]"
        );
    }

    #[test]
    fn rejects_two_inputs_to_relu() {
        let mut m = cnn2d();
        m.layers[5].inputs = vec!["sum".into(), "c1".into()];
        assert_eq!(error(&m), "layer 5 `a0` (abs): takes exactly 1 input(s), but has 2");
    }

    #[test]
    fn rejects_conv1d_on_2d_input() {
        let mut m = cnn2d();
        m.layers[3].op = conv1d(4, 3, 1);
        assert_eq!(
            error(&m),
            "layer 3 `c1` (conv1d): needs a [C, L] input, but gets [4, 3, 3]"
        );
    }

    #[test]
    fn rejects_conv2d_on_1d_input() {
        let mut m = cnn1d();
        m.layers[0].op = conv2d(4, 3, 1);
        assert_eq!(
            error(&m),
            "layer 0 `c0` (conv2d): needs a [C, H, W] input, but gets [2, 16]"
        );
    }

    #[test]
    fn rejects_linear_before_flatten() {
        let mut m = cnn1d();
        m.layers.remove(4);
        assert_eq!(
            error(&m),
            "layer 4 `fc` (linear): needs a flat [F] input, but gets [4, 8]; add a flatten layer before it"
        );
    }

    #[test]
    fn rejects_pool_on_flat_input() {
        let mut m = cnn1d();
        m.layers.insert(5, layer("p1", Op::AvgPool { kernel: 2, stride: 2 }));
        assert_eq!(
            error(&m),
            "layer 5 `p1` (avg_pool): needs a [C, L] or [C, H, W] input, but gets [32]"
        );
    }

    #[test]
    fn rejects_kernel_longer_than_padded_input() {
        assert_eq!(
            error(&with_layer3(conv1d(2, 5, 0))),
            "layer 3 `c2` (conv1d): kernel 5 is longer than its padded input (length 4)"
        );
    }

    #[test]
    fn rejects_conv2d_kernel_larger_than_padded_input() {
        let mut m = cnn2d();
        m.layers[3].op = conv2d(4, 6, 1);
        assert_eq!(
            error(&m),
            "layer 3 `c1` (conv2d): kernel 6 is larger than its padded input (5×5)"
        );
    }

    #[test]
    fn rejects_pool_kernel_larger_than_input() {
        let mut m = cnn2d();
        m.layers[2].op = Op::MaxPool { kernel: 7, stride: 1 };
        assert_eq!(
            error(&m),
            "layer 2 `p0` (max_pool): kernel 7 is larger than its input (6×6)"
        );
    }

    #[test]
    fn rejects_empty_conv_transpose_output() {
        let mut m = autoencoder();
        m.layers[3].op = Op::MaxPool { kernel: 8, stride: 1 };
        m.layers[4].op = Op::ConvTranspose2d {
            out_channels: 1,
            kernel: 2,
            padding: 1,
            stride: 2,
            output_padding: 0,
            bias: true,
        };
        assert_eq!(
            error(&m),
            "layer 4 `d0` (conv_transpose2d): the output would be empty: (size − 1)·stride − 2·padding + kernel + \
             output_padding = (1 − 1)·2 − 2·1 + 2 + 0 is not positive; reduce padding"
        );
    }

    #[test]
    fn rejects_zero_out_channels() {
        assert_eq!(
            error(&with_layer3(conv1d(0, 1, 0))),
            "layer 3 `c2` (conv1d): out_channels is 0; it must be at least 1"
        );
    }

    #[test]
    fn rejects_zero_kernel() {
        assert_eq!(
            error(&with_layer3(conv1d(2, 0, 0))),
            "layer 3 `c2` (conv1d): kernel is 0; it must be at least 1"
        );
    }

    #[test]
    fn rejects_zero_stride() {
        assert_eq!(
            error(&with_layer3(Op::MaxPool { kernel: 2, stride: 0 })),
            "layer 3 `c2` (max_pool): stride is 0; it must be at least 1"
        );
    }

    #[test]
    fn rejects_zero_out_features() {
        let mut m = cnn1d();
        m.layers[5].op = linear(0);
        assert_eq!(
            error(&m),
            "layer 5 `fc` (linear): out_features is 0; it must be at least 1"
        );
    }

    #[test]
    fn rejects_padding_as_wide_as_kernel() {
        assert_eq!(
            error(&with_layer3(conv1d(2, 3, 3))),
            "layer 3 `c2` (conv1d): padding 3 must be smaller than the kernel (3)"
        );
    }

    #[test]
    fn rejects_output_padding_as_wide_as_stride() {
        let mut m = autoencoder();
        m.layers[4].op = Op::ConvTranspose2d {
            out_channels: 1,
            kernel: 3,
            padding: 1,
            stride: 2,
            output_padding: 2,
            bias: true,
        };
        assert_eq!(
            error(&m),
            "layer 4 `d0` (conv_transpose2d): output_padding 2 must be smaller than the stride (2), as in PyTorch"
        );
    }

    #[test]
    fn rejects_batch_norm_eps_of_zero() {
        let mut m = cnn1d();
        m.layers[1].op = Op::BatchNorm {
            eps: 0.0,
            momentum: 0.1,
        };
        assert_eq!(
            error(&m),
            "layer 1 `bn0` (batch_norm): eps is 0; it must be positive and finite"
        );
    }

    #[test]
    fn rejects_batch_norm_momentum_above_one() {
        let mut m = cnn1d();
        m.layers[1].op = Op::BatchNorm {
            eps: 1e-5,
            momentum: 1.5,
        };
        assert_eq!(
            error(&m),
            "layer 1 `bn0` (batch_norm): momentum is 1.5; it must be between 0 and 1"
        );
    }

    #[test]
    fn rejects_classifier_output_of_wrong_size() {
        let mut m = cnn1d();
        m.task = Task::Classifier { classes: 3 };
        assert_eq!(
            error(&m),
            "the model output (layer 5 `fc`) is [2], but a classifier with 3 classes must output [3]"
        );
    }

    #[test]
    fn rejects_autoencoder_output_unlike_input() {
        let mut m = autoencoder();
        m.layers[4].op = Op::ConvTranspose2d {
            out_channels: 1,
            kernel: 3,
            padding: 1,
            stride: 2,
            output_padding: 0,
            bias: true,
        };
        assert_eq!(
            error(&m),
            "the model output (layer 4 `d0`) is [1, 7, 7], but an autoencoder must reproduce its input shape [1, 8, 8]"
        );
    }

    #[test]
    fn rejects_weight_larger_than_memory() {
        let mut m = cnn1d();
        m.layers[5].op = linear(usize::MAX / 2);
        assert_eq!(error(&m), "layer 5 `fc` (linear): its weight does not fit in 64 bits");
    }
}
