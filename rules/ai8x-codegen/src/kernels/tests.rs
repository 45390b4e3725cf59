use super::*;
use crate::device::Device;
use crate::geometry::check;
use crate::program::{DataFormat, Operator, Program};
use crate::test_layers::layer;

fn program(layers: Vec<Layer>) -> Program {
    Program {
        device: Device::Max78002,
        input_format: DataFormat::Hwc,
        layers,
    }
}

fn image(program: &Program) -> Result<KernelImage, CodegenError> {
    KernelImage::pack(&check(program).unwrap())
}

fn column(image: &KernelImage, processor: u32, column: u32) -> [u8; 9] {
    image.columns[&(processor, column)].0
}

/// Weight `[o, c, t]` as a recognisable byte: o, c, t in nibbles.
fn tagged(o: usize, c: usize, t: usize) -> i8 {
    (o * 0x10 + c * 4 + t) as u8 as i8
}

#[test]
fn conv1d_column_holds_three_outputs_last_output_first() {
    // §5.5 [xchk]: for k = 3, column 0 of processor 0 is
    // [W[2,0,0..2], W[1,0,0..2], W[0,0,0..2]].
    let mut conv = layer(Operator::Conv1d, [2, 8, 1], 4, [3, 1]);
    for o in 0..4 {
        for c in 0..2 {
            for t in 0..3 {
                conv.weights[(o * 2 + c) * 3 + t] = tagged(o, c, t);
            }
        }
    }
    let image = image(&program(vec![conv])).unwrap();
    let w = |o, c, t| tagged(o, c, t) as u8;
    assert_eq!(
        column(&image, 0, 0),
        [
            w(2, 0, 0),
            w(2, 0, 1),
            w(2, 0, 2),
            w(1, 0, 0),
            w(1, 0, 1),
            w(1, 0, 2),
            w(0, 0, 0),
            w(0, 0, 1),
            w(0, 0, 2)
        ]
    );
    // Output 3 fills the high byte indices of column 1; the rest stay 0.
    assert_eq!(
        column(&image, 1, 1),
        [0, 0, 0, 0, 0, 0, w(3, 1, 0), w(3, 1, 1), w(3, 1, 2)]
    );
}

#[test]
fn a_3x3_kernel_fills_one_column_in_row_major_order() {
    // §5.5: a full 3×3 kernel ends up with byte[j] = k[j].
    let mut conv = layer(Operator::Conv2d, [1, 4, 4], 2, [3, 3]);
    conv.weights = (0..18).map(|i| i as i8 - 9).collect();
    let image = image(&program(vec![conv])).unwrap();
    let expect = |o: usize| -> [u8; 9] { std::array::from_fn(|j| ((o * 9 + j) as i8 - 9) as u8) };
    assert_eq!(column(&image, 0, 0), expect(0));
    assert_eq!(column(&image, 0, 1), expect(1));
}

#[test]
fn flatten_weights_keep_their_natural_order() {
    // fc0 of §4.5: 16×4 flattened; processor k holds W[o, 4k .. 4k + 3]
    // for every output o, 64 bytes in 8 columns.
    let mut fc = layer(Operator::Linear, [16, 4, 1], 16, [1, 1]);
    fc.weights = (0..16 * 64).map(|i| (i % 251) as u8 as i8).collect();
    let image = image(&program(vec![fc.clone()])).unwrap();
    let columns: Vec<[u8; 9]> = (0..8).map(|col| column(&image, 1, col)).collect();
    let weights = &fc.weights;
    let fill: Vec<u8> = (0..16)
        .flat_map(|o| (4..8).map(move |i| weights[o * 64 + i] as u8))
        .collect();
    assert_eq!(columns[0], std::array::from_fn::<u8, 9, _>(|j| fill[8 - j]));
    assert!(!image.columns.contains_key(&(1, 8)));
    assert_eq!(columns[7][8], fill[63]);
}

#[test]
fn adjacent_layers_merge_into_one_chunk_and_gaps_split() {
    // §6.4: one chunk per maximal run of used columns on a processor.
    let first = layer(Operator::Conv1d, [1, 8, 1], 12, [3, 1]);
    let mut second = layer(Operator::Conv1d, [1, 8, 1], 1, [3, 1]);
    second.kernel_offset = 4;
    let mut third = second.clone();
    third.kernel_offset = 8;
    let program = program(vec![first, second, third]);
    let chunks = image(&program).unwrap().chunks(Device::Max78002);
    let shape: Vec<(u32, usize)> = chunks.iter().map(|c| (c.address, c.words.len())).collect();
    // Columns 0..=3 (first) and 4 (second) merge: 45 bytes → 12 words;
    // column 8 (third) starts a new chunk at 4·8 = 0x20.
    assert_eq!(shape, [(0x5140_0000, 12), (0x5140_0020, 3)]);
}

#[test]
fn chunk_words_are_big_endian_and_zero_padded() {
    let mut conv = layer(Operator::Conv2d, [1, 4, 4], 1, [3, 3]);
    conv.weights = (1..=9).collect();
    let chunks = image(&program(vec![conv])).unwrap().chunks(Device::Max78002);
    assert_eq!(chunks[0].words, [0x0102_0304, 0x0506_0708, 0x0900_0000]);
}

#[test]
fn overlapping_kernels_name_both_layers() {
    let first = layer(Operator::Conv1d, [1, 8, 1], 4, [3, 1]);
    let second = layer(Operator::Conv1d, [4, 8, 1], 1, [3, 1]);
    let err = image(&program(vec![first, second])).unwrap_err();
    assert_eq!(
        err,
        CodegenError::KernelOverlap {
            layer: 1,
            other: 0,
            processor: 0,
            column: 0
        }
    );
}

#[test]
fn kernels_past_the_end_of_a_processor_are_rejected() {
    let mut conv = layer(Operator::Conv1d, [2, 8, 1], 4, [3, 1]);
    conv.kernel_offset = 4096;
    let err = image(&program(vec![conv])).unwrap_err();
    // Processor 0 has 5120 columns; processor 1 has 4096 (§1).
    assert_eq!(
        err,
        CodegenError::KernelMemory {
            layer: 0,
            processor: 1,
            end: 4098,
            limit: 4096
        }
    );
}
