//! Where the dashboard reads policies and state (does I/O, read-only).
//!
//! * [`FilesSource`] (standalone): the policy folder, read again only when a file
//!   changed (a stat per file, as the controller's watcher does), with the last good
//!   version of a policy kept while its file is broken; and the state store through
//!   [`Store::latest_all`] and [`Store::history`].
//! * [`ClusterSource`] (`--kubernetes`): one list of the `Autobump` objects gives
//!   both the policies (their spec, checked as the controller checks it) and their
//!   state (their status).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;

use crate::policy::v1alpha1::HistoryEntry;
use crate::policy::{self, Autobump, Policy};
use crate::store::{Latest, Store, StoreError};

/// Everything one overview is drawn from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The policies in force, by key (standalone: the name; in-cluster:
    /// `namespace/name`).
    pub policies: BTreeMap<String, Policy>,
    /// Each policy's state (by the same key), without its history.
    pub states: BTreeMap<String, Latest>,
}

/// One policy with its whole history (the detail page).
#[derive(Debug, Clone)]
pub struct PolicyRecord {
    /// The policy, when one is in force (a state can outlive its policy file).
    pub policy: Option<Policy>,
    /// Its state.
    pub latest: Latest,
    /// Every entry the store keeps, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// Reading the dashboard's data failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The state store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Kubernetes API.
    #[error("listing the Autobump objects: {0}")]
    Kube(#[from] kube::Error),
    /// A blocking read did not finish (the runtime is shutting down).
    #[error("reading the state was cancelled")]
    Cancelled,
}

/// A read-only view of the policies and their state.
pub trait Source: Send + Sync + 'static {
    /// Every policy and every state.
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, SourceError>>;
    /// One policy with its whole history; `None` when neither a policy nor a state
    /// has this key.
    fn record<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<PolicyRecord>, SourceError>>;
}

/// Standalone: the policy folder and the state store.
pub struct FilesSource {
    store: Arc<dyn Store>,
    paths: Vec<PathBuf>,
    cache: Arc<Mutex<PolicyCache>>,
}

/// The policies as last read, and the files' fingerprint then.
#[derive(Default)]
struct PolicyCache {
    fingerprint: Option<Vec<(PathBuf, u64, std::time::SystemTime)>>,
    read_once: bool,
    policies: BTreeMap<String, Policy>,
}

impl FilesSource {
    /// Policies from `paths` (as `run --policies`), state from `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, paths: Vec<PathBuf>) -> Self {
        Self {
            store,
            paths,
            cache: Arc::new(Mutex::new(PolicyCache::default())),
        }
    }
}

/// The policies in force: read again when a file changed; a policy whose file is
/// broken now keeps its last good version (as the controller does).
fn policies_now(paths: &[PathBuf], cache: &Mutex<PolicyCache>) -> BTreeMap<String, Policy> {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    let fingerprint = policy::files_fingerprint(paths);
    if cache.read_once && fingerprint == cache.fingerprint {
        return cache.policies.clone();
    }
    cache.read_once = true;
    cache.fingerprint = fingerprint;
    // A load that fails as a whole (the folder being replaced) keeps the last ones.
    if let Ok(loaded) = policy::load_paths(paths) {
        let broken: BTreeSet<&Path> = loaded
            .diagnostics
            .iter()
            .map(|d| d.file.as_path())
            .collect();
        let present: BTreeSet<&str> = loaded.policies.iter().map(|p| p.name()).collect();
        let mut kept: BTreeMap<String, Policy> = std::mem::take(&mut cache.policies)
            .into_iter()
            .filter(|(name, p)| {
                present.contains(name.as_str()) || broken.contains(p.origin.file.as_path())
            })
            .collect();
        for p in loaded.policies {
            kept.insert(p.name().to_owned(), std::sync::Arc::unwrap_or_clone(p));
        }
        cache.policies = kept;
    }
    cache.policies.clone()
}

impl Source for FilesSource {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, SourceError>> {
        let (store, paths, cache) = (
            Arc::clone(&self.store),
            self.paths.clone(),
            Arc::clone(&self.cache),
        );
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let policies = policies_now(&paths, &cache);
                let states = store.latest_all(super::ROW_REASONS)?;
                Ok(Snapshot { policies, states })
            })
            .await
            .map_err(|_| SourceError::Cancelled)?
        })
    }

    fn record<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<PolicyRecord>, SourceError>> {
        let (store, paths, cache, key) = (
            Arc::clone(&self.store),
            self.paths.clone(),
            Arc::clone(&self.cache),
            key.to_owned(),
        );
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let policy = policies_now(&paths, &cache).remove(&key);
                let history = store.history(&key, None)?;
                if policy.is_none() && history.is_empty() && !store.policies()?.contains(&key) {
                    return Ok(None);
                }
                let latest = Latest::of(store.load(&key)?, super::ROW_REASONS);
                Ok(Some(PolicyRecord {
                    policy,
                    latest,
                    history,
                }))
            })
            .await
            .map_err(|_| SourceError::Cancelled)?
        })
    }
}

/// In-cluster: the `Autobump` objects in scope.
pub struct ClusterSource {
    client: kube::Client,
    namespace: Option<String>,
}

impl ClusterSource {
    /// The objects of `namespace`, or of every namespace.
    #[must_use]
    pub fn new(client: kube::Client, namespace: Option<String>) -> Self {
        Self { client, namespace }
    }

    async fn objects(&self) -> Result<Vec<Autobump>, SourceError> {
        let api: kube::Api<Autobump> = match &self.namespace {
            Some(ns) => kube::Api::namespaced(self.client.clone(), ns),
            None => kube::Api::all(self.client.clone()),
        };
        // Pages of 500 objects, as the controller lists them.
        let mut out = Vec::new();
        let mut params = kube::api::ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await?;
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }
}

/// The key, policy (when its spec is valid) and state of one object.
fn from_object(object: &Autobump) -> Option<(String, Option<Policy>, crate::store::PolicyState)> {
    let key = crate::incluster::PolicyKey::of(object)?.to_string();
    let state = object
        .status
        .as_ref()
        .map(crate::store::kube::state_of)
        .unwrap_or_default();
    Some((key, Policy::from_resource(object).ok(), state))
}

impl Source for ClusterSource {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, SourceError>> {
        Box::pin(async move {
            let mut snapshot = Snapshot::default();
            for object in self.objects().await? {
                if let Some((key, policy, state)) = from_object(&object) {
                    if let Some(p) = policy {
                        snapshot.policies.insert(key.clone(), p);
                    }
                    snapshot
                        .states
                        .insert(key, Latest::of(state, super::ROW_REASONS));
                }
            }
            Ok(snapshot)
        })
    }

    fn record<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<PolicyRecord>, SourceError>> {
        Box::pin(async move {
            let (namespace, name) = match key.split_once('/') {
                Some((ns, name)) => (ns.to_owned(), name),
                None => (
                    self.namespace
                        .clone()
                        .unwrap_or_else(|| "default".to_owned()),
                    key,
                ),
            };
            let api: kube::Api<Autobump> = kube::Api::namespaced(self.client.clone(), &namespace);
            let Some(object) = api.get_opt(name).await? else {
                return Ok(None);
            };
            Ok(from_object(&object).map(|(_, policy, state)| PolicyRecord {
                policy,
                history: state.history.clone(),
                latest: Latest::of(state, super::ROW_REASONS),
            }))
        })
    }
}
