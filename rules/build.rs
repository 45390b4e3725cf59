//! Fingerprints each rule module's code (its sources and every crate it
//! depends on) into `$OUT_DIR/code.rs`; see `src/code.rs`.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.parent().map(PathBuf::from).unwrap_or_default();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("code.rs");
    let written = kflow_codeprint::fingerprints(&root, "kflow-rules", &kflow_codeprint::BYTE_MOVERS).and_then(|f| {
        for path in &f.watched {
            println!("cargo::rerun-if-changed={}", path.display());
        }
        std::fs::write(&out, kflow_codeprint::to_rust(&f)).map_err(|source| kflow_codeprint::CodeprintError::Read {
            path: out.clone(),
            source,
        })
    });
    if let Err(e) = written {
        eprintln!("kflow-rules: cannot fingerprint the rules' code: {e}");
        std::process::exit(1);
    }
}
