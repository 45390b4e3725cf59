//! Finding and loading ONNX Runtime. kflow does not link it: the shared
//! library comes from the `onnxruntime` Python package (PyPI has it for
//! every platform we run on; Debian does not), found through
//! `ORT_DYLIB_PATH` or by asking Python where the package lives.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::HostError;

/// The version the install scripts pin; any 1.20 or later works.
pub const PINNED_VERSION: &str = "1.32.0";

/// How to get ONNX Runtime, for error messages.
pub fn install_hint() -> String {
    format!(
        "install it with `python3 -m pip install onnxruntime=={PINNED_VERSION}` (scripts/install-onnxruntime.sh does), \
         or set ORT_DYLIB_PATH to a libonnxruntime.so"
    )
}

/// The ONNX Runtime environment of this process, loaded on first use. Its
/// library can be loaded once per process, so a failure is final too.
pub fn environment() -> Result<&'static Environment, HostError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| load().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|m| HostError::Runtime(m.clone()))
}

/// Which ONNX Runtime this process would load: the library's file name
/// and a digest of its bytes (so two machines with the same wheel agree),
/// or why there is none. Computed once per process.
pub fn identity() -> &'static str {
    static IDENTITY: OnceLock<String> = OnceLock::new();
    IDENTITY.get_or_init(|| match locate() {
        Ok(path) => match std::fs::read(&path) {
            Ok(bytes) => format!(
                "onnxruntime {} {}",
                path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                blake3::hash(&bytes).to_hex()
            ),
            Err(e) => format!("onnxruntime unreadable: {e}"),
        },
        Err(_) => "onnxruntime missing".to_owned(),
    })
}

fn load() -> Result<Environment, HostError> {
    let path = locate()?;
    // ort panics (rather than failing) on a library older than the API it
    // was built for; a user's odd installation must not take kflow down.
    let built = std::panic::catch_unwind(|| {
        ort::init_from(&path)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?
            .with_name("kflow")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    });
    match built {
        Ok(result) => result.map_err(HostError::Runtime),
        Err(_) => Err(HostError::Runtime(format!(
            "{} is not a usable ONNX Runtime (version 1.20 or later is needed); {}",
            path.display(),
            install_hint()
        ))),
    }
}

/// `ORT_DYLIB_PATH`, else the library inside the `onnxruntime` Python
/// package.
pub fn locate() -> Result<PathBuf, HostError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HostError::Runtime(format!(
                "ORT_DYLIB_PATH is {}, which is not a file; {}",
                path.display(),
                install_hint()
            )))
        };
    }
    let package = python_package_dir().ok_or_else(|| {
        HostError::Runtime(format!(
            "ONNX Runtime was not found (no ORT_DYLIB_PATH, and Python cannot import onnxruntime); {}",
            install_hint()
        ))
    })?;
    library_in(&package.join("capi")).ok_or_else(|| {
        HostError::Runtime(format!(
            "the onnxruntime package at {} has no libonnxruntime.so; {}",
            package.display(),
            install_hint()
        ))
    })
}

fn python_package_dir() -> Option<PathBuf> {
    for python in ["python3", "python"] {
        let out = Command::new(python)
            .args([
                "-c",
                "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
            ])
            .output();
        if let Ok(out) = out
            && out.status.success()
        {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !dir.is_empty() {
                return Some(PathBuf::from(dir));
            }
        }
    }
    None
}

/// The wheel ships only versioned names (`libonnxruntime.so.1.32.0`); the
/// longest name is the most specific.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_library_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["libonnxruntime.so.1", "libonnxruntime.so.1.23.2", "other.so"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            library_in(dir.path()),
            Some(dir.path().join("libonnxruntime.so.1.23.2"))
        );
        assert_eq!(library_in(&dir.path().join("missing")), None);
    }
}
