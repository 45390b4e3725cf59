//! Threads and determinism: why results do not depend on them, and where
//! candle's work runs.
//!
//! candle 0.11's CPU backend uses threads three ways: `gemm` splits a large
//! matmul (above 48·48·256 multiply-adds) into `RAYON_NUM_THREADS` tasks (or
//! one per physical core, reading /proc/cpuinfo at each matmul) on the
//! *current* rayon pool; element-wise ops over 64Ki values or more run on a
//! global pool of spinning workers sized once from `CANDLE_NUM_THREADS`
//! (else the same count); and `conv2d` and
//! `conv_transpose2d` iterate over samples or output channels with rayon in
//! the current pool. None of these splits a sum: `gemm` hands out tiles of
//! the output, and each output element accumulates its dot product in the
//! same `kc`-blocked order whatever the split; the element-wise ops and the
//! convolutions write disjoint outputs. This crate's own kernels (`kernels/`)
//! are sequential loops with fixed summation orders. So checkpoint bytes do
//! not depend on any thread count; the tests check it with rayon pools of 1
//! and 2 threads in-process and with `RAYON_NUM_THREADS`/`CANDLE_NUM_THREADS`
//! of 1, 2 and 3 in child processes (which changes `gemm`'s split).
//!
//! Every call still runs its candle work in a private one-thread rayon pool:
//! the engine already runs one training per job, and for the small models
//! of the search intra-op threads gained nothing (measured equal samples/s
//! with one and two), while `--jobs N` trainings each fanning out over all
//! cores would oversubscribe them. The `kflow` binary sets
//! `RAYON_NUM_THREADS=1` (so that `gemm` does not cut every product into
//! per-core tasks that then run one after another on this pool: 17% of the
//! baseline's training time) and `CANDLE_NUM_THREADS=1` (so that the shared
//! element-wise pool does not spin beside the jobs).

use crate::TrainError;

/// Runs `f` (all candle work of one public call) on a private one-thread
/// rayon pool, entered from a plain OS thread that the caller waits for.
/// A worker of another rayon pool (the build's) that called `install`
/// itself would, while waiting, run other jobs of its own pool on its
/// stack: other trainings, whose time then counts as this one's (epochs
/// of the baseline measured 145 s instead of 6 s beside a search), and
/// which make `--jobs N` run more than N trainings at once. Without a
/// private pool, `f` runs on the calling thread, with the same results.
pub(crate) fn run<R: Send>(f: impl FnOnce() -> Result<R, TrainError> + Send) -> Result<R, TrainError> {
    let Ok(pool) = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "kflow-train".into())
        .build()
    else {
        return f();
    };
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("kflow-train-caller".into())
            .spawn_scoped(scope, || pool.install(f))
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(TrainError::Model("training panicked".into()))),
            Err(_) => Err(TrainError::Model("cannot start a training thread".into())),
        }
    })
}
