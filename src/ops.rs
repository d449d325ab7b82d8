//! What people do to a policy outside a reconcile — hold it, lift its hold, ask for a
//! rollback — as library operations on any [`Store`] (the state file, or an Autobump
//! object's status). The CLI (`autobump hold/unhold/rollback`) calls these; the
//! reconcile applies the same [`StateChange`]s for `/hold` and `/unhold` comments, so
//! a hold reads the same whoever placed it.
//!
//! Each operation decides on the state *being written* (an update may be retried on
//! fresher state), and a refusal writes nothing.

use chrono::{DateTime, Utc};

use crate::core::change::StateChange;
use crate::core::rollout::same_versions;
use crate::policy::v1alpha1::{Hold, RollbackRequest};
use crate::store::{PolicyState, Store, StoreError};

/// What [`hold`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum HoldOutcome {
    /// The hold is in force now.
    Placed(Hold),
    /// A hold was in force already (it stays as it is).
    AlreadyHeld(Hold),
}

/// Holds `name` by `by` (for example `cli:alice`) with `reason`, placed through `via`
/// (`cli`), unless a hold is in force already.
///
/// # Errors
/// The store could not be read or written.
pub fn hold(
    store: &dyn Store,
    name: &str,
    (by, via): (&str, &str),
    reason: &str,
    now: DateTime<Utc>,
) -> Result<HoldOutcome, StoreError> {
    let wanted = Hold {
        by: by.to_owned(),
        since: now,
        reason: reason.to_owned(),
        via: Some(via.to_owned()),
        automatic: false,
    };
    let mut outcome = HoldOutcome::Placed(wanted.clone());
    store.update(name, &mut |s| {
        outcome = match &s.hold {
            Some(h) => HoldOutcome::AlreadyHeld(h.clone()),
            None => HoldOutcome::Placed(wanted.clone()),
        };
        s.apply(&[StateChange::SetHold(wanted.clone())], now);
    })?;
    Ok(outcome)
}

/// Lifts `name`'s hold (recorded as lifted by `by`); returns the hold lifted, if
/// there was one.
///
/// # Errors
/// The store could not be read or written.
pub fn unhold(
    store: &dyn Store,
    name: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Option<Hold>, StoreError> {
    let mut lifted = None;
    store.update(name, &mut |s| {
        lifted.clone_from(&s.hold);
        s.apply(&[StateChange::ClearHold { by: by.to_owned() }], now);
    })?;
    Ok(lifted)
}

/// Why a rollback cannot be requested.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A request was already made (it stays; nothing changes).
    Pending(RollbackRequest),
    /// Nothing to roll back, and why.
    Nothing(String),
}

/// Whether a rollback can be requested for `state`: the deployed and the last
/// known-good summaries, else why not.
///
/// # Errors
/// The refusal: a request pending, or nothing to roll back.
pub fn rollback_refusal(state: &PolicyState) -> Result<(String, String), Refusal> {
    const ANOTHER: &str = "; to deploy another version, hold the policy and write it by hand \
                           (autobump rewrite and a PR; runbooks/procedures.md)";
    if let Some(pending) = &state.rollback_request {
        return Err(Refusal::Pending(pending.clone()));
    }
    if *state == PolicyState::default() {
        return Err(Refusal::Nothing(
            "autobump has recorded nothing for it (is the name right, and has autobump run?)"
                .to_owned(),
        ));
    }
    match (&state.current, &state.last_known_good) {
        (_, None) => Err(Refusal::Nothing(format!(
            "it has no last known-good version: nothing to roll back to{ANOTHER}"
        ))),
        (None, Some(_)) => Err(Refusal::Nothing(
            "no deployed version is recorded yet: nothing to roll back".to_owned(),
        )),
        (Some(current), Some(good)) if same_versions(current, good) => {
            Err(Refusal::Nothing(format!(
                "it already runs its last known-good version {}: nothing to roll back{ANOTHER}",
                good.summary
            )))
        }
        (Some(current), Some(good)) => Ok((current.summary.clone(), good.summary.clone())),
    }
}

/// Asks for a rollback of `name` to its last known-good version, by `by` with
/// `reason` (through `via`); the next reconcile performs it whatever the gate, the
/// hold or the schedule say. Returns the deployed and known-good summaries.
///
/// # Errors
/// The store failed (outer), or the request is refused (inner; nothing written).
pub fn request_rollback(
    store: &dyn Store,
    name: &str,
    (by, via): (&str, &str),
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Result<(String, String), Refusal>, StoreError> {
    // A refusal writes nothing (not even an empty entry for a mistyped name).
    let mut outcome = rollback_refusal(&store.load(name)?);
    if outcome.is_err() {
        return Ok(outcome);
    }
    store.update(name, &mut |s| {
        outcome = rollback_refusal(s);
        if let Ok((current, good)) = &outcome {
            s.apply(
                &[StateChange::RequestRollback {
                    request: RollbackRequest {
                        by: by.to_owned(),
                        since: now,
                        reason: reason.to_owned(),
                        via: Some(via.to_owned()),
                    },
                    message: format!(
                        "rollback from {current} to {good} requested by {by}: {reason}"
                    ),
                }],
                now,
            );
        }
    })?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::store::change::tests::{at, release};

    #[test]
    fn a_hold_is_placed_once_and_lifted_by_whoever_unholds() {
        let store = MemoryStore::default();
        let now = at("2026-11-23T10:00:00Z");
        let placed = hold(&store, "prow", ("cli:alice", "cli"), "freeze", now).unwrap();
        assert!(matches!(&placed, HoldOutcome::Placed(h) if h.by == "cli:alice"));
        let again = hold(&store, "prow", ("cli:bob", "cli"), "mine", now).unwrap();
        assert!(matches!(&again, HoldOutcome::AlreadyHeld(h) if h.by == "cli:alice"));
        let lifted = unhold(&store, "prow", "cli:bob (cli)", now)
            .unwrap()
            .unwrap();
        assert_eq!(lifted.by, "cli:alice");
        assert!(
            unhold(&store, "prow", "cli:bob (cli)", now)
                .unwrap()
                .is_none()
        );
        let messages: Vec<String> = store
            .load("prow")
            .unwrap()
            .history
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(
            messages,
            [
                "held by cli:alice: freeze",
                "hold by cli:alice lifted by cli:bob (cli)"
            ]
        );
    }

    #[test]
    fn a_rollback_is_requested_only_when_there_is_something_to_roll_back_to() {
        let store = MemoryStore::default();
        let now = at("2026-11-23T10:00:00Z");
        let refused = request_rollback(&store, "prow", ("cli:a", "cli"), "p99", now).unwrap();
        assert!(matches!(refused, Err(Refusal::Nothing(w)) if w.contains("recorded nothing")));
        assert_eq!(
            store.load("prow").unwrap(),
            PolicyState::default(),
            "nothing written"
        );
        store
            .update("prow", &mut |s| {
                s.current = Some(release("v2"));
                s.last_known_good = Some(release("v2"));
            })
            .unwrap();
        let same = request_rollback(&store, "prow", ("cli:a", "cli"), "p99", now).unwrap();
        assert!(matches!(same, Err(Refusal::Nothing(w)) if w.contains("already runs")));
        store
            .update("prow", &mut |s| s.last_known_good = Some(release("v1")))
            .unwrap();
        let ok = request_rollback(&store, "prow", ("cli:a", "cli"), "p99", now).unwrap();
        assert_eq!(ok, Ok(("v2".to_owned(), "v1".to_owned())));
        let pending = request_rollback(&store, "prow", ("cli:b", "cli"), "x", now).unwrap();
        assert!(matches!(pending, Err(Refusal::Pending(r)) if r.by == "cli:a"));
        let s = store.load("prow").unwrap();
        assert_eq!(
            s.history.last().unwrap().message,
            "rollback from v2 to v1 requested by cli:a: p99"
        );
    }
}
