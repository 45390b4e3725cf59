//! `kflow query`: a small language over the target graph.
//!
//! ```text
//! expr  := term (op term)*          op: `+` / `union`, `-` / `except`, `^` / `intersect`
//! term  := PATTERN
//!        | deps(expr [, depth])
//!        | rdeps(expr [, depth])            universe: every target of every cell
//!        | rdeps(universe, expr [, depth])
//!        | kind(REGEX, expr)
//!        | ( expr )
//! ```
//! Operators bind left to right with equal precedence, as in Buck's query.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;

use petgraph::Direction;
use serde::Serialize;

use crate::db::{self, TargetId};
use crate::diagnostic::Diagnostic;
use crate::label::{Label, Pattern};
use crate::workspace::Workspace;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Pattern(String),
    Deps(Box<Expr>, Option<usize>),
    Rdeps {
        universe: Option<Box<Expr>>,
        of: Box<Expr>,
        depth: Option<usize>,
    },
    Kind(String, Box<Expr>),
    Union(Box<Expr>, Box<Expr>),
    Except(Box<Expr>, Box<Expr>),
    Intersect(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
    Comma,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    for c in text.chars() {
        match c {
            '(' | ')' | ',' => {
                flush(&mut word, &mut out);
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

fn syntax(message: impl Into<String>) -> Diagnostic {
    Diagnostic::new(format!("invalid query: {}", message.into()))
        .with_help("e.g. `deps(cell//pkg:name)`, `rdeps(cell//pkg:name)`, `kind(cmd, cell//...)`")
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: Token, what: &str) -> Result<(), Diagnostic> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(syntax(format!("expected {what}, found {}", describe(&t)))),
            None => Err(syntax(format!("expected {what}, found the end"))),
        }
    }

    fn expr(&mut self) -> Result<Expr, Diagnostic> {
        let mut left = self.term()?;
        while let Some(Token::Word(op)) = self.peek() {
            let make: fn(Box<Expr>, Box<Expr>) -> Expr = match op.as_str() {
                "+" | "union" => Expr::Union,
                "-" | "except" => Expr::Except,
                "^" | "intersect" => Expr::Intersect,
                _ => break,
            };
            self.pos += 1;
            let right = self.term()?;
            left = make(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, Diagnostic> {
        match self.next() {
            Some(Token::Open) => {
                let e = self.expr()?;
                self.expect(Token::Close, "`)`")?;
                Ok(e)
            }
            Some(Token::Word(w)) if self.peek() == Some(&Token::Open) => {
                self.pos += 1;
                let e = self.function(&w)?;
                self.expect(Token::Close, "`)`")?;
                Ok(e)
            }
            Some(Token::Word(w)) => Ok(Expr::Pattern(w)),
            Some(t) => Err(syntax(format!(
                "expected a pattern or a function, found {}",
                describe(&t)
            ))),
            None => Err(syntax("the query is empty or ends too early")),
        }
    }

    fn function(&mut self, name: &str) -> Result<Expr, Diagnostic> {
        match name {
            "deps" => {
                let of = self.expr()?;
                let depth = self.depth()?;
                Ok(Expr::Deps(Box::new(of), depth))
            }
            "rdeps" => {
                let first = self.expr()?;
                if self.peek() == Some(&Token::Comma) {
                    self.pos += 1;
                    // `rdeps(x, 2)` has a depth; `rdeps(u, x)` a universe.
                    if let Some(Token::Word(w)) = self.peek()
                        && w.parse::<usize>().is_ok()
                        && self.tokens.get(self.pos + 1) == Some(&Token::Close)
                    {
                        let depth = w.parse().ok();
                        self.pos += 1;
                        return Ok(Expr::Rdeps {
                            universe: None,
                            of: Box::new(first),
                            depth,
                        });
                    }
                    let of = self.expr()?;
                    let depth = self.depth()?;
                    return Ok(Expr::Rdeps {
                        universe: Some(Box::new(first)),
                        of: Box::new(of),
                        depth,
                    });
                }
                Ok(Expr::Rdeps {
                    universe: None,
                    of: Box::new(first),
                    depth: None,
                })
            }
            "kind" => {
                let regex = match self.next() {
                    Some(Token::Word(w)) => w,
                    _ => return Err(syntax("`kind` takes a rule-name regex first")),
                };
                self.expect(Token::Comma, "`,`")?;
                Ok(Expr::Kind(regex, Box::new(self.expr()?)))
            }
            other => Err(syntax(format!("unknown function `{other}`")).suggest(other, ["deps", "rdeps", "kind"])),
        }
    }

    fn depth(&mut self) -> Result<Option<usize>, Diagnostic> {
        if self.peek() != Some(&Token::Comma) {
            return Ok(None);
        }
        self.pos += 1;
        match self.next() {
            Some(Token::Word(w)) => w
                .parse()
                .map(Some)
                .map_err(|_| syntax(format!("depth must be a number, found `{w}`"))),
            _ => Err(syntax("expected a depth after `,`")),
        }
    }
}

fn describe(t: &Token) -> String {
    match t {
        Token::Word(w) => format!("`{w}`"),
        Token::Open => "`(`".to_owned(),
        Token::Close => "`)`".to_owned(),
        Token::Comma => "`,`".to_owned(),
    }
}

pub fn parse(text: &str) -> Result<Expr, Diagnostic> {
    let mut p = Parser {
        tokens: tokenize(text),
        pos: 0,
    };
    let e = p.expr()?;
    match p.next() {
        None => Ok(e),
        Some(t) => Err(syntax(format!(
            "unexpected {} after a complete expression",
            describe(&t)
        ))),
    }
}

/// Evaluates a query; `cwd` resolves relative patterns.
pub fn evaluate(ws: &Workspace, cwd: &Path, expr: &Expr) -> Result<BTreeSet<Label>, Diagnostic> {
    Ok(match expr {
        Expr::Pattern(p) => {
            let patterns = ws.parse_patterns(cwd, std::slice::from_ref(p))?;
            ws.resolve(&patterns)?.into_iter().collect()
        }
        Expr::Deps(of, depth) => {
            let roots: Vec<Label> = evaluate(ws, cwd, of)?.into_iter().collect();
            let graph = ws.load(&roots)?;
            reach(
                &graph.graph,
                roots.iter().filter_map(|l| graph.node(l)),
                Direction::Outgoing,
                *depth,
            )
        }
        Expr::Rdeps { universe, of, depth } => {
            let universe: Vec<Label> = match universe {
                Some(u) => evaluate(ws, cwd, u)?.into_iter().collect(),
                None => {
                    let all: Vec<Pattern> = ws
                        .config()?
                        .cells
                        .keys()
                        .map(|cell| Pattern::Recursive {
                            cell: cell.clone(),
                            package: String::new(),
                        })
                        .collect();
                    ws.resolve(&all)?
                }
            };
            let of = evaluate(ws, cwd, of)?;
            let graph = ws.load(&universe)?;
            reach(
                &graph.graph,
                of.iter().filter_map(|l| graph.node(l)),
                Direction::Incoming,
                *depth,
            )
        }
        Expr::Kind(pattern, of) => {
            let re = regex::Regex::new(pattern)
                .map_err(|e| Diagnostic::new(format!("invalid regex `{pattern}` in kind(): {e}")))?;
            evaluate(ws, cwd, of)?
                .into_iter()
                .filter(|l| kind_of(ws, l).is_some_and(|k| re.is_match(&k)))
                .collect()
        }
        Expr::Union(a, b) => &evaluate(ws, cwd, a)? | &evaluate(ws, cwd, b)?,
        Expr::Except(a, b) => &evaluate(ws, cwd, a)? - &evaluate(ws, cwd, b)?,
        Expr::Intersect(a, b) => &evaluate(ws, cwd, a)? & &evaluate(ws, cwd, b)?,
    })
}

/// Breadth-first reach from `starts` (included), up to `depth` edges.
fn reach(
    graph: &petgraph::graph::DiGraph<Label, ()>,
    starts: impl Iterator<Item = petgraph::graph::NodeIndex>,
    direction: Direction,
    depth: Option<usize>,
) -> BTreeSet<Label> {
    let mut seen: HashMap<petgraph::graph::NodeIndex, usize> = HashMap::new();
    let mut queue: VecDeque<_> = starts.map(|n| (n, 0)).collect();
    while let Some((n, d)) = queue.pop_front() {
        if seen.contains_key(&n) {
            continue;
        }
        seen.insert(n, d);
        if depth.is_some_and(|max| d >= max) {
            continue;
        }
        for next in graph.neighbors_directed(n, direction) {
            if !seen.contains_key(&next) {
                queue.push_back((next, d + 1));
            }
        }
    }
    seen.keys().map(|n| graph[*n].clone()).collect()
}

fn kind_of(ws: &Workspace, label: &Label) -> Option<String> {
    db::declared(ws.db(), TargetId::new(ws.db(), label.clone()))
        .as_ref()
        .ok()
        .map(|d| d.decl.kind.clone())
}

/// One target in `--output json`.
#[derive(Clone, Debug, Serialize)]
pub struct TargetRow {
    pub label: String,
    pub kind: String,
    pub deps: Vec<String>,
}

pub fn describe_targets(ws: &Workspace, labels: &BTreeSet<Label>) -> Vec<TargetRow> {
    labels
        .iter()
        .map(|l| {
            let declared = db::declared(ws.db(), TargetId::new(ws.db(), l.clone())).as_ref().ok();
            let mut deps: Vec<String> = declared
                .map(|d| d.decl.attrs.deps().into_iter().map(|(l, _)| l.to_string()).collect())
                .unwrap_or_default();
            deps.sort();
            deps.dedup();
            TargetRow {
                label: l.to_string(),
                kind: declared.map(|d| d.decl.kind.clone()).unwrap_or_default(),
                deps,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Box<Expr> {
        Box::new(Expr::Pattern(s.to_owned()))
    }

    #[test]
    fn parses_functions_and_operators() {
        assert_eq!(parse("deps(//a:b)").unwrap(), Expr::Deps(pat("//a:b"), None));
        assert_eq!(parse("deps( //a:b , 2 )").unwrap(), Expr::Deps(pat("//a:b"), Some(2)));
        assert_eq!(
            parse("rdeps(//..., //a:b)").unwrap(),
            Expr::Rdeps {
                universe: Some(pat("//...")),
                of: pat("//a:b"),
                depth: None
            }
        );
        assert_eq!(
            parse("rdeps(//a:b, 1)").unwrap(),
            Expr::Rdeps {
                universe: None,
                of: pat("//a:b"),
                depth: Some(1)
            }
        );
        assert_eq!(
            parse("kind(cmd, //...) - //a:b").unwrap(),
            Expr::Except(Box::new(Expr::Kind("cmd".into(), pat("//..."))), pat("//a:b"))
        );
    }

    #[test]
    fn labels_with_dashes_are_not_operators() {
        assert_eq!(parse("//a:b-c").unwrap(), Expr::Pattern("//a:b-c".into()));
    }

    #[test]
    fn malformed_queries_are_errors() {
        for bad in [
            "",
            "deps(",
            "deps(//a:b",
            "dep(//a:b)",
            "kind(//a:b)",
            "//a:b )",
            "deps(//a:b, x)",
        ] {
            assert!(parse(bad).is_err(), "accepted `{bad}`");
        }
    }
}
