//! The two CNN accelerators and their fixed limits (spec/max78002.md §1, all
//! [code] facts from the izer's device tables unless noted).

use std::fmt;
use std::str::FromStr;

use kflow_ai8x_codegen as cg;
use serde::{Deserialize, Serialize};

/// Processors per device: 4 quadrants × 16.
pub const PROCESSORS: usize = 64;
/// Quadrants (ADI also says "groups").
pub const QUADRANTS: usize = 4;
/// Processors per quadrant.
pub const PROCESSORS_PER_QUADRANT: usize = 16;
/// Processors that share one data-memory instance (`4k..4k+3`).
pub const PROCESSORS_PER_INSTANCE: usize = 4;
/// Data-memory instances (one per 4 processors).
pub const DATA_INSTANCES: usize = PROCESSORS / PROCESSORS_PER_INSTANCE;
/// Bytes in one weight-memory column: a 72-bit word, one 3×3 8-bit kernel.
pub const COLUMN_BYTES: u32 = 9;
/// Bits in one weight-memory column.
pub const COLUMN_BITS: u32 = 72;
/// Input and output channels per pass.
pub const CHANNELS_PER_PASS: u32 = 64;
/// Passes (input or output expansion) per layer.
pub const MAX_PASSES: u32 = 16;
/// Channels per layer: 16 passes × 64. The MAX78002 README says 2048; the
/// izer enforces 1024 (§10 item 2).
pub const MAX_CHANNELS: u32 = MAX_PASSES * CHANNELS_PER_PASS;
/// `H·W·in_expand` must stay below this (frame counter width).
pub const FRAME_LIMIT: u64 = 1 << 21;
/// Streaming layers, which must be the first consecutive layers.
pub const MAX_STREAMING_LAYERS: u32 = 8;
/// The accumulator receives `BIAS_DIV · bias`.
pub const BIAS_DIV: i64 = 128;
/// Element-wise operands per layer.
pub const MAX_OPERANDS: u32 = 16;
/// Pool kernel and pool stride, per dimension.
pub const MAX_POOL: u32 = 16;
/// Conv1d kernel length.
pub const MAX_CONV1D_KERNEL: u32 = 9;
/// Padding (all operators).
pub const MAX_PAD: u32 = 2;
/// Flattened input features (§2.5, §10 item 15: ai8x-training's `Linear`
/// asserts `in_features ≤ 1024`, which the README's 16384 never reaches).
pub const MAX_FLATTEN_FEATURES: u64 = 1024;
/// Pixels per channel a flatten layer can take (`H_p·W_p`).
pub const MAX_FLATTEN_PIXELS: u64 = 256;
/// Linear layer inputs and outputs.
pub const MAX_LINEAR_FEATURES: u32 = 1024;
/// Range of the total hardware shift `S = output_shift + 8 − b` (§2.11).
pub const SHIFT_RANGE: (i32, i32) = (-15, 15);
/// Processors whose weight memory is larger on the MAX78002 (§1).
pub const LARGE_PROCESSORS: [usize; 4] = [0, 16, 32, 48];

/// A CNN accelerator kflow targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// Die AI85.
    Max78000,
    /// Die AI87.
    Max78002,
}

/// A device name kflow does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown device `{0}`: expected `max78000` or `max78002`")]
pub struct UnknownDevice(pub String);

impl FromStr for Device {
    type Err = UnknownDevice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "max78000" | "ai85" | "85" => Ok(Device::Max78000),
            "max78002" | "ai87" | "87" => Ok(Device::Max78002),
            _ => Err(UnknownDevice(s.to_owned())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Max78000 => "max78000",
            Device::Max78002 => "max78002",
        })
    }
}

/// Clock frequencies in Hz (§1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    /// Internal primary oscillator.
    pub ipo_hz: u64,
    /// APB (PCLK).
    pub apb_hz: u64,
    /// Internal PLL (MAX78002 only).
    pub ipll_hz: Option<u64>,
    /// CNN clock while generated code loads weights and data.
    pub cnn_load_hz: u64,
    /// CNN clock during inference in generated code (MAX78002: IPLL ÷1,
    /// "pipeline" mode, the default).
    pub cnn_inference_hz: u64,
}

impl From<Device> for cg::Device {
    fn from(device: Device) -> cg::Device {
        match device {
            Device::Max78000 => cg::Device::Max78000,
            Device::Max78002 => cg::Device::Max78002,
        }
    }
}

// Facts the code generator needs too (id, memory sizes, layer limits) are
// stated once, in `kflow-ai8x-codegen`.
impl Device {
    /// ADI's device id (85, 87).
    pub fn id(self) -> u32 {
        cg::Device::from(self).id()
    }

    /// Bytes in one data-memory instance.
    pub fn data_instance_bytes(self) -> u32 {
        cg::Device::from(self).instance_bytes()
    }

    /// Address stride between data-memory instances (only
    /// `data_instance_bytes` of it are populated).
    pub fn data_instance_stride(self) -> u32 {
        cg::Device::from(self).instance_stride()
    }

    /// The conventional ping-pong offset: half an instance (README and
    /// ai8x-training's yamlwriter).
    pub fn half_data_offset(self) -> u32 {
        self.data_instance_bytes() / 2
    }

    /// Total data memory in bytes.
    pub fn data_memory_bytes(self) -> u64 {
        u64::from(self.data_instance_bytes()) * DATA_INSTANCES as u64
    }

    /// Weight-memory columns of processor `p` (0..63).
    pub fn weight_columns(self, processor: usize) -> u32 {
        cg::Device::from(self).kernel_columns(processor as u32)
    }

    /// Total weight memory in bytes (442,368 / 2,396,160, as the izer prints).
    pub fn weight_memory_bytes(self) -> u64 {
        (0..PROCESSORS)
            .map(|p| u64::from(self.weight_columns(p)) * u64::from(COLUMN_BYTES))
            .sum()
    }

    /// Physical weight RAMs of a processor as `[start, end)` column ranges;
    /// a depthwise layer's kernels must not straddle two (§5.5).
    pub fn weight_rams(self, processor: usize) -> Vec<(u32, u32)> {
        match self {
            Device::Max78000 => vec![(0, 768)],
            Device::Max78002 => {
                let mut rams: Vec<(u32, u32)> = (0..4).map(|i| (i * 1024, (i + 1) * 1024)).collect();
                if LARGE_PROCESSORS.contains(&processor) {
                    rams.extend((0..4).map(|i| (4096 + i * 256, 4096 + (i + 1) * 256)));
                }
                rams
            }
        }
    }

    /// Bias bytes per quadrant.
    pub fn bias_bytes_per_quadrant(self) -> u32 {
        cg::Device::from(self).bias_bytes()
    }

    /// Hardware layers.
    pub fn max_layers(self) -> usize {
        cg::Device::from(self).max_layers()
    }

    /// Rows or columns of any layer's input or output.
    pub fn max_rows_cols(self) -> u32 {
        cg::Device::from(self).max_rows_cols()
    }

    /// Non-streaming pixels per channel in HWC layout (one word per pixel).
    pub fn max_pixels_hwc(self) -> u32 {
        self.data_instance_bytes() / 4
    }

    /// Non-streaming pixels per channel in CHW layout (one byte per pixel).
    pub fn max_pixels_chw(self) -> u32 {
        self.data_instance_bytes()
    }

    /// Compute cache (TRAM) entries of 16 bits per processor.
    pub fn tram_entries(self) -> u32 {
        match self {
            Device::Max78000 => 3072,
            Device::Max78002 => 12288,
        }
    }

    /// Weight widths in bits; binary (±1) counts as 1 and is separate.
    pub fn weight_widths(self) -> &'static [u8] {
        &[1, 2, 4, 8]
    }

    /// Binary ±1 weights (MAX78002 only).
    pub fn supports_binary_weights(self) -> bool {
        self == Device::Max78002
    }

    /// Depthwise convolution, `groups = Cin = Cout` (MAX78002 only).
    pub fn supports_depthwise(self) -> bool {
        self == Device::Max78002
    }

    /// Largest conv1d dilation.
    pub fn max_conv1d_dilation(self) -> u32 {
        match self {
            Device::Max78000 => 1023,
            Device::Max78002 => 2047,
        }
    }

    /// Largest pool dilation.
    pub fn max_pool_dilation(self) -> u32 {
        match self {
            Device::Max78000 => 1,
            Device::Max78002 => 16,
        }
    }

    /// Passes of a pooling-only layer (`MAX_POOL_PASSES`).
    pub fn max_pool_passes(self) -> u32 {
        match self {
            Device::Max78000 => 1,
            Device::Max78002 => 65536,
        }
    }

    /// Clocks of the device and of the code the izer generates.
    pub fn clocks(self) -> Clocks {
        match self {
            Device::Max78000 => Clocks {
                ipo_hz: 100_000_000,
                apb_hz: 50_000_000,
                ipll_hz: None,
                cnn_load_hz: 50_000_000,
                cnn_inference_hz: 50_000_000,
            },
            Device::Max78002 => Clocks {
                ipo_hz: 120_000_000,
                apb_hz: 60_000_000,
                ipll_hz: Some(200_000_000),
                cnn_load_hz: 50_000_000,
                cnn_inference_hz: 200_000_000,
            },
        }
    }
}

/// Quadrant of processor `p`.
pub fn quadrant(processor: usize) -> usize {
    processor / PROCESSORS_PER_QUADRANT
}

/// Global data-memory instance of processor `p` (0..15).
pub fn instance(processor: usize) -> usize {
    processor / PROCESSORS_PER_INSTANCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_memory_totals_match_the_izer() {
        assert_eq!(Device::Max78000.weight_memory_bytes(), 442_368);
        assert_eq!(Device::Max78002.weight_memory_bytes(), 2_396_160);
    }

    #[test]
    fn data_memory_totals_are_512_and_1280_kib() {
        assert_eq!(Device::Max78000.data_memory_bytes(), 512 * 1024);
        assert_eq!(Device::Max78002.data_memory_bytes(), 1280 * 1024);
        assert_eq!(Device::Max78000.half_data_offset(), 0x4000);
        assert_eq!(Device::Max78002.half_data_offset(), 0xA000);
    }

    #[test]
    fn pixel_limits_follow_from_instance_size() {
        assert_eq!(Device::Max78000.max_pixels_hwc(), 8192);
        assert_eq!(Device::Max78000.max_pixels_chw(), 32768);
        assert_eq!(Device::Max78002.max_pixels_hwc(), 20480);
        assert_eq!(Device::Max78002.max_pixels_chw(), 81920);
    }

    #[test]
    fn weight_rams_cover_every_column_once() {
        for device in [Device::Max78000, Device::Max78002] {
            for p in 0..PROCESSORS {
                let rams = device.weight_rams(p);
                let covered: u32 = rams.iter().map(|(s, e)| e - s).sum();
                assert_eq!(covered, device.weight_columns(p));
                assert!(rams.windows(2).all(|w| w[0].1 == w[1].0));
            }
        }
    }

    #[test]
    fn device_names_parse_case_insensitively() {
        assert_eq!("MAX78002".parse::<Device>().unwrap(), Device::Max78002);
        assert_eq!("ai85".parse::<Device>().unwrap(), Device::Max78000);
        assert!("max78001".parse::<Device>().is_err());
    }
}
