//! What a notification says, and how it is written for each kind of receiver (pure).
//!
//! * [`slack_payload`]: a Slack incoming-webhook message — `text` (the fallback shown
//!   in notifications) plus simple `section` and `context` blocks, every piece of
//!   text escaped as Slack requires (`&`, `<`, `>`).
//! * [`webhook_payload`]: the generic JSON body, versioned by its `schema` field (see
//!   [`WEBHOOK_SCHEMA`] for the fields and their meaning).

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::policy::v1alpha1::{HistoryEntry, NotifyEvent, Reason};

/// The `schema` of the generic webhook body. Version 1 is:
///
/// ```json
/// {
///   "schema": "autobump.dev/notification/v1",
///   "id": "prow/42",
///   "event": "rolledBack",
///   "policy": {"name": "prow", "namespace": "prow"},
///   "at": "2026-11-21T10:30:00Z",
///   "title": "prow rolled back: v20261120-abc1234 → v20261119-def5678",
///   "message": "HookDown fired during the bake",
///   "who": "alert:HookDown",
///   "why": "HookDown firing",
///   "versions": {"from": "v20261120-abc1234", "to": "v20261119-def5678"},
///   "links": [{"text": "pull request", "url": "https://github.com/o/r/pull/7"}]
/// }
/// ```
///
/// * `id` is unique per event and stable across restarts and retries: receivers
///   de-duplicate on it (it is also sent as the `Idempotency-Key` header).
/// * `event`: `opened`, `merged`, `promoted`, `held`, `unheld` or `rolledBack`.
/// * `at`: when the event happened (RFC 3339, UTC), not when it was sent.
/// * `policy.namespace`, `who`, `why`, `versions` (and `versions.from`) are left out
///   when unknown; `links` may be empty.
///
/// Later versions may add fields; a field's meaning never changes within a version.
pub const WEBHOOK_SCHEMA: &str = "autobump.dev/notification/v1";

/// Slack shows at most 3,000 characters in a section block.
const SLACK_SECTION_LIMIT: usize = 3000;

/// One event to tell people about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Unique per event and stable across restarts (the caller's choice, e.g.
    /// `"policy/seq"`): receivers de-duplicate on it.
    pub id: String,
    /// The policy's name.
    pub policy: String,
    /// The policy's namespace (in-cluster mode).
    pub namespace: Option<String>,
    /// What happened.
    pub event: NotifyEvent,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// A one-line headline; [`Notification::headline`] makes one when `None`.
    pub title: Option<String>,
    /// What happened, in a sentence or two.
    pub message: String,
    /// Who did it (`user:alice`, `alert:HookDown`, `autobump`).
    pub who: Option<String>,
    /// Why (a hold's reason, the alerts that fired).
    pub why: Option<String>,
    /// The versions before and after.
    pub versions: Option<VersionChange>,
    /// Related pages: the pull request, the runbook.
    pub links: Vec<Link>,
}

/// A change of version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionChange {
    /// The version before (unknown for a first deployment).
    pub from: Option<String>,
    /// The version after.
    pub to: String,
}

/// A link shown with the notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// What it is ("pull request", "runbook").
    pub text: String,
    /// Where it points.
    pub url: String,
}

impl Notification {
    /// A notification with only the required parts; add the rest with the `with_*`
    /// methods.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        policy: impl Into<String>,
        event: NotifyEvent,
        at: DateTime<Utc>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            policy: policy.into(),
            namespace: None,
            event,
            at,
            title: None,
            message: message.into(),
            who: None,
            why: None,
            versions: None,
            links: Vec::new(),
        }
    }

    /// The notification for a history entry, when its reason is one people are
    /// notified of (see [`event_for_history_reason`]); the entry's message becomes
    /// the message.
    #[must_use]
    pub fn from_history(
        id: impl Into<String>,
        policy: impl Into<String>,
        entry: &HistoryEntry,
    ) -> Option<Self> {
        let event = event_for_history_reason(entry.reason)?;
        Some(Self::new(
            id,
            policy,
            event,
            entry.at,
            entry.message.clone(),
        ))
    }

    /// Sets the namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the headline.
    #[must_use]
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets who did it.
    #[must_use]
    pub fn with_who(mut self, who: impl Into<String>) -> Self {
        self.who = Some(who.into());
        self
    }

    /// Sets why.
    #[must_use]
    pub fn with_why(mut self, why: impl Into<String>) -> Self {
        self.why = Some(why.into());
        self
    }

    /// Sets the versions before and after.
    #[must_use]
    pub fn with_versions(mut self, from: Option<String>, to: impl Into<String>) -> Self {
        self.versions = Some(VersionChange {
            from,
            to: to.into(),
        });
        self
    }

    /// Adds a link.
    #[must_use]
    pub fn with_link(mut self, text: impl Into<String>, url: impl Into<String>) -> Self {
        self.links.push(Link {
            text: text.into(),
            url: url.into(),
        });
        self
    }

    /// `namespace/name`, or the name alone.
    #[must_use]
    pub fn policy_ref(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.policy),
            None => self.policy.clone(),
        }
    }

    /// The title, or one made from the policy, the event and the versions:
    /// `prow rolled back: v2 → v1`.
    #[must_use]
    pub fn headline(&self) -> String {
        if let Some(title) = &self.title {
            return title.clone();
        }
        let what = match self.event {
            NotifyEvent::Opened => "bump opened",
            NotifyEvent::Merged => "bump merged",
            NotifyEvent::Promoted => "promoted to known-good",
            NotifyEvent::Held => "held",
            NotifyEvent::Unheld => "unheld",
            NotifyEvent::RolledBack => "rolled back",
        };
        let mut headline = format!("{} {what}", self.policy_ref());
        if let Some(v) = &self.versions {
            match &v.from {
                Some(from) => {
                    let _ = write!(headline, ": {from} → {}", v.to);
                }
                None => {
                    let _ = write!(headline, ": {}", v.to);
                }
            }
        }
        headline
    }
}

/// The event people are notified of for a history entry's reason, if any:
/// `BumpPushed` and `Pushed` → opened; `Merged`, `Promoted`, `Held`,
/// `Unheld` and `RolledBack` → the event of that name. Other reasons (`Deployed`, …)
/// notify nobody.
#[must_use]
pub fn event_for_history_reason(reason: Reason) -> Option<NotifyEvent> {
    Some(match reason {
        Reason::BumpPushed | Reason::Pushed => NotifyEvent::Opened,
        Reason::Merged => NotifyEvent::Merged,
        Reason::Promoted => NotifyEvent::Promoted,
        Reason::Held => NotifyEvent::Held,
        Reason::Unheld => NotifyEvent::Unheld,
        Reason::RolledBack => NotifyEvent::RolledBack,
        Reason::Deployed
        | Reason::RollbackRequested
        | Reason::NothingToRollBack
        | Reason::ClusterPatched
        | Reason::ClusterPatchFailed => return None,
    })
}

/// The event's name as in policies and webhook bodies (`rolledBack`).
#[must_use]
pub fn event_name(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::Opened => "opened",
        NotifyEvent::Merged => "merged",
        NotifyEvent::Promoted => "promoted",
        NotifyEvent::Held => "held",
        NotifyEvent::Unheld => "unheld",
        NotifyEvent::RolledBack => "rolledBack",
    }
}

/// Escapes text for Slack: `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;` (the three
/// characters Slack's message formatting gives a meaning; nothing else is touched).
#[must_use]
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A Slack link `<url|text>`: the URL escaped, with `|` (which would end it)
/// percent-encoded; the text escaped.
fn slack_link(link: &Link) -> String {
    let url = slack_escape(&link.url).replace('|', "%7C");
    format!("<{url}|{}>", slack_escape(&link.text))
}

/// Cuts `text` to at most `limit` characters, marking the cut with `…`.
fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The Slack incoming-webhook body: `text` (plain, escaped) for notifications and
/// clients without blocks, a section block with the headline in bold and the
/// message, and a context block with the policy, who, why and the links.
#[must_use]
pub fn slack_payload(n: &Notification) -> Value {
    let headline = slack_escape(&n.headline());
    let message = slack_escape(&n.message);
    let text = if message.is_empty() {
        headline.clone()
    } else {
        format!("{headline}: {message}")
    };
    let section = if message.is_empty() {
        format!("*{headline}*")
    } else {
        format!("*{headline}*\n{message}")
    };
    let mut context = vec![format!("policy `{}`", slack_escape(&n.policy_ref()))];
    if let Some(who) = &n.who {
        context.push(format!("by {}", slack_escape(who)));
    }
    if let Some(why) = &n.why {
        context.push(format!("why: {}", slack_escape(why)));
    }
    context.extend(n.links.iter().map(slack_link));
    context.push(format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        n.at.timestamp(),
        n.at.to_rfc3339_opts(SecondsFormat::Secs, true)
    ));
    json!({
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(&section, SLACK_SECTION_LIMIT)},
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": truncate(&context.join(" · "), SLACK_SECTION_LIMIT)},
                ],
            },
        ],
    })
}

/// The generic webhook body, version [`WEBHOOK_SCHEMA`].
#[must_use]
pub fn webhook_payload(n: &Notification) -> Value {
    let mut policy = json!({"name": n.policy});
    if let Some(ns) = &n.namespace {
        policy["namespace"] = json!(ns);
    }
    let mut body = json!({
        "schema": WEBHOOK_SCHEMA,
        "id": n.id,
        "event": event_name(n.event),
        "policy": policy,
        "at": n.at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "title": n.headline(),
        "message": n.message,
        "links": n.links.iter().map(|l| json!({"text": l.text, "url": l.url})).collect::<Vec<_>>(),
    });
    if let Some(who) = &n.who {
        body["who"] = json!(who);
    }
    if let Some(why) = &n.why {
        body["why"] = json!(why);
    }
    if let Some(v) = &n.versions {
        let mut versions = json!({"to": v.to});
        if let Some(from) = &v.from {
            versions["from"] = json!(from);
        }
        body["versions"] = versions;
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-11-21T10:30:00Z".parse().unwrap()
    }

    fn rolled_back() -> Notification {
        Notification::new(
            "prow/7",
            "prow",
            NotifyEvent::RolledBack,
            at(),
            "alerts fired during the bake",
        )
        .with_namespace("prow")
        .with_who("alert:HookDown")
        .with_why("HookDown <critical> & paging")
        .with_versions(Some("v2".into()), "v1")
        .with_link("pull request", "https://github.com/o/r/pull/7?a=1&b=2|x")
    }

    #[test]
    fn history_reasons_map_to_events() {
        // (Misspelt or empty reasons cannot be written any more: `Reason` is an enum.)
        let cases = [
            (Reason::BumpPushed, Some(NotifyEvent::Opened)),
            (Reason::Pushed, Some(NotifyEvent::Opened)),
            (Reason::Merged, Some(NotifyEvent::Merged)),
            (Reason::Promoted, Some(NotifyEvent::Promoted)),
            (Reason::Held, Some(NotifyEvent::Held)),
            (Reason::Unheld, Some(NotifyEvent::Unheld)),
            (Reason::RolledBack, Some(NotifyEvent::RolledBack)),
            (Reason::Deployed, None),
            (Reason::RollbackRequested, None),
            (Reason::NothingToRollBack, None),
            (Reason::ClusterPatched, None),
            (Reason::ClusterPatchFailed, None),
        ];
        assert_eq!(cases.len(), Reason::ALL.len());
        for (reason, event) in cases {
            assert_eq!(event_for_history_reason(reason), event, "{reason}");
        }
    }

    #[test]
    fn event_names_are_the_policy_spelling() {
        for event in [
            NotifyEvent::Opened,
            NotifyEvent::Merged,
            NotifyEvent::Promoted,
            NotifyEvent::Held,
            NotifyEvent::Unheld,
            NotifyEvent::RolledBack,
        ] {
            assert_eq!(
                serde_json::to_value(event).unwrap(),
                Value::from(event_name(event))
            );
        }
    }

    #[test]
    fn from_history_takes_reason_time_and_message() {
        let entry = HistoryEntry {
            at: at(),
            reason: Reason::Held,
            message: "held by user:alice: release".into(),
            seq: 3,
        };
        let n = Notification::from_history("prow/3", "prow", &entry).unwrap();
        assert_eq!(n.event, NotifyEvent::Held);
        assert_eq!(n.at, at());
        assert_eq!(n.message, entry.message);
        assert_eq!(n.id, "prow/3");
        let deployed = HistoryEntry {
            reason: Reason::Deployed,
            ..entry
        };
        assert!(Notification::from_history("prow/4", "prow", &deployed).is_none());
    }

    #[test]
    fn headlines() {
        assert_eq!(rolled_back().headline(), "prow/prow rolled back: v2 → v1");
        let n = Notification::new("a/1", "a", NotifyEvent::Promoted, at(), "")
            .with_versions(None, "1.0.0");
        assert_eq!(n.headline(), "a promoted to known-good: 1.0.0");
        assert_eq!(n.with_title("custom").headline(), "custom");
    }

    #[test]
    fn slack_escapes_only_its_three_characters() {
        assert_eq!(
            slack_escape("a <b> & c's \"d\" *e*"),
            "a &lt;b&gt; &amp; c's \"d\" *e*"
        );
        // A hostile value cannot form a mention or a link.
        assert_eq!(slack_escape("<!channel>"), "&lt;!channel&gt;");
    }

    #[test]
    fn slack_payload_shape() {
        let p = slack_payload(&rolled_back());
        assert_eq!(
            p["text"],
            "prow/prow rolled back: v2 → v1: alerts fired during the bake"
        );
        let blocks = p["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        assert_eq!(
            blocks[0]["text"]["text"],
            "*prow/prow rolled back: v2 → v1*\nalerts fired during the bake"
        );
        assert_eq!(blocks[1]["type"], "context");
        let context = blocks[1]["elements"][0]["text"].as_str().unwrap();
        assert!(
            context.contains("why: HookDown &lt;critical&gt; &amp; paging"),
            "{context}"
        );
        assert!(
            context.contains("<https://github.com/o/r/pull/7?a=1&amp;b=2%7Cx|pull request>"),
            "{context}"
        );
        assert!(context.contains("by alert:HookDown"), "{context}");
        assert!(
            context.contains("|2026-11-21T10:30:00Z>"),
            "the date fallback: {context}"
        );
    }

    #[test]
    fn slack_sections_stay_within_slacks_limit() {
        let long = "x".repeat(10_000);
        let p = slack_payload(&Notification::new(
            "a/1",
            "a",
            NotifyEvent::Held,
            at(),
            long,
        ));
        let section = p["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(section.chars().count(), SLACK_SECTION_LIMIT);
        assert!(section.ends_with('…'));
    }

    #[test]
    fn webhook_payload_is_the_documented_v1() {
        let p = webhook_payload(&rolled_back());
        assert_eq!(
            p,
            json!({
                "schema": "autobump.dev/notification/v1",
                "id": "prow/7",
                "event": "rolledBack",
                "policy": {"name": "prow", "namespace": "prow"},
                "at": "2026-11-21T10:30:00Z",
                "title": "prow/prow rolled back: v2 → v1",
                "message": "alerts fired during the bake",
                "who": "alert:HookDown",
                "why": "HookDown <critical> & paging",
                "versions": {"from": "v2", "to": "v1"},
                "links": [{"text": "pull request", "url": "https://github.com/o/r/pull/7?a=1&b=2|x"}],
            })
        );
        let minimal = webhook_payload(&Notification::new(
            "a/1",
            "a",
            NotifyEvent::Unheld,
            at(),
            "lifted",
        ));
        assert_eq!(
            minimal,
            json!({
                "schema": "autobump.dev/notification/v1",
                "id": "a/1",
                "event": "unheld",
                "policy": {"name": "a"},
                "at": "2026-11-21T10:30:00Z",
                "title": "a unheld",
                "message": "lifted",
                "links": [],
            })
        );
    }
}
