//! Placing outputs in `kflow-out/`: kflow's verified read-only copy
//! (`Cache::materialize`, reflinked where the filesystem can) against
//! the two ways a file gets there without kflow: a hard link into the
//! store (what kflow did before copies; fast, but an edit through it
//! reaches the store) and `cp --reflink=auto` (coreutils). Sizes from a
//! small model file to a large dataset split.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kflow_cache::Cache;

const ROUNDS: usize = 7;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time(mut place: impl FnMut(&Path), out: &Path) -> Duration {
    median(
        (0..ROUNDS)
            .map(|_| {
                let _ = std::fs::remove_file(out);
                let started = Instant::now();
                place(out);
                started.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::open(&dir.path().join("cache"), &mut |_| {}).expect("cache");
    let out = dir.path().join("kflow-out");
    std::fs::create_dir_all(&out).expect("kflow-out");
    println!("| size | kflow copy | hard link | cp --reflink=auto | kflow / link | kflow / cp |");
    println!("|---|---|---|---|---|---|");
    for mb in [1usize, 16, 128] {
        let bytes: Vec<u8> = (0..mb << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let blob = cache.put_bytes(&bytes).expect("blob");
        let src = cache.blob_path(&blob.digest);
        let dest = out.join(format!("{mb}.bin"));
        let kflow = time(|d| cache.materialize(&blob, d).expect("materialize"), &dest);
        let link = time(|d| std::fs::hard_link(&src, d).expect("link"), &dest);
        let cp = time(
            |d| {
                let ok = Command::new("cp").arg("--reflink=auto").arg(&src).arg(d).status();
                assert!(ok.is_ok_and(|s| s.success()), "cp failed");
            },
            &dest,
        );
        println!(
            "| {mb} MiB | {:.2} ms | {:.3} ms | {:.2} ms | {:.0} | {:.2} |",
            kflow.as_secs_f64() * 1e3,
            link.as_secs_f64() * 1e3,
            cp.as_secs_f64() * 1e3,
            kflow.as_secs_f64() / link.as_secs_f64(),
            kflow.as_secs_f64() / cp.as_secs_f64()
        );
    }
}
