//! Applying the planner's [`StateChange`]s to a policy's state (no I/O: the store
//! calls this inside one update, on the state as it is at write time).

use chrono::{DateTime, Utc};

use super::{BadVersion, PolicyState};
use crate::core::change::{BadRolloutHold, StateChange};
use crate::core::promotion::Conditions;
use crate::core::watch::canonical;
use crate::policy::v1alpha1::{Hold, IntentKind, MergedPullRequest, Reason, Release};

impl PolicyState {
    /// Applies `changes` in order at `now`; returns the hold placed by them, if any.
    pub fn apply(&mut self, changes: &[StateChange], now: DateTime<Utc>) -> Option<Hold> {
        let mut placed = None;
        for change in changes {
            if let Some(hold) = self.apply_one(change, now) {
                placed = Some(hold);
            }
        }
        placed
    }

    fn apply_one(&mut self, change: &StateChange, now: DateTime<Utc>) -> Option<Hold> {
        match change {
            StateChange::Deployed { release, branch } => {
                self.current = Some(release.clone());
                self.bake = None;
                self.record(
                    now,
                    Reason::Deployed,
                    format!("{} is on {branch}", release.summary),
                );
            }
            StateChange::DropRollbackRequest { why } => {
                if let Some(r) = self.rollback_request.take() {
                    self.record(
                        now,
                        Reason::NothingToRollBack,
                        format!("rollback requested by {}: {}; {why}", r.by, r.reason),
                    );
                }
            }
            StateChange::Bake(progress) => self.bake = Some(progress.clone()),
            StateChange::Promote(release, conditions) => self.promote(release, conditions, now),
            StateChange::HoldForBadRollout { hold, bad } => {
                return self.hold_for_bad_rollout(hold, bad, now);
            }
            StateChange::Intend(intent) => self.intend(intent.clone()),
            StateChange::Fulfil(kind, message) => self.fulfil_merge_noted(*kind, message.clone()),
            StateChange::Abandon(kind) => self.abandon(*kind),
            StateChange::Record { reason, message } => self.record(now, *reason, message.clone()),
            StateChange::LastBump => self.last_bump = Some(now),
            StateChange::BumpPushed { rows, from } => {
                self.last_bump = Some(now);
                let promoted = from
                    .as_ref()
                    .map(|f| format!(", promoted from {f}"))
                    .unwrap_or_default();
                self.record(
                    now,
                    Reason::BumpPushed,
                    format!("{rows} image versions pushed for review{promoted}"),
                );
            }
            StateChange::SeeComment(id) => {
                self.see_comment(*id);
            }
            StateChange::SetHold(hold) => {
                if self.hold.is_none() {
                    self.hold = Some(hold.clone());
                    self.record(
                        now,
                        Reason::Held,
                        format!("held by {}: {}", hold.by, hold.reason),
                    );
                }
            }
            StateChange::ClearHold { by } => {
                if let Some(h) = self.hold.take() {
                    self.record(
                        now,
                        Reason::Unheld,
                        format!("hold by {} lifted by {by}", h.by),
                    );
                }
            }
            StateChange::RequestRollback { request, message } => {
                self.rollback_request = Some(request.clone());
                self.record(now, Reason::RollbackRequested, message.clone());
            }
            StateChange::Notified(seq) => {
                self.notified_seq = Some(self.notified_seq.unwrap_or(0).max(*seq));
            }
        }
        None
    }

    /// [`StateChange::Promote`]: `release` is the last known-good, and proven with the
    /// pull request autobump merged to deploy it (when the last one merged carried
    /// exactly its versions).
    fn promote(&mut self, release: &Release, conditions: &Conditions, now: DateTime<Utc>) {
        let merged_it = self.merged.as_ref().filter(|m| {
            !m.images.is_empty()
                && m.images.iter().all(|i| {
                    release
                        .images
                        .iter()
                        .any(|r| canonical(&r.image) == canonical(&i.image) && r.tag == i.tag)
                })
        });
        let proof = conditions.proof(release, merged_it.map(|m| m.number), now);
        crate::core::promotion::record(self, proof);
        self.last_known_good = Some(release.clone());
        self.bake = None;
        self.record(
            now,
            Reason::Promoted,
            format!("{} is the last known-good", release.summary),
        );
    }

    /// [`StateChange::Fulfil`], remembering a merged pull request and its versions.
    fn fulfil_merge_noted(&mut self, kind: IntentKind, message: Option<String>) {
        if kind == IntentKind::Merge
            && let Some(merge) = self.intent(IntentKind::Merge)
            && let Some(number) = merge.pull_request
        {
            self.merged = Some(MergedPullRequest {
                number,
                images: merge.images.clone(),
            });
        }
        self.fulfil(kind, message);
    }

    /// [`StateChange::HoldForBadRollout`]: returns the hold placed, if any.
    fn hold_for_bad_rollout(
        &mut self,
        hold: &BadRolloutHold,
        bad: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Option<Hold> {
        // The quiet period starts over: Clear readings before the alert never
        // count towards promoting this version.
        self.bake = None;
        self.rollback_request = None;
        let placed = StateChange::bad_rollout_hold(hold, self.hold.as_ref(), now);
        if let Some(new) = &placed {
            let message = match hold {
                BadRolloutHold::Automatic { by, summary, .. } => {
                    let replaced = self
                        .hold
                        .as_ref()
                        .map(|h| format!(" (replaces the hold by {})", h.by))
                        .unwrap_or_default();
                    format!("held by {by}: {summary}{replaced}")
                }
                BadRolloutHold::Requested { reason, .. } => {
                    format!("held by {}: {reason}", new.by)
                }
            };
            self.hold = Some(new.clone());
            self.record(now, Reason::Held, message);
        }
        for (image, tag) in bad {
            self.bad_versions.insert(BadVersion {
                image: image.clone(),
                tag: tag.clone(),
            });
        }
        placed
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::v1alpha1::{ImageVersion, Release, RollbackRequest};

    pub(crate) fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Prow's hook image at `tag`, deployed 2026-11-23 10:00 UTC.
    pub(crate) fn release(tag: &str) -> Release {
        Release {
            summary: tag.into(),
            images: vec![ImageVersion {
                image: "gcr.io/k8s-prow/hook".into(),
                tag: tag.into(),
                digest: None,
            }],
            since: at("2026-11-23T10:00:00Z"),
            commit: None,
        }
    }

    fn request() -> RollbackRequest {
        RollbackRequest {
            by: "cli:bob".into(),
            since: at("2026-11-23T10:05:00Z"),
            reason: "p99 doubled".into(),
            via: Some("cli".into()),
        }
    }

    fn requested(hold: Option<Hold>) -> PolicyState {
        PolicyState {
            hold,
            current: Some(release("v2")),
            last_known_good: Some(release("v1")),
            rollback_request: Some(request()),
            ..PolicyState::default()
        }
    }

    fn bad_v2() -> Vec<(String, String)> {
        vec![("gcr.io/k8s-prow/hook".to_owned(), "v2".to_owned())]
    }

    fn by_request() -> StateChange {
        StateChange::HoldForBadRollout {
            hold: BadRolloutHold::Requested {
                request: request(),
                reason: "rollback from v2 requested: p99 doubled".into(),
            },
            bad: bad_v2(),
        }
    }

    #[test]
    fn a_requested_rollback_is_held_by_the_requester_and_consumes_the_request() {
        let mut s = requested(None);
        let placed = s
            .apply(&[by_request()], at("2026-11-23T10:06:00Z"))
            .expect("a hold is placed");
        assert_eq!(
            (placed.by.as_str(), placed.automatic, placed.via.as_deref()),
            ("cli:bob", false, Some("cli"))
        );
        assert_eq!(placed.reason, "rollback from v2 requested: p99 doubled");
        assert_eq!(s.hold, Some(placed));
        assert!(s.rollback_request.is_none(), "consumed in the same update");
        assert_eq!(s.bad_pairs(), bad_v2().into_iter().collect());
        assert_eq!(
            s.history.last().unwrap().message,
            "held by cli:bob: rollback from v2 requested: p99 doubled"
        );
    }

    #[test]
    fn a_requested_rollback_keeps_a_hold_in_force() {
        let alice = Hold {
            by: "user:alice".into(),
            since: at("2026-11-23T09:00:00Z"),
            reason: "freeze".into(),
            via: None,
            automatic: false,
        };
        let mut s = requested(Some(alice.clone()));
        assert!(
            s.apply(&[by_request()], at("2026-11-23T10:06:00Z"))
                .is_none()
        );
        assert_eq!(s.hold, Some(alice));
        assert!(s.rollback_request.is_none());
        assert_eq!(s.bad_pairs().len(), 1);
    }

    #[test]
    fn an_automatic_hold_replaces_a_persons_and_says_so() {
        let alice = Hold {
            by: "user:alice".into(),
            since: at("2026-11-23T09:00:00Z"),
            reason: "freeze".into(),
            via: None,
            automatic: false,
        };
        let mut s = requested(Some(alice));
        s.bake = Some(crate::core::rollout::BakeProgress {
            version: "v2".into(),
            clear_since: Some(at("2026-11-23T10:01:00Z")),
            restarts: 0,
        });
        let change = StateChange::HoldForBadRollout {
            hold: BadRolloutHold::Automatic {
                by: "alert:HookDown".into(),
                reason: "alerts fired\n- HookDown".into(),
                summary: "alerts fired".into(),
            },
            bad: bad_v2(),
        };
        let placed = s
            .apply(std::slice::from_ref(&change), at("2026-11-23T10:06:00Z"))
            .expect("placed");
        assert!(placed.automatic);
        assert!(
            placed
                .reason
                .contains("This replaces the hold user:alice placed")
        );
        assert!(s.rollback_request.is_none(), "fulfilled by this rollback");
        assert!(s.bake.is_none(), "the quiet period starts over");
        assert_eq!(
            s.history.last().unwrap().message,
            "held by alert:HookDown: alerts fired (replaces the hold by user:alice)"
        );
        // Applied again (a second reconcile before the rollback lands): the automatic
        // hold stays as it is, with nothing recorded twice.
        let entries = s.history.len();
        assert!(s.apply(&[change], at("2026-11-23T10:07:00Z")).is_none());
        assert_eq!(s.history.len(), entries);
    }

    #[test]
    fn the_state_only_effects_apply_as_the_planner_means_them() {
        let now = at("2026-11-23T10:06:00Z");
        let mut s = PolicyState::default();
        let hold = Hold {
            by: "user:alice".into(),
            since: now,
            reason: "freeze".into(),
            via: Some("PR #3".into()),
            automatic: false,
        };
        s.apply(
            &[
                StateChange::SeeComment(7),
                StateChange::SetHold(hold.clone()),
                StateChange::SetHold(Hold {
                    by: "user:bob".into(),
                    ..hold.clone()
                }),
                StateChange::BumpPushed {
                    rows: 2,
                    from: None,
                },
            ],
            now,
        );
        assert_eq!(s.hold, Some(hold));
        assert_eq!(s.seen_comments, [7]);
        assert_eq!(s.last_bump, Some(now));
        let messages: Vec<&str> = s.history.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "held by user:alice: freeze",
                "2 image versions pushed for review"
            ]
        );
        s.apply(
            &[StateChange::ClearHold {
                by: "user:carol".into(),
            }],
            now,
        );
        assert!(s.hold.is_none());
        assert_eq!(
            s.history.last().unwrap().message,
            "hold by user:alice lifted by user:carol"
        );
    }

    /// A release that becomes known-good after autobump merged the PR carrying its
    /// versions cites that PR; one that came another way (a person's push) does not.
    #[test]
    fn a_proof_links_the_merged_pull_request_that_deployed_it() {
        use crate::core::promotion::Conditions;
        use crate::policy::v1alpha1::Intent;
        let conditions = Conditions {
            bake: "1h".into(),
            gate: None,
            web: Some("https://github.com/example/test-infra".into()),
            forge: crate::policy::v1alpha1::ForgeKind::GitHub,
        };
        let mut s = PolicyState::default();
        let merge = Intent {
            pull_request: Some(12),
            images: release("v2").images,
            ..Intent::new(
                IntentKind::Merge,
                Some(Reason::Merged),
                "PR #12 merged".into(),
                at("2026-11-23T10:00:00Z"),
            )
        };
        s.apply(
            &[
                StateChange::Intend(merge),
                StateChange::Fulfil(IntentKind::Merge, None),
                StateChange::Promote(release("v2"), conditions.clone()),
            ],
            at("2026-11-23T11:00:00Z"),
        );
        assert_eq!(
            s.proven[0].pull_request_url.as_deref(),
            Some("https://github.com/example/test-infra/pull/12")
        );
        assert_eq!(s.proven[0].known_good_at, at("2026-11-23T11:00:00Z"));
        // v3 reached the branch some other way: no PR to cite.
        s.apply(
            &[StateChange::Promote(release("v3"), conditions)],
            at("2026-11-23T12:00:00Z"),
        );
        assert_eq!(s.proven[1].pull_request_url, None);
    }
}
