//! Kubernetes Events for autobump's decisions (does I/O; [`event_for`] is pure).
//!
//! Every decision is a history entry in the policy's state (`Held`, `Unheld`,
//! `BumpPushed`, `Pushed`, `Merged`, `Deployed`, `Promoted`, `RolledBack`, …). The
//! [`EventPublisher`] turns each entry into one `events.k8s.io/v1` Event regarding the
//! `Autobump` object: reason = the entry's PascalCase reason, note = its message,
//! `eventTime` = when it was decided, type `Warning` for `Held` and `RolledBack`,
//! `Normal` otherwise.
//!
//! The Event's name is derived from the object's uid and the entry, and creating an
//! Event that exists already counts as done. So publishing is an idempotent ensure:
//! after a restart (or a change of leader) the publisher goes over the entries of
//! the last [`EventPublisher::window`] again and creates only the missing ones, and
//! a crash between recording a decision and publishing its Event converges. Entries
//! written by others (the CLI's `autobump hold`) get their Events too.
//!
//! kube-runtime's `Recorder` is not used: it names Events after the wall clock and
//! folds repeats into a series, which would make republishing create duplicates.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client, Resource as _, ResourceExt as _};
use sha2::{Digest as _, Sha256};

use super::PolicyKey;
use crate::policy::Autobump;
use crate::policy::v1alpha1::{HistoryEntry, Reason};

/// The Events' `reportingController`.
pub const REPORTING_CONTROLLER: &str = "autobump.dev/controller";

/// How far back a publisher looks for entries without an Event: a little less than
/// the API server's default Event time-to-live (one hour), so an Event that expired
/// is not created again.
pub const DEFAULT_WINDOW: TimeDelta = TimeDelta::minutes(50);

/// Limits of the Events API (`events.k8s.io/v1` validation).
const NOTE_LIMIT: usize = 1024;
const FIELD_LIMIT: usize = 128;

/// Publishing an Event failed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The API server could not be reached or refused the Event.
    #[error("event {name}: {source}")]
    Api {
        /// The Event's name.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The object has no namespace, name or uid (it was never stored).
    #[error("the Autobump object has no namespace, name or uid")]
    Unstored,
}

impl EventError {
    /// Whether publishing again may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { source, .. } => crate::store::kube::api_error_is_retryable(source),
            Self::Unstored => false,
        }
    }

    /// The variant name, for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Api { .. } => "api",
            Self::Unstored => "unstored",
        }
    }
}

/// `Warning` for decisions a person should look at (`Held`, `RolledBack`), else
/// `Normal`.
#[must_use]
pub fn event_type(reason: Reason) -> &'static str {
    match reason {
        Reason::Held | Reason::RolledBack => "Warning",
        Reason::ClusterPatchFailed
        | Reason::Deployed
        | Reason::BumpPushed
        | Reason::Pushed
        | Reason::Merged
        | Reason::Promoted
        | Reason::Unheld
        | Reason::RollbackRequested
        | Reason::NothingToRollBack
        | Reason::ClusterPatched => "Normal",
    }
}

/// The Event's `action`: what autobump did (PascalCase) for a history reason.
#[must_use]
pub fn action_of(reason: Reason) -> &'static str {
    match reason {
        Reason::Held => "Hold",
        Reason::Unheld => "Unhold",
        Reason::BumpPushed | Reason::Pushed => "Bump",
        Reason::Merged => "Merge",
        Reason::Deployed => "Observe",
        Reason::Promoted => "Promote",
        Reason::RolledBack => "Rollback",
        Reason::RollbackRequested
        | Reason::ClusterPatched
        | Reason::ClusterPatchFailed
        | Reason::NothingToRollBack => "Reconcile",
    }
}

/// The Event's name: the object's name (shortened to fit) and a digest of the
/// object's uid and the entry, so the same entry always gets the same name.
#[must_use]
pub fn event_name(object_name: &str, uid: &str, entry: &HistoryEntry) -> String {
    let mut hash = Sha256::new();
    for part in [
        uid,
        &entry.at.to_rfc3339(),
        entry.reason.as_str(),
        entry.message.as_str(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize()[..8]
        .iter()
        .fold(String::with_capacity(16), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
    // A DNS subdomain: at most 253 characters; the digest takes 17 of them.
    let prefix = truncate(object_name, 200);
    format!("{prefix}.{digest}")
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn micro(t: DateTime<Utc>) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// The Event for one history entry of `object` (`None` for an object never stored).
#[must_use]
pub fn event_for(
    object: &Autobump,
    entry: &HistoryEntry,
    reporting_instance: &str,
) -> Option<Event> {
    let namespace = object.namespace()?;
    let uid = object.uid()?;
    let name = object.metadata.name.as_deref()?;
    let note = if entry.message.is_empty() {
        entry.reason.to_string()
    } else {
        truncate(&entry.message, NOTE_LIMIT).to_owned()
    };
    Some(Event {
        metadata: ObjectMeta {
            name: Some(event_name(name, &uid, entry)),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        event_time: Some(micro(entry.at)),
        type_: Some(event_type(entry.reason).to_owned()),
        reason: Some(entry.reason.to_string()),
        action: Some(action_of(entry.reason).to_owned()),
        note: Some(note),
        regarding: Some(object.object_ref(&())),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(truncate(reporting_instance, FIELD_LIMIT).to_owned()),
        ..Event::default()
    })
}

/// Publishes the Events of history entries, each once.
pub struct EventPublisher {
    client: Client,
    instance: String,
    window: TimeDelta,
    /// Names of the Events known to exist, per object.
    published: Mutex<HashMap<PolicyKey, HashSet<String>>>,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("instance", &self.instance)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// A publisher reporting as `reporting_instance` (the replica's identity).
    #[must_use]
    pub fn new(client: Client, reporting_instance: impl Into<String>) -> Self {
        Self {
            client,
            instance: reporting_instance.into(),
            window: DEFAULT_WINDOW,
            published: Mutex::default(),
        }
    }

    /// The same, looking `window` back for entries without an Event.
    #[must_use]
    pub fn with_window(mut self, window: TimeDelta) -> Self {
        self.window = window;
        self
    }

    /// How far back entries are published.
    #[must_use]
    pub fn window(&self) -> TimeDelta {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PolicyKey, HashSet<String>>> {
        // A poisoned lock only means a panic elsewhere; the sets stay consistent.
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ensures an Event exists for every entry of `history` (the object's) decided
    /// within the window before `now`. Returns how many Events were created; stops at
    /// the first failure (the rest are tried at the next call).
    pub async fn publish(
        &self,
        object: &Autobump,
        history: &[HistoryEntry],
        now: DateTime<Utc>,
    ) -> Result<usize, EventError> {
        let key = PolicyKey::of(object).ok_or(EventError::Unstored)?;
        let since = now - self.window;
        let mut wanted = Vec::new();
        for entry in history.iter().filter(|e| e.at >= since) {
            wanted.push(event_for(object, entry, &self.instance).ok_or(EventError::Unstored)?);
        }
        let names: HashSet<String> = wanted
            .iter()
            .filter_map(|e| e.metadata.name.clone())
            .collect();
        let missing: Vec<Event> = {
            let mut all = self.lock();
            let known = all.entry(key.clone()).or_default();
            // Forget what fell out of the window.
            known.retain(|n| names.contains(n));
            wanted
                .into_iter()
                .filter(|e| e.metadata.name.as_ref().is_some_and(|n| !known.contains(n)))
                .collect()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut created = 0;
        for event in missing {
            let name = event.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => created += 1,
                Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                Err(source) => return Err(EventError::Api { name, source }),
            }
            self.lock().entry(key.clone()).or_default().insert(name);
        }
        Ok(created)
    }

    /// Forgets what was published (e.g. after leadership changed hands, when another
    /// replica may have published in between; harmless, as names are stable).
    pub fn forget(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AutobumpSpec;

    fn entry(reason: &str, message: &str) -> HistoryEntry {
        HistoryEntry {
            at: "2026-11-21T10:00:00Z".parse().unwrap(),
            reason: reason.parse().unwrap(),
            message: message.into(),
            seq: 0,
        }
    }

    fn object() -> Autobump {
        let spec: AutobumpSpec = serde_json::from_value(serde_json::json!({
            "images": [{"name": "gcr.io/k8s-prow/hook", "tags": {"dateSha": {}}}],
            "source": {"repo": "https://github.com/example/infra.git"},
        }))
        .unwrap();
        let mut o = Autobump::new("prow", spec);
        o.metadata.namespace = Some("ci".into());
        o.metadata.uid = Some("0b4f-uid".into());
        o
    }

    #[test]
    fn one_event_per_entry_with_type_action_and_a_stable_name() {
        let o = object();
        let held = event_for(
            &o,
            &entry("Held", "held by alert:HookDown: firing"),
            "pod-a",
        )
        .unwrap();
        assert_eq!(held.type_.as_deref(), Some("Warning"));
        assert_eq!(held.reason.as_deref(), Some("Held"));
        assert_eq!(held.action.as_deref(), Some("Hold"));
        assert_eq!(held.note.as_deref(), Some("held by alert:HookDown: firing"));
        assert_eq!(held.metadata.namespace.as_deref(), Some("ci"));
        let regarding = held.regarding.unwrap();
        assert_eq!(
            (
                regarding.kind.as_deref(),
                regarding.name.as_deref(),
                regarding.uid.as_deref()
            ),
            (Some("Autobump"), Some("prow"), Some("0b4f-uid"))
        );
        assert_eq!(
            held.reporting_controller.as_deref(),
            Some(REPORTING_CONTROLLER)
        );

        for (reason, kind) in [
            ("RolledBack", "Warning"),
            ("Promoted", "Normal"),
            ("Merged", "Normal"),
            ("Unheld", "Normal"),
        ] {
            assert_eq!(event_type(reason.parse().unwrap()), kind);
        }

        // Same entry, same name; any difference, another name.
        let name = |e: &HistoryEntry| event_name("prow", "0b4f-uid", e);
        let a = entry("Held", "x");
        assert_eq!(name(&a), name(&a.clone()));
        assert_ne!(name(&a), name(&entry("Held", "y")));
        assert_ne!(name(&a), event_name("prow", "other-uid", &a));
        assert!(name(&a).starts_with("prow."));
        let long = "a".repeat(253);
        assert!(event_name(&long, "u", &a).len() <= 253);
    }

    #[test]
    fn notes_fit_the_api_limits() {
        let o = object();
        let e = event_for(&o, &entry("Merged", &"é".repeat(2000)), "pod-a").unwrap();
        assert!(e.note.unwrap().len() <= NOTE_LIMIT);
        let e = event_for(&o, &entry("Merged", ""), "pod-a").unwrap();
        assert_eq!(e.note.as_deref(), Some("Merged"));
    }

    #[test]
    fn an_unstored_object_has_no_events() {
        let mut o = object();
        o.metadata.uid = None;
        assert!(event_for(&o, &entry("Held", "x"), "pod-a").is_none());
    }
}
