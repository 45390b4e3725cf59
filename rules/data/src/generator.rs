//! A deterministic generator of CATS-like data, written as CATS CSV so that generated and real data share one loader.
//!
//! The dynamics are in `plant`, the anomalies in `anomaly`; graphs/datasets/README.md describes both.

mod anomaly;
mod plant;

use std::io::Write;

use serde::{Deserialize, Serialize};

pub use anomaly::{ALL_KINDS, AnomalyKind, Segment};

use crate::DataError;
use crate::csv::{CHANNELS, NUM_CHANNELS, RowWriter};
use crate::random::Random;
use anomaly::{Active, Planner};
use plant::{FIRST_TELEMETRY, NUM_TELEMETRY, Override, Plant};

/// What to generate. Same params ⇒ same bytes, on any machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorParams {
    /// Data rows (1 row = 1 simulated second).
    pub rows: u64,
    pub seed: u64,
    /// Share of ALL rows that are anomalous (CATS: 3.8 %). Anomalies only occur after the nominal prefix, so the
    /// share among the later rows is `anomaly_fraction / (1 − nominal_fraction)`.
    pub anomaly_fraction: f64,
    /// Leading share of rows with no anomaly at all (CATS: the first 1 M of 5 M rows, 0.2).
    pub nominal_fraction: f64,
}

impl Default for GeneratorParams {
    fn default() -> Self {
        Self {
            rows: 200_000,
            seed: 0,
            anomaly_fraction: 0.038,
            nominal_fraction: 0.2,
        }
    }
}

/// What was generated, besides the CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedMeta {
    pub rows: u64,
    pub anomalous_rows: u64,
    /// First row that may be anomalous; rows before it are nominal by construction.
    pub nominal_rows: u64,
    /// In row order; segments never overlap.
    pub segments: Vec<Segment>,
}

/// Largest anomaly density allowed among the rows after the nominal prefix: beyond it segments would have to touch.
const MAX_DENSITY: f64 = 0.5;

impl GeneratorParams {
    fn validate(&self) -> Result<(u64, f64), DataError> {
        if self.rows == 0 {
            return Err(DataError::Params("generator: rows must be at least 1".into()));
        }
        if !(0.0..=MAX_DENSITY).contains(&self.anomaly_fraction) {
            return Err(DataError::Params(format!(
                "generator: anomaly_fraction {} is outside [0, {MAX_DENSITY}]",
                self.anomaly_fraction
            )));
        }
        if !(0.0..1.0).contains(&self.nominal_fraction) {
            return Err(DataError::Params(format!(
                "generator: nominal_fraction {} is outside [0, 1)",
                self.nominal_fraction
            )));
        }
        let nominal_rows = (self.rows as f64 * self.nominal_fraction).round() as u64;
        let eval_rows = self.rows.saturating_sub(nominal_rows);
        let density = if eval_rows == 0 {
            0.0
        } else {
            self.anomaly_fraction * self.rows as f64 / eval_rows as f64
        };
        if density > MAX_DENSITY {
            return Err(DataError::Params(format!(
                "generator: anomaly_fraction {} in the last {} of rows would make {:.0} % of them anomalous \
                 (at most {:.0} %)",
                self.anomaly_fraction,
                1.0 - self.nominal_fraction,
                density * 100.0,
                MAX_DENSITY * 100.0
            )));
        }
        Ok((nominal_rows, density))
    }
}

/// Writes `params.rows` rows of CATS CSV (with the header) to `out` and returns the anomaly segments.
///
/// Memory is constant in `rows` apart from the returned segment list; `out` is written in 64 KiB chunks.
pub fn generate(params: &GeneratorParams, out: &mut impl Write) -> Result<GeneratedMeta, DataError> {
    let (nominal_rows, density) = params.validate()?;
    let mut plant = Plant::new(params.seed);
    let mut planner = Planner::new(params.seed, params.rows, nominal_rows, density);
    let mut faults = Random::new(params.seed, 3);
    let mut writer = RowWriter::new(out)?;

    let mut next = planner.next(nominal_rows);
    let mut active: Option<Active> = None;
    let mut segments = Vec::new();
    let mut anomalous_rows = 0;
    let mut last_telemetry = [0.0; NUM_TELEMETRY];
    let mut timestamp = String::with_capacity(24);
    let mut values = [0f32; NUM_CHANNELS];

    for t in 0..params.rows {
        if active.is_none()
            && let Some(planned) = next.take_if(|p| p.start == t)
        {
            active = Some(Active::begin(&planned, &mut faults, &mut plant, &last_telemetry));
        }
        let over = Override {
            decouple: active.as_ref().and_then(Active::decoupled),
        };
        plant.step(over);
        let mut measured = plant.measure();
        if let Some(a) = &active {
            let channel = FIRST_TELEMETRY + a.telemetry;
            measured[channel] = a.measured(t, measured[channel], &mut faults);
        }
        last_telemetry.copy_from_slice(&measured[FIRST_TELEMETRY..]);

        for (v, m) in values.iter_mut().zip(&measured) {
            *v = *m as f32;
        }
        timestamp.clear();
        format_timestamp(t, &mut timestamp);
        let label = active.is_some();
        writer.write(&timestamp, &values, label)?;
        anomalous_rows += u64::from(label);

        if let Some(a) = active.take_if(|a| a.end == t + 1) {
            segments.push(Segment {
                start: a.start,
                end: a.end,
                kind: a.kind,
                channels: vec![CHANNELS[FIRST_TELEMETRY + a.telemetry].to_string()],
            });
            next = planner.next(a.end);
        }
    }
    writer.finish()?;
    Ok(GeneratedMeta {
        rows: params.rows,
        anomalous_rows,
        nominal_rows,
        segments,
    })
}

/// Seconds since 2023-01-01 00:00:00 as `YYYY-MM-DD HH:MM:SS` (integer arithmetic only).
fn format_timestamp(seconds: u64, out: &mut String) {
    use std::fmt::Write as _;
    // Days since 1970-01-01 of 2023-01-01.
    const EPOCH_DAYS: u64 = 19_358;
    let days = EPOCH_DAYS + seconds / 86_400;
    let (y, m, d) = civil_from_days(days);
    let s = seconds % 86_400;
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

/// Howard Hinnant's days-to-civil algorithm for non-negative day counts since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;
