//! ONNX export, for ONNX Runtime on the host and for viewers such as Netron.
//!
//! The graph reads `x`, `[N, ...input]` with a symbolic batch dimension
//! `N`, and writes `y`, `[N, ...output]`. Weights are initializers named as
//! in the safetensors file (`<layer>.<tensor>`); the value a layer computes
//! is `<layer>:out` (a suffix no layer or tensor name can collide with), and
//! every such value carries its shape in `value_info`. The bytes are a pure
//! function of the model and the weights.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto, type_proto,
};

use crate::error::{ModelError, TensorProblem};
use crate::ir::{Layer, Model, Op};
use crate::shape::{LayerShapes, Source};
use crate::validate::infer_shapes;
use crate::weights::{Tensor, Weights, f32_bytes, needed};

/// ONNX 1.13's IR version: what ONNX Runtime 1.14 and later load.
pub const IR_VERSION: i64 = 8;
/// The default-domain opset the nodes are written for.
pub const OPSET: i64 = 13;
/// The graph input's name.
pub const INPUT: &str = "x";
/// The graph output's name.
pub const OUTPUT: &str = "y";
/// The symbolic batch dimension of `x` and `y`.
pub const BATCH: &str = "N";

/// The model with its weights as an ONNX `ModelProto`, serialized.
pub fn to_onnx(model: &Model, weights: &Weights) -> Result<Vec<u8>, ModelError> {
    let shapes = infer_shapes(model)?;
    weights.check_against(model, &shapes)?;

    let last = model.layers.len() - 1;
    let value = |index: usize| {
        if index == last {
            OUTPUT.to_owned()
        } else {
            format!("{}:out", model.layers[index].name)
        }
    };

    let mut graph = GraphProto {
        name: model.name.clone(),
        input: vec![value_info(INPUT, &shapes.input)?],
        output: vec![value_info(OUTPUT, &shapes.output)?],
        ..GraphProto::default()
    };
    for tensor in needed(model, &shapes) {
        let found = weights.get(&tensor.name).ok_or_else(|| ModelError::Weights {
            problems: vec![TensorProblem::Missing {
                name: tensor.name.clone(),
                shape: tensor.spec.shape.clone(),
                layer: tensor.layer,
                layer_name: model.layers[tensor.layer].name.clone(),
            }],
        })?;
        graph.initializer.push(initializer(&tensor.name, found)?);
    }
    for (index, (layer, layer_shapes)) in model.layers.iter().zip(&shapes.layers).enumerate() {
        let inputs: Vec<String> = layer_shapes
            .sources
            .iter()
            .map(|&source| match source {
                Source::Input => INPUT.to_owned(),
                Source::Layer(j) => value(j),
            })
            .collect();
        let output = value(index);
        write_layer(&mut graph, layer, layer_shapes, inputs, &output)?;
        if index != last {
            graph.value_info.push(value_info(&output, &layer_shapes.output)?);
        }
    }

    let proto = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
            ..OperatorSetIdProto::default()
        }],
        producer_name: "kflow".to_owned(),
        producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        graph: Some(graph).into(),
        ..ModelProto::default()
    };
    proto
        .write_to_bytes()
        .map_err(|e| ModelError::Onnx { message: e.to_string() })
}

/// Appends the node(s) computing `layer` into `output`.
fn write_layer(
    graph: &mut GraphProto,
    layer: &Layer,
    shapes: &LayerShapes,
    mut inputs: Vec<String>,
    output: &str,
) -> Result<(), ModelError> {
    // The IR's tensor order per layer is ONNX's input order after the data
    // input (W, B for Conv/Gemm; scale, B, mean, var for BatchNormalization).
    inputs.extend(
        crate::params::layer_params(&layer.op, shapes.input())
            .iter()
            .map(|param| format!("{}.{}", layer.name, param.suffix)),
    );
    let spatial = shapes.input().len().saturating_sub(1);
    let (op_type, attributes) = match layer.op {
        Op::Conv1d { kernel, padding, .. } | Op::Conv2d { kernel, padding, .. } => (
            "Conv",
            vec![
                ints("kernel_shape", &vec![kernel; spatial])?,
                ints("pads", &vec![padding; 2 * spatial])?,
                ints("strides", &vec![1; spatial])?,
            ],
        ),
        Op::ConvTranspose2d {
            kernel,
            padding,
            stride,
            output_padding,
            ..
        } => (
            "ConvTranspose",
            vec![
                ints("kernel_shape", &[kernel, kernel])?,
                ints("strides", &[stride, stride])?,
                ints("pads", &[padding; 4])?,
                ints("output_padding", &[output_padding, output_padding])?,
            ],
        ),
        Op::Linear { .. } => ("Gemm", vec![int("transB", 1)]),
        Op::Flatten => ("Flatten", vec![int("axis", 1)]),
        // ONNX's momentum weighs the running statistic, PyTorch's the new
        // batch statistic (torch.onnx writes 1 − momentum too). Inference
        // ignores it either way.
        Op::BatchNorm { eps, momentum } => (
            "BatchNormalization",
            vec![float("epsilon", eps as f32), float("momentum", (1.0 - momentum) as f32)],
        ),
        Op::MaxPool { kernel, stride } => (
            "MaxPool",
            vec![
                ints("kernel_shape", &vec![kernel; spatial])?,
                ints("strides", &vec![stride; spatial])?,
            ],
        ),
        Op::AvgPool { kernel, stride } => (
            "AveragePool",
            vec![
                ints("kernel_shape", &vec![kernel; spatial])?,
                ints("strides", &vec![stride; spatial])?,
                int("count_include_pad", 0),
            ],
        ),
        Op::Add => return write_sum(graph, layer, shapes, &inputs, output),
        Op::Relu => ("Relu", vec![]),
        Op::Abs => ("Abs", vec![]),
    };
    graph.node.push(node(op_type, &layer.name, inputs, output, attributes));
    Ok(())
}

/// ONNX's Add is binary: more inputs are summed left to right, through
/// `<layer>:sum<k>`, the order a straightforward forward pass uses.
fn write_sum(
    graph: &mut GraphProto,
    layer: &Layer,
    shapes: &LayerShapes,
    inputs: &[String],
    output: &str,
) -> Result<(), ModelError> {
    let Some((first, rest)) = inputs.split_first() else {
        return Ok(());
    };
    let mut sum = first.clone();
    for (k, input) in rest.iter().enumerate() {
        let step = k + 1;
        let (name, out) = if step == rest.len() {
            (layer.name.clone(), output.to_owned())
        } else {
            (format!("{}:add{step}", layer.name), format!("{}:sum{step}", layer.name))
        };
        graph
            .node
            .push(node("Add", &name, vec![sum, input.clone()], &out, vec![]));
        if step != rest.len() {
            graph.value_info.push(value_info(&out, &shapes.output)?);
        }
        sum = out;
    }
    Ok(())
}

fn node(op_type: &str, name: &str, input: Vec<String>, output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input,
        output: vec![output.to_owned()],
        name: name.to_owned(),
        op_type: op_type.to_owned(),
        attribute,
        ..NodeProto::default()
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        type_: AttributeType::INT.into(),
        i,
        ..AttributeProto::default()
    }
}

fn ints(name: &str, values: &[usize]) -> Result<AttributeProto, ModelError> {
    Ok(AttributeProto {
        name: name.to_owned(),
        type_: AttributeType::INTS.into(),
        ints: values.iter().map(|&v| int64(v)).collect::<Result<_, _>>()?,
        ..AttributeProto::default()
    })
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        type_: AttributeType::FLOAT.into(),
        f,
        ..AttributeProto::default()
    }
}

/// A float tensor `[N, ...shape]`.
fn value_info(name: &str, shape: &[usize]) -> Result<ValueInfoProto, ModelError> {
    let mut dims = vec![Dimension {
        value: Some(dimension::Value::DimParam(BATCH.to_owned())),
        ..Dimension::default()
    }];
    for &d in shape {
        dims.push(Dimension {
            value: Some(dimension::Value::DimValue(int64(d)?)),
            ..Dimension::default()
        });
    }
    let tensor_type = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: Some(TensorShapeProto {
            dim: dims,
            ..TensorShapeProto::default()
        })
        .into(),
        ..type_proto::Tensor::default()
    };
    Ok(ValueInfoProto {
        name: name.to_owned(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor_type)),
            ..TypeProto::default()
        })
        .into(),
        ..ValueInfoProto::default()
    })
}

fn initializer(name: &str, tensor: &Tensor) -> Result<TensorProto, ModelError> {
    tensor.check_values(name)?;
    Ok(TensorProto {
        dims: tensor.shape.iter().map(|&d| int64(d)).collect::<Result<_, _>>()?,
        data_type: DataType::FLOAT as i32,
        name: name.to_owned(),
        raw_data: f32_bytes(&tensor.data),
        ..TensorProto::default()
    })
}

fn int64(n: usize) -> Result<i64, ModelError> {
    i64::try_from(n).map_err(|_| ModelError::Onnx {
        message: format!("{n} does not fit in ONNX's 64-bit signed integers"),
    })
}

#[cfg(test)]
mod tests {
    use onnx_protobuf::attribute_proto::AttributeType;

    use super::*;
    use crate::fixtures::*;
    use crate::weights::expected;

    fn export(model: &Model, seed: u64) -> ModelProto {
        let weights = Weights::init(model, seed).unwrap();
        ModelProto::parse_from_bytes(&to_onnx(model, &weights).unwrap()).unwrap()
    }

    fn op_types(proto: &ModelProto) -> Vec<&str> {
        proto.graph.node.iter().map(|n| n.op_type.as_str()).collect()
    }

    fn dims(info: &ValueInfoProto) -> Vec<String> {
        info.type_
            .tensor_type()
            .shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(v)) => v.to_string(),
                Some(dimension::Value::DimParam(p)) => p.clone(),
                _ => "?".to_owned(),
            })
            .collect()
    }

    fn attribute<'a>(node: &'a NodeProto, name: &str) -> &'a AttributeProto {
        node.attribute.iter().find(|a| a.name == name).unwrap()
    }

    fn node<'a>(proto: &'a ModelProto, name: &str) -> &'a NodeProto {
        proto.graph.node.iter().find(|n| n.name == name).unwrap()
    }

    #[test]
    fn onnx_of_1d_cnn_parses_back_with_its_nodes_and_signature() {
        let proto = export(&cnn1d(), 1);
        assert_eq!(proto.ir_version, 8);
        assert_eq!(proto.opset_import.len(), 1);
        assert_eq!(
            (proto.opset_import[0].domain.as_str(), proto.opset_import[0].version),
            ("", 13)
        );
        assert_eq!(proto.producer_name, "kflow");
        assert_eq!(
            op_types(&proto),
            ["Conv", "BatchNormalization", "Relu", "MaxPool", "Flatten", "Gemm"]
        );
        let graph = &proto.graph;
        assert_eq!(graph.input.len(), 1);
        assert_eq!(graph.input[0].name, "x");
        assert_eq!(dims(&graph.input[0]), ["N", "2", "16"]);
        assert_eq!(graph.output[0].name, "y");
        assert_eq!(dims(&graph.output[0]), ["N", "2"]);
        assert_eq!(graph.input[0].type_.tensor_type().elem_type, DataType::FLOAT as i32);
        assert_eq!(graph.node[0].input, ["x", "c0.weight", "c0.bias"]);
        assert_eq!(graph.node[5].output, ["y"]);
    }

    #[test]
    fn onnx_initializers_are_the_weights_in_layer_order() {
        let model = cnn1d();
        let weights = Weights::init(&model, 1).unwrap();
        let proto = ModelProto::parse_from_bytes(&to_onnx(&model, &weights).unwrap()).unwrap();
        let names: Vec<&str> = proto.graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let expected_names: Vec<String> = expected(&model).unwrap().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, expected_names);
        let fc = proto.graph.initializer.iter().find(|t| t.name == "fc.weight").unwrap();
        assert_eq!(fc.dims, [2, 32]);
        assert_eq!(fc.data_type, DataType::FLOAT as i32);
        assert_eq!(fc.raw_data, f32_bytes(&weights.get("fc.weight").unwrap().data));
    }

    #[test]
    fn onnx_intermediate_values_carry_their_shapes() {
        let proto = export(&cnn1d(), 1);
        let infos: Vec<(&str, Vec<String>)> = proto
            .graph
            .value_info
            .iter()
            .map(|v| (v.name.as_str(), dims(v)))
            .collect();
        assert_eq!(
            infos[0],
            ("c0:out", vec!["N".to_owned(), "4".to_owned(), "16".to_owned()])
        );
        assert_eq!(infos.len(), 5);
        assert_eq!(infos[4], ("flat:out", vec!["N".to_owned(), "32".to_owned()]));
    }

    #[test]
    fn onnx_writes_layer_attributes() {
        let proto = export(&cnn1d(), 1);
        let conv = node(&proto, "c0");
        assert_eq!(attribute(conv, "kernel_shape").ints, [3]);
        assert_eq!(attribute(conv, "pads").ints, [1, 1]);
        assert_eq!(attribute(conv, "strides").ints, [1]);
        let bn = node(&proto, "bn0");
        assert_eq!(attribute(bn, "epsilon").f, 1e-5);
        assert_eq!(attribute(bn, "epsilon").type_.enum_value(), Ok(AttributeType::FLOAT));
        assert_eq!(attribute(bn, "momentum").f, 0.9);
        assert_eq!(attribute(node(&proto, "fc"), "transB").i, 1);
        assert_eq!(attribute(node(&proto, "flat"), "axis").i, 1);

        let proto = export(&cnn2d(), 1);
        let pool = node(&proto, "p0");
        assert_eq!(pool.op_type, "AveragePool");
        assert_eq!(attribute(pool, "kernel_shape").ints, [2, 2]);
        assert_eq!(attribute(pool, "count_include_pad").i, 0);
        assert_eq!(attribute(node(&proto, "c0"), "pads").ints, [0, 0, 0, 0]);
        assert_eq!(node(&proto, "c1").input, ["p0:out", "c1.weight"]);
        assert_eq!(node(&proto, "sum").input, ["p0:out", "c1:out"]);
    }

    #[test]
    fn onnx_of_autoencoder_has_conv_transpose_and_input_shaped_output() {
        let proto = export(&autoencoder(), 1);
        assert_eq!(
            op_types(&proto),
            ["Conv", "BatchNormalization", "Relu", "MaxPool", "ConvTranspose"]
        );
        assert_eq!(dims(&proto.graph.output[0]), ["N", "1", "8", "8"]);
        let deconv = node(&proto, "d0");
        assert_eq!(attribute(deconv, "strides").ints, [2, 2]);
        assert_eq!(attribute(deconv, "pads").ints, [1, 1, 1, 1]);
        assert_eq!(attribute(deconv, "output_padding").ints, [1, 1]);
        assert_eq!(deconv.input, ["p0:out", "d0.weight", "d0.bias"]);
    }

    #[test]
    fn onnx_sums_three_inputs_left_to_right() {
        let mut model = cnn2d();
        model.layers[4].inputs = vec!["p0".into(), "c1".into(), "p0".into()];
        let proto = export(&model, 1);
        let adds: Vec<(&str, Vec<String>, Vec<String>)> = proto
            .graph
            .node
            .iter()
            .filter(|n| n.op_type == "Add")
            .map(|n| (n.name.as_str(), n.input.clone(), n.output.clone()))
            .collect();
        let strings = |s: &[&str]| s.iter().map(|&s| s.to_owned()).collect::<Vec<_>>();
        assert_eq!(
            adds,
            [
                ("sum:add1", strings(&["p0:out", "c1:out"]), strings(&["sum:sum1"])),
                ("sum", strings(&["sum:sum1", "p0:out"]), strings(&["sum:out"])),
            ]
        );
        assert!(proto.graph.value_info.iter().any(|v| v.name == "sum:sum1"));
    }

    #[test]
    fn onnx_bytes_are_a_function_of_model_and_weights() {
        let model = cnn2d();
        let weights = Weights::init(&model, 9).unwrap();
        assert_eq!(to_onnx(&model, &weights).unwrap(), to_onnx(&model, &weights).unwrap());
    }

    #[test]
    fn onnx_export_rejects_weights_of_another_model() {
        let weights = Weights::init(&cnn1d(), 1).unwrap();
        let error = to_onnx(&cnn2d(), &weights).unwrap_err();
        assert!(matches!(error, ModelError::Weights { .. }), "{error}");
    }
}
