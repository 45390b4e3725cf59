//! The action graph: every action the requested targets need, with edges
//! from the producer of an artifact to its consumers.
//!
//! Invariant: nodes are added dependencies first, so node index order is an
//! execution order. The graph is plain data (rules are named, params are
//! canonical JSON) so that it can be saved and reloaded (`graph_cache.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::BlobRef;
use crate::attrs::{AttrValue, Source};
use crate::db::{self, Db, Planned, TargetId};
use crate::diagnostic::Diagnostic;
use crate::keys::Params;
use crate::label::Label;
use crate::rule::ArtifactRef;
use crate::target_graph::TargetGraph;

/// Where an action input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// A source file, absolute.
    File(PathBuf),
    /// An output of another action of the same graph (or child batch).
    Output { node: NodeIndex, output: Arc<str> },
    /// An artifact handed over by a parent action to its children.
    Blob(BlobRef),
}

impl InputSource {
    /// The distinct actions some of `inputs` are outputs of, in index order.
    pub fn producers<'a>(inputs: impl IntoIterator<Item = &'a InputSource>) -> Vec<usize> {
        let mut nodes: Vec<usize> = inputs
            .into_iter()
            .filter_map(|input| match input {
                InputSource::Output { node, .. } => Some(node.index()),
                _ => None,
            })
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionNode {
    /// `label` for a target's main action, `label/name` for the others.
    pub id: Arc<str>,
    pub target: Label,
    pub rule: Arc<str>,
    pub rule_version: u32,
    pub params: Params,
    pub inputs: Vec<(Arc<str>, InputSource)>,
    pub outputs: Vec<Arc<str>>,
}

pub struct ActionGraph {
    /// Edges go from producer to consumer, weighted by the consumer's input
    /// name.
    pub graph: DiGraph<Arc<ActionNode>, Arc<str>>,
    /// For every target, its exposed outputs.
    pub exposes: FxHashMap<Label, Vec<(Arc<str>, InputSource)>>,
}

impl ActionGraph {
    /// Plans every target of `targets` and links their actions.
    pub fn build(db: &dyn Db, targets: &TargetGraph) -> Result<ActionGraph, Diagnostic> {
        // Dependencies first, so that every `Dep` reference resolves to a
        // node that already exists.
        let order = petgraph::algo::toposort(&targets.graph, None)
            .map_err(|_| Diagnostic::new("internal error: the target graph has a cycle"))?;
        let mut graph: DiGraph<Arc<ActionNode>, Arc<str>> = DiGraph::new();
        let mut exposes: FxHashMap<Label, Vec<(Arc<str>, InputSource)>> = FxHashMap::default();
        for tnode in order.into_iter().rev() {
            let label = &targets.graph[tnode];
            let planned = db::planned(db, TargetId::new(db, label.clone())).clone()?;
            let mut nodes: Vec<NodeIndex> = Vec::with_capacity(planned.plan.actions.len());
            let mut links: HashMap<&ArtifactRef, InputSource> = HashMap::new();
            for decl in &planned.plan.actions {
                let rule = db.rules().get(&decl.rule).ok_or_else(|| {
                    Diagnostic::new(format!("`{label}` plans an action of unknown rule `{}`", decl.rule))
                })?;
                let mut inputs = Vec::with_capacity(decl.inputs.len());
                for (name, artifact) in &decl.inputs {
                    let source = match links.get(artifact) {
                        Some(s) => s.clone(),
                        None => {
                            let s = resolve(&planned, artifact, &nodes, &graph, &exposes)?;
                            links.insert(artifact, s.clone());
                            s
                        }
                    };
                    inputs.push((Arc::from(name.as_str()), source));
                }
                let id = if decl.name.is_empty() {
                    Arc::from(label.as_str())
                } else {
                    Arc::from(format!("{label}/{}", decl.name))
                };
                let edges: Vec<(NodeIndex, Arc<str>)> = inputs
                    .iter()
                    .filter_map(|(name, input): &(Arc<str>, InputSource)| match input {
                        InputSource::Output { node, .. } => Some((*node, name.clone())),
                        InputSource::File(_) | InputSource::Blob(_) => None,
                    })
                    .collect();
                let node = graph.add_node(Arc::new(ActionNode {
                    id,
                    target: label.clone(),
                    rule: Arc::from(rule.name()),
                    rule_version: rule.version(),
                    params: Params::new(&decl.params),
                    inputs,
                    outputs: decl.outputs.iter().map(|o| Arc::from(o.as_str())).collect(),
                }));
                for (from, name) in edges {
                    graph.add_edge(from, node, name);
                }
                nodes.push(node);
            }
            let exposed = planned
                .plan
                .exposes
                .iter()
                .map(|(name, artifact)| {
                    Ok((
                        Arc::from(name.as_str()),
                        resolve(&planned, artifact, &nodes, &graph, &exposes)?,
                    ))
                })
                .collect::<Result<Vec<_>, Diagnostic>>()?;
            exposes.insert(label.clone(), exposed);
        }
        Ok(ActionGraph { graph, exposes })
    }

    /// Every source file an action reads.
    pub fn source_files(&self) -> impl Iterator<Item = &PathBuf> {
        self.graph.node_weights().flat_map(|n| {
            n.inputs.iter().filter_map(|(_, input)| match input {
                InputSource::File(path) => Some(path),
                InputSource::Output { .. } | InputSource::Blob(_) => None,
            })
        })
    }
}

fn resolve(
    planned: &Planned,
    artifact: &ArtifactRef,
    nodes: &[NodeIndex],
    graph: &DiGraph<Arc<ActionNode>, Arc<str>>,
    exposes: &FxHashMap<Label, Vec<(Arc<str>, InputSource)>>,
) -> Result<InputSource, Diagnostic> {
    let label = &planned.target.label;
    match artifact {
        ArtifactRef::Source(rel) => {
            let path = planned.target.package_dir.join(rel);
            if !path.is_file() {
                let span = planned
                    .target
                    .attrs
                    .iter()
                    .find_map(|(_, attr)| mentions_source(&attr.value, rel).then(|| attr.span.clone()));
                return Err(
                    Diagnostic::new(format!("source file `{rel}` of `{label}` does not exist"))
                        .at(Some(planned.package.location(span.unwrap_or(0..0))))
                        .with_label("no such file")
                        .with_note(format!("looked for {}", path.display())),
                );
            }
            Ok(InputSource::File(path))
        }
        ArtifactRef::Local { action, output } => {
            let node = nodes
                .get(*action)
                .filter(|n| graph[**n].outputs.iter().any(|o| **o == **output))
                .ok_or_else(|| {
                    Diagnostic::new(format!(
                        "`{label}`: an action uses output `{output}` of action #{action}, which is not declared before it"
                    ))
                })?;
            Ok(InputSource::Output {
                node: *node,
                output: Arc::from(output.as_str()),
            })
        }
        ArtifactRef::Dep { label: dep, output } => exposes
            .get(dep)
            .and_then(|outs| outs.iter().find(|(n, _)| **n == **output))
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                Diagnostic::new(format!(
                    "`{label}` uses output `{output}` of `{dep}`, which has no such output"
                ))
            }),
    }
}

fn mentions_source(value: &AttrValue, rel: &str) -> bool {
    match value {
        AttrValue::Source(Source::File(f)) => f == rel,
        AttrValue::List(items) => items.iter().any(|v| mentions_source(v, rel)),
        _ => false,
    }
}

/// A node of `kflow graph --format json`.
#[derive(Serialize)]
struct JsonNode<'a> {
    id: &'a str,
    rule: &'a str,
    target: &'a str,
    inputs: BTreeMap<&'a str, String>,
    outputs: &'a [Arc<str>],
}

#[derive(Serialize)]
struct JsonEdge<'a> {
    from: &'a str,
    to: &'a str,
    input: &'a str,
}

impl ActionGraph {
    /// The graph in Graphviz DOT, nodes labelled with identity and rule,
    /// edges with the consumer's input name.
    pub fn to_dot(&self) -> String {
        use petgraph::dot::{Config, Dot};
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let edge_attrs =
            |_, edge: petgraph::graph::EdgeReference<'_, Arc<str>>| format!("label = \"{}\"", quote(edge.weight()));
        let node_attrs = |_, (_, node): (NodeIndex, &Arc<ActionNode>)| {
            format!("label = \"{}\\n({})\"", quote(&node.id), quote(&node.rule))
        };
        let dot = Dot::with_attr_getters(
            &self.graph,
            &[Config::NodeNoLabel, Config::EdgeNoLabel],
            &edge_attrs,
            &node_attrs,
        );
        format!("{dot:?}")
    }

    /// The graph as JSON: `{"nodes": [...], "edges": [...]}`, in a stable
    /// order.
    pub fn to_json(&self) -> serde_json::Value {
        let mut nodes: Vec<JsonNode<'_>> = self
            .graph
            .node_weights()
            .map(|n| JsonNode {
                id: &n.id,
                rule: &n.rule,
                target: n.target.as_str(),
                inputs: n
                    .inputs
                    .iter()
                    .map(|(name, src)| {
                        let from = match src {
                            InputSource::File(path) => path.display().to_string(),
                            InputSource::Output { node, output } => format!("{}:{output}", self.graph[*node].id),
                            InputSource::Blob(blob) => blob.digest.to_hex(),
                        };
                        (&**name, from)
                    })
                    .collect(),
                outputs: &n.outputs,
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(b.id));
        let mut edges: Vec<JsonEdge<'_>> = self
            .graph
            .edge_indices()
            .filter_map(|e| {
                let (from, to) = self.graph.edge_endpoints(e)?;
                Some(JsonEdge {
                    from: &self.graph[from].id,
                    to: &self.graph[to].id,
                    input: &self.graph[e],
                })
            })
            .collect();
        edges.sort_by(|a, b| (a.from, a.to, a.input).cmp(&(b.from, b.to, b.input)));
        serde_json::json!({ "nodes": nodes, "edges": edges })
    }
}
