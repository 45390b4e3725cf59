//! Time of software inference on a Cortex-M core, from the instructions
//! an emulator counted exactly (QEMU's `-icount`, see kflow-cm-firmware).
//!
//! QEMU models no pipeline, so cycles are instructions times a
//! cycles-per-instruction figure per core. For the Cortex-M4 it comes from
//! the Technical Reference Manual's instruction timings applied to the hot
//! loop of kflow's generated kernels (`kf_rows_wide`, compiled `-O2`): per
//! eight MACs two word loads and one doubleword load (pipelined: 5
//! cycles), four SXTB16 and four SMLAD (1 cycle each), two loop-counter
//! operations (1 each) and one taken branch (1 + a refill of 1 to 3, taken
//! as 3): 18 cycles for 15 instructions, 1.2; rounded up to 1.25 for the
//! stores, gathers and calls around it. Code and data in zero-wait-state
//! memory is assumed, as on the MAX32690 and the MAX78002 at their clocks
//! from SRAM and the flash cache.

/// How instructions become cycles on one core.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoreTiming {
    pub cycles_per_instruction: f64,
    /// Where the figure comes from, for reports.
    pub basis: &'static str,
}

const CORTEX_M4: CoreTiming = CoreTiming {
    cycles_per_instruction: 1.25,
    basis: "Cortex-M4 TRM timings of the generated kernels' inner loop (1.2), rounded up for the code around it",
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
