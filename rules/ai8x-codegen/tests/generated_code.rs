//! The generated C compiles warning-free for the host and for a Cortex-M4,
//! and, run against a recording register shim, writes what the Rust side
//! computed: registers, weight chunks, biases, input and start words.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kflow_ai8x_codegen::{Device, Program, generate, layer_registers, model_blob, parse_bin};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// Writes the generated files into a fresh directory.
fn write_files(program: &Program) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in generate(program).unwrap().files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    dir
}

/// Runs a compiler; a missing compiler fails the test with what to install.
fn compile(compiler: &str, package: &str, args: &[&str], dir: &Path) {
    let output = Command::new(compiler).args(args).current_dir(dir).output();
    let output = match output {
        Ok(output) => output,
        Err(e) => panic!("cannot run `{compiler}` ({e}): install the Debian package {package}"),
    };
    assert!(
        output.status.success(),
        "{compiler} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const HOST_FLAGS: [&str; 5] = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];

fn shim_header() -> String {
    format!("{DATA}/shim.h")
}

fn ctl_defines(device: Device) -> [String; 2] {
    let (base, stride) = match device {
        Device::Max78000 => (0x5010_0000u32, 0x40_0000u32),
        Device::Max78002 => (0x5100_0000, 0x100_0000),
    };
    [
        format!("-DSHIM_CTL_BASE=0x{base:08x}u"),
        format!("-DSHIM_QUADRANT_STRIDE=0x{stride:08x}u"),
    ]
}

/// Builds the host program against the shim, runs it on `cnn_model.bin`
/// and returns its output.
fn run_on_host(program: &Program, dir: &Path, embed: bool) -> String {
    let exe = dir.join(if embed { "host_embed" } else { "host" });
    let shim = shim_header();
    let main = format!("{DATA}/host_main.c");
    let defines = ctl_defines(program.device);
    let mut args: Vec<&str> = HOST_FLAGS.to_vec();
    args.extend(["-include", &shim, "-I."]);
    args.extend(defines.iter().map(String::as_str));
    if embed {
        args.push("-DCNN_MODEL_EMBED_WEIGHTS");
    }
    let exe_str = exe.to_str().unwrap();
    args.extend(["cnn_model.c", &main, "-o", exe_str]);
    compile("gcc", "gcc", &args, dir);
    let output = Command::new(&exe).arg(dir.join("cnn_model.bin")).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The run's accesses grouped by the call they happened in.
#[derive(Default)]
struct Trace {
    writes: BTreeMap<String, Vec<(u32, u32)>>,
    byte_writes: BTreeMap<String, Vec<(u32, u32)>>,
    results: BTreeMap<String, i32>,
    out: Vec<u8>,
}

fn parse_trace(text: &str) -> Trace {
    let mut trace = Trace::default();
    let mut phase = String::new();
    let hex = |s: &str| u32::from_str_radix(s, 16).unwrap();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            ["#", name] => phase = name.to_owned(),
            ["rc", name, value] => {
                trace.results.insert(name.to_owned(), value.parse().unwrap());
            }
            ["w32", a, v] => trace.writes.entry(phase.clone()).or_default().push((hex(a), hex(v))),
            ["w8", a, v] => trace
                .byte_writes
                .entry(phase.clone())
                .or_default()
                .push((hex(a), hex(v))),
            ["out", _, v] => trace.out.push(hex(v) as u8),
            _ => panic!("unexpected line `{line}`"),
        }
    }
    trace
}

/// What loading `chunks` writes: `(address + 4i, word i)`.
fn chunk_writes(chunks: &[kflow_ai8x_codegen::Chunk]) -> Vec<(u32, u32)> {
    chunks
        .iter()
        .flat_map(|c| {
            c.words
                .iter()
                .enumerate()
                .map(move |(i, w)| (c.address + 4 * i as u32, *w))
        })
        .collect()
}

/// What the shim returns for a read of `addr` after `writes`.
fn read_back(writes: &[(u32, u32)], addr: u32) -> u32 {
    writes
        .iter()
        .rev()
        .find(|w| w.0 == addr)
        .map_or(addr.wrapping_mul(2_654_435_761), |w| w.1)
}

fn check_run(program: &Program, trace: &Trace, load_phase: &str) -> Vec<(u32, u32)> {
    let blob = model_blob(program).unwrap();
    for (name, rc) in &trace.results {
        let expect = if name.contains("unaligned")
            || name.contains("overflow")
            || name.contains("truncated")
            || name.contains("bad")
        {
            1
        } else {
            0
        };
        assert_eq!(*rc, expect, "{name} returned {rc}");
    }
    // cnn_init: clocks on in the used quadrants first (MAX78002); the
    // stopped CTL word in each, and last LCNT_MAX = last layer.
    let init = &trace.writes["init"];
    let ctl = |q: u32| match program.device {
        Device::Max78000 => 0x5010_0000 + 0x40_0000 * q,
        Device::Max78002 => 0x5100_0000 + 0x100_0000 * q,
    };
    let last = program.layers.last().unwrap();
    let used: Vec<u32> = (0..4u32)
        .filter(|q| {
            let quadrant = |map: u64| (map >> (16 * q)) & 0xffff != 0;
            quadrant(last.output_processors) || program.layers.iter().any(|l| quadrant(l.processors))
        })
        .collect();
    let aon = (0x5000_1000, 0);
    match program.device {
        Device::Max78002 => {
            let clocks: Vec<(u32, u32)> = used.iter().map(|q| (ctl(*q), 8)).collect();
            assert_eq!(init[..used.len()], clocks[..]);
            assert_eq!(init[used.len()], aon);
        }
        Device::Max78000 => assert_eq!(init[0], aon),
    }
    let last_layer = program.layers.len() as u32 - 1;
    let q = *used.last().unwrap();
    assert!(init.contains(&(ctl(q), 0x0010_0008)));
    assert_eq!(init.last(), Some(&(ctl(q) + 8, last_layer)));
    // Weight words land where the stream says, each chunk after its
    // "set address" byte.
    let loaded = &trace.writes[load_phase];
    let kernel_words = chunk_writes(&blob.kernels);
    assert_eq!(loaded[..kernel_words.len()], kernel_words[..]);
    let set_address: Vec<(u32, u32)> = blob.kernels.iter().map(|c| (c.address | 1, 1)).collect();
    assert_eq!(trace.byte_writes[load_phase], set_address);
    if load_phase == "load_model" {
        assert_eq!(loaded[kernel_words.len()..], chunk_writes(&blob.biases)[..]);
    }
    assert_eq!(
        trace.writes.get("load_bias").cloned().unwrap_or_default(),
        chunk_writes(&blob.biases)
    );
    let configured: Vec<(u32, u32)> = layer_registers(program)
        .unwrap()
        .iter()
        .map(|w| (w.address, w.value))
        .collect();
    assert_eq!(trace.writes["configure"], configured);
    assert!(!trace.writes.contains_key("load_input_unaligned"));
    assert!(!trace.writes.contains_key("load_input_overflow"));
    assert!(!trace.writes.contains_key("load_model_bad_address"));
    let mut input = trace.writes["load_input_0"].clone();
    input.extend(trace.writes.get("load_input_1").cloned().unwrap_or_default());
    input
}

#[test]
fn spec_example_runs_on_the_host_shim_and_writes_what_the_stream_says() {
    let program = common::spec_4_5();
    let dir = write_files(&program);
    let trace = parse_trace(&run_on_host(&program, dir.path(), false));
    let input = check_run(&program, &trace, "load_model");
    // §5.2: 17 channels × 8 → instances 0..3 of quadrant 0 and instance 0
    // of quadrant 1, 8 words each, in ascending order.
    let expected: Vec<(u32, u32)> = [0x5180_0000u32, 0x5182_0000, 0x5184_0000, 0x5186_0000, 0x5280_0000]
        .iter()
        .flat_map(|base| (0..8).map(move |i| base + 4 * i))
        .enumerate()
        .map(|(i, addr)| (addr, 0xA1B2_C3D4 + i as u32))
        .collect();
    assert_eq!(input, expected);
    // §6.3 cnn_start on quadrants 0 and 1.
    assert_eq!(
        trace.writes["start"],
        [
            (0x5100_0000, 0x0010_0808),
            (0x5200_0000, 0x0010_0809),
            (0x5100_0000, 0x0010_0009)
        ]
    );
    // fc1's two logits are lanes 0 and 1 of word 0x51800000 (out_offset 0),
    // which the input load last wrote.
    let all: Vec<(u32, u32)> = trace.writes.values().flatten().copied().collect();
    let word = read_back(&all, 0x5180_0000);
    assert_eq!(trace.out, [word as u8, (word >> 8) as u8]);
}

#[test]
fn embedded_weights_load_the_same_words_as_the_stream() {
    let program = common::spec_4_5();
    let dir = write_files(&program);
    let trace = parse_trace(&run_on_host(&program, dir.path(), true));
    check_run(&program, &trace, "load_weights");
}

#[test]
fn chw_max78000_network_runs_on_the_host_shim() {
    let program = common::chw_image_max78000();
    let dir = write_files(&program);
    let trace = parse_trace(&run_on_host(&program, dir.path(), false));
    let input = check_run(&program, &trace, "load_model");
    // CHW: one channel per instance (processors 0, 4, 8), 64 pixels = 16 words.
    let expected: Vec<u32> = [0x5040_0000u32, 0x5040_8000, 0x5041_0000]
        .iter()
        .flat_map(|base| (0..16).map(move |i| base + 4 * i))
        .collect();
    assert_eq!(input.iter().map(|w| w.0).collect::<Vec<_>>(), expected);
    // 32-bit outputs: one word per channel, lanes 0..3 of each instance
    // (§5.2), at out_offset 0.
    let all: Vec<(u32, u32)> = trace.writes.values().flatten().copied().collect();
    let addresses = (0..10u32).map(|c| 0x5040_0000 + 0x8000 * (c / 4) + 4 * (c % 4));
    let expected: Vec<u8> = addresses.flat_map(|a| read_back(&all, a).to_le_bytes()).collect();
    assert_eq!(trace.out, expected);
}

#[test]
fn baseline_with_a_passthrough_layer_runs_on_the_host_shim() {
    let program = common::baseline_with_passthrough();
    let dir = write_files(&program);
    let trace = parse_trace(&run_on_host(&program, dir.path(), false));
    check_run(&program, &trace, "load_model");
    // The pooling-only layer (layer 1) has no kernels: every weight chunk
    // lies in the conv's columns 0..15 or the fc's column 16.
    let blob = model_blob(&program).unwrap();
    for chunk in &blob.kernels {
        let column = (chunk.address & 0x1_ffff) / 4;
        let columns = chunk.words.len() as u32 * 4 / 9;
        assert!(column + columns <= 17, "{chunk:?}");
    }
    // §1.1, §6.3: layer 1's ONED (r = 3) and POST (r = 19) in quadrants
    // 0..2 are 1 << 8 | 3 (four time slots) and 3 << 24; OCHAN (r = 16) is
    // 3 and no MCNT1/MCNT2 (r = 14, 15), as the izer writes for a
    // single-pass passthrough layer of 16 processors per quadrant.
    let configure = &trace.writes["configure"];
    for q in 0..3u32 {
        let reg = |r: u32| 0x5110_0000 + 0x100_0000 * q + 4 * r + 0x100;
        assert!(configure.contains(&(reg(3), 0x103)), "ONED q{q}");
        assert!(configure.contains(&(reg(19), 0x0300_0000)), "POST q{q}");
        assert!(configure.contains(&(reg(16), 3)), "OCHAN q{q}");
        assert!(!configure.iter().any(|w| (14..=15).any(|r| w.0 == reg(r))), "MCNT q{q}");
    }
    // fc's two logits: lanes 0 and 1 of the word at 0xA000 of instance 0.
    let all: Vec<(u32, u32)> = trace.writes.values().flatten().copied().collect();
    let word = read_back(&all, 0x5180_A000);
    assert_eq!(trace.out, [word as u8, (word >> 8) as u8]);
}

fn arm_compile(program: &Program) {
    let dir = write_files(program);
    let common = [
        "-mcpu=cortex-m4",
        "-mthumb",
        "-Os",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-std=c99",
        "-c",
        "cnn_model.c",
    ];
    compile(
        "arm-none-eabi-gcc",
        "gcc-arm-none-eabi (with libnewlib-arm-none-eabi)",
        &common,
        dir.path(),
    );
    let mut embed = common.to_vec();
    // As the Zephyr module builds it.
    embed.extend([
        "-DCNN_MODEL_EMBED_WEIGHTS",
        "-DCNN_INIT_ALL_QUADRANTS",
        "-o",
        "cnn_model_embed.o",
    ]);
    compile(
        "arm-none-eabi-gcc",
        "gcc-arm-none-eabi (with libnewlib-arm-none-eabi)",
        &embed,
        dir.path(),
    );
}

#[test]
fn cnn_model_c_compiles_for_cortex_m4_without_warnings() {
    arm_compile(&common::spec_4_5());
    arm_compile(&common::chw_image_max78000());
    arm_compile(&common::baseline_with_passthrough());
}

#[test]
fn cnn_model_c_compiles_on_the_host_without_the_shim() {
    let dir = write_files(&common::spec_4_5());
    let mut args = HOST_FLAGS.to_vec();
    args.extend(["-c", "cnn_model.c"]);
    compile("gcc", "gcc", &args, dir.path());
}

#[test]
fn zephyr_module_points_at_the_sources() {
    let files = generate(&common::spec_4_5()).unwrap().files;
    let text = |p: &str| String::from_utf8(files[p].clone()).unwrap();
    assert!(text("zephyr/module.yml").contains("cmake: .\n  kconfig: Kconfig"));
    assert!(text("CMakeLists.txt").contains("zephyr_library_sources(cnn_model.c)"));
    assert!(text("Kconfig").contains("config KFLOW_CNN_MODEL\n"));
    let paths: Vec<PathBuf> = files.keys().map(PathBuf::from).collect();
    assert_eq!(paths.len(), 8, "{paths:?}");
    let header = text("cnn_model.h");
    for prototype in [
        "int cnn_init(void);",
        "int cnn_configure(void);",
        "int cnn_unload(uint32_t *out_buf);",
        "int cnn_load_input(uint32_t *src, uint32_t off, uint32_t n);",
    ] {
        assert!(header.contains(prototype), "{prototype}");
    }
}

#[test]
fn the_bin_parses_back_to_the_stream() {
    let program = common::spec_4_5();
    let files = generate(&program).unwrap().files;
    assert_eq!(
        parse_bin(&files["cnn_model.bin"]).unwrap(),
        model_blob(&program).unwrap()
    );
}

#[test]
fn cnn_model_regs_lists_the_writes_of_cnn_init_configure_and_start() {
    for program in [
        common::spec_4_5(),
        common::chw_image_max78000(),
        common::baseline_with_passthrough(),
    ] {
        let dir = write_files(&program);
        let trace = parse_trace(&run_on_host(&program, dir.path(), false));
        let regs = std::fs::read(dir.path().join("cnn_model.regs")).unwrap();
        let (device, list) = kflow_ai8x_codegen::RegisterList::parse(&regs).unwrap();
        assert_eq!(device, program.device);
        for (phase, writes) in list.phases() {
            let listed: Vec<(u32, u32)> = writes.iter().map(|w| (w.address, w.value)).collect();
            assert_eq!(trace.writes[phase], listed, "{phase} of {:?}", program.device);
        }
    }
}
