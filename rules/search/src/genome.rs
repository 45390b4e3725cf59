//! Genomes: the choices that make one candidate of a space, and the network
//! they describe. Sampling and mutation keep a genome valid for its input
//! (no convolution or pooling shrinks a dimension to nothing; padding stays
//! below the kernel size), so every genome becomes a model.

use kflow_model::{FORMAT, Layer, Model, Op, Task};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::space::{Activation, AutoencoderSpace, CnnSpace, ConvKind, ForecasterSpace, Pool, Predict, Space};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Genome {
    Cnn(CnnGenome),
    Autoencoder(AutoencoderGenome),
    Forecaster(ForecasterGenome),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CnnGenome {
    pub conv: ConvKind,
    pub blocks: Vec<CnnBlock>,
    /// Hidden linear layers' widths, before the output layer.
    pub linear: Vec<usize>,
    pub classes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CnnBlock {
    pub filters: usize,
    pub kernel: usize,
    pub padding: usize,
    pub pool: Pool,
    pub activation: Activation,
    pub batchnorm: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AutoencoderGenome {
    /// Encoder blocks, input side first; the decoder mirrors them.
    pub blocks: Vec<PlainBlock>,
    pub bottleneck: usize,
}

/// A convolution with its activation and optional batch norm, and no
/// padding or pooling of its own to choose: the blocks of autoencoders and
/// forecasters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlainBlock {
    pub filters: usize,
    pub kernel: usize,
    pub activation: Activation,
    pub batchnorm: bool,
}

/// What a space lets a [`PlainBlock`] be.
pub(crate) struct BlockChoices<'a> {
    pub filters: &'a [usize],
    pub kernel: &'a [usize],
    pub activation: &'a [Activation],
    pub batchnorm: &'a [bool],
}

impl BlockChoices<'_> {
    fn sample(&self, rng: &mut impl Rng) -> PlainBlock {
        PlainBlock {
            filters: pick(rng, self.filters).unwrap_or(16),
            kernel: pick(rng, self.kernel).unwrap_or(3),
            activation: pick(rng, self.activation).unwrap_or(Activation::Relu),
            batchnorm: pick(rng, self.batchnorm).unwrap_or(false),
        }
    }

    /// One of the block's genes, re-drawn.
    fn mutate(&self, b: &mut PlainBlock, rng: &mut impl Rng) {
        match rng.random_range(0..4) {
            0 => b.filters = pick(rng, self.filters).unwrap_or(b.filters),
            1 => b.kernel = pick(rng, self.kernel).unwrap_or(b.kernel),
            2 => b.activation = pick(rng, self.activation).unwrap_or(b.activation),
            _ => b.batchnorm = pick(rng, self.batchnorm).unwrap_or(b.batchnorm),
        }
    }
}

impl AutoencoderSpace {
    pub(crate) fn choices(&self) -> BlockChoices<'_> {
        BlockChoices {
            filters: &self.filters,
            kernel: &self.kernel,
            activation: &self.activation,
            batchnorm: &self.batchnorm,
        }
    }
}

impl ForecasterSpace {
    pub(crate) fn choices(&self) -> BlockChoices<'_> {
        BlockChoices {
            filters: &self.filters,
            kernel: &self.kernel,
            activation: &self.activation,
            batchnorm: &self.batchnorm,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ForecasterGenome {
    /// Hidden blocks, input side first.
    pub blocks: Vec<PlainBlock>,
    pub out_kernel: usize,
    pub predict: Predict,
    /// The first predicted channel (the ones before it are inputs only).
    pub from_channel: usize,
}

/// Pooling windows are 2 wide with stride 2: the common choice, and one the
/// accelerators fuse with the following convolution.
const POOL: usize = 2;

fn pick<T: Copy>(rng: &mut impl Rng, values: &[T]) -> Option<T> {
    (!values.is_empty()).then(|| values[rng.random_range(0..values.len())])
}

fn count(rng: &mut impl Rng, r: crate::space::Range) -> usize {
    rng.random_range(r.min..=r.max)
}

/// Spatial sizes of a per-sample input `[C, L]`: one for 1-D convolutions,
/// `[17, W]` seen as one channel of `17 × W` for 2-D.
fn spatial(conv: ConvKind, input: &[usize]) -> Vec<usize> {
    match conv {
        ConvKind::Conv1d => input.get(1).copied().into_iter().collect(),
        ConvKind::Conv2d => input.to_vec(),
    }
}

impl CnnBlock {
    /// Makes the block valid after `dims` (the spatial sizes it receives)
    /// and returns the sizes it leaves.
    fn fit(&mut self, dims: &[usize]) -> Vec<usize> {
        if self.padding >= self.kernel {
            self.padding = self.kernel - 1;
        }
        let smallest = dims.iter().copied().min().unwrap_or(1);
        if smallest + 2 * self.padding < self.kernel {
            // Pad just enough to keep at least one position.
            self.padding = (self.kernel - smallest).div_ceil(2).min(self.kernel - 1);
        }
        let conv: Vec<usize> = dims.iter().map(|d| d + 2 * self.padding + 1 - self.kernel).collect();
        if self.pool != Pool::None && conv.iter().any(|&d| d < POOL) {
            self.pool = Pool::None;
        }
        match self.pool {
            Pool::None => conv,
            _ => conv.iter().map(|d| (d - POOL) / POOL + 1).collect(),
        }
    }
}

impl CnnGenome {
    fn sample(space: &CnnSpace, input: &[usize], rng: &mut impl Rng) -> CnnGenome {
        let conv = pick(rng, &space.conv).unwrap_or(ConvKind::Conv1d);
        let blocks = (0..count(rng, space.blocks))
            .map(|_| {
                let kernel = pick(rng, &space.kernel).unwrap_or(3);
                CnnBlock {
                    filters: pick(rng, &space.filters).unwrap_or(16),
                    kernel,
                    padding: pick(rng, &space.padding).unwrap_or(0),
                    pool: pick(rng, &space.pool).unwrap_or(Pool::None),
                    activation: pick(rng, &space.activation).unwrap_or(Activation::Relu),
                    batchnorm: pick(rng, &space.batchnorm).unwrap_or(false),
                }
            })
            .collect();
        let linear = (0..count(rng, space.linear_layers))
            .map(|_| pick(rng, &space.linear_units).unwrap_or(32))
            .collect();
        let mut g = CnnGenome {
            conv,
            blocks,
            linear,
            classes: space.classes,
        };
        g.fit(input);
        g
    }

    /// `genome`, made valid for `input`.
    pub(crate) fn fitted(mut genome: CnnGenome, input: &[usize]) -> Genome {
        genome.fit(input);
        Genome::Cnn(genome)
    }

    fn fit(&mut self, input: &[usize]) {
        let mut dims = spatial(self.conv, input);
        for block in &mut self.blocks {
            dims = block.fit(&dims);
        }
    }

    fn mutate(&mut self, space: &CnnSpace, input: &[usize], rng: &mut impl Rng) {
        // One gene, chosen uniformly among those the space lets vary.
        match rng.random_range(0..5) {
            0 if space.conv.len() > 1 => {
                self.conv = pick(rng, &space.conv).unwrap_or(self.conv);
            }
            1 if space.blocks.min < space.blocks.max => {
                let grow = self.blocks.len() < space.blocks.max
                    && (self.blocks.len() == space.blocks.min || rng.random_bool(0.5));
                if grow {
                    let at = rng.random_range(0..=self.blocks.len());
                    let like = self.blocks[at.min(self.blocks.len() - 1)].clone();
                    self.blocks.insert(at, like);
                } else {
                    self.blocks.remove(rng.random_range(0..self.blocks.len()));
                }
            }
            2 if space.linear_layers.min < space.linear_layers.max => {
                let grow = self.linear.len() < space.linear_layers.max
                    && (self.linear.len() == space.linear_layers.min || rng.random_bool(0.5));
                if grow {
                    let units = pick(rng, &space.linear_units).unwrap_or(32);
                    self.linear.insert(rng.random_range(0..=self.linear.len()), units);
                } else {
                    self.linear.remove(rng.random_range(0..self.linear.len()));
                }
            }
            3 if !self.linear.is_empty() => {
                let i = rng.random_range(0..self.linear.len());
                self.linear[i] = pick(rng, &space.linear_units).unwrap_or(self.linear[i]);
            }
            _ => {
                let i = rng.random_range(0..self.blocks.len());
                let b = &mut self.blocks[i];
                match rng.random_range(0..6) {
                    0 => b.filters = pick(rng, &space.filters).unwrap_or(b.filters),
                    1 => b.kernel = pick(rng, &space.kernel).unwrap_or(b.kernel),
                    2 => b.padding = pick(rng, &space.padding).unwrap_or(b.padding),
                    3 => b.pool = pick(rng, &space.pool).unwrap_or(b.pool),
                    4 => b.activation = pick(rng, &space.activation).unwrap_or(b.activation),
                    _ => b.batchnorm = pick(rng, &space.batchnorm).unwrap_or(b.batchnorm),
                }
            }
        }
        self.fit(input);
    }

    fn to_layers(&self, layers: &mut Vec<Layer>) {
        for (i, b) in self.blocks.iter().enumerate() {
            let op = match self.conv {
                ConvKind::Conv1d => Op::Conv1d {
                    out_channels: b.filters,
                    kernel: b.kernel,
                    padding: b.padding,
                    bias: !b.batchnorm,
                },
                ConvKind::Conv2d => Op::Conv2d {
                    out_channels: b.filters,
                    kernel: b.kernel,
                    padding: b.padding,
                    bias: !b.batchnorm,
                },
            };
            push(layers, format!("conv{i}"), op);
            if b.batchnorm {
                push(layers, format!("bn{i}"), batch_norm());
            }
            activation(layers, format!("act{i}"), b.activation);
            match b.pool {
                Pool::None => {}
                Pool::Max => push(
                    layers,
                    format!("pool{i}"),
                    Op::MaxPool {
                        kernel: POOL,
                        stride: POOL,
                    },
                ),
                Pool::Avg => push(
                    layers,
                    format!("pool{i}"),
                    Op::AvgPool {
                        kernel: POOL,
                        stride: POOL,
                    },
                ),
            }
        }
        push(layers, "flatten".to_owned(), Op::Flatten);
        for (i, units) in self.linear.iter().enumerate() {
            push(
                layers,
                format!("fc{i}"),
                Op::Linear {
                    out_features: *units,
                    bias: true,
                },
            );
            push(layers, format!("fc{i}_act"), Op::Relu);
        }
        push(
            layers,
            "out".to_owned(),
            Op::Linear {
                out_features: self.classes,
                bias: true,
            },
        );
    }
}

impl AutoencoderGenome {
    fn sample(space: &AutoencoderSpace, rng: &mut impl Rng) -> AutoencoderGenome {
        let blocks = (0..count(rng, space.blocks))
            .map(|_| space.choices().sample(rng))
            .collect();
        AutoencoderGenome {
            blocks,
            bottleneck: pick(rng, &space.bottleneck).unwrap_or(4),
        }
    }

    fn mutate(&mut self, space: &AutoencoderSpace, rng: &mut impl Rng) {
        match rng.random_range(0..3) {
            0 if space.blocks.min < space.blocks.max => {
                let grow = self.blocks.len() < space.blocks.max
                    && (self.blocks.len() == space.blocks.min || rng.random_bool(0.5));
                if grow {
                    let like = self.blocks[rng.random_range(0..self.blocks.len())].clone();
                    self.blocks.insert(rng.random_range(0..=self.blocks.len()), like);
                } else {
                    self.blocks.remove(rng.random_range(0..self.blocks.len()));
                }
            }
            1 => self.bottleneck = pick(rng, &space.bottleneck).unwrap_or(self.bottleneck),
            _ => {
                let i = rng.random_range(0..self.blocks.len());
                space.choices().mutate(&mut self.blocks[i], rng);
            }
        }
    }

    /// Every convolution keeps the length (odd kernels, padding `(k − 1)/2`);
    /// the bottleneck has no activation, which keeps training from
    /// collapsing to the mean (observed with a ReLU there).
    fn to_layers(&self, channels: usize, layers: &mut Vec<Layer>) {
        let conv = |out: usize, kernel: usize, bias: bool| Op::Conv1d {
            out_channels: out,
            kernel,
            padding: (kernel - 1) / 2,
            bias,
        };
        let block = |layers: &mut Vec<Layer>, tag: String, b: &PlainBlock| {
            push(layers, format!("{tag}_conv"), conv(b.filters, b.kernel, !b.batchnorm));
            if b.batchnorm {
                push(layers, format!("{tag}_bn"), batch_norm());
            }
            activation(layers, format!("{tag}_act"), b.activation);
        };
        for (i, b) in self.blocks.iter().enumerate() {
            block(layers, format!("enc{i}"), b);
        }
        push(layers, "bottleneck".to_owned(), conv(self.bottleneck, 1, true));
        for (i, b) in self.blocks.iter().enumerate().rev() {
            block(layers, format!("dec{i}"), b);
        }
        push(layers, "out".to_owned(), conv(channels, 1, true));
    }
}

impl ForecasterGenome {
    fn sample(space: &ForecasterSpace, input: &[usize], rng: &mut impl Rng) -> ForecasterGenome {
        let blocks = (0..count(rng, space.blocks))
            .map(|_| space.choices().sample(rng))
            .collect();
        let mut g = ForecasterGenome {
            blocks,
            out_kernel: pick(rng, &space.out_kernel).unwrap_or(1),
            predict: pick(rng, &space.predict).unwrap_or(Predict::Telemetry),
            from_channel: 0,
        };
        g.fit(space, input);
        g
    }

    /// `genome`, made valid for `input`.
    pub(crate) fn fitted(mut genome: ForecasterGenome, space: &ForecasterSpace, input: &[usize]) -> Genome {
        genome.fit(space, input);
        Genome::Forecaster(genome)
    }

    /// Rows one output position sees.
    fn receptive_field(&self) -> usize {
        self.blocks.iter().map(|b| b.kernel - 1).sum::<usize>() + self.out_kernel
    }

    /// Makes the genome valid for `input`: the predicted channels follow
    /// from `predict`; the first convolution sees at least two rows (its
    /// last tap is masked for the predicted channels); and kernels shrink
    /// (largest first, to the next smaller size the space offers) until the
    /// receptive field fits the window.
    fn fit(&mut self, space: &ForecasterSpace, input: &[usize]) {
        let channels = input.first().copied().unwrap_or(1);
        let length = input.get(1).copied().unwrap_or(1);
        self.from_channel = match self.predict {
            Predict::Telemetry => space.exogenous.min(channels.saturating_sub(1)),
            Predict::All => 0,
        };
        let first_choices = if self.blocks.is_empty() {
            &space.out_kernel
        } else {
            &space.kernel
        };
        let first = self.kernels_mut().next();
        if let Some(k) = first.filter(|k| **k < 2) {
            *k = first_choices.iter().copied().filter(|&c| c >= 2).min().unwrap_or(2);
        }
        while self.receptive_field() > length {
            let Some((i, k)) = self.kernels_mut().enumerate().max_by_key(|(_, k)| **k) else {
                break;
            };
            let floor = if i == 0 { 2 } else { 1 };
            if *k <= floor {
                break;
            }
            *k = space
                .kernel
                .iter()
                .copied()
                .filter(|c| c < k && *c >= floor)
                .max()
                .unwrap_or(floor);
        }
    }

    /// Every convolution's kernel, input side first.
    fn kernels_mut(&mut self) -> impl Iterator<Item = &mut usize> {
        self.blocks
            .iter_mut()
            .map(|b| &mut b.kernel)
            .chain(std::iter::once(&mut self.out_kernel))
    }

    fn mutate(&mut self, space: &ForecasterSpace, input: &[usize], rng: &mut impl Rng) {
        match rng.random_range(0..4) {
            0 if space.blocks.min < space.blocks.max => {
                let grow = self.blocks.len() < space.blocks.max
                    && (self.blocks.len() == space.blocks.min || rng.random_bool(0.5));
                if grow {
                    let block = space.choices().sample(rng);
                    self.blocks.insert(rng.random_range(0..=self.blocks.len()), block);
                } else {
                    self.blocks.remove(rng.random_range(0..self.blocks.len()));
                }
            }
            1 => self.out_kernel = pick(rng, &space.out_kernel).unwrap_or(self.out_kernel),
            2 if space.predict.len() > 1 => self.predict = pick(rng, &space.predict).unwrap_or(self.predict),
            _ if !self.blocks.is_empty() => {
                let i = rng.random_range(0..self.blocks.len());
                space.choices().mutate(&mut self.blocks[i], rng);
            }
            _ => self.out_kernel = pick(rng, &space.out_kernel).unwrap_or(self.out_kernel),
        }
        self.fit(space, input);
    }

    fn to_layers(&self, channels: usize, layers: &mut Vec<Layer>) {
        for (i, b) in self.blocks.iter().enumerate() {
            let op = Op::Conv1d {
                out_channels: b.filters,
                kernel: b.kernel,
                padding: 0,
                bias: !b.batchnorm,
            };
            push(layers, format!("conv{i}"), op);
            if b.batchnorm {
                push(layers, format!("bn{i}"), batch_norm());
            }
            activation(layers, format!("act{i}"), b.activation);
        }
        let out = Op::Conv1d {
            out_channels: channels - self.from_channel,
            kernel: self.out_kernel,
            padding: 0,
            bias: true,
        };
        push(layers, "out".to_owned(), out);
    }
}

fn push(layers: &mut Vec<Layer>, name: String, op: Op) {
    layers.push(Layer {
        name,
        inputs: Vec::new(),
        op,
    });
}

fn batch_norm() -> Op {
    Op::BatchNorm {
        eps: 1e-5,
        momentum: 0.1,
    }
}

fn activation(layers: &mut Vec<Layer>, name: String, a: Activation) {
    match a {
        Activation::None => {}
        Activation::Relu => push(layers, name, Op::Relu),
        Activation::Abs => push(layers, name, Op::Abs),
    }
}

impl Genome {
    /// A random member of `space` for per-sample input `[C, L]`.
    pub fn sample(space: &Space, input: &[usize], rng: &mut impl Rng) -> Genome {
        match space {
            Space::Cnn(s) => Genome::Cnn(CnnGenome::sample(s, input, rng)),
            Space::Autoencoder(s) => Genome::Autoencoder(AutoencoderGenome::sample(s, rng)),
            Space::Forecaster(s) => Genome::Forecaster(ForecasterGenome::sample(s, input, rng)),
        }
    }

    /// Whether this genome belongs to `space`'s family.
    pub fn is_of(&self, space: &Space) -> bool {
        matches!(
            (self, space),
            (Genome::Cnn(_), Space::Cnn(_))
                | (Genome::Autoencoder(_), Space::Autoencoder(_))
                | (Genome::Forecaster(_), Space::Forecaster(_))
        )
    }

    /// The genome with one gene re-drawn from `space`. A genome of another
    /// family than the space is re-sampled.
    pub fn mutated(&self, space: &Space, input: &[usize], rng: &mut impl Rng) -> Genome {
        match (self, space) {
            (Genome::Cnn(g), Space::Cnn(s)) => {
                let mut g = g.clone();
                g.mutate(s, input, rng);
                Genome::Cnn(g)
            }
            (Genome::Autoencoder(g), Space::Autoencoder(s)) => {
                let mut g = g.clone();
                g.mutate(s, rng);
                Genome::Autoencoder(g)
            }
            (Genome::Forecaster(g), Space::Forecaster(s)) => {
                let mut g = g.clone();
                g.mutate(s, input, rng);
                Genome::Forecaster(g)
            }
            _ => Genome::sample(space, input, rng),
        }
    }

    /// The network, for per-sample input `[C, L]` (a 2-D network sees it
    /// as `[1, C, L]`).
    pub fn to_model(&self, name: &str, input: &[usize]) -> Model {
        let mut layers = Vec::new();
        let (task, input) = match self {
            Genome::Cnn(g) => {
                g.to_layers(&mut layers);
                let shape = match g.conv {
                    ConvKind::Conv1d => input.to_vec(),
                    ConvKind::Conv2d => std::iter::once(1).chain(input.iter().copied()).collect(),
                };
                (Task::Classifier { classes: g.classes }, shape)
            }
            Genome::Autoencoder(g) => {
                g.to_layers(input.first().copied().unwrap_or(1), &mut layers);
                (Task::Autoencoder, input.to_vec())
            }
            Genome::Forecaster(g) => {
                g.to_layers(input.first().copied().unwrap_or(1), &mut layers);
                let task = Task::Forecaster {
                    from_channel: g.from_channel,
                };
                (task, input.to_vec())
            }
        };
        Model {
            format: FORMAT.to_owned(),
            name: name.to_owned(),
            task,
            input,
            layers,
        }
    }
}
