//! Training state between epochs, as one safetensors artifact.
//!
//! Layout: the model's tensors under their own names, AdamW's moments under
//! `adam.m.<name>` and `adam.v.<name>`, and `step`/`epochs_done` in the
//! header's `__metadata__`. The writer is ours rather than
//! `safetensors::serialize`, because that one writes its metadata map in
//! `HashMap` order, which differs between runs; ours writes everything in
//! name order so that equal checkpoints are equal bytes. Reading goes
//! through the `safetensors` crate, which validates the header and offsets.

use std::collections::{BTreeMap, HashMap};

use kflow_model::{Tensor, Weights};
use safetensors::{Dtype, SafeTensors};

use crate::TrainError;

/// The `format` value in a checkpoint's metadata.
pub const CHECKPOINT_FORMAT: &str = "kflow-checkpoint/1";

const FIRST_MOMENT: &str = "adam.m.";
const SECOND_MOMENT: &str = "adam.v.";

/// A model's weights plus AdamW's state: everything the next epoch needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub weights: Weights,
    /// AdamW updates done so far (its bias correction depends on it).
    pub step: u64,
    /// AdamW's running mean of the gradients, per trainable tensor.
    pub first_moment: Weights,
    /// AdamW's running mean of the squared gradients, per trainable tensor.
    pub second_moment: Weights,
    pub epochs_done: u32,
}

/// BatchNorm's running statistics are updated from batch statistics, not by
/// the optimizer; every other tensor in `weights.rs`'s table is trained.
pub(crate) fn is_trainable(name: &str) -> bool {
    !(name.ends_with(".running_mean") || name.ends_with(".running_var"))
}

impl Checkpoint {
    /// The state before the first epoch: zero moments, step 0.
    pub fn fresh(weights: Weights) -> Checkpoint {
        let zeros = |weights: &Weights| Weights {
            tensors: weights
                .tensors
                .iter()
                .filter(|(name, _)| is_trainable(name))
                .map(|(name, t)| (name.clone(), Tensor::zeros(t.shape.clone())))
                .collect(),
        };
        Checkpoint {
            first_moment: zeros(&weights),
            second_moment: zeros(&weights),
            weights,
            step: 0,
            epochs_done: 0,
        }
    }

    /// The checkpoint as safetensors bytes; equal checkpoints give equal bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, TrainError> {
        let mut entries: BTreeMap<String, &Tensor> = BTreeMap::new();
        for (name, tensor) in &self.weights.tensors {
            if name.starts_with(FIRST_MOMENT) || name.starts_with(SECOND_MOMENT) || name == "__metadata__" {
                return Err(TrainError::Checkpoint(format!(
                    "tensor name `{name}` collides with the checkpoint's own names; rename the layer"
                )));
            }
            entries.insert(name.clone(), tensor);
        }
        for (prefix, moments) in [(FIRST_MOMENT, &self.first_moment), (SECOND_MOMENT, &self.second_moment)] {
            for (name, tensor) in &moments.tensors {
                entries.insert(format!("{prefix}{name}"), tensor);
            }
        }
        let metadata = [
            ("epochs_done", self.epochs_done.to_string()),
            ("format", CHECKPOINT_FORMAT.to_string()),
            ("step", self.step.to_string()),
        ];
        write_safetensors(&metadata, &entries)
    }

    pub fn from_safetensors(bytes: &[u8]) -> Result<Checkpoint, TrainError> {
        let bad = |message: String| TrainError::Checkpoint(message);
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let empty = HashMap::new();
        let metadata = header.metadata().as_ref().unwrap_or(&empty);
        let field = |key: &str| {
            metadata
                .get(key)
                .ok_or_else(|| bad(format!("the header metadata has no `{key}`; not a kflow checkpoint")))
        };
        if field("format")? != CHECKPOINT_FORMAT {
            return Err(bad(format!(
                "format `{}`, expected `{CHECKPOINT_FORMAT}`",
                field("format")?
            )));
        }
        let step = field("step")?.parse::<u64>().map_err(|e| bad(format!("`step`: {e}")))?;
        let epochs_done = field("epochs_done")?
            .parse::<u32>()
            .map_err(|e| bad(format!("`epochs_done`: {e}")))?;

        let file = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let mut checkpoint = Checkpoint {
            weights: Weights::default(),
            step,
            first_moment: Weights::default(),
            second_moment: Weights::default(),
            epochs_done,
        };
        for (name, view) in file.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!("tensor `{name}` is {:?}, expected F32", view.dtype())));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let tensor = Tensor::new(view.shape().to_vec(), data);
            if let Some(base) = name.strip_prefix(FIRST_MOMENT) {
                checkpoint.first_moment.insert(base, tensor);
            } else if let Some(base) = name.strip_prefix(SECOND_MOMENT) {
                checkpoint.second_moment.insert(base, tensor);
            } else {
                checkpoint.weights.insert(name, tensor);
            }
        }
        for (kind, moments) in [
            ("first", &checkpoint.first_moment),
            ("second", &checkpoint.second_moment),
        ] {
            for (name, moment) in &moments.tensors {
                match checkpoint.weights.get(name) {
                    Some(w) if w.shape == moment.shape => {}
                    Some(w) => {
                        return Err(bad(format!(
                            "the {kind} moment of `{name}` has shape {:?}, the tensor {:?}",
                            moment.shape, w.shape
                        )));
                    }
                    None => {
                        return Err(bad(format!(
                            "a {kind} moment for `{name}`, which is not in the weights"
                        )));
                    }
                }
            }
        }
        Ok(checkpoint)
    }
}

/// Writes F32 tensors in the order given, after a header whose keys are in
/// that order too (serde_json's map order would depend on its features).
fn write_safetensors(metadata: &[(&str, String)], entries: &BTreeMap<String, &Tensor>) -> Result<Vec<u8>, TrainError> {
    let json = |s: &str| serde_json::to_string(s).map_err(|e| TrainError::Checkpoint(e.to_string()));
    let mut header = String::from("{\"__metadata__\":{");
    for (i, (key, value)) in metadata.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!("{}:{}", json(key)?, json(value)?));
    }
    header.push('}');
    let mut offset = 0usize;
    for (name, tensor) in entries {
        let count: usize = tensor.shape.iter().product();
        if count != tensor.data.len() {
            return Err(TrainError::Checkpoint(format!(
                "tensor `{name}` has shape {:?} but {} values",
                tensor.shape,
                tensor.data.len()
            )));
        }
        let shape: Vec<String> = tensor.shape.iter().map(usize::to_string).collect();
        let end = offset + 4 * count;
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json(name)?,
            shape.join(",")
        ));
        offset = end;
    }
    header.push('}');
    // safetensors pads the header with spaces so that the data starts 8-byte aligned.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for tensor in entries.values() {
        for value in &tensor.data {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut weights = Weights::default();
        weights.insert(
            "c0.weight",
            Tensor::new(vec![2, 1, 3], vec![1.0, -2.0, 3.5, 0.25, 1e-7, -0.0]),
        );
        weights.insert("c0.bias", Tensor::new(vec![2], vec![0.5, -0.5]));
        weights.insert("bn.running_mean", Tensor::new(vec![2], vec![0.1, 0.2]));
        weights.insert("bn.running_var", Tensor::new(vec![2], vec![1.1, 1.2]));
        let mut c = Checkpoint::fresh(weights);
        c.step = 17;
        c.epochs_done = 3;
        c.first_moment.insert("c0.bias", Tensor::new(vec![2], vec![0.01, 0.02]));
        c
    }

    #[test]
    fn fresh_has_zero_moments_for_trainable_tensors_only() {
        let c = sample();
        assert!(c.first_moment.get("bn.running_mean").is_none());
        assert_eq!(c.second_moment.get("c0.weight"), Some(&Tensor::zeros(vec![2, 1, 3])));
    }

    #[test]
    fn checkpoint_round_trips_through_safetensors() {
        let c = sample();
        let bytes = c.to_safetensors().unwrap();
        let back = Checkpoint::from_safetensors(&bytes).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.to_safetensors().unwrap(), bytes);
    }

    #[test]
    fn checkpoint_bytes_are_readable_by_the_safetensors_crate() {
        let bytes = sample().to_safetensors().unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("adam.m.c0.bias").unwrap().shape(), &[2]);
        assert_eq!(file.len(), 4 + 2 * 2);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Checkpoint::from_safetensors(b"").is_err());
        assert!(Checkpoint::from_safetensors(&[255; 64]).is_err());
        let mut bytes = sample().to_safetensors().unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(Checkpoint::from_safetensors(&bytes).is_err());
    }
}
