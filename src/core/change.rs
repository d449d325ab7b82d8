//! Changes to one policy's durable state, as the planner decides them (pure data).
//!
//! The planner never writes: it returns [`StateChange`]s, and the executor applies
//! them, in order and in one store update, to the state *as it is when written*
//! (`crate::store::PolicyState::apply`). Applying against the fresh state, not the
//! snapshot the plan was made from, is what keeps a `hold` written by the CLI between
//! the read and the write: a change says what it means ("hold for this bad rollout
//! unless a hold of that kind is in force"), not the whole new state.

use chrono::{DateTime, Utc};

use super::rollout::BakeProgress;
use crate::policy::v1alpha1::{Hold, Intent, IntentKind, Reason, Release, RollbackRequest};

/// One change to a policy's state.
#[derive(Debug, Clone, PartialEq)]
pub enum StateChange {
    /// The base branch carries `release` now: it is the deployed release, whose bake
    /// starts over. Recorded as `Deployed`: "{summary} is on {branch}".
    Deployed {
        /// The release (its `since` is when it counted as deployed).
        release: Release,
        /// The base branch, for the history entry.
        branch: String,
    },
    /// The rollback request in force cannot be acted on: it is removed, recorded as
    /// `NothingToRollBack` with `why` after who asked and why.
    DropRollbackRequest {
        /// Why there is nothing to do.
        why: String,
    },
    /// The bake of the deployed release so far.
    Bake(BakeProgress),
    /// `release` baked clean under these conditions: it is the last known-good now
    /// (`Promoted`), and proven for policies promoting from this one.
    Promote(Release, super::promotion::Conditions),
    /// A rollout turned out bad: hold the policy (see [`BadRolloutHold`]), restart the
    /// bake, and record `bad` (canonical image, tag) as bad versions.
    HoldForBadRollout {
        /// Who holds, and how.
        hold: BadRolloutHold,
        /// The versions to record as bad.
        bad: Vec<(String, String)>,
    },
    /// Put an intent in force (replacing the one of its kind).
    Intend(Intent),
    /// The intent of this kind happened: its record is written (with this message
    /// if given).
    Fulfil(IntentKind, Option<String>),
    /// The intent of this kind ends without a record.
    Abandon(IntentKind),
    /// A history entry.
    Record {
        /// Its reason.
        reason: Reason,
        /// Its message.
        message: String,
    },
    /// A bump went out (or is about to): `minInterval` counts from now.
    LastBump,
    /// A bump was pushed for review: `LastBump` and a `BumpPushed` entry.
    BumpPushed {
        /// How many image versions moved.
        rows: usize,
        /// With promotion: the upstream policy the versions were proven in.
        from: Option<String>,
    },
    /// A comment was handled (webhook and polling de-duplication).
    SeeComment(u64),
    /// Put this hold in force unless one is in force already (`Held`).
    SetHold(Hold),
    /// Lift the hold in force, if any (`Unheld`).
    ClearHold {
        /// Who lifted it.
        by: String,
    },
    /// A person asks for a rollback to the last known-good version
    /// (`RollbackRequested`, with `message`); the next reconcile acts on it.
    RequestRollback {
        /// The request.
        request: RollbackRequest,
        /// The history entry's message.
        message: String,
    },
    /// Notifications went out up to this history entry (the cursor only advances).
    Notified(u64),
}

/// The hold a bad rollout leaves.
#[derive(Debug, Clone, PartialEq)]
pub enum BadRolloutHold {
    /// autobump holds, automatically: a person's hold in force is replaced (and named
    /// in the new reason), an automatic one stays; a pending rollback request is
    /// fulfilled by this rollback.
    Automatic {
        /// `alert:NAME,…` or `autobump`.
        by: String,
        /// The full reason, with the alerts' evidence.
        reason: String,
        /// The short reason, for the history entry.
        summary: String,
    },
    /// The person whose rollback request decided it holds (unless a hold is in force
    /// already); the request is removed.
    Requested {
        /// The request.
        request: RollbackRequest,
        /// The hold's reason.
        reason: String,
    },
}

impl StateChange {
    /// The hold a bad rollout places, if `current` (the hold in force when the change
    /// is applied) lets it be placed. (`now`: when.)
    #[must_use]
    pub fn bad_rollout_hold(
        hold: &BadRolloutHold,
        current: Option<&Hold>,
        now: DateTime<Utc>,
    ) -> Option<Hold> {
        match hold {
            BadRolloutHold::Automatic { by, reason, .. } => {
                super::rollout::automatic_hold(current, by, reason, now)
            }
            BadRolloutHold::Requested { request, reason } => current.is_none().then(|| Hold {
                by: request.by.clone(),
                since: now,
                reason: reason.clone(),
                via: request.via.clone(),
                automatic: false,
            }),
        }
    }
}
