//! The configuration layer: a salsa database whose inputs are the contents
//! of `kflow.toml` and every `BUILD.toml`, and whose tracked functions parse
//! packages and plan targets. In `--watch` mode the database outlives a
//! build, so an edit re-evaluates only what depends on the edited file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use salsa::Setter;

use crate::diagnostic::{Diagnostic, Location};
use crate::graph_file::{self, Package, PackageFile, TargetDecl};
use crate::label::Label;
use crate::registry::RuleRegistry;
use crate::rule::{Planner, Target, TargetPlan};
use crate::workspace::{BUILD_FILE, Config, WORKSPACE_FILE};

/// A file the configuration depends on. `text` is `None` when the file does
/// not exist or cannot be read as UTF-8.
#[salsa::input]
pub struct SourceFile {
    #[returns(ref)]
    pub path: PathBuf,
    #[returns(ref)]
    pub text: Option<String>,
}

#[salsa::interned]
pub struct PackageId<'db> {
    #[returns(ref)]
    pub cell: String,
    #[returns(ref)]
    pub package: String,
}

#[salsa::interned]
pub struct TargetId<'db> {
    #[returns(ref)]
    pub label: Label,
}

#[salsa::db]
pub trait Db: salsa::Database {
    fn rules(&self) -> &RuleRegistry;
    fn workspace_file(&self) -> SourceFile;
    /// The input for `path`, read from disk the first time it is asked for.
    fn file(&self, path: &Path) -> SourceFile;
    /// Records that a package was parsed (observability for `--watch`).
    fn note_parse(&self, package: &str);
}

#[salsa::db]
#[derive(Clone)]
pub struct Database {
    storage: salsa::Storage<Self>,
    rules: Arc<RuleRegistry>,
    workspace_file: Option<SourceFile>,
    files: Arc<Mutex<HashMap<PathBuf, SourceFile>>>,
    parsed: Arc<Mutex<Vec<String>>>,
}

#[salsa::db]
impl salsa::Database for Database {}

#[salsa::db]
impl Db for Database {
    fn rules(&self) -> &RuleRegistry {
        &self.rules
    }

    fn workspace_file(&self) -> SourceFile {
        // Set in `Database::new` before the database is shared.
        self.workspace_file
            .unwrap_or_else(|| self.file(Path::new(WORKSPACE_FILE)))
    }

    fn file(&self, path: &Path) -> SourceFile {
        let mut files = lock(&self.files);
        if let Some(file) = files.get(path) {
            return *file;
        }
        let file = SourceFile::new(self, path.to_path_buf(), read_text(path));
        files.insert(path.to_path_buf(), file);
        file
    }

    fn note_parse(&self, package: &str) {
        lock(&self.parsed).push(package.to_owned());
    }
}

impl Database {
    pub fn new(root: &Path, rules: Arc<RuleRegistry>) -> Database {
        let mut db = Database {
            storage: salsa::Storage::default(),
            rules,
            workspace_file: None,
            files: Arc::default(),
            parsed: Arc::default(),
        };
        db.workspace_file = Some(db.file(&root.join(WORKSPACE_FILE)));
        db
    }

    /// Re-reads `path` if the database depends on it. Returns whether its
    /// contents changed (and so a rebuild may do something).
    pub fn refresh(&mut self, path: &Path) -> bool {
        let Some(file) = lock(&self.files).get(path).copied() else {
            return false;
        };
        let text = read_text(path);
        if file.text(self) == &text {
            return false;
        }
        file.set_text(self).to(text);
        true
    }

    /// Every file the database has read, with the digest of the content it
    /// holds for it (`None`: the file did not exist), sorted by path.
    pub fn file_digests(&self) -> Vec<(PathBuf, Option<crate::Digest>)> {
        let files: Vec<(PathBuf, SourceFile)> = lock(&self.files).iter().map(|(p, f)| (p.clone(), *f)).collect();
        let mut out: Vec<_> = files
            .into_iter()
            .map(|(path, file)| {
                let digest = file.text(self).as_ref().map(|t| crate::Digest::of_bytes(t.as_bytes()));
                (path, digest)
            })
            .collect();
        out.sort();
        out
    }

    /// The packages parsed since the last call, in order.
    pub fn take_parse_log(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.parsed))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[salsa::tracked(returns(ref))]
pub fn workspace_config(db: &dyn Db) -> Result<Config, Diagnostic> {
    let file = db.workspace_file();
    let path = file.path(db);
    let root = path.parent().unwrap_or(Path::new("."));
    match file.text(db) {
        Some(text) => Config::parse(root, text),
        None => Err(Diagnostic::new(format!("cannot read `{}`", path.display()))),
    }
}

/// Why a label names no target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    UnknownCell {
        cell: String,
        known: Vec<String>,
    },
    NoPackage {
        dir: PathBuf,
    },
    NoTarget {
        package: Arc<Package>,
    },
    /// The package itself is broken.
    Graph(Diagnostic),
}

#[salsa::tracked(returns(ref))]
pub fn package<'db>(db: &'db dyn Db, id: PackageId<'db>) -> Result<Arc<Package>, LookupError> {
    let config = workspace_config(db)
        .as_ref()
        .map_err(|d| LookupError::Graph(d.clone()))?;
    let (cell, package) = (id.cell(db), id.package(db));
    let Some(dir) = config.package_dir(cell, package) else {
        return Err(LookupError::UnknownCell {
            cell: cell.clone(),
            known: config.cells.keys().cloned().collect(),
        });
    };
    let path = dir.join(BUILD_FILE);
    let Some(text) = db.file(&path).text(db) else {
        return Err(LookupError::NoPackage { dir });
    };
    db.note_parse(&format!("{cell}//{package}"));
    let file = PackageFile {
        cell,
        package,
        display: config.display_path(&path),
        path: path.clone(),
        default_cell: &config.default_cell,
    };
    graph_file::parse(file, text, db.rules())
        .map(Arc::new)
        .map_err(LookupError::Graph)
}

/// A target's declaration and the package it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub package: Arc<Package>,
    pub decl: TargetDecl,
}

#[salsa::tracked(returns(ref))]
pub fn declared<'db>(db: &'db dyn Db, id: TargetId<'db>) -> Result<Declared, LookupError> {
    let label = id.label(db);
    let pkg = package(
        db,
        PackageId::new(db, label.cell().to_owned(), label.package().to_owned()),
    )
    .clone()?;
    match pkg.target(label.name()) {
        Some(decl) => Ok(Declared {
            decl: decl.clone(),
            package: pkg,
        }),
        None => Err(LookupError::NoTarget { package: pkg }),
    }
}

/// A target with its plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub target: Target,
    pub plan: TargetPlan,
    pub package: Arc<Package>,
}

/// Plans one target. Callers must have checked the target graph for cycles
/// first: planning asks for the plans of dependencies.
#[salsa::tracked(returns(ref))]
pub fn planned<'db>(db: &'db dyn Db, id: TargetId<'db>) -> Result<Arc<Planned>, Diagnostic> {
    let label = id.label(db);
    let found = declared(db, id)
        .as_ref()
        .map_err(|e| Diagnostic::new(format!("cannot plan `{label}`: {e:?}")))?;
    let pkg = found.package.clone();
    let rule = db
        .rules()
        .get(&found.decl.kind)
        .ok_or_else(|| Diagnostic::new(format!("unknown rule `{}`", found.decl.kind)))?;
    let target = Target {
        label: label.clone(),
        kind: found.decl.kind.clone(),
        attrs: found.decl.attrs.clone(),
        package_dir: pkg.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let deps = |dep: &Label| -> Result<Vec<String>, Diagnostic> {
        let planned = planned(db, TargetId::new(db, dep.clone())).clone()?;
        Ok(planned.plan.exposes.iter().map(|(name, _)| name.clone()).collect())
    };
    let target_span = found.decl.span.clone();
    let location = |span: Option<std::ops::Range<usize>>| -> Option<Location> {
        Some(pkg.location(span.unwrap_or_else(|| target_span.clone())))
    };
    let mut planner = Planner {
        target: &target,
        deps: &deps,
        plan: TargetPlan::default(),
        location: &location,
    };
    rule.plan(&target, &mut planner)?;
    let plan = planner.plan;
    Ok(Arc::new(Planned {
        target,
        plan,
        package: pkg,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::attrs::{AttrSpec, AttrType};
    use crate::rule::{ActionContext, ActionError, Outcome, Rule};

    /// A rule with one label attribute, enough to build package graphs.
    struct Node;

    const ATTRS: &[AttrSpec] = &[AttrSpec::optional("deps", AttrType::LabelList, "dependencies")];

    impl Rule for Node {
        fn name(&self) -> &'static str {
            "node"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "test node"
        }
        fn attrs(&self) -> &'static [AttrSpec] {
            ATTRS
        }
        fn plan(&self, _: &Target, _: &mut Planner<'_>) -> Result<(), Diagnostic> {
            Ok(())
        }
        fn execute(&self, _: &ActionContext<'_>) -> Result<Outcome, ActionError> {
            Ok(Outcome::Done)
        }
    }

    fn workspace(packages: &[(&str, &str)]) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WORKSPACE_FILE), "[cells]\nt = \"g\"\n").unwrap();
        for (pkg, text) in packages {
            let d = dir.path().join("g").join(pkg);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(BUILD_FILE), text).unwrap();
        }
        let mut rules = RuleRegistry::new();
        rules.register(Arc::new(Node));
        let db = Database::new(dir.path(), Arc::new(rules));
        (dir, db)
    }

    /// Loads the targets and their dependencies, and plans them all.
    fn plan_all(db: &Database, labels: &[&str]) {
        let roots: Vec<Label> = labels.iter().map(|l| Label::parse(l, "t", None).unwrap()).collect();
        let graph = crate::target_graph::load(db, &roots).unwrap();
        for label in graph.labels() {
            planned(db, TargetId::new(db, label.clone())).as_ref().unwrap();
        }
    }

    #[test]
    fn editing_one_package_reparses_only_that_package() {
        let (dir, mut db) = workspace(&[
            ("a", "[[node]]\nname = \"x\"\ndeps = [\"//b:y\"]\n"),
            ("b", "[[node]]\nname = \"y\"\n"),
            ("c", "[[node]]\nname = \"z\"\n"),
        ]);
        plan_all(&db, &["t//a:x", "t//c:z"]);
        let mut first = db.take_parse_log();
        first.sort();
        assert_eq!(first, ["t//a", "t//b", "t//c"]);

        let b = dir.path().join("g/b/BUILD.toml");
        std::fs::write(&b, "[[node]]\nname = \"y\"\n# edited\n").unwrap();
        assert!(db.refresh(&b));
        plan_all(&db, &["t//a:x", "t//c:z"]);
        assert_eq!(db.take_parse_log(), ["t//b"]);
    }

    #[test]
    fn refreshing_an_unchanged_file_reparses_nothing() {
        let (dir, mut db) = workspace(&[("a", "[[node]]\nname = \"x\"\n")]);
        plan_all(&db, &["t//a:x"]);
        db.take_parse_log();
        assert!(!db.refresh(&dir.path().join("g/a/BUILD.toml")));
        plan_all(&db, &["t//a:x"]);
        assert!(db.take_parse_log().is_empty());
    }
}
