//! The standalone driver (`autobump run --policies DIR --state PATH`): no cluster,
//! policies from files, state in a local SQLite database (does I/O).
//!
//! Each tick reloads the policy files. A policy whose file became invalid keeps its
//! last good version in force (each new problem is logged once, and counted every
//! tick), and never stops the others. Once policies have loaded, a load that fails
//! as a whole (the folder missing while it is swapped, a file that vanished, no file
//! descriptors left) never stops the driver either: the last good policies run, the
//! failure is counted and logged once per change, and [`LoadHealth`] tells `/readyz`
//! how long it has lasted. Each policy then takes its turn through the
//! [`Engine`](super::engine::Engine), as in cluster mode.
//!
//! Policies reconcile concurrently, at most [`Standalone::with_concurrency`] at a
//! time, each within its own deadline ([`Engine::with_reconcile_timeout`]): a
//! slow or hostile registry, remote or API delays no other policy by more than that.
//! A stop request cancels the reconciles still running after a short grace period
//! ([`SHUTDOWN_GRACE`]); a cancelled reconcile is like a crash at that point, which
//! the intents in the state make safe to resume.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

pub use super::engine::PolicyOutcome;
use super::engine::ProductionEngine;
use crate::clock::Deadline;
use crate::forge::WebhookFeed;
use crate::metrics::Metrics;
use crate::policy::health::{Change, DEFAULT_NOT_READY_AFTER, LoadHealth};
use crate::policy::{self, Diagnostic, Policy};
use crate::store::SqliteStore;

/// Where the standalone driver's policies and state are.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy directory (or files).
    pub policies: Vec<PathBuf>,
    /// The state database (`--state`; see [`crate::store::sqlite::StatePaths`]).
    pub state: PathBuf,
}

/// Policies reconciled at once, unless [`Standalone::with_concurrency`] says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// After a stop request, how long the reconciles in flight may go on before they are
/// cancelled (well within the 10 s a Kubernetes `terminationGracePeriodSeconds` of
/// 30 s, or a service manager, allows before SIGKILL).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How often a running tick looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

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
    engine: ProductionEngine,
    store: SqliteStore,
    /// What `/webhooks/github` deliveries said (see [`WebhookFeed`]).
    feed: Arc<WebhookFeed>,
    /// The last valid version of every policy seen (shared with the pass that runs
    /// it: a tick hands out references, not a copy of every policy).
    last_good: BTreeMap<String, Arc<Policy>>,
    /// Whether the policy files have loaded at least once.
    loaded_once: bool,
    /// The problems of the last load, to log only new ones.
    last_diagnostics: std::collections::HashSet<Diagnostic>,
    /// The policy files as last parsed (unchanged files are not parsed again).
    load_cache: policy::LoadCache,
    /// How loading goes (for `/readyz`).
    load_health: Arc<LoadHealth>,
    metrics: Arc<Metrics>,
    /// Policies reconciled at once.
    concurrency: usize,
}

impl Standalone {
    /// A driver running the policies and state of `config` through `engine`, whose
    /// GitHub client records webhook deliveries in `feed`.
    #[must_use]
    pub fn new(config: Config, engine: ProductionEngine, feed: Arc<WebhookFeed>) -> Self {
        let metrics = engine.metrics();
        metrics.set_leader(true);
        let clock = engine.clock();
        Self {
            store: SqliteStore::deferred(&config.state),
            load_health: Arc::new(LoadHealth::new(clock, DEFAULT_NOT_READY_AFTER)),
            engine,
            feed,
            config,
            last_good: BTreeMap::new(),
            loaded_once: false,
            last_diagnostics: std::collections::HashSet::new(),
            load_cache: policy::LoadCache::default(),
            metrics,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Reconciles at most `n` policies at once (at least 1).
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// `/readyz` says not ready once loading the policy files has failed for longer
    /// than this (default [`DEFAULT_NOT_READY_AFTER`]).
    #[must_use]
    pub fn with_not_ready_after(mut self, after: Duration) -> Self {
        self.load_health = Arc::new(LoadHealth::new(self.engine.clock(), after));
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
        self.engine.invalidate(canonical);
    }

    /// Reloads the policy files: valid policies replace their last good version; an
    /// invalid file leaves the last good version of its policies in force. Returns the
    /// problems of the files, or `None` when the load failed as a whole after an
    /// earlier one worked (the last good policies stay; the failure is counted, and
    /// logged when it is new). A failure before any load worked is the error.
    fn reload(&mut self) -> Result<Option<Vec<Diagnostic>>, policy::LoadError> {
        let loaded = match policy::load_paths_cached(&self.config.policies, &mut self.load_cache) {
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
            loaded.policies.iter().map(|p| p.name()).collect();
        // A policy no file defines any more is gone, unless its file is broken now.
        self.last_good.retain(|name, p| {
            present.contains(name.as_str()) || broken.contains(p.origin.file.as_path())
        });
        for p in loaded.policies {
            self.last_good.insert(p.name().to_owned(), p);
        }
        Ok(Some(loaded.diagnostics))
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
        let policies: Vec<Arc<Policy>> = self.last_good.values().cloned().collect();
        self.engine.begin_pass();
        self.reconcile_all(policies, stop, &mut tick).await;
        Ok(tick)
    }

    /// Reconciles `policies`, at most `concurrency` at a time, each within its
    /// deadline. Once `stop` is set no policy starts; the ones running get
    /// [`SHUTDOWN_GRACE`] to finish, then are cancelled (recorded as skipped).
    ///
    /// A policy promoting from another one of the pass starts only once its upstream
    /// finished: what the upstream proved in this pass is offered downstream in the
    /// same pass, not a tick later.
    async fn reconcile_all(&self, policies: Vec<Arc<Policy>>, stop: &AtomicBool, tick: &mut Tick) {
        let mut waiting = PassQueue::new(policies);
        let mut running = FuturesUnordered::new();
        let mut in_flight = BTreeSet::new();
        let mut stopping: Option<Deadline> = None;
        loop {
            if stopping.is_none() && stop.load(Ordering::SeqCst) {
                stopping = Some(Deadline::after(SHUTDOWN_GRACE));
            }
            while stopping.is_none() && running.len() < self.concurrency {
                let Some(p) = waiting.next_ready(&in_flight) else {
                    break;
                };
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

    /// One policy's turn through the engine, its state in the database.
    async fn reconcile_one(&self, p: Arc<Policy>) -> (String, PolicyOutcome) {
        let outcome = self.engine.run(&p, &self.store, self.engine.now()).await;
        (p.name().to_owned(), outcome)
    }
}

/// The policies of a pass not yet started, in order, and their names: whether a
/// policy's upstream is still waiting is a lookup, not a scan of the queue (a pass
/// where thousands of policies promote stays linear in each step).
struct PassQueue {
    order: VecDeque<Arc<Policy>>,
    names: HashSet<String>,
}

impl PassQueue {
    fn new(policies: Vec<Arc<Policy>>) -> Self {
        // Only a promoting policy asks; without one the pass keeps no names.
        let names = if policies.iter().any(|p| p.spec.promotion.is_some()) {
            policies.iter().map(|p| p.name().to_owned()).collect()
        } else {
            HashSet::new()
        };
        Self {
            order: policies.into(),
            names,
        }
    }

    /// The first waiting policy whose upstream (`promotion.from`) is neither waiting
    /// nor in flight, taken out of the queue. (Cycles never load; were one there, its
    /// first member would run once nothing is in flight, so the pass always ends.)
    fn next_ready(&mut self, in_flight: &BTreeSet<String>) -> Option<Arc<Policy>> {
        let pending = |name: &str| in_flight.contains(name) || self.names.contains(name);
        let at = self.order.iter().position(|p| {
            p.spec
                .promotion
                .as_ref()
                .is_none_or(|pr| !pending(pr.from.as_str()))
        });
        let next = match at {
            Some(at) => self.order.remove(at),
            None if in_flight.is_empty() => self.order.pop_front(),
            None => None,
        }?;
        self.names.remove(next.name());
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, from: Option<&str>) -> Arc<Policy> {
        let promotion = from.map_or(String::new(), |f| format!("  promotion: {{from: {f}}}\n"));
        let text = format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: {name}}}\nspec:\n  images:\n    - name: registry.example/app\n      tags: {{semver: {{}}}}\n  source:\n    repo: https://github.com/acme/infra.git\n    include: [apps/{name}.yaml]\n  directPush: {{}}\n{promotion}"
        );
        let (mut policies, problems) =
            policy::load::load_str(std::path::Path::new("p.yaml"), &text);
        assert!(problems.is_empty(), "{problems:?}");
        Arc::new(policies.remove(0))
    }

    fn names(queue: &mut PassQueue, in_flight: &BTreeSet<String>) -> Option<String> {
        queue.next_ready(in_flight).map(|p| p.name().to_owned())
    }

    /// A downstream listed before its upstream waits for it, and the rest of the
    /// pass goes on meanwhile.
    #[test]
    fn a_downstream_starts_after_its_upstream_finished() {
        let mut queue = PassQueue::new(vec![
            policy("production", Some("staging")),
            policy("staging", None),
            policy("other", None),
        ]);
        let mut in_flight = BTreeSet::new();
        assert_eq!(names(&mut queue, &in_flight).as_deref(), Some("staging"));
        in_flight.insert("staging".to_owned());
        assert_eq!(names(&mut queue, &in_flight).as_deref(), Some("other"));
        assert_eq!(names(&mut queue, &in_flight), None, "staging still runs");
        in_flight.clear();
        assert_eq!(names(&mut queue, &in_flight).as_deref(), Some("production"));
        assert_eq!(names(&mut queue, &in_flight), None);
    }

    /// An upstream that is not part of the pass blocks nothing; a cycle (which
    /// `check` refuses) still ends the pass.
    #[test]
    fn a_missing_upstream_or_a_cycle_never_stalls_the_pass() {
        let none = BTreeSet::new();
        let mut queue = PassQueue::new(vec![policy("production", Some("gone"))]);
        assert_eq!(names(&mut queue, &none).as_deref(), Some("production"));
        let mut queue = PassQueue::new(vec![policy("a", Some("b")), policy("b", Some("a"))]);
        assert_eq!(names(&mut queue, &none).as_deref(), Some("a"));
        assert_eq!(names(&mut queue, &none).as_deref(), Some("b"));
        assert_eq!(names(&mut queue, &none), None);
    }
}
