//! Readings that hold exactly still: a stuck sensor.
//!
//! A forecaster predicts a frozen reading *better* than usual while the
//! plant is steady (no change, and none expected), so an error score cannot
//! see the fault. A reading that never holds still over a whole window when
//! all is well, yet does now, is flagged on its own. A reading that often
//! holds still (a quiet sensor on a coarse grid) says nothing by doing so
//! and is left out.

use kflow_data::{CHANNELS, Split};

/// The largest share of nominal validation windows over which a reading may
/// hold still and still be watched for it.
const NOMINAL_RATE: f64 = 1e-3;

/// The input channels watched for holding still.
#[derive(Debug)]
pub struct StillReadings {
    channels: Vec<usize>,
}

impl StillReadings {
    /// The channels among `candidates` that hold still over at most
    /// `NOMINAL_RATE` of the nominal windows of `val`.
    pub fn fit(val: &Split, candidates: impl Iterator<Item = usize>) -> StillReadings {
        let nominal: Vec<usize> = (0..val.len()).filter(|&i| val.y[i] == 0).collect();
        if nominal.is_empty() {
            return StillReadings { channels: Vec::new() };
        }
        let allowed = NOMINAL_RATE * nominal.len() as f64;
        let channels = candidates
            .filter(|&c| nominal.iter().filter(|&&i| holds_still(val, i, c)).count() as f64 <= allowed)
            .collect();
        StillReadings { channels }
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Whether window `i` of `split` has a watched reading holding still.
    pub fn flags(&self, split: &Split, i: usize) -> bool {
        self.channels.iter().any(|&c| holds_still(split, i, c))
    }

    /// The watched channels' names, for the record.
    pub fn names(&self) -> Vec<String> {
        self.channels
            .iter()
            .map(|&c| {
                CHANNELS
                    .get(c)
                    .map_or_else(|| format!("channel {c}"), |n| (*n).to_string())
            })
            .collect()
    }
}

/// Whether channel `c` of window `i` has one value over the whole window.
fn holds_still(split: &Split, i: usize, c: usize) -> bool {
    let [_, channels, length] = split.shape;
    let Some(row) = split
        .x
        .get((i * channels + c) * length..(i * channels + c + 1) * length)
    else {
        return false;
    };
    length > 1 && row.iter().all(|&v| v == row[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows of two channels and length 3; channel 0 holds still in the
    /// windows listed in `still0`, channel 1 in `still1`.
    fn split(n: usize, still0: &[usize], still1: &[usize], y: Vec<u8>) -> Split {
        let mut x = Vec::new();
        for i in 0..n {
            for still in [still0, still1] {
                if still.contains(&i) {
                    x.extend([0.5, 0.5, 0.5]);
                } else {
                    x.extend([0.1 * i as f32, 0.2, 0.3]);
                }
            }
        }
        Split { x, shape: [n, 2, 3], y }
    }

    #[test]
    fn a_reading_is_watched_only_where_holding_still_is_rare() {
        // 2000 nominal windows: channel 0 holds still in 2 (1 in 1000, rare
        // enough), channel 1 in 3 (too often to mean anything).
        let val = split(2000, &[10, 20], &[10, 20, 30], vec![0; 2000]);
        let still = StillReadings::fit(&val, 0..2);
        assert_eq!(still.names(), ["aimp"]);

        let test = split(3, &[1], &[2], vec![0, 1, 1]);
        let flagged: Vec<bool> = (0..3).map(|i| still.flags(&test, i)).collect();
        assert_eq!(flagged, [false, true, false]);
    }

    #[test]
    fn anomalous_validation_windows_do_not_count_against_a_reading() {
        let mut y = vec![0; 2000];
        y[..10].fill(1);
        let val = split(2000, &(0..10).collect::<Vec<_>>(), &[], y);
        assert!(!StillReadings::fit(&val, 0..1).is_empty());
    }
}
