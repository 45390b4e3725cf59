//! A model's parameters: named f32 tensors in PyTorch's layout.
//!
//! | layer | tensors |
//! |---|---|
//! | conv1d | `weight [out, in, k]`, `bias [out]` |
//! | conv2d | `weight [out, in, k, k]`, `bias [out]` |
//! | conv_transpose2d | `weight [in, out, k, k]`, `bias [out]` |
//! | linear | `weight [out, in]`, `bias [out]` |
//! | batch_norm | `weight [C]`, `bias [C]`, `running_mean [C]`, `running_var [C]` |
//!
//! Each tensor is named `<layer>.<tensor>`; on disk, a safetensors file.

use std::collections::{BTreeMap, HashSet};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, TensorProblem};
use crate::ir::Model;
use crate::params::{ParamSpec, layer_params};
use crate::shape::{Shapes, numel};
use crate::validate::infer_shapes;

/// One tensor: its shape and its values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor { shape, data }
    }

    /// Whether `data` holds exactly as many values as `shape` needs; every
    /// writer checks this first, since the fields are public.
    pub fn check_values(&self, name: &str) -> Result<(), ModelError> {
        match numel(&self.shape) {
            None => Err(ModelError::TensorSize {
                name: name.to_owned(),
                shape: self.shape.clone(),
            }),
            Some(needed) if needed != self.data.len() => Err(ModelError::TensorValues {
                name: name.to_owned(),
                values: self.data.len(),
                shape: self.shape.clone(),
                needed,
            }),
            Some(_) => Ok(()),
        }
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }
}

/// All tensors of a model, by name (sorted, so that files are written the
/// same way every time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }
}

/// Every tensor `model` needs, named `<layer>.<tensor>`, with its shape, in
/// layer order and then in the order of the table above.
pub fn expected(model: &Model) -> Result<Vec<(String, Vec<usize>)>, ModelError> {
    let shapes = infer_shapes(model)?;
    Ok(needed(model, &shapes)
        .into_iter()
        .map(|tensor| (tensor.name, tensor.spec.shape))
        .collect())
}

/// A tensor a model needs and the layer that owns it.
pub(crate) struct Needed {
    pub layer: usize,
    pub name: String,
    pub spec: ParamSpec,
}

pub(crate) fn needed(model: &Model, shapes: &Shapes) -> Vec<Needed> {
    model
        .layers
        .iter()
        .zip(&shapes.layers)
        .enumerate()
        .flat_map(|(index, (layer, layer_shapes))| {
            layer_params(&layer.op, layer_shapes.input())
                .into_iter()
                .map(move |spec| Needed {
                    layer: index,
                    name: format!("{}.{}", layer.name, spec.suffix),
                    spec,
                })
        })
        .collect()
}

impl Weights {
    /// Whether these are exactly the tensors `model` needs, each with its
    /// shape and a matching number of values; the error lists every
    /// difference.
    pub fn check(&self, model: &Model) -> Result<(), ModelError> {
        let shapes = infer_shapes(model)?;
        self.check_against(model, &shapes)
    }

    pub(crate) fn check_against(&self, model: &Model, shapes: &Shapes) -> Result<(), ModelError> {
        let needed = needed(model, shapes);
        let mut problems = Vec::new();
        for tensor in &needed {
            let layer_name = || model.layers[tensor.layer].name.clone();
            match self.tensors.get(&tensor.name) {
                None => problems.push(TensorProblem::Missing {
                    name: tensor.name.clone(),
                    shape: tensor.spec.shape.clone(),
                    layer: tensor.layer,
                    layer_name: layer_name(),
                }),
                Some(found) if found.shape != tensor.spec.shape => problems.push(TensorProblem::Shape {
                    name: tensor.name.clone(),
                    found: found.shape.clone(),
                    expected: tensor.spec.shape.clone(),
                    layer: tensor.layer,
                    layer_name: layer_name(),
                }),
                Some(found) => {
                    // Validation guarantees the expected shape's size fits.
                    if let Some(needed) = numel(&found.shape)
                        && needed != found.data.len()
                    {
                        problems.push(TensorProblem::Values {
                            name: tensor.name.clone(),
                            values: found.data.len(),
                            shape: found.shape.clone(),
                            needed,
                        });
                    }
                }
            }
        }
        let known: HashSet<&str> = needed.iter().map(|tensor| tensor.name.as_str()).collect();
        problems.extend(
            self.tensors
                .keys()
                .filter(|name| !known.contains(name.as_str()))
                .map(|name| TensorProblem::Extra { name: name.clone() }),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Weights { problems })
        }
    }

    /// A safetensors file of all tensors as little-endian F32, without
    /// metadata. The crate writes tensors sorted by name, so equal weights
    /// give equal bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, ModelError> {
        let mut bytes = Vec::with_capacity(self.tensors.len());
        for (name, tensor) in &self.tensors {
            tensor.check_values(name)?;
            bytes.push(f32_bytes(&tensor.data));
        }
        let views = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|((name, tensor), data)| Ok((name.as_str(), TensorView::new(Dtype::F32, tensor.shape.clone(), data)?)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(safetensors::serialize(views, None)?)
    }

    /// Reads a safetensors file whose tensors are all F32.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Weights, ModelError> {
        let file = SafeTensors::deserialize(bytes)?;
        let mut weights = Weights::default();
        for (name, view) in file.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(ModelError::Dtype {
                    name: name.to_owned(),
                    dtype: view.dtype().to_string(),
                });
            }
            let (values, _) = view.data().as_chunks::<4>();
            let tensor = Tensor::new(
                view.shape().to_vec(),
                values.iter().map(|&v| f32::from_le_bytes(v)).collect(),
            );
            // The crate checks data sizes against shapes; this keeps ours honest if it ever does not.
            tensor.check_values(name)?;
            weights.insert(name, tensor);
        }
        Ok(weights)
    }
}

/// Little-endian f32 values, the byte order of safetensors and of ONNX raw data.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    fn shape_list(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
        list.iter()
            .map(|&(name, shape)| (name.to_owned(), shape.to_vec()))
            .collect()
    }

    #[test]
    fn expected_lists_tensors_in_layer_order() {
        assert_eq!(
            expected(&cnn1d()).unwrap(),
            shape_list(&[
                ("c0.weight", &[4, 2, 3]),
                ("c0.bias", &[4]),
                ("bn0.weight", &[4]),
                ("bn0.bias", &[4]),
                ("bn0.running_mean", &[4]),
                ("bn0.running_var", &[4]),
                ("fc.weight", &[2, 32]),
                ("fc.bias", &[2]),
            ])
        );
    }

    #[test]
    fn expected_omits_disabled_bias() {
        assert_eq!(
            expected(&cnn2d()).unwrap(),
            shape_list(&[
                ("c0.weight", &[4, 1, 3, 3]),
                ("c0.bias", &[4]),
                ("c1.weight", &[4, 4, 3, 3]),
                ("fc.weight", &[3, 36]),
                ("fc.bias", &[3]),
            ])
        );
    }

    #[test]
    fn expected_conv_transpose_weight_is_in_out_k_k() {
        let list = expected(&autoencoder()).unwrap();
        assert_eq!(
            list[list.len() - 2..],
            shape_list(&[("d0.weight", &[4, 1, 3, 3]), ("d0.bias", &[1])])
        );
    }

    #[test]
    fn check_accepts_initialized_weights() {
        let model = cnn2d();
        Weights::init(&model, 1).unwrap().check(&model).unwrap();
    }

    #[test]
    fn check_names_missing_extra_and_misshapen_tensors() {
        let model = cnn1d();
        let mut weights = Weights::init(&model, 1).unwrap();
        weights.tensors.remove("c0.bias");
        weights.insert("fc.weight", Tensor::zeros(vec![2, 31]));
        weights.insert("old.weight", Tensor::zeros(vec![1]));
        assert_eq!(
            weights.check(&model).unwrap_err().to_string(),
            "the weights do not match the model: `c0.bias` [4] is missing (layer 0 `c0`); `fc.weight` is [2, 31], \
             expected [2, 32] (layer 5 `fc`); `old.weight` is not used by any layer"
        );
    }

    #[test]
    fn check_names_tensor_with_wrong_value_count() {
        let model = cnn1d();
        let mut weights = Weights::init(&model, 1).unwrap();
        weights.insert("fc.bias", Tensor::new(vec![2], vec![0.0]));
        assert_eq!(
            weights.check(&model).unwrap_err().to_string(),
            "the weights do not match the model: `fc.bias` holds 1 values, but its shape [2] needs 2"
        );
    }

    #[test]
    fn safetensors_round_trip_keeps_every_value() {
        let weights = Weights::init(&cnn1d(), 7).unwrap();
        let bytes = weights.to_safetensors().unwrap();
        assert_eq!(Weights::from_safetensors(&bytes).unwrap(), weights);
    }

    #[test]
    fn safetensors_bytes_do_not_depend_on_insertion_order() {
        let mut forward = Weights::default();
        let mut backward = Weights::default();
        let tensors = [
            ("a.weight", Tensor::new(vec![2], vec![1.0, -2.5])),
            ("b.bias", Tensor::new(vec![1], vec![0.25])),
            ("c.weight", Tensor::new(vec![1, 2], vec![3.0, f32::MIN_POSITIVE])),
        ];
        for (name, tensor) in tensors.iter().cloned() {
            forward.insert(name, tensor);
        }
        for (name, tensor) in tensors.iter().rev().cloned() {
            backward.insert(name, tensor);
        }
        assert_eq!(forward.to_safetensors().unwrap(), backward.to_safetensors().unwrap());
        assert_eq!(forward.to_safetensors().unwrap(), forward.to_safetensors().unwrap());
    }

    #[test]
    fn from_safetensors_rejects_other_dtypes() {
        let data = [0u8; 4];
        let view = TensorView::new(Dtype::F16, vec![2], &data).unwrap();
        let bytes = safetensors::serialize([("x.weight", view)], None).unwrap();
        assert_eq!(
            Weights::from_safetensors(&bytes).unwrap_err().to_string(),
            "tensor `x.weight` is F16, but kflow weights are F32; convert the file (e.g. `tensor.float()` in PyTorch)"
        );
    }

    #[test]
    fn from_safetensors_rejects_truncated_file() {
        let bytes = Weights::init(&cnn1d(), 7).unwrap().to_safetensors().unwrap();
        let error = Weights::from_safetensors(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(error, ModelError::Safetensors(_)), "{error}");
    }

    #[test]
    fn to_safetensors_rejects_tensor_with_wrong_value_count() {
        let mut weights = Weights::default();
        weights.insert("x.weight", Tensor::new(vec![2, 2], vec![1.0; 3]));
        assert_eq!(
            weights.to_safetensors().unwrap_err().to_string(),
            "tensor `x.weight` holds 3 values, but its shape [2, 2] needs 4"
        );
    }
}
