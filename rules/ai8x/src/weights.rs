//! What the checker and allocator need to know about a network's weights:
//! shapes, and value statistics when the values are at hand (SPEC.md §9:
//! `<layer>.weight` / `<layer>.bias` int8 tensors in PyTorch layout).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Minimum, maximum and zero count of an int8 tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueStats {
    pub min: i8,
    pub max: i8,
    pub zeros: usize,
}

impl ValueStats {
    /// `None` for an empty tensor.
    pub fn of(values: &[i8]) -> Option<ValueStats> {
        let min = *values.iter().min()?;
        let max = *values.iter().max()?;
        let zeros = values.iter().filter(|v| **v == 0).count();
        Some(ValueStats { min, max, zeros })
    }

    /// Whether every value is zero (an all-zero bias is dropped, §2.10).
    pub fn all_zero(&self) -> bool {
        self.min == 0 && self.max == 0
    }
}

/// The bias of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BiasInfo {
    pub len: usize,
    /// `None` when only the shape is known.
    pub stats: Option<ValueStats>,
}

/// The weight (and bias) of one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerWeights {
    /// PyTorch layout: `[out, in, k]`, `[out, in, kh, kw]`, `[out, in]`;
    /// ConvTranspose2d `[in, out, kh, kw]`.
    pub shape: Vec<usize>,
    /// `None` when only the shape is known.
    pub stats: Option<ValueStats>,
    pub bias: Option<BiasInfo>,
}

impl LayerWeights {
    /// Shapes only: value-range checks are skipped, a bias counts as used.
    pub fn shape(shape: &[usize], bias_len: Option<usize>) -> LayerWeights {
        LayerWeights {
            shape: shape.to_vec(),
            stats: None,
            bias: bias_len.map(|len| BiasInfo { len, stats: None }),
        }
    }

    /// Shapes and values.
    pub fn values(shape: &[usize], weights: &[i8], bias: Option<&[i8]>) -> LayerWeights {
        LayerWeights {
            shape: shape.to_vec(),
            stats: ValueStats::of(weights),
            bias: bias.map(|b| BiasInfo {
                len: b.len(),
                stats: ValueStats::of(b),
            }),
        }
    }

    /// Whether the bias is present and not all zero (the izer ignores an
    /// all-zero bias, so it takes no bias memory).
    pub fn has_bias(&self) -> bool {
        self.bias
            .is_some_and(|b| b.len > 0 && !b.stats.is_some_and(|s| s.all_zero()))
    }
}

/// The weights of a network, by 0-based layer index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub layers: BTreeMap<usize, LayerWeights>,
}

/// A weights file that does not follow SPEC.md §9.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("not a safetensors file: {0}")]
    Format(String),
    #[error("tensor `{0}`: expected `<layer>.weight` or `<layer>.bias`")]
    Name(String),
    #[error("tensor `{name}`: dtype {dtype}, expected int8")]
    Dtype { name: String, dtype: String },
    #[error("tensor `{0}`: a bias without a weight")]
    BiasWithoutWeight(String),
}

/// One layer's integer parameters as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Int8Layer {
    pub shape: Vec<usize>,
    pub weight: Vec<i8>,
    pub bias: Option<Vec<i8>>,
}

/// The values of a weights file (SPEC.md §9), by layer index.
pub fn int8_values(bytes: &[u8]) -> Result<BTreeMap<usize, Int8Layer>, WeightsError> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
    let mut weights: BTreeMap<usize, (Vec<usize>, Vec<i8>)> = BTreeMap::new();
    let mut biases: BTreeMap<usize, (String, Vec<i8>)> = BTreeMap::new();
    for (name, view) in file.tensors() {
        let (index, kind) = name
            .split_once('.')
            .and_then(|(i, kind)| Some((i.parse::<usize>().ok()?, kind)))
            .ok_or_else(|| WeightsError::Name(name.clone()))?;
        if view.dtype() != safetensors::Dtype::I8 {
            return Err(WeightsError::Dtype {
                dtype: format!("{:?}", view.dtype()),
                name,
            });
        }
        let values: Vec<i8> = view.data().iter().map(|b| *b as i8).collect();
        match kind {
            "weight" => {
                weights.insert(index, (view.shape().to_vec(), values));
            }
            "bias" => {
                biases.insert(index, (name.clone(), values));
            }
            _ => return Err(WeightsError::Name(name)),
        }
    }
    if let Some((_, (name, _))) = biases.iter().find(|(index, _)| !weights.contains_key(index)) {
        return Err(WeightsError::BiasWithoutWeight(name.clone()));
    }
    Ok(weights
        .into_iter()
        .map(|(index, (shape, weight))| {
            let bias = biases.remove(&index).map(|(_, b)| b);
            (index, Int8Layer { shape, weight, bias })
        })
        .collect())
}

impl Weights {
    /// Reads `<layer>.weight` / `<layer>.bias` int8 tensors (SPEC.md §9).
    pub fn from_safetensors(bytes: &[u8]) -> Result<Weights, WeightsError> {
        let mut out = Weights::default();
        for (index, v) in int8_values(bytes)? {
            out.insert(index, LayerWeights::values(&v.shape, &v.weight, v.bias.as_deref()));
        }
        Ok(out)
    }

    pub fn insert(&mut self, layer: usize, weights: LayerWeights) {
        self.layers.insert(layer, weights);
    }

    pub fn get(&self, layer: usize) -> Option<&LayerWeights> {
        self.layers.get(&layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
                ((*name).to_owned(), view)
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn reads_int8_weights_and_biases_by_layer_index() {
        let bytes = file(&[
            ("0.weight", safetensors::Dtype::I8, vec![2, 1], vec![0xff, 3]),
            ("0.bias", safetensors::Dtype::I8, vec![2], vec![0, 0]),
        ]);
        let w = Weights::from_safetensors(&bytes).unwrap();
        let layer = w.get(0).unwrap();
        assert_eq!(layer.shape, [2, 1]);
        assert_eq!(
            layer.stats,
            Some(ValueStats {
                min: -1,
                max: 3,
                zeros: 0
            })
        );
        assert!(!layer.has_bias(), "an all-zero bias is dropped");
    }

    #[test]
    fn rejects_float_tensors_and_stray_names() {
        let float = file(&[("0.weight", safetensors::Dtype::F32, vec![1], vec![0; 4])]);
        assert!(matches!(
            Weights::from_safetensors(&float),
            Err(WeightsError::Dtype { .. })
        ));
        let stray = file(&[("conv.weight", safetensors::Dtype::I8, vec![1], vec![0])]);
        assert_eq!(
            Weights::from_safetensors(&stray).unwrap_err().to_string(),
            "tensor `conv.weight`: expected `<layer>.weight` or `<layer>.bias`"
        );
    }
}
