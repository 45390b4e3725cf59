//! Helpers shared by the unit tests.

use crate::csv::{NUM_CHANNELS, ReadSummary, Row};
use crate::{DataError, GeneratorParams, RowSource, generate};

/// Rows held in memory.
pub(crate) struct MemoryRows {
    pub(crate) rows: Vec<([f32; NUM_CHANNELS], bool)>,
}

impl MemoryRows {
    /// `n` rows whose channel 0 is the row index (so a window's rows can be read back from its values), the other
    /// channels smooth functions of it, and the given rows anomalous.
    pub(crate) fn indexed(n: u64, anomalous: &[u64]) -> Self {
        let rows = (0..n)
            .map(|r| {
                let mut v = [0f32; NUM_CHANNELS];
                v[0] = r as f32;
                for (c, x) in v.iter_mut().enumerate().skip(1) {
                    *x = ((r * (c as u64 + 3)) % 97) as f32 + c as f32;
                }
                (v, anomalous.contains(&r))
            })
            .collect();
        Self { rows }
    }
}

impl RowSource for MemoryRows {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn for_each_row(
        &mut self,
        limit: Option<u64>,
        each: &mut dyn FnMut(Row<'_>) -> Result<(), DataError>,
    ) -> Result<ReadSummary, DataError> {
        let mut summary = ReadSummary::default();
        for (i, (values, label)) in self.rows.iter().enumerate() {
            if limit.is_some_and(|l| i as u64 >= l) {
                break;
            }
            each(Row {
                index: i as u64,
                values,
                label: *label,
            })?;
            summary.rows += 1;
            summary.anomalous += u64::from(*label);
        }
        Ok(summary)
    }
}

/// Generated CSV bytes for `rows` rows and `seed`.
pub(crate) fn generated_csv(rows: u64, seed: u64) -> (Vec<u8>, crate::GeneratedMeta) {
    let mut out = Vec::new();
    let meta = generate(
        &GeneratorParams {
            rows,
            seed,
            ..GeneratorParams::default()
        },
        &mut out,
    )
    .unwrap();
    (out, meta)
}
