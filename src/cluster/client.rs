//! [`KubeWorkloads`]: [`Workloads`] over a kube `Client` (does I/O).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Config};

use super::images::{ReleaseImages, retarget_pod_spec};
use super::status::{
    WorkloadObject, WorkloadObservation, aggregate, kind_name, observe_object, workload_id,
};
use super::{ClusterError, Patched, RolloutObservation, WorkloadId, Workloads};
use crate::clock::Clock;
use crate::policy::v1alpha1::{Release, WorkloadKind, WorkloadSpec};

/// Annotation on a patched workload: when autobump patched it (RFC 3339, UTC).
pub const PATCHED_AT: &str = "autobump.dev/patched-at";
/// Annotation on a patched workload: the release it was patched to (its summary).
pub const PATCHED_TO: &str = "autobump.dev/patched-to";
/// Shown by `kubectl rollout history` (a Deployment copies it to its `ReplicaSet`).
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The field manager of every write.
const FIELD_MANAGER: &str = "autobump";
/// Replaces tried per workload before a conflict is given up on.
const MAX_ATTEMPTS: u32 = 5;
/// The back-off before the second attempt; it doubles with each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How long one API request may take (no watches are made through this client).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Objects per list page.
const PAGE: u32 = 500;

/// Called with the workload just before each replace of [`KubeWorkloads`]; a test
/// seam to make a concurrent writer change the object between read and write.
pub type BeforeReplace = Arc<dyn Fn(WorkloadId) -> BoxFuture<'static, ()> + Send + Sync>;

/// [`Workloads`] against a Kubernetes API server.
///
/// Observation lists each spec's kind in its namespace with its label selector.
/// Patching replaces the object with the `resourceVersion` it was read at (optimistic
/// concurrency): on `409 Conflict` it reads the object again and retries, up to 5
/// attempts with a short doubling back-off, then gives up with
/// [`ClusterError::ConflictRetriesExhausted`]. Writes use the field manager
/// `autobump` and annotate the object with [`PATCHED_AT`], [`PATCHED_TO`] and
/// `kubernetes.io/change-cause`.
#[derive(Clone)]
pub struct KubeWorkloads {
    client: Client,
    clock: Arc<dyn Clock>,
    before_replace: Option<BeforeReplace>,
}

impl KubeWorkloads {
    /// Over an existing client; `clock` dates the [`PATCHED_AT`] annotation.
    #[must_use]
    pub fn new(client: Client, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            clock,
            before_replace: None,
        }
    }

    /// From the default configuration: `$KUBECONFIG` or `~/.kube/config`, else the
    /// in-cluster service account.
    pub async fn infer(clock: Arc<dyn Clock>) -> Result<Self, ClusterError> {
        let config = Config::infer().await.map_err(|e| ClusterError::Config {
            detail: format!("no Kubernetes configuration: {}", crate::error_chain(&e)),
        })?;
        Self::from_config(config, clock)
    }

    /// From a kubeconfig file (its current context).
    pub async fn from_kubeconfig(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, ClusterError> {
        let config_error = |e: kube::config::KubeconfigError| ClusterError::Config {
            detail: format!("kubeconfig {}: {}", path.display(), crate::error_chain(&e)),
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(config_error)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(config_error)?;
        Self::from_config(config, clock)
    }

    /// From a client configuration, with a per-request read timeout.
    pub fn from_config(mut config: Config, clock: Arc<dyn Clock>) -> Result<Self, ClusterError> {
        crate::install_crypto_provider();
        config.read_timeout = Some(REQUEST_TIMEOUT);
        // Count the timeout from the request, not from when a pooled connection went idle.
        config.reset_reader_on_write = true;
        let client = Client::try_from(config).map_err(|e| ClusterError::Config {
            detail: format!("cannot build a client: {}", crate::error_chain(&e)),
        })?;
        Ok(Self::new(client, clock))
    }

    /// The client, for other adapters that share it.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `hook` before every replace (a test seam; see [`BeforeReplace`]).
    #[doc(hidden)]
    #[must_use]
    pub fn before_replace(mut self, hook: BeforeReplace) -> Self {
        self.before_replace = Some(hook);
        self
    }

    async fn list<W: WorkloadObject>(&self, spec: &WorkloadSpec) -> Result<Vec<W>, ClusterError> {
        let api: Api<W> = Api::namespaced(self.client.clone(), spec.namespace.as_str());
        let during = format!(
            "list {}s in {} with {}",
            kind_name(W::KIND),
            spec.namespace,
            spec.selector
        );
        let mut params = ListParams::default()
            .labels(spec.selector.as_str())
            .limit(PAGE);
        let mut all = Vec::new();
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| ClusterError::from_kube(e, during.as_str()))?;
            all.extend(page.items);
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(all),
            }
        }
    }

    async fn observe_kind<W: WorkloadObject>(
        &self,
        spec: &WorkloadSpec,
        images: &ReleaseImages,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<WorkloadObservation>,
    ) -> Result<(), ClusterError> {
        for object in self.list::<W>(spec).await? {
            let observed = observe_object(&object, images);
            if seen.insert(observed.workload.to_string()) {
                out.push(observed);
            }
        }
        Ok(())
    }

    async fn patch_kind<W: WorkloadObject>(
        &self,
        spec: &WorkloadSpec,
        release: &Release,
        images: &ReleaseImages,
        seen: &mut BTreeSet<String>,
    ) -> Result<Vec<Patched>, ClusterError> {
        let api: Api<W> = Api::namespaced(self.client.clone(), spec.namespace.as_str());
        let mut patched = Vec::new();
        let mut first_error = None;
        for object in self.list::<W>(spec).await? {
            if !seen.insert(workload_id(&object).to_string()) {
                continue;
            }
            match self.patch_one(&api, object, release, images).await {
                Ok(changes) => patched.extend(changes),
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.metric_label(), "workload not patched");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(patched),
        }
    }

    /// Patches one workload, starting from `object` as listed; see the type's docs.
    async fn patch_one<W: WorkloadObject>(
        &self,
        api: &Api<W>,
        mut object: W,
        release: &Release,
        images: &ReleaseImages,
    ) -> Result<Vec<Patched>, ClusterError> {
        let id = workload_id(&object);
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let changes = match object.pod_spec_mut() {
                Some(spec) => retarget_pod_spec(&id, spec, images),
                None => Vec::new(),
            };
            if changes.is_empty() {
                tracing::debug!(workload = %id, "already at the release; not written");
                return Ok(changes);
            }
            self.annotate(&mut object, release);
            if let Some(hook) = &self.before_replace {
                hook(id.clone()).await;
            }
            match api.replace(&id.name, &params, &object).await {
                Ok(_) => {
                    for c in &changes {
                        tracing::info!(workload = %id, container = %c.container, from = %c.from, to = %c.to, "image patched");
                    }
                    return Ok(changes);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(workload = %id, attempt, "conflict; reading it again");
                }
                Err(e) => return Err(ClusterError::from_kube(e, format!("replace {id}"))),
            }
            if attempt == MAX_ATTEMPTS {
                break;
            }
            tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
            backoff *= 2;
            object = api
                .get(&id.name)
                .await
                .map_err(|e| ClusterError::from_kube(e, format!("get {id}")))?;
        }
        Err(ClusterError::ConflictRetriesExhausted {
            workload: id.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    fn annotate<W: WorkloadObject>(&self, object: &mut W, release: &Release) {
        let now = self.clock.now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let annotations = object.meta_mut().annotations.get_or_insert_default();
        annotations.insert(PATCHED_AT.to_owned(), now);
        annotations.insert(PATCHED_TO.to_owned(), release.summary.clone());
        annotations.insert(
            CHANGE_CAUSE.to_owned(),
            format!("autobump: images set to {}", release.summary),
        );
    }
}

impl Workloads for KubeWorkloads {
    async fn observe(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> Result<RolloutObservation, ClusterError> {
        let images = ReleaseImages::new(release);
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for spec in specs {
            match spec.kind {
                WorkloadKind::Deployment => {
                    self.observe_kind::<Deployment>(spec, &images, &mut seen, &mut out)
                        .await?;
                }
                WorkloadKind::StatefulSet => {
                    self.observe_kind::<StatefulSet>(spec, &images, &mut seen, &mut out)
                        .await?;
                }
                WorkloadKind::DaemonSet => {
                    self.observe_kind::<DaemonSet>(spec, &images, &mut seen, &mut out)
                        .await?;
                }
            }
        }
        let observation = aggregate(specs, release, out);
        tracing::debug!(state = ?observation.state, detail = %observation.detail, "rollout observed");
        Ok(observation)
    }

    async fn patch_images(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> Result<Vec<Patched>, ClusterError> {
        let images = ReleaseImages::new(release);
        let mut seen = BTreeSet::new();
        let mut patched = Vec::new();
        let mut first_error = None;
        for spec in specs {
            let result = match spec.kind {
                WorkloadKind::Deployment => {
                    self.patch_kind::<Deployment>(spec, release, &images, &mut seen)
                        .await
                }
                WorkloadKind::StatefulSet => {
                    self.patch_kind::<StatefulSet>(spec, release, &images, &mut seen)
                        .await
                }
                WorkloadKind::DaemonSet => {
                    self.patch_kind::<DaemonSet>(spec, release, &images, &mut seen)
                        .await
                }
            };
            match result {
                Ok(changes) => patched.extend(changes),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(patched),
        }
    }
}
