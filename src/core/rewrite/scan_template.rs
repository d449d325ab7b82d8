//! The line-level reader for YAML files that are templates (Helm charts' `{{ }}`
//! actions make them something other than YAML): each line is read as `key: value`
//! with its indentation, so references are found below a `{{- if }}` line as well as
//! above it.
//!
//! Found: the value of an image key (`image`, `*Image`, `*_image`), and the
//! `repository`/`tag` pair (with `registry`, `digest`) of a mapping under an image
//! key. Nothing inside a `{{ … }}` action is ever read or edited: a value that holds
//! an action (`image: "{{ .Values.image }}"`, `tag: {{ .Chart.AppVersion }}`) is not a
//! reference. Flow collections (`{…}`, `[…]`) and multi-line scalars are not read.

use std::ops::Range;

use super::scan_yaml::{
    Entry, EntryKind, Field, Key, classify, entry_reference, image_value, looks_like_image,
};
use super::{RefKind, Scanned};

/// The byte ranges of `{{ … }}` actions (an unclosed one runs to the end).
fn actions(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = text[at..].find("{{") {
        let start = at + open;
        let end = text[start + 2..]
            .find("}}")
            .map_or(text.len(), |i| start + 2 + i + 2);
        out.push(start..end);
        at = end;
    }
    out
}

/// An open mapping key (`key:` with nothing after it) and its column.
struct Open {
    column: usize,
    key: Key,
    /// The Helm entry being read under it, when it is an image key.
    entry: Option<Entry>,
}

/// Scans a template into `out`.
pub(super) fn scan(text: &str, out: &mut Scanned) {
    let actions = actions(text);
    let in_action = |r: &Range<usize>| {
        let i = actions.partition_point(|a| a.end <= r.start);
        actions.get(i).is_some_and(|a| a.start < r.end)
    };
    let mut open: Vec<Open> = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let Some((column, key, value)) = key_value(content) else {
            continue;
        };
        let key_range = start + column..start + column + key.len();
        if in_action(&key_range) {
            continue;
        }
        while open.last().is_some_and(|o| o.column >= column) {
            finish(text, open.pop(), out);
        }
        let key_text = unquote_key(key);
        let class = classify(key_text);
        let Some(value) = value else {
            open.push(Open {
                column,
                key: class,
                entry: matches!(class, Key::Image | Key::ImageLike)
                    .then(|| Entry::new(EntryKind::Helm)),
            });
            continue;
        };
        let value = start + value.start..start + value.end;
        let Some(field) = field(text, value) else {
            continue;
        };
        if field.inner.as_ref().is_none_or(&in_action) {
            continue;
        }
        if class == Key::Image || class == Key::ImageLike && looks_like_image(&field.value) {
            image_value(&field, RefKind::Template, out);
        } else if let Some(slot) = open
            .last_mut()
            .filter(|o| matches!(o.key, Key::Image | Key::ImageLike))
            .and_then(|o| o.entry.as_mut())
            .and_then(|e| e.slot(class))
        {
            *slot = Some(field);
        }
    }
    while let Some(o) = open.pop() {
        finish(text, Some(o), out);
    }
}

fn finish(text: &str, open: Option<Open>, out: &mut Scanned) {
    if let Some(entry) = open.and_then(|o| o.entry) {
        let before = out.found.len();
        entry_reference(text, &entry, out);
        for f in &mut out.found[before..] {
            f.kind = RefKind::Template;
        }
    }
}

/// A line's `key: value`: the key's column, the key as written, and the value's
/// range in the line (`None` when the line ends after the colon). Sequence dashes
/// before the key count as indentation. Comments, blank lines and lines that are no
/// `key:` line give `None`.
fn key_value(line: &str) -> Option<(usize, &str, Option<Range<usize>>)> {
    let bytes = line.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if bytes.get(i) == Some(&b'-') && matches!(bytes.get(i + 1), Some(b' ') | None) {
            i += 1;
            continue;
        }
        break;
    }
    let column = i;
    let rest = &line[column..];
    if rest.is_empty() || rest.starts_with(['#', '{', '[']) {
        return None;
    }
    let key_len = match rest.as_bytes()[0] {
        q @ (b'"' | b'\'') => rest[1..].find(q as char)? + 2,
        _ => rest
            .find(": ")
            .or_else(|| rest.strip_suffix(':').map(str::len))?,
    };
    let key = &rest[..key_len];
    let after = rest[key_len..].strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with([' ', '\t']))
        || key.contains(' ') && !key.starts_with(['"', '\''])
    {
        return None;
    }
    let value_start = column + key_len + 1 + (after.len() - after.trim_start().len());
    // The value ends at a comment (` #`) or the line end.
    let mut value = &line[value_start..];
    if !value.starts_with(['"', '\'']) {
        if let Some(i) = value.find(" #") {
            value = &value[..i];
        }
    } else if let Some(close) = value[1..].find(value.as_bytes()[0] as char) {
        value = &value[..close + 2];
    }
    let value = value.trim_end();
    if value.is_empty() {
        return Some((column, key, None));
    }
    Some((column, key, Some(value_start..value_start + value.len())))
}

fn unquote_key(key: &str) -> &str {
    key.strip_prefix(['"', '\''])
        .and_then(|k| k.strip_suffix(['"', '\'']))
        .unwrap_or(key)
}

/// A scalar value at `range` of `text`: plain, or quoted without escapes (only
/// those are edited in place).
fn field(text: &str, range: Range<usize>) -> Option<Field> {
    let raw = &text[range.clone()];
    if raw.starts_with(['{', '[', '|', '>', '&', '*', '!']) {
        return None;
    }
    let (value, inner, plain) = match raw.as_bytes()[0] {
        q @ (b'"' | b'\'') => {
            let body = raw[1..].strip_suffix(q as char)?;
            let escaped = if q == b'"' {
                body.contains('\\')
            } else {
                body.contains('\'')
            };
            let inner = (!escaped).then(|| range.start + 1..range.end - 1);
            (body.to_owned(), inner, false)
        }
        _ => (raw.to_owned(), Some(range.clone()), true),
    };
    Some(Field {
        value,
        raw: range,
        inner,
        plain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        for (line, want) in [
            ("image: a:1", Some((0, "image", Some("a:1")))),
            (
                "  - image: \"a:1\" # c",
                Some((4, "image", Some("\"a:1\""))),
            ),
            ("    image:", Some((4, "image", None))),
            ("  'tag': v1", Some((2, "'tag'", Some("v1")))),
            ("# image: a:1", None),
            ("{{- if .Values.x }}", None),
            ("plain text", None),
            ("url: http://x", Some((0, "url", Some("http://x")))),
            ("a b: c", None),
        ] {
            let got = key_value(line).map(|(c, k, v)| (c, k, v.map(|r| &line[r])));
            assert_eq!(got, want, "{line}");
        }
    }
}
