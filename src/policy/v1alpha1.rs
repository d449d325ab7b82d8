//! `autobump.dev/v1alpha1`, kind `Autobump`: the policy API (pure types).
//!
//! One object per deployed thing. The same types are read from files
//! (`policies/*.yaml`) and from custom resources. Unknown fields are errors
//! everywhere; defaults are documented on each field and show in the CRD.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{
    AlertMatchers, BranchName, DnsLabel, Duration, EnvName, Glob, HttpUrl, ImageName, ImagePrefix,
    Label, LabelSelector, Pattern, RepoUrl, SemverRange, Timezone,
};
use crate::core::schedule::{FreezeBound, Window};

/// The API group.
pub const GROUP: &str = "autobump.dev";
/// This module's version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in files.
pub const API_VERSION: &str = "autobump.dev/v1alpha1";
/// The kind.
pub const KIND: &str = "Autobump";

/// What autobump keeps current, where it writes, when it may deploy, and how it
/// decides that a rollout hurt.
// `printcolumn(type_ = …)` repeated once per column trips clippy's duplicate-attribute
// lint inside the derive's input; the repetition is the macro's documented syntax.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "autobump.dev",
    version = "v1alpha1",
    kind = "Autobump",
    namespaced,
    status = "AutobumpStatus",
    shortname = "ab",
    category = "gitops",
    doc = "An autobump policy: which images to keep current in which GitOps repository, when bumps may merge, and the alert gate that rolls them back.",
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.current.summary",
        description = "The version deployed now"
    ),
    printcolumn(
        name = "Known-good",
        type_ = "string",
        json_path = ".status.lastKnownGood.summary",
        description = "The last version that baked without alerts"
    ),
    printcolumn(
        name = "Held",
        type_ = "string",
        json_path = ".status.hold.by",
        description = "Who or what holds further bumps"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutobumpSpec {
    /// The images to watch. At least one.
    pub images: Vec<ImagePolicy>,
    /// The GitOps repository whose manifests are rewritten.
    pub source: SourceSpec,
    /// Deliver bumps as a pull request (the default when neither `pullRequest` nor
    /// `directPush` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestSpec>,
    /// Deliver bumps by pushing straight to `source.branch` (for repositories without
    /// pull requests). Mutually exclusive with `pullRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_push: Option<DirectPushSpec>,
    /// When bumps may happen. Default: any time, at most once an hour.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// How autobump merges its pull requests.
    #[serde(default)]
    pub merge: MergeSpec,
    /// The alert gate. Without it, nothing can roll back automatically and every
    /// deployed version is promoted to known-good after `rollout.deployDelay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,
    /// Where the images run in the cluster, to observe rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// What to do when the gate fires during a bake.
    #[serde(default)]
    pub rollback: RollbackSpec,
    /// Where to tell people about bumps, merges, holds and rollbacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifySpec>,
    /// Take only versions another policy proved: its known-good releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionSpec>,
}

/// Promotion between environments (dev → staging → production): a policy with
/// `promotion.from` proposes only versions the upstream policy recorded as
/// known-good (baked for its whole bake with its gate Clear) and that neither policy
/// recorded as bad. The newest such version in this policy's own series wins; its tag
/// policy still applies, and `consistent` images still move together.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PromotionSpec {
    /// The upstream policy's name: a policy of the same `autobump run` (standalone
    /// mode) or an Autobump object in the same namespace (cluster mode). It may watch
    /// another repository or branch; chains (dev → staging → production) are allowed,
    /// cycles are not.
    pub from: DnsLabel,
}

/// One image, or every image under a prefix, and how its tags are chosen.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImagePolicy {
    /// Every image whose repository starts with this prefix (ending in `/`), found
    /// among the references in the repository. Exactly one of `prefix` and `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<ImagePrefix>,
    /// One image repository. Exactly one of `prefix` and `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ImageName>,
    /// How tags are read and ordered.
    pub tags: TagPolicy,
    /// All images under `prefix` move together to one tag that exists for each of
    /// them. Default false. Needs `prefix`.
    #[serde(default)]
    pub consistent: bool,
    /// Write `tag@sha256:…` so the deployed image cannot change under the tag.
    /// Default false.
    #[serde(default)]
    pub pin_digest: bool,
    /// The source code repository the images are built from (e.g.
    /// `https://github.com/kubernetes/test-infra`): PR bodies link the compare view
    /// between the old and new commit when tags carry a commit hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repo: Option<HttpUrl>,
    /// Tags never proposed, as globs, on top of the built-in exclusions for
    /// signatures and attestations (`*.sig`, `*.att`, `*.sbom`, `sha256-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tags: Vec<Glob>,
    /// A tag becomes a candidate only once it is this old (e.g. `72h`, `3d`): a
    /// release that is pulled or fixed within days is never deployed. Its age counts
    /// from the image's build time (the config's `created`) when that is plausible —
    /// present, not before 2000 and not more than 5 minutes in the future — and
    /// otherwise from when autobump first listed the tag, so reproducible builds (ko,
    /// Bazel, nix write `created` as 1970-01-01 or leave it out) never look old; that
    /// first-listed time is kept in memory, so after a restart such a tag waits
    /// `minAge` again (images with a real build time do not). Only candidates newer
    /// than the deployed version are looked up (one config read each, cached), and an
    /// older candidate that is old enough is taken while a newer one waits. Default:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age: Option<Duration>,
    /// This policy's own registry login, instead of the controller's for the
    /// registries it names: in cluster mode `{secret: NAME}`, a
    /// `kubernetes.io/dockerconfigjson` Secret in the policy's namespace; standalone
    /// `{file: PATH}`, a Docker `config.json`. Logins and identity tokens only (no
    /// credential helpers). Read on every reconcile, so a rotated Secret or file
    /// applies at once. Default: the controller's registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsRef>,
}

/// A code forge autobump opens pull (merge) requests on.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ForgeKind {
    /// GitHub or GitHub Enterprise Server: pull requests.
    #[serde(rename = "github")]
    GitHub,
    /// GitLab (gitlab.com or self-managed): merge requests.
    #[serde(rename = "gitlab")]
    GitLab,
}

impl ForgeKind {
    /// The name the policy API uses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
        }
    }
}

/// Where a policy's own credentials are: exactly one of `secret` and `file`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CredentialsRef {
    /// A Secret in the policy's own namespace (cluster mode only; a policy can never
    /// name another namespace's Secret).
    Secret(DnsLabel),
    /// A file on the machine autobump runs on (standalone mode only; refused in
    /// cluster mode, where the controller's files are not the policy's to read).
    File(String),
}

impl ImagePolicy {
    /// How old a tag must be to be a candidate: `minAge`, unless absent or `0s`.
    #[must_use]
    pub fn required_age(&self) -> Option<chrono::TimeDelta> {
        self.min_age
            .filter(|age| !age.is_zero())
            .map(Duration::delta)
    }
}

/// A tag policy: exactly one of `semver`, `dateSha` or `regex`. A reference only ever
/// moves to a newer tag of its own *series*; floating tags (`latest`, `stable`,
/// `alpine`, `slim-bookworm`) belong to none and never move.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TagPolicy {
    /// Version tags `[v]N(.N)*[-SUFFIX]` with one to four numeric parts (`1.4.2`,
    /// `v1.4.2`, `16.1-alpine`, `3.12.1-slim-bookworm`, `10.3.0.82913-community`).
    /// Series: a `v` prefix or not, the number of parts, and the suffix — so
    /// `1.25.3-alpine` moves only to `1.26.0-alpine` (never to `1.26.0`,
    /// `1.26.0-alpine-slim` or the floating `1.26-alpine`) and `20.10.0-alpine3.18`
    /// stays on `alpine3.18`. A pre-release marker (`rc`, `alpha`, `beta`, `pre`,
    /// `preview`, `dev`, `snapshot`, `a1`, `b2`) glued to the last number or as the
    /// first suffix segment (`3.13.0rc1-slim-bookworm`, `1.27.0-rc1-alpine`,
    /// `2.0.0-rc.1`) makes a pre-release of its series, chosen only with
    /// `prerelease: true`.
    Semver(SemverPolicy),
    /// Prow-style `vYYYYMMDD-<hex>[-variant]` tags: the newest date wins, each
    /// variant suffix (and no suffix) is its own series.
    DateSha(DateShaPolicy),
    /// Tags matching a pattern, ordered by a captured part; all matching tags are one
    /// series (so the pattern decides which variant is followed, e.g.
    /// `^1\.25\.3-debian-12-r(?P<rev>\d+)$` for Bitnami's revision counters).
    Regex(RegexPolicy),
}

/// Options of the `semver` tag policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SemverPolicy {
    /// Only versions in this range (Cargo syntax: `>=1.2, <2`, `^1.4`, `~1.4`,
    /// `<17`), matched against the numeric version (`16.1-alpine` is 16.1.0; a fourth
    /// part is ignored; a pre-release by the release it leads to). Default: any
    /// version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<SemverRange>,
    /// Consider pre-releases (`1.5.0-rc.1`, `3.13.0rc1-slim`, `7.4-rc2-alpine`) of the
    /// deployed series. Default false.
    #[serde(default)]
    pub prerelease: bool,
}

/// Options of the `dateSha` tag policy (none yet).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DateShaPolicy {}

/// Options of the `regex` tag policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegexPolicy {
    /// Tags that do not match are ignored.
    pub pattern: Pattern,
    /// The named capture group whose value orders tags. Default: the whole tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<String>,
    /// How extracted values are compared. Default `numerical`.
    #[serde(default)]
    pub order: Order,
}

/// How extracted tag parts are ordered.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Order {
    /// As numbers; tags whose part is not a number are ignored.
    #[default]
    Numerical,
    /// As strings, byte by byte.
    Alphabetical,
}

/// The repository that is rewritten.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceSpec {
    /// The repository URL.
    pub repo: RepoUrl,
    /// The branch deployments come from. Default `main`.
    #[serde(default = "default_branch")]
    pub branch: BranchName,
    /// Files to rewrite, as globs relative to the repository root.
    /// Default `["**/*.yaml", "**/*.yml"]`.
    #[serde(default = "default_include")]
    pub include: Vec<Glob>,
    /// Files never rewritten, even when included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Glob>,
    /// `structured` (default): each file's name picks its reader — YAML (values that
    /// are image references, YAML inside block scalars, chart templates line by
    /// line), Dockerfile (`FROM`, `ARG` defaults), anything else as text; `text`:
    /// every reference to a watched image in the included files, comments too
    /// (Prow's autobumper behaviour).
    #[serde(default)]
    pub mode: RewriteMode,
    /// This policy's own git credentials, instead of the controller's
    /// (`GITHUB_TOKEN`, the GitHub App, `--ssh-key`): in cluster mode `{secret:
    /// NAME}`, a Secret in the policy's namespace holding an SSH key
    /// (`kubernetes.io/ssh-auth`, key `ssh-privatekey`), a login
    /// (`kubernetes.io/basic-auth`, `username` and `password`) or a `token` (sent as
    /// `x-access-token`); standalone `{file: PATH}`, an SSH private key or a file
    /// holding a token. A login or token goes only to this repository, and only over
    /// HTTPS (plain HTTP to a loopback host). Read on every reconcile. Default: the
    /// controller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsRef>,
    /// The forge hosting `repo`, for pull (merge) requests: `github` or `gitlab`.
    /// Default: told by the host — `github.com` is GitHub; `gitlab.com`, a host named
    /// `gitlab.*`, the controller's `--gitlab-url` host and paths with nested groups
    /// (`group/subgroup/project`) are GitLab; any other host is GitHub (Enterprise
    /// Server). Name it for a self-managed GitLab on a host that does not say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeKind>,
}

fn default_branch() -> BranchName {
    "main".parse().expect("valid branch")
}

fn default_include() -> Vec<Glob> {
    vec![
        "**/*.yaml".parse().expect("valid glob"),
        "**/*.yml".parse().expect("valid glob"),
    ]
}

/// How references are found in files.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum RewriteMode {
    /// A reader per file type: YAML-aware (image values only, comments untouched),
    /// Dockerfile, or text for other files.
    #[default]
    Structured,
    /// Every matching reference in any included file.
    Text,
}

/// Bumps as pull requests.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PullRequestSpec {
    /// The head branch of the autobump PR. Default `autobump-<policy name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<BranchName>,
    /// Labels put on the PR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
    /// The account that authors autobump PRs; only its PRs are merged. Default: the
    /// account autobump authenticates as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_login: Option<String>,
    /// The least repository permission needed to `/hold` the policy. Default `triage`.
    #[serde(default = "default_hold_permission")]
    pub hold_permission: RepoPermission,
    /// The least repository permission needed to `/unhold` it. Default `write`; a hold
    /// autobump placed itself always needs at least `write`.
    #[serde(default = "default_unhold_permission")]
    pub unhold_permission: RepoPermission,
}

/// A repository permission level (GitHub's roles), weakest first.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RepoPermission {
    /// Read.
    Read,
    /// Triage.
    Triage,
    /// Write.
    Write,
    /// Maintain.
    Maintain,
    /// Admin.
    Admin,
}

impl From<RepoPermission> for crate::core::commands::Permission {
    fn from(p: RepoPermission) -> Self {
        match p {
            RepoPermission::Read => Self::Read,
            RepoPermission::Triage => Self::Triage,
            RepoPermission::Write => Self::Write,
            RepoPermission::Maintain => Self::Maintain,
            RepoPermission::Admin => Self::Admin,
        }
    }
}

fn default_hold_permission() -> RepoPermission {
    RepoPermission::Triage
}

fn default_unhold_permission() -> RepoPermission {
    RepoPermission::Write
}

impl PullRequestSpec {
    /// Who may use `/hold` and `/unhold`.
    #[must_use]
    pub fn command_requirements(&self) -> crate::core::commands::Requirements {
        crate::core::commands::Requirements {
            hold: self.hold_permission.into(),
            unhold: self.unhold_permission.into(),
        }
    }
}

impl Default for PullRequestSpec {
    fn default() -> Self {
        Self {
            branch: None,
            labels: Vec::new(),
            bot_login: None,
            hold_permission: default_hold_permission(),
            unhold_permission: default_unhold_permission(),
        }
    }
}

/// Bumps pushed straight to the deployment branch.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectPushSpec {}

/// When bumps may happen.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// The IANA timezone windows and freezes are written in. Default `UTC`.
    #[serde(default)]
    pub timezone: Timezone,
    /// Weekly windows such as `Mon-Fri 09:00-17:00`. Default: none, meaning any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// The least time between two bumps. Default `1h`.
    #[serde(default = "default_min_interval")]
    pub min_interval: Duration,
    /// Periods with no bumps at all, overriding windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freezes: Vec<FreezeSpec>,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        Self {
            timezone: Timezone::default(),
            windows: Vec::new(),
            min_interval: default_min_interval(),
            freezes: Vec::new(),
        }
    }
}

impl ScheduleSpec {
    /// The pure schedule this spec describes.
    #[must_use]
    pub fn to_schedule(&self) -> crate::core::schedule::Schedule {
        crate::core::schedule::Schedule::new(
            self.timezone.0,
            self.windows.clone(),
            self.freezes
                .iter()
                .map(|f| crate::core::schedule::Freeze {
                    from: f.from.clone(),
                    to: f.to.clone(),
                    reason: f.reason.clone(),
                })
                .collect(),
            self.min_interval.delta(),
        )
    }
}

fn default_min_interval() -> Duration {
    Duration::from_secs(3600)
}

/// A period without bumps. A date `to` is inclusive (frozen through that day).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FreezeSpec {
    /// First day or instant of the freeze.
    pub from: FreezeBound,
    /// Last day (inclusive) or instant (exclusive) of the freeze.
    pub to: FreezeBound,
    /// Why; shown in status and notifications.
    pub reason: String,
}

/// How autobump merges its pull requests.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MergeSpec {
    /// `squash` (default), `merge` or `rebase`.
    #[serde(default)]
    pub method: MergeMethod,
    /// Check or status names that must succeed. Default `[]`: every check run and
    /// commit status on the head must succeed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_checks: Vec<String>,
    /// Comment to re-run failed checks, and how often. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retest: Option<RetestSpec>,
}

/// A pull-request merge method.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum MergeMethod {
    /// One commit on the base branch.
    #[default]
    Squash,
    /// A merge commit.
    Merge,
    /// The PR's commits replayed.
    Rebase,
}

/// Re-running failed checks by comment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetestSpec {
    /// The comment posted. Default `/retest`.
    #[serde(default = "default_retest_comment")]
    pub comment: String,
    /// At most this many times per head commit. Default 3.
    #[serde(default = "default_retest_max")]
    pub max: u32,
}

fn default_retest_comment() -> String {
    "/retest".into()
}

fn default_retest_max() -> u32 {
    3
}

/// The alert gate: the service counts as healthy while no selected alert fires.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GateSpec {
    /// Read firing alerts from this Prometheus. Exactly one of `prometheus` and
    /// `alertmanager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<HttpUrl>,
    /// Read firing alerts from this Alertmanager (silenced and inhibited alerts do
    /// not count). Exactly one of `prometheus` and `alertmanager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<HttpUrl>,
    /// Which alerts count, as label matchers. Default `{}`: every alert.
    #[serde(default)]
    pub alerts: AlertMatchers,
    /// How long a deployed version must stay quiet to become known-good.
    /// Default `1h`.
    #[serde(default = "default_bake")]
    pub bake: Duration,
    /// Count pending alerts (not yet past their `for:`) as firing. Default false.
    #[serde(default)]
    pub include_pending: bool,
}

fn default_bake() -> Duration {
    Duration::from_secs(3600)
}

/// Where the images run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Workloads whose rollout is observed (in-cluster mode). Default: none; a
    /// version then counts as deployed when its commit reaches `source.branch`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadSpec>,
    /// Extra time after a version counts as deployed before its bake starts (e.g.
    /// the GitOps sync delay). Default `0s`.
    #[serde(default, skip_serializing_if = "Duration::is_zero")]
    pub deploy_delay: Duration,
}

/// A set of workloads.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    /// The namespace.
    pub namespace: DnsLabel,
    /// A label selector.
    pub selector: LabelSelector,
}

/// A workload kind.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 `StatefulSet`.
    StatefulSet,
    /// apps/v1 `DaemonSet`.
    DaemonSet,
}

/// What a rollback does.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollbackSpec {
    /// Open (and merge) a rollback pull request. Default true.
    #[serde(default = "yes")]
    pub pull_request: bool,
    /// Also patch the workloads in `rollout.workloads` directly. Default false.
    #[serde(default)]
    pub patch_cluster: bool,
    /// Checks a rollback PR needs. Default `[]`: none (a rollback is never blocked
    /// by red checks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_checks: Vec<String>,
}

impl Default for RollbackSpec {
    fn default() -> Self {
        Self {
            pull_request: true,
            patch_cluster: false,
            required_checks: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// One notification target: exactly one of `slack` and `webhook`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotifySpec {
    /// A Slack incoming webhook.
    Slack(NotifyTarget),
    /// A generic JSON webhook.
    Webhook(NotifyTarget),
}

/// Where a notification goes and which events it gets.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotifyTarget {
    /// The webhook URL, read from a secret (it is a credential).
    pub url: SecretRef,
    /// The events sent. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<NotifyEvent>,
}

/// A secret value: exactly one of `env`, `file` and `secretKeyRef`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SecretRef {
    /// An environment variable of the autobump process.
    Env(EnvName),
    /// A file (e.g. a mounted secret).
    File(String),
    /// A key of a Secret in the policy's namespace (in-cluster mode).
    SecretKeyRef(SecretKeySelector),
}

/// A key in a Kubernetes Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    pub name: DnsLabel,
    /// The key.
    pub key: String,
}

/// Events people can be notified of.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotifyEvent {
    /// A bump PR was opened or refreshed.
    Opened,
    /// A bump merged.
    Merged,
    /// A version became known-good.
    Promoted,
    /// The policy was held.
    Held,
    /// A hold was lifted.
    Unheld,
    /// A rollback happened.
    RolledBack,
}

// -------------------------------------------------------------------------------------
// Status (written by the controller)

/// The observed state of an `Autobump`, written by the controller only: the
/// conditions, and the policy's state (the same schema the standalone state
/// database keeps).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutobumpStatus {
    /// `Ready`, `Held`, `Baking`, `RolledBack`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What autobump remembers about the policy.
    #[serde(flatten)]
    pub state: PolicyState,
}

/// What autobump remembers about one policy: in standalone mode a row of the state
/// database, in cluster mode its object's status (see [`AutobumpStatus`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyState {
    /// The hold in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// The versions deployed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Release>,
    /// The last versions that baked without alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good: Option<Release>,
    /// The bake of the deployed version, kept between reconciles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<BakeProgress>,
    /// When the last bump was opened or pushed (for `schedule.minInterval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bump: Option<DateTime<Utc>>,
    /// Image versions rolled back from: never proposed again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    // A list in the schema: Kubernetes refuses `uniqueItems` in a CRD.
    #[schemars(with = "Vec<BadVersion>")]
    pub bad_versions: BTreeSet<BadVersion>,
    /// Pull-request comment ids already acted on (so a `/hold` is applied once),
    /// oldest first, bounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_comments: Vec<u64>,
    /// The last history entry (its `seq`) notifications were sent for; absent until
    /// the first delivery round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_seq: Option<u64>,
    /// Recent decisions, newest last (at most 200 here; the standalone database keeps
    /// every one, and `autobump history` prints them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Writes under way (a merge, a push, the cluster patch, labels) whose history
    /// entries wait for their outcome, at most one of each kind; a restart settles
    /// any left behind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intents: Vec<Intent>,
    /// A person asked for a rollback to the last known-good version
    /// (`autobump rollback`); the next reconcile carries it out and removes it in the
    /// same update that places the hold and records the bad versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_request: Option<RollbackRequest>,
    /// The releases that became known-good here, oldest first (at most
    /// [`PROVEN_LIMIT`]): what policies promoting from this one may take, with the
    /// evidence their pull requests cite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proven: Vec<Proven>,
    /// The last pull request autobump merged here (a release that becomes known-good
    /// with its versions names it as its evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergedPullRequest>,
}

/// How many proven releases a policy keeps (a policy promoting from it looks for the
/// newest proven version of its own series among them).
pub const PROVEN_LIMIT: usize = 50;

/// A release that baked clean: the evidence a promotion cites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Proven {
    /// The release (its `since` is when it was deployed).
    #[serde(flatten)]
    pub release: Release,
    /// When it became known-good.
    pub known_good_at: DateTime<Utc>,
    /// How long it baked (`gate.bake`, or `rollout.deployDelay` without a gate).
    pub bake: String,
    /// The alert gate it baked under (`None`: the policy has no gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// A link to the pull request that deployed it, when autobump merged one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_url: Option<String>,
}

/// A pull request autobump merged, and the versions it carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergedPullRequest {
    /// Its number.
    pub number: u64,
    /// The versions it moved to.
    pub images: Vec<ImageVersion>,
}

/// An image version recorded as bad (rolled back from); never proposed again.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct BadVersion {
    /// The canonical repository.
    pub image: String,
    /// The tag.
    pub tag: String,
}

/// The bake of one deployed version, kept between reconciles: promoted to
/// known-good once the gate stayed clear for `gate.bake`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BakeProgress {
    /// The version baking (its release summary, to notice a new deployment).
    pub version: String,
    /// Since when every observation of the gate was Clear (absent while it is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_since: Option<DateTime<Utc>>,
    /// How often the bake restarted because the gate could not be read.
    #[serde(default)]
    pub restarts: u32,
}

/// A status condition (Kubernetes conventions).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Held`, `Baking` or `RolledBack`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A PascalCase reason.
    pub reason: String,
    /// Human-readable detail (may be empty). Required rather than defaulted: the
    /// v1.20 API server rejects an empty-string default in a CRD schema.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A set of image versions deployed together.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// One line for tables: the tag if all images share it, else a count.
    pub summary: String,
    /// Each image and its version.
    pub images: Vec<ImageVersion>,
    /// When this became the case.
    pub since: DateTime<Utc>,
    /// The commit of `source.branch` that carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A write to the world that autobump is about to make, whose history entry waits for
/// its outcome: written before the write and replaced by the entry after it. A
/// restart that finds one settles it from what it observes (the pull request merged,
/// the branch carrying the versions, the workloads running them), so a crash between
/// a write and its record loses neither.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// What is being done.
    pub kind: IntentKind,
    /// The history entry's reason once it happened (`Merged`, `RolledBack`, `Pushed`,
    /// `ClusterPatched`); none for labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Reason>,
    /// The history entry's message once it happened.
    pub message: String,
    /// The pull request being merged (`Merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// The versions the branch (`Push`) or the workloads (`Patch`) carry once it
    /// happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageVersion>,
    /// The labels to add to the bump pull request being opened (`Label`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// When it was decided.
    pub since: DateTime<Utc>,
}

impl Intent {
    /// An intent of `kind` decided at `since` that records `record` (if any) with
    /// `message` once it happened; the fields of particular kinds start empty.
    #[must_use]
    pub fn new(
        kind: IntentKind,
        record: Option<Reason>,
        message: String,
        since: DateTime<Utc>,
    ) -> Self {
        Self {
            kind,
            record,
            message,
            pull_request: None,
            images: Vec::new(),
            labels: Vec::new(),
            since,
        }
    }
}

/// The kinds of [`Intent`]: at most one of each is in force.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IntentKind {
    /// Merging a pull request (a bump or a rollback).
    Merge,
    /// Pushing to `source.branch` (direct push: a bump or a rollback).
    Push,
    /// The break-glass patch of the workloads.
    Patch,
    /// Labelling the bump pull request being opened (`pullRequest.labels`).
    Label,
}

/// An image at a version.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageVersion {
    /// The repository.
    pub image: String,
    /// The tag.
    pub tag: String,
    /// The digest, when pinned or known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A hold on further bumps.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// Who: a login (`user:alice`), or an alert (`alert:HookDown`).
    pub by: String,
    /// When.
    pub since: DateTime<Utc>,
    /// Why, as given.
    pub reason: String,
    /// Where it came from: a comment URL, `cli`, or the alert source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Placed by autobump itself (alerts, a tampered PR): only a person with write
    /// permission may lift it.
    #[serde(default)]
    pub automatic: bool,
}

/// A person's request to roll the policy back to its last known-good version now,
/// whatever the gate says (`autobump rollback`). The controller acts on it at its next
/// reconcile: it holds the policy in the requester's name, records the deployed
/// versions as bad and delivers the rollback like an alert-driven one.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// Who asked (`cli:alice`); the hold the rollback places is theirs.
    pub by: String,
    /// When.
    pub since: DateTime<Utc>,
    /// Why, as given.
    pub reason: String,
    /// Where it came from (`cli`); becomes the hold's `via`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// One decision in the policy's history.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// What kind of decision (PascalCase: `BumpPushed`, `Merged`, `Promoted`, `Held`,
    /// `RolledBack`…).
    pub reason: Reason,
    /// What happened.
    pub message: String,
    /// Position in the policy's history, counting from 1 and never reused (entries
    /// beyond the history limit are dropped, their numbers are not): notifications
    /// and metrics remember the last one they handled. 0 in records written before
    /// it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
}

/// The kinds of decision a policy's history records. Every consumer (metrics,
/// notifications, Kubernetes Events and conditions, `status`) matches on this enum
/// exhaustively, so a new kind is placed everywhere or the build fails.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Reason {
    /// The base branch carries a new release of the policy's images.
    Deployed,
    /// A bump was pushed to the PR branch for review.
    BumpPushed,
    /// A bump was pushed straight to the base branch (direct push).
    Pushed,
    /// The bump PR was merged.
    Merged,
    /// The deployed release baked clean: it is the last known-good.
    Promoted,
    /// The policy was put on hold (by a person, or automatically).
    Held,
    /// The hold was lifted.
    Unheld,
    /// The known-good versions went back onto the branch.
    RolledBack,
    /// A person asked for a rollback.
    RollbackRequested,
    /// A rollback request had nothing to act on.
    NothingToRollBack,
    /// The workloads were patched to the known-good images (break-glass).
    ClusterPatched,
    /// Patching the workloads failed (the rollback in git went ahead).
    ClusterPatchFailed,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Self; 12] = [
        Self::Deployed,
        Self::BumpPushed,
        Self::Pushed,
        Self::Merged,
        Self::Promoted,
        Self::Held,
        Self::Unheld,
        Self::RolledBack,
        Self::RollbackRequested,
        Self::NothingToRollBack,
        Self::ClusterPatched,
        Self::ClusterPatchFailed,
    ];

    /// The PascalCase name, as stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployed => "Deployed",
            Self::BumpPushed => "BumpPushed",
            Self::Pushed => "Pushed",
            Self::Merged => "Merged",
            Self::Promoted => "Promoted",
            Self::Held => "Held",
            Self::Unheld => "Unheld",
            Self::RolledBack => "RolledBack",
            Self::RollbackRequested => "RollbackRequested",
            Self::NothingToRollBack => "NothingToRollBack",
            Self::ClusterPatched => "ClusterPatched",
            Self::ClusterPatchFailed => "ClusterPatchFailed",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason equals its name (`Reason::Held == "Held"`).
impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::str::FromStr for Reason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown history reason {s:?}"))
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}
