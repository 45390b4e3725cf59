//! Build progress: a live view on a terminal (indicatif), plain lines when
//! the output is a pipe or a file, nothing with `--quiet`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kflow_engine::Status;
use kflow_engine::events::{ActionRecord, BuildEvent, Counts, Observer};

/// Picks the display for the current stderr.
pub fn observer(quiet: bool) -> Box<dyn Observer> {
    if quiet {
        Box::new(kflow_engine::events::Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Live::new())
    } else {
        Box::new(Lines::new())
    }
}

#[derive(Default)]
struct Tally {
    total: AtomicUsize,
    finished: AtomicUsize,
    executed: AtomicU64,
    cached: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
}

impl Tally {
    fn add(&self, status: Status) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        let counter = match status {
            Status::Executed => &self.executed,
            Status::Cached | Status::RemoteCached => &self.cached,
            Status::Failed => &self.failed,
            Status::Rejected => &self.rejected,
            Status::Skipped => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn summary(&self, running: usize) -> String {
        format!(
            "{} executed, {} cached, {running} running, {} failed{}",
            self.executed.load(Ordering::Relaxed),
            self.cached.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            match self.rejected.load(Ordering::Relaxed) {
                0 => String::new(),
                n => format!(", {n} rejected"),
            }
        )
    }
}

/// The terminal view: one bar for the whole build, one line per running
/// action with its latest progress message.
struct Live {
    multi: MultiProgress,
    bar: ProgressBar,
    tally: Tally,
    running: Mutex<BTreeMap<String, ProgressBar>>,
}

/// Running actions shown individually; the rest are counted.
const SHOWN_RUNNING: usize = 8;

impl Live {
    fn new() -> Live {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Live {
            multi,
            bar,
            tally: Tally::default(),
            running: Mutex::new(BTreeMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProgressBar>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Observer for Live {
    fn event(&self, event: BuildEvent<'_>) {
        match event {
            BuildEvent::Planned { total } => {
                self.tally.total.store(total, Ordering::Relaxed);
                self.bar.set_length(total as u64);
            }
            BuildEvent::Added { count } => {
                let total = self.tally.total.fetch_add(count, Ordering::Relaxed) + count;
                self.bar.set_length(total as u64);
            }
            BuildEvent::Started { id } => {
                let mut running = self.running();
                if running.len() < SHOWN_RUNNING {
                    let line = self.multi.add(ProgressBar::new_spinner());
                    line.set_style(
                        ProgressStyle::with_template("  {spinner:.yellow} {elapsed:>4} {prefix} {wide_msg:.dim}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    line.set_prefix(id.to_owned());
                    line.enable_steady_tick(Duration::from_millis(120));
                    running.insert(id.to_owned(), line);
                }
                self.bar.set_message(self.tally.summary(running.len()));
            }
            BuildEvent::Progress { id, message } => {
                if let Some(line) = self.running().get(id) {
                    line.set_message(message.to_owned());
                }
            }
            BuildEvent::Finished { record } => {
                self.tally.add(record.status);
                let mut running = self.running();
                if let Some(line) = running.remove(&*record.id) {
                    line.finish_and_clear();
                    self.multi.remove(&line);
                }
                if record.status == Status::Failed {
                    let _ = self.multi.println(failure_line(record));
                }
                self.bar.inc(1);
                self.bar.set_message(self.tally.summary(running.len()));
            }
            BuildEvent::Warning { message } => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Plain lines: one per action that did work, none for cache hits (a no-op
/// build of ten thousand actions stays quiet), and a heartbeat naming the
/// running actions every few seconds, so that long work is never silent.
struct Lines {
    shared: Arc<LinesState>,
    /// Dropping it stops the heartbeat thread.
    _stop: mpsc::Sender<()>,
}

#[derive(Default)]
struct LinesState {
    tally: Tally,
    running: Mutex<BTreeMap<String, Instant>>,
}

const HEARTBEAT: Duration = Duration::from_secs(10);

impl Lines {
    fn new() -> Lines {
        let shared = Arc::new(LinesState::default());
        let (stop, stopped) = mpsc::channel::<()>();
        let state = shared.clone();
        std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                state.heartbeat();
            }
        });
        Lines { shared, _stop: stop }
    }
}

impl LinesState {
    fn heartbeat(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.is_empty() {
            return;
        }
        let now = Instant::now();
        let names: Vec<String> = running
            .iter()
            .take(SHOWN_RUNNING)
            .map(|(id, since)| format!("{id} ({}s)", now.duration_since(*since).as_secs()))
            .collect();
        let more = running.len().saturating_sub(SHOWN_RUNNING);
        eprintln!(
            "[{}/{}] {}; running: {}{}",
            self.tally.finished.load(Ordering::Relaxed),
            self.tally.total.load(Ordering::Relaxed),
            self.tally.summary(running.len()),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
}

impl Observer for Lines {
    fn event(&self, event: BuildEvent<'_>) {
        let s = &self.shared;
        match event {
            BuildEvent::Planned { total } => s.tally.total.store(total, Ordering::Relaxed),
            BuildEvent::Added { count } => {
                s.tally.total.fetch_add(count, Ordering::Relaxed);
            }
            BuildEvent::Started { id } => {
                s.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_owned(), Instant::now());
            }
            BuildEvent::Progress { id, message } => eprintln!("{id}: {message}"),
            BuildEvent::Finished { record } => {
                s.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&*record.id);
                s.tally.add(record.status);
                let done = s.tally.finished.load(Ordering::Relaxed);
                let total = s.tally.total.load(Ordering::Relaxed);
                match record.status {
                    Status::Executed => eprintln!("[{done}/{total}] {} ({} ms)", record.id, record.duration_ms),
                    Status::Rejected if !record.from_cache => eprintln!(
                        "[{done}/{total}] {} rejected: {}",
                        record.id,
                        record.reason.as_deref().unwrap_or("")
                    ),
                    Status::Failed => eprintln!("[{done}/{total}] {}", failure_line(record)),
                    _ => {}
                }
            }
            BuildEvent::Warning { message } => eprintln!("warning: {message}"),
        }
    }
}

fn failure_line(record: &ActionRecord) -> String {
    format!(
        "FAILED {}: {}",
        record.id,
        record.reason.as_deref().and_then(|r| r.lines().next()).unwrap_or("")
    )
}

/// The one-line summary printed after a build.
pub fn summary(success: bool, counts: &Counts, duration: Duration) -> String {
    let mut parts = vec![
        format!("{} executed", counts.executed),
        format!("{} cached", counts.cached),
    ];
    for (n, what) in [
        (counts.remote_cached, "remote-cached"),
        (counts.rejected, "rejected"),
        (counts.failed, "failed"),
        (counts.skipped, "skipped"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let total = counts.total();
    format!(
        "{} {total} action{} ({}) in {:.2} s",
        if success { "Built" } else { "FAILED:" },
        if total == 1 { "" } else { "s" },
        parts.join(", "),
        duration.as_secs_f64()
    )
}
