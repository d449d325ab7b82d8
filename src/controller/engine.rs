//! The engine: one policy's whole turn — its gate read fresh, the forge it needs,
//! [`super::reconcile_read`] (observe → plan → execute) within a deadline, then the
//! metrics and logs of what happened and the notifications it owes — generic over
//! its adapters.
//!
//! Standalone mode ([`super::standalone`]), cluster mode
//! ([`crate::incluster::reconciler`]) and the simulator all run a policy through
//! [`Engine::run`]; only where policies come from, where their state lives (the
//! [`Store`] handed to each call) and when they run differ. The adapters:
//!
//! | adapter | trait | production | simulator |
//! |---|---|---|---|
//! | registry | [`Registry`] | [`RegistryClient`] | simulated registry |
//! | repository | [`Repo`] | [`GitRepo`] | simulated repository |
//! | forge | [`Forge`] | [`Forges`]: [`GitHub`] and/or [`crate::forge::GitLab`] | simulated GitHub or GitLab |
//! | alerts | [`AlertSource`] | [`AlertsClient`] | simulated Prometheus |
//! | notifications | [`Deliver`] | [`Notifier`] | recorded deliveries |
//! | cluster | [`DynWorkloads`] | [`crate::cluster::KubeWorkloads`] | simulated workloads |
//! | clock | [`Clock`] | [`crate::clock::SystemClock`] | the simulated time |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::Instrument as _;

use super::{Deps, ForgeAccess, ReconcileError, Report, reconcile_read};
use crate::alerts::{AlertSource, AlertsClient, AlertsConfig, read_gate};
use crate::clock::{Clock, Stopwatch};
use crate::cluster::DynWorkloads;
use crate::core::change::StateChange;
use crate::core::gate::GateVerdict;
use crate::forge::{
    Forge, Forges, GitHub, GitHubApp, GitHubAuth, GitHubConfig, GitLab, GitLabConfig, RepoName,
    WebhookFeed,
};
use crate::metrics::Metrics;
use crate::notify::{Deliver, Notification, Notifier, NotifierConfig};
use crate::policy::Policy;
use crate::registry::{Registry, RegistryClient};
use crate::repo::{Auth, GitRepo, Repo, Source, github_git_host, github_token_applies, redact_url};
use crate::resolve::Resolver;
use crate::store::{PolicyState, Store};

/// The longest one policy's reconcile may take, unless
/// [`Engine::with_reconcile_timeout`] says otherwise.
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(300);

/// The outcome of one policy's reconcile.
#[derive(Debug)]
pub enum PolicyOutcome {
    /// Reconciled.
    Done(Report),
    /// The reconcile failed (retried next time when retryable).
    Failed(ReconcileError),
    /// Not run, and why.
    Skipped(String),
}

/// The adapters an engine is built from.
pub struct Adapters<R, G, F, A, N> {
    /// The container registries.
    pub registry: R,
    /// The GitOps repositories.
    pub repo: G,
    /// The forge pull-request policies need (`None`: such policies are skipped,
    /// saying why).
    pub forge: Option<F>,
    /// Where the gates' alerts are read.
    pub alerts: A,
    /// Where notifications go.
    pub notifier: N,
}

/// Which credentials a git remote gets.
#[derive(Debug, Clone, Default)]
pub struct GitCredentials {
    /// The GitHub token: sent over HTTPS to the GitHub host only.
    pub github_token: Option<String>,
    /// The host (`HOST[:PORT]`) whose HTTPS remotes get the token (see
    /// [`github_token_applies`]).
    pub github_git_host: Option<String>,
    /// An SSH private key for `ssh://` and `user@host:` remotes.
    pub ssh_key: Option<PathBuf>,
    /// HTTPS remotes on the GitHub host get a token from the forge (a GitHub App's
    /// installation token, [`Forge::git_token`]) instead of `github_token`.
    pub forge_tokens: bool,
    /// The GitLab token and the host (`HOST[:PORT]`) whose HTTPS remotes get it (as
    /// `oauth2:<token>`, which GitLab accepts for personal, group and project access
    /// tokens); no other remote ever gets it.
    pub gitlab: Option<(String, String)>,
}

impl GitCredentials {
    /// The repository whose forge token `policy`'s remote gets, if it gets one.
    #[must_use]
    pub fn forge_token_repo(&self, policy: &Policy) -> Option<RepoName> {
        let url = policy.spec.source.repo.as_str();
        let applies = self
            .github_git_host
            .as_deref()
            .is_some_and(|host| github_token_applies(url, host));
        (self.forge_tokens && applies)
            .then(|| RepoName::parse(url))
            .flatten()
    }

    /// Where `policy`'s repository is and how to reach it.
    #[must_use]
    pub fn source(&self, policy: &Policy) -> Source {
        let url = policy.spec.source.repo.clone();
        let text = url.as_str();
        let auth = if text.starts_with("https://") || text.starts_with("http://") {
            // The token is GitHub's: it goes to the GitHub host of --github-api over
            // HTTPS and nowhere else (a policy naming another host would collect it).
            match &self.github_token {
                Some(token)
                    if self
                        .github_git_host
                        .as_deref()
                        .is_some_and(|host| github_token_applies(text, host)) =>
                {
                    Auth::github_token(token.clone())
                }
                _ => match &self.gitlab {
                    Some((token, host)) if github_token_applies(text, host) => Auth::UserPass {
                        username: "oauth2".to_owned(),
                        password: token.clone(),
                    },
                    _ => {
                        tracing::debug!(
                            repo = %redact_url(text),
                            "not the GitHub or GitLab host over https: no token for this remote"
                        );
                        Auth::None
                    }
                },
            }
        } else if text.starts_with("file://") {
            Auth::None
        } else {
            self.ssh_key.clone().map_or(Auth::None, |key| Auth::SshKey {
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
}

/// How the production engine reaches the outside world.
#[derive(Debug, Clone)]
pub struct Config {
    /// A GitHub token, for pull-request policies and HTTPS git on GitHub.
    pub github_token: Option<String>,
    /// The GitHub API base URL.
    pub github_api: String,
    /// The host whose git remotes get the GitHub token, when not the one derived
    /// from the API URL (`github.com` for `https://api.github.com`, `HOST` for
    /// `https://HOST/api/v3`).
    pub github_git_host: Option<String>,
    /// The bot login when a policy names none.
    pub bot_login: Option<String>,
    /// An SSH private key for `ssh://` and `user@host:` repositories.
    pub ssh_key: Option<PathBuf>,
    /// A GitHub App, used instead of `github_token` when set: installation tokens
    /// for the API and for git over HTTPS on the GitHub host.
    pub github_app: Option<GitHubApp>,
    /// GitLab's web root (`https://gitlab.com`, or a self-managed instance) and a
    /// token (`GITLAB_TOKEN`), for merge requests and HTTPS git on that host.
    pub gitlab: Option<(String, String)>,
}

/// The engine `autobump run` uses, in both modes.
pub type ProductionEngine = Engine<RegistryClient, GitRepo, Forges, AlertsClient, Notifier>;

/// One policy's turn, over any adapters (see the module docs).
pub struct Engine<R, G, F, A, N> {
    resolver: Resolver<R>,
    /// Policies' own credentials: Secrets (cluster mode; `None`: files).
    secrets: Option<Arc<dyn crate::credentials::SecretSource>>,
    /// The resolvers of policies with their own registry credentials.
    own_resolvers: crate::credentials::OwnResolvers<R>,
    repo: G,
    forge: Option<F>,
    alerts: A,
    notifier: N,
    workloads: Option<Box<dyn DynWorkloads>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    git: GitCredentials,
    bot_login: Option<String>,
    reconcile_timeout: Duration,
}

impl ProductionEngine {
    /// The engine of `autobump run`: `registry` and `repo`, GitHub when `config` has
    /// a token (recording what `feed`'s webhook deliveries said), Prometheus and
    /// Alertmanager, the notifier, metrics on `clock`.
    ///
    /// # Errors
    /// An HTTP client could not be built (TLS setup).
    pub fn production(
        config: Config,
        clock: Arc<dyn Clock>,
        registry: RegistryClient,
        repo: GitRepo,
        feed: Arc<WebhookFeed>,
    ) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new(Arc::clone(&clock)));
        metrics.attach_registry(registry.stats());
        let auth = match (&config.github_app, &config.github_token) {
            (Some(app), _) => Some(app.auth()),
            (None, Some(token)) => Some(GitHubAuth::Token(token.clone())),
            (None, None) => None,
        };
        let github = match auth {
            Some(auth) => Some(
                GitHub::new(
                    GitHubConfig::new(auth).api_url(config.github_api.clone()),
                    Arc::clone(&clock),
                )
                .map_err(|e| format!("GitHub client: {e}"))?
                .with_feed(Arc::clone(&feed)),
            ),
            None => None,
        };
        let gitlab = match &config.gitlab {
            Some((url, token)) => Some(
                GitLab::new(
                    GitLabConfig::new(url.clone(), token.clone()),
                    Arc::clone(&clock),
                )
                .map_err(|e| format!("GitLab client: {e}"))?
                .with_feed(feed),
            ),
            None => None,
        };
        // The forge-request metrics count the GitHub client's requests, else GitLab's.
        if let Some(stats) = github
            .as_ref()
            .map(GitHub::stats)
            .or_else(|| gitlab.as_ref().map(GitLab::stats))
        {
            metrics.attach_forge(stats);
        }
        let gitlab_git = gitlab
            .as_ref()
            .zip(config.gitlab.as_ref())
            .and_then(|(client, (_, token))| Some((token.clone(), client.git_host()?)));
        let forges = Forges { github, gitlab };
        let forge = (!forges.is_empty()).then_some(forges);
        let adapters = Adapters {
            registry,
            repo,
            forge,
            alerts: AlertsClient::new(AlertsConfig::default())
                .map_err(|e| format!("alert client: {e}"))?,
            notifier: Notifier::new(NotifierConfig::default(), Arc::clone(&clock))
                .map_err(|e| format!("notifier: {e}"))?,
        };
        let git = GitCredentials {
            github_git_host: config
                .github_git_host
                .or_else(|| github_git_host(&config.github_api)),
            forge_tokens: config.github_app.is_some(),
            github_token: config.github_token.filter(|_| config.github_app.is_none()),
            ssh_key: config.ssh_key,
            gitlab: gitlab_git,
        };
        Ok(Self::new(adapters, clock, metrics)
            .with_git_credentials(git)
            .with_bot_login(config.bot_login))
    }
}

impl<R, G, F, A, N> Engine<R, G, F, A, N>
where
    R: Registry,
    G: Repo,
    F: Forge,
    A: AlertSource,
    N: Deliver,
{
    /// An engine over `adapters`, reading `clock`, recording into `metrics`; no
    /// cluster, no git credentials, no default bot login.
    pub fn new(
        adapters: Adapters<R, G, F, A, N>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            resolver: Resolver::new(adapters.registry),
            secrets: None,
            own_resolvers: crate::credentials::OwnResolvers::default(),
            repo: adapters.repo,
            forge: adapters.forge,
            alerts: adapters.alerts,
            notifier: adapters.notifier,
            workloads: None,
            clock,
            metrics,
            git: GitCredentials::default(),
            bot_login: None,
            reconcile_timeout: DEFAULT_RECONCILE_TIMEOUT,
        }
    }

    /// Reads policies' own credentials (`credentials: {secret: NAME}`) from
    /// `secrets`, in each policy's namespace (cluster mode); without, from files.
    #[must_use]
    pub fn with_secrets(mut self, secrets: Arc<dyn crate::credentials::SecretSource>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Reaches git remotes with `git`.
    #[must_use]
    pub fn with_git_credentials(mut self, git: GitCredentials) -> Self {
        self.git = git;
        self
    }

    /// The forge, when one is configured.
    #[must_use]
    pub fn forge(&self) -> Option<&F> {
        self.forge.as_ref()
    }

    /// The bot account of pull-request policies that name none.
    #[must_use]
    pub fn with_bot_login(mut self, login: Option<String>) -> Self {
        self.bot_login = login;
        self
    }

    /// Observes rollouts and patches workloads (`rollout.workloads`,
    /// `rollback.patchCluster`) through this cluster.
    #[must_use]
    pub fn with_cluster(mut self, workloads: impl DynWorkloads + 'static) -> Self {
        self.workloads = Some(Box::new(workloads));
        self
    }

    /// Cancels a policy's reconcile (and then separately its notifications) that takes
    /// longer than `timeout`; it fails with [`ReconcileError::Deadline`] and is tried
    /// again next time.
    #[must_use]
    pub fn with_reconcile_timeout(mut self, timeout: Duration) -> Self {
        self.reconcile_timeout = timeout;
        self
    }

    /// The metrics this engine records (served on `/metrics`).
    #[must_use]
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The clock the engine reads.
    #[must_use]
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// The time a turn starts at: whole seconds (decisions and records need no
    /// sub-second precision, and whole seconds keep status and messages readable).
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        chrono::SubsecRound::trunc_subsecs(self.clock.now(), 0)
    }

    /// Starts a pass over every policy (a standalone tick): a repository many
    /// policies share is fetched once per pass for their scans (see
    /// [`Repo::begin_pass`]).
    pub fn begin_pass(&self) {
        self.repo.begin_pass();
    }

    /// Forgets what the resolver cached about an image (after a registry push).
    pub fn invalidate(&self, canonical: &str) {
        self.resolver.invalidate(canonical);
        self.own_resolvers.invalidate(canonical);
    }

    /// One policy's whole turn at `now`, its state in `store`: the reconcile within
    /// its deadline, then its accounting, then its notifications (within the deadline
    /// again).
    pub async fn run<S: Store>(&self, p: &Policy, store: &S, now: DateTime<Utc>) -> PolicyOutcome {
        let span = tracing::info_span!("reconcile", policy = %policy_key(p));
        let watch = Stopwatch::start();
        let outcome = self
            .reconcile_bounded(p, store, now)
            .instrument(span.clone())
            .await;
        let state = span.in_scope(|| self.account(p.name(), store, &outcome, watch.elapsed()));
        if let Some(state) = state {
            let notify = self.notify(p, store, &state, now).instrument(span.clone());
            if tokio::time::timeout(self.reconcile_timeout, notify)
                .await
                .is_err()
            {
                span.in_scope(|| {
                    tracing::warn!("notifications cancelled at the reconcile deadline");
                });
            }
        }
        outcome
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

    /// One reconcile of `p` with its state in `store`: the gate read fresh, the
    /// forge a pull-request policy needs, then observe → plan → execute.
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
        let forge = match ForgeAccess::for_policy(p, self.forge.as_ref(), self.bot_login.as_deref())
        {
            Ok(forge) => forge,
            Err(why) => return PolicyOutcome::Skipped(why),
        };
        let own = match crate::credentials::for_policy(p, self.secrets.as_deref()).await {
            Ok(own) => own,
            Err(e) => return PolicyOutcome::Failed(e.into()),
        };
        let own_resolver = match &own.registry {
            Some(credentials) => {
                let key = format!(
                    "{}/{}",
                    p.metadata.namespace.as_ref().map_or("", |n| n.as_str()),
                    p.name()
                );
                match self
                    .own_resolvers
                    .get(&key, self.resolver.registry(), credentials)
                {
                    Some(resolver) => Some(resolver),
                    None => {
                        return PolicyOutcome::Failed(ReconcileError::Policy(
                            "this registry client takes no per-policy credentials".into(),
                        ));
                    }
                }
            }
            None => None,
        };
        let mut source = self.git.source(p);
        if let Some(auth) = own.git {
            source.auth = auth;
        } else if let (Some(forge), Some(repo)) = (&self.forge, self.git.forge_token_repo(p)) {
            match forge.git_token(&repo).await {
                Ok(Some(token)) => source.auth = crate::repo::Auth::github_token(token),
                Ok(None) => {}
                Err(e) => return PolicyOutcome::Failed(e.into()),
            }
        }
        let deps = Deps {
            resolver: own_resolver.as_deref().unwrap_or(&self.resolver),
            repo: &self.repo,
            store,
            source,
            workloads: self.workloads.as_deref(),
            forge,
        };
        match reconcile_read(p, &deps, &reading, now).await {
            Ok(report) => PolicyOutcome::Done(report),
            Err(e) => PolicyOutcome::Failed(e),
        }
    }

    /// Metrics and logs of one policy's reconcile, and the history it wrote
    /// (also entries written by other processes, e.g. `autobump hold`). Returns the
    /// policy's state as it stands now (for [`Self::notify`]), `None` if unreadable.
    pub fn account<S: Store>(
        &self,
        name: &str,
        store: &S,
        outcome: &PolicyOutcome,
        took: Duration,
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
}

/// `namespace/name`, or the bare name of a policy from a file.
fn policy_key(p: &Policy) -> String {
    match &p.metadata.namespace {
        Some(ns) => format!("{ns}/{}", p.name()),
        None => p.name().to_owned(),
    }
}

#[cfg(test)]
mod gitlab_credentials_tests {
    use super::*;

    fn policy(repo: &str) -> Policy {
        let text = format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: p}}\nspec:\n  images: [{{prefix: registry.example.com/p/, tags: {{semver: {{}}}}}}]\n  source: {{repo: \"{repo}\"}}\n"
        );
        let (mut policies, diagnostics) =
            crate::policy::load_str(std::path::Path::new("p.yaml"), &text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        policies.remove(0)
    }

    /// The GitLab token goes to the GitLab host over HTTPS only, as `oauth2`; the
    /// GitHub token still only to GitHub.
    #[test]
    fn the_gitlab_token_goes_only_to_the_gitlab_host() {
        let git = GitCredentials {
            github_token: Some("ghp_x".into()),
            github_git_host: Some("github.com".into()),
            gitlab: Some(("glpat-x".into(), "gitlab.example.com".into())),
            ..GitCredentials::default()
        };
        let gitlab = crate::repo::Auth::UserPass {
            username: "oauth2".into(),
            password: "glpat-x".into(),
        };
        assert_eq!(
            git.source(&policy("https://gitlab.example.com/g/sub/p.git"))
                .auth,
            gitlab
        );
        assert_eq!(
            git.source(&policy("https://github.com/o/r.git")).auth,
            crate::repo::Auth::github_token("ghp_x")
        );
        for elsewhere in [
            "http://gitlab.example.com/g/p.git",
            "https://gitlab.example.com.evil.example/g/p.git",
            "https://gitlab.com/g/p.git",
        ] {
            assert_eq!(
                git.source(&policy(elsewhere)).auth,
                crate::repo::Auth::None,
                "{elsewhere}"
            );
        }
    }
}
