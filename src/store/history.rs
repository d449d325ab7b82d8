//! `autobump history NAME [--since WHEN] [--output json]`: one policy's audit trail,
//! read from a [`Store`] (does I/O through the store; the formatting is pure).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};
use crate::policy::v1alpha1::HistoryEntry;

/// How the history is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per entry: `#SEQ  TIME  REASON  MESSAGE`.
    Text,
    /// `{"policy": NAME, "entries": [{seq, at, reason, message}, …]}`.
    Json,
}

/// Reading the history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No state for that policy.
    #[error("no policy {name} in the state{known}")]
    UnknownPolicy {
        /// The name asked for.
        name: String,
        /// `" (policies: a, b, …)"` or empty.
        known: String,
    },
    /// `--since` is neither a time nor a duration.
    #[error(
        "invalid --since \"{0}\": write a time (2026-11-21T10:00:00Z, 2026-11-21) or how long ago (7d, 12h)"
    )]
    Since(String),
}

/// Parses `--since`: an RFC 3339 time, a date (its midnight UTC), or a duration
/// back from `now` (`7d`, `1h30m`).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, HistoryError> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    text.parse::<crate::policy::values::Duration>()
        .map(|d| now - d.delta())
        .map_err(|_| HistoryError::Since(text.to_owned()))
}

#[derive(Serialize)]
struct Document<'a> {
    policy: &'a str,
    entries: &'a [HistoryEntry],
}

/// `policy`'s history at or after `since`, formatted (text ends with a newline).
pub fn report(
    store: &dyn Store,
    policy: &str,
    since: Option<DateTime<Utc>>,
    format: Format,
) -> Result<String, HistoryError> {
    let entries = store.history(policy, since)?;
    if entries.is_empty() {
        let names = store.policies()?;
        if !names.iter().any(|n| n == policy) {
            const NAMED: usize = 10;
            let known = if names.is_empty() {
                String::new()
            } else {
                let more = names
                    .len()
                    .checked_sub(NAMED)
                    .filter(|n| *n > 0)
                    .map(|n| format!(" and {n} more"))
                    .unwrap_or_default();
                format!(
                    " (policies: {}{more})",
                    names
                        .iter()
                        .take(NAMED)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(HistoryError::UnknownPolicy {
                name: policy.to_owned(),
                known,
            });
        }
    }
    Ok(format_entries(policy, &entries, format))
}

/// Formats `entries` (pure).
#[must_use]
pub fn format_entries(policy: &str, entries: &[HistoryEntry], format: Format) -> String {
    match format {
        Format::Json => {
            // Strings, numbers and times only: serializing cannot fail.
            let mut text =
                serde_json::to_string_pretty(&Document { policy, entries }).unwrap_or_default();
            text.push('\n');
            text
        }
        Format::Text => {
            let mut out = String::new();
            for e in entries {
                let seq = if e.seq == 0 {
                    "-".to_owned()
                } else {
                    format!("#{}", e.seq)
                };
                // One entry, one line: a message never breaks the layout.
                let message = e.message.replace(['\n', '\r'], " ");
                let _ = writeln!(
                    out,
                    "{seq:>6}  {}  {:<14}  {message}",
                    e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    e.reason
                );
            }
            if entries.is_empty() {
                let _ = writeln!(out, "{policy}: no history entry in that time");
            }
            out
        }
    }
}
