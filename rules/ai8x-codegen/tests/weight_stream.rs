//! `cnn_model.bin` parses back to the program's weights and biases, and
//! matches the chunk layout spec/max78002.md §6.4 gives for the §4.5
//! network.

mod common;

use std::collections::BTreeMap;

use kflow_ai8x_codegen::{COLUMN_BYTES, Operator, Program, generate, parse_bin};

/// Kernel-memory columns rebuilt from the stream: `(processor, column)` →
/// bytes in byte-index order.
fn columns_from_stream(program: &Program, bin: &[u8]) -> BTreeMap<(u32, u32), [u8; COLUMN_BYTES]> {
    let blob = parse_bin(bin).unwrap();
    let mut columns = BTreeMap::new();
    for chunk in &blob.kernels {
        let (processor, first) = program.device.kernel_load_target(chunk.address).unwrap();
        let bytes: Vec<u8> = chunk.words.iter().flat_map(|w| w.to_be_bytes()).collect();
        for (i, column) in bytes.chunks_exact(COLUMN_BYTES).enumerate() {
            columns.insert((processor, first + i as u32), column.try_into().unwrap());
        }
    }
    columns
}

/// Undoes §5.5's packing for a single-pass layer: fill byte f is byte
/// 8 − (f mod 9) of column kernel_offset + ⌊f/9⌋.
fn unpack(program: &Program, columns: &BTreeMap<(u32, u32), [u8; COLUMN_BYTES]>, index: usize) -> Vec<i8> {
    let layer = &program.layers[index];
    if layer.operator == Operator::Passthrough {
        return Vec::new();
    }
    let taps = (layer.kernel[0] * layer.kernel[1]) as usize;
    let cin = layer.input.channels as usize;
    let pixels = (layer.input.height * layer.input.width) as usize;
    let mut weights = vec![0i8; layer.weights.len()];
    let processors = (0..64u32).filter(|p| layer.processors >> p & 1 == 1);
    for (k, processor) in processors.enumerate() {
        let fill = |f: usize| -> i8 {
            let column = layer.kernel_offset + (f / COLUMN_BYTES) as u32;
            columns[&(processor, column)][COLUMN_BYTES - 1 - f % COLUMN_BYTES] as i8
        };
        for o in 0..layer.out_channels as usize {
            if layer.operator == Operator::Linear && layer.flatten {
                for i in 0..pixels {
                    weights[o * cin * pixels + k * pixels + i] = fill(o * pixels + i);
                }
            } else {
                for t in 0..taps {
                    weights[(o * cin + k) * taps + t] = fill(o * taps + taps - 1 - t);
                }
            }
        }
    }
    weights
}

#[test]
fn the_bin_parses_back_to_the_same_weights() {
    for program in [
        common::spec_4_5(),
        common::chw_image_max78000(),
        common::baseline_with_passthrough(),
    ] {
        let files = generate(&program).unwrap().files;
        let columns = columns_from_stream(&program, &files["cnn_model.bin"]);
        for (index, layer) in program.layers.iter().enumerate() {
            assert_eq!(unpack(&program, &columns, index), layer.weights, "layer {}", layer.name);
        }
    }
}

#[test]
fn the_bin_parses_back_to_the_same_biases() {
    let program = common::spec_4_5();
    let blob = parse_bin(&generate(&program).unwrap().files["cnn_model.bin"]).unwrap();
    let mut memory: BTreeMap<u32, i8> = BTreeMap::new();
    for chunk in &blob.biases {
        for (i, word) in chunk.words.iter().enumerate() {
            assert!(*word <= 0xff, "bias bytes are zero-extended");
            memory.insert(chunk.address + 4 * i as u32, *word as u8 as i8);
        }
    }
    for layer in &program.layers {
        let bias = layer.bias.as_ref().unwrap();
        let got: Vec<i8> = (0..layer.out_channels)
            .map(|c| memory[&program.device.bias_address(bias.quadrant, bias.offset + c)])
            .collect();
        assert_eq!(got, bias.values, "{}", layer.name);
    }
}

#[test]
fn spec_example_chunks_match_the_izer_layout() {
    // §6.4: processor 0 gets chunks at 0x51400000 (25 words, columns 0–10),
    // 0x51400030 (14 words, 12–17) and 0x51400050 (21 words, 20–28); §5.6:
    // bias memory use [34, 32, 0, 0].
    let program = common::spec_4_5();
    let blob = parse_bin(&generate(&program).unwrap().files["cnn_model.bin"]).unwrap();
    let processor_0: Vec<(u32, usize)> = blob
        .kernels
        .iter()
        .filter(|c| c.address < 0x5142_0000)
        .map(|c| (c.address, c.words.len()))
        .collect();
    assert_eq!(processor_0, [(0x5140_0000, 25), (0x5140_0030, 14), (0x5140_0050, 21)]);
    let biases: Vec<(u32, usize)> = blob.biases.iter().map(|c| (c.address, c.words.len())).collect();
    assert_eq!(biases, [(0x5118_0000, 34), (0x5218_0000, 32)]);
    // Processor 16 holds only conv0 and conv1 (fc layers use 0..15).
    let processor_16: Vec<(u32, usize)> = blob
        .kernels
        .iter()
        .filter(|c| (0x5240_0000..0x5242_0000).contains(&c.address))
        .map(|c| (c.address, c.words.len()))
        .collect();
    assert_eq!(processor_16, [(0x5240_0000, 25), (0x5240_0030, 14)]);
}

#[test]
fn a_passthrough_layer_takes_no_kernel_memory() {
    // Processor 0 holds conv (columns 0–15: 48 outputs × 3 taps = 144
    // bytes) and fc (column 16: 2 outputs × 4 pixels); the pooling layer
    // between them adds nothing, so the two runs merge into one chunk of
    // 17 columns = ⌈153/4⌉ words. Processor 20 holds only fc's column 16
    // (load address base + 4·column, §6.4).
    let program = common::baseline_with_passthrough();
    let blob = parse_bin(&generate(&program).unwrap().files["cnn_model.bin"]).unwrap();
    let chunks: Vec<(u32, usize)> = blob.kernels.iter().map(|c| (c.address, c.words.len())).collect();
    assert_eq!(chunks[0], (0x5140_0000, 39));
    assert!(chunks.contains(&(0x5248_0040, 3)), "{chunks:x?}");
    assert_eq!(chunks.len(), 48);
}

#[test]
fn generated_files_depend_only_on_the_program() {
    for program in [common::spec_4_5(), common::baseline_with_passthrough()] {
        let json = serde_json::to_string(&program).unwrap();
        let reparsed: Program = serde_json::from_str(&json).unwrap();
        assert_eq!(generate(&program).unwrap(), generate(&reparsed).unwrap());
    }
}
