//! Anomaly segments: where they go, which kind, and what each kind does to a reading.
//!
//! Segments are planned one at a time, just before they are needed, so the generator's memory does not grow with the
//! number of rows (only the list of segments it returns does).

use serde::{Deserialize, Serialize};

use super::plant::{DECOUPLABLE, NUM_TELEMETRY, Plant, TELEMETRY_CENTER, TELEMETRY_SPAN};
use crate::random::Random;

/// The five kinds of anomaly, modelled on CATS's root causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A reading jumps by a fraction of its usual spread and stays there for the segment (a sensor bias).
    LevelShift,
    /// A reading drifts away linearly, reaching its largest offset at the segment's end.
    Drift,
    /// A reading's measurement noise grows several times, around the correct value.
    NoiseBurst,
    /// A reading freezes at its last value (no noise at all).
    StuckSensor,
    /// A reading stops following its command: its command steps, the reading carries on as if it had not.
    Decoupling,
}

pub const ALL_KINDS: [AnomalyKind; 5] = [
    AnomalyKind::LevelShift,
    AnomalyKind::Drift,
    AnomalyKind::NoiseBurst,
    AnomalyKind::StuckSensor,
    AnomalyKind::Decoupling,
];

impl AnomalyKind {
    /// Segment length range in rows (1 row = 1 s): long enough for a window model to see the kind's signature.
    fn lengths(self) -> (u64, u64) {
        match self {
            AnomalyKind::LevelShift => (40, 300),
            AnomalyKind::Drift => (100, 400),
            AnomalyKind::NoiseBurst => (20, 150),
            AnomalyKind::StuckSensor => (30, 250),
            AnomalyKind::Decoupling => (80, 400),
        }
    }
}

/// One injected anomaly: rows `start..end` (end exclusive) are labelled anomalous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub kind: AnomalyKind,
    /// The channels whose readings are wrong (CATS names).
    pub channels: Vec<String>,
}

/// Nominal rows kept between two segments, so that lags recover and segments never touch.
const MIN_GAP: u64 = 60;

/// A segment planned but not started.
pub(crate) struct Planned {
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) kind: AnomalyKind,
}

/// Places segments so that the anomalous rows track `density` over the evaluation rows.
pub(crate) struct Planner {
    random: Random,
    rows: u64,
    eval_start: u64,
    density: f64,
    planned_rows: u64,
    bag: [AnomalyKind; 5],
    bag_used: usize,
}

impl Planner {
    pub(crate) fn new(seed: u64, rows: u64, eval_start: u64, density: f64) -> Self {
        Self {
            random: Random::new(seed, 2),
            rows,
            eval_start,
            density,
            planned_rows: 0,
            bag: ALL_KINDS,
            bag_used: ALL_KINDS.len(),
        }
    }

    /// The next segment starting at or after `earliest`, or `None` when none fits before the end.
    ///
    /// Each segment's ideal end is where the running share of anomalous rows would equal `density`; the start is
    /// jittered around it. Tying positions to the running target keeps the overall fraction within about one
    /// segment of the request, instead of letting random gaps accumulate error.
    pub(crate) fn next(&mut self, earliest: u64) -> Option<Planned> {
        if self.density <= 0.0 {
            return None;
        }
        let kind = self.draw_kind();
        let (lo, hi) = kind.lengths();
        let u = self.random.uniform();
        // Skewed towards short segments: most are tens of rows, a few are hundreds.
        let len = lo + ((hi - lo) as f64 * u * u) as u64;
        let ideal_end = self.eval_start as f64 + (self.planned_rows + len) as f64 / self.density;
        let mean_gap = len as f64 * (1.0 - self.density) / self.density;
        let jitter = self.random.range(-0.4, 0.4) * mean_gap;
        let start = (ideal_end - len as f64 + jitter).max(0.0) as u64;
        let start = start.max(earliest.saturating_add(MIN_GAP)).max(self.eval_start);
        if start >= self.rows {
            return None;
        }
        let len = len.min(self.rows - start);
        self.planned_rows += len;
        Some(Planned { start, len, kind })
    }

    /// Kinds come from a shuffled bag of all five, so every five consecutive segments hold every kind once.
    fn draw_kind(&mut self) -> AnomalyKind {
        if self.bag_used == self.bag.len() {
            self.random.shuffle(&mut self.bag);
            self.bag_used = 0;
        }
        let kind = self.bag[self.bag_used];
        self.bag_used += 1;
        kind
    }
}

/// A segment in progress and the parameters drawn for it.
pub(crate) struct Active {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) kind: AnomalyKind,
    /// Telemetry number 0..10.
    pub(crate) telemetry: usize,
    /// Level shift or final drift offset, in the reading's units; noise-burst extra standard deviation.
    magnitude: f64,
    /// Stuck value, or the frozen command value of a decoupling.
    frozen: Option<f64>,
}

impl Active {
    /// Draws the segment's reading and size. `last` holds the previous row's measured telemetry (for a stuck
    /// sensor, which freezes at it).
    pub(crate) fn begin(planned: &Planned, random: &mut Random, plant: &mut Plant, last: &[f64]) -> Self {
        let telemetry = match planned.kind {
            AnomalyKind::Decoupling => DECOUPLABLE[random.below(DECOUPLABLE.len() as u64) as usize],
            _ => random.below(NUM_TELEMETRY as u64) as usize,
        };
        let span = TELEMETRY_SPAN[telemetry];
        let current = last.get(telemetry).copied().unwrap_or(TELEMETRY_CENTER[telemetry]);
        // Offsets usually point back towards the reading's centre, so the faulty value stays in the normal range
        // and a per-channel threshold cannot see it; one in five points outwards, as a real fault may.
        let inwards = if current > TELEMETRY_CENTER[telemetry] {
            -1.0
        } else {
            1.0
        };
        let direction = if random.chance(0.8) { inwards } else { -inwards };
        let (magnitude, frozen) = match planned.kind {
            AnomalyKind::LevelShift => (direction * random.range(0.3, 0.8) * span, None),
            AnomalyKind::Drift => (direction * random.range(0.5, 1.1) * span, None),
            AnomalyKind::NoiseBurst => (random.range(4.0, 8.0) * Plant::noise(telemetry), None),
            AnomalyKind::StuckSensor => (0.0, Some(current)),
            AnomalyKind::Decoupling => {
                let command = Plant::command_of(telemetry).unwrap_or(0);
                // The command steps soon after the fault begins, so the segment shows the reading not following.
                let after = 5 + random.below((planned.len / 4).max(1));
                plant.force_command_change(command, after);
                (0.0, Some(plant.command_value(command)))
            }
        };
        Self {
            start: planned.start,
            end: planned.start + planned.len,
            kind: planned.kind,
            telemetry,
            magnitude,
            frozen,
        }
    }

    /// The frozen command value a decoupled reading keeps responding to.
    pub(crate) fn decoupled(&self) -> Option<(usize, f64)> {
        match self.kind {
            AnomalyKind::Decoupling => self.frozen.map(|v| (self.telemetry, v)),
            _ => None,
        }
    }

    /// Applies a sensor fault to the measured value of the reading at row `t` (decoupling acts in the plant).
    pub(crate) fn measured(&self, t: u64, value: f64, random: &mut Random) -> f64 {
        match self.kind {
            AnomalyKind::LevelShift => value + self.magnitude,
            AnomalyKind::Drift => {
                let progress = (t + 1 - self.start) as f64 / (self.end - self.start) as f64;
                value + self.magnitude * progress
            }
            AnomalyKind::NoiseBurst => value + self.magnitude * random.normal(),
            AnomalyKind::StuckSensor => self.frozen.unwrap_or(value),
            AnomalyKind::Decoupling => value,
        }
    }
}
