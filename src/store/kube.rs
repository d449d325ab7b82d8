//! Policy state in the `Autobump` objects' status subresource (does I/O).
//!
//! In cluster the durable state of a policy (hold, versions, bake, bad versions,
//! history) lives in its object's `status`, next to the conditions. [`KubeStore`]
//! implements [`Store`] on it: an update reads the object, applies the change,
//! and replaces the status carrying the `resourceVersion` it read, so a concurrent
//! writer (the CLI's `hold`, another replica) makes the write fail with 409 Conflict
//! and the update starts again from a fresh read (bounded). A change that changes
//! nothing writes nothing.
//!
//! The status embeds the [`PolicyState`] itself (one schema for both stores);
//! [`state_of`] reads it and [`set_state`] writes it (pure). The v1.20 API server
//! turns an empty string into null and then rejects it in a required field, so
//! [`set_state`] writes `-` for an empty required text (a hold without a reason,
//! say): the only way the two stores can differ.
//!
//! Keys are `namespace/name`; a bare `name` means the handle's namespace (see
//! [`KubeStore::in_namespace`]), so the reconcile code, which addresses policies by
//! their name, works unchanged on a handle scoped to the object's namespace.
//!
//! [`Store`] is synchronous and its callers are async: the trait methods block with
//! `tokio::task::block_in_place`, which needs tokio's **multi-thread** runtime (on a
//! current-thread runtime they fail with [`KubeStoreError::Runtime`] instead of
//! panicking; outside any runtime they block on the runtime the store was made in).
//! Async code that owns a `KubeStore` should prefer the `*_async` methods.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::{PolicyState, Store, StoreError};
use crate::incluster::PolicyKey;
use crate::policy::{Autobump, AutobumpStatus};

/// How many times an update is tried when it keeps meeting 409 Conflict.
pub const DEFAULT_CONFLICT_ATTEMPTS: u32 = 10;

/// How many of its own recent writes per object a store remembers.
const WRITES_REMEMBERED: usize = 16;

/// Which objects a store (and the driver) sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    AllNamespaces,
    /// One namespace.
    Namespace(String),
}

/// Reading or writing an `Autobump` status failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeStoreError {
    /// The API server could not be reached or refused the request.
    #[error("{key}: {source}")]
    Api {
        /// The policy (or `*` for a list).
        key: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No such `Autobump` object (deleted, or never created).
    #[error("{key}: no such Autobump object")]
    NotFound {
        /// The policy.
        key: String,
    },
    /// Other writers kept changing the object; the update was not applied.
    #[error("{key}: the object kept changing; gave up after {attempts} attempts")]
    Conflict {
        /// The policy.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The API server rejected the status as invalid (a bug, or a CRD out of date).
    #[error("{key}: the API server rejects the status: {why}")]
    Invalid {
        /// The policy.
        key: String,
        /// Its message.
        why: String,
    },
    /// The text does not name a policy.
    #[error("{0}")]
    BadKey(String),
    /// A synchronous call on a current-thread runtime, where it cannot block.
    #[error(
        "the Kubernetes state store blocks on async I/O and needs tokio's multi-thread runtime"
    )]
    Runtime,
}

impl KubeStoreError {
    /// Whether trying again may help: transport errors, server errors, throttling and
    /// conflicts may pass; a missing object, an invalid status or a bad key do not.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { source, .. } => api_error_is_retryable(source),
            Self::Conflict { .. } => true,
            Self::NotFound { .. } | Self::Invalid { .. } | Self::BadKey(_) | Self::Runtime => false,
        }
    }

    /// The variant name, for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Api { .. } => "api",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Invalid { .. } => "invalid",
            Self::BadKey(_) => "bad_key",
            Self::Runtime => "runtime",
        }
    }
}

/// Whether a kube client error may pass on its own (server side 5xx, 429, 409, or no
/// answer at all).
pub(crate) fn api_error_is_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429 || status.code == 409,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

impl From<KubeStoreError> for StoreError {
    /// [`StoreError`] knows files only: a retryable failure becomes `Io` (retryable),
    /// any other `Corrupt`; the path names the object.
    fn from(e: KubeStoreError) -> Self {
        let path = PathBuf::from(match &e {
            KubeStoreError::Api { key, .. }
            | KubeStoreError::NotFound { key }
            | KubeStoreError::Conflict { key, .. }
            | KubeStoreError::Invalid { key, .. } => format!("autobumps/{key}"),
            KubeStoreError::BadKey(_) | KubeStoreError::Runtime => "autobumps".to_owned(),
        });
        if e.is_retryable() {
            StoreError::Io {
                path,
                source: std::io::Error::other(e),
            }
        } else {
            StoreError::Corrupt {
                path,
                why: crate::error_chain(&e),
            }
        }
    }
}

/// Policy state kept in the `Autobump` objects' status. Cheap to clone: clones share
/// the client and the record of what this process wrote.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    scope: Scope,
    /// Where a bare name lives.
    namespace: String,
    attempts: u32,
    /// The `resourceVersion`s of this process's recent writes, per object.
    written: Arc<Mutex<HashMap<PolicyKey, VecDeque<String>>>>,
    /// The runtime to block on when called from outside any runtime.
    handle: Handle,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("scope", &self.scope)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeStore {
    /// A store over the objects in `scope`; bare names mean the scope's namespace, or
    /// the client's default namespace for [`Scope::AllNamespaces`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (a [`Client`] cannot exist there either).
    #[must_use]
    pub fn new(client: Client, scope: Scope) -> Self {
        let namespace = match &scope {
            Scope::Namespace(ns) => ns.clone(),
            Scope::AllNamespaces => client.default_namespace().to_owned(),
        };
        Self {
            client,
            scope,
            namespace,
            attempts: DEFAULT_CONFLICT_ATTEMPTS,
            written: Arc::default(),
            handle: Handle::current(),
        }
    }

    /// The same store with bare names meaning `namespace`.
    #[must_use]
    pub fn in_namespace(&self, namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            ..self.clone()
        }
    }

    /// The same store giving up after `attempts` conflicting writes (at least 1).
    #[must_use]
    pub fn with_conflict_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The namespace bare names mean.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Reads a key (`namespace/name` or a bare name).
    pub fn key(&self, policy: &str) -> Result<PolicyKey, KubeStoreError> {
        PolicyKey::parse(policy, &self.namespace).map_err(KubeStoreError::BadKey)
    }

    /// Whether `resource_version` of `key` is one of this process's (and its
    /// clones') recent writes, so a watch event for it reports nothing new.
    #[must_use]
    pub fn wrote(&self, key: &PolicyKey, resource_version: &str) -> bool {
        self.lock_written()
            .get(key)
            .is_some_and(|rvs| rvs.iter().any(|rv| rv == resource_version))
    }

    fn remember_write(&self, key: &PolicyKey, resource_version: String) {
        let mut written = self.lock_written();
        let rvs = written.entry(key.clone()).or_default();
        if rvs.len() == WRITES_REMEMBERED {
            rvs.pop_front();
        }
        rvs.push_back(resource_version);
    }

    fn lock_written(&self) -> std::sync::MutexGuard<'_, HashMap<PolicyKey, VecDeque<String>>> {
        // A poisoned lock only means a panic elsewhere; the map stays consistent.
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn api(&self, namespace: &str) -> Api<Autobump> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The object `key` (with its status), if it exists.
    pub async fn get_async(&self, key: &PolicyKey) -> Result<Option<Autobump>, KubeStoreError> {
        self.api(&key.namespace)
            .get_opt(&key.name)
            .await
            .map_err(|source| KubeStoreError::Api {
                key: key.to_string(),
                source,
            })
    }

    /// The state of one policy (default when the object has no status or is gone).
    pub async fn load_async(&self, key: &PolicyKey) -> Result<PolicyState, KubeStoreError> {
        Ok(self
            .get_async(key)
            .await?
            .and_then(|o| o.status)
            .map(|s| state_of(&s))
            .unwrap_or_default())
    }

    /// Every policy's state in the store's scope, by `namespace/name`.
    pub async fn load_all_async(&self) -> Result<BTreeMap<String, PolicyState>, KubeStoreError> {
        let api: Api<Autobump> = match &self.scope {
            Scope::AllNamespaces => Api::all(self.client.clone()),
            Scope::Namespace(ns) => self.api(ns),
        };
        let mut all = BTreeMap::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|source| KubeStoreError::Api {
                    key: "*".into(),
                    source,
                })?;
            for object in &page.items {
                if let Some(key) = PolicyKey::of(object) {
                    let state = object.status.as_ref().map(state_of).unwrap_or_default();
                    all.insert(key.to_string(), state);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(all),
            }
        }
    }

    /// Reads the object `key`, lets `f` change its status (it also sees the object,
    /// e.g. for `metadata.generation`), and writes the status back unless unchanged,
    /// with the `resourceVersion` read. On 409 Conflict it starts again from a fresh
    /// read, so `f` may run more than once, each time on fresh data. Returns the
    /// object as stored.
    pub async fn update_status_async(
        &self,
        key: &PolicyKey,
        mut f: impl FnMut(&mut AutobumpStatus, &Autobump),
    ) -> Result<Autobump, KubeStoreError> {
        let api = self.api(&key.namespace);
        let api_error = |source| KubeStoreError::Api {
            key: key.to_string(),
            source,
        };
        for attempt in 1..=self.attempts {
            let Some(mut object) = api.get_opt(&key.name).await.map_err(api_error)? else {
                return Err(KubeStoreError::NotFound {
                    key: key.to_string(),
                });
            };
            let before = object.status.clone().unwrap_or_default();
            let mut status = before.clone();
            f(&mut status, &object);
            if status == before {
                return Ok(object);
            }
            object.status = Some(status);
            match api
                .replace_status(&key.name, &PostParams::default(), &object)
                .await
            {
                Ok(stored) => {
                    if let Some(rv) = stored.resource_version() {
                        self.remember_write(key, rv);
                    }
                    return Ok(stored);
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    tracing::debug!(policy = %key, attempt, "status conflict; reading again");
                    // A little jitter so two writers in lock-step drift apart.
                    let pause = 10 * u64::from(attempt) + fastrand::u64(0..20);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {
                    return Err(KubeStoreError::NotFound {
                        key: key.to_string(),
                    });
                }
                Err(kube::Error::Api(s)) if s.is_invalid() => {
                    return Err(KubeStoreError::Invalid {
                        key: key.to_string(),
                        why: s.message.clone(),
                    });
                }
                Err(e) => return Err(api_error(e)),
            }
        }
        Err(KubeStoreError::Conflict {
            key: key.to_string(),
            attempts: self.attempts,
        })
    }

    /// [`Store::update`], async: changes the policy state of `key` with `f` (which may
    /// run once per conflict, each time on fresh state); the conditions and the
    /// rest of the status stay as they are.
    pub async fn update_async(
        &self,
        key: &PolicyKey,
        mut f: impl FnMut(&mut PolicyState),
    ) -> Result<PolicyState, KubeStoreError> {
        let mut new = PolicyState::default();
        self.update_status_async(key, |status: &mut AutobumpStatus, _: &Autobump| {
            let mut state = state_of(status);
            f(&mut state);
            set_state(status, &state);
            new = state_of(status);
        })
        .await?;
        Ok(new)
    }

    /// Runs `fut` to completion from synchronous code (see the module docs).
    fn block_on<T>(
        &self,
        fut: impl Future<Output = Result<T, KubeStoreError>>,
    ) -> Result<T, KubeStoreError> {
        block_on_here(&self.handle, fut)
    }
}

/// Runs `fut` to completion on this thread from synchronous code: in a multi-thread
/// runtime inside `block_in_place`, outside any runtime on `fallback`'s.
///
/// Inside a runtime the future is driven by an executor with its own wake-up
/// (`futures::executor::block_on`), not by `Handle::block_on`: on the thread running
/// `Runtime::block_on` (`autobump run` drives the in-cluster driver there) a nested
/// `Handle::block_on` parks on the same parker as the outer one and swallows the
/// wake-ups meant for the futures around this call, which then sleep until some
/// unrelated wake-up (or forever). The reactor and timers keep running on the
/// runtime's workers, so I/O inside `fut` still completes.
fn block_on_here<T>(
    fallback: &Handle,
    fut: impl Future<Output = Result<T, KubeStoreError>>,
) -> Result<T, KubeStoreError> {
    match Handle::try_current() {
        Ok(handle) => match handle.runtime_flavor() {
            RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| futures::executor::block_on(fut))
            }
            _ => Err(KubeStoreError::Runtime),
        },
        Err(_) => fallback.block_on(fut),
    }
}

impl Store for KubeStore {
    fn load(&self, policy: &str) -> Result<PolicyState, StoreError> {
        let key = self.key(policy)?;
        Ok(self.block_on(self.load_async(&key))?)
    }

    fn load_all(&self) -> Result<BTreeMap<String, PolicyState>, StoreError> {
        Ok(self.block_on(self.load_all_async())?)
    }

    fn update(
        &self,
        policy: &str,
        f: &mut dyn FnMut(&mut PolicyState),
    ) -> Result<PolicyState, StoreError> {
        let key = self.key(policy)?;
        // `f` is not `Send`, so neither is this future; blocking on it here (rather
        // than spawning it) needs no `Send`.
        Ok(self.block_on(self.update_async(&key, |state: &mut PolicyState| f(state)))?)
    }
}

/// The policy state recorded in `status`.
#[must_use]
pub fn state_of(status: &AutobumpStatus) -> PolicyState {
    status.state.clone()
}

/// Records `state` in `status`, leaving the conditions and `observedGeneration` as
/// they are. Empty required texts are written as `-` (see the module docs).
pub fn set_state(status: &mut AutobumpStatus, state: &PolicyState) {
    let mut state = state.clone();
    if let Some(h) = &mut state.hold {
        required(&mut h.by);
        required(&mut h.reason);
    }
    for r in [&mut state.current, &mut state.last_known_good]
        .into_iter()
        .flatten()
    {
        required(&mut r.summary);
        for i in &mut r.images {
            required(&mut i.image);
            required(&mut i.tag);
        }
    }
    if let Some(b) = &mut state.bake {
        required(&mut b.version);
    }
    state.bad_versions = std::mem::take(&mut state.bad_versions)
        .into_iter()
        .map(|mut b| {
            required(&mut b.image);
            required(&mut b.tag);
            b
        })
        .collect();
    for e in &mut state.history {
        required(&mut e.message);
    }
    for i in &mut state.intents {
        required(&mut i.message);
    }
    if let Some(r) = &mut state.rollback_request {
        required(&mut r.by);
        required(&mut r.reason);
    }
    status.state = state;
}

/// `-` for an empty `text` (the v1.20 API server rejects `""` in required fields).
fn required(text: &mut String) {
    if text.is_empty() {
        "-".clone_into(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::v1alpha1::{
        BadVersion, BakeProgress, Condition, Hold, ImageVersion, Reason, Release, RollbackRequest,
    };

    /// Two futures on the thread running `Runtime::block_on` (as the driver's
    /// reconciles are in `autobump run --kubernetes`): while one blocks in a store
    /// call, the other is woken. It must run as soon as the blocking call returns,
    /// not when something else happens to wake the task (here: the 5 s timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_call_keeps_the_wake_ups_of_the_futures_around_it() {
        let handle = Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let woken = async { rx.await.unwrap() };
        let blocking = async {
            // Let `woken` register its waker first.
            tokio::task::yield_now().await;
            block_on_here(&handle, async {
                tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(())
            })
            .unwrap();
        };
        let watch = crate::clock::Stopwatch::start();
        tokio::time::timeout(
            Duration::from_secs(5),
            futures::future::join(woken, blocking),
        )
        .await
        .expect("the woken future never ran");
        assert!(
            watch.elapsed() < Duration::from_secs(2),
            "{:?}",
            watch.elapsed()
        );
    }

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    fn release(tag: &str) -> Release {
        Release {
            summary: tag.into(),
            images: vec![ImageVersion {
                image: "gcr.io/k8s-prow/hook".into(),
                tag: tag.into(),
                digest: Some("sha256:0123".into()),
            }],
            since: at("2026-11-21T09:00:00Z"),
            commit: Some("abc1234".into()),
        }
    }

    fn full_state() -> PolicyState {
        let mut s = PolicyState {
            hold: Some(Hold {
                by: "alert:HookDown".into(),
                since: at("2026-11-21T10:00:00Z"),
                reason: "HookDown firing".into(),
                via: Some("gate".into()),
                automatic: true,
            }),
            current: Some(release("v20261121-bbbbbbb")),
            last_known_good: Some(release("v20261120-aaaaaaa")),
            bake: Some(BakeProgress {
                version: "v20261121-bbbbbbb".into(),
                clear_since: Some(at("2026-11-21T09:30:00Z")),
                restarts: 2,
            }),
            last_bump: Some(at("2026-11-21T08:00:00Z")),
            ..PolicyState::default()
        };
        s.bad_versions.insert(BadVersion {
            image: "gcr.io/k8s-prow/hook".into(),
            tag: "v20261119-ccccccc".into(),
        });
        s.bad_versions.insert(BadVersion {
            image: "gcr.io/k8s-prow/deck".into(),
            tag: "v20261119-ccccccc".into(),
        });
        s.see_comment(17);
        s.see_comment(4_000_000_001);
        s.record(
            at("2026-11-21T10:00:00Z"),
            Reason::Held,
            "held by alert:HookDown",
        );
        s.intend(crate::policy::v1alpha1::Intent {
            kind: crate::policy::v1alpha1::IntentKind::Merge,
            record: Some(Reason::RolledBack),
            message: "v20261121-bbbbbbb -> v20261120-aaaaaaa merged as PR #9".into(),
            pull_request: Some(9),
            images: release("v20261120-aaaaaaa").images,
            labels: vec!["skip-review".into()],
            since: at("2026-11-21T10:01:00Z"),
        });
        s.rollback_request = Some(RollbackRequest {
            by: "cli:bob".into(),
            since: at("2026-11-21T10:02:00Z"),
            reason: "p99 latency doubled".into(),
            via: Some("cli".into()),
        });
        s
    }

    #[test]
    fn state_round_trips_through_the_status() {
        for state in [PolicyState::default(), full_state()] {
            let mut status = AutobumpStatus::default();
            set_state(&mut status, &state);
            assert_eq!(state_of(&status), state);
            // And through JSON, as the API server stores it.
            let json = serde_json::to_value(&status).unwrap();
            let back: AutobumpStatus = serde_json::from_value(json).unwrap();
            assert_eq!(state_of(&back), state);
        }
    }

    #[test]
    fn the_state_leaves_conditions_and_generation_alone() {
        let condition = Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Reconciled".into(),
            message: "idle".into(),
            last_transition_time: at("2026-11-21T10:00:00Z"),
            observed_generation: Some(4),
        };
        let mut status = AutobumpStatus {
            conditions: vec![condition.clone()],
            observed_generation: Some(4),
            ..AutobumpStatus::default()
        };
        set_state(&mut status, &full_state());
        set_state(&mut status, &PolicyState::default());
        assert_eq!(status.conditions, [condition]);
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(
            status,
            AutobumpStatus {
                conditions: status.conditions.clone(),
                observed_generation: Some(4),
                ..AutobumpStatus::default()
            },
            "an empty state clears every state field"
        );
    }

    #[test]
    fn empty_required_texts_are_never_written() {
        let mut state = full_state();
        if let Some(h) = state.hold.as_mut() {
            h.reason = String::new();
        }
        if let Some(r) = state.rollback_request.as_mut() {
            r.reason = String::new();
        }
        state.record(at("2026-11-21T11:00:00Z"), Reason::Held, "");
        let mut status = AutobumpStatus::default();
        set_state(&mut status, &state);
        assert_eq!(status.state.hold.as_ref().unwrap().reason, "-");
        assert_eq!(status.state.rollback_request.as_ref().unwrap().reason, "-");
        assert_eq!(status.state.history.last().unwrap().message, "-");
    }

    #[test]
    fn an_old_status_without_the_new_fields_still_reads() {
        let status: AutobumpStatus = serde_json::from_value(serde_json::json!({
            "hold": {"by": "user:alice", "since": "2026-11-21T10:00:00Z", "reason": "freeze"},
            "history": [{"at": "2026-11-21T10:00:00Z", "reason": "Held", "message": "held"}]
        }))
        .unwrap();
        let state = state_of(&status);
        assert!(state.bake.is_none() && state.bad_versions.is_empty());
        assert_eq!(state.history.len(), 1);
        // Nothing new is written for an empty field.
        let mut again = AutobumpStatus::default();
        set_state(&mut again, &state);
        let json = serde_json::to_value(&again).unwrap();
        for absent in [
            "bake",
            "lastBump",
            "badVersions",
            "seenComments",
            "rollbackRequest",
        ] {
            assert!(json.get(absent).is_none(), "{absent}: {json}");
        }
    }

    #[test]
    fn errors_say_whether_to_retry() {
        let conflict = KubeStoreError::Conflict {
            key: "ci/prow".into(),
            attempts: 10,
        };
        assert!(conflict.is_retryable());
        assert!(matches!(StoreError::from(conflict), StoreError::Io { .. }));
        let missing = KubeStoreError::NotFound {
            key: "ci/prow".into(),
        };
        assert!(!missing.is_retryable());
        let as_store = StoreError::from(missing);
        assert!(!as_store.is_retryable());
        assert!(as_store.to_string().contains("ci/prow"), "{as_store}");
    }
}
