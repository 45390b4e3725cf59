//! The simulated system: 4 commands, 3 environmental stimuli and 10 telemetry readings that respond to them.
//!
//! One step is one second. Every quantity is plain f64 arithmetic on the generator's random numbers, so the same seed
//! gives the same trajectory everywhere (see `crate::random`).

use crate::csv::NUM_CHANNELS;
use crate::random::Random;

/// Channel indices (into [`crate::CHANNELS`]) of the commands.
pub(crate) const COMMANDS: [usize; 4] = [0, 1, 5, 6]; // aimp, amud, adbr, adfl
/// Channel indices of the environmental stimuli.
pub(crate) const STIMULI: [usize; 3] = [2, 3, 4]; // arnd, asin1, asin2
/// Channel index of the first telemetry reading; the 10 readings are the last 10 channels.
pub(crate) const FIRST_TELEMETRY: usize = 7;
pub(crate) const NUM_TELEMETRY: usize = NUM_CHANNELS - FIRST_TELEMETRY;

/// A command: a setpoint held for a while, then moved to another level, by a step or sometimes by a ramp.
struct CommandSpec {
    lo: f64,
    hi: f64,
    /// Setpoints are multiples of this above `lo`, as an operator or a schedule would choose them.
    quantum: f64,
    hold: (u64, u64),
    ramp_chance: f64,
    ramp: (u64, u64),
}

const COMMAND_SPECS: [CommandSpec; 4] = [
    // aimp: a power setting in percent.
    CommandSpec {
        lo: 20.0,
        hi: 90.0,
        quantum: 5.0,
        hold: (400, 3000),
        ramp_chance: 0.35,
        ramp: (30, 240),
    },
    // amud: a mode or valve position.
    CommandSpec {
        lo: 0.0,
        hi: 10.0,
        quantum: 0.5,
        hold: (600, 4000),
        ramp_chance: 0.2,
        ramp: (20, 120),
    },
    // adbr: a speed setpoint.
    CommandSpec {
        lo: 100.0,
        hi: 400.0,
        quantum: 10.0,
        hold: (300, 2500),
        ramp_chance: 0.4,
        ramp: (60, 400),
    },
    // adfl: a signed trim.
    CommandSpec {
        lo: -5.0,
        hi: 5.0,
        quantum: 1.0,
        hold: (500, 3500),
        ramp_chance: 0.25,
        ramp: (20, 200),
    },
];

struct Command {
    value: f64,
    target: f64,
    hold_left: u64,
    ramp_left: u64,
    ramp_step: f64,
    /// Set by [`Plant::force_command_change`]: the next change is a step far across the range.
    far_step: bool,
}

/// How a telemetry reading follows its input `u`.
#[derive(Clone, Copy)]
enum Response {
    /// y' = (u − y)/τ.
    FirstOrder { tau: f64 },
    /// y'' = ω²(u − y) − 2ζω y' (an underdamped actuator or structure when ζ < 1).
    SecondOrder { omega: f64, zeta: f64 },
}

struct TelemetrySpec {
    /// Up to two (channel index, gain) drivers among the commands and stimuli; the first is the one a decoupling
    /// anomaly cuts when it is a command.
    drivers: &'static [(usize, f64)],
    /// Cross-coupling: (telemetry number 0..10, gain) on another reading's true state at the previous step.
    coupling: Option<(usize, f64)>,
    offset: f64,
    response: Response,
    /// Standard deviation of the measurement noise.
    noise: f64,
}

use Response::{FirstOrder, SecondOrder};

const TELEMETRY_SPECS: [TelemetrySpec; NUM_TELEMETRY] = [
    // bed1: heats with aimp and with the ambient arnd.
    TelemetrySpec {
        drivers: &[(0, 0.6), (2, 0.8)],
        coupling: None,
        offset: 5.0,
        response: FirstOrder { tau: 40.0 },
        noise: 0.25,
    },
    // bed2: a slower body warmed by bed1 and the cyclic load asin2.
    TelemetrySpec {
        drivers: &[(4, 0.3)],
        coupling: Some((0, 0.9)),
        offset: -10.0,
        response: FirstOrder { tau: 90.0 },
        noise: 0.3,
    },
    // bfo1: a fast first-order follower of amud.
    TelemetrySpec {
        drivers: &[(1, 4.0)],
        coupling: None,
        offset: 2.0,
        response: FirstOrder { tau: 15.0 },
        noise: 0.2,
    },
    // bfo2: a slower follower of amud, disturbed by asin1.
    TelemetrySpec {
        drivers: &[(1, 2.5), (3, 1.5)],
        coupling: None,
        offset: 0.0,
        response: FirstOrder { tau: 50.0 },
        noise: 0.15,
    },
    // bso1: an underdamped response to adbr.
    TelemetrySpec {
        drivers: &[(5, 0.2)],
        coupling: None,
        offset: 10.0,
        response: SecondOrder {
            omega: 0.06,
            zeta: 0.35,
        },
        noise: 0.3,
    },
    // bso2: a well-damped response to adbr, loaded by aimp.
    TelemetrySpec {
        drivers: &[(5, 0.1), (0, 0.4)],
        coupling: None,
        offset: 0.0,
        response: SecondOrder {
            omega: 0.025,
            zeta: 0.7,
        },
        noise: 0.25,
    },
    // bso3: a lightly damped response to adfl, shaken by bso1.
    TelemetrySpec {
        drivers: &[(6, 3.0)],
        coupling: Some((4, 0.15)),
        offset: 0.0,
        response: SecondOrder { omega: 0.1, zeta: 0.25 },
        noise: 0.2,
    },
    // ced1: mostly the environment (arnd, asin2), a little aimp; very slow.
    TelemetrySpec {
        drivers: &[(2, 1.2), (4, 0.2)],
        coupling: Some((0, 0.25)),
        offset: 0.0,
        response: FirstOrder { tau: 150.0 },
        noise: 0.2,
    },
    // cfo1: follows adfl, disturbed by asin1.
    TelemetrySpec {
        drivers: &[(6, 2.0), (3, 0.8)],
        coupling: None,
        offset: 30.0,
        response: FirstOrder { tau: 25.0 },
        noise: 0.1,
    },
    // cso1: responds to amud and is pushed by cfo1.
    TelemetrySpec {
        drivers: &[(1, 3.0)],
        coupling: Some((8, 0.4)),
        offset: 0.0,
        response: SecondOrder { omega: 0.04, zeta: 0.5 },
        noise: 0.2,
    },
];

/// Typical standard deviation and mean of each telemetry reading over a long nominal run (measured with the
/// generator; see the test `telemetry_spans_match_the_plant`). Anomaly sizes are expressed in these units so that
/// they stay inside the reading's normal range.
pub(crate) const TELEMETRY_SPAN: [f64; NUM_TELEMETRY] = [13.0, 11.5, 12.0, 13.0, 17.0, 12.5, 9.5, 6.5, 8.0, 9.5];
pub(crate) const TELEMETRY_CENTER: [f64; NUM_TELEMETRY] = [56.0, 55.0, 23.0, 13.0, 57.0, 47.5, 9.0, 46.5, 30.0, 28.0];

/// Telemetry numbers (0..10) whose first driver is a command, so that "stops following its command" is visible.
pub(crate) const DECOUPLABLE: [usize; 7] = [0, 2, 3, 4, 5, 6, 8];

/// Steps simulated before the first row, so that the lags start from a settled state.
const WARMUP: u64 = 1000;

const TAU_ARND: f64 = 3000.0;
const TAU_ARND_SMOOTH: f64 = 200.0;
const PERIOD_ASIN1: f64 = 3600.0;
const PERIOD_ASIN2: f64 = 14_400.0;

/// A harmonic oscillator integrated with symplectic Euler: bounded forever, and only + and × (no `sin`).
struct Oscillator {
    x: f64,
    v: f64,
    omega2: f64,
}

impl Oscillator {
    fn new(period: f64, random: &mut Random) -> Self {
        let omega = std::f64::consts::TAU / period;
        // A random phase without trigonometry: a random point of the unit disc, pushed to the circle.
        let (mut a, mut b) = (1.0, 0.0);
        for _ in 0..64 {
            let (x, y) = (random.range(-1.0, 1.0), random.range(-1.0, 1.0));
            let r2 = x * x + y * y;
            if r2 > 0.01 && r2 <= 1.0 {
                let r = r2.sqrt();
                (a, b) = (x / r, y / r);
                break;
            }
        }
        Self {
            x: a,
            v: b * omega,
            omega2: omega * omega,
        }
    }

    fn step(&mut self) -> f64 {
        self.v -= self.omega2 * self.x;
        self.x += self.v;
        self.x
    }
}

/// What the anomaly injector may change inside the plant (sensor faults are applied to the readings outside).
#[derive(Default, Clone, Copy)]
pub(crate) struct Override {
    /// (telemetry number, frozen value of its first driver): the reading keeps responding to that value.
    pub(crate) decouple: Option<(usize, f64)>,
}

pub(crate) struct Plant {
    random: Random,
    commands: Vec<Command>,
    ou: f64,
    arnd: f64,
    asin1: Oscillator,
    asin2: Oscillator,
    /// True (noise-free) channel values of the current step.
    truth: [f64; NUM_CHANNELS],
    /// Telemetry rates, for the second-order responses.
    rate: [f64; NUM_TELEMETRY],
}

impl Plant {
    pub(crate) fn new(seed: u64) -> Self {
        let mut random = Random::new(seed, 1);
        let commands = COMMAND_SPECS
            .iter()
            .map(|spec| {
                let value = random_level(spec, &mut random);
                let hold_left = random_between(spec.hold, &mut random);
                Command {
                    value,
                    target: value,
                    hold_left,
                    ramp_left: 0,
                    ramp_step: 0.0,
                    far_step: false,
                }
            })
            .collect();
        let asin1 = Oscillator::new(PERIOD_ASIN1, &mut random);
        let asin2 = Oscillator::new(PERIOD_ASIN2, &mut random);
        let mut plant = Self {
            random,
            commands,
            ou: 0.0,
            arnd: 0.0,
            asin1,
            asin2,
            truth: [0.0; NUM_CHANNELS],
            rate: [0.0; NUM_TELEMETRY],
        };
        plant.set_inputs();
        // Start every reading at its steady state, then let the warm-up settle the couplings and oscillations.
        for k in 0..NUM_TELEMETRY {
            let u = plant.input(k, Override::default());
            plant.truth[FIRST_TELEMETRY + k] = u;
        }
        for _ in 0..WARMUP {
            plant.step(Override::default());
        }
        plant
    }

    /// Advances one second.
    pub(crate) fn step(&mut self, over: Override) {
        for (command, spec) in self.commands.iter_mut().zip(&COMMAND_SPECS) {
            step_command(command, spec, &mut self.random);
        }
        self.ou += -self.ou / TAU_ARND + (2.0 / TAU_ARND).sqrt() * self.random.normal();
        self.arnd += (self.ou - self.arnd) / TAU_ARND_SMOOTH;
        self.asin1.step();
        self.asin2.step();
        self.set_inputs();

        // Inputs use the previous step's telemetry (cross-coupling has a one-step delay, like a sampled system).
        let mut next = [0.0; NUM_TELEMETRY];
        for (k, spec) in TELEMETRY_SPECS.iter().enumerate() {
            let u = self.input(k, over);
            let y = self.truth[FIRST_TELEMETRY + k];
            next[k] = match spec.response {
                FirstOrder { tau } => y + (u - y) / tau,
                SecondOrder { omega, zeta } => {
                    self.rate[k] += omega * omega * (u - y) - 2.0 * zeta * omega * self.rate[k];
                    y + self.rate[k]
                }
            };
        }
        self.truth[FIRST_TELEMETRY..].copy_from_slice(&next);
    }

    /// The measured values of this step: commands exact, stimuli and telemetry with their sensor noise.
    pub(crate) fn measure(&mut self) -> [f64; NUM_CHANNELS] {
        let mut out = self.truth;
        for &c in &STIMULI {
            out[c] += 0.02 * self.random.normal();
        }
        for (k, spec) in TELEMETRY_SPECS.iter().enumerate() {
            out[FIRST_TELEMETRY + k] += spec.noise * self.random.normal();
        }
        out
    }

    /// Standard deviation of a telemetry reading's measurement noise.
    pub(crate) fn noise(telemetry: usize) -> f64 {
        TELEMETRY_SPECS.get(telemetry).map_or(0.0, |s| s.noise)
    }

    /// The command channel a decouplable reading follows, if any.
    pub(crate) fn command_of(telemetry: usize) -> Option<usize> {
        let &(channel, _) = TELEMETRY_SPECS.get(telemetry)?.drivers.first()?;
        COMMANDS.iter().position(|&c| c == channel)
    }

    /// The current value of command number `command` (0..4).
    pub(crate) fn command_value(&self, command: usize) -> f64 {
        self.commands.get(command).map_or(0.0, |c| c.value)
    }

    /// Makes command number `command` step far across its range in `after` seconds, so that a reading decoupled
    /// from it visibly fails to follow.
    pub(crate) fn force_command_change(&mut self, command: usize, after: u64) {
        if let Some(c) = self.commands.get_mut(command) {
            c.hold_left = after;
            c.ramp_left = 0;
            c.far_step = true;
        }
    }

    fn set_inputs(&mut self) {
        for (command, &c) in self.commands.iter().zip(&COMMANDS) {
            self.truth[c] = command.value;
        }
        self.truth[2] = 20.0 + 4.0 * self.arnd;
        self.truth[3] = 10.0 * self.asin1.x;
        self.truth[4] = 50.0 + 5.0 * self.asin2.x + 1.5 * self.arnd;
    }

    fn input(&self, k: usize, over: Override) -> f64 {
        let spec = &TELEMETRY_SPECS[k];
        let mut u = spec.offset;
        for (i, &(channel, gain)) in spec.drivers.iter().enumerate() {
            let value = match over.decouple {
                Some((t, frozen)) if t == k && i == 0 => frozen,
                _ => self.truth[channel],
            };
            u += gain * value;
        }
        if let Some((j, gain)) = spec.coupling {
            u += gain * self.truth[FIRST_TELEMETRY + j];
        }
        u
    }
}

fn random_between((lo, hi): (u64, u64), random: &mut Random) -> u64 {
    lo + random.below(hi.saturating_sub(lo) + 1)
}

fn random_level(spec: &CommandSpec, random: &mut Random) -> f64 {
    let levels = ((spec.hi - spec.lo) / spec.quantum) as u64 + 1;
    spec.lo + spec.quantum * random.below(levels) as f64
}

fn step_command(command: &mut Command, spec: &CommandSpec, random: &mut Random) {
    if command.ramp_left > 0 {
        command.ramp_left -= 1;
        command.value = if command.ramp_left == 0 {
            command.target
        } else {
            command.value + command.ramp_step
        };
        return;
    }
    if command.hold_left > 0 {
        command.hold_left -= 1;
        return;
    }
    let target = if command.far_step {
        // Land in the third of the range away from the current value.
        let third = (spec.hi - spec.lo) / 3.0;
        let mid = (spec.lo + spec.hi) / 2.0;
        let lo = if command.value > mid { spec.lo } else { spec.hi - third };
        let steps = (third / spec.quantum) as u64 + 1;
        lo + spec.quantum * random.below(steps) as f64
    } else {
        let mut target = random_level(spec, random);
        // A "change" to the same level is no change; one retry keeps the draw count bounded.
        if target == command.value {
            target = random_level(spec, random);
        }
        target
    };
    command.target = target;
    command.hold_left = random_between(spec.hold, random);
    if !command.far_step && random.chance(spec.ramp_chance) {
        command.ramp_left = random_between(spec.ramp, random);
        command.ramp_step = (target - command.value) / command.ramp_left as f64;
    } else {
        command.value = target;
    }
    command.far_step = false;
}
