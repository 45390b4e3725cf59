//! No-op rebuild of a large graph of `cmd` targets, timed against ninja's
//! no-op build of the same graph (SPEC.md §12: "a no-op rebuild costs no
//! more per node than ninja").
//!
//! The bench generates, in a temp dir, a kflow workspace of
//! `KFLOW_BENCH_PACKAGES` packages of `KFLOW_BENCH_TARGETS` `cmd` targets
//! each (default 100 × 100 = 10,000) and an equivalent `build.ninja`, builds
//! both once, checks that they produced the same bytes, then times
//! `KFLOW_BENCH_RUNS` (default 15) no-op rebuilds of each, interleaved so
//! that both see the same machine noise, and prints the medians and their
//! ratio. Every run is timed as a whole process, as a user waits for it.
//!
//! Run it with `cargo bench --bench noop`; see benches/README.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::time::{Duration, Instant};

const KFLOW: &str = env!("CARGO_BIN_EXE_kflow");

/// Every `FAN_IN_EVERY`th target depends on the `FAN_IN` targets before it;
/// the others on the one before, so that the graph has both long chains and
/// nodes with several inputs.
const FAN_IN_EVERY: usize = 10;
const FAN_IN: usize = 5;

struct Settings {
    packages: usize,
    targets: usize,
    runs: usize,
    jobs: usize,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let Some(ninja) = find_on_path("ninja") else {
        return Err(
            "`ninja` is not on PATH; the peer of this bench is Debian's `ninja-build`.\n\
                    Install it with `benches/install-peers.sh` (or `sudo apt-get install ninja-build`) and rerun."
                .to_owned(),
        );
    };
    let settings = Settings {
        packages: env_count("KFLOW_BENCH_PACKAGES", 100)?,
        targets: env_count("KFLOW_BENCH_TARGETS", 100)?,
        runs: env_count("KFLOW_BENCH_RUNS", 15)?,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let total = settings.packages * settings.targets;

    println!(
        "no-op rebuild: {} packages x {} cmd targets = {total} targets, {} timed runs of each tool, interleaved",
        settings.packages, settings.targets, settings.runs
    );
    println!("machine: {}", machine_description(settings.jobs));
    println!(
        "kflow:   {} ({KFLOW})",
        version_of(Command::new(KFLOW).arg("--version"))?
    );
    println!(
        "ninja:   ninja {} ({})",
        version_of(Command::new(&ninja).arg("--version"))?,
        ninja.display()
    );

    let root = tempfile::Builder::new()
        .prefix("kflow-bench-noop-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let workspace = root.path().join("kflow");
    let ninja_dir = root.path().join("ninja");
    let cache_dir = root.path().join("cache");
    generate_kflow_workspace(&workspace, &settings)?;
    generate_ninja_build(&ninja_dir, &settings)?;

    let kflow_build = |report: Option<&Path>| {
        let mut command = Command::new(KFLOW);
        command
            .args(["--quiet", "--color", "never", "build", "--jobs"])
            .arg(settings.jobs.to_string())
            .arg("target//...")
            .current_dir(&workspace)
            .env("KFLOW_CACHE_DIR", &cache_dir);
        if let Some(path) = report {
            command.arg("--build-report").arg(path);
        }
        command
    };
    let ninja_build = || {
        let mut command = Command::new(&ninja);
        command.arg("-j").arg(settings.jobs.to_string()).current_dir(&ninja_dir);
        command
    };

    // The full builds: not compared, but they must succeed and agree.
    let (kflow_full, _) = timed("kflow full build", &mut kflow_build(None))?;
    let (ninja_full, _) = timed("ninja full build", &mut ninja_build())?;
    println!(
        "full build (not compared): kflow {:.1} s, ninja {:.1} s",
        kflow_full.as_secs_f64(),
        ninja_full.as_secs_f64()
    );
    compare_outputs(&workspace, &ninja_dir, &settings)?;

    // One untimed no-op of each, to prove that a no-op is what gets timed.
    let report_path = root.path().join("noop-report.json");
    timed("kflow no-op with --build-report", &mut kflow_build(Some(&report_path)))?;
    check_kflow_report(&report_path, total)?;
    let (_, output) = timed("ninja no-op", &mut ninja_build())?;
    check_ninja_noop(&output)?;
    println!(
        "verified: kflow's no-op executed 0 actions and found {total} cached; ninja said \"no work to do\"; \
         all {total} outputs are byte-identical"
    );

    let mut kflow_times = Vec::with_capacity(settings.runs);
    let mut ninja_times = Vec::with_capacity(settings.runs);
    for _ in 0..settings.runs {
        kflow_times.push(timed("kflow no-op", &mut kflow_build(None))?.0);
        let (elapsed, output) = timed("ninja no-op", &mut ninja_build())?;
        check_ninja_noop(&output)?;
        ninja_times.push(elapsed);
    }

    let kflow = Summary::of(&mut kflow_times);
    let ninja = Summary::of(&mut ninja_times);
    println!();
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>16}",
        "no-op", "median", "min", "p90", "median/target"
    );
    for (name, s) in [("kflow", &kflow), ("ninja", &ninja)] {
        println!(
            "{name:<12} {:>9.1} ms {:>9.1} ms {:>9.1} ms {:>13.2} µs",
            millis(s.median),
            millis(s.min),
            millis(s.p90),
            s.median.as_secs_f64() * 1e6 / total as f64
        );
    }
    println!(
        "ratio (kflow / ninja, medians) = {:.2}",
        kflow.median.as_secs_f64() / ninja.median.as_secs_f64()
    );
    Ok(())
}

/// A positive count from the environment, or its default.
fn env_count(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} must be a positive integer, got `{value}`")),
        },
        Err(e) => Err(format!("{name}: {e}")),
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn version_of(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Cores, CPU model and OS, as far as Linux tells them.
fn machine_description(cores: usize) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    });
    let os = std::fs::read_to_string("/etc/os-release").ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
    });
    format!(
        "{cores} cores (nproc), {}, {}, {}",
        cpu.as_deref().unwrap_or("unknown CPU"),
        os.as_deref().unwrap_or("unknown OS"),
        std::env::consts::ARCH
    )
}

/// The targets `target` depends on, in `$SRCS` order; `None` for the first
/// target of a package, which reads the package's `seed.txt`.
fn deps_of(target: usize) -> Option<Vec<usize>> {
    match target {
        0 => None,
        i if i % FAN_IN_EVERY == 0 => Some((1..=FAN_IN.min(i)).map(|k| i - k).collect()),
        i => Some(vec![i - 1]),
    }
}

/// The line each command appends to its output, so that every output differs.
fn tag(package: usize, target: usize) -> String {
    format!("{package}-{target}")
}

fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn generate_kflow_workspace(dir: &Path, settings: &Settings) -> Result<(), String> {
    write_file(
        &dir.join("kflow.toml"),
        "[workspace]\ndefault_cell = \"target\"\n[cells]\ntarget = \"graphs\"\n",
    )?;
    for p in 0..settings.packages {
        let package = dir.join("graphs").join(format!("p{p}"));
        write_file(&package.join("seed.txt"), &format!("seed {p}\n"))?;
        let mut build = String::new();
        for i in 0..settings.targets {
            let srcs = match deps_of(i) {
                None => "\"seed.txt\"".to_owned(),
                Some(deps) => deps.iter().map(|d| format!("\":t{d}\"")).collect::<Vec<_>>().join(", "),
            };
            // Outputs stay a few bytes long: concatenating the inputs would
            // make sizes grow exponentially along the fan-ins.
            let _ = writeln!(
                build,
                "[[cmd]]\nname = \"t{i}\"\nsrcs = [{srcs}]\nouts = [\"out{i}.txt\"]\n\
                 cmd = \"cat $SRCS | cksum > $OUT; echo {} >> $OUT\"\n",
                tag(p, i)
            );
        }
        write_file(&package.join("BUILD.toml"), &build)?;
    }
    Ok(())
}

fn generate_ninja_build(dir: &Path, settings: &Settings) -> Result<(), String> {
    let mut build = String::from("rule run\n  command = cat $in | cksum > $out; echo $tag >> $out\n\n");
    for p in 0..settings.packages {
        write_file(&dir.join(format!("p{p}/seed.txt")), &format!("seed {p}\n"))?;
        for i in 0..settings.targets {
            let inputs = match deps_of(i) {
                None => format!("p{p}/seed.txt"),
                Some(deps) => deps
                    .iter()
                    .map(|d| format!("p{p}/out{d}.txt"))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let _ = writeln!(build, "build p{p}/out{i}.txt: run {inputs}\n  tag = {}", tag(p, i));
        }
    }
    write_file(&dir.join("build.ninja"), &build)
}

/// Runs a command to completion, timing the whole process; fails unless it
/// exits 0.
fn timed(what: &str, command: &mut Command) -> Result<(Duration, Output), String> {
    let start = Instant::now();
    let output = command.output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok((elapsed, output))
}

/// Both tools must have computed the same bytes, or the graphs are not the same.
fn compare_outputs(workspace: &Path, ninja_dir: &Path, settings: &Settings) -> Result<(), String> {
    let read = |path: PathBuf| std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    for p in 0..settings.packages {
        for i in 0..settings.targets {
            let kflow = read(workspace.join(format!("kflow-out/p{p}/t{i}/out{i}.txt")))?;
            let ninja = read(ninja_dir.join(format!("p{p}/out{i}.txt")))?;
            if kflow != ninja {
                return Err(format!(
                    "kflow and ninja disagree on p{p}/out{i}.txt: {:?} vs {:?}",
                    String::from_utf8_lossy(&kflow),
                    String::from_utf8_lossy(&ninja)
                ));
            }
        }
    }
    Ok(())
}

fn check_kflow_report(path: &Path, total: usize) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("invalid build report {}: {e}", path.display()))?;
    let count = |name: &str| report["counts"][name].as_u64();
    let (executed, cached) = (count("executed"), count("cached"));
    if executed != Some(0) || cached != Some(total as u64) {
        return Err(format!(
            "kflow's rebuild was not a no-op: counts = {} (expected executed = 0, cached = {total})",
            report["counts"]
        ));
    }
    Ok(())
}

fn check_ninja_noop(output: &Output) -> Result<(), String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.contains("no work to do") {
        return Err(format!("ninja's rebuild was not a no-op:\n{stdout}"));
    }
    Ok(())
}

struct Summary {
    median: Duration,
    min: Duration,
    p90: Duration,
}

impl Summary {
    fn of(times: &mut [Duration]) -> Summary {
        times.sort_unstable();
        let n = times.len();
        let median = if n % 2 == 1 {
            times[n / 2]
        } else {
            (times[n / 2 - 1] + times[n / 2]) / 2
        };
        // Nearest rank: the smallest time at or above 90% of the runs.
        let p90 = times[(n * 9).div_ceil(10) - 1];
        Summary {
            median,
            min: times[0],
            p90,
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
