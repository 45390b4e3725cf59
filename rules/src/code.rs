//! The fingerprint of each rule's code, computed at compile time by the
//! build script (kflow-codeprint): a rule returns it from `Rule::code`, so
//! that a change in the sources of the rule's module, of the modules it
//! uses, or of any crate they depend on changes exactly its action keys.

use std::sync::OnceLock;

include!(concat!(env!("OUT_DIR"), "/code.rs"));

/// The fingerprint of the top-level module that `module_path` (as
/// `module_path!()` gives it: `kflow_rules::train`) lies in, with the
/// external runtimes its results depend on. Computed on first use, so that
/// a build that runs no host evaluation never looks for ONNX Runtime.
pub fn of(module_path: &str) -> &'static str {
    static CODES: [OnceLock<String>; MODULES.len()] = [const { OnceLock::new() }; MODULES.len()];
    let module = module_path.split("::").nth(1).unwrap_or_default();
    match MODULES.iter().position(|(name, ..)| *name == module) {
        Some(i) => CODES[i].get_or_init(|| with_runtimes(MODULES[i].1, MODULES[i].2)),
        None => "",
    }
}

/// Names what a runtime is on this machine, once per process.
type Identity = fn() -> &'static str;

/// What outside the code shapes the results of the rules that use a crate,
/// by crate: ONNX Runtime's library for host evaluation (kflow-host), the
/// machine class that decides candle's floating-point results
/// (kflow-train), and the Arm compiler that builds the Cortex-M firmware
/// (kflow-cm-firmware).
const RUNTIMES: [(&str, Identity); 3] = [
    ("kflow-host", kflow_host::runtime::identity),
    ("kflow-train", kflow_train::arithmetic_class),
    ("kflow-cm-firmware", kflow_cm_firmware::compiler_identity),
];

/// A module's code digest, folded with the runtimes its crates bring in.
fn with_runtimes(digest: &str, crates: &[&str]) -> String {
    let mut runtimes = RUNTIMES.iter().filter(|(c, _)| crates.contains(c)).peekable();
    if runtimes.peek().is_none() {
        return digest.to_owned();
    }
    let mut h = blake3::Hasher::new();
    h.update(digest.as_bytes());
    for (_, identity) in runtimes {
        h.update(b"\0");
        h.update(identity().as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// `Rule::code` of a rule defined in the module where it is expanded.
macro_rules! rule_code {
    () => {
        fn code(&self) -> &str {
            crate::code::of(module_path!())
        }
    };
}
pub(crate) use rule_code;

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled-in fingerprints are those of the tree being tested: the
    /// build script reran on every edit that matters.
    #[test]
    fn compiled_fingerprints_match_the_sources() {
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = rules.parent().expect("workspace root");
        let now =
            kflow_codeprint::fingerprints(root, "kflow-rules", &kflow_codeprint::BYTE_MOVERS).expect("fingerprints");
        for (name, digest, crates) in MODULES {
            let m = &now.modules[*name];
            assert_eq!(m.digest, *digest, "module {name}");
            assert_eq!(m.crates.iter().collect::<Vec<_>>(), crates.to_vec(), "module {name}");
        }
        assert_eq!(now.modules.len(), MODULES.len());
    }

    #[test]
    fn every_rule_has_its_modules_code() {
        for rule in crate::registry().iter() {
            assert_eq!(rule.code().len(), 64, "rule {}", rule.name());
        }
        assert_eq!(of("kflow_rules::automl::search"), of("kflow_rules::automl"));
        assert_ne!(of("kflow_rules::train"), of("kflow_rules::dataset"));
        let evaluate = MODULES.iter().find(|m| m.0 == "evaluate").expect("evaluate");
        assert_ne!(
            of("kflow_rules::evaluate"),
            evaluate.1,
            "ONNX Runtime's identity is folded in"
        );
    }
}
