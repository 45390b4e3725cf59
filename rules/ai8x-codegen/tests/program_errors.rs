//! Programs the generator refuses, with errors that name the layer.

mod common;

use kflow_ai8x_codegen::{CodegenError, generate};

#[test]
fn overlapping_biases_name_both_layers() {
    let mut program = common::spec_4_5();
    program.layers[2].bias.as_mut().unwrap().offset = 8;
    let err = generate(&program).unwrap_err();
    assert_eq!(
        err,
        CodegenError::BiasOverlap {
            layer: 2,
            other: 1,
            quadrant: 1,
            byte: 8
        }
    );
}

#[test]
fn a_bias_in_an_unused_quadrant_is_rejected() {
    let mut program = common::spec_4_5();
    program.layers[3].bias.as_mut().unwrap().quadrant = 3;
    let err = generate(&program).unwrap_err();
    assert!(
        err.to_string().contains("layer 3 (fc1): bias quadrant 3 is not used"),
        "{err}"
    );
}

#[test]
fn a_weight_count_that_does_not_match_the_shape_is_rejected() {
    let mut program = common::spec_4_5();
    program.layers[1].weights.pop();
    let err = generate(&program).unwrap_err();
    assert!(
        err.to_string()
            .contains("layer 1 (conv1): 1535 weights, expected 16 × 32 × 3 = 1536"),
        "{err}"
    );
}

#[test]
fn an_output_that_overflows_its_memory_instance_is_rejected() {
    let mut program = common::spec_4_5();
    program.layers[0].out_offset = 0x13FF0;
    let err = generate(&program).unwrap_err();
    assert!(
        err.to_string().contains("output of 32 bytes at offset 0x13ff0"),
        "{err}"
    );
}

#[test]
fn an_empty_program_is_rejected() {
    let mut program = common::spec_4_5();
    program.layers.clear();
    assert_eq!(generate(&program).unwrap_err(), CodegenError::NoLayers);
}

#[test]
fn chw_input_with_two_processors_in_one_instance_is_rejected() {
    let mut program = common::chw_image_max78000();
    program.layers[0].processors = 0x13;
    let err = generate(&program).unwrap_err();
    assert!(
        err.to_string()
            .contains("layer 0 (conv): CHW input with two processors"),
        "{err}"
    );
}

#[test]
fn offsets_near_u32_max_are_errors_not_overflows() {
    let mut program = common::spec_4_5();
    program.layers[0].bias.as_mut().unwrap().offset = u32::MAX;
    assert!(
        generate(&program)
            .unwrap_err()
            .to_string()
            .contains("exceed the 2048 bytes")
    );
    let mut program = common::spec_4_5();
    program.layers[0].kernel_offset = u32::MAX - 3;
    assert!(
        generate(&program)
            .unwrap_err()
            .to_string()
            .contains("beyond the 5120 columns")
    );
    let mut program = common::spec_4_5();
    program.layers[0].in_offset = u32::MAX - 3;
    assert!(
        generate(&program)
            .unwrap_err()
            .to_string()
            .contains("exceeds the 81920-byte")
    );
}

#[test]
fn a_passthrough_layer_with_an_activation_is_rejected() {
    let mut program = common::baseline_with_passthrough();
    program.layers[1].activation = kflow_ai8x_codegen::Activation::Relu;
    let err = generate(&program).unwrap_err();
    assert!(
        err.to_string()
            .contains("layer 1 (pool): a passthrough (pooling-only) layer cannot have activation Relu"),
        "{err}"
    );
}

#[test]
fn narrow_weights_in_a_flatten_layer_are_refused_with_the_gap() {
    let mut program = common::baseline_with_passthrough();
    program.layers[2].weight_bits = 4;
    let err = generate(&program).unwrap_err();
    assert!(matches!(err, CodegenError::Unsupported { layer: 2, .. }), "{err}");
    assert!(err.to_string().contains("flatten with 4-bit weights"), "{err}");
}
