//! Text mode: references anywhere, as Prow's autobumper finds them.

use std::ops::Range;

use regex::Regex;

use super::{Found, RefKind};
use crate::core::reference::ImageRef;

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
}

/// Finds references in `text`. With `needles`, only tokens that contain a needle
/// are looked at (the fast path when the watched images are known).
pub(super) fn scan(text: &str, needles: Option<&Regex>, out: &mut Vec<Found>) {
    match needles {
        None => scan_range(text, 0..text.len(), RefKind::Text, out),
        Some(needles) => {
            let bytes = text.as_bytes();
            let mut done = 0;
            for m in needles.find_iter(text) {
                if m.start() < done {
                    continue;
                }
                let mut start = m.start();
                while start > 0 && is_token_byte(bytes[start - 1]) {
                    start -= 1;
                }
                let mut end = m.end();
                while end < bytes.len() && is_token_byte(bytes[end]) {
                    end += 1;
                }
                token(text, start..end, RefKind::Text, out);
                done = end;
            }
        }
    }
}

/// Finds references in `range` of `text`, labelled `kind`.
pub(super) fn scan_range(text: &str, range: Range<usize>, kind: RefKind, out: &mut Vec<Found>) {
    let bytes = text.as_bytes();
    let mut i = range.start;
    while i < range.end {
        if !is_token_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < range.end && is_token_byte(bytes[i]) {
            i += 1;
        }
        // A token continuing before the range start is not delimited.
        if start == range.start && start > 0 && is_token_byte(bytes[start - 1]) {
            continue;
        }
        if i == range.end && i < bytes.len() && is_token_byte(bytes[i]) {
            continue;
        }
        token(text, start..i, kind, out);
    }
}

fn token(text: &str, range: Range<usize>, kind: RefKind, out: &mut Vec<Found>) {
    let t = text[range.clone()].trim_end_matches(['.', ':']);
    // Only a reference with a version is one in free text (`a:b` in prose is too
    // common to care about the rest); cheap checks before the parse.
    if !(t.contains(':') || t.contains('@')) || t.contains("://") {
        return;
    }
    if let Some(reference) = ImageRef::parse(t)
        && (reference.tag.is_some() || reference.digest.is_some())
    {
        out.push(Found::inline(range.start, reference, kind));
    }
}
