//! Tensor shapes through a model: what each operation makes of its input.
//!
//! Sizes are computed in `u128`, so that a hostile document (a padding of
//! 2^63) gives an error instead of an overflow.

use crate::error::LayerProblem;
use crate::ir::Op;

/// Where a layer reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The model input.
    Input,
    /// The output of the layer with this index (always an earlier one).
    Layer(usize),
}

/// One layer's shapes, per sample (no batch dimension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerShapes {
    /// What the layer reads, resolved from its `inputs`, in order.
    pub sources: Vec<Source>,
    /// The shapes of `sources`, in the same order.
    pub inputs: Vec<Vec<usize>>,
    pub output: Vec<usize>,
}

impl LayerShapes {
    /// The shape a single-input operation transforms (for `add`, every
    /// input has it).
    pub fn input(&self) -> &[usize] {
        self.inputs.first().map_or(&[], Vec::as_slice)
    }
}

/// The shapes of a valid model, from [`crate::infer_shapes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shapes {
    /// The model input, as declared.
    pub input: Vec<usize>,
    /// Per layer, by index.
    pub layers: Vec<LayerShapes>,
    /// The model output: the last layer's output.
    pub output: Vec<usize>,
}

/// The element count of a shape, if it fits in `usize`.
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The output shape of `op` applied to `input`; the caller has checked the
/// number of inputs and that `add`'s inputs agree.
pub(crate) fn output_shape(op: &Op, input: &[usize]) -> Result<Vec<usize>, LayerProblem> {
    let output = match *op {
        Op::Conv1d {
            out_channels,
            kernel,
            padding,
            ..
        } => {
            nonzero(&[("out_channels", out_channels), ("kernel", kernel)])?;
            padding_below(padding, kernel)?;
            let [_, length] = rank2(input)?;
            let padded = [u128_of(length) + 2 * u128_of(padding)];
            let [length] = sliding(kernel, &padded, 1, true)?;
            vec![out_channels, length]
        }
        Op::Conv2d {
            out_channels,
            kernel,
            padding,
            ..
        } => {
            nonzero(&[("out_channels", out_channels), ("kernel", kernel)])?;
            padding_below(padding, kernel)?;
            let [_, height, width] = rank3(input, "a [C, H, W]")?;
            let padded = [height, width].map(|d| u128_of(d) + 2 * u128_of(padding));
            let [h, w] = sliding(kernel, &padded, 1, true)?;
            vec![out_channels, h, w]
        }
        Op::ConvTranspose2d {
            out_channels,
            kernel,
            padding,
            stride,
            output_padding,
            ..
        } => {
            nonzero(&[("out_channels", out_channels), ("kernel", kernel), ("stride", stride)])?;
            padding_below(padding, kernel)?;
            // PyTorch rejects larger output padding (it would add rows no
            // input position reaches), and the candle and ONNX Runtime
            // forward passes must agree with it.
            if output_padding >= stride {
                return Err(LayerProblem::OutputPadding { output_padding, stride });
            }
            let [_, height, width] = rank3(input, "a [C, H, W]")?;
            let mut out = vec![out_channels];
            for size in [height, width] {
                let grown =
                    u128_of(size).saturating_sub(1) * u128_of(stride) + u128_of(kernel) + u128_of(output_padding);
                let cut = 2 * u128_of(padding);
                if grown <= cut {
                    return Err(LayerProblem::EmptyTransposeOutput {
                        size,
                        stride,
                        padding,
                        kernel,
                        output_padding,
                    });
                }
                out.push(fits(grown - cut)?);
            }
            out
        }
        Op::Linear { out_features, .. } => {
            nonzero(&[("out_features", out_features)])?;
            if input.len() != 1 {
                return Err(LayerProblem::InputRank {
                    expected: "a flat [F]",
                    found: input.to_vec(),
                    flatten_hint: true,
                });
            }
            vec![out_features]
        }
        Op::Flatten => {
            at_least_rank1(input)?;
            vec![numel(input).ok_or(LayerProblem::TooLarge { what: "output" })?]
        }
        Op::BatchNorm { eps, momentum } => {
            if !(eps.is_finite() && eps > 0.0) {
                return Err(LayerProblem::Eps { eps });
            }
            if !(0.0..=1.0).contains(&momentum) {
                return Err(LayerProblem::Momentum { momentum });
            }
            at_least_rank1(input)?;
            input.to_vec()
        }
        Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
            nonzero(&[("kernel", kernel), ("stride", stride)])?;
            match *input {
                [channels, length] => {
                    let [l] = sliding(kernel, &[u128_of(length)], stride, false)?;
                    vec![channels, l]
                }
                [channels, height, width] => {
                    let [h, w] = sliding(kernel, &[u128_of(height), u128_of(width)], stride, false)?;
                    vec![channels, h, w]
                }
                _ => {
                    return Err(LayerProblem::InputRank {
                        expected: "a [C, L] or [C, H, W]",
                        found: input.to_vec(),
                        flatten_hint: false,
                    });
                }
            }
        }
        Op::Add | Op::Relu | Op::Abs => input.to_vec(),
    };
    if numel(&output).is_none() {
        return Err(LayerProblem::TooLarge { what: "output" });
    }
    Ok(output)
}

fn nonzero(fields: &[(&'static str, usize)]) -> Result<(), LayerProblem> {
    match fields.iter().find(|(_, value)| *value == 0) {
        Some(&(field, _)) => Err(LayerProblem::Zero { field }),
        None => Ok(()),
    }
}

/// A padding as wide as the kernel would let some outputs see nothing but
/// zeros; it is also what PyTorch's transposed convolution cannot express.
fn padding_below(padding: usize, kernel: usize) -> Result<(), LayerProblem> {
    if padding >= kernel {
        return Err(LayerProblem::Padding { padding, kernel });
    }
    Ok(())
}

fn rank2(input: &[usize]) -> Result<[usize; 2], LayerProblem> {
    <[usize; 2]>::try_from(input).map_err(|_| LayerProblem::InputRank {
        expected: "a [C, L]",
        found: input.to_vec(),
        flatten_hint: false,
    })
}

fn rank3(input: &[usize], expected: &'static str) -> Result<[usize; 3], LayerProblem> {
    <[usize; 3]>::try_from(input).map_err(|_| LayerProblem::InputRank {
        expected,
        found: input.to_vec(),
        flatten_hint: false,
    })
}

fn at_least_rank1(input: &[usize]) -> Result<(), LayerProblem> {
    if input.is_empty() {
        return Err(LayerProblem::InputRank {
            expected: "a [C, ...]",
            found: vec![],
            flatten_hint: false,
        });
    }
    Ok(())
}

/// Output sizes of a window of `kernel` sliding by `stride` over `sizes`
/// (already padded): `⌊(size − kernel) / stride⌋ + 1` each. The error names
/// every size, since the kernel is square.
fn sliding<const N: usize>(
    kernel: usize,
    sizes: &[u128; N],
    stride: usize,
    padded: bool,
) -> Result<[usize; N], LayerProblem> {
    let kernel_wide = u128_of(kernel);
    if sizes.iter().any(|&size| size < kernel_wide) {
        return Err(LayerProblem::KernelTooLarge {
            kernel,
            size: sizes
                .iter()
                .map(|&s| usize::try_from(s).unwrap_or(usize::MAX))
                .collect(),
            padded,
        });
    }
    let mut out = [0; N];
    for (o, &size) in out.iter_mut().zip(sizes) {
        *o = fits((size - kernel_wide) / u128_of(stride) + 1)?;
    }
    Ok(out)
}

fn u128_of(n: usize) -> u128 {
    n as u128
}

fn fits(n: u128) -> Result<usize, LayerProblem> {
    usize::try_from(n).map_err(|_| LayerProblem::TooLarge { what: "output" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv1d(kernel: usize, padding: usize) -> Op {
        Op::Conv1d {
            out_channels: 4,
            kernel,
            padding,
            bias: true,
        }
    }

    #[test]
    fn conv1d_keeps_length_with_half_kernel_padding() {
        assert_eq!(output_shape(&conv1d(3, 1), &[2, 16]).unwrap(), vec![4, 16]);
        assert_eq!(output_shape(&conv1d(5, 0), &[2, 16]).unwrap(), vec![4, 12]);
    }

    #[test]
    fn pool_floors_partial_windows() {
        let pool = Op::MaxPool { kernel: 3, stride: 2 };
        assert_eq!(output_shape(&pool, &[4, 10]).unwrap(), vec![4, 4]);
        assert_eq!(output_shape(&pool, &[4, 7, 8]).unwrap(), vec![4, 3, 3]);
    }

    #[test]
    fn conv_transpose_grows_by_stride() {
        let op = Op::ConvTranspose2d {
            out_channels: 1,
            kernel: 3,
            padding: 1,
            stride: 2,
            output_padding: 1,
            bias: true,
        };
        assert_eq!(output_shape(&op, &[4, 4, 5]).unwrap(), vec![1, 8, 10]);
    }

    #[test]
    fn huge_padding_is_an_error_not_an_overflow() {
        let op = Op::Conv1d {
            out_channels: 1,
            kernel: usize::MAX,
            padding: usize::MAX - 1,
            bias: false,
        };
        assert_eq!(
            output_shape(&op, &[1, usize::MAX]),
            Err(LayerProblem::TooLarge { what: "output" })
        );
    }
}
