//! The workspace: the directory holding `kflow.toml`, its cells, and the
//! settings it gives (cache location, default parallelism).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::db::{self, Database};
use crate::diagnostic::{Diagnostic, Location};
use crate::label::{Label, PackageRef, Pattern};
use crate::registry::RuleRegistry;
use crate::target_graph::{self, TargetGraph};

pub const WORKSPACE_FILE: &str = "kflow.toml";
pub const BUILD_FILE: &str = "BUILD.toml";
/// Where final outputs and build records go, under the workspace root.
pub const OUT_DIR: &str = "kflow-out";

/// Walks up from `start` to the nearest directory holding `kflow.toml`.
pub fn find_root(start: &Path) -> Result<PathBuf, Diagnostic> {
    start
        .ancestors()
        .find(|dir| dir.join(WORKSPACE_FILE).is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            Diagnostic::new(format!(
                "no `{WORKSPACE_FILE}` found in `{}` or any parent directory",
                start.display()
            ))
            .with_help(format!(
                "run kflow inside a workspace, or create a `{WORKSPACE_FILE}` with a `[cells]` table, e.g. `target = \"graphs\"`"
            ))
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    workspace: WorkspaceSection,
    cells: BTreeMap<String, String>,
    #[serde(default)]
    cache: CacheSection,
    #[serde(default)]
    build: BuildSection,
    #[serde(default)]
    remote: RemoteSection,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceSection {
    default_cell: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheSection {
    dir: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildSection {
    jobs: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSection {
    executor: Option<String>,
    instance: Option<String>,
    jobs: Option<usize>,
}

/// The parsed `kflow.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub root: PathBuf,
    /// Cell name to its absolute root directory.
    pub cells: BTreeMap<String, PathBuf>,
    /// The cell of `//pkg:name` on the command line outside any cell.
    pub default_cell: String,
    /// The cache directory, if the workspace names one (absolute).
    pub cache_dir: Option<PathBuf>,
    pub jobs: Option<usize>,
    /// `[remote] executor` as a URL, with `instance` as its path.
    pub remote_executor: Option<String>,
    pub remote_jobs: Option<usize>,
}

impl Config {
    pub fn parse(root: &Path, text: &str) -> Result<Config, Diagnostic> {
        let path = root.join(WORKSPACE_FILE);
        let location = |span: Option<std::ops::Range<usize>>| {
            span.map(|span| Location {
                path: path.clone(),
                display: WORKSPACE_FILE.to_owned(),
                source: Arc::from(text),
                span,
            })
        };
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            Diagnostic::new(format!("invalid `{WORKSPACE_FILE}`: {}", e.message())).at(location(e.span()))
        })?;
        let span_of = |needle: &str| text.find(needle).map(|s| s..s + needle.len());
        if file.cells.is_empty() {
            return Err(Diagnostic::new(format!("`{WORKSPACE_FILE}` declares no cells"))
                .at(location(span_of("[cells]")))
                .with_help("add a cell, e.g. `target = \"graphs\"` under `[cells]`"));
        }
        let mut cells = BTreeMap::new();
        for (name, dir) in &file.cells {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(Diagnostic::new(format!("invalid cell name `{name}`"))
                    .at(location(span_of(name)))
                    .with_help("cell names use letters, digits, `_` and `-`"));
            }
            let abs = root.join(dir);
            if !abs.is_dir() {
                return Err(
                    Diagnostic::new(format!("cell `{name}` points to `{dir}`, which is not a directory"))
                        .at(location(span_of(dir))),
                );
            }
            cells.insert(name.clone(), abs);
        }
        let default_cell = match file.workspace.default_cell {
            Some(cell) if cells.contains_key(&cell) => cell,
            Some(cell) => {
                return Err(
                    Diagnostic::new(format!("`default_cell` names `{cell}`, which is not a cell"))
                        .at(location(span_of(&cell)))
                        .suggest(&cell, cells.keys().map(String::as_str)),
                );
            }
            // BTreeMap order: the alphabetically first cell.
            None => cells.keys().next().cloned().unwrap_or_default(),
        };
        Ok(Config {
            root: root.to_path_buf(),
            cells,
            default_cell,
            cache_dir: file.cache.dir.map(|d| root.join(d)),
            jobs: file.build.jobs,
            remote_executor: file.remote.executor.map(|url| match file.remote.instance {
                Some(instance) => format!("{}/{instance}", url.trim_end_matches('/')),
                None => url,
            }),
            remote_jobs: file.remote.jobs,
        })
    }

    pub fn cell_root(&self, cell: &str) -> Option<&Path> {
        self.cells.get(cell).map(PathBuf::as_path)
    }

    /// The directory of a package.
    pub fn package_dir(&self, cell: &str, package: &str) -> Option<PathBuf> {
        self.cell_root(cell).map(|root| {
            if package.is_empty() {
                root.to_path_buf()
            } else {
                root.join(package)
            }
        })
    }

    /// The cell and package a directory belongs to, if it is inside a cell:
    /// used to resolve `:name` and `//pkg:name` on the command line.
    pub fn package_of_dir(&self, dir: &Path) -> Option<(String, String)> {
        // The deepest cell root wins when cells nest.
        let (cell, root) = self
            .cells
            .iter()
            .filter(|(_, root)| dir.starts_with(root))
            .max_by_key(|(_, root)| root.components().count())?;
        let rel = dir.strip_prefix(root).ok()?;
        let package = rel
            .ancestors()
            .find(|p| root.join(p).join(BUILD_FILE).is_file())
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        Some((cell.clone(), package))
    }

    /// A path relative to the workspace root for messages.
    pub fn display_path(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }
}

/// An open workspace: its root and its configuration database.
pub struct Workspace {
    root: PathBuf,
    db: Database,
}

impl Workspace {
    /// Finds the workspace holding `start` and reads its `kflow.toml`.
    pub fn open(start: &Path, rules: Arc<RuleRegistry>) -> Result<Workspace, Diagnostic> {
        let root = find_root(start)?;
        let db = Database::new(&root, rules);
        db::workspace_config(&db).as_ref().map_err(Clone::clone)?;
        Ok(Workspace { root, db })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> Result<&Config, Diagnostic> {
        db::workspace_config(&self.db).as_ref().map_err(Clone::clone)
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn db_mut(&mut self) -> &mut Database {
        &mut self.db
    }

    pub fn out_dir(&self) -> PathBuf {
        self.root.join(OUT_DIR)
    }

    /// Where a build places `label`'s outputs.
    pub fn target_out_dir(&self, label: &Label) -> Result<PathBuf, Diagnostic> {
        let config = self.config()?;
        Ok(crate::materialize::target_out_dir(
            &self.out_dir(),
            label,
            &config.default_cell,
        ))
    }

    /// Parses command-line patterns; `cwd` decides what `:name` and
    /// `//pkg:name` mean.
    pub fn parse_patterns(&self, cwd: &Path, args: &[String]) -> Result<Vec<Pattern>, Diagnostic> {
        let config = self.config()?;
        let here = config.package_of_dir(cwd);
        let base = here.as_ref().map(|(cell, package)| PackageRef { cell, package });
        args.iter()
            .map(|arg| {
                Pattern::parse(arg, &config.default_cell, base.clone()).map_err(|e| Diagnostic::new(e.to_string()))
            })
            .collect()
    }

    /// The labels `patterns` name, checked to exist.
    pub fn resolve(&self, patterns: &[Pattern]) -> Result<Vec<Label>, Diagnostic> {
        target_graph::resolve_patterns(&self.db, self.config()?, patterns)
    }

    /// `roots` and their transitive dependencies, checked for cycles.
    pub fn load(&self, roots: &[Label]) -> Result<TargetGraph, Diagnostic> {
        target_graph::load(&self.db, roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_maps_cells_to_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("graphs")).unwrap();
        let c = Config::parse(dir.path(), "[cells]\ntarget = \"graphs\"\n").unwrap();
        assert_eq!(c.cell_root("target"), Some(dir.path().join("graphs").as_path()));
        assert_eq!(c.default_cell, "target");
    }

    #[test]
    fn the_remote_section_names_the_executor_and_its_instance() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("graphs")).unwrap();
        let text =
            "[cells]\ntarget = \"graphs\"\n[remote]\nexecutor = \"grpc://c:1/\"\ninstance = \"main\"\njobs = 32\n";
        let config = Config::parse(dir.path(), text).unwrap();
        assert_eq!(config.remote_executor.as_deref(), Some("grpc://c:1/main"));
        assert_eq!(config.remote_jobs, Some(32));
        let err = Config::parse(dir.path(), "[cells]\ntarget = \"graphs\"\n[remote]\nexecuter = \"x\"\n").unwrap_err();
        assert!(err.message.contains("executer"), "{}", err.message);
    }

    #[test]
    fn unknown_section_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::parse(dir.path(), "[cells]\n[cach]\ndir = \"x\"\n").unwrap_err();
        assert_eq!(err.location.unwrap().line_col().0, 2, "{}", err.message);
    }

    #[test]
    fn missing_cell_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::parse(dir.path(), "[cells]\ntarget = \"nope\"\n").unwrap_err();
        assert!(err.message.contains("not a directory"));
    }

    #[test]
    fn find_root_walks_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WORKSPACE_FILE), "[cells]\n").unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_root(&deep).unwrap(), dir.path());
    }
}
