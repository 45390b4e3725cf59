//! The planned action graph of a set of patterns, saved under
//! `kflow-out/.state/graphs/` with everything it was derived from: the
//! content digests of every graph file planning read, the packages found by
//! recursive patterns, and the identity of the kflow binary and its rules.
//! A build whose graph files are unchanged loads the graph instead of
//! parsing and planning again, which is most of a no-op build's cost.
//!
//! The configuration database (salsa) stays the source of truth: this is a
//! cache of its result, checked by content, and deleting it costs time only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::action_graph::{ActionGraph, ActionNode, InputSource};
use crate::keys::Params;
use crate::label::{Label, Pattern};
use crate::packing::{StringTable, Strings};
use crate::registry::RuleRegistry;
use crate::target_graph::packages_under;
use crate::workspace::Config;
use crate::{BlobRef, Digest};

const FORMAT: u32 = 2;
/// Saved graphs kept per workspace (one per distinct set of patterns).
const KEEP: usize = 16;

/// What a saved graph was derived from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The kflow binary and its rules.
    pub stamp: String,
    pub patterns: Vec<String>,
    /// Every graph file planning read, with the digest of its content
    /// (`None`: the file did not exist).
    pub files: Vec<(PathBuf, Option<Digest>)>,
    /// For each recursive pattern, the packages it found.
    pub walks: Vec<(String, Vec<String>)>,
}

#[derive(Serialize, Deserialize)]
struct Saved<'a> {
    format: u32,
    provenance: Provenance,
    #[serde(borrow)]
    graph: PackedGraph<'a>,
}

/// The graph with every string in one table (see `packing.rs`).
#[derive(Serialize, Deserialize)]
struct PackedGraph<'a> {
    #[serde(borrow)]
    strings: Vec<&'a str>,
    paths: Vec<PathBuf>,
    roots: Vec<u32>,
    nodes: Vec<PackedNode>,
    exposes: Vec<(u32, Vec<(u32, PackedInput)>)>,
}

#[derive(Serialize, Deserialize)]
struct PackedNode {
    id: u32,
    target: u32,
    rule: u32,
    rule_version: u32,
    params: u32,
    inputs: Vec<(u32, PackedInput)>,
    outputs: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
enum PackedInput {
    File(u32),
    Output { node: u32, output: u32 },
    Blob(BlobRef),
}

fn pack<'a>(roots: &'a [Label], graph: &'a ActionGraph) -> PackedGraph<'a> {
    let mut strings = StringTable::default();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut path_index: FxHashMap<&Path, u32> = FxHashMap::default();
    let mut input = |strings: &mut StringTable<'a>, source: &'a InputSource| match source {
        InputSource::File(path) => PackedInput::File(*path_index.entry(path).or_insert_with(|| {
            paths.push(path.clone());
            paths.len() as u32 - 1
        })),
        InputSource::Output { node, output } => PackedInput::Output {
            node: node.index() as u32,
            output: strings.intern(output),
        },
        InputSource::Blob(blob) => PackedInput::Blob(*blob),
    };
    let mut nodes = Vec::with_capacity(graph.graph.node_count());
    for n in graph.graph.node_weights() {
        nodes.push(PackedNode {
            id: strings.intern(&n.id),
            target: strings.intern(n.target.as_str()),
            rule: strings.intern(&n.rule),
            rule_version: n.rule_version,
            params: strings.intern(n.params.as_str()),
            inputs: n
                .inputs
                .iter()
                .map(|(name, source)| (strings.intern(name), input(&mut strings, source)))
                .collect(),
            outputs: n.outputs.iter().map(|o| strings.intern(o)).collect(),
        });
    }
    let exposes = graph
        .exposes
        .iter()
        .map(|(label, outs)| {
            let outs = outs
                .iter()
                .map(|(name, source)| (strings.intern(name), input(&mut strings, source)))
                .collect();
            (strings.intern(label.as_str()), outs)
        })
        .collect();
    let roots = roots.iter().map(|l| strings.intern(l.as_str())).collect();
    PackedGraph {
        strings: strings.into_strings(),
        paths,
        roots,
        nodes,
        exposes,
    }
}

/// `None` when the file is damaged.
fn unpack(packed: PackedGraph<'_>) -> Option<(Vec<Label>, ActionGraph)> {
    let strings = Strings::new(&packed.strings);
    let mut labels: FxHashMap<u32, Label> = FxHashMap::default();
    let mut label = |i: u32| -> Option<Label> {
        if let Some(l) = labels.get(&i) {
            return Some(l.clone());
        }
        let l = Label::from_stored(strings.get(i)?.clone())?;
        labels.insert(i, l.clone());
        Some(l)
    };
    let input = |source: PackedInput| -> Option<InputSource> {
        Some(match source {
            PackedInput::File(i) => InputSource::File(packed.paths.get(i as usize)?.clone()),
            PackedInput::Output { node, output } => InputSource::Output {
                node: NodeIndex::new(node as usize),
                output: strings.get(output)?.clone(),
            },
            PackedInput::Blob(blob) => InputSource::Blob(blob),
        })
    };
    let mut graph = ActionGraph {
        graph: DiGraph::with_capacity(packed.nodes.len(), packed.nodes.len()),
        exposes: FxHashMap::with_capacity_and_hasher(packed.exposes.len(), Default::default()),
    };
    for n in packed.nodes {
        let mut inputs = Vec::with_capacity(n.inputs.len());
        for (name, source) in n.inputs {
            inputs.push((strings.get(name)?.clone(), input(source)?));
        }
        let edges: Vec<(NodeIndex, Arc<str>)> = inputs
            .iter()
            .filter_map(|(name, source)| match source {
                InputSource::Output { node, .. } => Some((*node, name.clone())),
                _ => None,
            })
            .collect();
        let index = graph.graph.add_node(Arc::new(ActionNode {
            id: strings.get(n.id)?.clone(),
            target: label(n.target)?,
            rule: strings.get(n.rule)?.clone(),
            rule_version: n.rule_version,
            params: Params::from_canonical(strings.get(n.params)?.clone()),
            inputs,
            outputs: n
                .outputs
                .iter()
                .map(|&o| strings.get(o).cloned())
                .collect::<Option<_>>()?,
        }));
        for (from, name) in edges {
            // Producers come first; anything else is a damaged file.
            if from.index() >= index.index() {
                return None;
            }
            graph.graph.add_edge(from, index, name);
        }
    }
    for (l, outs) in packed.exposes {
        let outs = outs
            .into_iter()
            .map(|(name, source)| Some((strings.get(name)?.clone(), input(source)?)))
            .collect::<Option<_>>()?;
        graph.exposes.insert(label(l)?, outs);
    }
    let roots = packed.roots.into_iter().map(&mut label).collect::<Option<_>>()?;
    Some((roots, graph))
}

/// Identifies the running kflow and its rules: a rebuilt binary may plan
/// differently.
pub fn stamp(rules: &RuleRegistry) -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{}:{}:{}", m.size(), m.mtime(), m.mtime_nsec())
        })
        .unwrap_or_default();
    let rules: Vec<String> = rules.iter().map(|r| format!("{}@{}", r.name(), r.version())).collect();
    format!("{} {exe} {}", env!("CARGO_PKG_VERSION"), rules.join(","))
}

/// The packages each recursive pattern covers, as `packages_under` finds
/// them now.
pub fn walks(config: &Config, patterns: &[Pattern]) -> Vec<(String, Vec<String>)> {
    patterns
        .iter()
        .filter_map(|p| match p {
            Pattern::Recursive { cell, package } => Some((p.to_string(), packages_under(config, cell, package))),
            _ => None,
        })
        .collect()
}

fn file_for(dir: &Path, patterns: &[String]) -> PathBuf {
    let id = Digest::of_bytes(patterns.join("\n").as_bytes()).to_hex();
    dir.join(format!("{}.bin", &id[..16]))
}

/// Digest of a file's content, `None` if it cannot be read.
fn digest_of(path: &Path) -> Option<Digest> {
    std::fs::read(path).ok().map(|bytes| Digest::of_bytes(&bytes))
}

/// The saved graph for `patterns`, if everything it was derived from is
/// unchanged.
pub fn load(dir: &Path, stamp: &str, config: &Config, patterns: &[Pattern]) -> Option<(Vec<Label>, ActionGraph)> {
    let names: Vec<String> = patterns.iter().map(Pattern::to_string).collect();
    let bytes = std::fs::read(file_for(dir, &names)).ok()?;
    let saved: Saved = postcard::from_bytes(&bytes).ok()?;
    let p = &saved.provenance;
    let fresh = saved.format == FORMAT
        && p.stamp == stamp
        && p.patterns == names
        && p.walks == walks(config, patterns)
        && p.files.iter().all(|(path, digest)| digest_of(path) == *digest);
    if !fresh {
        return None;
    }
    unpack(saved.graph)
}

/// Saves a freshly planned graph. Callers may ignore failures: the next
/// build plans again.
pub fn save(dir: &Path, provenance: &Provenance, roots: &[Label], graph: &ActionGraph) -> std::io::Result<()> {
    let path = file_for(dir, &provenance.patterns);
    let saved = Saved {
        format: FORMAT,
        provenance: provenance.clone(),
        graph: pack(roots, graph),
    };
    let bytes = postcard::to_stdvec(&saved).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    kflow_cache::atomic::write(&path, &bytes, 0o644)?;
    prune(dir);
    Ok(())
}

/// Keeps the most recently written graphs.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= KEEP {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - KEEP] {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Config;

    fn node(id: &str, inputs: Vec<(Arc<str>, InputSource)>) -> Arc<ActionNode> {
        Arc::new(ActionNode {
            id: Arc::from(id),
            target: Label::parse(id, "t", None).unwrap(),
            rule: Arc::from("cmd"),
            rule_version: 3,
            params: Params::new(&serde_json::json!({"cmd": id})),
            inputs,
            outputs: vec![Arc::from("out.txt")],
        })
    }

    /// a ← b (b reads a's output and a source file).
    fn sample() -> (Vec<Label>, ActionGraph) {
        let mut graph = ActionGraph {
            graph: DiGraph::new(),
            exposes: FxHashMap::default(),
        };
        let a = graph.graph.add_node(node("t//p:a", vec![]));
        let source = InputSource::Output {
            node: a,
            output: Arc::from("out.txt"),
        };
        let b = graph.graph.add_node(node(
            "t//p:b",
            vec![
                (Arc::from("out.txt"), source.clone()),
                (Arc::from("x.csv"), InputSource::File(PathBuf::from("/w/g/p/x.csv"))),
            ],
        ));
        graph.graph.add_edge(a, b, Arc::from("out.txt"));
        let label_b = Label::parse("t//p:b", "t", None).unwrap();
        let b_out = InputSource::Output {
            node: b,
            output: Arc::from("out.txt"),
        };
        graph
            .exposes
            .insert(label_b.clone(), vec![(Arc::from("out.txt"), b_out)]);
        graph.exposes.insert(
            Label::parse("t//p:a", "t", None).unwrap(),
            vec![(Arc::from("out.txt"), source)],
        );
        (vec![label_b], graph)
    }

    #[test]
    fn packed_graph_round_trips() {
        let (roots, graph) = sample();
        let bytes = postcard::to_stdvec(&pack(&roots, &graph)).unwrap();
        let (roots2, graph2) = unpack(postcard::from_bytes(&bytes).unwrap()).unwrap();
        assert_eq!(roots2, roots);
        assert_eq!(graph2.graph.node_count(), 2);
        assert_eq!(graph2.graph.edge_count(), 1);
        for (n1, n2) in graph.graph.node_weights().zip(graph2.graph.node_weights()) {
            assert_eq!(
                (&n1.id, &n1.target, &n1.rule, n1.rule_version),
                (&n2.id, &n2.target, &n2.rule, n2.rule_version)
            );
            assert_eq!(
                (&n1.params, &n1.inputs, &n1.outputs),
                (&n2.params, &n2.inputs, &n2.outputs)
            );
        }
        assert_eq!(graph2.exposes, graph.exposes);
    }

    #[test]
    fn a_packed_graph_with_a_forward_edge_is_refused() {
        let (roots, mut graph) = sample();
        // Make `a` read from `b`, which comes after it.
        let b = NodeIndex::new(1);
        let a = Arc::make_mut(&mut graph.graph[NodeIndex::new(0)]);
        a.inputs.push((
            Arc::from("late"),
            InputSource::Output {
                node: b,
                output: Arc::from("out.txt"),
            },
        ));
        let bytes = postcard::to_stdvec(&pack(&roots, &graph)).unwrap();
        assert!(unpack(postcard::from_bytes(&bytes).unwrap()).is_none());
    }

    #[test]
    fn saved_graph_is_used_only_while_its_files_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("g")).unwrap();
        let config = Config::parse(dir.path(), "[cells]\nt = \"g\"\n").unwrap();
        let build = dir.path().join("g/BUILD.toml");
        std::fs::write(&build, "[[cmd]]\n").unwrap();
        let patterns = vec![Pattern::parse("t//:a", "t", None).unwrap()];
        let provenance = Provenance {
            stamp: "kflow 1".to_owned(),
            patterns: patterns.iter().map(Pattern::to_string).collect(),
            files: vec![
                (build.clone(), digest_of(&build)),
                (dir.path().join("g/x/BUILD.toml"), None),
            ],
            walks: walks(&config, &patterns),
        };
        let (roots, graph) = sample();
        let saved = dir.path().join("saved");
        save(&saved, &provenance, &roots, &graph).unwrap();
        assert!(load(&saved, "kflow 1", &config, &patterns).is_some());
        assert!(
            load(&saved, "kflow 2", &config, &patterns).is_none(),
            "another binary plans anew"
        );
        std::fs::write(&build, "[[cmd]]\n# edited\n").unwrap();
        assert!(
            load(&saved, "kflow 1", &config, &patterns).is_none(),
            "an edited graph file plans anew"
        );
        std::fs::write(&build, "[[cmd]]\n").unwrap();
        std::fs::create_dir_all(dir.path().join("g/x")).unwrap();
        std::fs::write(dir.path().join("g/x/BUILD.toml"), "").unwrap();
        assert!(
            load(&saved, "kflow 1", &config, &patterns).is_none(),
            "a new package file plans anew"
        );
    }
}
