//! `KFLOW_TIMINGS=1`: the duration of each phase of a build on stderr, for
//! finding where a slow build spends its time.

use std::time::Instant;

pub struct Phases {
    enabled: bool,
    last: Instant,
}

impl Phases {
    pub fn start() -> Phases {
        Phases {
            enabled: std::env::var_os("KFLOW_TIMINGS").is_some_and(|v| v == "1"),
            last: Instant::now(),
        }
    }

    /// Reports the time since the previous mark under `phase`.
    pub fn mark(&mut self, phase: &str) {
        if self.enabled {
            let now = Instant::now();
            eprintln!(
                "kflow timings: {phase:<12} {:>8.2} ms",
                (now - self.last).as_secs_f64() * 1e3
            );
            self.last = now;
        }
    }
}
