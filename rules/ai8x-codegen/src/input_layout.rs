//! Where the network input sits in the words `cnn_load_input` takes
//! (spec §5.3): the first layer's memory instances in ascending order, each
//! the same number of words. HWC holds four channels of one pixel per word,
//! pass after pass; CHW four pixels of the instance's one channel. One walk
//! serves the host that packs an input and the board that unpacks it.

use crate::device::PROCESSORS_PER_INSTANCE;
use crate::geometry::Passes;
use crate::program::{DataFormat, Program};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputLayout {
    /// Memory instances the first layer reads, ascending.
    pub instances: Vec<u32>,
    /// Words of each instance.
    pub words_per_instance: usize,
    processors: u64,
    channels: u32,
    pixels: usize,
    passes: Passes,
    chw: bool,
}

impl InputLayout {
    pub fn new(program: &Program) -> InputLayout {
        let first = &program.layers[0];
        let pixels = first.input.pixels() as usize;
        let passes = Passes::for_channels(first.input.channels);
        let chw = program.input_format == DataFormat::Chw;
        InputLayout {
            instances: (0..16)
                .filter(|i| first.processors >> (i * PROCESSORS_PER_INSTANCE) & 0xf != 0)
                .collect(),
            words_per_instance: if chw {
                pixels.div_ceil(4)
            } else {
                pixels * passes.count as usize
            },
            processors: first.processors,
            channels: first.input.channels,
            pixels,
            passes,
            chw,
        }
    }

    /// Words `cnn_load_input` takes in all.
    pub fn words(&self) -> usize {
        self.instances.len() * self.words_per_instance
    }

    /// `place(byte, value)` for every byte of the little-endian word stream
    /// that carries an input value: `value` indexes the CHW input.
    fn walk(&self, mut place: impl FnMut(usize, usize)) {
        let rank = |p: u32| (self.processors & ((1u64 << p) - 1)).count_ones();
        let mut at = |byte: usize, channel: u32, pixel: usize| {
            if channel < self.channels && pixel < self.pixels {
                place(byte, channel as usize * self.pixels + pixel);
            }
        };
        for (span, &instance) in self.instances.iter().enumerate() {
            let base = 4 * span * self.words_per_instance;
            let first = PROCESSORS_PER_INSTANCE * instance;
            if self.chw {
                let channel = rank(first + (self.processors >> first & 0xf).trailing_zeros());
                for pixel in 0..4 * self.words_per_instance {
                    at(base + pixel, channel, pixel);
                }
                continue;
            }
            for word in 0..self.words_per_instance {
                let (pixel, pass) = (word / self.passes.count as usize, word as u32 % self.passes.count);
                for lane in 0..4 {
                    let p = first + lane;
                    if self.processors >> p & 1 == 1 {
                        at(
                            base + 4 * word + lane as usize,
                            pass * self.passes.per_pass + rank(p),
                            pixel,
                        );
                    }
                }
            }
        }
    }

    /// The words for a CHW `input`; bytes that carry no value are zero.
    pub fn pack(&self, input: &[i8]) -> Vec<u32> {
        let mut words = vec![0u32; self.words()];
        self.walk(|byte, value| words[byte / 4] |= u32::from(input[value] as u8) << (8 * (byte % 4)));
        words
    }

    /// The CHW input held in `bytes`, the little-endian word stream of
    /// [`InputLayout::words`] words.
    pub fn unpack(&self, bytes: &[u8]) -> Vec<i8> {
        let mut input = vec![0i8; self.channels as usize * self.pixels];
        self.walk(|byte, value| input[value] = bytes[byte] as i8);
        input
    }
}
