//! Rewriting image references in manifests (pure: text in, text and a list of
//! changes out; no I/O — [`crate::files`] reads and writes the tree).
//!
//! # What is a reference
//!
//! **Structured mode** (the default) reads each file with the reader its name calls
//! for ([`Reader::for_file`]): YAML (`*.yaml`, `*.yml`, `*.json`), Dockerfile, or, for
//! anything else, the text reader of text mode below. In YAML it finds:
//! * [`RefKind::ImageValue`]: the value of an image key — `image`, or any key ending
//!   in `Image`, `_image` or `-image` (`thanosImage`, `mlmdImage`, `node_image`) when
//!   the value has a registry path, a tag or a digest — at any depth,
//!   in any document and any resource (`containers`, `initContainers`, `CronJob`s,
//!   CRDs), in block or flow style, with plain, single- or double-quoted values and
//!   quoted keys; and the string items of any `images:` list (Argo CD's
//!   `kustomize.images`), also in the alias form `name=reference`;
//! * [`RefKind::Kustomize`]: the entries of a kustomize `images:` list: the image is
//!   `newName` (else `name`), its tag lives in `newTag` and its digest in `digest`,
//!   and they are edited there;
//! * [`RefKind::HelmValues`]: a mapping under an image key with `repository` and
//!   `tag` (plus optional `registry`, prepended, and `digest`);
//! * [`RefKind::HelmParameter`]: Argo CD `helm.parameters` items: one named like an
//!   image key (`image`, `web.image`) holds a reference; `P.repository` and `P.tag`
//!   (with `P.registry`, `P.digest`) of one prefix `P` form a Helm entry;
//! * [`RefKind::Marker`]: references inside the values on a line that ends in a
//!   comment `# autobump: <policy>` (e.g. `- --image=gcr.io/x/y:v1 # autobump: prow`);
//!   the marker opts the line in, whatever the key.
//!
//! The text of a literal block scalar (`|`, `|-`, `|+`: a `ConfigMap`'s embedded
//! file, Argo CD's `helm.values: |`, a chart's `katibConfig: |`) is read as YAML too,
//! up to four levels deep, and what it holds is edited in place: the tag bytes change,
//! the indentation, chomping indicator and every other byte stay. Folded scalars
//! (`>`) are prose and are not read; text in a block scalar that is not YAML yields
//! nothing, silently.
//!
//! References inside comments are never touched in structured mode. Values that
//! cannot be edited in place byte for byte (an image value that is itself a block
//! scalar, multi-line or escaped quoted scalars, aliases) are skipped, and a [`Notice`]
//! naming the line says so when a target would have changed them. A file that is not
//! valid YAML is read up to its first error: the references before it are still found
//! (parsing is left to right, so they are read correctly), and a notice names the
//! line — unless the file holds `{{` template actions (a Helm chart template), which
//! is then read line by line instead ([`RefKind::Template`]): `key: value` lines with
//! their indentation, image keys and `repository`/`tag` pairs under an image key,
//! never anything inside a `{{ … }}` action.
//!
//! A Dockerfile gives [`RefKind::Dockerfile`]: the image of each `FROM` (after flags
//! such as `--platform=…`, before `AS name`) and of `COPY --from=…` when that is an
//! image, not a stage; `$NAME`/`${NAME}` there take the literal default of an `ARG`
//! declared before the first `FROM`, and the tag is edited in the `ARG` line. A
//! version put together from several places (`golang:${GO}-alpine`), or an `ARG`
//! default that goes into two different images, gets a notice instead.
//!
//! **Text mode** (Prow's autobumper; `mode: text`, for every file whatever its name)
//! finds every reference that has a tag or a digest anywhere in any file, comments
//! included: a run of `[A-Za-z0-9._/:@-]`
//! delimited by anything else, minus a trailing `.` or `:`. References inside URLs
//! (`https://gcr.io/…`) are not references.
//!
//! # Which references move
//!
//! A reference moves to a [`Target`] when the target's image matches it by canonical
//! repository (`nginx` = `docker.io/library/nginx`; `gcr.io/x/app` ≠ `ghcr.io/x/app`)
//! and its current tag is in the target's series (see [`SeriesRule`]): for `dateSha`
//! the same variant suffix (so one image moves to several tags in one change, one
//! target per variant), for `semver` any semver tag, for `regex` any matching tag.
//! Floating tags (`latest`, `latest-master`), tags outside the policy and references
//! without a tag never move. Note that under a policy's `semver` rule every semver
//! tag is one series, so `1.25.3-alpine` would move to `1.25.4`; the inferred rule
//! of the command line (no `--policy`) keeps pre-release suffixes apart. When several targets apply, the most specific image wins
//! (repository over prefix, longer prefix over shorter).
//!
//! A digest-only reference (`repo@sha256:D`, no tag) moves only when the plan knows
//! which tag `D` is the digest of ([`Plan::with_digest_tags`], from the registry with
//! `pinDigest`) and the target has a digest: it becomes `repo@sha256:NEW`, in the same
//! form, and its [`Change`] names both tags ([`Change::digest_tags`]). A digest no
//! listed tag carries is never guessed at.
//!
//! A reference already at the target's tag is left alone — except that a digest it
//! carries is replaced when the target has a different one. A reference that moves
//! to a new tag never keeps its old digest: it gets the target's digest, or loses its
//! digest when the target has none (`app:v1@sha256:old` → `app:v2`; a Helm or
//! kustomize `digest:` field becomes `""`, which both treat as "no digest"). A
//! target's digest is added to a reference without one only where the syntax has a
//! place for it (after the tag of an inline reference, or an existing `digest:`
//! field); otherwise the tag alone is written and a notice says so.
//!
//! # What changes in the file
//!
//! Only the bytes of tags and digests. Everything else stays byte for byte: comments,
//! quoting, indentation, CRLF line ends, anchors, block scalars, the trailing newline
//! or its absence. One exception keeps values correct: a bare tag in a plain Helm
//! `tag:` or kustomize `newTag:` field that YAML would read as a number, boolean or
//! null (`1.10` is the float 1.1) is written double-quoted.

mod scan_docker;
mod scan_template;
mod scan_text;
mod scan_yaml;
mod target;

use std::borrow::Cow;
use std::ops::Range;

use crate::core::reference::ImageRef;
use crate::policy::v1alpha1::RewriteMode;

pub use target::{DigestTag, ImageSelector, Plan, RewriteError, SeriesRule, Target};

/// Where a reference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// The value of a YAML `image:` key (or a string item of an `images:` list).
    ImageValue,
    /// A kustomize `images:` entry (`name`/`newName`/`newTag`/`digest`).
    Kustomize,
    /// A Helm-values `image: {registry, repository, tag, digest}` mapping.
    HelmValues,
    /// A value on a line marked `# autobump: <policy>`.
    Marker,
    /// An Argo CD `helm.parameters` entry (`name: image`, or the
    /// `X.repository`/`X.tag` pair).
    HelmParameter,
    /// A line of a file that is not YAML but a template (Helm's `{{ }}`).
    Template,
    /// A Dockerfile `FROM` (or `COPY --from=`), possibly through an `ARG` default.
    Dockerfile,
    /// Anywhere in a file, by the text reader (text mode, or a file that is neither
    /// YAML nor a Dockerfile).
    Text,
}

/// Which reader a file gets in structured mode, decided by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// `*.yaml`, `*.yml`, `*.json`; a file that is not YAML but holds `{{ }}`
    /// template actions falls back to the line-level template reader.
    Yaml,
    /// `Dockerfile`, `Containerfile`, `Dockerfile.*`, `*.Dockerfile`,
    /// `*.Containerfile`.
    Dockerfile,
    /// Anything else: every reference with a version, as in text mode.
    Text,
}

impl Reader {
    /// The reader for a file (a `/`-separated path; only the name counts). An empty
    /// name is YAML.
    #[must_use]
    pub fn for_file(path: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        let ext = name.rsplit_once('.').map(|(_, e)| e);
        if name.is_empty() || matches!(ext, Some("yaml" | "yml" | "json")) {
            Self::Yaml
        } else if name == "dockerfile"
            || name == "containerfile"
            || name.starts_with("dockerfile.")
            || name.starts_with("containerfile.")
            || matches!(ext, Some("dockerfile" | "containerfile"))
        {
            Self::Dockerfile
        } else {
            Self::Text
        }
    }
}

/// One reference found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// 1-based line of the version: the tag, or the reference's start when it has
    /// no tag (inline references start on the line of their tag).
    pub line: usize,
    /// 1-based column (in characters) of the same place.
    pub column: usize,
    /// Byte range of the reference text. For kustomize and Helm entries, which spread
    /// a reference over several values, the range from the first to the last of them.
    pub span: Range<usize>,
    /// The reference (for Helm, `registry/repository`; for kustomize, `newName` or
    /// `name`).
    pub reference: ImageRef,
    /// Where it was found.
    pub kind: RefKind,
    /// Byte range of the tag text, if the reference has a tag.
    pub tag_span: Option<Range<usize>>,
    /// Byte range of the digest text (`sha256:…`), if it has a digest.
    pub digest_span: Option<Range<usize>>,
    /// How the digest is edited.
    digest_site: DigestSite,
    /// The tag is a whole plain YAML scalar (a Helm `tag:` or kustomize `newTag:`).
    tag_is_plain_field: bool,
}

/// Where a digest is written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DigestSite {
    /// `@sha256:…` right after the tag: this range holds it, `@` included (empty:
    /// where one would be inserted).
    Suffix(Range<usize>),
    /// A separate YAML scalar holding the digest; `plain` when it is unquoted.
    Field { span: Range<usize>, plain: bool },
    /// Nowhere: a digest cannot be added.
    None,
}

impl Found {
    /// An inline reference (`repo[:tag][@digest]`) whose text starts at `start`.
    fn inline(start: usize, reference: ImageRef, kind: RefKind) -> Self {
        let repo_end = start + reference.repository.len();
        let tag_span = reference
            .tag
            .as_ref()
            .map(|t| repo_end + 1..repo_end + 1 + t.len());
        let tag_end = tag_span.as_ref().map_or(repo_end, |t| t.end);
        let digest_span = reference
            .digest
            .as_ref()
            .map(|d| tag_end + 1..tag_end + 1 + d.len());
        let end = digest_span.as_ref().map_or(tag_end, |d| d.end);
        Self {
            line: 0,
            column: 0,
            span: start..end,
            reference,
            kind,
            tag_span,
            digest_span,
            digest_site: DigestSite::Suffix(tag_end..end),
            tag_is_plain_field: false,
        }
    }
}

/// A reference whose value cannot be edited in place (escapes, block scalars, …).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unwritable {
    offset: usize,
    reference: ImageRef,
    why: &'static str,
}

/// Everything a scan of one file yields.
#[derive(Debug, Default)]
struct Scanned {
    found: Vec<Found>,
    unwritable: Vec<Unwritable>,
    /// The byte offset and message of a YAML error that stopped the scan.
    error: Option<(usize, String)>,
}

/// Every image reference in one YAML file's text (see the module docs for what
/// counts in each mode), in file order. [`scan_file`] picks the reader by file name.
#[must_use]
pub fn scan(text: &str, mode: RewriteMode) -> Vec<Found> {
    scan_file("", text, mode)
}

/// Every image reference in the text of the file at `path` (relative, `/`-separated;
/// in structured mode its name decides the [`Reader`]), in file order.
#[must_use]
pub fn scan_file(path: &str, text: &str, mode: RewriteMode) -> Vec<Found> {
    let mut scanned = scan_inner(path, text, mode, None);
    let lines = LineIndex::new(text);
    for f in &mut scanned.found {
        locate(f, text, &lines);
    }
    scanned.found
}

fn scan_inner(
    path: &str,
    text: &str,
    mode: RewriteMode,
    needles: Option<&regex::Regex>,
) -> Scanned {
    let mut scanned = Scanned::default();
    let reader = match mode {
        RewriteMode::Structured => Reader::for_file(path),
        RewriteMode::Text => Reader::Text,
    };
    match reader {
        Reader::Yaml => {
            scan_yaml::scan(text, &mut scanned);
            // A chart template is not YAML: read it line by line instead.
            if scanned.error.is_some() && text.contains("{{") {
                scanned = Scanned::default();
                scan_template::scan(text, &mut scanned);
            }
        }
        Reader::Dockerfile => scan_docker::scan(text, &mut scanned),
        Reader::Text => scan_text::scan(text, needles, &mut scanned.found),
    }
    scanned.found.sort_by_key(|f| f.span.start);
    // One place may be reached twice (an `ARG` used by two `FROM`s): edit it once.
    scanned
        .found
        .dedup_by(|b, a| a.span == b.span && a.tag_span == b.tag_span);
    scanned
}

fn locate(f: &mut Found, text: &str, lines: &LineIndex) {
    let at = f.tag_span.as_ref().map_or(f.span.start, |t| t.start);
    let (line, column) = lines.line_col(text, at);
    f.line = line;
    f.column = column;
}

/// One reference changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Change {
    /// The file, relative to the repository root with `/` separators.
    pub file: String,
    /// 1-based line of the (first) edit.
    pub line: usize,
    /// The reference before.
    pub old: String,
    /// The reference after.
    pub new: String,
    /// For a digest-only reference (`repo@sha256:…`, no tag): the tags whose digests
    /// the old and the new digest are, as the registry listed them.
    pub digest_tags: Option<DigestTags>,
}

/// The tags behind a digest-only reference's old and new digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DigestTags {
    /// The tag the old digest is the digest of.
    pub old: String,
    /// The tag the new digest is the digest of.
    pub new: String,
}

/// Something a user should know about a file that was not (fully) rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Notice {
    /// The file, relative to the repository root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The result of rewriting one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten<'a> {
    /// The new text (borrowed when nothing changed).
    pub text: Cow<'a, str>,
    /// The references changed, in file order.
    pub changes: Vec<Change>,
    /// References skipped and other things worth a warning.
    pub notices: Vec<Notice>,
}

/// Rewrites one file's text; `file` only labels the changes. Byte-exact: only tag and
/// digest spans change. Invalid targets (see [`Plan::new`]) are ignored here; build a
/// [`Plan`] to have them reported, and to rewrite many files with one compilation.
#[must_use]
pub fn rewrite_text(
    file: &str,
    text: &str,
    mode: RewriteMode,
    targets: &[Target],
) -> (String, Vec<Change>) {
    let r = Plan::lenient(targets).rewrite(file, text, mode);
    (r.text.into_owned(), r.changes)
}

/// One byte-range replacement.
struct Edit {
    range: Range<usize>,
    text: String,
}

impl Plan {
    /// Rewrites one file's text (see [`rewrite_text`]).
    #[must_use]
    pub fn rewrite<'a>(&self, file: &str, text: &'a str, mode: RewriteMode) -> Rewritten<'a> {
        let mut out = Rewritten {
            text: Cow::Borrowed(text),
            changes: Vec::new(),
            notices: Vec::new(),
        };
        if !self.may_match(text) {
            return out;
        }
        let scanned = scan_inner(file, text, mode, self.prefilter());
        let lines = LineIndex::new(text);
        let mut edits: Vec<Edit> = Vec::new();
        for mut found in scanned.found {
            let Some((target, digest_tag)) = self.target_for_found(&found.reference) else {
                continue;
            };
            let (new_ref, new_edits, notice) = edits_for(text, &found, target);
            if new_edits.is_empty() {
                continue;
            }
            // Never let two references' edits overlap (they cannot, but stay exact).
            if edits
                .last()
                .is_some_and(|e| e.range.end > new_edits[0].range.start)
            {
                continue;
            }
            locate(&mut found, text, &lines);
            let line = lines.line_col(text, new_edits[0].range.start).0;
            if let Some(message) = notice {
                out.notices.push(Notice {
                    file: file.to_owned(),
                    line,
                    message,
                });
            }
            out.changes.push(Change {
                file: file.to_owned(),
                line,
                old: found.reference.to_string(),
                new: new_ref.to_string(),
                digest_tags: digest_tag.map(|old| DigestTags {
                    old: old.to_owned(),
                    new: target.tag.clone(),
                }),
            });
            edits.extend(new_edits);
        }
        for u in scanned.unwritable {
            if let Some((t, at)) = self.target_for_found(&u.reference)
                && (at.or(u.reference.tag.as_deref()) != Some(t.tag.as_str())
                    || (u.reference.digest.is_some() && u.reference.digest != t.digest))
            {
                out.notices.push(Notice {
                    file: file.to_owned(),
                    line: lines.line_col(text, u.offset).0,
                    message: format!("{} not rewritten to {}: {}", u.reference, t.display, u.why),
                });
            }
        }
        if let Some((offset, message)) = scanned.error {
            out.notices.push(Notice {
                file: file.to_owned(),
                line: lines.line_col(text, offset).0,
                message: format!("not valid YAML ({message}); nothing from here on was examined"),
            });
        }
        out.notices.sort();
        if !edits.is_empty() {
            out.text = Cow::Owned(apply(text, &edits));
        }
        out
    }
}

/// The edits that move `found` to `target`, the new reference, and a notice.
fn edits_for(
    text: &str,
    found: &Found,
    target: &target::Compiled,
) -> (ImageRef, Vec<Edit>, Option<String>) {
    let mut edits = Vec::new();
    let mut notice = None;
    let current = &found.reference;
    if current.tag.is_none() {
        // Digest-only: the digest moves to the target's, in the same form; without
        // a digest to write there is nothing to move it to.
        let Some(new) = target.digest.as_deref() else {
            return (current.clone(), edits, None);
        };
        if let (Some(span), DigestSite::Suffix(_) | DigestSite::Field { .. }) =
            (&found.digest_span, &found.digest_site)
            && &text[span.clone()] != new
        {
            edits.push(Edit {
                range: span.clone(),
                text: new.to_owned(),
            });
        }
        return (current.with_version(None, Some(new)), edits, None);
    }
    let same_tag = current.tag.as_deref() == Some(target.tag.as_str());
    // The digest the reference ends up with.
    let want_digest: Option<&str> = if same_tag {
        match (&current.digest, &target.digest) {
            (Some(_), Some(new)) => Some(new),
            (old, _) => old.as_deref(),
        }
    } else {
        target.digest.as_deref()
    };
    if !same_tag && let Some(span) = &found.tag_span {
        let new = if found.tag_is_plain_field && yaml_reads_as_non_string(&target.tag) {
            format!("\"{}\"", target.tag)
        } else {
            target.tag.clone()
        };
        edits.push(Edit {
            range: span.clone(),
            text: new,
        });
    }
    let mut written_digest = current.digest.clone();
    if want_digest != current.digest.as_deref() {
        match &found.digest_site {
            DigestSite::Suffix(range) => {
                edits.push(Edit {
                    range: range.clone(),
                    text: want_digest.map(|d| format!("@{d}")).unwrap_or_default(),
                });
                written_digest = want_digest.map(str::to_owned);
            }
            DigestSite::Field { span, plain } => {
                let value = match want_digest {
                    Some(d) => d.to_owned(),
                    None if *plain => "\"\"".to_owned(),
                    None => String::new(),
                };
                edits.push(Edit {
                    range: span.clone(),
                    text: value,
                });
                written_digest = want_digest.map(str::to_owned);
            }
            DigestSite::None => {
                notice = Some(format!(
                    "{current}: digest of {} not written: the reference has no place for one",
                    target.display
                ));
            }
        }
    }
    edits.retain(|e| text[e.range.clone()] != e.text);
    edits.sort_by_key(|e| e.range.start);
    let new_ref = current.with_version(Some(&target.tag), written_digest.as_deref());
    (new_ref, edits, notice)
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for e in edits {
        out.push_str(&text[at..e.range.start]);
        out.push_str(&e.text);
        at = e.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Whether YAML (1.1 or 1.2, as Helm and kustomize read it) would read this plain
/// scalar as something other than a string.
fn yaml_reads_as_non_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", "",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digitish = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    // Integers (also 0x…, 0o…) and floats, with YAML 1.1's `_` separators.
    if digitish(body)
        || body
            .strip_prefix("0x")
            .or_else(|| body.strip_prefix("0o"))
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return true;
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (a.is_empty() || digitish(a))
                && (b.is_empty() || digitish(b))
                && !(a.is_empty() && b.is_empty())
        }
        None => digitish(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digitish(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok && (mantissa.contains('.') || exponent.is_some())
}

/// Byte offset → line and column.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Self { starts }
    }

    /// 1-based line and column (in characters).
    fn line_col(&self, text: &str, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line - 1];
        (line, text[start..offset].chars().count() + 1)
    }
}

/// A unified diff of one file (`--- a/FILE`, `+++ b/FILE`, 3 lines of context), as
/// `git diff` prints it; empty when the texts are equal.
#[must_use]
pub fn unified_diff(file: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{file}"), &format!("b/{file}"))
        .to_string()
}

#[cfg(test)]
mod tests;
