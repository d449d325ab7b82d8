//! What a tag means under a tag policy (pure): its parsed form, its **series** and its
//! order. Shared by version selection (`select`), manifest rewriting (`rewrite`),
//! merge-time diff verification (`merge`) and the controller's deployed release, so
//! "which tags may replace which" is decided in one place.
//!
//! * `dateSha`: Prow's `vYYYYMMDD-<hex>` with an optional `-<variant>` suffix; the hex
//!   part is 7 to 10 lowercase hex digits. Each variant suffix (and "no suffix") is its
//!   own series: `v20240101-abc1234-master` only moves to another `-master` tag.
//! * `semver`: a version tag `[v]N(.N)*[-SUFFIX]` with one to four numeric parts
//!   ([`parse_version`]). Its series is (a `v` prefix or not, the number of parts, the
//!   suffix), the way Docker Hub's official images publish one version in several
//!   variants: `1.25.3-alpine` moves only to `1.26.0-alpine`, never to `1.26.0`,
//!   `1.26.0-alpine-slim` or the floating `1.26-alpine`; `16.1-alpine` to
//!   `16.2-alpine`; `20.10.0-alpine3.18` stays on `alpine3.18`; `v2.10.7` never
//!   becomes `2.10.8`. A pre-release marker glued to the last number or as the first
//!   suffix segment (`3.13.0rc1-slim-bookworm`, `1.27.0-rc1-alpine`, `7.4-rc2-alpine`,
//!   `2.0.0-rc.1`, `1.0.0-beta2`, `3.13.0a1`) makes a pre-release *of that series*,
//!   sorted before its release. Within a series tags sort by their numbers, then
//!   pre-releases (`dev` < `alpha` < `beta` < `pre`/`preview` < `rc`) before the
//!   release.
//! * `regex`: tags the pattern matches are one series, ordered by the `extract` group
//!   (numerically or alphabetically).
//!
//! Floating tags (`latest`, `latest-master`, `stable`, `mainline`, `alpine`,
//! `slim-bookworm`) match no policy and therefore belong to no series: they are never
//! proposed and never rewritten.

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::Regex;

use crate::policy::v1alpha1::{Order, RegexPolicy, TagPolicy};

/// A parsed `vYYYYMMDD-<hex>[-variant]` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateSha<'a> {
    /// The date as `YYYYMMDD` (a real calendar date).
    pub date: u32,
    /// The commit hash part.
    pub hex: &'a str,
    /// The variant suffix without its `-`, if any.
    pub variant: Option<&'a str>,
}

static DATE_SHA: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^v(\d{8})-([0-9a-f]{7,10})(?:-([A-Za-z0-9][A-Za-z0-9._-]*))?$")
        .expect("valid regex")
});

/// Parses a Prow-style date-sha tag.
#[must_use]
pub fn parse_date_sha(tag: &str) -> Option<DateSha<'_>> {
    let caps = DATE_SHA.captures(tag)?;
    let date_text = caps.get(1)?.as_str();
    chrono::NaiveDate::parse_from_str(date_text, "%Y%m%d").ok()?;
    Some(DateSha {
        date: date_text.parse().ok()?,
        hex: caps.get(2)?.as_str(),
        variant: caps.get(3).map(|m| m.as_str()),
    })
}

/// The most numeric parts a version tag may have (`1.2.3.4`).
pub const MAX_PARTS: usize = 4;

/// Docker's limit on a tag's length: longer text is never a tag, and the parser stops
/// there (so reading any string costs at most this many steps).
const MAX_TAG_LEN: usize = 128;

/// The most digits of one number (`u64` holds any 19-digit number).
const MAX_DIGITS: usize = 19;

/// A version tag `[v]N(.N)*[-SUFFIX]` as the `semver` tag policy reads it: one to
/// [`MAX_PARTS`] numeric parts, an optional pre-release marker (attached, as in
/// `3.13.0rc1`, or as the first `-` segment, as in `1.27.0-rc1-alpine` or
/// `2.0.0-rc.1`), and an optional variant suffix (`alpine`, `slim-bookworm`,
/// `alpine3.18`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionTag<'a> {
    /// Whether the tag starts with `v`.
    pub v: bool,
    numbers: [u64; MAX_PARTS],
    parts: u8,
    /// The pre-release marker, if any.
    pub pre: Option<PreRelease>,
    /// The variant suffix without its `-` (`""`: none).
    pub suffix: &'a str,
}

/// The kind of a pre-release marker, least mature first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// `dev`, `snapshot`.
    Dev,
    /// `alpha`, `a1`.
    Alpha,
    /// `beta`, `b2`.
    Beta,
    /// `pre`, `preview`.
    Preview,
    /// `rc`.
    Rc,
}

/// A pre-release marker: its stage and the numbers after it (`rc.1` and `rc1`:
/// `Rc`, `[1]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PreRelease {
    /// The stage.
    pub stage: Stage,
    /// The numbers after the marker word (empty for a bare `rc`).
    pub numbers: Vec<u64>,
}

/// Where a version stands among its own pre-releases: every pre-release of a version
/// sorts before its release.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Maturity {
    /// A pre-release.
    Pre(PreRelease),
    /// The release.
    Release,
}

/// How a version tag sorts within its series: by its numbers, then its maturity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionKey {
    numbers: [u64; MAX_PARTS],
    maturity: Maturity,
}

impl VersionTag<'_> {
    /// The numeric parts (one to [`MAX_PARTS`]).
    #[must_use]
    pub fn numbers(&self) -> &[u64] {
        &self.numbers[..usize::from(self.parts)]
    }

    /// Whether this is a pre-release.
    #[must_use]
    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some()
    }

    /// Its series: `v` or not, the number of parts, the suffix.
    #[must_use]
    pub fn series(&self) -> Series {
        Series::Version {
            v: self.v,
            parts: self.parts,
            suffix: self.suffix.to_owned(),
        }
    }

    /// Its sort key within the series.
    #[must_use]
    pub fn key(&self) -> VersionKey {
        VersionKey {
            numbers: self.numbers,
            maturity: self.pre.clone().map_or(Maturity::Release, Maturity::Pre),
        }
    }

    /// The release it is (or leads to) as `MAJOR.MINOR.PATCH`: missing parts are 0, a
    /// fourth part is left out. Ranges are matched against this, so `range: "<17"`
    /// keeps `16.1-alpine` and refuses `17.0-alpine` and `17rc1-alpine`.
    #[must_use]
    pub fn release(&self) -> semver::Version {
        let n = self.numbers;
        semver::Version::new(n[0], n[1], n[2])
    }
}

/// Reads `tag` as a version tag (see [`VersionTag`]), or `None` when it is not one:
/// floating tags (`latest`, `alpine`, `slim-bookworm`, `jammy-20240111`), more than
/// [`MAX_PARTS`] parts, letters glued to a number that are not a pre-release marker
/// (`1.2.3abc`), an empty suffix (`1.2.3-`), characters a tag cannot have, or more than
/// 128 bytes. Linear in the tag's length; never panics.
#[must_use]
pub fn parse_version(tag: &str) -> Option<VersionTag<'_>> {
    if tag.is_empty()
        || tag.len() > MAX_TAG_LEN
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return None;
    }
    let (v, body) = match tag.strip_prefix('v') {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let bytes = body.as_bytes();
    let mut numbers = [0u64; MAX_PARTS];
    let mut parts = 0usize;
    let mut i = 0usize;
    loop {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > MAX_DIGITS || parts == MAX_PARTS {
            return None;
        }
        numbers[parts] = body[start..i].parse().ok()?;
        parts += 1;
        if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
        } else {
            break;
        }
    }
    let mut rest = &body[i..];
    let mut pre = None;
    if rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
        // Only a pre-release marker may be glued to the number (`3.13.0rc1`, `17rc1`).
        let end = rest.find('-').unwrap_or(rest.len());
        pre = Some(parse_marker(&rest[..end])?);
        rest = &rest[end..];
    }
    let mut suffix = "";
    if !rest.is_empty() {
        let after = rest.strip_prefix('-').filter(|a| !a.is_empty())?;
        suffix = after;
        let end = after.find('-').unwrap_or(after.len());
        let marker = parse_marker(&after[..end]);
        if pre.is_some() && marker.is_some() {
            // Two markers (`1.2rc1-rc2`): no reading of that is trustworthy.
            return None;
        }
        if pre.is_none() {
            // A marker as the first segment: `1.27.0-rc1-alpine`, `2.0.0-rc.1`.
            if let Some(marker) = marker {
                pre = Some(marker);
                suffix = match &after[end..] {
                    "" => "",
                    more => more.strip_prefix('-').filter(|s| !s.is_empty())?,
                };
                // A second marker after it (`0-rc-a0`, `1.0-rc1-beta2`) is as
                // untrustworthy as a glued one followed by another: without the first,
                // the tag would read as a pre-release of another series.
                let next = suffix.find('-').unwrap_or(suffix.len());
                if parse_marker(&suffix[..next]).is_some() {
                    return None;
                }
            }
        }
        // A suffix starts with a letter or digit: `1.2.3--x` and `1.2.3-.x` are not
        // versions.
        if !suffix.is_empty() && !suffix.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return None;
        }
    }
    Some(VersionTag {
        v,
        numbers,
        parts: u8::try_from(parts).ok()?,
        pre,
        suffix,
    })
}

/// Reads a pre-release marker: `rc`, `alpha`, `beta`, `pre`, `preview`, `dev`,
/// `snapshot` (any case), optionally followed by numbers (`rc1`, `rc.1`, `beta2`,
/// `alpha.1.2`), or `a`/`b` followed by a number (`a1`, `b2`).
fn parse_marker(text: &str) -> Option<PreRelease> {
    const WORDS: [(&str, Stage); 9] = [
        ("snapshot", Stage::Dev),
        ("preview", Stage::Preview),
        ("alpha", Stage::Alpha),
        ("beta", Stage::Beta),
        ("pre", Stage::Preview),
        ("dev", Stage::Dev),
        ("rc", Stage::Rc),
        ("a", Stage::Alpha),
        ("b", Stage::Beta),
    ];
    for (word, stage) in WORDS {
        let Some(head) = text.get(..word.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(word) {
            continue;
        }
        let tail = &text[word.len()..];
        let digits = tail.strip_prefix('.').unwrap_or(tail);
        if digits.is_empty() {
            // A bare word is a marker; a bare `a`/`b` (or `rc.`) is not.
            if tail.is_empty() && word.len() > 1 {
                return Some(PreRelease {
                    stage,
                    numbers: Vec::new(),
                });
            }
            return None;
        }
        let mut numbers = Vec::new();
        for part in digits.split('.') {
            if part.is_empty()
                || part.len() > MAX_DIGITS
                || !part.bytes().all(|b| b.is_ascii_digit())
                || numbers.len() == MAX_PARTS
            {
                return None;
            }
            numbers.push(part.parse().ok()?);
        }
        return Some(PreRelease { stage, numbers });
    }
    None
}

/// Tags that are never versions: signatures, attestations and SBOMs pushed next to
/// images by cosign and friends.
#[must_use]
pub fn is_signature_tag(tag: &str) -> bool {
    tag.starts_with("sha256-")
        || [".sig", ".att", ".sbom"]
            .iter()
            .any(|suffix| tag.ends_with(suffix))
}

/// A set of tags that may replace one another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Series {
    /// Date-sha tags with this variant suffix (`None`: no suffix).
    DateSha(Option<String>),
    /// Version tags (`semver` policy) with this shape: a `v` prefix or not, the
    /// number of numeric parts, the variant suffix (`""`: none).
    Version {
        /// Whether the tags start with `v`.
        v: bool,
        /// How many numeric parts (1 to 4).
        parts: u8,
        /// The variant suffix without its `-` (`""`: none).
        suffix: String,
    },
    /// Any tag the policy's pattern matches.
    Regex,
}

impl Series {
    /// A short label for messages: `-master`, `(no suffix)` (dateSha); `semver` for
    /// plain `MAJOR.MINOR.PATCH`, else the series' shape such as `N.N-alpine`,
    /// `vN.N.N`, `N.N.N.N`; `regex`.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Self::DateSha(Some(v)) => format!("-{v}"),
            Self::DateSha(None) => "(no suffix)".into(),
            Self::Version { v, parts, suffix } => {
                if !v && *parts == 3 && suffix.is_empty() {
                    return "semver".into();
                }
                let mut out = String::from(if *v { "v" } else { "" });
                out.push_str(&vec!["N"; usize::from(*parts)].join("."));
                if !suffix.is_empty() {
                    out.push('-');
                    out.push_str(suffix);
                }
                out
            }
            Self::Regex => "regex".into(),
        }
    }
}

/// The series `tag` belongs to under `policy`, or `None` when the policy does not
/// consider it a version (floating tags, junk, signatures).
#[must_use]
pub fn series(policy: &TagPolicy, tag: &str) -> Option<Series> {
    if is_signature_tag(tag) {
        return None;
    }
    match policy {
        TagPolicy::DateSha(_) => {
            parse_date_sha(tag).map(|d| Series::DateSha(d.variant.map(str::to_owned)))
        }
        TagPolicy::Semver(_) => parse_version(tag).map(|v| v.series()),
        TagPolicy::Regex(re) => re.pattern.regex().is_match(tag).then_some(Series::Regex),
    }
}

/// How a tag sorts within its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Date (then build time, compared by the caller).
    Date(u32),
    /// A version tag's numbers and maturity.
    Version(VersionKey),
    /// An integer written in decimal, compared by value (any length).
    Number(String),
    /// Text, compared byte by byte.
    Text(String),
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Date(a), Self::Date(b)) => a.cmp(b),
            (Self::Version(a), Self::Version(b)) => a.cmp(b),
            (Self::Number(a), Self::Number(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
            (Self::Text(a), Self::Text(b)) => a.cmp(b),
            // Keys of one series are always of one kind; order kinds for totality.
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Key {
    fn rank(&self) -> u8 {
        match self {
            Self::Date(_) => 0,
            Self::Version(_) => 1,
            Self::Number(_) => 2,
            Self::Text(_) => 3,
        }
    }
}

/// The sort key of `tag` under `policy`, or `None` when the tag is not a version
/// under it (including a `regex` tag whose extracted part is not a number under
/// numerical order).
#[must_use]
pub fn key(policy: &TagPolicy, tag: &str) -> Option<Key> {
    series(policy, tag)?;
    match policy {
        TagPolicy::DateSha(_) => parse_date_sha(tag).map(|d| Key::Date(d.date)),
        TagPolicy::Semver(_) => parse_version(tag).map(|v| Key::Version(v.key())),
        TagPolicy::Regex(re) => regex_key(re, tag),
    }
}

fn regex_key(policy: &RegexPolicy, tag: &str) -> Option<Key> {
    let caps = policy.pattern.regex().captures(tag)?;
    let part = match &policy.extract {
        Some(group) => caps.name(group)?.as_str(),
        None => caps.get(0)?.as_str(),
    };
    match policy.order {
        Order::Alphabetical => Some(Key::Text(part.to_owned())),
        Order::Numerical => {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let trimmed = part.trim_start_matches('0');
            Some(Key::Number(
                if trimmed.is_empty() { "0" } else { trimmed }.to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::v1alpha1::{DateShaPolicy, SemverPolicy};

    fn regex(pattern: &str, extract: Option<&str>, order: Order) -> TagPolicy {
        TagPolicy::Regex(RegexPolicy {
            pattern: pattern.parse().unwrap(),
            extract: extract.map(str::to_owned),
            order,
        })
    }

    #[test]
    fn date_sha_tags() {
        type Parsed<'a> = Option<(u32, &'a str, Option<&'a str>)>;
        let cases: &[(&str, Parsed)] = &[
            ("v20240101-abc1234", Some((20_240_101, "abc1234", None))),
            (
                "v20240101-abc1234567",
                Some((20_240_101, "abc1234567", None)),
            ),
            (
                "v20240101-abc1234-master",
                Some((20_240_101, "abc1234", Some("master"))),
            ),
            (
                "v20240101-abc1234-release-1.2",
                Some((20_240_101, "abc1234", Some("release-1.2"))),
            ),
            ("v20240101-abc123", None),  // 6 hex: too short
            ("v20241301-abc1234", None), // month 13
            ("20240101-abc1234", None),  // no v
            ("v20240101-ABC1234", None), // uppercase is not a git hash
            ("latest", None),
            ("latest-master", None),
        ];
        for (tag, want) in cases {
            let got = parse_date_sha(tag).map(|d| (d.date, d.hex, d.variant));
            assert_eq!(got, *want, "{tag}");
        }
    }

    fn ver(v: bool, parts: u8, suffix: &str) -> Series {
        Series::Version {
            v,
            parts,
            suffix: suffix.into(),
        }
    }

    #[test]
    fn series_by_policy() {
        let date_sha = TagPolicy::DateSha(DateShaPolicy {});
        let semver = TagPolicy::Semver(SemverPolicy::default());
        let build = regex(r"^build-(?P<n>\d+)$", Some("n"), Order::Numerical);
        let cases: &[(&TagPolicy, &str, Option<Series>)] = &[
            (&date_sha, "v20240101-abc1234", Some(Series::DateSha(None))),
            (
                &date_sha,
                "v20240101-abc1234-master",
                Some(Series::DateSha(Some("master".into()))),
            ),
            (&date_sha, "latest-master", None),
            (&date_sha, "1.2.3", None),
            (&semver, "1.2.3", Some(ver(false, 3, ""))),
            (&semver, "v1.2.3-rc.1", Some(ver(true, 3, ""))),
            (&semver, "latest", None),
            // A two-part version is its own series (it was unreadable before).
            (&semver, "1.2", Some(ver(false, 2, ""))),
            (&semver, "sha256-abc.sig", None),
            (&build, "build-12", Some(Series::Regex)),
            (&build, "build-x", None),
            (&build, "build-12.sig", None),
        ];
        for (policy, tag, want) in cases {
            assert_eq!(series(policy, tag), *want, "{tag}");
        }
    }

    #[test]
    fn keys_order_within_a_series() {
        let semver = TagPolicy::Semver(SemverPolicy::default());
        let k = |t| key(&semver, t).unwrap();
        assert!(k("1.10.0") > k("1.9.9"));
        assert!(k("v2.0.0") > k("1.99.0"));
        assert!(k("2.0.0") > k("2.0.0-rc.1"));

        let numeric = regex(r"^build-(?P<n>\d+)$", Some("n"), Order::Numerical);
        let n = |t| key(&numeric, t).unwrap();
        assert!(n("build-10") > n("build-9"));
        assert!(n("build-0010") == n("build-10"));
        assert!(n("build-123456789012345678901234567890") > n("build-99"));

        let alpha = regex(r"^release-(?P<v>[a-z]+)$", Some("v"), Order::Alphabetical);
        assert!(key(&alpha, "release-b").unwrap() > key(&alpha, "release-abc").unwrap());

        let date_sha = TagPolicy::DateSha(DateShaPolicy {});
        assert!(
            key(&date_sha, "v20240102-aaaaaaa").unwrap()
                > key(&date_sha, "v20240101-fffffff").unwrap()
        );
    }

    #[test]
    fn signature_tags() {
        for t in [
            "sha256-abc.sig",
            "sha256-abc.att",
            "v1.sbom",
            "sha256-deadbeef",
        ] {
            assert!(is_signature_tag(t), "{t}");
        }
        assert!(!is_signature_tag("v1.2.3"));
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;
    use crate::policy::v1alpha1::SemverPolicy;

    /// `(v, numbers, pre-release stage, suffix)` of a parsed tag.
    type Read<'a> = (bool, Vec<u64>, Option<Stage>, &'a str);

    fn read(tag: &str) -> Option<Read<'_>> {
        parse_version(tag).map(|t| {
            (
                t.v,
                t.numbers().to_vec(),
                t.pre.as_ref().map(|p| p.stage),
                t.suffix,
            )
        })
    }

    /// Real tag schemes, written by hand from the public tag lists on Docker Hub
    /// (hub.docker.com/_/<name>/tags for the official images, and the vendors' pages).
    #[test]
    #[allow(clippy::too_many_lines)] // one table of real tags reads best in one piece
    fn real_tags_are_read_as_version_series_and_suffix() {
        use Stage::{Alpha, Beta, Rc};
        let cases: &[(&str, Option<Read>)] = &[
            // nginx
            ("1.25.3", Some((false, vec![1, 25, 3], None, ""))),
            (
                "1.25.3-alpine",
                Some((false, vec![1, 25, 3], None, "alpine")),
            ),
            (
                "1.25.3-alpine-slim",
                Some((false, vec![1, 25, 3], None, "alpine-slim")),
            ),
            (
                "1.25.3-bookworm",
                Some((false, vec![1, 25, 3], None, "bookworm")),
            ),
            (
                "1.25.3-alpine3.18-perl",
                Some((false, vec![1, 25, 3], None, "alpine3.18-perl")),
            ),
            ("1.25-alpine", Some((false, vec![1, 25], None, "alpine"))),
            ("1", Some((false, vec![1], None, ""))),
            ("mainline", None),
            ("stable-alpine-slim", None),
            ("alpine", None),
            // python
            (
                "3.12.1-slim-bookworm",
                Some((false, vec![3, 12, 1], None, "slim-bookworm")),
            ),
            (
                "3.13.0rc1-slim-bookworm",
                Some((false, vec![3, 13, 0], Some(Rc), "slim-bookworm")),
            ),
            ("3.13.0a2", Some((false, vec![3, 13, 0], Some(Alpha), ""))),
            (
                "3.13.0b3-alpine3.19",
                Some((false, vec![3, 13, 0], Some(Beta), "alpine3.19")),
            ),
            ("3.12-slim", Some((false, vec![3, 12], None, "slim"))),
            ("slim-bookworm", None),
            // node
            (
                "20.10.0-alpine3.18",
                Some((false, vec![20, 10, 0], None, "alpine3.18")),
            ),
            ("20-alpine3.18", Some((false, vec![20], None, "alpine3.18"))),
            ("lts-alpine", None),
            ("iron-bookworm-slim", None),
            // postgres
            ("16.1-alpine", Some((false, vec![16, 1], None, "alpine"))),
            ("17rc1-alpine", Some((false, vec![17], Some(Rc), "alpine"))),
            (
                "17beta2-bookworm",
                Some((false, vec![17], Some(Beta), "bookworm")),
            ),
            // redis
            ("7.2.3-alpine", Some((false, vec![7, 2, 3], None, "alpine"))),
            (
                "7.4-rc2-alpine",
                Some((false, vec![7, 4], Some(Rc), "alpine")),
            ),
            // golang
            (
                "1.21.5-bookworm",
                Some((false, vec![1, 21, 5], None, "bookworm")),
            ),
            (
                "1.22rc1-alpine3.19",
                Some((false, vec![1, 22], Some(Rc), "alpine3.19")),
            ),
            (
                "1.21.5-windowsservercore-ltsc2022",
                Some((false, vec![1, 21, 5], None, "windowsservercore-ltsc2022")),
            ),
            // alpine, ubuntu, debian
            ("3.19.0", Some((false, vec![3, 19, 0], None, ""))),
            ("20231219", Some((false, vec![20_231_219], None, ""))),
            ("edge", None),
            ("22.04", Some((false, vec![22, 4], None, ""))),
            ("jammy-20240111", None),
            ("12.4-slim", Some((false, vec![12, 4], None, "slim"))),
            ("bookworm-20240110-slim", None),
            // busybox, mysql, grafana
            ("1.36.1-musl", Some((false, vec![1, 36, 1], None, "musl"))),
            (
                "1.36.1-uclibc",
                Some((false, vec![1, 36, 1], None, "uclibc")),
            ),
            ("8.2.0-oracle", Some((false, vec![8, 2, 0], None, "oracle"))),
            ("innovation", None),
            (
                "10.2.3-ubuntu",
                Some((false, vec![10, 2, 3], None, "ubuntu")),
            ),
            // traefik and vendors
            ("v2.10.7", Some((true, vec![2, 10, 7], None, ""))),
            ("v3.0.0-beta5", Some((true, vec![3, 0, 0], Some(Beta), ""))),
            ("v3.0.0-rc1", Some((true, vec![3, 0, 0], Some(Rc), ""))),
            ("2.0.0-rc.1", Some((false, vec![2, 0, 0], Some(Rc), ""))),
            ("1.0.0-beta2", Some((false, vec![1, 0, 0], Some(Beta), ""))),
            ("1.0.0-RC1", Some((false, vec![1, 0, 0], Some(Rc), ""))),
            ("2024.01.15", Some((false, vec![2024, 1, 15], None, ""))),
            // sonarqube: four parts and an edition suffix
            (
                "10.3.0.82913-community",
                Some((false, vec![10, 3, 0, 82_913], None, "community")),
            ),
            // Bitnami: the revision counter is part of the suffix (see the regex policy)
            (
                "1.25.3-debian-12-r5",
                Some((false, vec![1, 25, 3], None, "debian-12-r5")),
            ),
            // a suffix that merely starts like a marker is a variant
            ("1.2.3-devel", Some((false, vec![1, 2, 3], None, "devel"))),
            ("1.2.3-b", Some((false, vec![1, 2, 3], None, "b"))),
            // not versions
            ("1.2.3.4.5", None),
            ("1.2.3-", None),
            ("3.13.0rc1-", None),
            ("1.2.3--x", None),
            ("1.2.3abc", None),
            ("0-rc-a0", None), // two markers (found by the property test)
            ("1.0-rc1-beta2", None),
            ("1..2", None),
            ("1.2.", None),
            ("1.2.3_beta", None),
            ("v", None),
            ("", None),
            ("99999999999999999999.1", None),
            ("sha256-abc.sig", None),
            ("latest", None),
        ];
        for (tag, want) in cases {
            assert_eq!(read(tag), *want, "{tag}");
        }
        assert!(parse_version(&format!("1.2.3-{}", "a".repeat(200))).is_none());
    }

    #[test]
    fn versions_order_within_a_series() {
        let semver = TagPolicy::Semver(SemverPolicy::default());
        let k = |t: &str| key(&semver, t).unwrap_or_else(|| panic!("{t}"));
        let newer = [
            ("1.26.0-alpine", "1.25.3-alpine"),
            ("1.10", "1.9"),
            ("3.13.0", "3.13.0rc1"),
            ("3.13.0rc2", "3.13.0rc1"),
            ("3.13.0rc1", "3.13.0b3"),
            ("3.13.0b1", "3.13.0a7"),
            ("2.0.0", "2.0.0-rc.1"),
            ("2.0.0-rc.2", "2.0.0-rc.1"),
            ("2.0.0-rc.10", "2.0.0-rc.9"),
            ("2.0.0-rc.1", "2.0.0-beta.5"),
            ("7.4-alpine", "7.4-rc2-alpine"),
            ("2024.02.01", "2024.01.15"),
            ("10.3.0.82913-community", "10.3.0.8000-community"),
            ("17.0-alpine", "16.9-alpine"),
        ];
        for (a, b) in newer {
            assert!(k(a) > k(b), "{a} > {b}");
        }
        assert!(k("1.0.0-dev") < k("1.0.0-alpha"));
        assert!(k("1.0.0-preview1") < k("1.0.0-rc1"));
        assert_eq!(k("2024.1.15"), k("2024.01.15"));
    }

    #[test]
    fn each_variant_and_length_is_its_own_series() {
        let semver = TagPolicy::Semver(SemverPolicy::default());
        let s = |t: &str| series(&semver, t);
        assert_eq!(s("1.25.3-alpine"), s("1.26.0-alpine"));
        assert_eq!(s("1.25.3-alpine"), s("1.27.0-rc1-alpine"));
        assert_eq!(s("3.12.1-slim-bookworm"), s("3.13.0rc1-slim-bookworm"));
        assert_eq!(s("7.2-alpine"), s("7.4-rc2-alpine"));
        for (a, b) in [
            ("1.25.3-alpine", "1.26.0"),
            ("1.25.3-alpine", "1.26.0-alpine-slim"),
            ("1.25.3-alpine", "1.26-alpine"),
            ("1.25.3", "1.25"),
            ("1.25.3", "1.26.0-alpine"),
            ("20.10.0-alpine3.18", "20.11.0-alpine3.19"),
            ("20.10.0-alpine3.18", "20-alpine3.18"),
            ("v2.10.7", "2.10.8"),
            ("1.2.3.4", "1.2.4"),
        ] {
            assert_ne!(s(a), s(b), "{a} vs {b}");
        }
        assert_eq!(s("16.1-alpine").unwrap().label(), "N.N-alpine");
        assert_eq!(s("v2.10.7").unwrap().label(), "vN.N.N");
        assert_eq!(s("2.10.7").unwrap().label(), "semver");
        assert_eq!(s("1.2.3.4").unwrap().label(), "N.N.N.N");
    }

    #[test]
    fn ranges_see_the_numeric_release() {
        let r = |t: &str| parse_version(t).unwrap().release();
        assert_eq!(r("16.1-alpine"), semver::Version::new(16, 1, 0));
        assert_eq!(r("17rc1-alpine"), semver::Version::new(17, 0, 0));
        assert_eq!(r("10.3.0.82913-community"), semver::Version::new(10, 3, 0));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any text: reading it never panics, and text longer than a tag can be is
        /// refused before any parsing (the parser is linear in at most 128 bytes).
        #[test]
        fn any_text_is_read_without_panic(text in "\\PC{0,300}") {
            let parsed = parse_version(&text);
            if text.len() > 128 {
                proptest::prop_assert!(parsed.is_none());
            }
            for policy in [
                TagPolicy::Semver(SemverPolicy::default()),
                TagPolicy::DateSha(crate::policy::v1alpha1::DateShaPolicy {}),
            ] {
                let _ = series(&policy, &text);
                let _ = key(&policy, &text);
            }
        }

        /// Tag-shaped text: a parsed tag's series and key agree with its parts, and
        /// writing the parts back gives a tag of the same series.
        #[test]
        fn tag_shaped_text_is_consistent(text in "v?[0-9]{1,3}(\\.[0-9]{1,3}){0,5}(rc[0-9]|-(rc|beta|alpha|dev|a|b)?[.]?[0-9]?)?(-[a-z0-9.]{1,8}){0,3}") {
            if let Some(v) = parse_version(&text) {
                proptest::prop_assert!((1..=MAX_PARTS).contains(&v.numbers().len()));
                let policy = TagPolicy::Semver(SemverPolicy::default());
                proptest::prop_assert_eq!(series(&policy, &text), Some(v.series()));
                proptest::prop_assert_eq!(key(&policy, &text), Some(Key::Version(v.key())));
                let numbers: Vec<String> = v.numbers().iter().map(u64::to_string).collect();
                let mut again = format!("{}{}", if v.v { "v" } else { "" }, numbers.join("."));
                if !v.suffix.is_empty() {
                    again.push('-');
                    again.push_str(v.suffix);
                }
                proptest::prop_assert_eq!(parse_version(&again).map(|t| t.series()), Some(v.series()), "{}", again);
            }
        }
    }
}
