//! Structured mode: references in YAML values, read from saphyr's event stream with
//! positions (no tree is built).

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use saphyr_parser::{Event, Parser, ScalarStyle};

use super::{DigestSite, Found, RefKind, Scanned, Unwritable, scan_text};
use crate::core::reference::ImageRef;

/// The keys that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Image,
    Images,
    Registry,
    Repository,
    Tag,
    Digest,
    Name,
    NewName,
    NewTag,
    Other,
}

fn classify(key: &str) -> Key {
    match key {
        "image" => Key::Image,
        "images" => Key::Images,
        "registry" => Key::Registry,
        "repository" => Key::Repository,
        "tag" => Key::Tag,
        "digest" => Key::Digest,
        "name" => Key::Name,
        "newName" => Key::NewName,
        "newTag" => Key::NewTag,
        _ => Key::Other,
    }
}

/// A scalar value kept for a Helm or kustomize entry.
#[derive(Debug, Clone)]
struct Field {
    value: String,
    /// The scalar's text (quotes, anchor and tag included).
    raw: Range<usize>,
    /// The value's bytes, when they are exactly the value (editable in place).
    inner: Option<Range<usize>>,
    plain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Helm,
    Kustomize,
}

/// The fields of a mapping that may be a Helm `image:` or a kustomize entry.
#[derive(Debug)]
struct Entry {
    kind: EntryKind,
    registry: Option<Field>,
    repository: Option<Field>,
    tag: Option<Field>,
    digest: Option<Field>,
    name: Option<Field>,
    new_name: Option<Field>,
    new_tag: Option<Field>,
}

impl Entry {
    fn new(kind: EntryKind) -> Self {
        Self {
            kind,
            registry: None,
            repository: None,
            tag: None,
            digest: None,
            name: None,
            new_name: None,
            new_tag: None,
        }
    }

    fn slot(&mut self, key: Key) -> Option<&mut Option<Field>> {
        match (self.kind, key) {
            (EntryKind::Helm, Key::Registry) => Some(&mut self.registry),
            (EntryKind::Helm, Key::Repository) => Some(&mut self.repository),
            (EntryKind::Helm, Key::Tag) => Some(&mut self.tag),
            (EntryKind::Kustomize, Key::Name) => Some(&mut self.name),
            (EntryKind::Kustomize, Key::NewName) => Some(&mut self.new_name),
            (EntryKind::Kustomize, Key::NewTag) => Some(&mut self.new_tag),
            (_, Key::Digest) => Some(&mut self.digest),
            _ => None,
        }
    }
}

/// One open collection.
#[derive(Debug)]
struct Frame {
    mapping: bool,
    /// Mapping: the next node is a key.
    expect_key: bool,
    /// Mapping: the key of the value being read.
    key: Key,
    /// The key this collection is the value of (`Other` for items, keys, the root).
    parent_key: Key,
    /// Inside a complex key: nothing here is a reference.
    ignored: bool,
    entry: Option<Box<Entry>>,
}

/// What the next node is to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    Root,
    Key,
    Value(Key),
    /// An item of a sequence that is the value of this key.
    Item(Key),
}

fn position(stack: &[Frame]) -> (Pos, bool) {
    match stack.last() {
        None => (Pos::Root, false),
        Some(f) if f.mapping && f.expect_key => (Pos::Key, f.ignored),
        Some(f) if f.mapping => (Pos::Value(f.key), f.ignored),
        Some(f) => (Pos::Item(f.parent_key), f.ignored),
    }
}

/// A node ended: advance the parent mapping between key and value.
fn completed(stack: &mut [Frame], key: Option<Key>) {
    if let Some(f) = stack.last_mut()
        && f.mapping
    {
        if f.expect_key {
            f.key = key.unwrap_or(Key::Other);
            f.expect_key = false;
        } else {
            f.key = Key::Other;
            f.expect_key = true;
        }
    }
}

/// Marker comments: `# autobump: <policy>`, a `#` at a line start or after a blank.
static MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)(?:^|[ \t])(#[ \t]*autobump:[ \t]*\S)").expect("valid regex")
});

/// A marker comment: where its line starts and where its `#` is.
#[derive(Debug, Clone)]
struct Marker {
    line_start: usize,
    hash: usize,
    valid: bool,
}

fn find_markers(text: &str) -> Vec<Marker> {
    if !text.contains("autobump:") {
        return Vec::new();
    }
    MARKER
        .captures_iter(text)
        .filter_map(|c| c.get(1))
        .map(|m| Marker {
            line_start: text[..m.start()].rfind('\n').map_or(0, |i| i + 1),
            hash: m.start(),
            valid: true,
        })
        .collect()
}

/// Character index → byte offset, for indices that mostly increase.
struct CharToByte<'a> {
    text: &'a str,
    ascii: bool,
    chars: usize,
    bytes: usize,
}

impl<'a> CharToByte<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            ascii: text.is_ascii(),
            chars: 0,
            bytes: 0,
        }
    }

    fn byte(&mut self, index: usize) -> usize {
        if self.ascii {
            return index.min(self.text.len());
        }
        if index < self.chars {
            self.chars = 0;
            self.bytes = 0;
        }
        for c in self.text[self.bytes..].chars() {
            if self.chars == index {
                break;
            }
            self.chars += 1;
            self.bytes += c.len_utf8();
        }
        self.bytes
    }
}

/// The real extent of a quoted scalar that starts in `raw`: saphyr's span of a
/// quoted scalar can run on over blanks and a trailing comment.
fn quoted_end(text: &str, raw: &Range<usize>, quote: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let open = raw.start + text[raw.clone()].bytes().position(|b| b == quote)?;
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b if b == quote => {
                if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The scalar's true text range (see [`quoted_end`]).
fn scalar_range(text: &str, raw: Range<usize>, style: ScalarStyle) -> Range<usize> {
    let quote = match style {
        ScalarStyle::SingleQuoted => b'\'',
        ScalarStyle::DoubleQuoted => b'"',
        _ => return raw,
    };
    match quoted_end(text, &raw, quote) {
        Some(end) if end <= raw.end => raw.start..end,
        _ => raw,
    }
}

/// The byte range of a scalar's value inside its text `raw`, when the bytes there are
/// exactly the value (no escapes, folding or block indicators).
fn inner(text: &str, raw: &Range<usize>, value: &str, style: ScalarStyle) -> Option<Range<usize>> {
    let source = &text[raw.clone()];
    if value.is_empty() || value.contains(['\n', '\r']) {
        return None;
    }
    let (quote, body) = match style {
        ScalarStyle::Plain => (None, source),
        ScalarStyle::SingleQuoted => (Some('\''), source.strip_suffix('\'')?),
        ScalarStyle::DoubleQuoted => (Some('"'), source.strip_suffix('"')?),
        _ => return None,
    };
    let before = body.strip_suffix(value)?;
    let ok = match quote {
        Some(q) => before.ends_with(q),
        // Whatever precedes a plain value is an anchor or a tag, then a blank.
        None => before.is_empty() || before.ends_with([' ', '\t']),
    };
    ok.then(|| {
        let start = raw.start + before.len();
        start..start + value.len()
    })
}

/// Scans `text` as YAML into `out`.
pub(super) fn scan(text: &str, out: &mut Scanned) {
    let mut markers = find_markers(text);
    // Value scalars that may hold marked references: their editable ranges.
    let mut marked_values: Vec<Range<usize>> = Vec::new();
    let mut conv = CharToByte::new(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(e) => e,
            Err(e) => {
                out.error = Some((conv.byte(e.marker().index()), e.info().to_owned()));
                break;
            }
        };
        match event {
            Event::DocumentStart(_) => stack.clear(),
            Event::Scalar(value, style, _, _) => {
                let raw = scalar_range(
                    text,
                    conv.byte(span.start.index())..conv.byte(span.end.index()),
                    style,
                );
                let (pos, ignored) = position(&stack);
                if !markers.is_empty() {
                    for m in &mut markers {
                        if raw.start <= m.hash && m.hash < raw.end {
                            m.valid = false;
                        }
                    }
                }
                if pos == Pos::Key {
                    completed(&mut stack, Some(classify(&value)));
                    continue;
                }
                if !ignored {
                    let field = Field {
                        inner: inner(text, &raw, &value, style),
                        value: value.into_owned(),
                        raw,
                        plain: style == ScalarStyle::Plain,
                    };
                    if !markers.is_empty()
                        && let Some(r) = &field.inner
                    {
                        marked_values.push(r.clone());
                    }
                    match pos {
                        Pos::Value(Key::Image) | Pos::Item(Key::Images) => {
                            image_value(&field, out);
                        }
                        Pos::Value(key) => {
                            if let Some(slot) = stack
                                .last_mut()
                                .and_then(|f| f.entry.as_mut())
                                .and_then(|e| e.slot(key))
                            {
                                *slot = Some(field);
                            }
                        }
                        _ => {}
                    }
                }
                completed(&mut stack, None);
            }
            Event::Alias(_) => completed(&mut stack, None),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let mapping = matches!(event, Event::MappingStart(..));
                let (pos, ignored) = position(&stack);
                let entry = match pos {
                    _ if ignored || !mapping => None,
                    Pos::Value(Key::Image) => Some(Box::new(Entry::new(EntryKind::Helm))),
                    Pos::Item(Key::Images) => Some(Box::new(Entry::new(EntryKind::Kustomize))),
                    _ => None,
                };
                stack.push(Frame {
                    mapping,
                    expect_key: true,
                    key: Key::Other,
                    parent_key: match pos {
                        Pos::Value(k) => k,
                        _ => Key::Other,
                    },
                    ignored: ignored || pos == Pos::Key,
                    entry,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(frame) = stack.pop()
                    && let Some(entry) = frame.entry
                {
                    entry_reference(text, &entry, out);
                }
                completed(&mut stack, None);
            }
            _ => {}
        }
    }
    marked(text, &markers, &marked_values, out);
}

/// An `image:` value (or an `images:` item).
fn image_value(field: &Field, out: &mut Scanned) {
    let Some(reference) = ImageRef::parse(&field.value) else {
        return;
    };
    match &field.inner {
        Some(r) => out
            .found
            .push(Found::inline(r.start, reference, RefKind::ImageValue)),
        None => out.unwritable.push(Unwritable {
            offset: field.raw.start,
            reference,
            why: "the value is a block, multi-line or escaped scalar and cannot be edited in place",
        }),
    }
}

/// The repository (validated) and the tag field of an entry.
fn entry_parts(entry: &Entry) -> Option<(String, &Option<Field>)> {
    let (repository, tag) = match entry.kind {
        EntryKind::Helm => {
            let repo = entry.repository.as_ref()?;
            let repository = match entry.registry.as_ref().map(|r| r.value.as_str()) {
                Some(registry) if !registry.is_empty() => {
                    format!("{}/{}", registry.trim_end_matches('/'), repo.value)
                }
                _ => repo.value.clone(),
            };
            (repository, &entry.tag)
        }
        EntryKind::Kustomize => {
            let name = entry.new_name.as_ref().or(entry.name.as_ref())?;
            (name.value.clone(), &entry.new_tag)
        }
    };
    match ImageRef::parse(&repository) {
        Some(r) if r.tag.is_none() && r.digest.is_none() => Some((repository, tag)),
        _ => None,
    }
}

/// A Helm `image:` mapping or a kustomize `images:` entry, once all its keys are read.
fn entry_reference(text: &str, entry: &Entry, out: &mut Scanned) {
    let kind = match entry.kind {
        EntryKind::Helm => RefKind::HelmValues,
        EntryKind::Kustomize => RefKind::Kustomize,
    };
    let Some((repository, tag)) = entry_parts(entry) else {
        return;
    };
    let tag = tag.as_ref().filter(|t| !t.value.is_empty());
    // The digest field: "", null and ~ mean none.
    let digest_field = entry.digest.as_ref().filter(|d| {
        !(d.value.is_empty()
            || d.plain && matches!(d.value.as_str(), "null" | "Null" | "NULL" | "~"))
    });
    let mut text_ref = repository.clone();
    if let Some(t) = tag {
        text_ref.push(':');
        text_ref.push_str(&t.value);
    }
    if let Some(d) = digest_field {
        if tag.is_some_and(|t| t.value.contains('@')) {
            return; // a digest in two places: leave it to a human
        }
        text_ref.push('@');
        text_ref.push_str(&d.value);
    }
    let Some(reference) = ImageRef::parse(&text_ref) else {
        return;
    };
    let unwritable = |why| Unwritable {
        offset: tag.map_or(0, |t| t.raw.start),
        reference: reference.clone(),
        why,
    };
    let involved = [
        entry.registry.as_ref(),
        entry.repository.as_ref(),
        entry.name.as_ref(),
        entry.new_name.as_ref(),
        tag,
        digest_field,
    ];
    let start = involved.iter().flatten().map(|f| f.raw.start).min();
    let end = involved.iter().flatten().map(|f| f.raw.end).max();
    let (Some(start), Some(end)) = (start, end) else {
        return;
    };

    let mut found = Found {
        line: 0,
        column: 0,
        span: start..end,
        reference: reference.clone(),
        kind,
        tag_span: None,
        digest_span: None,
        digest_site: DigestSite::None,
        tag_is_plain_field: false,
    };
    if let Some(t) = tag {
        let Some(r) = &t.inner else {
            out.unwritable.push(unwritable(
                "the tag is a block, multi-line or escaped scalar and cannot be edited in place",
            ));
            return;
        };
        // The tag value may carry `@digest` itself.
        let tag_text = reference.tag.as_deref().unwrap_or_default();
        found.tag_span = Some(r.start..r.start + tag_text.len());
        if t.value.contains('@') {
            found.digest_span = Some(r.start + tag_text.len() + 1..r.end);
            found.digest_site = DigestSite::Suffix(r.start + tag_text.len()..r.end);
        } else {
            found.tag_is_plain_field = t.plain;
        }
    }
    if let Some(field) = &entry.digest
        && !tag.is_some_and(|t| t.value.contains('@'))
    {
        if let Some((span, site)) = digest_field_site(field, digest_field.is_some()) {
            found.digest_span = span;
            found.digest_site = site;
        } else {
            out.unwritable.push(unwritable(
                "the digest is a block, multi-line or escaped scalar and cannot be edited in place",
            ));
            return;
        }
    }
    debug_assert!(found.span.end <= text.len());
    out.found.push(found);
}

/// How a `digest:` field is edited (`None`: it cannot be), and the span of the
/// digest in it when it holds one.
fn digest_field_site(
    field: &Field,
    holds_digest: bool,
) -> Option<(Option<Range<usize>>, DigestSite)> {
    match (&field.inner, holds_digest) {
        (Some(r), true) => Some((
            Some(r.clone()),
            DigestSite::Field {
                span: r.clone(),
                plain: field.plain,
            },
        )),
        // An empty quoted value: write inside the quotes.
        (None, false) if !field.plain && field.value.is_empty() => {
            let at = field.raw.end - 1;
            Some((
                None,
                DigestSite::Field {
                    span: at..at,
                    plain: false,
                },
            ))
        }
        // `null` or `~`: replace the word (an empty plain value has no room).
        (Some(r), false) => Some((
            None,
            DigestSite::Field {
                span: r.clone(),
                plain: true,
            },
        )),
        _ => None,
    }
}

/// References in values on marked lines that no other rule found.
fn marked(text: &str, markers: &[Marker], values: &[Range<usize>], out: &mut Scanned) {
    let mut found = Vec::new();
    for m in markers.iter().filter(|m| m.valid) {
        for v in values {
            if v.start >= m.line_start && v.end <= m.hash {
                scan_text::scan_range(text, v.clone(), RefKind::Marker, &mut found);
            }
        }
    }
    for f in found {
        let overlaps = out
            .found
            .iter()
            .any(|o| o.span.start < f.span.end && f.span.start < o.span.end);
        if !overlaps {
            out.found.push(f);
        }
    }
}
