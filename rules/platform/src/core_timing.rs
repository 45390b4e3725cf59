//! Time of software inference on a Cortex-M core, from the instructions
//! an emulator counted exactly (QEMU's `-icount`, see kflow-cm-firmware).
//!
//! QEMU models no pipeline, so cycles are instructions times a
//! cycles-per-instruction figure per core (the M4's from its timings, the
//! M7's scaled from the M4's). The Cortex-M4's figure, and
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

/// The Cortex-M7 issues up to two instructions per cycle, and Arm publishes
/// no per-instruction timings for it as it does for the M4. Its figure
/// scales the M4's by Arm's published CoreMark/MHz of the two cores (3.40
/// for the M4, 5.01 for the M7): 1.25 x 3.40 / 5.01 = 0.85. The instruction
/// model is the M4's: both run the same Thumb-2 and DSP instructions, and
/// QEMU counts the same kernels compiled for either within a few percent.
const CORTEX_M7: CoreTiming = CoreTiming {
    cycles_per_instruction: 0.85,
    basis: "the Cortex-M4 figure scaled by Arm's CoreMark/MHz of the M4 (3.40) and the M7 (5.01)",
    software: M4_SOFTWARE,
};

/// The timing of `cpu` (a platform's `cpu`, e.g. `cortex-m4f`), when kflow
/// has one.
pub fn core_timing(cpu: &str) -> Option<CoreTiming> {
    match cpu.to_ascii_lowercase().as_str() {
        "cortex-m4" | "cortex-m4f" => Some(CORTEX_M4),
        "cortex-m7" | "cortex-m7f" => Some(CORTEX_M7),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_m4_and_m7_with_or_without_fpu_have_a_timing_and_others_have_none() {
        assert_eq!(core_timing("cortex-m4f"), Some(CORTEX_M4));
        assert_eq!(core_timing("Cortex-M4"), Some(CORTEX_M4));
        assert_eq!(core_timing("cortex-m7"), Some(CORTEX_M7));
        assert_eq!(core_timing("cortex-m33"), None);
    }
}
