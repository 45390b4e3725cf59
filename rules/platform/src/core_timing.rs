//! Time of software inference on a Cortex-M core, from the instructions
//! an emulator counted exactly (QEMU's `-icount`, see kflow-cm-firmware).
//!
//! QEMU models no pipeline, so cycles are instructions times a
//! cycles-per-instruction figure per core. The Cortex-M4's figure, and
//! how it was derived, is `kflow_ai8x::timing::CORTEX_M4_CYCLES_PER_INSTRUCTION`,
//! which the MAX78000/MAX78002 software baseline uses too, as it uses the
//! same model of the instructions kflow's generated C executes.

use kflow_ai8x::timing::{CORTEX_M4_CYCLES_PER_INSTRUCTION, M4_SOFTWARE, SoftwareModel};

/// How instructions become cycles on one core.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoreTiming {
    pub cycles_per_instruction: f64,
    /// Where the figure comes from, for reports.
    pub basis: &'static str,
    /// Instructions of kflow's generated C inference on this core, fitted
    /// to QEMU's counts: a latency estimate without running anything.
    pub software: SoftwareModel,
}

const CORTEX_M4: CoreTiming = CoreTiming {
    cycles_per_instruction: CORTEX_M4_CYCLES_PER_INSTRUCTION,
    basis: "Cortex-M4 TRM timings of the generated kernels' inner loop (1.2), rounded up for the code around it",
    software: M4_SOFTWARE,
};

/// The timing of `cpu` (a platform's `cpu`, e.g. `cortex-m4f`), when kflow
/// has one.
pub fn core_timing(cpu: &str) -> Option<CoreTiming> {
    match cpu.to_ascii_lowercase().as_str() {
        "cortex-m4" | "cortex-m4f" => Some(CORTEX_M4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_m4_with_or_without_fpu_has_a_timing_and_others_have_none() {
        assert_eq!(core_timing("cortex-m4f"), Some(CORTEX_M4));
        assert_eq!(core_timing("Cortex-M4"), Some(CORTEX_M4));
        assert_eq!(core_timing("cortex-m7"), None);
    }
}
