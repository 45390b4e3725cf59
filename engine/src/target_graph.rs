//! From command-line patterns to the graph of targets they need: pattern
//! expansion, the transitive closure of dependencies, unknown-label errors
//! located at the reference, and cycle detection that prints the cycle.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::db::{self, Db, LookupError, PackageId, TargetId};
use crate::diagnostic::{Diagnostic, Location, nearest};
use crate::label::{Label, Pattern};
use crate::workspace::{BUILD_FILE, Config, OUT_DIR};

/// Targets and their dependency edges (dependent → dependency).
pub struct TargetGraph {
    pub graph: DiGraph<Label, ()>,
    index: HashMap<Label, NodeIndex>,
}

impl TargetGraph {
    pub fn node(&self, label: &Label) -> Option<NodeIndex> {
        self.index.get(label).copied()
    }

    pub fn labels(&self) -> impl Iterator<Item = &Label> {
        self.graph.node_weights()
    }

    /// Dependencies of `label`, sorted.
    pub fn deps(&self, label: &Label) -> Vec<&Label> {
        let mut out: Vec<&Label> = self
            .node(label)
            .map(|n| self.graph.neighbors(n).map(|d| &self.graph[d]).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Every package (as `(cell, package)`) under a cell directory, sorted.
pub fn packages_under(config: &Config, cell: &str, package: &str) -> Vec<String> {
    let Some(start) = config.package_dir(cell, package) else {
        return Vec::new();
    };
    let Some(root) = config.cell_root(cell) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        if dir.join(BUILD_FILE).is_file()
            && let Ok(rel) = dir.strip_prefix(root)
        {
            found.push(rel.to_string_lossy().replace('\\', "/"));
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Hidden directories and kflow's own output never hold packages.
            if name.starts_with('.') || name == OUT_DIR {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// Expands patterns into the labels they name, in order, without duplicates.
pub fn resolve_patterns(db: &dyn Db, config: &Config, patterns: &[Pattern]) -> Result<Vec<Label>, Diagnostic> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for pattern in patterns {
        let cell = pattern.cell();
        if config.cell_root(cell).is_none() {
            return Err(Diagnostic::new(format!("unknown cell `{cell}` in `{pattern}`"))
                .suggest(cell, config.cells.keys().map(String::as_str)));
        }
        let labels: Vec<Label> = match pattern {
            Pattern::Target(label) => {
                lookup(db, label, None)?;
                vec![label.clone()]
            }
            Pattern::Package { cell, package } => package_targets(db, config, cell, package, None)?,
            Pattern::Recursive { cell, package } => {
                let mut all = Vec::new();
                for pkg in packages_under(config, cell, package) {
                    all.extend(package_targets(db, config, cell, &pkg, None)?);
                }
                all
            }
        };
        for label in labels {
            if seen.insert(label.clone()) {
                out.push(label);
            }
        }
    }
    Ok(out)
}

fn package_targets(
    db: &dyn Db,
    config: &Config,
    cell: &str,
    package: &str,
    at: Option<Location>,
) -> Result<Vec<Label>, Diagnostic> {
    match db::package(db, PackageId::new(db, cell.to_owned(), package.to_owned())) {
        Ok(pkg) => Ok(pkg
            .targets
            .iter()
            .filter_map(|t| Label::new(cell, package, &t.name).ok())
            .collect()),
        Err(LookupError::NoPackage { dir }) => Err(no_package(config, cell, package, dir, at)),
        Err(e) => Err(lookup_error(config, &format!("{cell}//{package}:"), e.clone(), at)),
    }
}

/// Checks that `label` names a declared target; the error points at `at`.
fn lookup(db: &dyn Db, label: &Label, at: Option<Location>) -> Result<(), Diagnostic> {
    match db::declared(db, TargetId::new(db, label.clone())) {
        Ok(_) => Ok(()),
        Err(e) => {
            let config = db::workspace_config(db).as_ref().map_err(Clone::clone)?;
            Err(lookup_error(config, &label.to_string(), e.clone(), at))
        }
    }
}

fn lookup_error(config: &Config, what: &str, e: LookupError, at: Option<Location>) -> Diagnostic {
    match e {
        LookupError::Graph(d) => d,
        LookupError::UnknownCell { cell, known } => Diagnostic::new(format!("unknown cell `{cell}` in `{what}`"))
            .at(at)
            .suggest(&cell, known.iter().map(String::as_str)),
        LookupError::NoPackage { dir } => {
            let (cell, package) = what.split_once("//").unwrap_or(("", what));
            let package = package.split(':').next().unwrap_or_default();
            no_package(config, cell, package, &dir, at)
        }
        LookupError::NoTarget { package } => {
            let name = what.rsplit(':').next().unwrap_or(what);
            let d = Diagnostic::new(format!("unknown target `{what}`"))
                .at(at)
                .with_label("no such target");
            match nearest(name, package.targets.iter().map(|t| t.name.as_str())) {
                Some(best) => d.with_help(format!("did you mean `{}//{}:{best}`?", package.cell, package.package)),
                None => d.with_note(format!(
                    "`{}` declares: {}",
                    package.display,
                    package
                        .targets
                        .iter()
                        .map(|t| t.name.as_str())
                        .take(20)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

fn no_package(config: &Config, cell: &str, package: &str, dir: &Path, at: Option<Location>) -> Diagnostic {
    let d = Diagnostic::new(format!(
        "no package `{cell}//{package}`: `{}` does not exist",
        config.display_path(&dir.join(BUILD_FILE))
    ))
    .at(at)
    .with_label("unknown package");
    let packages = packages_under(config, cell, "");
    match nearest(package, packages.iter().map(String::as_str)) {
        Some(best) => d.with_help(format!("did you mean the package `{cell}//{best}`?")),
        None => d,
    }
}

/// Loads `roots` and everything they depend on, checking every label and
/// refusing cycles.
pub fn load(db: &dyn Db, roots: &[Label]) -> Result<TargetGraph, Diagnostic> {
    let config = db::workspace_config(db).as_ref().map_err(Clone::clone)?;
    let mut graph = DiGraph::new();
    let mut index: HashMap<Label, NodeIndex> = HashMap::new();
    let mut stack: Vec<Label> = Vec::new();
    for root in roots {
        lookup(db, root, None)?;
        if !index.contains_key(root) {
            index.insert(root.clone(), graph.add_node(root.clone()));
            stack.push(root.clone());
        }
    }
    while let Some(label) = stack.pop() {
        let from = index[&label];
        let declared = db::declared(db, TargetId::new(db, label.clone()))
            .as_ref()
            .map_err(|e| lookup_error(config, &label.to_string(), e.clone(), None))?;
        let mut seen = BTreeSet::new();
        for (dep, span) in declared.decl.attrs.deps() {
            if !seen.insert(dep.clone()) {
                continue;
            }
            let to = match index.get(&dep) {
                Some(n) => *n,
                None => {
                    lookup(db, &dep, Some(declared.package.location(span)))?;
                    let n = graph.add_node(dep.clone());
                    index.insert(dep.clone(), n);
                    stack.push(dep);
                    n
                }
            };
            graph.add_edge(from, to, ());
        }
    }
    let tg = TargetGraph { graph, index };
    check_acyclic(&tg)?;
    Ok(tg)
}

/// Depth-first search with an explicit stack; on a back edge, the cycle is
/// the part of the current path from the edge's target.
fn check_acyclic(tg: &TargetGraph) -> Result<(), Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let g = &tg.graph;
    let mut mark = vec![Mark::New; g.node_count()];
    // Visit in label order so the reported cycle is the same every run.
    let mut starts: Vec<NodeIndex> = g.node_indices().collect();
    starts.sort_by(|a, b| g[*a].cmp(&g[*b]));
    for start in starts {
        if mark[start.index()] != Mark::New {
            continue;
        }
        let mut path: Vec<(NodeIndex, Vec<NodeIndex>)> = Vec::new();
        let children = |n: NodeIndex| {
            let mut c: Vec<NodeIndex> = g.neighbors(n).collect();
            c.sort_by(|a, b| g[*b].cmp(&g[*a]));
            c
        };
        mark[start.index()] = Mark::OnPath;
        path.push((start, children(start)));
        while let Some((node, pending)) = path.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) => match mark[next.index()] {
                    Mark::New => {
                        mark[next.index()] = Mark::OnPath;
                        path.push((next, children(next)));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<String> = path[from..].iter().map(|(n, _)| g[*n].to_string()).collect();
                        cycle.push(g[next].to_string());
                        return Err(Diagnostic::new(format!("dependency cycle: {}", cycle.join(" -> ")))
                            .with_help("a target cannot depend on itself, directly or through others"));
                    }
                    Mark::Done => {}
                },
                None => {
                    mark[node.index()] = Mark::Done;
                    path.pop();
                }
            }
        }
    }
    Ok(())
}
