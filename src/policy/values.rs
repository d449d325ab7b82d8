//! Validated scalar values of the policy API (pure).
//!
//! Each type checks its text while deserializing (convention 9: newtypes validate on
//! read), keeps the text it was written as for serializing back, and describes itself
//! as a string in the CRD schema.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::TimeDelta;
use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::core::schedule::{FreezeBound, Window};

/// Implements serde and `JsonSchema` for a type that has `FromStr<Err = String>` and
/// `Display` (which must round-trip).
macro_rules! string_value {
    ($ty:ty, $name:expr, $desc:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "description": $desc })
            }
        }
    };
}

/// Declares a validated string newtype that keeps its source text.
macro_rules! text_value {
    ($(#[$doc:meta])* $ty:ident, $desc:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// The text as written.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        string_value!($ty, stringify!($ty), $desc);
    };
}

// ---------------------------------------------------------------------------------
// Durations

/// A duration written as one or more `<number><unit>` parts, units `s`, `m`, `h`, `d`,
/// `w`: `30s`, `90m`, `1h30m`, `2d`. Zero is written `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(TimeDelta);

impl Duration {
    /// From whole seconds.
    #[must_use]
    pub fn from_secs(secs: i64) -> Self {
        Self(TimeDelta::seconds(secs))
    }

    /// As a chrono `TimeDelta`.
    #[must_use]
    pub fn delta(self) -> TimeDelta {
        self.0
    }

    /// Whether the duration is zero.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid duration \"{s}\": {why} (write e.g. \"30s\", \"90m\", \"1h30m\", \"2d\")"
            )
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let mut total: i64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: i64 = rest[..digits]
                .parse()
                .map_err(|_| bad("number too large"))?;
            rest = &rest[digits..];
            let unit = rest.chars().next().ok_or_else(|| bad("missing unit"))?;
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 604_800,
                other => return Err(bad(&format!("unknown unit \"{other}\""))),
            };
            rest = &rest[unit.len_utf8()..];
            total = n
                .checked_mul(secs)
                .and_then(|v| total.checked_add(v))
                .filter(|v| *v <= 10 * 365 * 86_400)
                .ok_or_else(|| bad("longer than ten years"))?;
        }
        Ok(Self(TimeDelta::seconds(total)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.num_seconds();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

string_value!(
    Duration,
    "Duration",
    "A duration such as 30s, 90m, 1h30m or 2d (units s, m, h, d, w)."
);

// ---------------------------------------------------------------------------------
// Timezones

/// An IANA timezone name such as `America/Los_Angeles` or `UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timezone(pub chrono_tz::Tz);

impl Default for Timezone {
    fn default() -> Self {
        Self(chrono_tz::UTC)
    }
}

impl FromStr for Timezone {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| format!("unknown IANA timezone \"{s}\" (e.g. \"Europe/Berlin\", \"UTC\")"))
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

string_value!(
    Timezone,
    "Timezone",
    "An IANA timezone name such as America/Los_Angeles or UTC."
);

string_value!(
    Window,
    "Window",
    "A weekly window such as \"Mon-Fri 09:00-17:00\" in the schedule's timezone."
);

string_value!(
    FreezeBound,
    "FreezeBound",
    "A date (2026-12-19), a local date-time (2026-12-19T18:00) or an RFC 3339 instant."
);

// ---------------------------------------------------------------------------------
// Patterns

/// A regular expression (Rust `regex` syntax), compiled when the policy loads.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// The compiled expression.
    #[must_use]
    pub fn regex(&self) -> &Regex {
        &self.regex
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Regex::new(s)
            .map(|regex| Self {
                source: s.to_owned(),
                regex,
            })
            .map_err(|e| format!("invalid regular expression \"{s}\": {}", regex_reason(&e)))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

string_value!(
    Pattern,
    "Pattern",
    "A regular expression (Rust regex syntax)."
);

/// The one-line reason of a regex error (its message spans several lines with a
/// caret diagram).
fn regex_reason(e: &regex::Error) -> String {
    let msg = e.to_string();
    let why = msg
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    why.trim().trim_start_matches("error: ").to_owned()
}

/// A semver range such as `>=1.2, <2` or `^1.4` (Cargo's syntax).
#[derive(Debug, Clone, PartialEq)]
pub struct SemverRange {
    source: String,
    req: semver::VersionReq,
}

impl SemverRange {
    /// The parsed requirement.
    #[must_use]
    pub fn req(&self) -> &semver::VersionReq {
        &self.req
    }
}

impl FromStr for SemverRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        semver::VersionReq::parse(s)
            .map(|req| Self {
                source: s.to_owned(),
                req,
            })
            .map_err(|e| format!("invalid semver range \"{s}\": {e}"))
    }
}

impl fmt::Display for SemverRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

string_value!(
    SemverRange,
    "SemverRange",
    "A semver range such as \">=1.2, <2\" or \"^1.4\"."
);

/// A glob over slash-separated paths relative to the repository root (`**` crosses
/// directories, `*` does not).
#[derive(Debug, Clone)]
pub struct Glob {
    source: String,
    /// `None` for a glob that names one path ([`Self::exact_path`]): it matches by
    /// comparison, without a compiled regex (about 15 KB each; one policy per
    /// service in 10,000 made them half of `autobump run`'s memory).
    matcher: Option<globset::GlobMatcher>,
}

impl Glob {
    /// Whether `path` (relative, `/`-separated) matches.
    #[must_use]
    pub fn is_match(&self, path: &str) -> bool {
        match &self.matcher {
            Some(m) => m.is_match(path),
            None => path == self.source,
        }
    }

    /// The text as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The path this glob names when it has no wildcard, escape or alternative at
    /// all (`apps/web.yaml`): it matches that path and nothing else.
    #[must_use]
    pub fn exact_path(&self) -> Option<&str> {
        (!self.source.contains(GLOB_SPECIAL)).then_some(self.source.as_str())
    }

    /// Whether a path under the directory `dir` (relative, ending in `/`, or empty
    /// for the root) may match: the glob's literal directory prefix (up to its first
    /// special character) and `dir` must agree on their common length. Lets a tree
    /// walk skip directories no include can reach.
    #[must_use]
    pub fn may_match_under(&self, dir: &str) -> bool {
        let Some(at) = self.source.find(GLOB_SPECIAL) else {
            return self.source.starts_with(dir);
        };
        let literal = &self.source[..at];
        let literal = &literal[..literal.rfind('/').map_or(0, |i| i + 1)];
        dir.starts_with(literal) || literal.starts_with(dir)
    }
}

/// The characters with a meaning in a glob (globset, with backslash escapes).
const GLOB_SPECIAL: [char; 5] = ['*', '?', '[', '{', '\\'];

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl FromStr for Glob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with('/') {
            return Err(format!(
                "invalid glob \"{s}\": paths are relative to the repository root, drop the leading \"/\""
            ));
        }
        globset::GlobBuilder::new(s)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map(|g| Self {
                source: s.to_owned(),
                matcher: s.contains(GLOB_SPECIAL).then(|| g.compile_matcher()),
            })
            .map_err(|e| {
                let why = e.kind().to_string();
                format!("invalid glob \"{s}\": {why}")
            })
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

string_value!(
    Glob,
    "Glob",
    "A glob relative to the repository root; ** crosses directories, * does not."
);

// ---------------------------------------------------------------------------------
// Names

static COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$").expect("valid regex"));
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?$")
        .expect("valid regex")
});

/// Checks an image repository name (`[host[:port]/]path`, no tag or digest).
fn check_repository(s: &str, what: &str) -> Result<(), String> {
    // The longest repository name the distribution reference grammar allows
    // (`NameTotalLengthMax`); it also keeps the overlap checks of many images cheap.
    const MAX_LEN: usize = 255;
    if s.len() > MAX_LEN {
        let start: String = s.chars().take(40).collect();
        return Err(format!(
            "invalid {what} \"{start}…\": longer than {MAX_LEN} characters, the longest repository name registries accept"
        ));
    }
    if s.contains('@') {
        return Err(format!(
            "invalid {what} \"{s}\": name the repository without a digest"
        ));
    }
    let mut parts: Vec<&str> = s.split('/').collect();
    let first = parts[0];
    let has_host = parts.len() > 1 && looks_like_host(first);
    if has_host {
        if !HOST.is_match(first) {
            return Err(format!(
                "invalid {what} \"{s}\": bad registry host \"{first}\""
            ));
        }
        parts.remove(0);
    }
    for part in parts {
        if part.contains(':') {
            return Err(format!(
                "invalid {what} \"{s}\": name the repository without a tag (the tag policy picks tags)"
            ));
        }
        if !COMPONENT.is_match(part) {
            return Err(format!(
                "invalid {what} \"{s}\": path component \"{part}\" must be lowercase letters and digits separated by \".\", \"_\", \"__\" or \"-\""
            ));
        }
    }
    Ok(())
}

text_value!(
    /// Every image whose repository name starts with this prefix, e.g.
    /// `gcr.io/k8s-prow/`. Ends with `/`.
    ImagePrefix,
    "An image repository prefix ending in /, e.g. gcr.io/k8s-prow/.",
    |s| {
        let Some(body) = s.strip_suffix('/') else {
            return Err(format!(
                "invalid image prefix \"{s}\": a prefix ends with \"/\" (use `name` for a single image)"
            ));
        };
        // A registry alone (`localhost:5000/`, `registry.local:5000/`) covers every
        // repository on it, as `rewrite --set localhost:5000/=…` does.
        if !body.contains('/') && looks_like_host(body) {
            return if HOST.is_match(body) {
                Ok(())
            } else {
                Err(format!("invalid image prefix \"{s}\": bad registry host \"{body}\""))
            };
        }
        check_repository(body, "image prefix")
    }
);

/// Whether the first component of a reference names a registry host (the reference
/// grammar's rule: a `.` or a `:` port, or `localhost`).
fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

impl ImagePrefix {
    /// Whether `repository` is under this prefix.
    #[must_use]
    pub fn covers(&self, repository: &str) -> bool {
        repository.starts_with(&self.0)
    }
}

text_value!(
    /// One image repository, e.g. `ghcr.io/acme/payments` (no tag, no digest).
    ImageName,
    "One image repository without tag or digest, e.g. ghcr.io/acme/payments.",
    |s| check_repository(s, "image name")
);

text_value!(
    /// A Kubernetes object name (RFC 1123 label: lowercase letters, digits and `-`,
    /// at most 63 characters, starting and ending with a letter or digit).
    DnsLabel,
    "An RFC 1123 label: lowercase letters, digits and -, at most 63 characters.",
    |s| {
        static RE: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("valid regex"));
        if s.len() > 63 || !RE.is_match(s) {
            return Err(format!(
                "invalid name \"{s}\": must be lowercase letters, digits and \"-\", start and end with a letter or digit, at most 63 characters"
            ));
        }
        Ok(())
    }
);

text_value!(
    /// A git branch name (the rules of `git check-ref-format --branch`).
    BranchName,
    "A git branch name.",
    check_branch
);

// Git's `.lock` rule is case-sensitive, so the comparison is too.
#[allow(clippy::case_sensitive_file_extension_comparisons)]
fn check_branch(s: &str) -> Result<(), String> {
    let why = if s.is_empty() {
        Some("empty")
    } else if s.starts_with('-') {
        Some("starts with \"-\"")
    } else if s.starts_with("refs/") {
        Some("give the branch name, not the ref (drop \"refs/heads/\")")
    } else if s.contains("..") || s.contains("@{") || s == "@" {
        Some("contains \"..\" or \"@{\"")
    } else if s
        .chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        Some("contains a space, control character or one of ~^:?*[\\")
    } else if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
        Some("has an empty path component")
    } else if s.ends_with('.') || s.ends_with(".lock") {
        Some("ends with \".\" or \".lock\"")
    } else if s.split('/').any(|c| c.starts_with('.')) {
        Some("a path component starts with \".\"")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!("invalid branch name \"{s}\": {why}")),
        None => Ok(()),
    }
}

text_value!(
    /// A pull-request label (GitHub: 1 to 50 characters).
    Label,
    "A pull-request label.",
    |s| {
        if s.trim().is_empty() || s.chars().count() > 50 {
            return Err(format!("invalid label \"{s}\": must be 1 to 50 characters"));
        }
        Ok(())
    }
);

text_value!(
    /// The name of an environment variable.
    EnvName,
    "The name of an environment variable.",
    |s| {
        static RE: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("valid regex"));
        if RE.is_match(s) {
            Ok(())
        } else {
            Err(format!(
                "invalid environment variable name \"{s}\": letters, digits and \"_\", not starting with a digit"
            ))
        }
    }
);

// ---------------------------------------------------------------------------------
// URLs

/// The URL of a git repository: `https://`, `http://`, `ssh://`, `git://`, `file://`,
/// or scp-like `git@github.com:org/repo.git`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoUrl(String);

impl RepoUrl {
    /// The URL as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A normalised form for comparing two URLs that name the same repository
    /// (`https://github.com/a/b.git` and `https://github.com/a/b/` compare equal).
    #[must_use]
    pub fn identity(&self) -> String {
        let s = self.0.trim_end_matches('/');
        let s = s.strip_suffix(".git").unwrap_or(s);
        s.to_ascii_lowercase()
    }
}

impl FromStr for RepoUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        static SCP: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/\s][^\s]*$").expect("valid regex")
        });
        if SCP.is_match(s) {
            return Ok(Self(s.to_owned()));
        }
        // Messages quote the value without its user info: a password in it must not
        // reach `check`'s output or the controller's log.
        let shown = crate::repo::redact_url(s);
        let url = url::Url::parse(s).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => format!(
                "invalid repository URL \"{shown}\": no scheme (write https://…, ssh://…, file://… or user@host:path)"
            ),
            e => format!("invalid repository URL \"{shown}\": {e}"),
        })?;
        match url.scheme() {
            "https" | "http" | "ssh" | "git" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(format!("invalid repository URL \"{shown}\": no host"));
                }
                if url.path().trim_matches('/').is_empty() {
                    return Err(format!(
                        "invalid repository URL \"{shown}\": no repository path"
                    ));
                }
            }
            "file" => {}
            other => {
                return Err(format!(
                    "invalid repository URL \"{shown}\": unsupported scheme \"{other}\" (use https, http, ssh, git, file or user@host:path)"
                ));
            }
        }
        if url.password().is_some() {
            return Err(format!(
                "invalid repository URL \"{shown}\": credentials do not belong in the policy; give them to autobump as a secret"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(
    RepoUrl,
    "RepoUrl",
    "A git repository URL: https, http, ssh, git, file, or user@host:path."
);

/// An `http://` or `https://` URL of a service (Prometheus, Alertmanager, a webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    /// The parsed URL.
    #[must_use]
    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let shown = crate::repo::redact_url(s);
        let url = url::Url::parse(s).map_err(|e| format!("invalid URL \"{shown}\": {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "invalid URL \"{shown}\": scheme must be http or https, not \"{}\"",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("invalid URL \"{shown}\": no host"));
        }
        Ok(Self(url))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

string_value!(HttpUrl, "HttpUrl", "An http:// or https:// URL.");

// ---------------------------------------------------------------------------------
// Alert matchers

/// How a matcher compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (fully anchored)
    Re,
    /// `!~` (fully anchored)
    NotRe,
}

/// One label matcher of an alert selector.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or pattern as written.
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// Whether a label value (empty when the label is absent) satisfies the matcher.
    #[must_use]
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => value == self.value,
            (MatchOp::Ne, _) => value != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(value),
            (MatchOp::NotRe, Some(re)) => !re.is_match(value),
            (MatchOp::Re | MatchOp::NotRe, None) => false,
        }
    }
}

/// Prometheus-style label matchers over firing alerts, e.g.
/// `{severity=~"critical|warning", job=~"prow-.*"}`. `{}` matches every alert.
#[derive(Debug, Clone)]
pub struct AlertMatchers {
    source: String,
    /// The parsed matchers; all must match.
    pub matchers: Vec<Matcher>,
}

impl Default for AlertMatchers {
    fn default() -> Self {
        Self {
            source: "{}".into(),
            matchers: Vec::new(),
        }
    }
}

impl PartialEq for AlertMatchers {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl AlertMatchers {
    /// Whether an alert with these labels is selected.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(label(&m.name).unwrap_or("")))
    }
}

impl FromStr for AlertMatchers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = |why: String| format!("invalid alert matchers {s:?}: {why}");
        let body = s.trim();
        let body = match (body.strip_prefix('{'), body.ends_with('}')) {
            (Some(inner), true) => &inner[..inner.len() - 1],
            (None, false) => body,
            _ => return Err(err("unbalanced braces".into())),
        };
        let mut matchers = Vec::new();
        let mut rest = body.trim_start();
        while !rest.is_empty() {
            let name_len = rest
                .char_indices()
                .find(|&(i, c)| {
                    !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
                })
                .map_or(rest.len(), |(i, _)| i);
            if name_len == 0 {
                return Err(err(format!(
                    "expected a label name at {:?}",
                    truncate(rest)
                )));
            }
            let name = &rest[..name_len];
            rest = rest[name_len..].trim_start();
            let (op, len) = if rest.starts_with("=~") {
                (MatchOp::Re, 2)
            } else if rest.starts_with("!~") {
                (MatchOp::NotRe, 2)
            } else if rest.starts_with("!=") {
                (MatchOp::Ne, 2)
            } else if rest.starts_with('=') {
                (MatchOp::Eq, 1)
            } else {
                return Err(err(format!("expected =, !=, =~ or !~ after \"{name}\"")));
            };
            rest = rest[len..].trim_start();
            let quote = rest
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or_else(|| err(format!("the value for \"{name}\" must be quoted")))?;
            let (value, after) = unquote(&rest[1..], quote)
                .ok_or_else(|| err(format!("unterminated value for \"{name}\"")))?;
            let regex = match op {
                MatchOp::Re | MatchOp::NotRe => {
                    Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                        err(format!(
                            "bad regular expression for \"{name}\": {}",
                            regex_reason(&e)
                        ))
                    })?)
                }
                _ => None,
            };
            matchers.push(Matcher {
                name: name.to_owned(),
                op,
                value,
                regex,
            });
            rest = after.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
            } else if !rest.is_empty() {
                return Err(err(format!("expected \",\" before {:?}", truncate(rest))));
            }
        }
        Ok(Self {
            source: s.to_owned(),
            matchers,
        })
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(12).map_or(s, |(i, _)| &s[..i])
}

/// Reads a quoted value up to the closing `quote`, handling backslash escapes.
fn unquote(s: &str, quote: char) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, next) = chars.next()?;
                match next {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    c if c == quote || c == '\\' => out.push(c),
                    // Other escapes (`\d` in a regex) are kept as written.
                    c => {
                        out.push('\\');
                        out.push(c);
                    }
                }
            }
            c if c == quote => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

impl fmt::Display for AlertMatchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

string_value!(
    AlertMatchers,
    "AlertMatchers",
    "Prometheus-style matchers over firing alerts, e.g. {severity=~\"critical|warning\", job=~\"prow-.*\"}."
);

// ---------------------------------------------------------------------------------
// Label selectors

text_value!(
    /// A Kubernetes label selector: `app=web,tier!=cache,env in (prod,staging),!legacy`.
    LabelSelector,
    "A Kubernetes label selector, e.g. app.kubernetes.io/part-of=prow.",
    check_selector
);

fn check_selector(s: &str) -> Result<(), String> {
    static KEY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
            .expect("valid regex")
    });
    static VALUE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$").expect("valid regex")
    });
    static SET: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(\S+)\s+(in|notin)\s+\(([^()]*)\)$").expect("valid regex"));
    let err = |why: String| format!("invalid label selector \"{s}\": {why}");
    if s.trim().is_empty() {
        return Err(err(
            "empty (it would select every workload in the namespace)".into(),
        ));
    }
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    let key_ok = |k: &str| {
        if KEY.is_match(k) {
            Ok(())
        } else {
            Err(err(format!("bad label key \"{k}\"")))
        }
    };
    let value_ok = |v: &str| {
        if VALUE.is_match(v) {
            Ok(())
        } else {
            Err(err(format!("bad label value \"{v}\"")))
        }
    };
    for part in parts.iter().map(|p| p.trim()) {
        if part.is_empty() {
            return Err(err("empty requirement".into()));
        }
        if let Some(caps) = SET.captures(part) {
            key_ok(&caps[1])?;
            let values: Vec<&str> = caps[3].split(',').map(str::trim).collect();
            if values.iter().all(|v| v.is_empty()) {
                return Err(err(format!("\"{}\" needs at least one value", &caps[1])));
            }
            values.iter().try_for_each(|v| value_ok(v))?;
        } else if let Some((k, v)) = part
            .split_once("!=")
            .or_else(|| part.split_once("=="))
            .or_else(|| part.split_once('='))
        {
            key_ok(k.trim())?;
            value_ok(v.trim())?;
        } else if let Some(k) = part.strip_prefix('!') {
            key_ok(k.trim())?;
        } else {
            key_ok(part)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_canonically() {
        for (text, secs, canon) in [
            ("1h", 3600, "1h"),
            ("90m", 5400, "1h30m"),
            ("2d", 172_800, "2d"),
            ("1h30m", 5400, "1h30m"),
            ("45s", 45, "45s"),
            ("1w", 604_800, "7d"),
            ("0s", 0, "0s"),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.delta().num_seconds(), secs, "{text}");
            assert_eq!(d.to_string(), canon);
        }
        for (bad, why) in [
            ("", "empty"),
            ("1", "missing unit"),
            ("h", "expected a number"),
            ("1x", "unknown unit \"x\""),
            ("1 h", "unknown unit \" \""),
            ("-1h", "expected a number"),
            ("99999w", "longer than ten years"),
        ] {
            let e = bad.parse::<Duration>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn image_names_and_prefixes() {
        for ok in [
            "gcr.io/k8s-prow/",
            "localhost:5000/app/",
            "acme/",
            // a registry alone, with a port and no path
            "localhost:5000/",
            "registry.local:5000/",
            "localhost/",
            "ghcr.io/",
        ] {
            ok.parse::<ImagePrefix>().unwrap();
        }
        assert!(
            "registry.local:port/"
                .parse::<ImagePrefix>()
                .unwrap_err()
                .contains("bad registry host")
        );
        // A name is a repository: `localhost:5000` alone would be `localhost` at tag 5000.
        assert!(
            "localhost:5000"
                .parse::<ImageName>()
                .unwrap_err()
                .contains("without a tag")
        );
        for ok in [
            "nginx",
            "ghcr.io/acme/payments",
            "localhost:5000/app",
            "a/b__c/d-e.f",
        ] {
            ok.parse::<ImageName>().unwrap();
        }
        assert!(
            "gcr.io/k8s-prow"
                .parse::<ImagePrefix>()
                .unwrap_err()
                .contains("ends with \"/\"")
        );
        assert!(
            "ghcr.io/acme/Payments"
                .parse::<ImageName>()
                .unwrap_err()
                .contains("\"Payments\"")
        );
        // At most 255 characters, the reference grammar's limit (kept cheap to check
        // against many other images).
        let longest = format!("ghcr.io/{}", "a".repeat(247));
        longest.parse::<ImageName>().unwrap();
        format!("{longest}/").parse::<ImagePrefix>().unwrap();
        let err = format!("{longest}a").parse::<ImageName>().unwrap_err();
        assert!(err.contains("longer than 255 characters"), "{err}");
        assert!(err.len() < 200, "the name is cut in the message: {err}");
        assert!(
            "ghcr.io/acme/payments:v1"
                .parse::<ImageName>()
                .unwrap_err()
                .contains("without a tag")
        );
        let p: ImagePrefix = "gcr.io/k8s-prow/".parse().unwrap();
        assert!(p.covers("gcr.io/k8s-prow/hook"));
        assert!(!p.covers("gcr.io/k8s-prow-edge/hook"));
    }

    #[test]
    fn alert_matchers() {
        let m: AlertMatchers = r#"{severity=~"critical|warning", job=~"prow-.*", team!="x"}"#
            .parse()
            .unwrap();
        assert_eq!(m.matchers.len(), 3);
        let labels = |k: &str| match k {
            "severity" => Some("critical"),
            "job" => Some("prow-hook"),
            _ => None,
        };
        assert!(m.matches(labels));
        let other = |k: &str| if k == "severity" { Some("info") } else { None };
        assert!(!m.matches(other));
        assert!("{}".parse::<AlertMatchers>().unwrap().matchers.is_empty());
        for (bad, why) in [
            (r#"{job=~"prow-("}"#, "bad regular expression"),
            (r"{job=prow}", "must be quoted"),
            (r#"{job>"a"}"#, "expected =, !=, =~ or !~"),
            (r#"{job="a""#, "unbalanced braces"),
            (r#"{job="a" team="b"}"#, "expected \",\""),
        ] {
            let e = bad.parse::<AlertMatchers>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn label_selectors() {
        for ok in [
            "app.kubernetes.io/part-of=prow",
            "app=web,tier!=cache",
            "env in (prod, staging),!legacy",
            "tier",
        ] {
            ok.parse::<LabelSelector>().unwrap();
        }
        for bad in ["", "app=", "=web", "app==we b", "env in ()", "app=web,,x=y"] {
            if bad == "app=" {
                // An empty value is allowed by Kubernetes.
                bad.parse::<LabelSelector>().unwrap();
                continue;
            }
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_and_branches() {
        for ok in [
            "https://github.com/example/infra.git",
            "git@github.com:example/infra.git",
            "file:///srv/git/infra.git",
            "ssh://git@example.com/infra",
        ] {
            ok.parse::<RepoUrl>().unwrap();
        }
        for bad in [
            "github.com/example/infra",
            "ftp://example.com/x",
            "https://github.com",
            "https://user:token@github.com/a/b",
        ] {
            assert!(bad.parse::<RepoUrl>().is_err(), "{bad}");
        }
        assert!("ftp://x".parse::<HttpUrl>().is_err());
        "http://127.0.0.1:9090".parse::<HttpUrl>().unwrap();
        for bad in ["a..b", "a b", "x.lock", "-x", "refs/heads/x", "a/", "a/.b"] {
            assert!(bad.parse::<BranchName>().is_err(), "{bad}");
        }
        "autobump/prow-1".parse::<BranchName>().unwrap();
    }

    #[test]
    fn patterns_and_globs() {
        let e = "v(\\d+".parse::<Pattern>().unwrap_err();
        assert!(
            e.starts_with("invalid regular expression \"v(\\d+\": "),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let g: Glob = "config/**/*.yaml".parse().unwrap();
        assert!(g.is_match("config/prow/cluster/hook.yaml"));
        assert!(!g.is_match("other/hook.yaml"));
        let one: Glob = "*.yaml".parse().unwrap();
        assert!(!one.is_match("a/b.yaml"), "* must not cross directories");
        assert!("config/[a-".parse::<Glob>().is_err());
        assert!(">=1.2, <2".parse::<SemverRange>().is_ok());
        assert!("~>1.2".parse::<SemverRange>().is_err());
    }

    #[test]
    fn a_glob_knows_its_exact_path_and_which_directories_it_can_reach() {
        let glob = |s: &str| s.parse::<Glob>().unwrap();
        assert_eq!(glob("apps/web.yaml").exact_path(), Some("apps/web.yaml"));
        for wild in [
            "apps/*.yaml",
            "apps/web.y?ml",
            "apps/[wx]eb.yaml",
            "apps/{a,b}.yaml",
            "apps/\\*.yaml",
        ] {
            assert_eq!(glob(wild).exact_path(), None, "{wild}");
        }
        // A glob naming one path matches (by comparison) what its compiled form would.
        for g in ["apps/web.yaml", "web.yaml", "a b/c.d-e_f.yaml"] {
            let compiled = globset::GlobBuilder::new(g)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .unwrap()
                .compile_matcher();
            for path in [
                g,
                "apps/web",
                "apps/web.yaml/x",
                "./apps/web.yaml",
                "x/web.yaml",
                "web.yaml",
                "a b/c.d-e_f.yaml",
                "",
            ] {
                assert_eq!(
                    glob(g).is_match(path),
                    compiled.is_match(path),
                    "{g} {path}"
                );
            }
            assert!(glob(g).is_match(g));
        }
        // (glob, directory, reachable)
        for (g, dir, want) in [
            ("deploy/app1/**/*.yaml", "", true),
            ("deploy/app1/**/*.yaml", "deploy/", true),
            ("deploy/app1/**/*.yaml", "deploy/app1/", true),
            ("deploy/app1/**/*.yaml", "deploy/app1/base/", true),
            ("deploy/app1/**/*.yaml", "deploy/app2/", false),
            ("deploy/app1/**/*.yaml", "charts/", false),
            ("deploy/app*/x.yaml", "deploy/app2/", true),
            ("deploy/app*/x.yaml", "other/", false),
            ("**/*.yaml", "anything/deep/", true),
            ("apps/web.yaml", "apps/", true),
            ("apps/web.yaml", "apps/web/", false),
        ] {
            assert_eq!(glob(g).may_match_under(dir), want, "{g} under {dir:?}");
            // Never a false "no": whatever matches lies under a reachable directory.
        }
        let g = glob("deploy/app*/x.yaml");
        assert!(g.is_match("deploy/app2/x.yaml") && g.may_match_under("deploy/app2/"));
    }
}
