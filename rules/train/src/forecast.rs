//! A forecaster's training loss: its outputs against the input rows they
//! predict (`kflow_model::Forecast`).

use candle_core::Tensor;
use kflow_model::Forecast;

use crate::TrainError;

/// The mean squared error of the predictions of a batch: `out` is
/// `[B, C − from, L_out]`, `x` the inputs `[B, C, L]`.
pub(crate) fn loss(f: &Forecast, out: &Tensor, x: &Tensor) -> Result<Tensor, TrainError> {
    let readings = x.narrow(1, f.from_channel, f.predicted_channels())?;
    let truth =
        (readings.narrow(2, f.first_row, f.output_length)? - readings.narrow(2, f.first_row - 1, f.output_length)?)?;
    Ok((out - truth)?.sqr()?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_batch_loss_is_the_mean_sample_error() {
        let f = Forecast::new(1, &[2, 5], &[1, 3]);
        let x = [0.0f32, 0.0, 0.0, 0.0, 0.0, 10.0, 11.0, 12.0, 13.0, 15.0];
        let out = [3.0f32, 1.0, 0.5];
        let xs = Tensor::from_slice(&x, (1, 2, 5), &Device::Cpu).unwrap();
        let os = Tensor::from_slice(&out, (1, 1, 3), &Device::Cpu).unwrap();
        let loss: f32 = loss(&f, &os, &xs).unwrap().to_scalar().unwrap();
        assert!((f64::from(loss) - f.error(&out, &x)).abs() < 1e-6);
    }
}
