//! The action graph: every action the requested targets need, with edges
//! from the producer of an artifact to its consumers.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::attrs::{AttrValue, Source};
use crate::db::{self, Db, Planned, TargetId};
use crate::diagnostic::Diagnostic;
use crate::keys::canonical_json;
use crate::label::Label;
use crate::rule::{ArtifactRef, Rule};
use crate::target_graph::TargetGraph;

/// Where an action input comes from once the graph is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// A source file, absolute.
    File(PathBuf),
    /// An output of another action.
    Output { node: NodeIndex, output: String },
}

pub struct ActionNode {
    /// `label` for a target's main action, `label/name` for the others.
    pub id: String,
    pub target: Label,
    pub rule: Arc<dyn Rule>,
    pub params: serde_json::Value,
    pub canonical_params: String,
    pub inputs: Vec<(String, InputSource)>,
    pub outputs: Vec<String>,
}

impl std::fmt::Debug for ActionNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.id, self.rule.name())
    }
}

pub struct ActionGraph {
    /// Edges go from producer to consumer, weighted by the consumer's input
    /// name.
    pub graph: DiGraph<ActionNode, String>,
    /// For every target, its exposed outputs.
    pub exposes: BTreeMap<Label, Vec<(String, InputSource)>>,
}

impl ActionGraph {
    /// Plans every target of `targets` and links their actions.
    pub fn build(db: &dyn Db, targets: &TargetGraph) -> Result<ActionGraph, Diagnostic> {
        // Dependencies first, so that every `Dep` reference resolves to a
        // node that already exists.
        let order = petgraph::algo::toposort(&targets.graph, None)
            .map_err(|_| Diagnostic::new("internal error: the target graph has a cycle"))?;
        let mut graph: DiGraph<ActionNode, String> = DiGraph::new();
        let mut exposes: BTreeMap<Label, Vec<(String, InputSource)>> = BTreeMap::new();
        for tnode in order.into_iter().rev() {
            let label = &targets.graph[tnode];
            let planned = db::planned(db, TargetId::new(db, label.clone())).clone()?;
            let mut nodes: Vec<NodeIndex> = Vec::with_capacity(planned.plan.actions.len());
            let mut links: HashMap<&ArtifactRef, InputSource> = HashMap::new();
            for decl in &planned.plan.actions {
                let rule = db
                    .rules()
                    .get(&decl.rule)
                    .ok_or_else(|| Diagnostic::new(format!("`{label}` plans an action of unknown rule `{}`", decl.rule)))?
                    .clone();
                let mut inputs = Vec::with_capacity(decl.inputs.len());
                for (name, artifact) in &decl.inputs {
                    let source = match links.get(artifact) {
                        Some(s) => s.clone(),
                        None => {
                            let s = resolve(&planned, artifact, &nodes, &exposes)?;
                            links.insert(artifact, s.clone());
                            s
                        }
                    };
                    inputs.push((name.clone(), source));
                }
                let id = if decl.name.is_empty() {
                    label.to_string()
                } else {
                    format!("{label}/{}", decl.name)
                };
                let edges: Vec<(NodeIndex, String)> = inputs
                    .iter()
                    .filter_map(|(name, input)| match input {
                        InputSource::Output { node, .. } => Some((*node, name.clone())),
                        InputSource::File(_) => None,
                    })
                    .collect();
                let node = graph.add_node(ActionNode {
                    id,
                    target: label.clone(),
                    rule,
                    canonical_params: canonical_json(&decl.params),
                    params: decl.params.clone(),
                    inputs,
                    outputs: decl.outputs.clone(),
                });
                for (from, name) in edges {
                    graph.add_edge(from, node, name);
                }
                nodes.push(node);
            }
            let exposed = planned
                .plan
                .exposes
                .iter()
                .map(|(name, artifact)| Ok((name.clone(), resolve(&planned, artifact, &nodes, &exposes)?)))
                .collect::<Result<Vec<_>, Diagnostic>>()?;
            exposes.insert(label.clone(), exposed);
        }
        Ok(ActionGraph { graph, exposes })
    }

    /// The actions whose outputs `node` consumes.
    pub fn producers(&self, node: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(node, Direction::Incoming)
    }
}

fn resolve(
    planned: &Planned,
    artifact: &ArtifactRef,
    nodes: &[NodeIndex],
    exposes: &BTreeMap<Label, Vec<(String, InputSource)>>,
) -> Result<InputSource, Diagnostic> {
    let label = &planned.target.label;
    match artifact {
        ArtifactRef::Source(rel) => {
            let path = planned.target.package_dir.join(rel);
            if !path.is_file() {
                let span = planned.target.attrs.iter().find_map(|(_, attr)| {
                    mentions_source(&attr.value, rel).then(|| attr.span.clone())
                });
                return Err(Diagnostic::new(format!("source file `{rel}` of `{label}` does not exist"))
                    .at(Some(planned.package.location(span.unwrap_or(0..0))))
                    .with_label("no such file")
                    .with_note(format!("looked for {}", path.display())));
            }
            Ok(InputSource::File(path))
        }
        ArtifactRef::Local { action, output } => {
            let node = nodes
                .get(*action)
                .filter(|_| planned.plan.actions[*action].outputs.contains(output))
                .ok_or_else(|| {
                    Diagnostic::new(format!(
                        "`{label}`: an action uses output `{output}` of action #{action}, which is not declared before it"
                    ))
                })?;
            Ok(InputSource::Output {
                node: *node,
                output: output.clone(),
            })
        }
        ArtifactRef::Dep { label: dep, output } => exposes
            .get(dep)
            .and_then(|outs| outs.iter().find(|(n, _)| n == output))
            .map(|(_, s)| s.clone())
            .ok_or_else(|| Diagnostic::new(format!("`{label}` uses output `{output}` of `{dep}`, which has no such output"))),
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
#[derive(serde::Serialize)]
struct JsonNode<'a> {
    id: &'a str,
    rule: &'a str,
    target: String,
    inputs: BTreeMap<&'a str, String>,
    outputs: &'a [String],
}

#[derive(serde::Serialize)]
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
        let edge_attrs = |_, edge: petgraph::graph::EdgeReference<'_, String>| {
            format!("label = \"{}\"", quote(edge.weight()))
        };
        let node_attrs = |_, (_, node): (NodeIndex, &ActionNode)| {
            format!("label = \"{}\\n({})\"", quote(&node.id), quote(node.rule.name()))
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
                rule: n.rule.name(),
                target: n.target.to_string(),
                inputs: n
                    .inputs
                    .iter()
                    .map(|(name, src)| {
                        let from = match src {
                            InputSource::File(path) => path.display().to_string(),
                            InputSource::Output { node, output } => format!("{}:{output}", self.graph[*node].id),
                        };
                        (name.as_str(), from)
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
