//! What of the machine decides training's floating-point results: the same
//! inputs give the same bytes on every machine of one class, and perhaps
//! different bytes across classes.
//!
//! candle's matrix products (`gemm`) choose their kernel at run time from
//! the CPU's features: with AVX2 and FMA a fused multiply-add rounds once
//! where the plain SSE path rounds twice, so one epoch's weights differ
//! (measured: an x86-64 without AVX under `qemu-x86_64 -cpu Nehalem` against
//! AVX2 and AVX-512 machines, which agree with each other). `gemm` also
//! blocks long dot products by the sizes of the CPU's caches, which changes
//! their summation order. The class names both, so that results computed
//! on one class are never taken for another's.

use std::sync::OnceLock;

/// This machine's class, e.g. `x86_64 avx avx2 fma; caches L1d 48K/12/64
/// L2 2048K/16/64 …`. Computed once per process.
pub fn arithmetic_class() -> &'static str {
    static CLASS: OnceLock<String> = OnceLock::new();
    CLASS.get_or_init(|| format!("{} {}; caches {}", std::env::consts::ARCH, features(), caches()))
}

/// The CPU features that `gemm` and candle's CPU kernels dispatch on.
fn features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let found = [
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
        ];
        found
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" ")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        String::from("baseline")
    }
}

/// The cache geometry `gemm` reads (Linux's sysfs): level, type, size,
/// ways and line size of each cache of the first CPU.
fn caches() -> String {
    let base = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let Ok(entries) = std::fs::read_dir(base) else {
        return "unknown".to_owned();
    };
    let mut indexes: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("index")))
        .collect();
    indexes.sort();
    let read = |dir: &std::path::Path, name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    indexes
        .iter()
        .map(|dir| {
            format!(
                "L{}{} {}/{}/{}",
                read(dir, "level"),
                match read(dir, "type").as_str() {
                    "Data" => "d",
                    "Instruction" => "i",
                    _ => "",
                },
                read(dir, "size"),
                read(dir, "ways_of_associativity"),
                read(dir, "coherency_line_size")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_names_the_architecture_and_is_stable() {
        let class = arithmetic_class();
        assert!(class.starts_with(std::env::consts::ARCH), "{class}");
        assert!(class.contains("; caches "), "{class}");
        assert_eq!(class, arithmetic_class());
    }
}
