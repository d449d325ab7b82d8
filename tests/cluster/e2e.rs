//! Issue 6 end to end: the pull-request flow and a cluster together, every piece real —
//! the GitHub fake (its bare repository is the GitOps repository), the Debian
//! docker-registry, Prometheus with a rule over a metric the test flips, and a
//! kube-apiserver where the `Autobump` object's status is the state store and a
//! Deployment is the workload (the test plays the GitOps applier and the kubelet).
//!
//! The story: 1.0.0 runs and bakes to known-good; the bump to 1.1.0 opens as a PR, CI
//! passes, it merges, the applier deploys it, it bakes clean and becomes known-good;
//! 1.2.0 follows the same way, and while it bakes its errors fire an alert: the policy
//! is held by the alert, a rollback PR to 1.1.0 is opened and merged, the Deployment is
//! patched back, 1.2.0 is recorded as bad; nothing is proposed until 1.3.0 appears,
//! whose PR then waits for a person.
//!
//! Every step is one reconcile by an engine booted from nothing but the cluster's state
//! (new adapters, caches and clones): a restart between every two steps. On top, one
//! trial per write of the whole story crashes right after that write — the write is
//! done, then every adapter call fails as in a dead process — restarts a minute later,
//! and must end the same: one PR per version, exactly one rollback PR, one hold, one
//! patch of the Deployment, the bad version recorded.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use autobump::alerts::{AlertsClient, AlertsConfig, read_gate};
use autobump::clock::{Clock, Deadline, SystemClock};
use autobump::cluster::{
    ClusterError, KubeWorkloads, PATCHED_TO, Patched, RolloutObservation, Workloads,
};
use autobump::controller::{Deps, ForgeAccess, ReconcileError, Report, reconcile_read};
use autobump::core::plan::{Effect, HOLD_LABEL};
use autobump::core::reference::ImageRef;
use autobump::forge::{
    ChangedFile, Check, Comment, Forge, ForgeError, GitHub, GitHubAuth, GitHubConfig, MergeMethod,
    Mergeability, Merged, NewPullRequest, Permission, PullRequest, PullRequestEdit, RepoName,
};
use autobump::policy::v1alpha1::{Release, RewriteMode, WorkloadSpec};
use autobump::policy::values::{BranchName, Glob};
use autobump::policy::{Autobump, AutobumpSpec, Policy};
use autobump::registry::{RegistryClient, RegistryConfig};
use autobump::repo::{
    Auth, BumpRequest, Fetched, GitConfig, GitRepo, Person, PreparedBump, Pushed, Repo, RepoError,
    Scanned, Source,
};
use autobump::resolve::Resolver;
use autobump::store::kube::{KubeStore, Scope};
use autobump::store::{PolicyState, Store, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::Cluster;
use super::incluster::cluster;
use super::support::github_fake::{FakePull, GithubFake};
use super::support::registry::{ManifestKind, Registry};
use super::support::{MetricsTarget, Prometheus};

const V1: &str = "1.0.0";
const V2: &str = "1.1.0";
const V3: &str = "1.2.0";
const V4: &str = "1.3.0";
const BUMP_BRANCH: &str = "autobump-web";
const ROLLBACK_BRANCH: &str = "autobump-rollback-web";
const MANIFEST: &str = "apps/web/deployment.yaml";

/// The steps of the story; each is one reconcile by a freshly booted engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// 1.0.0 runs: recorded as deployed, it starts baking.
    FirstBake,
    /// 1.0.0 baked clean: promoted; the bump to 1.1.0 opens as a PR.
    OpenBump,
    /// CI is green: the PR merges.
    MergeBump,
    /// 1.1.0 is on main, the applier changed the Deployment, the kubelet has not.
    RollingOut,
    /// The rollout completed: 1.1.0 bakes.
    Bake,
    /// 1.1.0 baked clean: promoted; the bump to 1.2.0 opens.
    PromoteAndBump,
    /// The bump to 1.2.0 merges.
    MergeBad,
    /// 1.2.0 runs and bakes.
    BakeBad,
    /// 1.2.0's alert fires: hold, patch, rollback PR.
    Rollback,
    /// Still firing, the rollback done: nothing happens.
    StillFiring,
    /// Quiet again, and 1.2.0 is bad: nothing to propose.
    Quiet,
    /// 1.3.0 appears: a PR opens, carrying the hold.
    NewTag,
    /// Its checks are green, but the policy is held: it waits.
    Held,
}

/// A crash right after the `after`-th write of `step`'s reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CrashPoint {
    step: Step,
    after: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fault injector one engine's adapters share: it logs every write that took
/// effect, and after the chosen one, fails that call and every later one (a dead
/// process does nothing more).
#[derive(Default)]
struct Faults {
    crash_after: Option<usize>,
    writes: Mutex<Vec<String>>,
    crashed: AtomicBool,
}

impl Faults {
    fn new(crash_after: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            crash_after,
            ..Self::default()
        })
    }

    /// `Err` once crashed: nothing reaches the world any more.
    fn alive(&self, call: &str) -> Result<(), String> {
        if self.crashed.load(Ordering::SeqCst) {
            Err(format!("{call}: the process crashed"))
        } else {
            Ok(())
        }
    }

    /// Logs a write that took effect; the crash point fails it (after the fact).
    fn wrote(&self, what: &str) -> Result<(), String> {
        let mut writes = lock(&self.writes);
        writes.push(what.to_owned());
        if Some(writes.len()) == self.crash_after {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(format!("crash injected right after {what}"));
        }
        Ok(())
    }

    fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    fn writes(&self) -> Vec<String> {
        lock(&self.writes).clone()
    }
}

/// An adapter behind the fault injector.
struct Crashing<T> {
    inner: T,
    faults: Arc<Faults>,
}

fn store_crash(why: String) -> StoreError {
    StoreError::Io {
        path: "injected-crash".into(),
        source: std::io::Error::other(why),
    }
}

fn forge_crash(why: String) -> ForgeError {
    ForgeError::Connection {
        what: "injected crash".into(),
        attempts: 1,
        detail: why,
    }
}

fn repo_crash(why: String) -> RepoError {
    RepoError::Network {
        url: "injected-crash".into(),
        detail: why,
    }
}

fn cluster_crash(why: String) -> ClusterError {
    ClusterError::Unreachable {
        during: "injected crash".into(),
        detail: why,
    }
}

/// What an update changed: the history entries it added, else the fields.
fn describe_change(before: &PolicyState, after: &PolicyState) -> String {
    let seen = before.history.last().map_or(0, |e| e.seq);
    let added: Vec<&str> = after
        .history
        .iter()
        .filter(|e| e.seq > seen)
        .map(|e| e.reason.as_str())
        .collect();
    if !added.is_empty() {
        return format!("store: {}", added.join("+"));
    }
    let (b, a) = (
        serde_json::to_value(before).unwrap(),
        serde_json::to_value(after).unwrap(),
    );
    let keys: BTreeSet<&String> = b
        .as_object()
        .into_iter()
        .chain(a.as_object())
        .flat_map(|o| o.keys())
        .collect();
    let changed: Vec<&str> = keys
        .into_iter()
        .filter(|k| b.get(k.as_str()) != a.get(k.as_str()))
        .map(String::as_str)
        .collect();
    if changed.is_empty() {
        "store: unchanged".to_owned()
    } else {
        format!("store: {}", changed.join(","))
    }
}

impl<T: Store> Store for Crashing<T> {
    fn load(&self, policy: &str) -> Result<PolicyState, StoreError> {
        self.faults.alive("store load").map_err(store_crash)?;
        self.inner.load(policy)
    }

    fn load_all(&self) -> Result<std::collections::BTreeMap<String, PolicyState>, StoreError> {
        self.faults.alive("store load_all").map_err(store_crash)?;
        self.inner.load_all()
    }

    fn update(
        &self,
        policy: &str,
        f: &mut dyn FnMut(&mut PolicyState),
    ) -> Result<PolicyState, StoreError> {
        self.faults.alive("store update").map_err(store_crash)?;
        let mut what = String::new();
        let state = self.inner.update(policy, &mut |s| {
            let before = s.clone();
            f(s);
            what = describe_change(&before, s);
        })?;
        self.faults.wrote(&what).map_err(store_crash)?;
        Ok(state)
    }
}

impl<F: Forge> Forge for Crashing<F> {
    async fn find_open_pr(
        &self,
        repo: &RepoName,
        head_branch: &str,
        author: &str,
    ) -> Result<Option<PullRequest>, ForgeError> {
        self.faults.alive("find_open_pr").map_err(forge_crash)?;
        self.inner.find_open_pr(repo, head_branch, author).await
    }

    async fn create_pr(
        &self,
        repo: &RepoName,
        pr: &NewPullRequest,
    ) -> Result<PullRequest, ForgeError> {
        self.faults.alive("create_pr").map_err(forge_crash)?;
        let created = self.inner.create_pr(repo, pr).await?;
        self.faults
            .wrote(&format!("forge: open PR from {}", pr.head_branch))
            .map_err(forge_crash)?;
        Ok(created)
    }

    async fn update_pr(
        &self,
        repo: &RepoName,
        number: u64,
        edit: &PullRequestEdit,
    ) -> Result<PullRequest, ForgeError> {
        self.faults.alive("update_pr").map_err(forge_crash)?;
        let updated = self.inner.update_pr(repo, number, edit).await?;
        self.faults
            .wrote(&format!("forge: edit PR #{number}"))
            .map_err(forge_crash)?;
        Ok(updated)
    }

    async fn add_labels(
        &self,
        repo: &RepoName,
        number: u64,
        labels: &[String],
    ) -> Result<Vec<String>, ForgeError> {
        self.faults.alive("add_labels").map_err(forge_crash)?;
        let now = self.inner.add_labels(repo, number, labels).await?;
        self.faults
            .wrote(&format!("forge: label PR #{number} {}", labels.join(",")))
            .map_err(forge_crash)?;
        Ok(now)
    }

    async fn remove_label(
        &self,
        repo: &RepoName,
        number: u64,
        label: &str,
    ) -> Result<(), ForgeError> {
        self.faults.alive("remove_label").map_err(forge_crash)?;
        self.inner.remove_label(repo, number, label).await?;
        self.faults
            .wrote(&format!("forge: unlabel PR #{number} {label}"))
            .map_err(forge_crash)
    }

    async fn list_comments(
        &self,
        repo: &RepoName,
        number: u64,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Comment>, ForgeError> {
        self.faults.alive("list_comments").map_err(forge_crash)?;
        self.inner.list_comments(repo, number, since).await
    }

    async fn post_comment(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> Result<Comment, ForgeError> {
        self.faults.alive("post_comment").map_err(forge_crash)?;
        let posted = self.inner.post_comment(repo, number, body).await?;
        self.faults
            .wrote(&format!("forge: comment on PR #{number}"))
            .map_err(forge_crash)?;
        Ok(posted)
    }

    async fn pr_files(&self, repo: &RepoName, number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        self.faults.alive("pr_files").map_err(forge_crash)?;
        self.inner.pr_files(repo, number).await
    }

    async fn checks(&self, repo: &RepoName, sha: &str) -> Result<Vec<Check>, ForgeError> {
        self.faults.alive("checks").map_err(forge_crash)?;
        self.inner.checks(repo, sha).await
    }

    async fn mergeability(&self, repo: &RepoName, number: u64) -> Result<Mergeability, ForgeError> {
        self.faults.alive("mergeability").map_err(forge_crash)?;
        self.inner.mergeability(repo, number).await
    }

    async fn merge(
        &self,
        repo: &RepoName,
        number: u64,
        method: MergeMethod,
        expected_head_sha: &str,
    ) -> Result<Merged, ForgeError> {
        self.faults.alive("merge").map_err(forge_crash)?;
        let merged = self
            .inner
            .merge(repo, number, method, expected_head_sha)
            .await?;
        self.faults
            .wrote(&format!("forge: merge PR #{number}"))
            .map_err(forge_crash)?;
        Ok(merged)
    }

    async fn permission(&self, repo: &RepoName, user: &str) -> Result<Permission, ForgeError> {
        self.faults.alive("permission").map_err(forge_crash)?;
        self.inner.permission(repo, user).await
    }
}

impl<G: Repo> Repo for Crashing<G> {
    async fn fetch(&self, source: &Source) -> Result<Fetched, RepoError> {
        self.faults.alive("fetch").map_err(repo_crash)?;
        self.inner.fetch(source).await
    }

    async fn prepare_bump(
        &self,
        request: BumpRequest,
        now: DateTime<Utc>,
    ) -> Result<PreparedBump, RepoError> {
        self.faults.alive("prepare_bump").map_err(repo_crash)?;
        self.inner.prepare_bump(request, now).await
    }

    async fn push(&self, bump: &PreparedBump) -> Result<Pushed, RepoError> {
        self.faults.alive("push").map_err(repo_crash)?;
        let pushed = self.inner.push(bump).await?;
        let what = if pushed.pushed {
            format!("repo: push {}", pushed.branch)
        } else {
            format!("repo: push {} (nothing new)", pushed.branch)
        };
        self.faults.wrote(&what).map_err(repo_crash)?;
        Ok(pushed)
    }

    async fn changed_files(
        &self,
        source: &Source,
        head_branch: Option<&BranchName>,
        base: &str,
        head: &str,
    ) -> Result<Vec<autobump::repo::ChangedFile>, RepoError> {
        self.faults.alive("changed_files").map_err(repo_crash)?;
        self.inner
            .changed_files(source, head_branch, base, head)
            .await
    }

    async fn scan(
        &self,
        source: &Source,
        include: &[Glob],
        exclude: &[Glob],
        mode: RewriteMode,
    ) -> Result<Scanned, RepoError> {
        self.faults.alive("scan").map_err(repo_crash)?;
        self.inner.scan(source, include, exclude, mode).await
    }
}

impl<W: Workloads> Workloads for Crashing<W> {
    async fn observe(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> Result<RolloutObservation, ClusterError> {
        self.faults.alive("observe").map_err(cluster_crash)?;
        self.inner.observe(specs, release).await
    }

    async fn patch_images(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> Result<Vec<Patched>, ClusterError> {
        self.faults.alive("patch_images").map_err(cluster_crash)?;
        let patched = self.inner.patch_images(specs, release).await?;
        self.faults
            .wrote(&format!(
                "cluster: patch {} container(s) to {}",
                patched.len(),
                release.summary
            ))
            .map_err(cluster_crash)?;
        Ok(patched)
    }
}

/// What every trial shares: one cluster, one registry, one Prometheus scraping one
/// metrics target. Trials keep apart by namespace, image repository, GitHub fake and
/// the `trial` label of the metric.
struct World {
    _cluster: Cluster,
    client: Client,
    registry: Registry,
    metrics: MetricsTarget,
    prometheus: Prometheus,
}

impl World {
    async fn start() -> Arc<Self> {
        let (cluster, client) = cluster().await;
        let registry = Registry::start().await;
        let metrics = MetricsTarget::start().await;
        let prometheus = Prometheus::options()
            .rules(
                "groups:\n  - name: e2e\n    rules:\n      - alert: WebErrors\n        \
                 expr: web_errors > 0\n        labels: {severity: critical}\n        \
                 annotations: {summary: web answers with errors}\n",
            )
            .scrape(&metrics.host())
            .start()
            .await;
        Arc::new(Self {
            _cluster: cluster,
            client,
            registry,
            metrics,
            prometheus,
        })
    }
}

/// What one step's reconcile did.
struct Outcome {
    /// The report of the reconcile that completed (the restart's after a crash).
    report: Report,
    /// Whether the step crashed and the report is the restart's.
    restarted: bool,
}

/// One run of the story, in its own namespace, image repository and GitHub fake.
struct Trial {
    world: Arc<World>,
    k: usize,
    ns: String,
    /// `127.0.0.1:PORT/tK/web`
    image: String,
    fake: GithubFake,
    crash: Option<CrashPoint>,
    crashed: bool,
    now: DateTime<Utc>,
    /// The writes of each step's first reconcile (up to its crash).
    writes: Vec<(Step, Vec<String>)>,
    /// The Deployment's generation once the applier deployed 1.2.0.
    generation_before_patch: Option<i64>,
}

fn kinds(report: &Report) -> Vec<&'static str> {
    report.effects.iter().map(Effect::kind).collect()
}

fn waiting(report: &Report) -> String {
    report
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Waiting(w) => Some(w.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One engine: every adapter new, the policy read from its object.
struct Engine {
    policy: Policy,
    resolver: Resolver<RegistryClient>,
    repo: Crashing<GitRepo>,
    forge: Crashing<GitHub>,
    store: Crashing<KubeStore>,
    workloads: Crashing<KubeWorkloads>,
    alerts: AlertsClient,
    _cache: tempfile::TempDir,
}

impl Engine {
    async fn boot(trial: &Trial, faults: &Arc<Faults>) -> Self {
        let client = trial.world.client.clone();
        let object = Api::<Autobump>::namespaced(client.clone(), &trial.ns)
            .get("web")
            .await
            .expect("the Autobump object");
        let policy = Policy::from_resource(&object).expect("a valid policy");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let cache = tempfile::tempdir().unwrap();
        Self {
            policy,
            resolver: Resolver::new(
                RegistryClient::new(RegistryConfig::default(), Arc::clone(&clock)).unwrap(),
            ),
            repo: Crashing {
                inner: GitRepo::new(GitConfig::new(
                    cache.path(),
                    Person {
                        name: "autobump".into(),
                        email: "autobump@example.com".into(),
                    },
                )),
                faults: Arc::clone(faults),
            },
            forge: Crashing {
                inner: GitHub::new(
                    GitHubConfig::new(GitHubAuth::Token("test-token".into()))
                        .api_url(trial.fake.api_url()),
                    Arc::clone(&clock),
                )
                .unwrap(),
                faults: Arc::clone(faults),
            },
            store: Crashing {
                inner: KubeStore::new(client.clone(), Scope::Namespace(trial.ns.clone())),
                faults: Arc::clone(faults),
            },
            workloads: Crashing {
                inner: KubeWorkloads::new(client, clock),
                faults: Arc::clone(faults),
            },
            alerts: AlertsClient::new(AlertsConfig::default()).unwrap(),
            _cache: cache,
        }
    }

    /// What `autobump run --kubernetes` does for one object: the gate read fresh,
    /// then the pull-request flow with the object's status as the store.
    async fn reconcile(&self, now: DateTime<Utc>) -> Result<Report, ReconcileError> {
        let reading = read_gate(&self.alerts, self.policy.spec.gate.as_ref()).await;
        let deps = Deps {
            resolver: &self.resolver,
            repo: &self.repo,
            forge: Some(ForgeAccess {
                forge: &self.forge,
                repo: RepoName::new("example", "infra"),
                bot_login: "autobump-bot".into(),
            }),
            store: &self.store,
            source: Source {
                url: self.policy.spec.source.repo.clone(),
                branch: self.policy.spec.source.branch.clone(),
                auth: Auth::None,
            },
            workloads: Some(&self.workloads),
        };
        reconcile_read(&self.policy, &deps, &reading, now).await
    }
}

impl Trial {
    async fn new(world: Arc<World>, k: usize, crash: Option<CrashPoint>) -> Self {
        let ns = format!("e2e-{k}");
        let repository = format!("t{k}/web");
        let image = format!("{}/{repository}", world.registry.host());
        world
            .registry
            .push_image(&repository, V1, ManifestKind::OciManifest, None)
            .await;
        world.registry.retag(&repository, V1, V2).await;
        world
            .metrics
            .set(&format!("web_errors{{trial=\"{k}\"}}"), 0.0);

        let fake = GithubFake::start().await;
        fake.commit(
            "main",
            &[(
                MANIFEST,
                Some(&format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  \
                     namespace: {ns}\n  labels: {{app: web}}\nspec:\n  replicas: 1\n  \
                     selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: \
                     {{labels: {{app: web}}}}\n    spec:\n      containers:\n        - name: \
                     web\n          image: {image}:{V1}  # bumped by autobump\n"
                )),
            )],
            "Deploy web 1.0.0",
        );

        let client = world.client.clone();
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": format!("{image}:{V1}")}]},
                },
            },
        }))
        .unwrap();
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
        let spec: AutobumpSpec = serde_json::from_value(json!({
            "images": [{"name": image, "tags": {"semver": {}}}],
            "source": {
                "repo": format!("file://{}", fake.git_dir().display()),
                "include": ["apps/**/*.yaml"],
            },
            "pullRequest": {"labels": ["skip-review"], "botLogin": "autobump-bot"},
            "schedule": {"minInterval": "1m"},
            "gate": {
                "prometheus": world.prometheus.url(),
                "alerts": format!("{{alertname=\"WebErrors\", trial=\"{k}\"}}"),
                "bake": "30m",
            },
            "rollout": {"workloads": [{"kind": "Deployment", "namespace": ns, "selector": "app=web"}]},
            "rollback": {"pullRequest": true, "patchCluster": true},
        }))
        .unwrap();
        Api::<Autobump>::namespaced(client, &ns)
            .create(&PostParams::default(), &Autobump::new("web", spec))
            .await
            .unwrap();

        let trial = Self {
            world,
            k,
            ns,
            image,
            fake,
            crash,
            crashed: false,
            now: "2026-11-23T10:00:00Z".parse().unwrap(),
            writes: Vec::new(),
            generation_before_patch: None,
        };
        trial.kubelet().await;
        trial
    }

    fn repository(&self) -> String {
        format!("t{}/web", self.k)
    }

    /// One step: a new engine reconciles once, `advance` after the last step. When the
    /// trial's crash point is in this step, the engine dies right after that write,
    /// and a new one reconciles a minute later.
    async fn step(&mut self, step: Step, advance: TimeDelta) -> Outcome {
        self.now += advance;
        let crash_after = self.crash.filter(|c| c.step == step).map(|c| c.after);
        let faults = Faults::new(crash_after);
        let engine = Engine::boot(self, &faults).await;
        // Boxed: a whole reconcile is a large future.
        let result = Box::pin(engine.reconcile(self.now)).await;
        drop(engine);
        self.writes.push((step, faults.writes()));
        match result {
            Ok(report) => {
                assert!(
                    !faults.crashed(),
                    "trial {}: {step:?} swallowed the injected crash: {report:?}",
                    self.k
                );
                Outcome {
                    report,
                    restarted: false,
                }
            }
            Err(e) => {
                assert!(
                    faults.crashed(),
                    "trial {}: {step:?} failed with no crash injected: {e}",
                    self.k
                );
                self.crashed = true;
                self.now += TimeDelta::minutes(1);
                let engine = Engine::boot(self, &Faults::new(None)).await;
                let report = Box::pin(engine.reconcile(self.now))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "trial {}: the restart after a crash in {step:?} failed: {e}",
                            self.k
                        )
                    });
                Outcome {
                    report,
                    restarted: true,
                }
            }
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.world.client.clone(), &self.ns)
    }

    async fn deployment(&self) -> Deployment {
        self.deployments().get("web").await.unwrap()
    }

    fn running_image(d: &Deployment) -> String {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }

    /// The GitOps applier: sets the Deployment's image to what main says.
    async fn apply_main(&self) {
        let text = self.file_on("main");
        let image = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("image: "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no image in {text}"))
            .to_owned();
        self.deployments()
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": {"spec": {
                    "containers": [{"name": "web", "image": image}],
                }}}})),
            )
            .await
            .unwrap();
    }

    /// The kubelet and the Deployment controller: the current generation rolled out.
    async fn kubelet(&self) {
        let generation = self.deployment().await.metadata.generation.unwrap();
        self.deployments()
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "observedGeneration": generation,
                    "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                    "availableReplicas": 1,
                }})),
            )
            .await
            .unwrap();
    }

    fn file_on(&self, branch: &str) -> String {
        let repo = git2::Repository::open_bare(self.fake.git_dir()).unwrap();
        let commit = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .unwrap()
            .peel_to_commit()
            .unwrap();
        let entry = commit
            .tree()
            .unwrap()
            .get_path(std::path::Path::new(MANIFEST))
            .unwrap();
        String::from_utf8(repo.find_blob(entry.id()).unwrap().content().to_vec()).unwrap()
    }

    fn main_deploys(&self, version: &str) -> bool {
        self.file_on("main")
            .contains(&format!("{}:{version}  # bumped by autobump", self.image))
    }

    async fn state(&self) -> PolicyState {
        let store = KubeStore::new(self.world.client.clone(), Scope::Namespace(self.ns.clone()));
        tokio::task::spawn_blocking(move || store.load("web"))
            .await
            .unwrap()
            .unwrap()
    }

    fn pulls(&self, head: &str) -> Vec<FakePull> {
        self.fake
            .pulls()
            .into_iter()
            .filter(|p| p.head == head)
            .collect()
    }

    /// The open bump PR, which must exist and carry `version`.
    fn open_bump(&self, version: &str) -> FakePull {
        let open: Vec<FakePull> = self
            .pulls(BUMP_BRANCH)
            .into_iter()
            .filter(|p| p.open)
            .collect();
        assert_eq!(
            open.len(),
            1,
            "trial {}: one open bump PR: {open:#?}",
            self.k
        );
        assert!(
            open[0].title.contains(version),
            "trial {}: {:?}",
            self.k,
            open[0].title
        );
        open[0].clone()
    }

    /// CI passes on the bump branch's head.
    fn ci_green(&self) {
        let head = self.fake.branch_sha(BUMP_BRANCH).unwrap();
        self.fake
            .add_check_run(&head, "unit", "completed", Some("success"));
    }

    async fn push_tag(&self, tag: &str) {
        self.world.registry.retag(&self.repository(), V1, tag).await;
    }

    /// Sets the trial's error metric and waits until Prometheus says whether its
    /// alert fires.
    async fn errors(&self, errors: bool) {
        let k = self.k.to_string();
        self.world.metrics.set(
            &format!("web_errors{{trial=\"{k}\"}}"),
            if errors { 3.0 } else { 0.0 },
        );
        let deadline = Deadline::after(Duration::from_secs(60));
        loop {
            let alerts = self.world.prometheus.alerts().await;
            let firing = alerts
                .iter()
                .any(|a| a["labels"]["trial"] == k.as_str() && a["state"] == "firing");
            if firing == errors {
                return;
            }
            assert!(
                !deadline.expired(),
                "trial {k}: the alert's firing never became {errors}: {alerts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The whole story, asserting each step's outcome; exact effects only where no
    /// crash intervened.
    #[allow(clippy::too_many_lines)] // the story, top to bottom
    async fn run(&mut self) {
        let k = self.k;

        let o = self.step(Step::FirstBake, TimeDelta::zero()).await;
        if !o.restarted {
            assert!(
                waiting(&o.report).contains("1.0.0 is baking (30m left)"),
                "{:?}",
                o.report
            );
        }
        assert_eq!(self.state().await.current.unwrap().summary, V1);

        let o = self.step(Step::OpenBump, TimeDelta::minutes(31)).await;
        if !o.restarted {
            assert_eq!(
                kinds(&o.report),
                ["Promote", "PushBranch", "CreatePr", "RecordBump"]
            );
        }
        assert_eq!(self.state().await.last_known_good.unwrap().summary, V1);
        self.open_bump(V2);
        self.ci_green();

        let o = self.step(Step::MergeBump, TimeDelta::minutes(1)).await;
        if !o.restarted {
            assert_eq!(kinds(&o.report), ["Merge"], "{:?}", o.report);
        }
        assert!(self.main_deploys(V2), "trial {k}: {}", self.file_on("main"));
        self.apply_main().await;

        // The new generation is not rolled out yet: it does not bake.
        let o = self.step(Step::RollingOut, TimeDelta::minutes(1)).await;
        assert!(
            waiting(&o.report).contains("1.1.0 is rolling out"),
            "trial {k}: {:?}",
            o.report
        );
        assert_eq!(self.state().await.current.unwrap().summary, V2);
        self.kubelet().await;

        let o = self.step(Step::Bake, TimeDelta::minutes(1)).await;
        if !o.restarted {
            assert!(
                waiting(&o.report).contains("1.1.0 is baking (30m left)"),
                "{:?}",
                o.report
            );
        }
        self.push_tag(V3).await;

        let o = self
            .step(Step::PromoteAndBump, TimeDelta::minutes(31))
            .await;
        if !o.restarted {
            assert_eq!(
                kinds(&o.report),
                ["Promote", "PushBranch", "CreatePr", "RecordBump"]
            );
        }
        assert_eq!(self.state().await.last_known_good.unwrap().summary, V2);
        self.open_bump(V3);
        self.ci_green();

        let o = self.step(Step::MergeBad, TimeDelta::minutes(1)).await;
        if !o.restarted {
            assert_eq!(kinds(&o.report), ["Merge"], "{:?}", o.report);
        }
        assert!(self.main_deploys(V3), "trial {k}: {}", self.file_on("main"));
        self.apply_main().await;
        self.kubelet().await;
        self.generation_before_patch = self.deployment().await.metadata.generation;

        let o = self.step(Step::BakeBad, TimeDelta::minutes(1)).await;
        if !o.restarted {
            assert!(
                waiting(&o.report).contains("1.2.0 is baking (30m left)"),
                "{:?}",
                o.report
            );
        }
        assert_eq!(self.state().await.current.unwrap().summary, V3);

        // 1.2.0 hurts.
        self.errors(true).await;
        let o = self.step(Step::Rollback, TimeDelta::minutes(1)).await;
        if !o.restarted {
            assert_eq!(
                kinds(&o.report),
                ["Rollback", "PatchCluster", "Merge", "Waiting"],
                "{:?}",
                o.report
            );
        }
        assert!(self.main_deploys(V2), "trial {k}: {}", self.file_on("main"));
        let deployment = self.deployment().await;
        assert_eq!(
            Self::running_image(&deployment),
            format!("{}:{V2}", self.image)
        );
        let state = self.state().await;
        assert!(state.hold.is_some(), "trial {k}: {state:?}");
        self.kubelet().await;

        // Still firing: nothing rolls back twice, nothing is proposed.
        let pulls = self.fake.pulls().len();
        let o = self.step(Step::StillFiring, TimeDelta::minutes(1)).await;
        assert!(
            o.report.effects.iter().all(|e| !e.writes()),
            "trial {k}: {:?}",
            o.report
        );
        assert_eq!(self.fake.pulls().len(), pulls);
        assert_eq!(self.state().await.current.unwrap().summary, V2);
        self.apply_main().await;

        // Quiet again, and 1.2.0 is bad: still nothing.
        self.errors(false).await;
        let o = self.step(Step::Quiet, TimeDelta::minutes(10)).await;
        assert!(
            o.report.effects.iter().all(|e| !e.writes()),
            "trial {k}: {:?}",
            o.report
        );
        assert_eq!(self.fake.pulls().len(), pulls);
        assert!(self.main_deploys(V2));

        // 1.3.0 appears: proposed, carrying the hold; green, but it waits for a person.
        self.push_tag(V4).await;
        let o = self.step(Step::NewTag, TimeDelta::minutes(1)).await;
        if !o.restarted {
            assert_eq!(
                kinds(&o.report),
                ["PushBranch", "CreatePr", "RecordBump"],
                "{:?}",
                o.report
            );
        }
        let pr = self.open_bump(V4);
        assert!(pr.labels.contains(&HOLD_LABEL.to_owned()), "{pr:#?}");
        self.ci_green();
        let o = self.step(Step::Held, TimeDelta::minutes(1)).await;
        assert!(
            waiting(&o.report).contains("held"),
            "trial {k}: {:?}",
            o.report
        );
        assert!(!self.fake.pull(pr.number).merged);
        assert!(self.main_deploys(V2));
        assert_eq!(
            self.deployment().await.metadata.generation,
            deployment.metadata.generation
        );
    }

    /// What must hold at the end whatever crashed: one PR per version, exactly one
    /// rollback PR, one hold, one patch, the bad version recorded.
    async fn assert_converged(&self) {
        let k = self.k;
        let bumps = self.pulls(BUMP_BRANCH);
        let titles: Vec<&str> = bumps.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            bumps.len(),
            3,
            "trial {k}: one bump PR per version: {titles:?}"
        );
        for (pr, (version, merged)) in bumps.iter().zip([(V2, true), (V3, true), (V4, false)]) {
            assert!(pr.title.contains(version), "trial {k}: {titles:?}");
            assert_eq!(pr.merged, merged, "trial {k}: {pr:#?}");
        }
        let rollbacks = self.pulls(ROLLBACK_BRANCH);
        assert_eq!(rollbacks.len(), 1, "trial {k}: {rollbacks:#?}");
        assert!(rollbacks[0].merged, "trial {k}: {rollbacks:#?}");
        assert_eq!(
            rollbacks[0].title,
            format!("autobump(web): roll back to {V2}")
        );

        let state = self.state().await;
        let hold = state.hold.clone().unwrap();
        assert_eq!(
            (hold.by.as_str(), hold.automatic, hold.via.as_deref()),
            ("alert:WebErrors", true, Some("gate")),
            "trial {k}"
        );
        let reasons: Vec<&str> = state.history.iter().map(|h| h.reason.as_str()).collect();
        assert_eq!(
            reasons.iter().filter(|r| **r == "Held").count(),
            1,
            "trial {k}: {reasons:?}"
        );
        let canonical = ImageRef::parse(&self.image).unwrap().canonical_repository();
        assert_eq!(
            state.bad_pairs(),
            BTreeSet::from([(canonical, V3.to_owned())]),
            "trial {k}"
        );
        assert_eq!(state.current.unwrap().summary, V2);
        assert_eq!(state.last_known_good.unwrap().summary, V2);

        let d = self.deployment().await;
        assert_eq!(
            d.metadata.generation,
            self.generation_before_patch.map(|g| g + 1),
            "trial {k}: the Deployment is patched exactly once"
        );
        assert_eq!(
            d.metadata
                .annotations
                .unwrap_or_default()
                .get(PATCHED_TO)
                .map(String::as_str),
            Some(V2)
        );
        assert!(self.main_deploys(V2));
        self.fake.assert_responses_valid();
        assert!(
            self.crash.is_none() || self.crashed,
            "trial {k}: the crash point {:?} was never reached",
            self.crash
        );
    }

    /// Records the story should leave, and which are missing: a history entry per
    /// merge, patch and rollback, and the policy's labels on every bump PR.
    async fn record_gaps(&self) -> Vec<String> {
        let state = self.state().await;
        let count = |reason: &str| state.history.iter().filter(|h| h.reason == reason).count();
        let mut gaps = Vec::new();
        for (reason, want) in [("Merged", 2), ("ClusterPatched", 1), ("RolledBack", 1)] {
            if count(reason) != want {
                gaps.push(format!("{} {reason} entries, want {want}", count(reason)));
            }
        }
        for pr in self.pulls(BUMP_BRANCH) {
            if !pr.labels.iter().any(|l| l == "skip-review") {
                gaps.push(format!(
                    "bump PR #{} lacks skip-review: {:?}",
                    pr.number, pr.labels
                ));
            }
        }
        gaps
    }
}

/// Runs the story without a crash, then once per write with a crash right after it
/// (several trials at a time); returns each crash point's missing records.
async fn story_with_a_crash_after_every_write() -> Vec<(CrashPoint, Vec<String>)> {
    let world = World::start().await;
    let mut baseline = Trial::new(Arc::clone(&world), 0, None).await;
    Box::pin(baseline.run()).await;
    baseline.assert_converged().await;
    assert_eq!(baseline.record_gaps().await, Vec::<String>::new());

    // The rollback's writes, in order: hold and bad version first, then the
    // break-glass patch, then the rollback PR; the patch and the merge each behind an
    // intent, so a crash between one and its record loses neither.
    let rollback: Vec<&str> = baseline
        .writes
        .iter()
        .find(|(s, _)| *s == Step::Rollback)
        .map(|(_, w)| w.iter().map(String::as_str).collect())
        .unwrap();
    assert_eq!(
        rollback,
        [
            "store: Held",
            "store: intents",
            "cluster: patch 1 container(s) to 1.1.0",
            "store: ClusterPatched",
            "repo: push autobump-rollback-web",
            "forge: open PR from autobump-rollback-web",
            "store: intents",
            "forge: merge PR #3",
            "store: RolledBack",
        ]
    );

    let points: Vec<CrashPoint> = baseline
        .writes
        .iter()
        .flat_map(|(step, writes)| {
            (1..=writes.len()).map(move |after| CrashPoint { step: *step, after })
        })
        .collect();
    eprintln!(
        "baseline writes per step: {:?}; {} crash trials",
        baseline
            .writes
            .iter()
            .map(|(s, w)| (s, w.len()))
            .collect::<Vec<_>>(),
        points.len()
    );
    // Four at a time, each on its own task.
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    let tasks: Vec<_> = points
        .into_iter()
        .enumerate()
        .map(|(i, point)| {
            let (world, limit) = (Arc::clone(&world), Arc::clone(&limit));
            tokio::spawn(async move {
                let _slot = limit.acquire_owned().await.unwrap();
                let mut trial = Trial::new(world, i + 1, Some(point)).await;
                Box::pin(trial.run()).await;
                trial.assert_converged().await;
                (point, trial.record_gaps().await)
            })
        })
        .collect();
    let mut gaps = Vec::new();
    for task in tasks {
        gaps.push(task.await.expect("a crash trial failed"));
    }
    gaps
}

/// The end-to-end test: see the module docs. A crash right after a write whose
/// record comes in a second write must not lose the record either: the merge of a bump
/// PR (`Merged`), the break-glass patch (`ClusterPatched`), the merge of the rollback
/// PR (`RolledBack`, which the condition, Event and notification follow), and the
/// labels of a bump PR opened just before. Each such write is preceded by an intent
/// that the restart settles from what it observes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_request_rollout_with_a_cluster_rolls_back_once_and_converges_after_any_crash() {
    let gaps = story_with_a_crash_after_every_write().await;
    let missing: Vec<String> = gaps
        .iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(point, m)| format!("crash after {point:?}: {}", m.join("; ")))
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
