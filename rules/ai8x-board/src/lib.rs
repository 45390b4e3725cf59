//! A simulated MAX78002 or MAX78000 board behind kflow's device protocol.
//!
//! It takes the model as the generated code ships it (a [`ModelImage`]:
//! `cnn_model.regs`, `cnn_model.bin` and the channel counts), writes the
//! registers and the weight stream into its modelled register file,
//! kernel memory and bias memory, decodes the layer settings from the
//! register values ([`decode`]), reads the weights back out of kernel and
//! bias memory, refuses whatever does not fit its memories or disagrees
//! with itself, and runs `kflow-ai8x-sim` on what it decoded (never on a
//! YAML). Inputs arrive as the words `cnn_load_input` takes; outputs leave
//! as the buffer `cnn_unload` fills. Cycles come from the accelerator
//! cycle model of `kflow-ai8x` (spec §7.1) at the inference clock.
//!
//! It knows nothing of kflow's engine; `kflow-device` knows nothing of it.
//! [`connect`] opens any device URL, `sim://` ones onto a board in this
//! process.

pub mod decode;
pub mod image;
pub mod memory;

use std::fmt;

use kflow_ai8x::timing::CycleInputs;
use kflow_ai8x_codegen::{Device, InputLayout, OutputWidth, Passes, RegisterList, parse_bin};
use kflow_ai8x_sim as sim;
use kflow_device::message::{MAX_DATA, MAX_MODEL_BYTES};
use kflow_device::{
    Board, Client, DeviceError, DeviceInfo, DeviceUrl, ErrorCode, LinkTimeouts, OpenError, RetryPolicy, RunStatistics,
    Server, Transport,
};

pub use decode::Decoded;
pub use image::{ImageError, LayerChannels, ModelImage};

/// Why the board will not take a model, in words that name the register
/// (name and address) or memory address at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    pub fn new(message: impl Into<String>) -> Refusal {
        Refusal(message.into())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// A loaded model, ready to run.
pub struct Loaded {
    pub decoded: Decoded,
    /// Where `cnn_load_input`'s words hold the input (§5.3).
    input: InputLayout,
    pub cycles: u64,
}

/// The simulated board.
pub struct SimBoard {
    device: Device,
    loaded: Option<Loaded>,
    input: Option<Vec<u8>>,
    output: Option<Vec<u8>>,
}

impl SimBoard {
    pub fn new(board: kflow_device::SimBoard) -> SimBoard {
        SimBoard {
            device: match board {
                kflow_device::SimBoard::Max78002 => Device::Max78002,
                kflow_device::SimBoard::Max78000 => Device::Max78000,
            },
            loaded: None,
            input: None,
            output: None,
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.as_ref()
    }

    /// Configures the board from a model image, or says why not.
    pub fn configure(device: Device, bytes: &[u8]) -> Result<Loaded, Refusal> {
        let image = ModelImage::parse(bytes).map_err(|e| Refusal::new(e.to_string()))?;
        let (regs_device, list) =
            RegisterList::parse(&image.regs).map_err(|e| Refusal::new(format!("cnn_model.regs: {e}")))?;
        if regs_device != device {
            return Err(Refusal::new(format!(
                "cnn_model.regs was generated for the {}; this board is a {}",
                regs_device.name(),
                device.name()
            )));
        }
        let blob = parse_bin(&image.bin).map_err(|e| {
            let place = match e {
                kflow_ai8x_codegen::BlobError::TrailingWords { extra } => {
                    format!(" (from word {})", image.bin.len() / 4 - extra)
                }
                _ => String::new(),
            };
            Refusal::new(format!("cnn_model.bin: {e}{place}"))
        })?;
        let map = memory::AddressMap::new(device);
        let registers = memory::Registers::load(&map, &list)?;
        let memories = memory::Memories::load(device, &blob)?;
        let decoded = decode::decode(device, &map, &registers, &memories, &image)?;
        let cycles = cycles(&decoded)?;
        let input = InputLayout::new(&decoded.program);
        Ok(Loaded { decoded, input, cycles })
    }
}

/// One start-up cycle plus every layer by §7.1 (`kflow-ai8x` timing).
fn cycles(decoded: &Decoded) -> Result<u64, Refusal> {
    let shapes = sim::output_shapes(&decoded.network).map_err(|e| Refusal::new(e.to_string()))?;
    let mut total = 1u64;
    for ((l, output), kc) in decoded.program.layers.iter().zip(&shapes).zip(&decoded.kernel_counts) {
        let pooled = match l.pool {
            Some(p) => [
                (l.input.height.saturating_sub(p.size[0])) / p.stride + 1,
                (l.input.width.saturating_sub(p.size[1])) / p.stride + 1,
            ],
            None => [l.input.height, l.input.width],
        };
        use kflow_ai8x::Operator as T;
        use kflow_ai8x_codegen::Operator as O;
        total += kflow_ai8x::timing::cycles(&CycleInputs {
            operator: match l.operator {
                O::Conv1d => T::Conv1d,
                O::Conv2d => T::Conv2d,
                O::Linear => T::Linear,
                O::ConvTranspose2d => T::ConvTranspose2d,
                O::Passthrough => T::None,
            },
            in_passes: Passes::for_channels(l.input.channels).count,
            operands: l.eltwise.map_or(1, |e| e.operands),
            pool_first: l.eltwise.is_none_or(|e| e.pool_first),
            pool: l.pool.map(|p| p.size),
            pooled,
            kernel: l.kernel,
            pad: l.pad,
            flatten: l.flatten,
            output_width: output.width as u32,
            // MCNT counts the empty slots before the first output
            // processor of its instance; §5.5's kc, which the cycle model
            // takes, does not.
            kernel_count: kc.saturating_sub(
                l.output_processors.trailing_zeros() % 4
                    * Passes::for_channels(l.out_channels).count
                    * Passes::for_channels(l.input.channels).count,
            ),
        });
    }
    Ok(total)
}

fn clock_hz(device: Device) -> u64 {
    match device {
        Device::Max78000 => kflow_ai8x::Device::Max78000,
        Device::Max78002 => kflow_ai8x::Device::Max78002,
    }
    .clocks()
    .cnn_inference_hz
}

impl Loaded {
    /// Bytes of the input `cnn_load_input` takes (its words, little-endian).
    pub fn input_bytes(&self) -> usize {
        4 * self.input.words()
    }

    /// The network input held in the words `cnn_load_input` writes, as a
    /// CHW tensor (§5.3: HWC holds four channels of one pixel per word,
    /// pass after pass; CHW four pixels of one channel).
    pub fn input_tensor(&self, bytes: &[u8]) -> Result<sim::Tensor<i8>, DeviceError> {
        if bytes.len() != self.input_bytes() {
            return Err(DeviceError::new(
                ErrorCode::Refused,
                format!(
                    "an input of {} bytes; cnn_load_input takes {} words ({} bytes) for this model",
                    bytes.len(),
                    self.input_bytes() / 4,
                    self.input_bytes()
                ),
            ));
        }
        let shape = self.decoded.network.input;
        let data = self.input.unpack(bytes);
        sim::Tensor::new(shape, data)
            .ok_or_else(|| DeviceError::new(ErrorCode::Internal, "input tensor of the wrong size"))
    }

    /// Runs one inference; returns the buffer `cnn_unload` fills: the last
    /// layer's output channel-major (CHW), int8 bytes or little-endian
    /// int32 words for a 32-bit output.
    pub fn run(&self, input: &[u8]) -> Result<Vec<u8>, DeviceError> {
        let tensor = self.input_tensor(input)?;
        let output = sim::simulate(
            &self.decoded.network,
            &self.decoded.weights,
            &tensor,
            sim::SimOptions::default(),
        )
        .map_err(|e| {
            DeviceError::new(
                ErrorCode::Refused,
                format!("the accelerator cannot run this model: {e}"),
            )
        })?;
        let last = self.decoded.program.layers.last().map(|l| l.output_width);
        Ok(output_bytes(&output, last))
    }
}

/// The buffer `cnn_unload` fills for a simulator output: channel-major
/// (CHW) int8 bytes, or little-endian int32 words when the last layer
/// writes 32 bits (`width` of the last layer; `None`: as the output is).
/// The host packs its own simulator's output the same way to compare it
/// with a board's bit for bit.
pub fn output_bytes(output: &sim::Output, width: Option<OutputWidth>) -> Vec<u8> {
    match (output, width) {
        (sim::Output::Int8(t), _) => t.data.iter().map(|v| *v as u8).collect(),
        (sim::Output::Int32(t), Some(OutputWidth::Bits32) | None) => {
            t.data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        (sim::Output::Int32(t), Some(OutputWidth::Bits8)) => t.data.iter().map(|v| *v as u8).collect(),
    }
}

impl Board for SimBoard {
    fn info(&self) -> DeviceInfo {
        let d = self.device;
        let kernel_columns: u32 = (0..kflow_ai8x_codegen::PROCESSORS).map(|p| d.kernel_columns(p)).sum();
        DeviceInfo {
            board: d.name().to_ascii_lowercase(),
            accelerator: format!("{} CNN (simulated)", d.name()),
            kernel_memory_bytes: kernel_columns * kflow_ai8x_codegen::COLUMN_BYTES as u32,
            bias_memory_bytes: kflow_ai8x_codegen::QUADRANTS * d.bias_bytes(),
            data_memory_bytes: 16 * d.instance_bytes(),
            clock_hz: clock_hz(d),
            firmware_version: concat!("kflow-sim ", env!("CARGO_PKG_VERSION")).to_owned(),
            identity: format!("sim-{}", d.name().to_ascii_lowercase()),
            max_model_bytes: MAX_MODEL_BYTES,
            max_chunk_bytes: MAX_DATA as u32,
        }
    }

    fn load_model(&mut self, model: &[u8]) -> Result<(), DeviceError> {
        self.loaded = None;
        self.input = None;
        self.output = None;
        let loaded = SimBoard::configure(self.device, model).map_err(|r| DeviceError::new(ErrorCode::Refused, r.0))?;
        self.loaded = Some(loaded);
        Ok(())
    }

    fn load_input(&mut self, input: &[u8]) -> Result<(), DeviceError> {
        let Some(loaded) = &self.loaded else {
            return Err(DeviceError::new(ErrorCode::NoModel, "flash a model first"));
        };
        // Checked now so that a wrong size is told at once, not at run.
        loaded.input_tensor(input)?;
        self.input = Some(input.to_vec());
        self.output = None;
        Ok(())
    }

    fn run(&mut self) -> Result<RunStatistics, DeviceError> {
        let Some(loaded) = &self.loaded else {
            return Err(DeviceError::new(ErrorCode::NoModel, "flash a model first"));
        };
        let Some(input) = &self.input else {
            return Err(DeviceError::new(ErrorCode::NoInput, "load an input first"));
        };
        self.output = Some(loaded.run(input)?);
        let clock = clock_hz(self.device);
        Ok(RunStatistics {
            cycles: Some(loaded.cycles),
            time_us: Some((u128::from(loaded.cycles) * 1_000_000).div_ceil(u128::from(clock)) as u64),
            instructions: None,
        })
    }

    fn output(&self) -> Option<&[u8]> {
        self.output.as_deref()
    }

    fn reset(&mut self) {
        self.input = None;
        self.output = None;
    }
}

/// A client for any device URL: `sim://` starts a [`SimBoard`] on a thread
/// of this process behind an in-process link (it ends when the client is
/// dropped); `tcp://` and `serial://` connect.
pub fn connect(
    url: &DeviceUrl,
    timeouts: LinkTimeouts,
    policy: RetryPolicy,
) -> Result<Client<Box<dyn Transport>>, OpenError> {
    match url {
        DeviceUrl::Sim(board) => {
            let server = Server::new(SimBoard::new(*board));
            let (transport, _thread) = kflow_device::spawn_in_process(server, &url.to_string());
            Ok(Client::new(Box::new(transport), policy))
        }
        _ => Client::connect(url, timeouts, policy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(board: &str) -> Client<Box<dyn Transport>> {
        let url: DeviceUrl = format!("sim://{board}").parse().unwrap();
        connect(&url, LinkTimeouts::default(), RetryPolicy::default()).unwrap()
    }

    #[test]
    fn sim_urls_open_a_board_of_that_kind_in_this_process() {
        for (board, clock) in [("max78002", 200_000_000), ("max78000", 50_000_000)] {
            let mut client = sim(board);
            assert_eq!(client.device(), format!("sim://{board}"));
            let info = client.device_info().unwrap();
            assert_eq!(info.board, board);
            assert_eq!(info.clock_hz, clock);
            assert_eq!(info.identity, format!("sim-{board}"));
        }
    }

    #[test]
    fn a_model_that_is_no_image_is_refused_with_why() {
        let mut client = sim("max78002");
        let error = client.flash(b"not a model", |_| {}).unwrap_err();
        let refused = error.device_error().map(|e| (e.code, e.message.clone()));
        assert_eq!(
            refused,
            Some((ErrorCode::Refused, "not a kflow model image (no KFMD magic)".to_owned())),
            "{error}"
        );
        let error = client.infer(&[0; 4]).unwrap_err();
        assert_eq!(
            error.device_error().map(|e| e.code),
            Some(ErrorCode::NoModel),
            "{error}"
        );
    }

    #[test]
    fn max78000_board_refuses_a_max78002_register_list() {
        let image = ModelImage {
            input: [1, 4, 4],
            layers: vec![LayerChannels { input: 1, output: 1 }],
            load_address: 0,
            unload_address: 0,
            regs: RegisterList::default().to_bytes(Device::Max78002),
            bin: vec![0; 8],
        };
        let refusal = SimBoard::configure(Device::Max78000, &image.to_bytes().unwrap())
            .err()
            .unwrap();
        assert!(refusal.0.contains("generated for the MAX78002"), "{refusal}");
    }
}
