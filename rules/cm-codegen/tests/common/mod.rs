//! Building generated C with a test main, running it, and the simulator's
//! bytes for the same input.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use kflow_ai8x_sim::{
    LayerWeights, Network, Op, Output, SimOptions, Source, Tensor, WeightBits, output_shapes, simulate,
};
use kflow_cm_codegen::Generated;

/// Reads model.bin from argv[1] and `KFLOW_INPUT_LEN` bytes from argv[2],
/// writes the output's bytes (int32 in the host's byte order) to argv[3].
const MAIN: &str = r#"#include <stdio.h>
#include <stdint.h>
#include "model.h"

static int32_t weights[(KFLOW_WEIGHTS_BYTES + 3) / 4];
static int8_t in[KFLOW_INPUT_LEN];
static int32_t out[(KFLOW_OUTPUT_BYTES + 3) / 4];

int main(int argc, char **argv)
{
    FILE *f;
    if (argc != 4) return 2;
    f = fopen(argv[1], "rb");
    if (!f || fread(weights, 1, KFLOW_WEIGHTS_BYTES, f) != KFLOW_WEIGHTS_BYTES) return 3;
    fclose(f);
    if (kflow_check_weights(weights, KFLOW_WEIGHTS_BYTES) != 0) return 6;
    f = fopen(argv[2], "rb");
    if (!f || fread(in, 1, sizeof in, f) != sizeof in) return 3;
    fclose(f);
    if (kflow_infer(weights, in, out) != 0) return 4;
    f = fopen(argv[3], "wb");
    if (!f || fwrite(out, 1, KFLOW_OUTPUT_BYTES, f) != KFLOW_OUTPUT_BYTES) return 5;
    return fclose(f) != 0;
}
"#;

pub const HOST_FLAGS: [&str; 6] = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"];

fn write_sources(dir: &Path, generated: &Generated) {
    for (name, bytes) in generated.files() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Which kernels a host build runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    Portable,
    /// The Cortex-M4 path, its DSP instructions emulated in C.
    EmulatedDsp,
}

/// The generated model compiled with the host's gcc into a program.
pub struct Program {
    dir: tempfile::TempDir,
}

impl Program {
    pub fn build(generated: &Generated, kernels: Kernels) -> Result<Program, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        write_sources(dir.path(), generated);
        std::fs::write(dir.path().join("main.c"), MAIN).map_err(|e| e.to_string())?;
        let out = Command::new("gcc")
            .args(HOST_FLAGS)
            .args((kernels == Kernels::EmulatedDsp).then_some("-DKF_EMULATE_DSP"))
            .args(["main.c", "model.c", "-o", "model"])
            .current_dir(dir.path())
            .output()
            .map_err(|e| format!("cannot run gcc: {e}"))?;
        if !out.status.success() {
            return Err(format!("gcc: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(Program { dir })
    }

    pub fn run(&self, input: &[i8]) -> Result<Vec<u8>, String> {
        self.run_with(&self.dir.path().join(kflow_cm_codegen::MODEL_BIN), input)
    }

    /// Runs with the weights in `model_bin` instead of the generated ones.
    pub fn run_with(&self, model_bin: &Path, input: &[i8]) -> Result<Vec<u8>, String> {
        let (i, o) = (self.dir.path().join("in.bin"), self.dir.path().join("out.bin"));
        let bytes: Vec<u8> = input.iter().map(|&v| v as u8).collect();
        std::fs::write(&i, bytes).map_err(|e| e.to_string())?;
        let status = Command::new(self.dir.path().join("model"))
            .arg(model_bin)
            .args([&i, &o])
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("the model program exited with {status}"));
        }
        std::fs::read(&o).map_err(|e| e.to_string())
    }
}

/// Whether arm-none-eabi-gcc is installed.
pub fn have_arm_gcc() -> bool {
    Command::new("arm-none-eabi-gcc").arg("--version").output().is_ok()
}

/// Compiles `model.c` for the Cortex-M4 (object only).
pub fn arm_compile(generated: &Generated) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    write_sources(dir.path(), generated);
    let out = Command::new("arm-none-eabi-gcc")
        .args([
            "-mcpu=cortex-m4",
            "-mthumb",
            "-O2",
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
        ])
        .args(["-c", "model.c", "-o", "model.o"])
        .current_dir(dir.path())
        .output()
        .map_err(|e| format!("cannot run arm-none-eabi-gcc: {e}"))?;
    if !out.status.success() {
        return Err(format!("arm-none-eabi-gcc: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// The simulator's output as the bytes the C program writes.
pub fn expected(net: &Network, weights: &[LayerWeights], input: &[i8], options: SimOptions) -> Vec<u8> {
    let tensor = Tensor::new(net.input, input.to_vec()).expect("input length");
    match simulate(net, weights, &tensor, options).expect("the simulator runs the network") {
        Output::Int8(t) => t.data.iter().map(|&v| v as u8).collect(),
        Output::Int32(t) => t.data.iter().flat_map(|v| v.to_ne_bytes()).collect(),
    }
}

/// A small deterministic generator (xorshift64*), enough for test data.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() >> 33) as i32 % (hi - lo + 1)
    }

    pub fn int8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.range(-128, 127) as i8).collect()
    }
}

fn weight_range(bits: WeightBits) -> (i32, i32) {
    match bits {
        WeightBits::Binary => (-1, 1),
        WeightBits::One => (-1, 0),
        WeightBits::Two => (-2, 1),
        WeightBits::Four => (-8, 7),
        WeightBits::Eight => (-128, 127),
    }
}

/// Random weights of the right length and range for every layer, with a
/// bias where `bias` says so.
pub fn random_weights(net: &Network, noise: &mut Noise, bias: impl Fn(usize) -> bool) -> Vec<LayerWeights> {
    let outputs = output_shapes(net).expect("a valid network");
    net.layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (inp, out) = (l.in_channels, l.out_channels);
            let first = match l.inputs.first() {
                Some(Source::Layer(j)) => outputs[*j],
                Some(Source::Input) => net.input,
                None if i == 0 => net.input,
                None => outputs[i - 1],
            };
            let len = match l.op {
                Op::None => return LayerWeights::default(),
                Op::Conv1d { kernel, .. } => out * inp * kernel,
                Op::Conv2d {
                    kernel,
                    depthwise: true,
                    ..
                } => out * kernel * kernel,
                Op::Conv2d { kernel, .. } => out * inp * kernel * kernel,
                Op::ConvTranspose2d { .. } => inp * out * 9,
                Op::Linear { flatten: true } => out * inp * first.pixels(),
                Op::Linear { flatten: false } => out * inp,
            };
            let (lo, hi) = weight_range(l.weight_bits);
            let weight = (0..len)
                .map(|_| {
                    let v = noise.range(lo, hi);
                    // Binary weights are ±1 only.
                    (if l.weight_bits == WeightBits::Binary && v == 0 {
                        1
                    } else {
                        v
                    }) as i8
                })
                .collect();
            LayerWeights {
                weight,
                bias: bias(i).then(|| noise.int8s(out)),
            }
        })
        .collect()
}
