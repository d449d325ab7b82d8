//! The Dockerfile reader: the image of each `FROM` (after flags such as
//! `--platform=…`, before `AS name`) and of `COPY --from=…` when it names an image
//! rather than a stage.
//!
//! `$NAME` and `${NAME}` in an image are replaced by the default of an `ARG`
//! declared before the first `FROM` (the only ones a `FROM` sees) when that default
//! is a literal; the tag is then edited where it is written, in the `ARG` line. A tag
//! or digest put together from several places (`golang:${GO}-alpine`) cannot be
//! edited in place, and neither can a default that goes into two different images
//! (`golang:${GO}` and `golang:${GO}-alpine`: moving one would move the other to a
//! version nobody chose): a notice says so. Stage names, `scratch` and images whose
//! name comes from an `ARG` without a literal default are not references.

use std::collections::HashMap;
use std::ops::Range;

use super::{DigestSite, Found, RefKind, Scanned, Unwritable};
use crate::core::reference::ImageRef;

/// A word of an instruction: its text and where it is.
struct Word<'a> {
    text: &'a str,
    start: usize,
}

/// Splits `text` into instructions: the words of each logical line (a line ending
/// in `\` continues on the next; comment lines inside are skipped).
fn instructions(text: &str) -> Vec<Vec<Word<'_>>> {
    let mut out = Vec::new();
    let mut words: Vec<Word<'_>> = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start();
        if trimmed.starts_with('#') || (words.is_empty() && trimmed.is_empty()) {
            continue;
        }
        let (body, continues) = match content.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (content, false),
        };
        let mut i = 0;
        let bytes = body.as_bytes();
        while i < bytes.len() {
            if bytes[i].is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let w = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            words.push(Word {
                text: &body[w..i],
                start: start + w,
            });
        }
        if !continues && !words.is_empty() {
            out.push(std::mem::take(&mut words));
        }
    }
    if !words.is_empty() {
        out.push(words);
    }
    out
}

/// An `ARG` default: its value and, when written without quotes or with plain
/// quotes, the range of the value's bytes.
struct Default {
    value: String,
    range: Range<usize>,
}

/// Scans a Dockerfile into `out`.
pub(super) fn scan(text: &str, out: &mut Scanned) {
    let mut args: HashMap<&str, Default> = HashMap::new();
    // The images each `ARG` default went into.
    let mut uses: HashMap<String, Vec<String>> = HashMap::new();
    // What was found, with where its image is written.
    let mut found: Vec<(usize, Found)> = Vec::new();
    let mut stages: Vec<String> = Vec::new();
    let mut seen_from = false;
    for words in instructions(text) {
        let instruction = words[0].text.to_ascii_uppercase();
        match instruction.as_str() {
            "ARG" if !seen_from => {
                for w in &words[1..] {
                    if let Some((name, value)) = w.text.split_once('=') {
                        let skip = name.len() + 1;
                        let (value, offset) = match value.as_bytes().first() {
                            Some(q @ (b'"' | b'\'')) => match value[1..].strip_suffix(*q as char) {
                                Some(v) => (v, 1),
                                None => continue,
                            },
                            _ => (value, 0),
                        };
                        if value.contains(['$', '\\']) {
                            args.remove(name);
                            continue;
                        }
                        let start = w.start + skip + offset;
                        args.insert(
                            name,
                            Default {
                                value: value.to_owned(),
                                range: start..start + value.len(),
                            },
                        );
                    } else {
                        args.remove(w.text);
                    }
                }
            }
            "FROM" => {
                seen_from = true;
                let mut rest = words[1..].iter().skip_while(|w| w.text.starts_with("--"));
                let Some(image) = rest.next() else { continue };
                if let (Some(kw), Some(name)) = (rest.next(), rest.next())
                    && kw.text.eq_ignore_ascii_case("as")
                {
                    stages.push(name.text.to_ascii_lowercase());
                }
                found.extend(
                    reference(image.text, image.start, (&args, &mut uses), &stages, out)
                        .map(|f| (image.start, f)),
                );
            }
            "COPY" | "ADD" => {
                for w in &words[1..] {
                    if let Some(image) = w.text.strip_prefix("--from=") {
                        let start = w.start + "--from=".len();
                        found.extend(
                            reference(image, start, (&args, &mut uses), &stages, out)
                                .map(|f| (start, f)),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    // A default that two different images are made of (`golang:${GO}` and
    // `golang:${GO}-alpine`) cannot be edited for one of them: changing it would
    // move the other image too, to a version nobody chose.
    let shared: Vec<&Range<usize>> = uses
        .iter()
        .filter(|(_, images)| images.len() > 1)
        .filter_map(|(name, _)| args.get(name.as_str()).map(|d| &d.range))
        .collect();
    let inside = |r: &Option<Range<usize>>| {
        r.as_ref()
            .is_some_and(|r| shared.iter().any(|s| s.start <= r.start && r.end <= s.end))
    };
    for (written, f) in found {
        if inside(&f.tag_span) || inside(&f.digest_span) {
            out.unwritable.push(Unwritable {
                offset: written,
                reference: f.reference,
                why: "its version is an ARG default that other FROM lines use for other images; \
                      changing it would move them too",
            });
        } else {
            out.found.push(f);
        }
    }
}

/// The image `word` written at `start`, with `ARG` defaults put in.
fn reference(
    word: &str,
    start: usize,
    (args, uses): (&HashMap<&str, Default>, &mut HashMap<String, Vec<String>>),
    stages: &[String],
    out: &mut Scanned,
) -> Option<Found> {
    if !word.is_ascii() {
        return None;
    }
    // Where each byte of the expanded image comes from.
    let mut expanded = String::with_capacity(word.len());
    let mut origin: Vec<usize> = Vec::with_capacity(word.len());
    let mut names: Vec<&str> = Vec::new();
    let bytes = word.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let (name, end) = if bytes.get(i + 1) == Some(&b'{') {
                let close = word[i + 2..].find('}')?;
                (&word[i + 2..i + 2 + close], i + 2 + close + 1)
            } else {
                let len = word[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(word.len() - i - 1);
                (&word[i + 1..i + 1 + len], i + 1 + len)
            };
            let Some(default) = args.get(name) else {
                return None; // no literal default: not a reference we can read
            };
            expanded.push_str(&default.value);
            origin.extend(default.range.clone());
            names.push(name);
            i = end;
        } else {
            expanded.push(bytes[i] as char);
            origin.push(start + i);
            i += 1;
        }
    }
    if !expanded.contains(['/', ':', '@']) && (expanded == "scratch" || stages.contains(&expanded))
    {
        return None;
    }
    for name in names {
        let images = uses.entry(name.to_owned()).or_default();
        if !images.contains(&expanded) {
            images.push(expanded.clone());
        }
    }
    let reference = ImageRef::parse(&expanded)?;
    if reference.tag.is_none() && reference.digest.is_none() {
        return None;
    }
    // The tag, and `@digest` after it, must each be one run of file bytes, the
    // digest right after the tag.
    let run = |r: Range<usize>| origin[r].windows(2).all(|w| w[1] == w[0] + 1);
    let repo_len = reference.repository.len();
    let tag_range = reference
        .tag
        .as_ref()
        .map(|t| repo_len + 1..repo_len + 1 + t.len());
    let version_start = tag_range.as_ref().map_or(repo_len, |t| t.start);
    if !run(version_start..expanded.len()) {
        out.unwritable.push(Unwritable {
            offset: start,
            reference,
            why: "the version is put together from several ARG values and cannot be edited in place",
        });
        return None;
    }
    let at = |i: usize| origin[version_start] + (i - version_start);
    let tag_span = tag_range.map(|t| at(t.start)..at(t.end));
    let tag_end = tag_span.as_ref().map_or_else(|| at(repo_len), |t| t.end);
    let end = at(expanded.len());
    let digest_span = reference
        .digest
        .as_ref()
        .map(|d| tag_end + 1..tag_end + 1 + d.len());
    let span_start = if run(0..expanded.len()) {
        origin[0]
    } else {
        origin[version_start]
    };
    Some(Found {
        line: 0,
        column: 0,
        span: span_start..end,
        reference,
        kind: RefKind::Dockerfile,
        tag_span,
        digest_span,
        digest_site: DigestSite::Suffix(tag_end..end),
        tag_is_plain_field: false,
    })
}
