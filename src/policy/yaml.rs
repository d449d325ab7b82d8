//! A YAML tree that remembers where every node came from, and a serde deserializer
//! over it whose errors carry the line, column and field path of the offending node
//! (pure: works on a string).
//!
//! Why not a YAML serde crate: those report a position for syntax errors but not the
//! field path plus position of a *semantic* error raised by a type's `Deserialize`
//! (a bad duration three levels deep). Here the tree keeps a position per node, and
//! the deserializer stamps the innermost node's position and path onto any error that
//! bubbles through it.
//!
//! Scalars follow the YAML 1.2 core schema when a type asks for "anything"
//! (`null`/`~`/empty, `true`/`false`, integers, floats); a type that asks for a
//! string gets the scalar's text as written, so `tag: 1.20` stays `"1.20"`.
//! Duplicate keys and unresolved aliases are errors.
//!
//! Bounded by construction (convention 13): an alias copies its anchor's tree, so a
//! few hundred bytes of nested aliases can stand for billions of nodes (an "alias
//! bomb"). A file may use at most [`MAX_ALIASES`] aliases, and the trees it expands to
//! (every alias counted with its whole target) at most [`MAX_NODES`] nodes and
//! [`MAX_TEXT_BYTES`] bytes of scalar text; past either the parse stops with an error
//! at the node that crossed it. Collections nest at most [`MAX_DEPTH`] levels.
//! Duplicate keys are found with a set per mapping, so every check is linear in the
//! size of the file.

use std::collections::{HashMap, HashSet};
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1 (in characters).
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A field path such as `spec.images[0].tags`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path(pub Vec<Seg>);

impl Path {
    /// The empty path (the document root).
    #[must_use]
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a key.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    /// This path extended by an index.
    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Parses `a.b[2].c` (used by tests and by callers naming fields).
    #[must_use]
    pub fn parse(s: &str) -> Self {
        let mut segs = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
            if !name.is_empty() {
                segs.push(Seg::Key(name.to_owned()));
            }
            while let Some((idx, tail)) = rest.split_once(']') {
                if let Ok(i) = idx.parse() {
                    segs.push(Seg::Index(i));
                }
                rest = tail.trim_start_matches('[');
            }
        }
        Self(segs)
    }

    /// This path followed by `other`.
    #[must_use]
    pub fn join(mut self, other: &Path) -> Path {
        self.0.extend(other.0.iter().cloned());
        self
    }

    /// Whether this is the document root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: subject to core-schema resolution (null, bool, numbers).
    Plain,
    /// Quoted, block, or tagged `!!str`: always a string.
    Literal,
}

/// A node's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar and how it was written.
    Scalar(String, Style),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Node, Node)>),
}

/// A YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The content.
    pub value: Value,
    /// Where the node starts.
    pub pos: Pos,
}

impl Node {
    /// Whether the node is a YAML null (`~`, `null`, or empty).
    #[must_use]
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s, Style::Plain) if is_null(s))
    }

    /// The scalar's text, if it is a non-null scalar.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) if !self.is_null() => Some(s),
            _ => None,
        }
    }

    /// The entries, if the node is a mapping.
    #[must_use]
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under `key`, if the node is a mapping that has it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The key node for `key` (to point errors at the key rather than its value).
    #[must_use]
    pub fn get_key(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k)
    }

    /// The node at `path`, or the deepest node on the way there that exists (so an
    /// error about a missing field points at the mapping that lacks it).
    #[must_use]
    pub fn locate(&self, path: &Path) -> &Node {
        let mut node = self;
        for seg in &path.0 {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => node.get(k),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// A short description of the node's kind, for error messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar(..) if self.is_null() => "null",
            Value::Scalar(..) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// A parse or deserialization error, positioned once it has bubbled through a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What is wrong.
    pub message: String,
    /// Where (the innermost node that saw the error).
    pub pos: Option<Pos>,
    /// The field path of that node.
    pub path: Option<Path>,
}

impl Error {
    /// An error at a known place.
    #[must_use]
    pub fn at(pos: Pos, path: Path, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            pos: Some(pos),
            path: Some(path),
        }
    }

    fn stamp(mut self, node: &Node, path: &Path) -> Self {
        if self.pos.is_none() {
            self.pos = Some(node.pos);
            self.path = Some(path.clone());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            message: msg.to_string(),
            pos: None,
            path: None,
        }
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// The most aliases (`*name`) one file may use. Policies rarely need any; a
/// Kubernetes-style manifest with shared blocks uses a handful.
pub const MAX_ALIASES: usize = 1_000;

/// The most nodes the documents of one file may expand to, each alias counted with
/// every node of its target. A large real policy has a few hundred nodes.
pub const MAX_NODES: usize = 200_000;

/// The most bytes of scalar text the documents of one file may expand to, each alias
/// counted with all the text of its target (4 times the largest policy file).
pub const MAX_TEXT_BYTES: usize = 4 << 20;

/// The deepest nesting of collections a document may have. A policy nests about six
/// levels; the bound keeps the recursive walks over the tree (and its drop) far
/// from the end of the stack.
pub const MAX_DEPTH: usize = 128;

/// Parses every document in `source`. Empty documents (a lone `---`) are skipped.
/// Each returned node is a document root.
///
/// Fails (with the position of the offending node) on invalid YAML, a duplicate key,
/// an unknown alias, nesting deeper than [`MAX_DEPTH`], more than [`MAX_ALIASES`]
/// aliases, or documents that expand to
/// more than [`MAX_NODES`] nodes or [`MAX_TEXT_BYTES`] bytes of text.
pub fn parse_documents(source: &str) -> Result<Vec<Node>, Error> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| Error {
            message: format!("invalid YAML: {}", e.info()),
            pos: Some(Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            }),
            path: Some(Path::root()),
        })?;
        builder.event(event, span)?;
    }
    Ok(builder.docs)
}

/// How much a subtree costs once expanded: its nodes and the bytes of its scalars.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    text: usize,
}

impl Weight {
    fn add(&mut self, other: Weight) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.text = self.text.saturating_add(other.text);
    }
}

/// A collection being built: where it starts, its anchor, and what its finished
/// children weigh (so that an alias to it is charged without walking it).
struct Frame {
    pos: Pos,
    anchor: usize,
    weight: Weight,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    /// The entries, the key waiting for its value, and a hash of each scalar key
    /// (8 bytes a key rather than a copy of it; a hit is confirmed on the entries).
    Map(Vec<(Node, Node)>, Option<Node>, HashSet<u64>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Weight)>,
    docs: Vec<Node>,
    /// What the file has expanded to so far.
    total: Weight,
    aliases: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Error> {
        let pos = pos_of(&span);
        match event {
            Event::DocumentStart(_) => self.anchors.clear(),
            Event::Scalar(text, style, anchor, tag) => {
                let weight = Weight {
                    nodes: 1,
                    text: text.len(),
                };
                let is_str_tag = tag
                    .as_ref()
                    .is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
                let style = if style == ScalarStyle::Plain && !is_str_tag {
                    Style::Plain
                } else {
                    Style::Literal
                };
                self.charge(weight, pos)?;
                // The scanner's buffer may be several times the text: keep the text only.
                let mut text = text.into_owned();
                text.shrink_to_fit();
                self.complete(
                    Node {
                        value: Value::Scalar(text, style),
                        pos,
                    },
                    anchor,
                    weight,
                )?;
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > MAX_ALIASES {
                    return Err(Error {
                        message: format!("more than {MAX_ALIASES} aliases in one file (the limit)"),
                        pos: Some(pos),
                        path: None,
                    });
                }
                let unknown = || Error {
                    message: "alias refers to an unknown anchor".into(),
                    pos: Some(pos),
                    path: None,
                };
                let weight = self.anchors.get(&id).ok_or_else(unknown)?.1;
                // Charged before the copy is made: the limit, not the allocator, stops a bomb.
                self.charge(weight, pos)?;
                let node = self.anchors.get(&id).ok_or_else(unknown)?.0.clone();
                self.complete(Node { pos, ..node }, 0, weight)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.open(pos, anchor, FrameKind::Seq(Vec::new()))?;
            }
            Event::MappingStart(anchor, _) => {
                self.open(
                    pos,
                    anchor,
                    FrameKind::Map(Vec::new(), None, HashSet::new()),
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    // Trimmed to size: a tree of small collections would otherwise be
                    // mostly spare capacity.
                    let value = match frame.kind {
                        FrameKind::Seq(mut items) => {
                            items.shrink_to_fit();
                            Value::Seq(items)
                        }
                        FrameKind::Map(mut entries, _, _) => {
                            entries.shrink_to_fit();
                            Value::Map(entries)
                        }
                    };
                    self.complete(
                        Node {
                            value,
                            pos: frame.pos,
                        },
                        frame.anchor,
                        frame.weight,
                    )?;
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    /// Adds `weight` to what the file expands to; an error at `pos` past a limit.
    fn charge(&mut self, weight: Weight, pos: Pos) -> Result<(), Error> {
        self.total.add(weight);
        let over = if self.total.nodes > MAX_NODES {
            format!("more than {MAX_NODES} nodes")
        } else if self.total.text > MAX_TEXT_BYTES {
            format!("more than {MAX_TEXT_BYTES} bytes of text")
        } else {
            return Ok(());
        };
        Err(Error {
            message: format!(
                "the documents of this file expand to {over} (the limit; an alias counts \
                 its whole target each time it is used)"
            ),
            pos: Some(pos),
            path: None,
        })
    }

    fn open(&mut self, pos: Pos, anchor: usize, kind: FrameKind) -> Result<(), Error> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Error {
                message: format!("nested more than {MAX_DEPTH} levels deep (the limit)"),
                pos: Some(pos),
                path: None,
            });
        }
        let weight = Weight { nodes: 1, text: 0 };
        self.charge(weight, pos)?;
        self.stack.push(Frame {
            pos,
            anchor,
            weight,
            kind,
        });
        Ok(())
    }

    fn complete(&mut self, node: Node, anchor: usize, weight: Weight) -> Result<(), Error> {
        if anchor != 0 {
            // The kept copy is charged like an alias: anchors nested in anchors would
            // otherwise copy quadratically.
            self.charge(weight, node.pos)?;
            self.anchors.insert(anchor, (node.clone(), weight));
        }
        let Some(frame) = self.stack.last_mut() else {
            if !node.is_null() {
                self.docs.push(node);
            }
            return Ok(());
        };
        frame.weight.add(weight);
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map(entries, pending, keys) => match pending.take() {
                None => {
                    if let Some(key) = node.as_str()
                        && !keys.insert(key_hash(key))
                        && let Some((first, _)) =
                            entries.iter().find(|(k, _)| k.as_str() == Some(key))
                    {
                        return Err(Error {
                            message: format!(
                                "duplicate key \"{key}\" (first at line {})",
                                first.pos.line
                            ),
                            pos: Some(node.pos),
                            path: None,
                        });
                    }
                    *pending = Some(node);
                }
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

/// A 64-bit hash of a mapping key (fixed keys: the same on every run).
fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Deserializes `T` from `node`, which sits at `path` in its document.
pub fn from_node<'de, T: serde::Deserialize<'de>>(
    node: &'de Node,
    path: &Path,
) -> Result<T, Error> {
    T::deserialize(NodeDe {
        node,
        path: path.clone(),
    })
    .map_err(|e| e.stamp(node, path))
}

/// A serde deserializer over one node.
pub struct NodeDe<'de> {
    node: &'de Node,
    path: Path,
}

impl<'de> NodeDe<'de> {
    fn unexpected(&self, expected: &str) -> Error {
        Error::at(
            self.node.pos,
            self.path.clone(),
            format!("expected {expected}, found {}", describe(self.node)),
        )
    }

    fn scalar(&self) -> Option<(&'de str, Style)> {
        match &self.node.value {
            Value::Scalar(s, style) => Some((s.as_str(), *style)),
            _ => None,
        }
    }

    fn wrap<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|e| e.stamp(self.node, &self.path))
    }

    fn visit_map<V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        static EMPTY: Vec<(Node, Node)> = Vec::new();
        let entries = match &self.node.value {
            Value::Map(m) => m,
            // `directPush:` with nothing after it reads as an empty mapping.
            _ if self.node.is_null() => &EMPTY,
            _ => return Err(self.unexpected("a mapping")),
        };
        self.wrap(visitor.visit_map(Entries {
            iter: entries.iter(),
            value: None,
            path: &self.path,
        }))
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Scalar(..) if node.is_null() => "null".into(),
        Value::Scalar(s, _) => format!("\"{}\"", s.escape_debug()),
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
    }
}

fn parse_int(s: &str) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ if s.bytes().any(|b| b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+')) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match &self.node.value {
            Value::Scalar(s, Style::Literal) => visitor.visit_borrowed_str(s),
            Value::Scalar(s, Style::Plain) => {
                if is_null(s) {
                    visitor.visit_unit()
                } else if let Some(b) = match s.as_str() {
                    "true" | "True" | "TRUE" => Some(true),
                    "false" | "False" | "FALSE" => Some(false),
                    _ => None,
                } {
                    visitor.visit_bool(b)
                } else if let Some(i) = parse_int(s) {
                    match (u64::try_from(i), i64::try_from(i)) {
                        (Ok(u), _) => visitor.visit_u64(u),
                        (_, Ok(n)) => visitor.visit_i64(n),
                        _ => visitor.visit_borrowed_str(s),
                    }
                } else if let Some(f) = parse_float(s) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_borrowed_str(s)
                }
            }
            Value::Seq(items) => visitor.visit_seq(Items {
                iter: items.iter().enumerate(),
                path: &self.path,
            }),
            Value::Map(_) => return self.visit_map(visitor),
        };
        self.wrap(r)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.scalar() {
            Some((s, _)) if !self.node.is_null() => self.wrap(visitor.visit_borrowed_str(s)),
            _ => Err(self.unexpected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            self.wrap(visitor.visit_none())
        } else {
            let node = self.node;
            let path = self.path.clone();
            visitor.visit_some(self).map_err(|e| e.stamp(node, &path))
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Seq(items) => self.wrap(visitor.visit_seq(Items {
                iter: items.iter().enumerate(),
                path: &self.path,
            })),
            _ => Err(self.unexpected("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.visit_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Scalar(..) if !self.node.is_null() => self.wrap(visitor.visit_enum(Variant {
                key: self.node,
                value: None,
                path: self.path.clone(),
            })),
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                let path = self.path.key(key.as_str().unwrap_or_default());
                self.wrap(visitor.visit_enum(Variant {
                    key,
                    value: Some(value),
                    path,
                }))
            }
            Value::Map(entries) => {
                let keys: Vec<&str> = entries.iter().filter_map(|(k, _)| k.as_str()).collect();
                Err(Error::at(
                    self.node.pos,
                    self.path.clone(),
                    format!(
                        "expected exactly one of {}, found {}",
                        one_of(variants),
                        if keys.is_empty() {
                            "an empty mapping".to_owned()
                        } else {
                            format!("{} keys ({})", keys.len(), keys.join(", "))
                        }
                    ),
                ))
            }
            _ => Err(self.unexpected(&format!("exactly one of {}", one_of(variants)))),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            self.wrap(visitor.visit_unit())
        } else {
            Err(self.unexpected("null"))
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit_struct newtype_struct tuple tuple_struct
    }
}

/// `a`, `b` or `c` — for messages listing the allowed choices.
#[must_use]
pub fn one_of(choices: &[&str]) -> String {
    match choices {
        [] => String::new(),
        [one] => format!("\"{one}\""),
        [init @ .., last] => format!(
            "{} or \"{last}\"",
            init.iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

struct Items<'de, 'p> {
    iter: std::iter::Enumerate<std::slice::Iter<'de, Node>>,
    path: &'p Path,
}

impl<'de> SeqAccess<'de> for Items<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.iter.next() {
            None => Ok(None),
            Some((i, node)) => {
                let path = self.path.index(i);
                // Stamp here too: a type that validates after reading its string
                // (`Duration`) raises its error after the node's deserializer returned.
                seed.deserialize(NodeDe {
                    node,
                    path: path.clone(),
                })
                .map(Some)
                .map_err(|e| e.stamp(node, &path))
            }
        }
    }

    // The exact length: a `Vec` field is allocated once at its size, not grown to a
    // power of two that a long-running driver would keep with every policy.
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Entries<'de, 'p> {
    iter: std::slice::Iter<'de, (Node, Node)>,
    value: Option<(&'de Node, Path)>,
    path: &'p Path,
}

impl<'de> MapAccess<'de> for Entries<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        let path = self.path.key(key.as_str().unwrap_or_default());
        self.value = Some((value, path.clone()));
        // The key sits at the value's path so that "unknown field" points at the key.
        seed.deserialize(NodeDe { node: key, path }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("value requested before key"))?;
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        })
        .map_err(|e| e.stamp(node, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Variant<'de> {
    key: &'de Node,
    value: Option<&'de Node>,
    path: Path,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let v = seed.deserialize(NodeDe {
            node: self.key,
            path: self.path.clone(),
        })?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            Some(v) if v.is_null() => Ok(()),
            Some(v) => Err(Error::at(
                v.pos,
                self.path,
                format!(
                    "expected nothing after the variant name, found {}",
                    describe(v)
                ),
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        let node = self.value.unwrap_or(self.key);
        seed.deserialize(NodeDe {
            node,
            path: self.path.clone(),
        })
        .map_err(|e| e.stamp(node, &self.path))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        let node = self.value.unwrap_or(self.key);
        de::Deserializer::deserialize_seq(
            NodeDe {
                node,
                path: self.path,
            },
            visitor,
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Some(node) => NodeDe {
                node,
                path: self.path,
            }
            .visit_map(visitor),
            // A bare `dateSha` scalar means `dateSha: {}`.
            None => visitor.visit_map(de::value::MapDeserializer::new(
                std::iter::empty::<(String, String)>()
                    .map(|(k, v)| (k.into_deserializer(), v.into_deserializer())),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Outer {
        name: String,
        count: Option<u32>,
        inner: Vec<Inner>,
        #[serde(default)]
        mode: Mode,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        tag: String,
        #[serde(default)]
        on: bool,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(rename_all = "camelCase")]
    enum Mode {
        #[default]
        Fast,
        Slow {
            by: u32,
        },
    }

    fn parse_one(src: &str) -> Node {
        let mut docs = parse_documents(src).unwrap();
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    fn err(src: &str) -> (usize, usize, String, String) {
        let doc = parse_one(src);
        let e = from_node::<Outer>(&doc, &Path::root()).unwrap_err();
        let pos = e.pos.unwrap();
        (pos.line, pos.col, e.path.unwrap().to_string(), e.message)
    }

    #[test]
    fn reads_plain_and_quoted_scalars_as_written() {
        let doc = parse_one("name: 1.20\ninner:\n  - tag: '007'\n    on: true\n");
        let v: Outer = from_node(&doc, &Path::root()).unwrap();
        assert_eq!(v.name, "1.20");
        assert_eq!(v.inner[0].tag, "007");
        assert!(v.inner[0].on);
        assert_eq!(v.mode, Mode::Fast);
    }

    #[test]
    fn errors_point_at_the_innermost_node() {
        assert_eq!(
            err("name: a\ninner:\n  - tag: x\n    bogus: 1\n"),
            (
                4,
                5,
                "inner[0].bogus".into(),
                "unknown field `bogus`, expected `tag` or `on`".into()
            )
        );
        let (line, col, path, msg) = err("name: a\ncount: lots\ninner: []\n");
        assert_eq!((line, col, path.as_str()), (2, 8, "count"));
        assert!(msg.contains("\"lots\""), "{msg}");
        let (line, col, path, msg) = err("name: a\ninner:\n  - on: true\n");
        assert_eq!((line, col, path.as_str()), (3, 5, "inner[0]"));
        assert_eq!(msg, "missing field `tag`");
    }

    #[test]
    fn enums_are_externally_tagged_mappings_or_bare_names() {
        let doc = parse_one("name: a\ninner: []\nmode: {slow: {by: 3}}\n");
        let v: Outer = from_node(&doc, &Path::root()).unwrap();
        assert_eq!(v.mode, Mode::Slow { by: 3 });
        let (line, col, path, _) = err("name: a\ninner: []\nmode: {slow: {by: x}}\n");
        assert_eq!((line, col, path.as_str()), (3, 19, "mode.slow.by"));
        let (_, _, path, msg) = err("name: a\ninner: []\nmode: {fast: 1, slow: 2}\n");
        assert_eq!(path, "mode");
        assert_eq!(
            msg,
            "expected exactly one of \"fast\" or \"slow\", found 2 keys (fast, slow)"
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos, Some(Pos { line: 3, col: 1 }));
        assert_eq!(e.message, "duplicate key \"a\" (first at line 1)");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.is_some());
        assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
    }

    #[test]
    fn anchors_and_aliases_resolve_and_multi_documents_split() {
        let docs = parse_documents("---\nx: &a {tag: v1}\ny: *a\n---\n---\nz: 1\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].get("y").unwrap().get("tag").unwrap().as_str(),
            Some("v1")
        );
        assert_eq!(docs[0].get("y").unwrap().pos, Pos { line: 3, col: 4 });
    }

    /// `levels` levels of ten aliases each to the level below (issue 14, F1: 383 bytes
    /// of this shape took 1.36 GB).
    fn alias_bomb(levels: usize) -> String {
        use std::fmt::Write as _;
        let mut text = format!("a0: &a0 [{}]\n", ["lol"; 10].join(", "));
        for i in 1..=levels {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            let _ = writeln!(text, "a{i}: &a{i} [{refs}]");
        }
        text
    }

    #[test]
    fn an_alias_bomb_stops_at_the_expansion_limit_with_its_position() {
        for levels in [6, 7, 9] {
            let e = parse_documents(&alias_bomb(levels)).unwrap_err();
            assert_eq!(
                e.message,
                format!(
                    "the documents of this file expand to more than {MAX_NODES} nodes (the limit; an alias counts its whole target each time it is used)"
                )
            );
            // Level 4 (100,000 scalars) fits once, not twice: the copy kept of it for its
            // aliases crosses the limit, before any alias to it was expanded.
            assert_eq!(e.pos, Some(Pos { line: 5, col: 5 }), "{levels} levels");
        }
        // A few levels expand fine and resolve.
        let docs = parse_documents(&alias_bomb(3)).unwrap();
        let a3 = docs[0].get("a3").unwrap();
        let Value::Seq(items) = &a3.value else {
            panic!("a3 is a list")
        };
        assert_eq!(items.len(), 10);
    }

    #[test]
    fn aliases_are_limited_in_number_and_in_the_text_they_copy() {
        let many = format!("a: &a x\nb: [{}]\n", vec!["*a"; MAX_ALIASES + 1].join(", "));
        let e = parse_documents(&many).unwrap_err();
        assert_eq!(
            e.message,
            format!("more than {MAX_ALIASES} aliases in one file (the limit)")
        );
        assert_eq!(e.pos.map(|p| p.line), Some(2));
        let fits = format!("a: &a x\nb: [{}]\n", vec!["*a"; MAX_ALIASES].join(", "));
        assert!(parse_documents(&fits).is_ok());

        // 100 KiB of text copied 50 times is 5 MiB, over the text limit.
        let big = format!(
            "a: &a {}\nb: [{}]\n",
            "x".repeat(100 << 10),
            vec!["*a"; 50].join(", ")
        );
        let e = parse_documents(&big).unwrap_err();
        assert!(
            e.message
                .contains(&format!("more than {MAX_TEXT_BYTES} bytes of text")),
            "{}",
            e.message
        );

        // Anchors nested in anchors are charged for the copies kept of them.
        let nested = format!("a: {}x{}\n", "&n [".repeat(100), "]".repeat(100));
        assert!(parse_documents(&nested).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // Block sequences nest without brackets: `- - - x`.
        let deep = format!("{}x\n", "- ".repeat(150_000));
        let e = parse_documents(&deep).unwrap_err();
        assert_eq!(
            e.message,
            format!("nested more than {MAX_DEPTH} levels deep (the limit)")
        );
        assert_eq!(
            e.pos,
            Some(Pos {
                line: 1,
                col: 2 * MAX_DEPTH + 1
            })
        );
        let fits = format!("{}x\n", "- ".repeat(MAX_DEPTH));
        assert!(parse_documents(&fits).is_ok());
    }

    #[test]
    fn duplicate_keys_are_found_in_large_mappings() {
        // Issue 14, W3: this check was quadratic (160,000 keys took over a minute).
        use std::fmt::Write as _;
        let mut text = String::new();
        for i in 0..90_000 {
            let _ = writeln!(text, "k{i}: v");
        }
        text.push_str("k4: again\n");
        let e = parse_documents(&text).unwrap_err();
        assert_eq!(e.message, "duplicate key \"k4\" (first at line 5)");
        assert_eq!(
            e.pos,
            Some(Pos {
                line: 90_001,
                col: 1
            })
        );
        // The same keys in different mappings are no duplicates.
        assert!(parse_documents("a: {x: 1}\nb: {x: 2}\nc: [{x: 1}, {x: 2}]\n").is_ok());
    }

    #[test]
    fn paths_round_trip() {
        for p in ["spec", "spec.images[0].tags", "a[1][2].b"] {
            assert_eq!(Path::parse(p).to_string(), p);
        }
        let doc = parse_one("spec:\n  images:\n    - prefix: x\n");
        assert_eq!(
            doc.locate(&Path::parse("spec.images[0].prefix")).pos.line,
            3
        );
        assert_eq!(
            doc.locate(&Path::parse("spec.images[0].nope")).pos,
            Pos { line: 3, col: 7 }
        );
    }
}
