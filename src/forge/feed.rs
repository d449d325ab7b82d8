//! What GitHub's webhooks have said, so reads that nothing can have changed are
//! skipped, and commands written where no reconcile looks (a closed autobump PR) are
//! still acted on.
//!
//! The [`WebhookFeed`] is shared by the `/webhooks/github` receiver, which
//! [records](WebhookFeed::record) every authenticated delivery, and the [`GitHub`]
//! client, which may answer a read from its last answer when
//!
//! * deliveries of that kind have been arriving (one `issue_comment` delivery proves
//!   the hook is subscribed to comments; one `status` to statuses; one `check_run` or
//!   `check_suite` to check runs: a hook without them is never trusted), and
//! * no delivery about that PR or commit came in since the last read started (a
//!   generation counter makes this race-free), and
//! * the last read is younger than the resync period (a lost delivery delays, at most
//!   by that much).
//!
//! Such answers only ever feed decisions to *wait*: the controller reads again, from
//! GitHub, before anything merges (see `controller::observe_pr`).
//!
//! [`GitHub`]: super::GitHub

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::webhook::{ChecksKind, WebhookEvent};
use super::{Comment, RepoName};

/// What kind of read an answer from memory stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watch {
    /// A PR's comments (`issue_comment` deliveries).
    Comments,
    /// A commit's statuses (`status` deliveries).
    Statuses,
    /// A commit's check runs (`check_run` and `check_suite` deliveries).
    CheckRuns,
}

/// A command comment delivered by webhook on a PR that carries a policy's marker
/// (open or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredComment {
    /// The PR it was written on.
    pub pr: u64,
    /// Whether that PR was open when the comment was written.
    pub pr_open: bool,
    /// That PR's author (the reconcile takes commands only from its bot's PRs).
    pub pr_author: String,
    /// The comment.
    pub comment: Comment,
}

/// How many PRs and commits the feed remembers deliveries for; older ones are forgotten
/// and then count as changed (never as unchanged).
const KEYS: usize = 4096;
/// How many delivered command comments wait for their policy's reconcile.
const COMMANDS: usize = 256;

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    /// The generation of the first delivery of each kind (0: none yet); answers read
    /// before it are not trusted (changes then may have gone undelivered).
    live_since: [u64; 3],
    /// The generation of the last delivery about a key (`owner/repo#N`, `owner/repo@sha`).
    last: HashMap<String, u64>,
    order: VecDeque<String>,
    /// Deliveries older than this were forgotten.
    floor: u64,
    /// Command comments by policy marker, oldest first.
    commands: VecDeque<(RepoName, String, DeliveredComment)>,
}

/// Shared between the webhook receiver and the GitHub client; see the module docs.
#[derive(Debug)]
pub struct WebhookFeed {
    /// Whole seconds (set once at start-up, read on every relaxed read).
    resync_secs: AtomicI64,
    inner: Mutex<Inner>,
}

impl WebhookFeed {
    /// A feed whose answers from memory are never older than `resync`.
    #[must_use]
    pub fn new(resync: chrono::Duration) -> Self {
        Self {
            resync_secs: AtomicI64::new(resync.num_seconds()),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The longest an answer from memory may be trusted.
    #[must_use]
    pub fn resync(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.resync_secs.load(Ordering::Relaxed))
    }

    /// Changes [`resync`](Self::resync) (zero: never answer from memory).
    pub fn set_resync(&self, resync: chrono::Duration) {
        self.resync_secs
            .store(resync.num_seconds().max(0), Ordering::Relaxed);
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update; the maps stay usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation now; take it before a read, store it with the answer.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.inner().generation
    }

    /// The key of a PR's comments.
    #[must_use]
    pub fn pr_key(repo: &RepoName, number: u64) -> String {
        format!("{}/{}#{number}", repo.owner, repo.name).to_ascii_lowercase()
    }

    /// The key of a commit's checks.
    #[must_use]
    pub fn sha_key(repo: &RepoName, sha: &str) -> String {
        format!("{}/{}@{sha}", repo.owner, repo.name).to_ascii_lowercase()
    }

    /// Takes note of an authenticated delivery.
    pub fn record(&self, event: &WebhookEvent) {
        let mut inner = self.inner();
        inner.generation += 1;
        let generation = inner.generation;
        let (watch, key) = match event {
            WebhookEvent::IssueComment(c) => {
                if c.is_pull_request
                    && crate::core::commands::parse(&c.body).is_some()
                    && matches!(
                        c.action,
                        super::webhook::CommentAction::Created
                            | super::webhook::CommentAction::Edited
                    )
                    && let Some(policy) = crate::core::pr::marked_policy(&c.issue_body)
                {
                    inner.commands.push_back((
                        c.repo.clone(),
                        policy.to_owned(),
                        DeliveredComment {
                            pr: c.number,
                            pr_open: c.issue_open,
                            pr_author: c.issue_author.clone(),
                            comment: Comment {
                                id: c.comment_id,
                                body: c.body.clone(),
                                author: c.author.clone(),
                                created_at: c.created_at,
                                updated_at: c.updated_at,
                                html_url: c.html_url.clone(),
                            },
                        },
                    ));
                    while inner.commands.len() > COMMANDS {
                        inner.commands.pop_front();
                    }
                }
                (Some(Watch::Comments), Self::pr_key(&c.repo, c.number))
            }
            WebhookEvent::Checks(c) => (
                Some(match c.kind {
                    ChecksKind::Status => Watch::Statuses,
                    ChecksKind::CheckRun => Watch::CheckRuns,
                }),
                Self::sha_key(&c.repo, &c.sha),
            ),
            WebhookEvent::PullRequest(p) => (None, Self::pr_key(&p.repo, p.number)),
            WebhookEvent::Ping | WebhookEvent::Other { .. } => return,
        };
        if let Some(watch) = watch
            && inner.live_since[watch as usize] == 0
        {
            inner.live_since[watch as usize] = generation;
        }
        if inner.last.insert(key.clone(), generation).is_none() {
            inner.order.push_back(key);
            while inner.order.len() > KEYS {
                if let Some(old) = inner.order.pop_front()
                    && let Some(g) = inner.last.remove(&old)
                {
                    inner.floor = inner.floor.max(g);
                }
            }
        }
    }

    /// Whether an answer about `key` read from generation `since` on still stands: the
    /// hook delivered `watch` events before that read, and none about `key` since.
    #[must_use]
    pub fn unchanged(&self, watch: Watch, key: &str, since: u64) -> bool {
        let inner = self.inner();
        let live_since = inner.live_since[watch as usize];
        live_since > 0
            && since >= live_since
            && since >= inner.floor
            && inner.last.get(key).is_none_or(|g| *g <= since)
    }

    /// The command comments delivered on `policy`'s PRs in `repo`, oldest first. They
    /// stay until pushed out by newer ones; the reconcile skips those it has seen.
    #[must_use]
    pub fn commands(&self, repo: &RepoName, policy: &str) -> Vec<DeliveredComment> {
        self.inner()
            .commands
            .iter()
            .filter(|(r, p, _)| r == repo && p == policy)
            .map(|(_, _, c)| c.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::forge::webhook::{ChecksEvent, CommentAction, IssueCommentEvent};

    fn repo() -> RepoName {
        RepoName::parse("acme/infra").unwrap()
    }

    fn comment(number: u64, body: &str, issue_body: &str) -> WebhookEvent {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        WebhookEvent::IssueComment(IssueCommentEvent {
            action: CommentAction::Created,
            repo: repo(),
            number,
            is_pull_request: true,
            issue_open: false,
            issue_author: "autobump-bot".into(),
            issue_body: issue_body.into(),
            comment_id: number * 10,
            body: body.into(),
            author: "alice".into(),
            created_at: at,
            updated_at: at,
            html_url: format!("https://github.com/acme/infra/pull/{number}#c"),
            sender: "alice".into(),
        })
    }

    fn checks(kind: ChecksKind, sha: &str) -> WebhookEvent {
        WebhookEvent::Checks(ChecksEvent {
            kind,
            repo: repo(),
            sha: sha.into(),
        })
    }

    #[test]
    fn nothing_is_trusted_until_deliveries_of_that_kind_arrive() {
        let feed = WebhookFeed::new(chrono::Duration::minutes(10));
        let key = WebhookFeed::sha_key(&repo(), "abc");
        assert!(!feed.unchanged(Watch::CheckRuns, &key, feed.generation()));
        feed.record(&checks(ChecksKind::Status, "other"));
        assert!(feed.unchanged(Watch::Statuses, &key, feed.generation()));
        assert!(!feed.unchanged(Watch::CheckRuns, &key, feed.generation()));
        assert!(!feed.unchanged(Watch::Comments, "acme/infra#1", feed.generation()));
    }

    #[test]
    fn a_delivery_after_the_read_started_invalidates_the_answer() {
        let feed = WebhookFeed::new(chrono::Duration::minutes(10));
        feed.record(&checks(ChecksKind::CheckRun, "old"));
        let before_read = feed.generation();
        let key = WebhookFeed::sha_key(&repo(), "ABC");
        assert!(feed.unchanged(Watch::CheckRuns, &key, before_read));
        feed.record(&checks(ChecksKind::CheckRun, "abc"));
        assert!(!feed.unchanged(Watch::CheckRuns, &key, before_read));
        assert!(feed.unchanged(Watch::CheckRuns, &key, feed.generation()));
        // A comment on a PR changes nothing about commits.
        feed.record(&comment(7, "lgtm", ""));
        assert!(feed.unchanged(Watch::CheckRuns, &key, feed.generation() - 1));
        let pr = WebhookFeed::pr_key(&repo(), 7);
        assert!(!feed.unchanged(Watch::Comments, &pr, feed.generation() - 1));
    }

    #[test]
    fn forgotten_keys_count_as_changed() {
        let feed = WebhookFeed::new(chrono::Duration::minutes(10));
        feed.record(&checks(ChecksKind::CheckRun, "first"));
        let early = feed.generation();
        for i in 0..=KEYS {
            feed.record(&checks(ChecksKind::CheckRun, &format!("sha{i}")));
        }
        let never_seen = WebhookFeed::sha_key(&repo(), "never");
        assert!(!feed.unchanged(Watch::CheckRuns, &never_seen, early));
        assert!(feed.unchanged(Watch::CheckRuns, &never_seen, feed.generation()));
    }

    #[test]
    fn commands_on_autobump_prs_are_kept_by_policy() {
        let feed = WebhookFeed::new(chrono::Duration::minutes(10));
        let marked = crate::core::pr::marker("web");
        feed.record(&comment(3, "/hold flaky db", &marked));
        feed.record(&comment(4, "just talk", &marked));
        feed.record(&comment(5, "/hold", "no marker"));
        let got = feed.commands(&repo(), "web");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].pr, got[0].pr_open), (3, false));
        assert_eq!(got[0].pr_author, "autobump-bot");
        assert_eq!(got[0].comment.body, "/hold flaky db");
        assert!(feed.commands(&repo(), "api").is_empty());
    }
}
