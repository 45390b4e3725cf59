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

use std::collections::BTreeMap;

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
