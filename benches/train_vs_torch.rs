//! Training throughput (samples per second) of the repository's baseline CNN
//! (`graphs/host/BUILD.toml`, `[[model]] baseline_cnn`) in kflow against
//! PyTorch on CPU: same model, same initial weights, same data, batch size,
//! loss and optimizer, one thread each, measured in the same run.
//!
//! kflow trains in-process through `kflow_train::train_epoch`, as the
//! `train` rule does, with `CANDLE_NUM_THREADS=1` and `RAYON_NUM_THREADS=1`
//! as the `kflow` binary sets them. PyTorch runs `benches/torch_train.py` in a long-lived child process
//! (from the venv `benches/install-peers.sh torch` makes), which builds the
//! same network from the model's IR, loads the same initial weights and
//! trains on the same windows, one epoch per command on its stdin, so that
//! `import torch` is paid once and the epochs of both tools interleave.
//!
//! An epoch is the whole `train_epoch` call on both sides: shuffle,
//! mini-batches of 64 with forward, cross-entropy, backward and AdamW
//! (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 1e-2), then an
//! evaluation-mode pass over a small validation split (loss and F1).
//! Samples/s is training samples over that wall time. PyTorch is given
//! kflow's batch order (`Hyper::sample_order`), so that both see the same
//! batches and their losses can be compared epoch by epoch; the time each
//! takes to reach a validation loss is measured on the same epochs.
//!
//! Run it with `cargo bench --bench train_vs_torch`; see benches/README.md.

#[path = "common/baseline.rs"]
mod baseline;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::Instant;

use kflow_model::{Model, Weights};
use kflow_train::{Checkpoint, Data, Hyper, train_epoch};
use serde::Deserialize;

use baseline::{GRAPH, MODEL};

/// The torch version `benches/install-peers.sh torch` pins; another one is
/// measured too, with a warning.
const TORCH_PIN: &str = "2.15.0";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_train.py");
/// The peer's numerics (`torch_train.py` arguments).
const FLOAT32: &[&str] = &["--numerics", "float32"];

struct Settings {
    samples: usize,
    val_samples: usize,
    rounds: usize,
    epochs: usize,
    extra_threads: Option<usize>,
    adamw: String,
    /// `torch_train.py` arguments of an extra one-thread worker.
    reference: Option<&'static [&'static str]>,
    target_val_loss: f64,
}

fn main() -> ExitCode {
    // As the `kflow` binary does at start-up (src/main.rs): candle's
    // matmuls do not split into per-core tasks, and its element-wise pool
    // does not spin. Training runs on one thread either way.
    // SAFETY: no other thread exists yet to read the environment.
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let python = venv_dir()?.join("bin").join("python");
    let torch_version = probe_torch(&python)?;
    let settings = Settings {
        samples: env_count("KFLOW_BENCH_SAMPLES", 8192)?,
        val_samples: env_count("KFLOW_BENCH_VAL_SAMPLES", 256)?,
        rounds: env_count("KFLOW_BENCH_ROUNDS", 5)?,
        epochs: env_count("KFLOW_BENCH_EPOCHS", 2)?,
        extra_threads: match env_count_or_zero("KFLOW_BENCH_TORCH_EXTRA_THREADS", 2)? {
            0 | 1 => None,
            n => Some(n),
        },
        adamw: std::env::var("KFLOW_BENCH_TORCH_ADAMW").unwrap_or_else(|_| "default".to_owned()),
        reference: match std::env::var("KFLOW_BENCH_TORCH_REFERENCE").as_deref() {
            Err(_) | Ok("" | "none") => None,
            Ok("float64") => Some(&["--numerics", "float64"]),
            Ok("no-onednn") => Some(&["--numerics", "no-onednn"]),
            // The peer's own arithmetic from initial weights about one
            // float32 rounding away: how far the training path amplifies the
            // smallest difference two implementations can have.
            Ok("perturbed") => Some(&["--numerics", "float32", "--perturb", "2e-7"]),
            Ok(other) => {
                return Err(format!(
                    "KFLOW_BENCH_TORCH_REFERENCE must be none, float64, no-onednn or perturbed, got `{other}`"
                ));
            }
        },
        target_val_loss: env_loss("KFLOW_BENCH_TARGET_VAL_LOSS", DEFAULT_TARGET_VAL_LOSS)?,
    };
    let hyper = Hyper {
        seed: env_count_or_zero("KFLOW_BENCH_SEED", 0)? as u64,
        ..Hyper::default()
    };
    let (model, seed) = baseline::baseline_model()?;
    let [channels, width] = model.input[..] else {
        return Err(format!("{MODEL}: expected a [C, L] input, found {:?}", model.input));
    };

    println!(
        "training throughput: {MODEL} ({GRAPH}), {} training windows of [{channels}, {width}] per epoch, \
         {} validation windows, batch {}, {} rounds of {} epochs per tool, interleaved",
        settings.samples, settings.val_samples, hyper.batch_size, settings.rounds, settings.epochs
    );
    println!("machine: {}", machine_description());
    println!("load average at start: {}", load_average());
    println!(
        "kflow:   kflow_train::train_epoch in-process, CANDLE_NUM_THREADS=1 and RAYON_NUM_THREADS=1 \
         (as the binary sets them)"
    );
    println!("torch:   {torch_version} ({})", python.display());
    if torch_version.split('+').next() != Some(TORCH_PIN) {
        println!("warning: benches/install-peers.sh pins torch {TORCH_PIN}; this venv has {torch_version}");
    }

    let dir = tempfile::Builder::new()
        .prefix("kflow-bench-train-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let train = Split::generate(settings.samples, channels, width, 1);
    let val = Split::generate(settings.val_samples, channels, width, 2);
    let weights = Weights::init(&model, seed).map_err(|e| format!("{MODEL}: initial weights: {e}"))?;
    let model_path = dir.path().join("model.json");
    let weights_path = dir.path().join("init.safetensors");
    write_file(
        &model_path,
        model.to_json_pretty().map_err(|e| format!("{MODEL}: {e}"))?.as_bytes(),
    )?;
    write_file(
        &weights_path,
        &weights.to_safetensors().map_err(|e| format!("{MODEL}: {e}"))?,
    )?;
    let train_arg = train.write(dir.path(), "train")?;
    let val_arg = val.write(dir.path(), "val")?;
    // kflow's batch order for every epoch either tool will run, for PyTorch.
    let total_epochs = 1 + settings.rounds * settings.epochs;
    let order_path = dir.path().join("order.u32");
    let order: Vec<u8> = (1..=total_epochs as u32)
        .flat_map(|epoch| hyper.sample_order(settings.samples, epoch))
        .flat_map(u32::to_le_bytes)
        .collect();
    write_file(&order_path, &order)?;

    let torch_command = |threads: usize, worker_args: &[&str]| {
        let mut command = Command::new(&python);
        command
            .arg(SCRIPT)
            .arg("--model")
            .arg(&model_path)
            .arg("--weights")
            .arg(&weights_path)
            .args(["--train", &train_arg, "--val", &val_arg])
            .arg("--order")
            .arg(&order_path)
            .args(["--threads", &threads.to_string()])
            .args(["--batch-size", &hyper.batch_size.to_string()])
            .args(["--lr", &hyper.lr.to_string()])
            .args(["--weight-decay", &hyper.weight_decay.to_string()])
            .args(["--beta1", &hyper.beta1.to_string()])
            .args(["--beta2", &hyper.beta2.to_string()])
            .args(["--eps", &hyper.eps.to_string()])
            .args(["--seed", &hyper.seed.to_string()])
            .args(["--adamw", &settings.adamw])
            .args(worker_args);
        command
    };
    let mut torch = vec![Torch::start(torch_command(1, FLOAT32), 1, Role::Peer)?];
    if let Some(threads) = settings.extra_threads {
        torch.push(Torch::start(torch_command(threads, FLOAT32), threads, Role::Threads)?);
    }
    if let Some(args) = settings.reference {
        torch.push(Torch::start(torch_command(1, args), 1, Role::Reference)?);
    }
    let kflow_params = check_same_model(&model, &torch[0].tensors)?;
    println!(
        "model: {} trainable values in both; PyTorch's state dict has the IR's tensor names and shapes",
        kflow_params
    );
    for worker in &torch {
        println!(
            "torch worker: pid {}, torch.get_num_threads() = {}, get_num_interop_threads() = {}, AdamW {}, {}",
            worker.pid, worker.threads, worker.interop_threads, settings.adamw, worker.numerics
        );
    }

    let mut kflow = Kflow {
        model: &model,
        checkpoint: Some(Checkpoint::fresh(weights)),
        train: &train,
        val: &val,
        hyper: &hyper,
        clock_ticks: clock_ticks(),
    };
    // One epoch of each left out of samples/s: first-touch allocations,
    // caches, lazy setup. It counts towards the time to a validation loss,
    // which is measured from the start of training.
    let mut kflow_epochs = vec![kflow.epoch()?];
    let mut torch_epochs: Vec<Vec<Epoch>> = Vec::new();
    for worker in &mut torch {
        torch_epochs.push(vec![worker.epoch()?]);
    }
    print!(
        "epoch 1 (not in samples/s) train loss: kflow {:.4}",
        kflow_epochs[0].train_loss
    );
    for (worker, epochs) in torch.iter().zip(&torch_epochs) {
        print!(", {} {:.4}", worker.name(), epochs[0].train_loss);
    }
    println!();

    for round in 0..settings.rounds {
        // Alternate which tool goes first, so that neither always follows the other.
        let kflow_first = round % 2 == 0;
        if kflow_first {
            for _ in 0..settings.epochs {
                kflow_epochs.push(kflow.epoch()?);
            }
        }
        for (worker, epochs) in torch.iter_mut().zip(&mut torch_epochs) {
            for _ in 0..settings.epochs {
                epochs.push(worker.epoch()?);
            }
        }
        if !kflow_first {
            for _ in 0..settings.epochs {
                kflow_epochs.push(kflow.epoch()?);
            }
        }
        eprintln!("round {}/{} done", round + 1, settings.rounds);
    }
    for worker in torch.iter_mut() {
        worker.quit();
    }

    println!("load average at end:   {}", load_average());
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12} {:>9} {:>11} {:>8}",
        "training, samples/s", "median", "min", "max", "median epoch", "cpu/wall", "train loss", "val F1"
    );
    let kflow_summary = Summary::of(&kflow_epochs[1..]);
    kflow_summary.print("kflow (1 thread)");
    let mut torch_summaries = Vec::new();
    for (worker, epochs) in torch.iter().zip(&torch_epochs) {
        let summary = Summary::of(&epochs[1..]);
        summary.print(&worker.name());
        torch_summaries.push(summary);
    }
    println!();
    println!(
        "(median epoch: {} training samples plus the validation pass; cpu/wall: process CPU time over wall time, \
         about 1.00 on one thread; loss and F1 after the last epoch)",
        settings.samples
    );
    for (worker, summary) in torch.iter().zip(&torch_summaries) {
        let ratio = kflow_summary.median / summary.median;
        match worker.role {
            Role::Peer => println!("ratio (kflow / torch, samples/s, medians, 1 thread each) = {ratio:.2}"),
            Role::Threads => println!(
                "for information: kflow on 1 thread / torch on {} threads = {ratio:.2}",
                worker.threads
            ),
            Role::Reference => println!("for information: kflow / {} = {ratio:.2}", worker.name()),
        }
    }

    println!();
    println!(
        "loss per epoch (same initial weights, same batches; val: evaluation mode, {} windows):",
        settings.val_samples
    );
    // The reference worker, if any: PyTorch against itself with other rounding.
    let reference = torch
        .iter()
        .zip(&torch_epochs)
        .find(|(worker, _)| worker.role == Role::Reference);
    print!(
        "{:>5} {:>12} {:>12} {:>13} {:>10} {:>10}",
        "epoch", "kflow train", "torch train", "kflow/torch", "kflow val", "torch val"
    );
    match reference {
        Some((worker, _)) => println!(" {:>15} {:>10}", format!("{} train", worker.numerics), "ref/torch"),
        None => println!(),
    }
    for (i, (k, t)) in kflow_epochs.iter().zip(&torch_epochs[0]).enumerate() {
        print!(
            "{:>5} {:>12.4} {:>12.4} {:>13.3} {:>10.4} {:>10.4}",
            i + 1,
            k.train_loss,
            t.train_loss,
            k.train_loss / t.train_loss,
            k.val_loss,
            t.val_loss
        );
        match reference.and_then(|(_, epochs)| epochs.get(i)) {
            Some(r) => println!(" {:>15.4} {:>10.3}", r.train_loss, r.train_loss / t.train_loss),
            None => println!(),
        }
    }

    let target = settings.target_val_loss;
    println!();
    println!(
        "time to validation loss <= {target} (wall time of the tool's epochs from the start of training, \
         the first included, to the end of the first epoch that reaches it):"
    );
    let kflow_time = TimeTo::of(&kflow_epochs, target);
    kflow_time.print("kflow (1 thread)");
    for (worker, epochs) in torch.iter().zip(&torch_epochs) {
        let torch_time = TimeTo::of(epochs, target);
        torch_time.print(&worker.name());
        if worker.role == Role::Peer {
            match (kflow_time.reached, torch_time.reached) {
                (Some((_, k)), Some((_, t))) => {
                    println!(
                        "ratio (torch / kflow, time to validation loss <= {target}, 1 thread each) = {:.2}",
                        t / k
                    );
                }
                _ => println!(
                    "ratio (time to validation loss <= {target}): not measured, a tool did not reach it \
                     (set KFLOW_BENCH_TARGET_VAL_LOSS)"
                ),
            }
        }
    }
    Ok(())
}

/// The default of `KFLOW_BENCH_TARGET_VAL_LOSS`: near the lowest validation
/// loss of the default seed's data and order, which comes in the first few
/// epochs (later the network memorizes the training noise).
const DEFAULT_TARGET_VAL_LOSS: f64 = 0.437;

/// When a tool's validation loss first reached a target.
struct TimeTo {
    /// The epoch (1-based) and the seconds of epochs 1 to it.
    reached: Option<(usize, f64)>,
    epochs: usize,
    best: f64,
}

impl TimeTo {
    fn of(epochs: &[Epoch], target: f64) -> TimeTo {
        let mut seconds = 0.0;
        let mut reached = None;
        for (i, epoch) in epochs.iter().enumerate() {
            seconds += epoch.seconds;
            if epoch.val_loss <= target {
                reached = Some((i + 1, seconds));
                break;
            }
        }
        TimeTo {
            reached,
            epochs: epochs.len(),
            best: epochs.iter().map(|e| e.val_loss).fold(f64::INFINITY, f64::min),
        }
    }

    fn print(&self, name: &str) {
        match self.reached {
            Some((epoch, seconds)) => println!("{name:<28} {seconds:>8.2} s (epoch {epoch})"),
            None => println!(
                "{name:<28} not reached in {} epochs (best validation loss {:.4})",
                self.epochs, self.best
            ),
        }
    }
}

/// The venv `benches/install-peers.sh torch` makes.
fn venv_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("KFLOW_BENCH_VENV") {
        return Ok(PathBuf::from(dir));
    }
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").ok_or("neither KFLOW_BENCH_VENV, XDG_CACHE_HOME nor HOME is set")?;
            PathBuf::from(home).join(".cache")
        }
    };
    Ok(cache.join("kflow-bench").join("torch-venv"))
}

/// torch's version in the venv, or how to install it.
fn probe_torch(python: &Path) -> Result<String, String> {
    let install = format!(
        "The peer of this bench is PyTorch {TORCH_PIN} from PyPI in its own venv ({}).\n\
         Install it with `benches/install-peers.sh torch` (several GB: the PyPI wheel brings CUDA libraries; \
         the bench runs on CPU) and rerun.",
        python.parent().and_then(Path::parent).unwrap_or(python).display()
    );
    if !python.is_file() {
        return Err(format!("{} does not exist.\n{install}", python.display()));
    }
    let output = Command::new(python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}\n{install}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} cannot import torch:\n{}\n{install}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Checks that PyTorch's network has exactly the tensors kflow expects
/// (names and shapes, running statistics included); returns the number of
/// trainable values.
fn check_same_model(model: &Model, torch_tensors: &BTreeMap<String, Vec<usize>>) -> Result<usize, String> {
    let expected: BTreeMap<String, Vec<usize>> = kflow_model::expected(model)
        .map_err(|e| format!("{MODEL}: {e}"))?
        .into_iter()
        .collect();
    if &expected != torch_tensors {
        return Err(format!(
            "PyTorch built a different network.\nkflow: {expected:?}\ntorch: {torch_tensors:?}"
        ));
    }
    Ok(expected
        .iter()
        .filter(|(name, _)| !name.ends_with(".running_mean") && !name.ends_with(".running_var"))
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum())
}

/// Windows of noise; every other one (label 1) has a bump in its first two
/// channels at a random position, so that both tools have something to
/// learn and their losses can be compared.
struct Split {
    x: Vec<f32>,
    y: Vec<u8>,
    shape: [usize; 3],
}

impl Split {
    fn generate(n: usize, channels: usize, width: usize, seed: u64) -> Split {
        let mut rng = SplitMix64(seed);
        let mut x = Vec::with_capacity(n * channels * width);
        let mut y = Vec::with_capacity(n);
        let bump = 4.min(width);
        for i in 0..n {
            let label = (i % 2) as u8;
            let at = (rng.unit() * (width - bump + 1) as f32) as usize;
            for c in 0..channels {
                for t in 0..width {
                    let lift = if label == 1 && c < 2 && (at..at + bump).contains(&t) {
                        LIFT
                    } else {
                        0.0
                    };
                    x.push(rng.unit() - 0.5 + lift);
                }
            }
            y.push(label);
        }
        Split {
            x,
            y,
            shape: [n, channels, width],
        }
    }

    fn data(&self) -> Data<'_> {
        Data {
            x: &self.x,
            shape: self.shape,
            y: &self.y,
            held_out: &[],
        }
    }

    /// Writes the raw files `torch_train.py` reads; returns its
    /// `X_FILE,Y_FILE,N` argument.
    fn write(&self, dir: &Path, name: &str) -> Result<String, String> {
        let x_path = dir.join(format!("{name}.x.f32"));
        let y_path = dir.join(format!("{name}.y.u8"));
        let bytes: Vec<u8> = self.x.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_file(&x_path, &bytes)?;
        write_file(&y_path, &self.y)?;
        Ok(format!("{},{},{}", x_path.display(), y_path.display(), self.shape[0]))
    }
}

/// The bump's height over noise uniform in ±0.5: low enough that neither
/// tool's loss reaches zero within the bench (tiny values could also bring
/// denormals into the arithmetic of one tool and not the other).
const LIFT: f32 = 0.25;

/// A small, well-mixed generator: enough for benchmark data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// One timed epoch of either tool.
#[derive(Deserialize)]
struct Epoch {
    samples: u64,
    seconds: f64,
    cpu_seconds: Option<f64>,
    train_loss: f64,
    val_loss: f64,
    val_f1: f64,
}

impl Epoch {
    fn rate(&self) -> f64 {
        self.samples as f64 / self.seconds
    }
}

struct Kflow<'a> {
    model: &'a Model,
    checkpoint: Option<Checkpoint>,
    train: &'a Split,
    val: &'a Split,
    hyper: &'a Hyper,
    clock_ticks: f64,
}

impl Kflow<'_> {
    fn epoch(&mut self) -> Result<Epoch, String> {
        let checkpoint = self.checkpoint.take().ok_or("no checkpoint after a failed epoch")?;
        let cpu = cpu_seconds(self.clock_ticks);
        let start = Instant::now();
        let (next, stats) = train_epoch(self.model, checkpoint, &self.train.data(), &self.val.data(), self.hyper)
            .map_err(|e| format!("kflow training: {e}"))?;
        let seconds = start.elapsed().as_secs_f64();
        let cpu_seconds = cpu.zip(cpu_seconds(self.clock_ticks)).map(|(a, b)| b - a);
        self.checkpoint = Some(next);
        Ok(Epoch {
            samples: stats.samples,
            seconds,
            cpu_seconds,
            train_loss: stats.train_loss,
            val_loss: stats.val_loss,
            val_f1: stats.val_metric,
        })
    }
}

/// A running `torch_train.py`, waiting for commands.
struct Torch {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    threads: usize,
    interop_threads: usize,
    numerics: String,
    role: Role,
    tensors: BTreeMap<String, Vec<usize>>,
}

/// What a PyTorch worker is measured for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The peer: one thread, float32.
    Peer,
    /// More threads, for information.
    Threads,
    /// Other rounding (`--numerics`), or perturbed initial weights, to show
    /// how far that alone moves the losses.
    Reference,
}

#[derive(Deserialize)]
struct Ready {
    threads: usize,
    interop_threads: usize,
    numerics: String,
    tensors: BTreeMap<String, Vec<usize>>,
}

impl Torch {
    fn start(mut command: Command, threads: usize, role: Role) -> Result<Torch, String> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {SCRIPT}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout from torch_train.py")?);
        let mut torch = Torch {
            pid: child.id(),
            child,
            stdin,
            stdout,
            threads,
            interop_threads: 0,
            numerics: String::new(),
            role,
            tensors: BTreeMap::new(),
        };
        let ready: Ready = torch.read("ready")?;
        if ready.threads != threads {
            return Err(format!(
                "torch_train.py runs {} threads, asked for {threads}",
                ready.threads
            ));
        }
        torch.interop_threads = ready.interop_threads;
        torch.numerics = ready.numerics;
        torch.tensors = ready.tensors;
        Ok(torch)
    }

    fn name(&self) -> String {
        let plural = if self.threads == 1 { "" } else { "s" };
        match self.role {
            Role::Reference => format!("torch ({} thread{plural}, {})", self.threads, self.numerics),
            Role::Peer | Role::Threads => format!("torch ({} thread{plural})", self.threads),
        }
    }

    fn epoch(&mut self) -> Result<Epoch, String> {
        let stdin = self.stdin.as_mut().ok_or("torch_train.py was told to quit")?;
        stdin
            .write_all(b"epoch\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("torch_train.py (pid {}) stopped reading: {e}", self.pid))?;
        self.read("epoch")
    }

    /// The next JSON line, which must be an `event` of kind `what`.
    fn read<T: for<'de> Deserialize<'de>>(&mut self, what: &str) -> Result<T, String> {
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading torch_train.py's output: {e}"))?;
        if read == 0 {
            let status = self.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(format!(
                "torch_train.py (pid {}) ended ({status}) before its `{what}` line; its stderr is above",
                self.pid
            ));
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("torch_train.py printed `{}`: {e}", line.trim()))?;
        if value.get("event").and_then(|v| v.as_str()) != Some(what) {
            return Err(format!("torch_train.py printed `{}`, expected `{what}`", line.trim()));
        }
        serde_json::from_value(value).map_err(|e| format!("torch_train.py's `{what}` line: {e}"))
    }

    fn quit(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"quit\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        // End of input ends the script; wait so that no process outlives the bench.
        self.stdin.take();
        let _ = self.child.wait();
    }
}

struct Summary {
    median: f64,
    min: f64,
    max: f64,
    median_seconds: f64,
    cpu_per_wall: Option<f64>,
    train_loss: f64,
    val_f1: f64,
}

impl Summary {
    fn of(epochs: &[Epoch]) -> Summary {
        let median = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            let n = values.len();
            if n % 2 == 1 {
                values[n / 2]
            } else {
                (values[n / 2 - 1] + values[n / 2]) / 2.0
            }
        };
        let rates: Vec<f64> = epochs.iter().map(Epoch::rate).collect();
        let cpu: Option<f64> = epochs.iter().map(|e| e.cpu_seconds).sum();
        let wall: f64 = epochs.iter().map(|e| e.seconds).sum();
        let last = epochs.last();
        Summary {
            median: median(rates.clone()),
            min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            max: rates.iter().copied().fold(0.0, f64::max),
            median_seconds: median(epochs.iter().map(|e| e.seconds).collect()),
            cpu_per_wall: cpu.map(|c| c / wall),
            train_loss: last.map_or(f64::NAN, |e| e.train_loss),
            val_f1: last.map_or(f64::NAN, |e| e.val_f1),
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<28} {:>12.0} {:>12.0} {:>12.0} {:>10.1} ms {:>9} {:>11.4} {:>8.3}",
            self.median,
            self.min,
            self.max,
            self.median_seconds * 1e3,
            self.cpu_per_wall.map_or("n/a".to_owned(), |r| format!("{r:.2}")),
            self.train_loss,
            self.val_f1
        );
    }
}

/// This process's user + system CPU time (Linux), in seconds.
fn cpu_seconds(clock_ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / clock_ticks)
}

/// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on Linux in practice).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Cores, CPU model, memory and OS, as far as Linux tells them.
fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let field = |path: &str, prefix: &str| {
        std::fs::read_to_string(path).ok().and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix(prefix)).map(|v| {
                v.trim_start_matches([' ', '\t', ':', '='])
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
        })
    };
    let cpu = field("/proc/cpuinfo", "model name");
    let memory = field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| format!("{:.0} GiB RAM", kib / (1024.0 * 1024.0)));
    let os = field("/etc/os-release", "PRETTY_NAME");
    format!(
        "{cores} cores (nproc), {}, {}, {}, {}",
        cpu.as_deref().unwrap_or("unknown CPU"),
        memory.as_deref().unwrap_or("unknown RAM"),
        os.as_deref().unwrap_or("unknown OS"),
        std::env::consts::ARCH
    )
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A positive count from the environment, or its default.
fn env_count(name: &str, default: usize) -> Result<usize, String> {
    match env_count_or_zero(name, default)? {
        0 => Err(format!("{name} must be a positive integer")),
        n => Ok(n),
    }
}

/// A positive loss from the environment, or its default.
fn env_loss(name: &str, default: f64) -> Result<f64, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Ok(value) => match value.trim().parse::<f64>() {
            Ok(loss) if loss.is_finite() && loss > 0.0 => Ok(loss),
            _ => Err(format!("{name} must be a positive number, got `{value}`")),
        },
        Err(e) => Err(format!("{name}: {e}")),
    }
}

/// A count (zero allowed) from the environment, or its default.
fn env_count_or_zero(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Ok(value) => value
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("{name} must be a non-negative integer, got `{value}`")),
        Err(e) => Err(format!("{name}: {e}")),
    }
}
