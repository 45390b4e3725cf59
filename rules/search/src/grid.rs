//! Grid search: every genome of a small space, in a fixed order. Point `i`
//! of the grid is decoded from `i` as a mixed-radix number over the genes,
//! so nothing is enumerated to reach it and a search replays exactly.

use crate::Genome;
use crate::genome::{AutoencoderGenome, BlockChoices, CnnBlock, CnnGenome, ForecasterGenome, PlainBlock};
use crate::space::{CnnSpace, Range, Space};

/// Takes digits off an index, least significant gene first.
struct Digits(u128);

impl Digits {
    fn take<T: Copy>(&mut self, values: &[T]) -> T {
        let n = values.len().max(1) as u128;
        let i = (self.0 % n) as usize;
        self.0 /= n;
        values[i.min(values.len() - 1)]
    }

    /// A variable-length list: `count` in `range`, each item one of
    /// `per_item` combinations, decoded by `item`.
    fn list<T>(&mut self, range: Range, per_item: u128, mut item: impl FnMut(&mut Digits) -> T) -> Vec<T> {
        let total = lists(range, per_item).max(1);
        let mut rest = self.0 % total;
        self.0 /= total;
        let mut n = range.min;
        loop {
            let here = per_item.saturating_pow(n as u32);
            if n == range.max || rest < here {
                let mut own = Digits(rest);
                return (0..n).map(|_| item(&mut own)).collect();
            }
            rest -= here;
            n += 1;
        }
    }
}

/// Σ_{n ∈ range} per_item^n, saturating.
fn lists(range: Range, per_item: u128) -> u128 {
    (range.min..=range.max).fold(0u128, |sum, n| sum.saturating_add(per_item.saturating_pow(n as u32)))
}

fn len<T>(v: &[T]) -> u128 {
    v.len() as u128
}

fn cnn_block(s: &CnnSpace) -> u128 {
    len(&s.filters) * len(&s.kernel) * len(&s.padding) * len(&s.pool) * len(&s.activation) * len(&s.batchnorm)
}

impl BlockChoices<'_> {
    fn combinations(&self) -> u128 {
        len(self.filters) * len(self.kernel) * len(self.activation) * len(self.batchnorm)
    }

    fn decode(&self, d: &mut Digits) -> PlainBlock {
        PlainBlock {
            filters: d.take(self.filters),
            kernel: d.take(self.kernel),
            activation: d.take(self.activation),
            batchnorm: d.take(self.batchnorm),
        }
    }
}

/// How many points the grid of `space` has (saturating).
pub fn size(space: &Space) -> u128 {
    match space {
        Space::Cnn(s) => len(&s.conv)
            .saturating_mul(lists(s.blocks, cnn_block(s)))
            .saturating_mul(lists(s.linear_layers, len(&s.linear_units))),
        Space::Autoencoder(s) => lists(s.blocks, s.choices().combinations()).saturating_mul(len(&s.bottleneck)),
        Space::Forecaster(s) => lists(s.blocks, s.choices().combinations())
            .saturating_mul(len(&s.out_kernel))
            .saturating_mul(len(&s.predict)),
    }
}

/// The total size of the grids of `spaces`, searched one after another.
pub fn total_size(spaces: &[Space]) -> u128 {
    spaces.iter().fold(0u128, |sum, s| sum.saturating_add(size(s)))
}

/// Point `index` of the grids of `spaces` (one after another), made valid
/// for `input` as sampling would; `None` past the end. Two points may give
/// the same genome once fitted to the input.
pub fn point(spaces: &[Space], input: &[usize], index: u128) -> Option<Genome> {
    let mut i = index;
    for space in spaces {
        let n = size(space);
        if i < n {
            return Some(decode(space, input, i));
        }
        i -= n;
    }
    None
}

fn decode(space: &Space, input: &[usize], index: u128) -> Genome {
    let mut d = Digits(index);
    match space {
        Space::Cnn(s) => {
            let conv = d.take(&s.conv);
            let blocks = d.list(s.blocks, cnn_block(s), |d| CnnBlock {
                filters: d.take(&s.filters),
                kernel: d.take(&s.kernel),
                padding: d.take(&s.padding),
                pool: d.take(&s.pool),
                activation: d.take(&s.activation),
                batchnorm: d.take(&s.batchnorm),
            });
            let linear = d.list(s.linear_layers, len(&s.linear_units), |d| d.take(&s.linear_units));
            CnnGenome::fitted(
                CnnGenome {
                    conv,
                    blocks,
                    linear,
                    classes: s.classes,
                },
                input,
            )
        }
        Space::Autoencoder(s) => {
            let choices = s.choices();
            let blocks = d.list(s.blocks, choices.combinations(), |d| choices.decode(d));
            Genome::Autoencoder(AutoencoderGenome {
                blocks,
                bottleneck: d.take(&s.bottleneck),
            })
        }
        Space::Forecaster(s) => {
            let choices = s.choices();
            let blocks = d.list(s.blocks, choices.combinations(), |d| choices.decode(d));
            let genome = ForecasterGenome {
                blocks,
                out_kernel: d.take(&s.out_kernel),
                predict: d.take(&s.predict),
                from_channel: 0,
            };
            ForecasterGenome::fitted(genome, s, input)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::tests::{autoencoder, cnn, forecaster};
    use std::collections::HashSet;

    const INPUT: [usize; 2] = [17, 16];

    fn tiny_cnn() -> Space {
        let mut s = cnn();
        s.blocks = Range { min: 1, max: 2 };
        s.conv = vec![crate::space::ConvKind::Conv1d];
        s.filters = vec![8, 16];
        s.kernel = vec![3];
        s.padding = vec![1];
        s.pool = vec![crate::space::Pool::None, crate::space::Pool::Max];
        s.activation = vec![crate::space::Activation::Relu];
        s.batchnorm = vec![false];
        s.linear_layers = Range { min: 0, max: 1 };
        s.linear_units = vec![16];
        Space::Cnn(s)
    }

    #[test]
    fn a_grid_visits_every_combination_once() {
        let space = tiny_cnn();
        // conv 1 × (4 + 16 block lists) × (1 + 1 linear lists)
        assert_eq!(size(&space), 40);
        let points: Vec<Genome> = (0..40)
            .map(|i| point(std::slice::from_ref(&space), &INPUT, i).unwrap())
            .collect();
        let distinct: HashSet<&Genome> = points.iter().collect();
        assert_eq!(distinct.len(), 40);
        assert!(point(&[space], &INPUT, 40).is_none());
    }

    #[test]
    fn grids_of_several_spaces_follow_one_another() {
        let spaces = [tiny_cnn(), Space::Forecaster(forecaster())];
        let total = total_size(&spaces);
        assert_eq!(total, 40 + size(&spaces[1]));
        assert!(matches!(point(&spaces, &INPUT, 39), Some(Genome::Cnn(_))));
        assert!(matches!(point(&spaces, &INPUT, 40), Some(Genome::Forecaster(_))));
        assert!(point(&spaces, &INPUT, total).is_none());
        assert!(size(&Space::Autoencoder(autoencoder())) > 0);
    }

    #[test]
    fn every_grid_point_becomes_a_valid_model() {
        let spaces = [tiny_cnn(), Space::Forecaster(forecaster())];
        for i in 0..total_size(&spaces) {
            let genome = point(&spaces, &INPUT, i).unwrap();
            let model = genome.to_model("g", &INPUT);
            kflow_model::infer_shapes(&model).unwrap_or_else(|e| panic!("point {i}: {e}"));
        }
    }
}
