//! A small YAML document tree with source positions, built from the
//! saphyr-parser event stream (YAML 1.2 core schema).
//!
//! The tree keeps every node's 1-based line and column so that the
//! definition reader can report problems at the offending key or value.
//! It can also be built from any self-describing serde format (JSON), in
//! which case positions are unknown (line 0).

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A position in the source: 1-based line and column (0 when unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_span(span: &Span) -> Mark {
        Mark {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// How a scalar resolves under the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScalarKind {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

/// A node's content.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Scalar { text: String, kind: ScalarKind },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub mark: Mark,
}

impl Node {
    /// A short description of the node's type, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Scalar { kind, .. } => match kind {
                ScalarKind::Null => "nothing (null)",
                ScalarKind::Bool => "a boolean",
                ScalarKind::Int => "an integer",
                ScalarKind::Float => "a number",
                ScalarKind::Str => "a string",
            },
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Whether the node is an explicit or implicit null (`key:` with no value, `~`, `null`).
    pub fn is_null(&self) -> bool {
        matches!(
            self.value,
            Value::Scalar {
                kind: ScalarKind::Null,
                ..
            }
        )
    }

    /// The node's size in nodes, to bound alias expansion.
    fn size(&self) -> usize {
        match &self.value {
            Value::Scalar { .. } => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Resolves a plain scalar under the YAML 1.2 core schema.
pub(crate) fn resolve_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return ScalarKind::Bool,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float,
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let all = |s: &str, f: fn(&char) -> bool| !s.is_empty() && s.chars().all(|c| f(&c));
    if all(unsigned, char::is_ascii_digit)
        || text
            .strip_prefix("0o")
            .is_some_and(|s| all(s, |c| ('0'..='7').contains(c)))
        || text
            .strip_prefix("0x")
            .is_some_and(|s| all(s, char::is_ascii_hexdigit))
    {
        return ScalarKind::Int;
    }
    // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.is_empty() && all(frac, char::is_ascii_digit))
                || (all(int, char::is_ascii_digit) && frac.chars().all(|c| c.is_ascii_digit()))
        }
        None => all(mantissa, char::is_ascii_digit),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        all(
            e.strip_prefix(['-', '+']).unwrap_or(e),
            char::is_ascii_digit,
        )
    });
    if mantissa_ok && exponent_ok {
        ScalarKind::Float
    } else {
        ScalarKind::Str
    }
}

/// A problem found while reading the YAML text itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TreeError {
    pub mark: Mark,
    /// The path being read when the problem was found (`stages[1].trigger`).
    pub path: String,
    pub message: String,
}

/// Nesting deeper than this is refused (protects the stack).
const MAX_DEPTH: usize = 64;
/// Documents larger than this many nodes (after expanding aliases) are
/// refused. A large real pipeline has a few hundred.
pub const MAX_NODES: usize = 20_000;

/// Builds the tree of a single-document YAML text; `None` for an empty document.
pub(crate) fn parse_yaml(text: &str) -> Result<Option<Node>, TreeError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        path: Vec::new(),
        nodes: 0,
        last: Mark { line: 1, column: 1 },
    };
    builder.document()
}

enum Segment {
    Index(usize),
    Key(String),
}

struct Builder<'i> {
    parser: Parser<'i, saphyr_parser::StrInput<'i>>,
    anchors: HashMap<usize, Node>,
    path: Vec<Segment>,
    nodes: usize,
    last: Mark,
}

/// Formats a path like `stages[1].trigger`.
pub(crate) fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'i> Builder<'i> {
    fn path_string(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
                Segment::Key(k) => out = join_path(&out, k),
            }
        }
        if out.is_empty() {
            "(document)".to_owned()
        } else {
            out
        }
    }

    fn error(&self, mark: Mark, message: impl Into<String>) -> TreeError {
        TreeError {
            mark,
            path: self.path_string(),
            message: message.into(),
        }
    }

    fn next(&mut self) -> Result<(Event<'i>, Mark), TreeError> {
        match self.parser.next_event() {
            Some(Ok((event, span))) => {
                let mark = Mark::from_span(&span);
                self.last = mark;
                Ok((event, mark))
            }
            Some(Err(e)) => {
                let mark = Mark {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                };
                Err(self.error(mark, format!("YAML syntax error: {}", e.info())))
            }
            None => Err(self.error(self.last, "unexpected end of the YAML stream")),
        }
    }

    fn document(&mut self) -> Result<Option<Node>, TreeError> {
        loop {
            let (event, mark) = self.next()?;
            match event {
                Event::StreamStart | Event::Nothing => continue,
                Event::StreamEnd => return Ok(None),
                Event::DocumentStart(_) => break,
                _ => return Err(self.error(mark, "expected a YAML document")),
            }
        }
        let (event, mark) = self.next()?;
        let root = match event {
            Event::DocumentEnd => return Ok(None),
            event => self.node(event, mark, 0)?,
        };
        loop {
            let (event, mark) = self.next()?;
            match event {
                Event::DocumentEnd | Event::Nothing => continue,
                Event::StreamEnd => return Ok(Some(root)),
                Event::DocumentStart(_) => {
                    return Err(self.error(
                        mark,
                        "only one YAML document is allowed; remove the second `---`",
                    ));
                }
                _ => return Err(self.error(mark, "unexpected content after the document")),
            }
        }
    }

    fn count(&mut self, added: usize, mark: Mark) -> Result<(), TreeError> {
        self.nodes += added;
        if self.nodes > MAX_NODES {
            Err(self.error(
                mark,
                format!("the document is too large (more than {MAX_NODES} values after expanding aliases)"),
            ))
        } else {
            Ok(())
        }
    }

    fn check_tag(
        &self,
        tag: Option<&saphyr_parser::Tag>,
        mark: Mark,
    ) -> Result<Option<String>, TreeError> {
        match tag {
            None => Ok(None),
            Some(tag) if tag.is_yaml_core_schema() => Ok(Some(tag.suffix.clone())),
            Some(tag) => Err(self.error(
                mark,
                format!(
                    "YAML tags such as `{}{}` are not supported here",
                    tag.handle, tag.suffix
                ),
            )),
        }
    }

    fn node(&mut self, event: Event<'i>, mark: Mark, depth: usize) -> Result<Node, TreeError> {
        if depth > MAX_DEPTH {
            return Err(self.error(mark, format!("nesting is deeper than {MAX_DEPTH} levels")));
        }
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, mark)?;
                let tag = self.check_tag(tag.as_deref(), mark)?;
                let kind = match (tag.as_deref(), style) {
                    (Some("str"), _) => ScalarKind::Str,
                    (_, ScalarStyle::Plain) => resolve_plain(&text),
                    _ => ScalarKind::Str,
                };
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        kind,
                    },
                    mark,
                };
                (node, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.count(1, mark)?;
                self.check_tag(tag.as_deref(), mark)?;
                let mut items = Vec::new();
                loop {
                    let (event, item_mark) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    self.path.push(Segment::Index(items.len()));
                    let item = self.node(event, item_mark, depth + 1)?;
                    self.path.pop();
                    items.push(item);
                }
                (
                    Node {
                        value: Value::Seq(items),
                        mark,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, tag) => {
                self.count(1, mark)?;
                self.check_tag(tag.as_deref(), mark)?;
                let mut entries: Vec<(Node, Node)> = Vec::new();
                // Each key's first line, so that finding a duplicate stays
                // linear in the size of the mapping.
                let mut seen: HashMap<String, usize> = HashMap::new();
                loop {
                    let (event, key_mark) = self.next()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(event, key_mark, depth + 1)?;
                    let key_text = match &key.value {
                        Value::Scalar { text, .. } => text.clone(),
                        _ => {
                            return Err(self.error(
                                key.mark,
                                "a mapping key must be plain text, not a list or mapping",
                            ));
                        }
                    };
                    if let Some(&first_line) = seen.get(&key_text) {
                        self.path.push(Segment::Key(key_text.clone()));
                        let err = self.error(
                            key.mark,
                            format!(
                                "duplicate key `{key_text}` (first given on line {first_line})"
                            ),
                        );
                        return Err(err);
                    }
                    seen.insert(key_text.clone(), key.mark.line);
                    self.path.push(Segment::Key(key_text));
                    let (event, value_mark) = self.next()?;
                    let value = self.node(event, value_mark, depth + 1)?;
                    self.path.pop();
                    entries.push((key, value));
                }
                (
                    Node {
                        value: Value::Map(entries),
                        mark,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(self.error(mark, "unknown alias"));
                };
                let mut node = target.clone();
                let size = node.size();
                node.mark = mark;
                self.count(size, mark)?;
                (node, 0)
            }
            _ => return Err(self.error(mark, "unexpected YAML event")),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

/// Builds a tree from any self-describing serde format (used by `Deserialize`).
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

fn scalar(text: String, kind: ScalarKind) -> Node {
    Node {
        value: Value::Scalar { text, kind },
        mark: Mark::default(),
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pipeline definition value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(scalar(v.to_string(), ScalarKind::Bool))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(scalar(v.to_string(), ScalarKind::Int))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(scalar(v.to_string(), ScalarKind::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(scalar(v.to_string(), ScalarKind::Float))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(scalar(v.to_owned(), ScalarKind::Str))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(scalar(v, ScalarKind::Str))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(scalar(String::new(), ScalarKind::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node {
            value: Value::Seq(items),
            mark: Mark::default(),
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(Node {
            value: Value::Map(entries),
            mark: Mark::default(),
        })
    }
}

#[cfg(test)]
// Tests may unwrap: a panic is a failed test. (`allow`, not `expect`, so this
// stays quiet if clippy.toml sets `allow-unwrap-in-tests`.)
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn core_schema_resolution() {
        for (text, kind) in [
            ("", ScalarKind::Null),
            ("~", ScalarKind::Null),
            ("null", ScalarKind::Null),
            ("true", ScalarKind::Bool),
            ("False", ScalarKind::Bool),
            ("yes", ScalarKind::Str),
            ("12", ScalarKind::Int),
            ("-3", ScalarKind::Int),
            ("0x1F", ScalarKind::Int),
            ("1.5", ScalarKind::Float),
            ("1.", ScalarKind::Float),
            (".5", ScalarKind::Float),
            ("1e3", ScalarKind::Float),
            (".inf", ScalarKind::Float),
            ("1.0.{build}", ScalarKind::Str),
            ("5m", ScalarKind::Str),
            ("-", ScalarKind::Str),
            (".", ScalarKind::Str),
        ] {
            assert_eq!(resolve_plain(text), kind, "{text:?}");
        }
    }

    #[test]
    fn marks_point_at_keys_and_values() {
        let root = parse_yaml("a: 1\nb:\n  - x\n  - { c: d }\n")
            .unwrap()
            .unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries[0].0.mark, Mark { line: 1, column: 1 });
        assert_eq!(entries[0].1.mark, Mark { line: 1, column: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].mark, Mark { line: 3, column: 5 });
        let Value::Map(inner) = &items[1].value else {
            panic!()
        };
        assert_eq!(
            inner[0].1.mark,
            Mark {
                line: 4,
                column: 10
            }
        );
    }

    #[test]
    fn aliases_expand_and_duplicates_fail() {
        let root = parse_yaml("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
        let err = parse_yaml("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            (err.mark.line, err.mark.column, err.path.as_str()),
            (3, 1, "a")
        );
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_and_documents() {
        assert_eq!(parse_yaml("").unwrap(), None);
        assert_eq!(parse_yaml("# nothing\n").unwrap(), None);
        let err = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("YAML syntax error"), "{err:?}");
        let err = parse_yaml("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.mark.line, 2);
        let err = parse_yaml("a: !custom 1\n").unwrap_err();
        assert!(err.message.contains("tags"), "{err:?}");
        let bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
        assert!(parse_yaml(bomb).unwrap_err().message.contains("too large"));
    }
}
