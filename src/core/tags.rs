//! What a tag means under a tag policy (pure): its parsed form, its **series** and its
//! order. Shared by version selection (`select`) and manifest rewriting (`rewrite`),
//! so "which tags may replace which" is decided in one place.
//!
//! * `dateSha`: Prow's `vYYYYMMDD-<hex>` with an optional `-<variant>` suffix; the hex
//!   part is 7 to 10 lowercase hex digits. Each variant suffix (and "no suffix") is its
//!   own series: `v20240101-abc1234-master` only moves to another `-master` tag.
//! * `semver`: `1.2.3` or `v1.2.3` (with optional pre-release and build metadata);
//!   every semver tag is one series.
//! * `regex`: tags the pattern matches are one series, ordered by the `extract` group
//!   (numerically or alphabetically).
//!
//! Floating tags (`latest`, `latest-master`, `stable`) match no policy and therefore
//! belong to no series: they are never proposed and never rewritten.

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

/// Parses a semver tag, tolerating a leading `v`.
#[must_use]
pub fn parse_semver(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
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
    /// Any semver tag.
    Semver,
    /// Any tag the policy's pattern matches.
    Regex,
}

impl Series {
    /// A short label for messages: `-master`, `(no suffix)`, `semver`, `regex`.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Self::DateSha(Some(v)) => format!("-{v}"),
            Self::DateSha(None) => "(no suffix)".into(),
            Self::Semver => "semver".into(),
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
        TagPolicy::Semver(_) => parse_semver(tag).map(|_| Series::Semver),
        TagPolicy::Regex(re) => re.pattern.regex().is_match(tag).then_some(Series::Regex),
    }
}

/// How a tag sorts within its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Date (then build time, compared by the caller).
    Date(u32),
    /// A semantic version.
    Semver(semver::Version),
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
            (Self::Semver(a), Self::Semver(b)) => a.cmp_precedence(b).then_with(|| a.cmp(b)),
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
            Self::Semver(_) => 1,
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
        TagPolicy::Semver(_) => parse_semver(tag).map(Key::Semver),
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
            (&semver, "1.2.3", Some(Series::Semver)),
            (&semver, "v1.2.3-rc.1", Some(Series::Semver)),
            (&semver, "latest", None),
            (&semver, "1.2", None),
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
