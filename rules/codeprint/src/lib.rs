//! Fingerprints of the code behind each rule module of a rules crate, so
//! that an action key changes exactly when the code that computes the
//! action's outputs does (SPEC.md §5), not when someone remembers to bump a
//! rule's version.
//!
//! A module's code is its own source files, the modules of the same crate
//! it names (`crate::x`), and every package it depends on through them,
//! found from the workspace's `Cargo.lock`: workspace crates by the bytes
//! of their files (tests, benches and docs left out), registry crates by
//! name, version and checksum. Crates that only move bytes (the engine and
//! the cache) are left out by the caller: they do not shape any output, and
//! counting them would rerun every action on any change to the scheduler.
//!
//! kflow-rules' build script calls [`fingerprints`] at compile time; its
//! tests call it again on the live tree and on edited copies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// What kflow-rules leaves out of every fingerprint: the crates that move
/// bytes without shaping any output (the engine, the cache), and the
/// module that hands the fingerprints out (every rule names it).
pub const BYTE_MOVERS: [&str; 3] = ["kflow-engine", "kflow-cache", "code"];

#[derive(Debug, Error)]
pub enum CodeprintError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
}

/// One module's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// blake3 of everything below, as hex.
    pub digest: String,
    /// The crate's modules it reaches, itself included.
    pub modules: BTreeSet<String>,
    /// The workspace crates it depends on (without the excluded ones).
    pub crates: BTreeSet<String>,
}

/// Every top-level module of a crate, by name, and the files that were
/// read (for the build script's `rerun-if-changed`).
#[derive(Debug)]
pub struct Fingerprints {
    pub modules: BTreeMap<String, Module>,
    pub watched: Vec<PathBuf>,
}

/// The fingerprints of the top-level modules of `crate_name` in the
/// workspace at `root`, ignoring the crates and modules named in
/// `excluded` and what is reached only through them.
pub fn fingerprints(root: &Path, crate_name: &str, excluded: &[&str]) -> Result<Fingerprints, CodeprintError> {
    let members = members(root)?;
    let lock = Lock::read(&root.join("Cargo.lock"))?;
    let crate_dir = members.get(crate_name).ok_or_else(|| CodeprintError::Manifest {
        path: root.join("Cargo.toml"),
        message: format!("no workspace member is named `{crate_name}`"),
    })?;
    let sources = module_sources(&crate_dir.join("src"))?;
    let mut crate_digests: BTreeMap<String, String> = BTreeMap::new();
    let mut watched = vec![root.join("Cargo.toml"), root.join("Cargo.lock"), crate_dir.join("src")];
    let mut modules = BTreeMap::new();
    for name in sources.keys() {
        let reached = reached_modules(name, &sources, excluded);
        let named: BTreeSet<String> = reached
            .iter()
            .flat_map(|m| named_crates(&sources[m].text))
            .filter(|c| c != crate_name && !excluded.contains(&c.as_str()))
            .collect();
        let packages = lock.closure(named.iter().map(String::as_str), excluded);
        let mut h = blake3::Hasher::new();
        field(&mut h, b"kflow-codeprint/1");
        for m in &reached {
            for (path, bytes) in &sources[m].files {
                field(&mut h, path.as_bytes());
                field(&mut h, bytes);
            }
        }
        let mut crates = BTreeSet::new();
        for package in &packages {
            field(&mut h, package.id().as_bytes());
            if package.source.is_none()
                && let Some(dir) = members.get(&package.name)
            {
                if !crate_digests.contains_key(&package.name) {
                    crate_digests.insert(package.name.clone(), crate_digest(dir)?);
                    watched.push(dir.clone());
                }
                field(&mut h, crate_digests[&package.name].as_bytes());
                crates.insert(package.name.clone());
            }
        }
        modules.insert(
            name.clone(),
            Module {
                digest: h.finalize().to_hex().to_string(),
                modules: reached,
                crates,
            },
        );
    }
    Ok(Fingerprints { modules, watched })
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn read(path: &Path) -> Result<Vec<u8>, CodeprintError> {
    std::fs::read(path).map_err(|source| CodeprintError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_toml(path: &Path) -> Result<toml::Table, CodeprintError> {
    let bytes = read(path)?;
    String::from_utf8_lossy(&bytes)
        .parse::<toml::Table>()
        .map_err(|e| CodeprintError::Manifest {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Workspace members by package name.
fn members(root: &Path) -> Result<BTreeMap<String, PathBuf>, CodeprintError> {
    let manifest = root.join("Cargo.toml");
    let table = read_toml(&manifest)?;
    let dirs = table
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .ok_or_else(|| CodeprintError::Manifest {
            path: manifest.clone(),
            message: "no `workspace.members`".to_owned(),
        })?;
    let mut members = BTreeMap::new();
    for dir in dirs.iter().filter_map(toml::Value::as_str) {
        let dir = root.join(dir);
        let path = dir.join("Cargo.toml");
        let name = read_toml(&path)?
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| CodeprintError::Manifest {
                path,
                message: "no `package.name`".to_owned(),
            })?;
        members.insert(name, dir);
    }
    Ok(members)
}

/// A workspace crate's files that can change what it computes: all but
/// its tests, benches, examples and Markdown, in path order.
fn crate_digest(dir: &Path) -> Result<String, CodeprintError> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files, &|rel: &str| {
        let first = rel.split('/').next().unwrap_or_default();
        !matches!(first, "tests" | "benches" | "examples" | "target") && !rel.ends_with(".md")
    })?;
    let mut h = blake3::Hasher::new();
    for (rel, bytes) in files {
        field(&mut h, rel.as_bytes());
        field(&mut h, &bytes);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Files under `dir` that `keep` accepts (by path relative to `base`,
/// `/`-separated), sorted by that path; hidden entries are skipped.
fn collect_files(
    base: &Path,
    dir: &Path,
    out: &mut Vec<(String, Vec<u8>)>,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(), CodeprintError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CodeprintError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        let rel = path
            .strip_prefix(base)
            .map(|r| r.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        if hidden || !keep(&rel) {
            continue;
        }
        if path.is_dir() {
            collect_files(base, &path, out, keep)?;
        } else {
            out.push((rel, read(&path)?));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(())
}

/// A top-level module's files (`x.rs` and everything under `x/`).
struct ModuleSource {
    files: Vec<(String, Vec<u8>)>,
    text: String,
}

fn module_sources(src: &Path) -> Result<BTreeMap<String, ModuleSource>, CodeprintError> {
    let mut files = Vec::new();
    collect_files(src, src, &mut files, &|rel: &str| !rel.ends_with(".md"))?;
    let mut modules: BTreeMap<String, ModuleSource> = BTreeMap::new();
    for (rel, bytes) in files {
        // A module is `x.rs` and all of `x/`, which may hold files it
        // includes; a file of `src/` that is not Rust belongs to none.
        let module = match rel.split_once('/') {
            Some((dir, _)) => dir.to_owned(),
            None if rel.ends_with(".rs") => rel.trim_end_matches(".rs").to_owned(),
            None => continue,
        };
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        let entry = modules.entry(module).or_insert_with(|| ModuleSource {
            files: Vec::new(),
            text: String::new(),
        });
        if rel.ends_with(".rs") {
            entry.text.push_str(&String::from_utf8_lossy(&bytes));
            entry.text.push('\n');
        }
        entry.files.push((rel, bytes));
    }
    Ok(modules)
}

/// `name` and the modules it names as `crate::x` (or `crate::{x, y::z}`),
/// transitively.
fn reached_modules(name: &str, sources: &BTreeMap<String, ModuleSource>, excluded: &[&str]) -> BTreeSet<String> {
    let mut reached = BTreeSet::new();
    let mut queue = vec![name.to_owned()];
    while let Some(m) = queue.pop() {
        let skipped = m != name && excluded.contains(&m.as_str());
        if skipped || !sources.contains_key(&m) || !reached.insert(m.clone()) {
            continue;
        }
        queue.extend(named_modules(&sources[&m].text));
    }
    reached
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn leading_ident(text: &str) -> &str {
    let end = text.find(|c: char| !is_ident(c)).unwrap_or(text.len());
    &text[..end]
}

fn named_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        if text[..at].ends_with(is_ident) {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                out.extend(group.split(',').map(|g| leading_ident(g.trim()).to_owned()));
            }
            None => out.push(leading_ident(rest).to_owned()),
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// The packages named as `kflow_x` paths, as package names (`kflow-x`).
fn named_crates(text: &str) -> BTreeSet<String> {
    text.match_indices("kflow_")
        .filter(|(at, _)| !text[..*at].ends_with(is_ident))
        .map(|(at, _)| leading_ident(&text[at..]).replace('_', "-"))
        .collect()
}

/// A package of `Cargo.lock`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Package {
    name: String,
    version: String,
    /// `None` for a workspace member.
    source: Option<String>,
    checksum: Option<String>,
    dependencies: Vec<String>,
}

impl Package {
    fn id(&self) -> String {
        format!(
            "{} {} {} {}",
            self.name,
            self.version,
            self.source.as_deref().unwrap_or("workspace"),
            self.checksum.as_deref().unwrap_or("")
        )
    }
}

struct Lock {
    packages: Vec<Package>,
}

impl Lock {
    fn read(path: &Path) -> Result<Lock, CodeprintError> {
        let table = read_toml(path)?;
        let text = |p: &toml::Value, k: &str| p.get(k).and_then(toml::Value::as_str).map(str::to_owned);
        let packages = table
            .get("package")
            .and_then(toml::Value::as_array)
            .ok_or_else(|| CodeprintError::Manifest {
                path: path.to_owned(),
                message: "no `[[package]]`".to_owned(),
            })?
            .iter()
            .map(|p| Package {
                name: text(p, "name").unwrap_or_default(),
                version: text(p, "version").unwrap_or_default(),
                source: text(p, "source"),
                checksum: text(p, "checksum"),
                dependencies: p
                    .get("dependencies")
                    .and_then(toml::Value::as_array)
                    .map(|d| d.iter().filter_map(toml::Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Lock { packages })
    }

    /// The package a dependency entry (`name`, `name version` or
    /// `name version (source)`) means.
    fn resolve(&self, entry: &str) -> Option<usize> {
        let mut parts = entry.split(' ');
        let name = parts.next()?;
        let version = parts.next();
        self.packages
            .iter()
            .position(|p| p.name == name && version.is_none_or(|v| v == p.version))
    }

    /// `roots` and every package they depend on, not through `excluded`.
    fn closure<'a>(&self, roots: impl Iterator<Item = &'a str>, excluded: &[&str]) -> BTreeSet<&Package> {
        let mut seen = BTreeSet::new();
        let mut queue: Vec<usize> = roots.filter_map(|r| self.resolve(r)).collect();
        while let Some(i) = queue.pop() {
            let p = &self.packages[i];
            if excluded.contains(&p.name.as_str()) || !seen.insert(i) {
                continue;
            }
            queue.extend(p.dependencies.iter().filter_map(|d| self.resolve(d)));
        }
        seen.into_iter().map(|i| &self.packages[i]).collect()
    }
}

/// The fingerprints as Rust source: `MODULES`, `(module, digest, crates)`
/// sorted by module.
pub fn to_rust(f: &Fingerprints) -> String {
    let mut out = String::from(
        "/// (module, code fingerprint, workspace crates it depends on), generated by kflow-codeprint.\n\
         pub(crate) const MODULES: &[(&str, &str, &[&str])] = &[\n",
    );
    for (name, m) in &f.modules {
        let crates: Vec<String> = m.crates.iter().map(|c| format!("{c:?}")).collect();
        out.push_str(&format!("    ({name:?}, {:?}, &[{}]),\n", m.digest, crates.join(", ")));
    }
    out.push_str("];\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_references_are_found_alone_and_in_groups() {
        let text = "use crate::check::{CHECK};\nuse crate::{json, inputs::weights};\nlet x = mycrate::nope;";
        assert_eq!(named_modules(text), ["check", "json", "inputs"]);
        assert_eq!(
            named_crates("use kflow_train::Hyper; kflow_data::x; not_kflow_y"),
            BTreeSet::from(["kflow-data".to_owned(), "kflow-train".to_owned()])
        );
    }
}
