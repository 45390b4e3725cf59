//! Training throughput (samples/s) of the 1-D CNN the PyTorch comparison
//! uses: 17×32 windows, conv blocks of 16, 32 and 32 channels, batch 64.
//! Run with `cargo bench -p kflow-train`. Training runs on one thread
//! whatever the caller's pool (see `src/threads.rs`); `RAYON_NUM_THREADS=1`
//! also keeps candle's matmul from splitting its work into per-core tasks,
//! which costs about 15% even when they run one after another.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use kflow_train::{Checkpoint, Hyper, train_epoch};

fn main() {
    let model = common::cnn1d([17, 32], &[16, 32, 32]);
    let train = common::bumps(4096, 17, 32, 1);
    let val = common::bumps(512, 17, 32, 2);
    let hyper = Hyper::default();
    // The caller's pool size, which must not change results or speed much.
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        pool.install(|| {
            let mut checkpoint = Checkpoint::fresh(common::init(&model, 1));
            // The first epoch warms up allocators and candle's pools.
            for epoch in 0..3 {
                let start = Instant::now();
                let (next, stats) =
                    train_epoch(&model, checkpoint, &train.data(), &val.data(), &hyper).expect("training");
                let seconds = start.elapsed().as_secs_f64();
                if epoch > 0 {
                    println!(
                        "threads {threads}: {:.0} samples/s (epoch {} incl. validation, {seconds:.3} s, loss {:.4})",
                        stats.samples as f64 / seconds,
                        stats.epoch,
                        stats.train_loss
                    );
                }
                checkpoint = next;
            }
        });
    }
}
