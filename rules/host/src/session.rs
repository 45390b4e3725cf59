//! One ONNX model loaded into ONNX Runtime: batched inference, and the
//! latency of single-sample inference.

use std::sync::Mutex;
use std::time::Instant;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::HostError;
use crate::runtime::environment;

pub struct OnnxModel {
    /// ort runs need `&mut`; evaluation is sequential anyway.
    session: Mutex<Session>,
    /// Per-sample input shape (the ONNX input is `[N, ...sample]`).
    sample: Vec<usize>,
}

fn ort_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> HostError + '_ {
    move |e| HostError::Inference(format!("{what}: {e}"))
}

impl OnnxModel {
    /// Loads a model. One intra-op thread: latency is measured per sample
    /// as a microcontroller would run it (one core), and evaluations run
    /// beside other actions on the build's own threads.
    pub fn load(onnx: &[u8], sample: &[usize]) -> Result<OnnxModel, HostError> {
        let env = environment()?;
        let session = Session::builder(env)
            .map_err(ort_err("cannot configure an ONNX Runtime session"))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(ort_err("cannot set the optimization level"))?
            .with_intra_threads(1)
            .map_err(ort_err("cannot set the thread count"))?
            .commit_from_memory(onnx)
            .map_err(ort_err("ONNX Runtime rejected the model"))?;
        Ok(OnnxModel {
            session: Mutex::new(session),
            sample: sample.to_vec(),
        })
    }

    fn sample_len(&self) -> usize {
        self.sample.iter().product()
    }

    /// Runs `n` samples (`x` holds `n` per-sample tensors back to back) and
    /// returns the output, `n` rows of equal length.
    pub fn run(&self, x: &[f32], n: usize) -> Result<Vec<f32>, HostError> {
        if x.len() != n * self.sample_len() {
            return Err(HostError::Inference(format!(
                "{} values are not {n} samples of shape {:?}",
                x.len(),
                self.sample
            )));
        }
        let shape: Vec<usize> = std::iter::once(n).chain(self.sample.iter().copied()).collect();
        let input = TensorRef::from_array_view((shape, x)).map_err(ort_err("cannot build the input tensor"))?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs!["x" => input])
            .map_err(ort_err("inference failed"))?;
        let (_, y) = outputs["y"]
            .try_extract_tensor::<f32>()
            .map_err(ort_err("the output is not a float tensor"))?;
        Ok(y.to_vec())
    }

    /// Runs all `n` samples in batches of `batch`.
    pub fn run_batched(&self, x: &[f32], n: usize, batch: usize) -> Result<Vec<f32>, HostError> {
        let per = self.sample_len();
        let mut out = Vec::new();
        for start in (0..n).step_by(batch.max(1)) {
            let end = (start + batch.max(1)).min(n);
            out.extend(self.run(&x[start * per..end * per], end - start)?);
        }
        Ok(out)
    }

    /// Microseconds of single-sample inference for each of the first
    /// `count` samples (after a few warm-up runs, which are not counted).
    pub fn latencies_us(&self, x: &[f32], n: usize, count: usize) -> Result<Vec<f64>, HostError> {
        let per = self.sample_len();
        let count = count.min(n);
        for i in 0..count.min(10) {
            self.run(&x[i * per..(i + 1) * per], 1)?;
        }
        let mut times = Vec::with_capacity(count);
        for i in 0..count {
            let sample = &x[i * per..(i + 1) * per];
            let started = Instant::now();
            self.run(sample, 1)?;
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
        Ok(times)
    }
}
