//! The `autobump` command line: parsing only. Each subcommand is wired in [`cli`]
//! (with `main.rs`, the only place `anyhow` is used) and its work lives in the
//! library.

// Doc comments here are the CLI's --help text, printed by clap as plain text, where
// Markdown backticks would show literally.
#![allow(clippy::doc_markdown)]

use std::io::Write as _;
use std::path::PathBuf;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use autobump::policy;

mod cli;
use cli::ops::{hold, rollback, unhold};
use cli::run::run_standalone;
use cli::status::{cluster_status, history, status};
use cli::tools::{check, resolve, rewrite};

/// autobump keeps a service's deployed images current through its GitOps repository,
/// and rolls back to the last known-good version when its alerts fire.
#[derive(Debug, Parser)]
#[command(
    name = "autobump",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Example (the example policies of autobump's repository):\n  autobump check policies/"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: text for people, json for log pipelines (one object
    /// per line, with the policy of the reconcile as a span field). The level comes
    /// from AUTOBUMP_LOG (e.g. debug, or autobump=debug,info); default info.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTOBUMP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, and never with NO_COLOR set
    // (https://no-color.org: any non-empty value).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate policy files and directories (recursively, *.yaml and *.yml).
    ///
    /// Only regular files of at most 1 MiB of UTF-8 are read; YAML may use at most
    /// 1,000 aliases, expand to 200,000 nodes and 4 MiB of text, and nest 128 levels.
    ///
    /// Exit status: 0 when every policy is valid, 1 when any is invalid (every
    /// problem is printed as FILE:LINE:COL: field.path: message), 2 on usage or I/O
    /// errors, and when a path holds files but no policy.
    #[command(after_help = "Example:\n  autobump check policies/")]
    Check {
        /// Policy files or directories.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// How to print the result.
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Ask the registries which version each image of a policy would move to.
    ///
    /// Reads the current versions from the references in --repo-dir, lists each
    /// image's tags and prints, per image and series, the chosen version (with its
    /// digest when the policy pins digests) or why nothing was chosen.
    ///
    /// Exit status: 0 when every image was resolved, 1 when a registry could not be
    /// read or no reference to the policy's images was found, 2 on usage or I/O errors.
    #[command(
        after_help = "Example:\n  autobump resolve --policy policies/payments.yaml --repo-dir ../deploy"
    )]
    Resolve(ResolveArgs),
    /// Rewrite image references under DIR to new versions.
    ///
    /// Only the tag and digest of references whose current tag is in the same series
    /// as the new tag change (floating tags such as latest never do); every other byte
    /// stays. Prints one line per change, FILE:LINE: old -> new (FILE relative to DIR);
    /// with --dry-run prints a unified diff instead and writes nothing.
    ///
    /// Exit status: 0 on success (also when nothing changed), 2 on usage or I/O errors.
    #[command(after_help = "Example:\n  autobump rewrite . --set nginx=1.27.3-alpine --dry-run")]
    Rewrite(RewriteArgs),
    /// Reconcile every policy on a tick (standalone: files, no cluster).
    ///
    /// Policies come from files and state lives in a local file.
    /// Direct-push policies need only git and registry access; pull-request policies
    /// also need GITHUB_TOKEN in the environment. An invalid policy file keeps the last
    /// good version of its policies in force and never stops the others. Policies
    /// reconcile --concurrency at a time, each within --reconcile-timeout. SIGTERM or
    /// Ctrl-C starts no new reconcile, gives the ones in flight 3 s, cancels the rest
    /// and exits 0.
    ///
    /// Once running, a policy folder that fails to load as a whole (missing while it
    /// is replaced, out of file descriptors) keeps the last good policies; see
    /// --not-ready-after.
    ///
    /// Exit status with --once: 0 when every policy reconciled and every file loaded,
    /// 1 otherwise; 2 on usage or I/O errors, when no policy loads at start, and when
    /// the state file cannot be read (never overwritten then).
    #[command(
        after_help = "Example:\n  autobump run --policies policies/ --state autobump-state.db --listen 127.0.0.1:8080"
    )]
    Run(Box<RunArgs>),
    /// Hold a policy: no bump merges until the hold is lifted (rollbacks still do).
    ///
    /// The hold records who, when, why and from where, and survives restarts.
    #[command(
        after_help = "Example:\n  autobump hold payments-api --reason \"INC-1234: investigating checkout errors\""
    )]
    Hold {
        /// The policy's name.
        name: String,
        /// Why (shown in status, PR comments and notifications).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: HoldTarget,
    },
    /// Lift a policy's hold (also one autobump placed itself after an alert).
    #[command(after_help = "Example:\n  autobump unhold payments-api")]
    Unhold {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        target: HoldTarget,
    },
    /// Roll a policy back to its last known-good version now, as if its alerts had
    /// fired.
    ///
    /// Records a rollback request in the policy's state (the state file, or with
    /// --kubernetes the object's status). The controller acts on it at its next
    /// reconcile, whatever the gate, the schedule or a hold say: it holds the policy in
    /// your name (cli:$USER: a person's hold, lifted like any other with autobump
    /// unhold or /unhold; with the policy's alerts firing, the automatic hold that only
    /// a person with write permission may lift), records the deployed versions as bad so they are never
    /// proposed again, puts the last known-good versions back in git (rollback PR or
    /// push, as the policy says) and, with rollback.patchCluster, patches the
    /// workloads.
    ///
    /// autobump remembers only the last known-good version. To go back to any other
    /// version, hold the policy and write it by hand: autobump rewrite DIR --policy
    /// FILE --set IMAGE=TAG, then a commit and a PR (runbooks/procedures.md,
    /// "Break-glass: roll back without autobump").
    ///
    /// Exit status: 0 when the request was recorded (or one was already pending), 1
    /// when there is nothing to roll back (no last known-good version, or the deployed
    /// version is the last known-good), 2 on usage or I/O errors.
    #[command(
        after_help = "Example:\n  autobump rollback payments-api --reason \"p99 latency doubled after the last bump\""
    )]
    Rollback {
        /// The policy's name.
        name: String,
        /// Why (shown in the hold, the rollback commit or PR, and notifications).
        #[arg(long)]
        reason: String,
        /// Not supported: autobump can only go back to the last known-good version
        /// (see above for any other version).
        #[arg(long, value_name = "VERSION", hide = true)]
        to: Option<String>,
        #[command(flatten)]
        target: HoldTarget,
    },
    /// Show every policy: current version, last known-good, hold (by, why, since),
    /// next window opening, age of the last bump, last rollback.
    ///
    /// Reads the state file; with --policies also the schedules (for the next
    /// window). Exit status: 0, or 2 on usage or I/O errors.
    #[command(after_help = "Example:\n  autobump status --policies policies/")]
    Status {
        #[command(flatten)]
        state: StateArgs,
        /// Policy files or directories, for the schedule column (optional).
        #[arg(long, value_name = "DIR")]
        policies: Vec<PathBuf>,
        /// Read the Autobump objects of the cluster ($KUBECONFIG or in-cluster)
        /// instead of the state file; policies are shown as namespace/name.
        #[arg(long)]
        kubernetes: bool,
        /// With --kubernetes: only this namespace.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// How to print the result.
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print one policy's history: every decision recorded (holds, bumps, merges,
    /// rollbacks…), oldest first, as kept by the state database (see
    /// --history-retention of run); with --kubernetes, the bounded history of its
    /// object's status. Exit status: 0, or 2 on usage or I/O errors or an unknown
    /// policy.
    #[command(after_help = "Example:\n  autobump history payments-api --since 7d")]
    History {
        /// The policy's name.
        name: String,
        /// Only entries at or after this time (2026-11-21T10:00:00Z, 2026-11-21) or
        /// this long ago (7d, 12h).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// How to print the result.
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        target: HoldTarget,
    },
    /// Print the CustomResourceDefinition of the Autobump kind (YAML).
    #[command(after_help = "Example:\n  autobump crd | kubectl apply -f -")]
    Crd,
}

/// Options of `autobump run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Policy files or directories.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: Vec<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    github_app: cli::github::GitHubAppArgs,
    /// Reconcile every policy once and exit.
    #[arg(long)]
    once: bool,
    /// Time between ticks (e.g. 30s, 1m).
    #[arg(long, default_value = "1m")]
    interval: autobump::policy::values::Duration,
    /// Where clones of the GitOps repositories are cached.
    #[arg(
        long,
        value_name = "DIR",
        env = "AUTOBUMP_CACHE",
        default_value = ".autobump-cache"
    )]
    cache_dir: PathBuf,
    /// The GitHub API (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    github_api: String,
    /// GitLab's web root, for merge requests (with GITLAB_TOKEN in the environment):
    /// gitlab.com or a self-managed instance (with its relative URL root, e.g.
    /// https://example.com/gitlab). Its host's HTTPS git remotes get the token.
    #[arg(long, env = "GITLAB_URL", default_value = "https://gitlab.com")]
    gitlab_url: String,
    /// The bot account, for policies that name none.
    #[arg(long, env = "AUTOBUMP_BOT_LOGIN")]
    bot_login: Option<String>,
    /// The host (HOST[:PORT]) whose git remotes get GITHUB_TOKEN, over HTTPS only.
    /// Default: github.com for https://api.github.com, HOST for https://HOST/api/v3.
    /// No other remote ever gets the token. A loopback host (127.0.0.1:PORT) is also
    /// reached over plain HTTP (test installations).
    #[arg(long, env = "AUTOBUMP_GITHUB_GIT_HOST", value_name = "HOST")]
    github_git_host: Option<String>,
    /// With GitHub webhooks (--listen and GITHUB_WEBHOOK_SECRET): reads of comments,
    /// statuses and check runs that deliveries prove unchanged cost no request; they
    /// are read again at least this often anyway, so a lost delivery delays a merge by
    /// at most this. Everything is re-read from GitHub before a merge.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    github_resync: autobump::policy::values::Duration,
    /// SSH private key for ssh:// and user@host: repositories.
    #[arg(long, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// Policies reconciled at the same time (standalone; with --kubernetes the
    /// controller reconciles 4 objects at once).
    #[arg(long, value_name = "N", default_value_t = autobump::controller::standalone::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// The longest one policy's reconcile may take (also with --kubernetes); past it
    /// the reconcile is cancelled, counted as failed (reason deadline) and tried again
    /// (next tick, or the controller's back-off), and no other policy waits for it.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    reconcile_timeout: autobump::policy::values::Duration,
    /// Once the policies have loaded, a later load that fails (the folder missing
    /// while it is replaced, no file descriptors left) keeps the last good policies
    /// running; /readyz says not ready when it has failed for longer than this.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    not_ready_after: autobump::policy::values::Duration,
    /// Delete history entries older than this from the state database (e.g. 400d;
    /// each policy's newest entry stays). Default: keep the whole history.
    #[arg(long, value_name = "DURATION")]
    history_retention: Option<autobump::policy::values::Duration>,
    /// Commit author name.
    #[arg(long, default_value = "autobump")]
    git_name: String,
    /// Commit author email.
    #[arg(long, default_value = "autobump@localhost")]
    git_email: String,
    /// Serve /healthz, the webhooks and the dashboard (/) here (e.g. 0.0.0.0:8080); each delivery
    /// triggers an immediate reconcile. Secrets come from the environment:
    /// GITHUB_WEBHOOK_SECRET (without it /webhooks/github is not served),
    /// GITLAB_WEBHOOK_SECRET (the X-Gitlab-Token; without it /webhooks/gitlab is not served),
    /// AUTOBUMP_REGISTRY_WEBHOOK_TOKEN, AUTOBUMP_ALERTMANAGER_WEBHOOK_TOKEN.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    dashboard: cli::run::DashboardArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// In-cluster mode: reconcile Autobump custom resources (policy files and the
    /// state file are not used; state lives in each object's status), write status
    /// conditions and Events, and elect a leader with a Lease so that several
    /// replicas can run and only one acts.
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: only this namespace's Autobump objects (default: all).
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// With --kubernetes: the namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "autobump")]
    lease_namespace: String,
    /// With --kubernetes: this replica's name in the Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The cluster for rollout.workloads and rollback.patchCluster in standalone
    /// mode (with --kubernetes the in-cluster config or $KUBECONFIG is used).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

/// Where `hold` and `unhold` write: the state file, or an Autobump object's status.
#[derive(Debug, clap::Args)]
struct HoldTarget {
    #[command(flatten)]
    state: StateArgs,
    /// The policy is an Autobump object (in-cluster mode): write its status
    /// (in-cluster config or $KUBECONFIG); NAME may be NAMESPACE/NAME.
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: the namespace of a bare NAME (default: the kubeconfig's).
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
}

/// Where the standalone state lives.
#[derive(Debug, clap::Args)]
struct StateArgs {
    /// The state database of standalone mode (SQLite). A path not ending in .db
    /// names a JSON state file of an earlier version: the database is the same path
    /// with .db, and the JSON file is imported into it on first use (then kept as
    /// NAME.imported). A JSON file with the database's stem next to it
    /// (autobump-state.json) is imported the same way.
    #[arg(
        long = "state",
        value_name = "PATH",
        env = "AUTOBUMP_STATE",
        default_value = "autobump-state.db"
    )]
    path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One line per problem, then a summary.
    Text,
    /// A JSON document with every problem.
    Json,
}

/// Exit status for usage and I/O errors (clap uses 2 for usage errors too).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    autobump::install_crypto_provider();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once, even when an error's message already includes its source.
            let chain: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("autobump: error: {}", autobump::error_chain(chain));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { paths, output } => check(&paths, output),
        Command::Crd => {
            print_out(&policy::crd_yaml())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rewrite(args) => rewrite(&args),
        Command::Resolve(args) => resolve(&args),
        Command::Run(args) => run_standalone(&args),
        Command::Hold {
            name,
            reason,
            target,
        } => hold(&name, &reason, &target),
        Command::Unhold { name, target } => unhold(&name, &target),
        Command::Rollback {
            name,
            reason,
            to,
            target,
        } => rollback(&name, &reason, to.as_deref(), &target),
        Command::History {
            name,
            since,
            output,
            target,
        } => history(&name, since.as_deref(), output, &target),
        Command::Status {
            state,
            policies,
            kubernetes,
            namespace,
            output,
        } => {
            if kubernetes {
                cluster_status(namespace.as_deref(), output)
            } else {
                status(&state, &policies, output)
            }
        }
    }
}

/// Options of `autobump resolve`.
#[derive(Debug, clap::Args)]
struct ResolveArgs {
    /// The policy file (exactly one policy).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// A checkout of the policy's repository: where the current versions are read.
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo_dir: PathBuf,
    /// How to print the result.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// How to reach container registries.
#[derive(Debug, clap::Args)]
struct RegistryArgs {
    /// Registry credentials in Docker's config.json format (auths, identitytoken,
    /// credHelpers, credsStore). Default: $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json, when present.
    #[arg(long, value_name = "FILE")]
    docker_config: Option<PathBuf>,
    /// Talk plain HTTP to this registry host (repeatable). Loopback hosts
    /// (localhost, 127.0.0.1) always use plain HTTP.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM) to trust for registries.
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// The longest one registry call may take: listing a repository's tags (every
    /// page, retries and Retry-After waits included), a digest or a build time. Each
    /// request within it is limited to 20s, and tag listings to 1000 pages.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    registry_timeout: autobump::policy::values::Duration,
}

fn plural(n: usize, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "policy") => format!("{n} policies"),
        _ => format!("{n} {noun}s"),
    }
}

/// Writes to stdout; a closed pipe (`autobump crd | head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Arguments of `autobump rewrite`.
#[derive(Debug, clap::Args)]
struct RewriteArgs {
    /// The checked-out repository; globs are relative to it.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Move IMAGE (a repository, or a prefix ending in /) to TAG, and DIGEST if given.
    /// Repeat for more images, and for one image once per tag series (e.g. once per
    /// dateSha variant suffix).
    #[arg(long = "set", value_name = "IMAGE=TAG[@DIGEST]", required = true)]
    set: Vec<String>,
    /// structured: YAML image values only, comments untouched (default); text: every
    /// reference in the included files, comments too (Prow's autobumper).
    #[arg(long, value_parser = ["structured", "text"])]
    mode: Option<String>,
    /// Files to rewrite (repeatable; default **/*.yaml and **/*.yml, in both modes).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Files never rewritten (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Print a unified diff of what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Take the tag series rule of each image, and source.include, source.exclude and
    /// source.mode, from this policy file (one policy); --mode, --include and --exclude
    /// given here replace the policy's. Without it the series rule is inferred from
    /// each new tag's shape: date-sha (its variant), a version tag (v prefix, number
    /// of parts and variant suffix: 1.25.4-alpine replaces only 1.25.3-alpine-style
    /// tags), otherwise the same shape.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// Splits a shell line into words: whitespace separates, double quotes group;
    /// a pipe ends the command.
    fn words(line: &str) -> Vec<String> {
        let command = line.split(" | ").next().unwrap_or_default();
        let mut out = Vec::new();
        let mut word = String::new();
        let mut quoted = false;
        for c in command.chars() {
            match c {
                '"' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => {
                    if !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
        out
    }

    /// `autobump --help` and every subcommand's help end with an example, and the
    /// example is a command line the parser accepts as written.
    #[test]
    fn every_help_ends_with_an_example_that_parses() {
        let cli = Cli::command();
        let mut commands = vec![cli.clone()];
        commands.extend(cli.get_subcommands().cloned());
        for command in commands {
            let help = command
                .get_after_help()
                .unwrap_or_else(|| panic!("{}: no example in --help", command.get_name()))
                .to_string();
            let example = help.lines().last().unwrap_or_default().trim().to_owned();
            let argv = words(&example);
            assert_eq!(
                argv.first().map(String::as_str),
                Some("autobump"),
                "{example}"
            );
            if command.get_name() != "autobump" {
                assert_eq!(argv.get(1).map(String::as_str), Some(command.get_name()));
            }
            if let Err(e) = <Cli as clap::Parser>::try_parse_from(&argv) {
                panic!(
                    "{}: example `{example}` does not parse: {e}",
                    command.get_name()
                );
            }
        }
    }
}
