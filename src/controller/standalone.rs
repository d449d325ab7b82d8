//! The standalone driver (`autobump run --policies DIR --state PATH`): no cluster,
//! policies from files, state in a local SQLite database (does I/O).
//!
//! Each tick reloads the policy files. A policy whose file became invalid keeps its
//! last good version in force (each new problem is logged once, and counted every
//! tick), and never stops the others. Once policies have loaded, a load that fails
//! as a whole (the folder missing while it is swapped, a file that vanished, no file
//! descriptors left) never stops the driver either: the last good policies run, the
//! failure is counted and logged once per change, and [`LoadHealth`] tells `/readyz`
//! how long it has lasted. Each policy's gate is read fresh, then the policy is
//! reconciled by the direct-push or the pull-request flow.
//!
//! Policies reconcile concurrently, at most [`Standalone::with_concurrency`] at a
//! time, each within its own deadline ([`Standalone::with_reconcile_timeout`]): a
//! slow or hostile registry, remote or API delays no other policy by more than that.
//! A stop request cancels the reconciles still running after a short grace period
//! ([`SHUTDOWN_GRACE`]); a cancelled reconcile is like a crash at that point, which
//! the intents in the state make safe to resume.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use chrono::{DateTime, Utc};

use super::{Deps, ForgeAccess, ReconcileError, Report, reconcile_read};
use crate::alerts::{AlertsClient, AlertsConfig, read_gate};
use tracing::Instrument as _;

use crate::clock::{Clock, Deadline, Stopwatch};
use crate::cluster::{DynWorkloads, KubeWorkloads};
use crate::core::change::StateChange;
use crate::core::gate::GateVerdict;
use crate::forge::{GitHub, GitHubAuth, GitHubConfig, WebhookFeed};
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier, NotifierConfig};
use crate::policy::health::{Change, DEFAULT_NOT_READY_AFTER, LoadHealth};
use crate::policy::{self, Diagnostic, Policy};
use crate::registry::RegistryClient;
use crate::repo::{Auth, GitRepo, Source, github_git_host, github_token_applies, redact_url};
use crate::resolve::Resolver;
use crate::store::{PolicyState, SqliteStore, Store};

/// How the standalone driver reaches the outside world.
pub struct Config {
    /// The policy directory (or files).
    pub policies: Vec<PathBuf>,
    /// The state database (`--state`; see [`crate::store::sqlite::StatePaths`]).
    pub state: PathBuf,
    /// A GitHub token, for pull-request policies and HTTPS git on GitHub.
    pub github_token: Option<String>,
    /// The GitHub API base URL.
    pub github_api: String,
    /// The bot login when a policy names none.
    pub bot_login: Option<String>,
    /// An SSH private key for `ssh://` and `user@host:` repositories.
    pub ssh_key: Option<PathBuf>,
}

/// With GitHub webhooks, the longest a read that deliveries prove unchanged is
/// answered from memory before it is read again anyway, unless
/// [`Standalone::with_github_resync`] says otherwise.
pub const DEFAULT_GITHUB_RESYNC_MINUTES: i64 = 10;

/// Policies reconciled at once, unless [`Standalone::with_concurrency`] says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The longest one policy's reconcile may take, unless
/// [`Standalone::with_reconcile_timeout`] says otherwise.
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(300);

/// After a stop request, how long the reconciles in flight may go on before they are
/// cancelled (well within the 10 s a Kubernetes `terminationGracePeriodSeconds` of
/// 30 s, or a service manager, allows before SIGKILL).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How often a running tick looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The outcome of one policy in one tick.
#[derive(Debug)]
pub enum PolicyOutcome {
    /// Reconciled.
    Done(Report),
    /// The reconcile failed (retried next tick when retryable).
    Failed(ReconcileError),
    /// Not run, and why.
    Skipped(String),
}

/// One tick's results.
#[derive(Debug, Default)]
pub struct Tick {
    /// Each policy's outcome, by name.
    pub outcomes: BTreeMap<String, PolicyOutcome>,
    /// Problems in the policy files (the last good version of those policies ran).
    pub diagnostics: Vec<Diagnostic>,
    /// Why the policies could not be loaded at all this tick (the last good ones ran).
    pub load_error: Option<String>,
}

impl Tick {
    /// Whether every policy reconciled and every file loaded.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.diagnostics.is_empty()
            && self.load_error.is_none()
            && self
                .outcomes
                .values()
                .all(|o| matches!(o, PolicyOutcome::Done(_)))
    }
}

/// The standalone driver.
pub struct Standalone {
    config: Config,
    clock: Arc<dyn Clock>,
    resolver: Resolver<RegistryClient>,
    repo: GitRepo,
    store: SqliteStore,
    alerts: AlertsClient,
    github: Option<GitHub>,
    /// What `/webhooks/github` deliveries said (see [`WebhookFeed`]).
    feed: Arc<WebhookFeed>,
    /// The last valid version of every policy seen.
    last_good: BTreeMap<String, Policy>,
    /// Whether the policy files have loaded at least once.
    loaded_once: bool,
    /// The problems of the last load, to log only new ones.
    last_diagnostics: std::collections::HashSet<Diagnostic>,
    /// How loading goes (for `/readyz`).
    load_health: Arc<LoadHealth>,
    metrics: Arc<Metrics>,
    /// The cluster, when a kubeconfig (or in-cluster config) is available.
    workloads: Option<KubeWorkloads>,
    notifier: Notifier,
    /// Policies reconciled at once.
    concurrency: usize,
    /// Each policy's reconcile deadline.
    reconcile_timeout: Duration,
    /// The host whose git remotes get the GitHub token (see
    /// [`Standalone::with_github_git_host`]).
    github_git_host: Option<String>,
}

impl Standalone {
    /// A driver with these adapters.
    pub fn new(
        config: Config,
        clock: Arc<dyn Clock>,
        registry: RegistryClient,
        repo: GitRepo,
    ) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new(Arc::clone(&clock)));
        metrics.attach_registry(registry.stats());
        metrics.set_leader(true);
        let feed = Arc::new(WebhookFeed::new(chrono::Duration::minutes(
            DEFAULT_GITHUB_RESYNC_MINUTES,
        )));
        let github = match &config.github_token {
            Some(token) => Some(
                GitHub::new(
                    GitHubConfig::new(GitHubAuth::Token(token.clone()))
                        .api_url(config.github_api.clone()),
                    Arc::clone(&clock),
                )
                .map_err(|e| format!("GitHub client: {e}"))?
                .with_feed(Arc::clone(&feed)),
            ),
            None => None,
        };
        if let Some(github) = &github {
            metrics.attach_forge(github.stats());
        }
        let notifier = Notifier::new(NotifierConfig::default(), Arc::clone(&clock))
            .map_err(|e| format!("notifier: {e}"))?;
        let github_git_host = github_git_host(&config.github_api);
        Ok(Self {
            store: SqliteStore::deferred(&config.state),
            alerts: AlertsClient::new(AlertsConfig::default())
                .map_err(|e| format!("alert client: {e}"))?,
            resolver: Resolver::new(registry),
            repo,
            github,
            feed,
            load_health: Arc::new(LoadHealth::new(Arc::clone(&clock), DEFAULT_NOT_READY_AFTER)),
            clock,
            config,
            last_good: BTreeMap::new(),
            loaded_once: false,
            last_diagnostics: std::collections::HashSet::new(),
            metrics,
            workloads: None,
            notifier,
            concurrency: DEFAULT_CONCURRENCY,
            reconcile_timeout: DEFAULT_RECONCILE_TIMEOUT,
            github_git_host,
        })
    }

    /// Sends the GitHub token to git remotes on `host` (`HOST[:PORT]`) instead of the
    /// host derived from the API URL (`github.com` for `https://api.github.com`, `HOST`
    /// for `https://HOST/api/v3`); see [`github_token_applies`].
    #[must_use]
    pub fn with_github_git_host(mut self, host: impl Into<String>) -> Self {
        self.github_git_host = Some(host.into());
        self
    }

    /// Reconciles at most `n` policies at once (at least 1).
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Cancels a policy's reconcile (and then separately its notifications) that takes
    /// longer than `timeout`; it fails with [`ReconcileError::Deadline`] and is tried
    /// again next tick.
    #[must_use]
    pub fn with_reconcile_timeout(mut self, timeout: Duration) -> Self {
        self.reconcile_timeout = timeout;
        self
    }

    /// Observes rollouts and patches workloads (`rollout.workloads`,
    /// `rollback.patchCluster`) through this cluster.
    #[must_use]
    pub fn with_cluster(mut self, workloads: KubeWorkloads) -> Self {
        self.workloads = Some(workloads);
        self
    }

    /// With GitHub webhooks: re-read what deliveries prove unchanged at least this
    /// often anyway (a lost delivery then delays a merge by at most this; it never
    /// causes one).
    #[must_use]
    pub fn with_github_resync(self, resync: chrono::Duration) -> Self {
        self.feed.set_resync(resync);
        self
    }

    /// `/readyz` says not ready once loading the policies has failed for longer than
    /// this (default [`DEFAULT_NOT_READY_AFTER`]).
    #[must_use]
    pub fn with_not_ready_after(mut self, after: std::time::Duration) -> Self {
        self.load_health = Arc::new(LoadHealth::new(Arc::clone(&self.clock), after));
        self
    }

    /// How loading the policy files goes (what `/readyz` reads).
    #[must_use]
    pub fn load_health(&self) -> Arc<LoadHealth> {
        Arc::clone(&self.load_health)
    }

    /// Where the `/webhooks/github` receiver records deliveries for this driver's
    /// GitHub client.
    #[must_use]
    pub fn webhook_feed(&self) -> Arc<WebhookFeed> {
        Arc::clone(&self.feed)
    }

    /// The metrics this driver records (served on `/metrics`).
    #[must_use]
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Forgets what the resolver cached about an image (after a registry push).
    pub fn invalidate(&self, canonical: &str) {
        self.resolver.invalidate(canonical);
    }

    /// Reloads the policy files: valid policies replace their last good version; an
    /// invalid file leaves the last good version of its policies in force. Returns the
    /// problems of the files, or `None` when the load failed as a whole after an
    /// earlier one worked (the last good policies stay; the failure is counted, and
    /// logged when it is new). A failure before any load worked is the error.
    fn reload(&mut self) -> Result<Option<Vec<Diagnostic>>, policy::LoadError> {
        let loaded = match policy::load_paths(&self.config.policies) {
            Ok(loaded) => loaded,
            Err(e) if !self.loaded_once => return Err(e),
            Err(e) => {
                self.metrics.policy_load_failed();
                if self.load_health.failed(&e.to_string()) == Change::NewError {
                    tracing::error!(
                        error = %e,
                        kind = e.metric_label(),
                        policies = self.last_good.len(),
                        "loading the policies failed; the last good policies stay in force"
                    );
                }
                return Ok(None);
            }
        };
        self.loaded_once = true;
        if self.load_health.loaded() == Change::Recovered {
            tracing::info!("the policies load again");
        }
        let broken: std::collections::BTreeSet<&std::path::Path> = loaded
            .diagnostics
            .iter()
            .map(|d| d.file.as_path())
            .collect();
        let present: std::collections::BTreeSet<&str> =
            loaded.policies.iter().map(Policy::name).collect();
        // A policy no file defines any more is gone, unless its file is broken now.
        self.last_good.retain(|name, p| {
            present.contains(name.as_str()) || broken.contains(p.origin.file.as_path())
        });
        for p in loaded.policies {
            self.last_good.insert(p.name().to_owned(), p);
        }
        Ok(Some(loaded.diagnostics))
    }

    fn source(&self, policy: &Policy) -> Source {
        let url = policy.spec.source.repo.clone();
        let text = url.as_str();
        let auth = if text.starts_with("https://") || text.starts_with("http://") {
            // The token is GitHub's: it goes to the GitHub host of --github-api over
            // HTTPS and nowhere else (a policy naming another host would collect it).
            match &self.config.github_token {
                Some(token)
                    if self
                        .github_git_host
                        .as_deref()
                        .is_some_and(|host| github_token_applies(text, host)) =>
                {
                    Auth::github_token(token.clone())
                }
                Some(_) => {
                    tracing::debug!(
                        repo = %redact_url(text),
                        "not the GitHub host over https: no GITHUB_TOKEN for this remote"
                    );
                    Auth::None
                }
                None => Auth::None,
            }
        } else if text.starts_with("file://") {
            Auth::None
        } else {
            self.config
                .ssh_key
                .clone()
                .map_or(Auth::None, |key| Auth::SshKey {
                    username: None,
                    private_key: key,
                    public_key: None,
                    passphrase: None,
                })
        };
        Source {
            url,
            branch: policy.spec.source.branch.clone(),
            auth,
        }
    }

    /// One pass over every policy, several at once (see the module docs). Once `stop`
    /// is set no further policy starts, and the reconciles in flight are cancelled
    /// after [`SHUTDOWN_GRACE`].
    pub async fn tick(&mut self, stop: &AtomicBool) -> Result<Tick, policy::LoadError> {
        let diagnostics = self.reload()?.inspect(|diagnostics| {
            self.metrics.policies_loaded(diagnostics.len());
            // Each problem is logged when it appears, not every tick.
            for d in diagnostics.iter().filter(|d| !self.last_diagnostics.contains(d)) {
                tracing::warn!(problem = %d, "invalid policy file; its last good version stays in force");
            }
        });
        if let Some(diagnostics) = &diagnostics {
            self.last_diagnostics = diagnostics.iter().cloned().collect();
        }
        let mut tick = Tick {
            diagnostics: diagnostics.unwrap_or_default(),
            load_error: self.load_health.error(),
            ..Tick::default()
        };
        let policies: Vec<Policy> = self.last_good.values().cloned().collect();
        self.reconcile_all(policies, stop, &mut tick).await;
        Ok(tick)
    }

    /// Reconciles `policies`, at most `concurrency` at a time, each within its
    /// deadline. Once `stop` is set no policy starts; the ones running get
    /// [`SHUTDOWN_GRACE`] to finish, then are cancelled (recorded as skipped).
    async fn reconcile_all(&self, policies: Vec<Policy>, stop: &AtomicBool, tick: &mut Tick) {
        let mut waiting = policies.into_iter();
        let mut running = FuturesUnordered::new();
        let mut in_flight = BTreeSet::new();
        let mut stopping: Option<Deadline> = None;
        loop {
            if stopping.is_none() && stop.load(Ordering::SeqCst) {
                stopping = Some(Deadline::after(SHUTDOWN_GRACE));
            }
            while stopping.is_none() && running.len() < self.concurrency {
                let Some(p) = waiting.next() else { break };
                in_flight.insert(p.name().to_owned());
                running.push(self.reconcile_one(p));
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                Some((name, outcome)) = running.next() => {
                    in_flight.remove(&name);
                    tick.outcomes.insert(name, outcome);
                }
                () = tokio::time::sleep(STOP_POLL) => {}
            }
            if stopping.is_some_and(|d| d.expired()) {
                break;
            }
        }
        drop(running);
        for name in in_flight {
            tracing::warn!(policy = %name, "reconcile cancelled: shutting down");
            tick.outcomes.insert(
                name,
                PolicyOutcome::Skipped("cancelled: shutting down".to_owned()),
            );
        }
    }

    /// One policy's reconcile within its deadline, then its accounting and
    /// notifications.
    async fn reconcile_one(&self, p: Policy) -> (String, PolicyOutcome) {
        // Decisions and records need no sub-second precision; whole seconds keep
        // status and messages readable.
        let now = chrono::SubsecRound::trunc_subsecs(self.clock.now(), 0);
        let span = tracing::info_span!("reconcile", policy = p.name());
        let watch = Stopwatch::start();
        let outcome = self
            .reconcile_bounded(&p, &self.store, now)
            .instrument(span.clone())
            .await;
        let state =
            span.in_scope(|| self.account(p.name(), &self.store, &outcome, watch.elapsed()));
        if let Some(state) = state {
            let notify = self
                .notify(&p, &self.store, &state, now)
                .instrument(span.clone());
            if tokio::time::timeout(self.reconcile_timeout, notify)
                .await
                .is_err()
            {
                span.in_scope(|| {
                    tracing::warn!("notifications cancelled at the reconcile deadline");
                });
            }
        }
        (p.name().to_owned(), outcome)
    }

    /// Metrics and logs of one policy's reconcile, and the history it wrote
    /// (also entries written by other processes, e.g. `autobump hold`). Returns the
    /// policy's state as it stands now (for [`Self::notify`]), `None` if unreadable.
    pub fn account<S: Store>(
        &self,
        name: &str,
        store: &S,
        outcome: &PolicyOutcome,
        took: std::time::Duration,
    ) -> Option<PolicyState> {
        match outcome {
            PolicyOutcome::Done(report) => {
                self.metrics.reconciled(name, None, took);
                for effect in &report.effects {
                    tracing::info!(effect = ?effect, "effect");
                }
                for problem in &report.registry_problems {
                    tracing::warn!(problem = %problem, "registry");
                }
            }
            PolicyOutcome::Failed(e) => {
                self.metrics.reconciled(name, Some(e.metric_label()), took);
                tracing::error!(error = %e, retryable = e.is_retryable(), "reconcile failed");
            }
            PolicyOutcome::Skipped(why) => tracing::warn!(reason = %why, "skipped"),
        }
        match store.load(name) {
            Ok(state) => {
                self.metrics.observe_state(name, &state);
                Some(state)
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the policy's state after its reconcile");
                None
            }
        }
    }

    /// Sends the notifications `p` asks for, one per history entry not sent yet.
    ///
    /// The cursor (`notified_seq`) advances *before* each send: a crash can lose the
    /// notification in flight but never sends one twice (webhook receivers also get
    /// an `Idempotency-Key`). A target that still fails after the notifier's retries
    /// is logged and skipped. The first round of a policy sends only the last day's
    /// entries, not its whole past.
    pub async fn notify<S: Store>(
        &self,
        p: &Policy,
        store: &S,
        state: &PolicyState,
        now: DateTime<Utc>,
    ) {
        if p.spec.notify.is_empty() {
            return;
        }
        let name = p.name();
        let cursor = state.notified_seq.unwrap_or_else(|| {
            state
                .history
                .iter()
                .filter(|e| now - e.at > chrono::TimeDelta::days(1))
                .map(|e| e.seq)
                .max()
                .unwrap_or(0)
        });
        let namespace = p.metadata.namespace.as_ref().map(ToString::to_string);
        for entry in state.history.iter().filter(|e| e.seq > cursor) {
            let advanced = store.update(name, &mut |s| {
                s.apply(&[StateChange::Notified(entry.seq)], now);
            });
            if let Err(e) = advanced {
                tracing::error!(error = %e, "recording the notification cursor; not sending");
                return;
            }
            let id = format!(
                "{}/{name}/{}",
                namespace.as_deref().unwrap_or("-"),
                entry.seq
            );
            let Some(mut notification) = Notification::from_history(id, name, entry) else {
                continue;
            };
            if let Some(ns) = &namespace {
                notification = notification.with_namespace(ns.clone());
            }
            for target in &p.spec.notify {
                if let Err(e) = self.notifier.deliver(target, &notification).await {
                    tracing::warn!(
                        target = %crate::notify::describe_target(target),
                        error = %e,
                        kind = e.metric_label(),
                        "notification not delivered"
                    );
                }
            }
        }
    }

    /// [`Self::reconcile_in`] within the reconcile deadline
    /// ([`Self::with_reconcile_timeout`]): past it the reconcile is cancelled and fails
    /// with [`ReconcileError::Deadline`].
    pub async fn reconcile_bounded<S: Store>(
        &self,
        p: &Policy,
        store: &S,
        now: DateTime<Utc>,
    ) -> PolicyOutcome {
        match tokio::time::timeout(self.reconcile_timeout, self.reconcile_in(p, store, now)).await {
            Ok(outcome) => outcome,
            Err(_) => PolicyOutcome::Failed(ReconcileError::Deadline(self.reconcile_timeout)),
        }
    }

    /// One reconcile of `p` with its state in `store` (the state file standalone; the
    /// object's status in-cluster): the gate read fresh, then the direct-push or the
    /// pull-request flow.
    pub async fn reconcile_in<S: Store>(
        &self,
        p: &Policy,
        store: &S,
        now: DateTime<Utc>,
    ) -> PolicyOutcome {
        let reading = read_gate(&self.alerts, p.spec.gate.as_ref()).await;
        let verdict = &reading.verdict;
        self.metrics.gate(p.name(), verdict);
        if let GateVerdict::Unknown(why) = verdict {
            tracing::warn!(why = %why, "gate unknown: nothing merges or gets promoted");
        }
        let forge = match ForgeAccess::for_policy(
            p,
            self.github.as_ref(),
            self.config.bot_login.as_deref(),
        ) {
            Ok(forge) => forge,
            Err(why) => return PolicyOutcome::Skipped(why),
        };
        let deps = Deps {
            resolver: &self.resolver,
            repo: &self.repo,
            store,
            source: self.source(p),
            workloads: self.workloads.as_ref().map(|w| w as &dyn DynWorkloads),
            forge,
        };
        let result = reconcile_read(p, &deps, &reading, now).await;
        match result {
            Ok(report) => PolicyOutcome::Done(report),
            Err(e) => PolicyOutcome::Failed(e),
        }
    }
}
