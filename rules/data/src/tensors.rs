//! The dataset's artifacts: one tensor pair per split, and the metadata that says how they were made.

use serde::{Deserialize, Serialize};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::csv::NUM_CHANNELS;
use crate::generator::Segment;
use crate::{DataError, LabelRule};

/// One split: `x` is `[N, 17, W]` float32, channels first (a 1-D convolution's layout), row-major; `y` is `[N]`,
/// 0 (nominal) or 1 (anomalous).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    pub x: Vec<f32>,
    /// `[N, 17, W]`.
    pub shape: [usize; 3],
    pub y: Vec<u8>,
}

impl Split {
    pub(crate) fn with_capacity(windows: usize, length: usize) -> Self {
        Self {
            x: Vec::with_capacity(windows * NUM_CHANNELS * length),
            shape: [0, NUM_CHANNELS, length],
            y: Vec::with_capacity(windows),
        }
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// Window length W.
    pub fn length(&self) -> usize {
        self.shape[2]
    }

    /// The `[17, W]` values of window `i` (empty when out of range).
    pub fn window(&self, i: usize) -> &[f32] {
        let size = self.shape[1] * self.shape[2];
        self.x.get(i * size..(i + 1) * size).unwrap_or(&[])
    }

    /// Labels as booleans, for the metrics.
    pub fn labels(&self) -> Vec<bool> {
        self.y.iter().map(|&y| y > 0).collect()
    }

    /// The windows of one class (`anomalous` or nominal), in order.
    pub fn of_class(&self, anomalous: bool) -> Split {
        let size = self.shape[1] * self.shape[2];
        let keep: Vec<usize> = (0..self.len()).filter(|&i| (self.y[i] > 0) == anomalous).collect();
        Split {
            x: keep
                .iter()
                .flat_map(|&i| self.x[i * size..(i + 1) * size].iter().copied())
                .collect(),
            shape: [keep.len(), self.shape[1], self.shape[2]],
            y: vec![u8::from(anomalous); keep.len()],
        }
    }

    pub fn counts(&self) -> ClassCounts {
        let positive = self.y.iter().filter(|&&y| y > 0).count() as u64;
        ClassCounts {
            negative: self.y.len() as u64 - positive,
            positive,
        }
    }

    fn check(&self) -> Result<(), DataError> {
        let [n, c, w] = self.shape;
        if c != NUM_CHANNELS || self.x.len() != n * c * w || self.y.len() != n {
            return Err(DataError::Tensors(format!(
                "split of shape {:?} holds {} values and {} labels",
                self.shape,
                self.x.len(),
                self.y.len()
            )));
        }
        Ok(())
    }

    /// Safetensors with tensors `x` (F32, `[N, 17, W]`) and `y` (U8, `[N]`), no metadata: the bytes depend only on
    /// the values.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, DataError> {
        self.check()?;
        let x_bytes: Vec<u8> = self.x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let err = |e: safetensors::SafeTensorError| DataError::Tensors(e.to_string());
        let x = TensorView::new(Dtype::F32, self.shape.to_vec(), &x_bytes).map_err(err)?;
        let y = TensorView::new(Dtype::U8, vec![self.shape[0]], &self.y).map_err(err)?;
        safetensors::serialize([("x", x), ("y", y)], None).map_err(err)
    }

    /// Reads what [`Split::to_safetensors`] wrote, checking names, dtypes and shapes.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, DataError> {
        let err = |e: safetensors::SafeTensorError| DataError::Tensors(e.to_string());
        let tensors = SafeTensors::deserialize(bytes).map_err(err)?;
        let x = tensors.tensor("x").map_err(err)?;
        let y = tensors.tensor("y").map_err(err)?;
        if x.dtype() != Dtype::F32 || y.dtype() != Dtype::U8 {
            return Err(DataError::Tensors(format!(
                "expected x F32 and y U8, found x {:?} and y {:?}",
                x.dtype(),
                y.dtype()
            )));
        }
        let shape: [usize; 3] = x
            .shape()
            .try_into()
            .map_err(|_| DataError::Tensors(format!("x has shape {:?}, expected [N, 17, W]", x.shape())))?;
        if y.shape() != [shape[0]] {
            return Err(DataError::Tensors(format!(
                "y has shape {:?}, expected [{}]",
                y.shape(),
                shape[0]
            )));
        }
        let split = Self {
            x: x.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            shape,
            y: y.data().to_vec(),
        };
        split.check()?;
        Ok(split)
    }
}

/// Windows per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCounts {
    pub negative: u64,
    pub positive: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitCounts {
    pub train: ClassCounts,
    pub val: ClassCounts,
    pub test: ClassCounts,
}

/// `meta.json`: everything needed to interpret (and reproduce) the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetMeta {
    /// Where the rows came from ("csv:data.csv", ...).
    pub source: String,
    pub channels: Vec<String>,
    /// Window length W.
    pub window: usize,
    pub stride: usize,
    pub label_rule: LabelRule,
    pub scale: f32,
    /// Whether values are on the int8 input grid (`WindowParams::int8_grid`).
    #[serde(default)]
    pub int8_grid: bool,
    /// Per-channel training mean and std; inputs are `(x − mean) / (scale · std)`.
    pub mean: [f32; NUM_CHANNELS],
    pub std: [f32; NUM_CHANNELS],
    /// Split parameters.
    pub block: usize,
    pub fractions: [f64; 3],
    pub seed: u64,
    pub skip_rows: u64,
    pub max_rows: Option<u64>,
    /// Rows used (after `skip_rows`, up to `max_rows`) and how many were anomalous.
    pub rows: u64,
    pub anomalous_rows: u64,
    /// Windows formed, and how many were dropped at block borders.
    pub windows: u64,
    pub dropped_windows: u64,
    pub counts: SplitCounts,
    /// The generator's segments, when the rows were generated (filled in by the caller that generated them).
    pub anomaly_segments: Option<Vec<Segment>>,
}

impl DatasetMeta {
    /// Pretty JSON with a final newline; field order is fixed and floats print in shortest round-trip form, so the
    /// bytes are deterministic.
    pub fn to_json(&self) -> Result<String, DataError> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    pub fn from_json(text: &str) -> Result<Self, DataError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The normalization the tensors were made with.
    pub fn normalization(&self) -> crate::Normalization {
        crate::Normalization {
            mean: self.mean,
            std: self.std,
            scale: self.scale,
            int8_grid: self.int8_grid,
        }
    }
}

/// A built dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub train: Split,
    pub val: Split,
    pub test: Split,
    pub meta: DatasetMeta,
}

impl Dataset {
    pub fn split(&self, part: crate::Part) -> &Split {
        match part {
            crate::Part::Train => &self.train,
            crate::Part::Val => &self.val,
            crate::Part::Test => &self.test,
        }
    }
}
