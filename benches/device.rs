//! The device protocol on loopback, against peers measured in the same run:
//!
//! - flashing: `Client::flash` of a large model image (24 conv2d layers of
//!   64 → 64 channels, 3×3, over 64 × 32 × 32, generated for the MAX78002
//!   by kflow's own chain: about 1 MB) to a simulated board behind
//!   `Server::serve_tcp` on 127.0.0.1, in MB/s, against a raw TCP loopback
//!   copy of the same bytes (written whole on one socket, read on the
//!   other); the same over the in-process transport of `sim://`; and both
//!   again to a board that only keeps the bytes, which leaves the
//!   protocol's own cost (chunks, acknowledgements, CRCs, digests) without
//!   the simulated board's decoding and re-encoding of the model;
//! - inferences per second on the board (`Client::infer`: the input in
//!   chunks, run, the output read back) over TCP and in-process, against
//!   calling `kflow_ai8x_sim::simulate` directly on the network and weights
//!   the board decoded, as the board does, for a small model (izer
//!   reference case 001-conv2d) and the large one; and the board's own
//!   calls without the protocol, to tell its work from the protocol's.
//!
//! Every measurement is a median over rounds that interleave the paths
//! (flashes one by one, inferences call by call), so that they share the
//! machine's noise.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use kflow_ai8x_board::{ModelImage, SimBoard};
use kflow_ai8x_sim::SimOptions;
use kflow_device::{
    Board, Client, DeviceError, DeviceInfo, DeviceUrl, ErrorCode, LinkTimeouts, RetryPolicy, RunStatistics, Server,
    Transport,
};

const LAYERS: usize = 24;
const CHANNELS: usize = 64;
const SIDE: usize = 32;
const FLASH_ROUNDS: usize = 15;
const INFER_ROUNDS: usize = 5;
/// Inferences of each path in one round run for at least this long.
const INFER_TIME: Duration = Duration::from_millis(300);
const SMALL_CASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/rules/ai8x/tests/data/izer-reference/001-conv2d"
);

type Device = Client<Box<dyn Transport>>;

fn main() -> Result<(), String> {
    let load_before = load_average();
    let large = large_model()?;
    let small = small_model()?;
    println!(
        "device protocol on loopback, simulated MAX78002, {} cores, load average {load_before}",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    flash(&large)?;
    for model in [&small, &large] {
        infer(model)?;
    }
    println!("load average at the end: {}", load_average());
    Ok(())
}

struct Model {
    name: String,
    image: Vec<u8>,
    input: Vec<u8>,
}

/// `LAYERS` conv2d layers ping-ponging between the halves of data memory,
/// with seeded int8 weights and biases.
fn large_model() -> Result<Model, String> {
    let mut yaml = String::from("arch: bench\ndataset: none\nlayers:\n");
    let processors = u64::MAX >> (64 - CHANNELS);
    for i in 0..LAYERS {
        let (in_offset, out_offset) = if i % 2 == 0 { (0, 0xa000) } else { (0xa000, 0) };
        yaml.push_str(&format!(
            "  - processors: 0x{processors:016x}\n    output_processors: 0x{processors:016x}\n    \
             in_offset: 0x{in_offset:04x}\n    out_offset: 0x{out_offset:04x}\n    op: conv2d\n    \
             kernel_size: 3x3\n    pad: 1\n    activate: ReLU\n    quantization: 8\n    output_shift: -3\n"
        ));
    }
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = (0..LAYERS)
        .flat_map(|i| {
            let weight = (0..CHANNELS * CHANNELS * 9).map(|_| next()).collect();
            let bias = (0..CHANNELS).map(|_| next()).collect();
            [
                (format!("{i}.weight"), vec![CHANNELS, CHANNELS, 3, 3], weight),
                (format!("{i}.bias"), vec![CHANNELS], bias),
            ]
        })
        .collect();
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::I8, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let weights = safetensors::serialize(views, None).map_err(|e| e.to_string())?;
    let shape = kflow_ai8x::Shape::new(CHANNELS as u32, SIDE as u32, SIDE as u32);
    model(
        format!("{LAYERS} conv2d layers {CHANNELS}→{CHANNELS}, 3×3, over {CHANNELS}×{SIDE}×{SIDE}"),
        &yaml,
        &weights,
        shape,
    )
}

fn small_model() -> Result<Model, String> {
    let read = |f: &str| std::fs::read(format!("{SMALL_CASE}/{f}")).map_err(|e| format!("{SMALL_CASE}/{f}: {e}"));
    let yaml = String::from_utf8(read("network.yaml")?).map_err(|e| e.to_string())?;
    model(
        "izer reference 001-conv2d (3 conv2d layers over 40×12×12)".into(),
        &yaml,
        &read("weights.safetensors")?,
        kflow_ai8x::Shape::new(40, 12, 12),
    )
}

/// The network taken through check, allocation, program and code
/// generation to the image a board is flashed with, and a seeded input.
fn model(name: String, yaml: &str, weights_file: &[u8], shape: kflow_ai8x::Shape) -> Result<Model, String> {
    let network = kflow_ai8x::parse_network(yaml).map_err(|e| e.to_string())?;
    let weights = kflow_ai8x::Weights::from_safetensors(weights_file).map_err(|e| e.to_string())?;
    let report = kflow_ai8x::check(kflow_ai8x::Device::Max78002, &network, &weights, shape);
    let allocation = match report.allocation {
        Some(allocation) if report.passed => allocation,
        _ => return Err(format!("{name}: the checker rejects it")),
    };
    let values = kflow_ai8x::int8_values(weights_file).map_err(|e| e.to_string())?;
    let program = kflow_ai8x::codegen::program(&allocation, &values).map_err(|e| e.to_string())?;
    let mut files = kflow_ai8x_codegen::generate(&program).map_err(|e| e.to_string())?.files;
    let mut file = |name: &str| files.remove(name).ok_or(format!("no {name} generated"));
    let image = ModelImage::new(&program, file("cnn_model.regs")?, file("cnn_model.bin")?)
        .and_then(|image| image.to_bytes())
        .map_err(|e| e.to_string())?;
    let loaded = SimBoard::configure(kflow_ai8x_codegen::Device::Max78002, &image).map_err(|e| e.to_string())?;
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let input = (0..loaded.input_bytes()).map(|_| next()).collect();
    Ok(Model { name, image, input })
}

fn xorshift(mut state: u64) -> impl FnMut() -> u8 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    }
}

/// A board that keeps the model's bytes and nothing else.
struct StoringBoard {
    model: Vec<u8>,
}

impl Board for StoringBoard {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            board: "storing".into(),
            identity: "storing".into(),
            ..SimBoard::new(kflow_device::SimBoard::Max78002).info()
        }
    }

    fn load_model(&mut self, model: &[u8]) -> Result<(), DeviceError> {
        self.model = model.to_vec();
        Ok(())
    }

    fn load_input(&mut self, _: &[u8]) -> Result<(), DeviceError> {
        Err(DeviceError::new(ErrorCode::Refused, "this board only stores models"))
    }

    fn run(&mut self) -> Result<RunStatistics, DeviceError> {
        Err(DeviceError::new(ErrorCode::Refused, "this board only stores models"))
    }

    fn output(&self) -> Option<&[u8]> {
        None
    }

    fn reset(&mut self) {}
}

/// Serves `board` on a free loopback port from a thread that lives as long
/// as the bench.
fn serve_tcp<B: Board + Send + 'static>(board: B) -> Result<Device, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    thread::spawn(move || Server::new(board).serve_tcp(&listener, LinkTimeouts::default()));
    let url = DeviceUrl::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    Client::connect(&url, LinkTimeouts::default(), RetryPolicy::default()).map_err(|e| e.to_string())
}

fn in_process<B: Board + Send + 'static>(board: B, endpoint: &str) -> Device {
    let (transport, _) = kflow_device::spawn_in_process(Server::new(board), endpoint);
    Client::new(Box::new(transport), RetryPolicy::default())
}

fn sim_board() -> SimBoard {
    SimBoard::new(kflow_device::SimBoard::Max78002)
}

/// The peer: the same bytes written whole on one loopback socket and read
/// on the other, until the reader has them all and says so with one byte.
struct RawCopy {
    writer: TcpStream,
}

impl RawCopy {
    fn new(len: usize) -> Result<RawCopy, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        thread::spawn(move || -> std::io::Result<()> {
            let (mut stream, _) = listener.accept()?;
            let mut buf = vec![0; 256 * 1024];
            loop {
                let mut left = len;
                while left > 0 {
                    match stream.read(&mut buf[..left.min(256 * 1024)])? {
                        0 => return Ok(()),
                        n => left -= n,
                    }
                }
                stream.write_all(&[1])?;
            }
        });
        let writer = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        writer.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(RawCopy { writer })
    }

    fn copy(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer.write_all(bytes).map_err(|e| e.to_string())?;
        let mut done = [0u8];
        self.writer.read_exact(&mut done).map_err(|e| e.to_string())
    }
}

impl Drop for RawCopy {
    fn drop(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Both);
    }
}

fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<Duration, String> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn flash(model: &Model) -> Result<(), String> {
    let image = &model.image;
    let mut raw = RawCopy::new(image.len())?;
    let mut tcp_sim = serve_tcp(sim_board())?;
    let mut tcp_store = serve_tcp(StoringBoard { model: Vec::new() })?;
    let mut local_sim = in_process(sim_board(), "sim://max78002");
    let mut local_store = in_process(StoringBoard { model: Vec::new() }, "sim://storing");
    let flash = |client: &mut Device| client.flash(image, |_| {}).map(drop).map_err(|e| e.to_string());
    let configure = || {
        SimBoard::configure(kflow_ai8x_codegen::Device::Max78002, image)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    // Warm-up: connections, allocations, the first configuration.
    raw.copy(image)?;
    for client in [&mut tcp_sim, &mut tcp_store, &mut local_sim, &mut local_store] {
        flash(client)?;
    }
    let mut times: [Vec<f64>; 6] = Default::default();
    for _ in 0..FLASH_ROUNDS {
        let round = [
            timed(|| raw.copy(image))?,
            timed(|| flash(&mut tcp_sim))?,
            timed(|| flash(&mut tcp_store))?,
            timed(|| flash(&mut local_sim))?,
            timed(|| flash(&mut local_store))?,
            timed(configure)?,
        ];
        for (column, time) in times.iter_mut().zip(round) {
            column.push(time.as_secs_f64());
        }
    }
    let [raw, tcp_sim, tcp_store, local_sim, local_store, configure] = times.map(median);
    let mb = image.len() as f64 / 1e6;
    println!();
    println!(
        "flash: {} ({} bytes), median of {FLASH_ROUNDS} rounds; MB = 10^6 bytes",
        model.name,
        image.len()
    );
    println!("  {:<48} {:>9} {:>10} {:>12}", "path", "ms", "MB/s", "/ raw TCP");
    let row = |what: &str, seconds: f64| {
        println!(
            "  {what:<48} {:>9.2} {:>10.1} {:>12.3}",
            seconds * 1e3,
            mb / seconds,
            raw / seconds
        );
    };
    row("raw TCP loopback copy (peer)", raw);
    row("Client::flash over TCP, simulated board", tcp_sim);
    row("Client::flash over TCP, storing board", tcp_store);
    row("Client::flash in-process, simulated board", local_sim);
    row("Client::flash in-process, storing board", local_store);
    println!(
        "  {:<48} {:>9.2}   (the simulated board's share of a flash)",
        "SimBoard::configure alone",
        configure * 1e3
    );
    println!(
        "ratio (flash over TCP to the simulated board / raw TCP copy, MB/s) = {:.3}",
        raw / tcp_sim
    );
    println!(
        "ratio (flash over TCP to the storing board / raw TCP copy, MB/s) = {:.3}",
        raw / tcp_store
    );
    Ok(())
}

fn infer(model: &Model) -> Result<(), String> {
    let loaded = SimBoard::configure(kflow_ai8x_codegen::Device::Max78002, &model.image).map_err(|e| e.to_string())?;
    let network = &loaded.decoded.network;
    let weights = &loaded.decoded.weights;
    let tensor = loaded.input_tensor(&model.input).map_err(|e| e.to_string())?;
    let macs = kflow_ai8x_sim::macs(network).map_err(|e| e.to_string())?;
    let mut tcp = serve_tcp(sim_board())?;
    let mut local = in_process(sim_board(), "sim://max78002");
    let expected = loaded.run(&model.input).map_err(|e| e.to_string())?;
    for client in [&mut tcp, &mut local] {
        client.flash(&model.image, |_| {}).map_err(|e| e.to_string())?;
        let inference = client.infer(&model.input).map_err(|e| e.to_string())?;
        if inference.output != expected {
            return Err(format!(
                "{}: the board's output differs from the simulator's",
                client.device()
            ));
        }
    }
    let mut simulate = || {
        kflow_ai8x_sim::simulate(network, weights, &tensor, SimOptions::default())
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let infer = |client: &mut Device| client.infer(&model.input).map(drop).map_err(|e| e.to_string());
    // The board's own work without the protocol: the input unpacked (at
    // load and again at run), the simulator, the output packed.
    let mut alone = sim_board();
    alone.load_model(&model.image).map_err(|e| e.to_string())?;
    let mut board_alone = || {
        alone.load_input(&model.input).map_err(|e| e.to_string())?;
        alone.run().map_err(|e| e.to_string())?;
        alone.output().map(drop).ok_or("no output".to_string())
    };
    let mut in_process = || infer(&mut local);
    let mut over_tcp = || infer(&mut tcp);
    let mut rounds: [Vec<f64>; 4] = Default::default();
    for _ in 0..INFER_ROUNDS {
        let round = rates([&mut simulate, &mut board_alone, &mut in_process, &mut over_tcp])?;
        for (column, rate) in rounds.iter_mut().zip(round) {
            column.push(rate);
        }
    }
    let [direct, alone, local, tcp] = rounds.map(median);
    println!();
    println!(
        "inference: {}, {macs} MACs, input {} bytes, output {} bytes; median of {INFER_ROUNDS} rounds",
        model.name,
        model.input.len(),
        expected.len()
    );
    println!(
        "  {:<48} {:>12} {:>11} {:>14}",
        "path", "inferences/s", "µs each", "/ simulator"
    );
    for (what, per_second) in [
        ("kflow_ai8x_sim::simulate directly (peer)", direct),
        ("SimBoard load_input + run + output, no protocol", alone),
        ("Client::infer in-process (sim://)", local),
        ("Client::infer over TCP", tcp),
    ] {
        println!(
            "  {what:<48} {per_second:>12.1} {:>11.1} {:>14.3}",
            1e6 / per_second,
            per_second / direct
        );
    }
    println!(
        "ratio (over TCP / simulator directly, inferences/s) = {:.3}",
        tcp / direct
    );
    println!(
        "ratio (in-process / simulator directly, inferences/s) = {:.3}",
        local / direct
    );
    Ok(())
}

/// Calls the paths in turn, one call each, so that they share the
/// machine's noise call by call, until each has run for [`INFER_TIME`] and
/// at least three times; calls per second of each.
fn rates<const N: usize>(mut paths: [&mut dyn FnMut() -> Result<(), String>; N]) -> Result<[f64; N], String> {
    let mut spent = [Duration::ZERO; N];
    let mut calls = [0u32; N];
    while calls[0] < 3 || spent.iter().any(|s| *s < INFER_TIME) {
        for ((path, spent), calls) in paths.iter_mut().zip(&mut spent).zip(&mut calls) {
            let start = Instant::now();
            path()?;
            *spent += start.elapsed();
            *calls += 1;
        }
    }
    Ok(std::array::from_fn(|i| f64::from(calls[i]) / spent[i].as_secs_f64()))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
