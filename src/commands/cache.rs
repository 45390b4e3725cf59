//! `kflow cache stats|gc|verify` and `kflow clean`.

use std::path::Path;

use bytesize::ByteSize;
use kflow_cache::Cache;

use super::{announce_wait, cache_dir, on_every_core, open_workspace};
use crate::Failure;
use crate::cli::{CacheArgs, CacheCommand, CleanArgs, OutputFormat};

pub fn run(cwd: &Path, args: CacheArgs, quiet: bool) -> Result<(), Failure> {
    // The cache is usable outside a workspace; a workspace only supplies a
    // default location.
    let ws = open_workspace(cwd).ok();
    let dir = cache_dir(&args.cache, ws.as_ref())?;
    // Only the passes that delete need the cache alone; stats read beside
    // running builds.
    let mut on_wait = |m: &str| announce_wait(quiet)(m);
    let cache = match args.command {
        CacheCommand::Stats { .. } => Cache::open(&dir, &mut on_wait)?,
        CacheCommand::Gc { .. } | CacheCommand::Verify => Cache::open_exclusive(&dir, &mut on_wait)?,
    };
    match args.command {
        CacheCommand::Stats { output } => {
            let stats = cache.stats()?;
            if output == OutputFormat::Json {
                let text = serde_json::to_string_pretty(&stats).map_err(|e| Failure::Build(Some(e.to_string())))?;
                crate::output::line(text);
            } else {
                crate::output::line(format_args!("cache:        {}", stats.dir.display()));
                crate::output::line(format_args!(
                    "blobs:        {} ({})",
                    stats.blobs,
                    ByteSize(stats.blob_bytes)
                ));
                crate::output::line(format_args!("actions:      {}", stats.actions));
            }
        }
        CacheCommand::Gc { max_size } => {
            let report = cache.gc(max_size.as_u64())?;
            crate::output::line(format_args!(
                "removed {} blobs ({}) and {} actions; {} blobs ({}) remain",
                report.removed_blobs,
                ByteSize(report.removed_bytes),
                report.removed_actions,
                report.remaining_blobs,
                ByteSize(report.remaining_bytes)
            ));
        }
        CacheCommand::Verify => {
            let report = on_every_core(|| cache.verify())?;
            crate::output::line(format_args!(
                "checked {} blobs and {} actions: {} damaged blobs, {} bad actions",
                report.blobs_checked,
                report.actions_checked,
                report.bad_blobs.len(),
                report.bad_actions
            ));
            for blob in &report.bad_blobs {
                crate::output::line(format_args!("  removed damaged blob {blob}"));
            }
            if !report.is_clean() {
                return Err(Failure::Build(Some(
                    "the cache had damaged entries; they were removed and will be rebuilt".to_owned(),
                )));
            }
        }
    }
    Ok(())
}

pub fn clean(cwd: &Path, args: CleanArgs, quiet: bool) -> Result<(), Failure> {
    let ws = open_workspace(cwd)?;
    let out = ws.out_dir();
    remove_dir(&out)?;
    if !quiet {
        eprintln!("removed {}", out.display());
    }
    if args.cache {
        let dir = cache_dir(&args.cache_dir, Some(&ws))?;
        // Hold the cache alone while deleting, so that no build is using it.
        let cache = Cache::open_exclusive(&dir, &mut |m| announce_wait(quiet)(m))?;
        drop(cache);
        remove_dir(&dir)?;
        if !quiet {
            eprintln!("removed {}", dir.display());
        }
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), Failure> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::Build(Some(format!("cannot remove {}: {e}", dir.display())))),
    }
}
