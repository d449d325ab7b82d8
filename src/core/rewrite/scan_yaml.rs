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
pub(super) enum Key {
    Image,
    /// A key ending in `Image`, `_image` or `-image`: an image only when its value
    /// looks like one (a registry path, a tag or a digest), not `defaultImage: app`.
    ImageLike,
    Parameters,
    Value,
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

/// Whether a key names an image: `image`, or a key ending in `Image`, `_image` or
/// `-image` (`thanosImage`, `mlmdImage`, `node_image`, Knative's
/// `queue-sidecar-image`).
pub(super) fn is_image_key(key: &str) -> bool {
    key == "image"
        || key.len() > 5 && key.ends_with("Image")
        || key.len() > 6 && (key.ends_with("_image") || key.ends_with("-image"))
}

/// Whether a value under a key merely ending in `Image` names an image: it has a
/// registry path, a tag or a digest.
pub(super) fn looks_like_image(value: &str) -> bool {
    value.contains(['/', ':', '@'])
}

pub(super) fn classify(key: &str) -> Key {
    match key {
        "image" => Key::Image,
        k if is_image_key(k) => Key::ImageLike,
        "parameters" => Key::Parameters,
        "value" => Key::Value,
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
pub(super) struct Field {
    pub(super) value: String,
    /// The scalar's text (quotes, anchor and tag included).
    pub(super) raw: Range<usize>,
    /// The value's bytes, when they are exactly the value (editable in place).
    pub(super) inner: Option<Range<usize>>,
    pub(super) plain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryKind {
    Helm,
    Kustomize,
    /// An Argo CD `helm.parameters` item: `name` and `value`.
    Parameter,
}

/// The fields of a mapping that may be a Helm `image:` or a kustomize entry.
#[derive(Debug)]
pub(super) struct Entry {
    kind: EntryKind,
    registry: Option<Field>,
    repository: Option<Field>,
    tag: Option<Field>,
    digest: Option<Field>,
    name: Option<Field>,
    new_name: Option<Field>,
    new_tag: Option<Field>,
    value: Option<Field>,
}

impl Entry {
    pub(super) fn new(kind: EntryKind) -> Self {
        Self {
            kind,
            registry: None,
            repository: None,
            tag: None,
            digest: None,
            name: None,
            new_name: None,
            new_tag: None,
            value: None,
        }
    }

    pub(super) fn slot(&mut self, key: Key) -> Option<&mut Option<Field>> {
        match (self.kind, key) {
            (EntryKind::Helm, Key::Registry) => Some(&mut self.registry),
            (EntryKind::Helm, Key::Repository) => Some(&mut self.repository),
            (EntryKind::Helm, Key::Tag) => Some(&mut self.tag),
            (EntryKind::Kustomize | EntryKind::Parameter, Key::Name) => Some(&mut self.name),
            (EntryKind::Kustomize, Key::NewName) => Some(&mut self.new_name),
            (EntryKind::Kustomize, Key::NewTag) => Some(&mut self.new_tag),
            (EntryKind::Parameter, Key::Value) => Some(&mut self.value),
            (EntryKind::Helm | EntryKind::Kustomize, Key::Digest) => Some(&mut self.digest),
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
    /// A `parameters:` sequence: its `{name, value}` items.
    parameters: Vec<(Field, Field)>,
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

/// How deep YAML inside block scalars is read (a `ConfigMap` holding an Argo CD
/// Application holding Helm values is depth 2).
const MAX_NESTING: usize = 4;

/// Scans `text` as YAML into `out`.
pub(super) fn scan(text: &str, out: &mut Scanned) {
    scan_at(text, out, 0);
}

/// Scans YAML at `depth` (0: a file; deeper: the text of a literal block scalar,
/// where comments are the embedded document's and markers do not apply).
fn scan_at(text: &str, out: &mut Scanned, depth: usize) {
    let mut markers = if depth == 0 {
        find_markers(text)
    } else {
        Vec::new()
    };
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
                if !ignored && style == ScalarStyle::Literal && depth < MAX_NESTING {
                    nested(text, &raw, &value, out, depth + 1);
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
                        Pos::Value(Key::Image) => image_value(&field, RefKind::ImageValue, out),
                        Pos::Value(Key::ImageLike) if looks_like_image(&field.value) => {
                            image_value(&field, RefKind::ImageValue, out);
                        }
                        Pos::Item(Key::Images) => images_item(&field, out),
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
            Event::MappingStart(..) => opened(&mut stack, true),
            Event::SequenceStart(..) => opened(&mut stack, false),
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(frame) = stack.pop() {
                    closed(text, frame, &mut stack, out);
                }
                completed(&mut stack, None);
            }
            _ => {}
        }
    }
    marked(text, &markers, &marked_values, out);
}

/// A collection starts: a frame for it, with an entry when it may be one.
fn opened(stack: &mut Vec<Frame>, mapping: bool) {
    let (pos, ignored) = position(stack);
    let entry = match pos {
        _ if ignored || !mapping => None,
        Pos::Value(Key::Image | Key::ImageLike) => Some(Box::new(Entry::new(EntryKind::Helm))),
        Pos::Item(Key::Images) => Some(Box::new(Entry::new(EntryKind::Kustomize))),
        Pos::Item(Key::Parameters) => Some(Box::new(Entry::new(EntryKind::Parameter))),
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
        parameters: Vec::new(),
    });
}

/// A collection ended: its entry, if any, is complete; a `parameters:` item goes to
/// its sequence, a `parameters:` sequence is read.
fn closed(text: &str, frame: Frame, stack: &mut [Frame], out: &mut Scanned) {
    if let Some(entry) = frame.entry {
        if entry.kind == EntryKind::Parameter {
            if let (Some(name), Some(value), Some(parent)) =
                (entry.name, entry.value, stack.last_mut())
            {
                parent.parameters.push((name, value));
            }
        } else {
            entry_reference(text, &entry, out);
        }
    }
    if !frame.parameters.is_empty() {
        parameters(text, frame.parameters, out);
    }
}

/// The text of a literal block scalar (`|`, `|-`, `|+`) whose raw range is `raw`,
/// read as YAML: a `ConfigMap`'s embedded file, Argo CD's `helm.values: |`. Its lines
/// are the scalar's lines less their indentation, so every position in it is a
/// position in the file shifted by its line's indentation; what is found there is
/// edited in place (the tag bytes only). Text that is not YAML yields what was read
/// before the error, silently: it is a value, not a file.
fn nested(text: &str, raw: &Range<usize>, value: &str, out: &mut Scanned, depth: usize) {
    // Only text that may hold an image reference under a key is worth a parse.
    if !value.contains(':') || !value.contains('\n') {
        return;
    }
    // saphyr's range of a block scalar starts at its first content character.
    let start = text[..raw.start].rfind('\n').map_or(0, |i| i + 1);
    let indent = raw.start - start;
    if indent == 0 || !text[start..raw.start].bytes().all(|b| b == b' ') {
        return;
    }
    // An explicit indentation indicator (`|2`) may make leading spaces content:
    // such scalars are left alone.
    let header = text[..start].trim_end();
    let header = &header[header.rfind('\n').map_or(0, |i| i + 1)..];
    let indicator = header.rfind('|').map_or("", |i| &header[i + 1..]);
    if indicator
        .split('#')
        .next()
        .is_some_and(|h| h.bytes().any(|b| b.is_ascii_digit()))
    {
        return;
    }
    let region = &text[start..raw.end];
    // The embedded text, and for each of its lines (inner start, file start).
    let mut inner = String::with_capacity(region.len());
    let mut lines: Vec<(usize, usize)> = Vec::new();
    let mut at = start;
    for line in region.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        if content.len() - content.trim_start_matches(' ').len() >= indent {
            lines.push((inner.len(), at + indent));
            inner.push_str(&line[indent..]);
        } else if content.trim().is_empty() {
            lines.push((inner.len(), at + content.len()));
            inner.push_str(&line[content.len()..]);
        } else {
            break; // less indented: the scalar ended
        }
        at += line.len();
    }
    let mut sub = Scanned::default();
    scan_at(&inner, &mut sub, depth);
    let map = |p: usize| {
        let i = lines.partition_point(|(s, _)| *s <= p) - 1;
        lines[i].1 + (p - lines[i].0)
    };
    let range = |r: &Range<usize>| map(r.start)..map(r.start) + r.len();
    for mut f in sub.found {
        f.span = map(f.span.start)..map(f.span.end.max(1) - 1) + usize::from(f.span.end > 0);
        f.tag_span = f.tag_span.as_ref().map(range);
        f.digest_span = f.digest_span.as_ref().map(range);
        f.digest_site = match f.digest_site {
            DigestSite::Suffix(r) => DigestSite::Suffix(range(&r)),
            DigestSite::Field { span, plain } => DigestSite::Field {
                span: range(&span),
                plain,
            },
            DigestSite::None => DigestSite::None,
        };
        out.found.push(f);
    }
    for mut u in sub.unwritable {
        u.offset = map(u.offset);
        out.unwritable.push(u);
    }
}

/// An `image:` value (or an `images:` item, or a parameter's value).
pub(super) fn image_value(field: &Field, kind: RefKind, out: &mut Scanned) {
    // `useDefaultImage: true`, `image: 1`: a boolean or a number, not a name.
    if field.plain && super::yaml_reads_as_non_string(&field.value) {
        return;
    }
    let Some(reference) = ImageRef::parse(&field.value) else {
        return;
    };
    match &field.inner {
        Some(r) => out.found.push(Found::inline(r.start, reference, kind)),
        None => out.unwritable.push(Unwritable {
            offset: field.raw.start,
            reference,
            why: "the value is a block, multi-line or escaped scalar and cannot be edited in place",
        }),
    }
}

/// A string item of an `images:` list: a reference, or Argo CD's (and `kustomize
/// edit set image`'s) alias form `name=reference`, where the reference after the
/// `=` is what is edited.
fn images_item(field: &Field, out: &mut Scanned) {
    let Some((alias, reference)) = field.value.split_once('=') else {
        image_value(field, RefKind::ImageValue, out);
        return;
    };
    if alias.is_empty() {
        return;
    }
    let skip = alias.len() + 1;
    let part = Field {
        value: reference.to_owned(),
        raw: field.raw.clone(),
        inner: field.inner.as_ref().map(|r| r.start + skip..r.end),
        plain: field.plain,
    };
    image_value(&part, RefKind::ImageValue, out);
}

/// Argo CD `helm.parameters` items (`{name: image.tag, value: v1}`): a parameter
/// named like an image key (`image`, `web.image`, `thanosImage`) holds a reference;
/// parameters `P.repository` and `P.tag` (with `P.registry`, `P.digest`) of one
/// prefix `P` form a Helm image entry.
fn parameters(text: &str, params: Vec<(Field, Field)>, out: &mut Scanned) {
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for (name, value) in params {
        let (prefix, last) = match name.value.rsplit_once('.') {
            Some((p, l)) => (p, l),
            None => ("", name.value.as_str()),
        };
        if last == "image" || is_image_key(last) && looks_like_image(&value.value) {
            image_value(&value, RefKind::HelmParameter, out);
            continue;
        }
        let key = classify(last);
        if !matches!(
            key,
            Key::Registry | Key::Repository | Key::Tag | Key::Digest
        ) {
            continue;
        }
        let at = if let Some(i) = entries.iter().position(|(p, _)| p == prefix) {
            i
        } else {
            entries.push((prefix.to_owned(), Entry::new(EntryKind::Helm)));
            entries.len() - 1
        };
        if let Some(slot) = entries[at].1.slot(key) {
            *slot = Some(value);
        }
    }
    for (_, entry) in entries {
        let before = out.found.len();
        entry_reference(text, &entry, out);
        for f in &mut out.found[before..] {
            f.kind = RefKind::HelmParameter;
        }
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
        EntryKind::Parameter => return None,
    };
    match ImageRef::parse(&repository) {
        Some(r) if r.tag.is_none() && r.digest.is_none() => Some((repository, tag)),
        _ => None,
    }
}

/// A Helm `image:` mapping or a kustomize `images:` entry, once all its keys are read.
pub(super) fn entry_reference(text: &str, entry: &Entry, out: &mut Scanned) {
    let kind = match entry.kind {
        EntryKind::Helm => RefKind::HelmValues,
        EntryKind::Kustomize => RefKind::Kustomize,
        EntryKind::Parameter => return,
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
