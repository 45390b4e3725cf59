//! Where a model is deployed, and whether it fits there: platform
//! descriptions (MAX78000/MAX78002 with their CNN accelerator, CPU-only
//! Cortex-M parts), the memory fit of an int8 model on a CPU, and the
//! checks users add: constraint expressions over the resource report and
//! external commands.

mod constraints;
mod core_timing;
mod cpu_fit;
mod error;
mod external;
mod platform;
mod software_latency;

pub use constraints::{Resources, evaluate, validate};
pub use core_timing::{CoreTiming, core_timing};
pub use cpu_fit::{CpuFit, cpu_fit};
pub use error::PlatformError;
pub use external::{ExternalVerdict, run_check};
pub use platform::{CheckFile, Platform};
pub use software_latency::{software_latency_us, software_layers};
