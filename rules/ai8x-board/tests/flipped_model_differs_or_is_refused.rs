//! A fault in what the generated code ships shows on the board: flipping
//! one bit of any register value, or of any word of `cnn_model.bin`,
//! either changes the board's output or makes it refuse the model with a
//! message naming the register (name and address) or the memory address.

mod cases;

use kflow_ai8x_board::{ModelImage, SimBoard};
use kflow_ai8x_codegen::{Device, RegisterList};

/// Cases that between them use both devices, conv1d, conv2d 1×1 and 3×3,
/// pooling, passthrough, element-wise, depthwise, flatten, transposed
/// convolution, narrow weights and 32-bit outputs.
const CASES: &[&str] = &[
    "001-conv2d",
    "002-pool",
    "004-conv1d-max78000",
    "005-flatten-mp",
    "008-elt-add",
    "009-conv2d-max78000",
    "013-convt",
    "015-quant",
    "016-binary",
    "017-multipass",
    "022-conv1d",
    "038-depthwise",
];

enum Verdict {
    Differs,
    Refused(String),
    /// Accepted, same outputs, but the board holds different weights: the
    /// change is real and no test input happens to show it.
    Masked,
    Same,
}

/// Runs every input; a flip shows when any output differs.
fn judge(
    device: Device,
    image: &ModelImage,
    inputs: &[Vec<u8>],
    originals: &[Vec<u8>],
    weights: &[kflow_ai8x_sim::LayerWeights],
) -> Verdict {
    let loaded = match SimBoard::configure(device, &image.to_bytes().unwrap()) {
        Err(refusal) => return Verdict::Refused(refusal.0),
        Ok(loaded) => loaded,
    };
    for (input, original) in inputs.iter().zip(originals) {
        match loaded.run(input) {
            Err(e) => return Verdict::Refused(e.message),
            Ok(output) if &output != original => return Verdict::Differs,
            Ok(_) => {}
        }
    }
    if loaded.decoded.weights != weights {
        return Verdict::Masked;
    }
    Verdict::Same
}

/// The case's input and random ones (xorshift): full-range, small values
/// (which saturate less, so that narrow weights show) and sparse small
/// values, as load words.
fn inputs(case: &cases::Case) -> Vec<Vec<u8>> {
    let first = &case.program.layers[0].input;
    let n = first.channels as usize * first.pixels() as usize;
    let mut x = 0x9e37_79b9u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut all = vec![case.input.clone()];
    for kind in 0..8 {
        let values: Vec<i8> = (0..n)
            .map(|_| {
                let r = next();
                match kind {
                    0 | 1 => (r >> 24) as u8 as i8,
                    2..=4 => ((r >> 24) % 9) as i8 - 4,
                    _ if r % 10 == 0 => ((r >> 24) % 9) as i8 - 4,
                    _ => 0,
                }
            })
            .collect();
        all.push(cases::input_words(&case.program, &values));
    }
    // Impulses: 1 at the centre of one channel, which shows each weight
    // of the first layer without saturating.
    let (pixels, centre) = (
        first.pixels() as usize,
        (first.height / 2 * first.width + first.width / 2) as usize,
    );
    for c in 0..(first.channels as usize).min(16) {
        let mut values = vec![0i8; n];
        values[c * pixels + centre] = 1;
        all.push(cases::input_words(&case.program, &values));
    }
    all
}

/// A refusal must point at the fault: a register or memory address, or a
/// word of the stream.
fn names_a_place(message: &str) -> bool {
    message.contains("0x") || message.contains(" word ")
}

fn check(case_name: &str, flips: &mut usize, masked: &mut usize, problems: &mut Vec<String>) {
    let case = cases::load(case_name).unwrap();
    let device = case.program.device;
    let inputs = inputs(&case);
    let loaded = SimBoard::configure(device, &case.image.to_bytes().unwrap()).unwrap();
    let originals: Vec<Vec<u8>> = inputs.iter().map(|i| loaded.run(i).unwrap()).collect();
    assert_eq!(originals[0], case.simulated, "{case_name}");
    let (_, list) = RegisterList::parse(&case.image.regs).unwrap();
    let phases = [list.init.len(), list.configure.len(), list.start.len()];
    for (phase, len) in phases.into_iter().enumerate() {
        for index in 0..len {
            // One bit per write, a different one for each write and case.
            let bit = (index * 7 + phase * 3 + case_name.len()) % 32;
            let mut flipped = list.clone();
            let writes = match phase {
                0 => &mut flipped.init,
                1 => &mut flipped.configure,
                _ => &mut flipped.start,
            };
            writes[index].value ^= 1 << bit;
            let what = format!(
                "{case_name}: register write {index} of phase {phase} (0x{:08x}) bit {bit}",
                writes[index].address
            );
            let mut image = case.image.clone();
            image.regs = flipped.to_bytes(device);
            *flips += 1;
            match judge(device, &image, &inputs, &originals, &loaded.decoded.weights) {
                Verdict::Differs => {}
                Verdict::Masked => *masked += 1,
                Verdict::Refused(message) if names_a_place(&message) => {}
                Verdict::Refused(message) => problems.push(format!("{what}: refused without a place: {message}")),
                Verdict::Same => problems.push(format!("{what}: accepted with the same output")),
            }
        }
    }
    let words = case.image.bin.len() / 4;
    let step = (words / 400).max(1);
    for word in (0..words).step_by(step) {
        let bit = (word * 5 + case_name.len()) % 32;
        let mut image = case.image.clone();
        let at = 4 * word + bit / 8;
        image.bin[at] ^= 1 << (bit % 8);
        let what = format!("{case_name}: cnn_model.bin word {word} bit {bit}");
        *flips += 1;
        match judge(device, &image, &inputs, &originals, &loaded.decoded.weights) {
            Verdict::Differs => {}
            Verdict::Masked => *masked += 1,
            Verdict::Refused(message) if names_a_place(&message) => {}
            Verdict::Refused(message) => problems.push(format!("{what}: refused without a place: {message}")),
            Verdict::Same => problems.push(format!("{what}: accepted with the same output")),
        }
    }
}

#[test]
fn one_flipped_register_bit_or_bin_word_changes_the_output_or_is_refused_by_name() {
    let (mut flips, mut masked) = (0, 0);
    let mut problems = Vec::new();
    for name in CASES {
        check(name, &mut flips, &mut masked, &mut problems);
    }
    println!(
        "{flips} flips; {masked} changed a weight that none of the inputs shows; {} problems",
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{} of {flips} flips:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
