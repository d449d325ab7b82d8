//! Pure parsing and arithmetic for the registry protocol (no I/O): `WWW-Authenticate`
//! challenges, RFC 8288 (ex-5988) `Link` headers, `Retry-After` values and the
//! exponential back-off schedule.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased (`bearer`, `basic`).
    pub scheme: String,
    /// Parameters with lower-cased names (`realm`, `service`, `scope`, `error`).
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter by (lower-case) name.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` header value into its challenges.
///
/// Handles several challenges in one value (`Basic realm="a", Bearer realm="b"`),
/// quoted values containing commas and escaped quotes, unquoted values and stray
/// whitespace. Malformed pieces are skipped rather than failing the whole header.
#[must_use]
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut challenges: Vec<Challenge> = Vec::new();
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        // Skip list separators.
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            continue;
        }
        let (token, after) = take_token(rest);
        if token.is_empty() {
            // Not a token character: skip it to make progress.
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str().trim_start();
            continue;
        }
        let after_ws = after.trim_start();
        if let Some(value_part) = after_ws.strip_prefix('=') {
            // `name=value`: a parameter of the current challenge. (A token68 like
            // `Basic abc==` would also land here; it is not used by registries.)
            let (value, remainder) = take_value(value_part.trim_start());
            if let Some(current) = challenges.last_mut() {
                current.params.insert(token.to_ascii_lowercase(), value);
            }
            rest = remainder.trim_start();
        } else {
            // A bare token starts a new challenge.
            challenges.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            rest = after_ws;
        }
    }
    challenges
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn take_token(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !is_token_char(c)).unwrap_or(s.len());
    s.split_at(end)
}

/// A quoted string (with `\"` escapes) or a token; returns the value and the rest.
fn take_value(s: &str) -> (String, &str) {
    if let Some(inner) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &inner[i + 1..]),
                _ => value.push(c),
            }
        }
        // Unterminated quote: take everything.
        (value, "")
    } else {
        let end = s.find([',', ' ', '\t']).unwrap_or(s.len());
        (s[..end].to_owned(), &s[end..])
    }
}

/// The target of the `rel="next"` link in a `Link` header value, if any (as written:
/// relative or absolute; the caller resolves it against the request URL).
#[must_use]
pub fn parse_link_next(value: &str) -> Option<String> {
    let mut rest = value;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let after = &rest[end + 1..];
        // The parameters run until the next link, which starts with `<` after a comma.
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_end_matches(',')
                    .trim_end()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim().to_owned());
        }
        rest = after;
    }
}

/// How long a `Retry-After` value says to wait: delta-seconds or an HTTP-date
/// (relative to `now`; a date in the past means no wait). `None` when unparseable.
#[must_use]
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The wait before retry number `retry` (1 for the first retry): exponential from
/// `base`, doubled per retry, capped at `max`, with "equal jitter" — half the step is
/// fixed and half is `jitter` (a number in `[0, 1)`) of it. So the wait for retry `k`
/// lies in `[step/2, step)` where `step = min(max, base·2^(k-1))`.
#[must_use]
pub fn backoff_delay(base: Duration, max: Duration, retry: u32, jitter: f64) -> Duration {
    let exponent = retry.saturating_sub(1).min(30);
    let step = base.saturating_mul(1 << exponent).min(max);
    let half = step / 2;
    let jitter = jitter.clamp(0.0, 1.0);
    half + half.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn www_authenticate_forms() {
        let cases: Vec<(&str, Vec<Challenge>)> = vec![
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
                vec![Challenge {
                    scheme: "bearer".into(),
                    params: params(&[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                        ("scope", "repository:library/nginx:pull"),
                    ]),
                }],
            ),
            // Quoted commas, spaces around separators, mixed case names.
            (
                r#"bearer  Realm = "http://127.0.0.1:9/t" , Service="reg", scope="repository:a/b:pull,push""#,
                vec![Challenge {
                    scheme: "bearer".into(),
                    params: params(&[
                        ("realm", "http://127.0.0.1:9/t"),
                        ("service", "reg"),
                        ("scope", "repository:a/b:pull,push"),
                    ]),
                }],
            ),
            (
                r#"Basic realm="autobump-test""#,
                vec![Challenge {
                    scheme: "basic".into(),
                    params: params(&[("realm", "autobump-test")]),
                }],
            ),
            // Two challenges in one value; an escaped quote; an unquoted value.
            (
                r#"Basic realm="say \"hi\"", Bearer realm=https://x/token,error="invalid_token""#,
                vec![
                    Challenge {
                        scheme: "basic".into(),
                        params: params(&[("realm", "say \"hi\"")]),
                    },
                    Challenge {
                        scheme: "bearer".into(),
                        params: params(&[("realm", "https://x/token"), ("error", "invalid_token")]),
                    },
                ],
            ),
            ("", vec![]),
            // Unterminated quote does not panic.
            (
                r#"Bearer realm="abc"#,
                vec![Challenge {
                    scheme: "bearer".into(),
                    params: params(&[("realm", "abc")]),
                }],
            ),
        ];
        for (header, want) in cases {
            assert_eq!(parse_www_authenticate(header), want, "{header}");
        }
    }

    #[test]
    fn link_next_forms() {
        for (header, want) in [
            (
                r#"</v2/app/tags/list?last=b&n=2>; rel="next""#,
                Some("/v2/app/tags/list?last=b&n=2"),
            ),
            (
                "<https://r.example/v2/app/tags/list?n=2&last=b>; rel=next",
                Some("https://r.example/v2/app/tags/list?n=2&last=b"),
            ),
            (r#"</a>; rel="prev", </b>; rel="next""#, Some("/b")),
            (r#"</a>; title="x,y"; rel="prev next""#, Some("/a")),
            ("</a>; rel=next, </b>; rel=prev", Some("/a")),
            (r#"</a>; rel="prev""#, None),
            ("", None),
            ("garbage", None),
        ] {
            assert_eq!(parse_link_next(header).as_deref(), want, "{header}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for (value, want) in [
            ("1", Some(Duration::from_secs(1))),
            (" 120 ", Some(Duration::from_secs(120))),
            (
                "Wed, 21 Oct 2015 07:28:30 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Wed, 21 Oct 2015 07:00:00 GMT", Some(Duration::ZERO)),
            ("-1", None),
            ("soon", None),
        ] {
            assert_eq!(parse_retry_after(value, now), want, "{value}");
        }
    }

    #[test]
    fn backoff_schedule_doubles_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for (retry, step_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let step = Duration::from_millis(step_ms);
            assert_eq!(
                backoff_delay(base, max, retry, 0.0),
                step / 2,
                "retry {retry}"
            );
            let high = backoff_delay(base, max, retry, 0.999);
            assert!(high < step && high >= step / 2, "retry {retry}: {high:?}");
        }
        // Out-of-range jitter is clamped.
        assert_eq!(backoff_delay(base, max, 1, 7.0), Duration::from_millis(100));
    }
}
