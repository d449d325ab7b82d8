//! The `autobump` command line: parsing and wiring only (the one place `anyhow` is
//! used). Each subcommand's work lives in the library.

// Doc comments here are the CLI's --help text, printed by clap as plain text, where
// Markdown backticks would show literally.
#![allow(clippy::doc_markdown)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use autobump::clock::SystemClock;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use autobump::policy::{self, Diagnostic};

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
    /// Serve /healthz and the webhooks here (e.g. 0.0.0.0:8080); each delivery
    /// triggers an immediate reconcile. Secrets come from the environment:
    /// GITHUB_WEBHOOK_SECRET (without it /webhooks/github is not served),
    /// AUTOBUMP_REGISTRY_WEBHOOK_TOKEN, AUTOBUMP_ALERTMANAGER_WEBHOOK_TOKEN.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
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

/// Serves the webhooks; every delivery pokes the loop, and registry pushes queue
/// their image for cache invalidation.
async fn serve_webhooks(
    addr: std::net::SocketAddr,
    feed: Arc<autobump::forge::WebhookFeed>,
    poke: Arc<tokio::sync::Notify>,
    pushed: Arc<std::sync::Mutex<Vec<String>>>,
    metrics: Arc<autobump::metrics::Metrics>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    policy_load: Option<Arc<autobump::policy::health::LoadHealth>>,
) -> anyhow::Result<()> {
    let secret = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (router, mut events) = autobump::http::server(autobump::http::Webhooks {
        github_secret: secret("GITHUB_WEBHOOK_SECRET").map(String::into_bytes),
        github_feed: Some(feed),
        registry_token: secret("AUTOBUMP_REGISTRY_WEBHOOK_TOKEN"),
        alertmanager_token: secret("AUTOBUMP_ALERTMANAGER_WEBHOOK_TOKEN"),
        metrics: Some(metrics),
        ready,
        policy_load,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {addr}: {e}"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        "serving /healthz, /readyz, /metrics and the webhooks"
    );
    // Bounded: header-read and idle timeouts, a connection cap, accept errors
    // (EMFILE) survived (see autobump::http::serve).
    tokio::spawn(autobump::http::serve(
        listener,
        router,
        autobump::http::ServeLimits::default(),
    ));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(recheck) = events.registry.recv() => {
                    pushed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(recheck.canonical_repository());
                }
                Some(_) = events.github.recv() => {}
                Some(_) = events.alerts.recv() => {}
                else => break,
            }
            poke.notify_one();
        }
    });
    Ok(())
}

// Wiring of the whole process (adapters, signals, HTTP, the loop) in one readable place.
#[allow(clippy::too_many_lines)]
fn run_standalone(args: &RunArgs) -> anyhow::Result<ExitCode> {
    use std::sync::atomic::{AtomicBool, Ordering};

    use autobump::controller::standalone::{Config, Standalone};
    use autobump::repo::{GitConfig, GitRepo, Person};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let repo = GitRepo::new(GitConfig::new(
            &args.cache_dir,
            Person {
                name: args.git_name.clone(),
                email: args.git_email.clone(),
            },
        ));
        let mut driver = Standalone::new(
            Config {
                policies: if args.kubernetes {
                    Vec::new()
                } else {
                    args.policies.clone()
                },
                state: args.state.path.clone(),
                // A secret: from the environment only, never a flag (argv is public).
                github_token: std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty()),
                github_api: args.github_api.clone(),
                bot_login: args.bot_login.clone(),
                ssh_key: args.ssh_key.clone(),
            },
            Arc::new(SystemClock),
            args.registry.client()?,
            repo,
        )
        .map_err(|e| anyhow::anyhow!(e))?
        .with_github_resync(args.github_resync.delta())
        .with_concurrency(args.concurrency)
        .with_reconcile_timeout(
            args.reconcile_timeout
                .delta()
                .to_std()
                .unwrap_or(autobump::controller::standalone::DEFAULT_RECONCILE_TIMEOUT),
        )
        .with_not_ready_after(args.not_ready_after.delta().to_std().unwrap_or_default());
        if let Some(host) = &args.github_git_host {
            driver = driver.with_github_git_host(host.clone());
        }
        if args.kubernetes {
            return run_in_cluster(args, driver).await;
        }
        // One run per database (a second one refuses, naming the first), and a state
        // this build cannot read stops here, before anything acts; it is never
        // overwritten.
        let lease = autobump::store::sqlite::open_for_run(&args.state.path, autobump::clock::Clock::now(&SystemClock))?;
        if let Some(kubeconfig) = &args.kubeconfig {
            let workloads = autobump::cluster::KubeWorkloads::from_kubeconfig(
                kubeconfig,
                Arc::new(SystemClock),
            )
            .await?;
            driver = driver.with_cluster(workloads);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        {
            let (stop, wake) = (Arc::clone(&stop), Arc::clone(&wake));
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!(
                    grace_s = autobump::controller::standalone::SHUTDOWN_GRACE.as_secs(),
                    "stopping: no new reconciles; the ones in flight get a short grace, then are cancelled"
                );
                stop.store(true, Ordering::SeqCst);
                wake.notify_one();
            });
        }
        let poke = Arc::new(tokio::sync::Notify::new());
        let pushed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ready = Arc::new(AtomicBool::new(false));
        if let Some(addr) = args.listen {
            serve_webhooks(
                addr,
                driver.webhook_feed(),
                Arc::clone(&poke),
                Arc::clone(&pushed),
                driver.metrics(),
                Arc::clone(&ready),
                Some(driver.load_health()),
            )
            .await?;
        }
        watch_policy_files(args.policies.clone(), Arc::clone(&poke));
        loop {
            let images: Vec<String> = std::mem::take(
                &mut *pushed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for image in images {
                driver.invalidate(&image);
            }
            // Fails only when the policies never loaded (exit 2); later load failures
            // keep the last good policies (see --not-ready-after).
            let tick = driver.tick(&stop).await?;
            print_tick(&tick, args.once);
            if let Some(keep) = args.history_retention {
                lease.store().prune_history(keep.delta(), autobump::clock::Clock::now(&SystemClock))?;
            }
            // Ready once the policies loaded and every one had its first reconcile;
            // not ready any more once stopping.
            ready.store(!stop.load(Ordering::SeqCst), Ordering::SeqCst);
            if args.once {
                return Ok(if tick.ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(ExitCode::SUCCESS);
            }
            let pause = args
                .interval
                .delta()
                .to_std()
                .unwrap_or(std::time::Duration::from_secs(60));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = poke.notified() => {}
                () = wake.notified() => return Ok(ExitCode::SUCCESS),
            }
        }
    });
    // A git transfer cancelled with its reconcile still runs on a blocking thread
    // (libgit2 cannot be interrupted); do not wait for it to exit. What it leaves is
    // what a crash leaves, and the state's intents make that safe.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Pokes the loop when a policy file is added, removed or changed (checked every
/// 2 s: a stat per file, nothing read), so an edit takes effect at once.
fn watch_policy_files(paths: Vec<PathBuf>, poke: Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        let mut last = autobump::policy::files_fingerprint(&paths);
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let now = autobump::policy::files_fingerprint(&paths);
            if now != last {
                tracing::info!("policy files changed; reconciling now");
                last = now;
                poke.notify_one();
            }
        }
    });
}

/// `autobump run --kubernetes`: the kube-runtime driver with leader election, state
/// in the objects' status; SIGTERM stops new work, finishes the reconciles in flight
/// and releases the Lease.
async fn run_in_cluster(
    args: &RunArgs,
    engine: autobump::controller::standalone::Standalone,
) -> anyhow::Result<ExitCode> {
    use autobump::controller::incluster::ClusterReconciler;
    use autobump::incluster::driver::{Driver, DriverConfig};
    use autobump::incluster::lease::LeaseConfig;
    use autobump::incluster::store::Scope;

    let clock: Arc<dyn autobump::clock::Clock> = Arc::new(SystemClock);
    let workloads = autobump::cluster::KubeWorkloads::infer(Arc::clone(&clock)).await?;
    let client = workloads.client().clone();
    let engine = Arc::new(engine.with_cluster(workloads));
    let metrics = engine.metrics();
    let feed = engine.webhook_feed();
    metrics.set_leader(false);
    let identity = match &args.identity {
        Some(id) => id.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(
            |_| format!("autobump-{}", std::process::id()),
            |h| h.trim().to_owned(),
        ),
    };
    let scope = args
        .namespace
        .clone()
        .map_or(Scope::AllNamespaces, Scope::Namespace);
    let mut config = DriverConfig::new(
        scope,
        LeaseConfig::new(&args.lease_namespace, "autobump", identity),
    );
    config.interval = args
        .interval
        .delta()
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(60));
    let driver = Driver::new(
        client,
        config,
        clock,
        ClusterReconciler::new(Arc::clone(&engine)),
    )?;
    let mut leadership = driver.leadership();
    {
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            loop {
                let leading = *leadership.borrow_and_update();
                metrics.set_leader(leading);
                tracing::info!(leading, "leadership");
                if leadership.changed().await.is_err() {
                    break;
                }
            }
        });
    }
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    if let Some(addr) = args.listen {
        // Each delivery (Alertmanager, registry, GitHub) reconciles every object now;
        // the reconcile reads the gate, registries and forge afresh, so a delivery
        // only decides when. A registry push first drops what is cached of its image.
        let poke = Arc::new(tokio::sync::Notify::new());
        let pushed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        serve_webhooks(
            addr,
            feed,
            Arc::clone(&poke),
            Arc::clone(&pushed),
            metrics,
            Arc::clone(&ready),
            None,
        )
        .await?;
        let trigger = driver.trigger();
        tokio::spawn(async move {
            loop {
                poke.notified().await;
                let images = std::mem::take(
                    &mut *pushed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                for image in images {
                    engine.invalidate(&image);
                }
                trigger.reconcile_all();
            }
        });
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping: finishing the reconciles in flight, releasing the lease");
        ready.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = stop_tx.send(true);
    });
    driver.run(stop_rx).await?;
    Ok(ExitCode::SUCCESS)
}

/// One line per policy on stdout; with `once`, file problems on stderr (a running
/// controller logs each problem once, when it appears).
fn print_tick(tick: &autobump::controller::standalone::Tick, once: bool) {
    use autobump::controller::standalone::PolicyOutcome;
    if once {
        for d in &tick.diagnostics {
            eprintln!("autobump: invalid policy (its last good version stays in force): {d}");
        }
    }
    for (name, outcome) in &tick.outcomes {
        let line = match outcome {
            PolicyOutcome::Done(report) => report.summary(),
            PolicyOutcome::Failed(e) => format!(
                "failed ({}): {e}",
                if e.is_retryable() {
                    "will retry"
                } else {
                    "needs attention"
                }
            ),
            PolicyOutcome::Skipped(why) => format!("skipped: {why}"),
        };
        println!("{name}: {line}");
    }
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

impl HoldTarget {
    /// Changes `name`'s state with `f` where this target says.
    fn update(
        &self,
        name: &str,
        f: &mut dyn FnMut(&mut autobump::store::PolicyState),
    ) -> anyhow::Result<()> {
        self.with_store(&mut |store| {
            store
                .update(name, f)
                .map_err(|e| anyhow::anyhow!("policy {name}: {e}"))?;
            Ok(())
        })
    }

    /// Runs `f` on the store this target says (the state file, or the Autobump
    /// objects' status).
    fn with_store(
        &self,
        f: &mut dyn FnMut(&dyn autobump::store::Store) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        use autobump::incluster::store::{KubeStore, Scope};
        if !self.kubernetes {
            return f(&autobump::store::SqliteStore::open(&self.state.path)?);
        }
        // KubeStore blocks on this runtime from here (outside it), which needs the
        // multi-threaded kind to drive its I/O.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let store = runtime.block_on(async {
            autobump::install_crypto_provider();
            let client = kube::Client::try_default().await?;
            anyhow::Ok(KubeStore::new(
                client,
                self.namespace
                    .clone()
                    .map_or(Scope::AllNamespaces, Scope::Namespace),
            ))
        })?;
        f(&store)
    }
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

/// Prints `autobump status` rows as a table or as JSON.
fn print_status(
    rows: &[autobump::status::StatusRow],
    now: chrono::DateTime<chrono::Utc>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    match output {
        Output::Text => print_out(&autobump::status::table(rows, now))?,
        Output::Json => print_out(&(serde_json::to_string_pretty(rows)? + "\n"))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `autobump status --kubernetes`: the same table from the objects' status.
fn cluster_status(namespace: Option<&str>, output: Output) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    use autobump::policy::{Autobump, Policy};
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let objects = runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        let api: kube::Api<Autobump> = match namespace {
            Some(ns) => kube::Api::namespaced(client, ns),
            None => kube::Api::all(client),
        };
        anyhow::Ok(api.list(&kube::api::ListParams::default()).await?.items)
    })?;
    let mut policies = Vec::new();
    let mut states = std::collections::BTreeMap::new();
    for object in &objects {
        let key = format!(
            "{}/{}",
            object.metadata.namespace.as_deref().unwrap_or("default"),
            object.metadata.name.as_deref().unwrap_or_default()
        );
        match Policy::from_resource(object) {
            Ok(p) => policies.push((key.clone(), p)),
            Err(problems) => eprintln!("autobump: {key}: {}", problems.join("; ")),
        }
        let state = object
            .status
            .as_ref()
            .map(autobump::incluster::store::state_of)
            .unwrap_or_default();
        states.insert(key, state);
    }
    // Rows are keyed by namespace/name: the same name may exist in two namespaces.
    let keyed: Vec<(String, &Policy)> = policies.iter().map(|(k, p)| (k.clone(), p)).collect();
    let rows = autobump::status::rows_keyed(&keyed, &states, now);
    if rows.is_empty() {
        eprintln!(
            "autobump: no Autobump objects in {} of the cluster ($KUBECONFIG or in-cluster); \
             create one with: kubectl apply -f POLICY.yaml (autobump check POLICY.yaml first)",
            namespace.map_or_else(
                || "any namespace".to_owned(),
                |ns| format!("namespace {ns}")
            ),
        );
        if output == Output::Text {
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_status(&rows, now, output)
}

fn status(state: &StateArgs, policies: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let states = autobump::store::sqlite::load_existing(&state.path)?;
    let loaded = if policies.is_empty() {
        Vec::new()
    } else {
        let loaded = policy::load_paths(policies)?;
        for d in &loaded.diagnostics {
            eprintln!("autobump: {d}");
        }
        loaded.policies
    };
    let rows = autobump::status::rows(&loaded, &states, now);
    if rows.is_empty() {
        // An empty table says nothing; say where we looked and how to begin.
        let paths = autobump::store::sqlite::StatePaths::of(&state.path);
        let what = if paths.db.exists() || paths.json.exists() {
            "holds no policy yet"
        } else {
            "does not exist"
        };
        eprintln!(
            "autobump: no policies: the state file {} {what}, and no --policies were given.\n\
             It is written by autobump run; start it with:\n  \
             autobump run --policies policies/ --state {}\n\
             (or point --state / $AUTOBUMP_STATE at the state file it writes; \
             for Autobump objects in a cluster: autobump status --kubernetes)",
            state.path.display(),
            state.path.display(),
        );
        if output == Output::Text {
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_status(&rows, now, output)
}

/// `autobump history`: the library formats, this prints.
fn history(
    name: &str,
    since: Option<&str>,
    output: Output,
    target: &HoldTarget,
) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    use autobump::store::history::{Format, parse_since, report};
    let since = since
        .map(|s| parse_since(s, SystemClock.now()))
        .transpose()?;
    let format = match output {
        Output::Text => Format::Text,
        Output::Json => Format::Json,
    };
    let mut text = String::new();
    target.with_store(&mut |store| {
        text = report(store, name, since, format)?;
        Ok(())
    })?;
    print_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Who is running the command, for the hold's record.
fn operator() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{user}")
}

fn hold(name: &str, reason: &str, target: &HoldTarget) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why (it is shown to whoever wonders why nothing deploys)");
    }
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let by = operator();
    let mut existing = None;
    target.update(name, &mut |s| {
        if let Some(h) = &s.hold {
            existing = Some(h.clone());
            return;
        }
        s.hold = Some(autobump::policy::v1alpha1::Hold {
            by: by.clone(),
            since: now,
            reason: reason.to_owned(),
            via: Some("cli".to_owned()),
            automatic: false,
        });
        s.record(now, "Held", format!("held by {by}: {reason}"));
    })?;
    match existing {
        Some(h) => println!(
            "{name} is already held by {} since {} ({}); nothing changed",
            h.by, h.since, h.reason
        ),
        None => println!("{name} held by {by}: {reason}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn unhold(name: &str, target: &HoldTarget) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let by = operator();
    let mut lifted = None;
    target.update(name, &mut |s| {
        if let Some(h) = s.hold.take() {
            s.record(
                now,
                "Unheld",
                format!("hold by {} lifted by {by} (cli)", h.by),
            );
            lifted = Some(h);
        }
    })?;
    match lifted {
        Some(h) => println!("{name}: lifted the hold by {} ({})", h.by, h.reason),
        None => println!("{name} is not held; nothing changed"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Why `autobump rollback` refuses for `state`, if it does: a request already pending,
/// or nothing to roll back.
enum Refusal {
    /// A request was already made (by, since, why); nothing changes.
    Pending(autobump::policy::v1alpha1::RollbackRequest),
    /// Nothing to roll back, and why.
    Nothing(String),
}

/// Whether a rollback can be requested for `state`: `Ok` with the deployed and the last
/// known-good summaries, else why not.
fn rollback_refusal(state: &autobump::store::PolicyState) -> Result<(String, String), Refusal> {
    use autobump::core::rollout::same_versions;
    const ANOTHER: &str = "; to deploy another version, hold the policy and write it by hand \
                           (autobump rewrite and a PR; runbooks/procedures.md)";
    if let Some(pending) = &state.rollback_request {
        return Err(Refusal::Pending(pending.clone()));
    }
    if *state == autobump::store::PolicyState::default() {
        return Err(Refusal::Nothing(
            "autobump has recorded nothing for it (is the name right, and has autobump run?)"
                .to_owned(),
        ));
    }
    match (&state.current, &state.last_known_good) {
        (_, None) => Err(Refusal::Nothing(format!(
            "it has no last known-good version: nothing to roll back to{ANOTHER}"
        ))),
        (None, Some(_)) => Err(Refusal::Nothing(
            "no deployed version is recorded yet: nothing to roll back".to_owned(),
        )),
        (Some(current), Some(good)) if same_versions(current, good) => {
            Err(Refusal::Nothing(format!(
                "it already runs its last known-good version {}: nothing to roll back{ANOTHER}",
                good.summary
            )))
        }
        (Some(current), Some(good)) => Ok((current.summary.clone(), good.summary.clone())),
    }
}

fn rollback(
    name: &str,
    reason: &str,
    to: Option<&str>,
    target: &HoldTarget,
) -> anyhow::Result<ExitCode> {
    use autobump::clock::Clock as _;
    if let Some(version) = to {
        anyhow::bail!(
            "--to {version}: autobump can roll back only to the last known-good version; for \
             another one, hold the policy and write it by hand (autobump rewrite DIR --policy \
             FILE --set IMAGE={version}, then a commit and a PR; runbooks/procedures.md, \
             \"Break-glass: roll back without autobump\")"
        );
    }
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why (it is shown in the hold and the rollback)");
    }
    let now = chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let by = operator();
    let mut outcome = Ok((String::new(), String::new()));
    target.with_store(&mut |store| {
        // A refusal writes nothing (not even an empty entry for a mistyped name).
        outcome = rollback_refusal(&store.load(name)?);
        if outcome.is_err() {
            return Ok(());
        }
        store
            .update(name, &mut |s| {
                // Decided again on the state being written (an update may also be
                // retried on fresher state).
                outcome = rollback_refusal(s);
                if let Ok((current, good)) = &outcome {
                    s.rollback_request = Some(autobump::policy::v1alpha1::RollbackRequest {
                        by: by.clone(),
                        since: now,
                        reason: reason.to_owned(),
                        via: Some("cli".to_owned()),
                    });
                    s.record(
                        now,
                        "RollbackRequested",
                        format!("rollback from {current} to {good} requested by {by}: {reason}"),
                    );
                }
            })
            .map_err(|e| anyhow::anyhow!("policy {name}: {e}"))?;
        Ok(())
    })?;
    match outcome {
        Ok((current, good)) => {
            println!("{name}: rollback from {current} to {good} requested by {by}: {reason}");
            Ok(ExitCode::SUCCESS)
        }
        Err(Refusal::Pending(r)) => {
            println!(
                "{name}: a rollback was already requested by {} at {} ({}); nothing changed",
                r.by, r.since, r.reason
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(Refusal::Nothing(why)) => {
            eprintln!("autobump: {name}: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Loads a file that must hold exactly one valid policy.
fn load_one_policy(file: &std::path::Path) -> anyhow::Result<policy::Policy> {
    let loaded = policy::load_paths(&[file.to_path_buf()])?;
    if !loaded.diagnostics.is_empty() {
        let problems: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        anyhow::bail!("invalid policy:\n{}", problems.join("\n"));
    }
    let mut policies = loaded.policies;
    if policies.len() != 1 {
        anyhow::bail!(
            "{}: expected exactly one policy, found {}",
            file.display(),
            policies.len()
        );
    }
    Ok(policies.remove(0))
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
    /// Registry credentials in Docker's config.json format. Default:
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json, when present.
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

impl RegistryArgs {
    fn client(&self) -> anyhow::Result<autobump::registry::RegistryClient> {
        use autobump::registry::{Credentials, RegistryClient, RegistryConfig};
        let credentials = match self.docker_config.clone().or_else(default_docker_config) {
            Some(path) => Credentials::from_docker_config_file(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            None => Credentials::anonymous(),
        };
        let mut defaults = RegistryConfig::default()
            .credentials(credentials)
            .call_timeout(
                self.registry_timeout
                    .delta()
                    .to_std()
                    .unwrap_or(std::time::Duration::from_secs(30)),
            );
        if let Some(ca) = &self.ca_bundle {
            defaults = defaults.ca_bundle(ca);
        }
        let mut client = RegistryClient::new(defaults.clone(), Arc::new(SystemClock))?;
        for host in &self.insecure_registries {
            client = client.with_registry(host, defaults.clone().insecure())?;
        }
        Ok(client)
    }
}

fn default_docker_config() -> Option<PathBuf> {
    let candidate = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    candidate.is_file().then_some(candidate)
}

fn resolve(args: &ResolveArgs) -> anyhow::Result<ExitCode> {
    use autobump::resolve::{Resolved, Resolver};

    let policy = load_one_policy(&args.policy)?;
    let source = &policy.spec.source;
    let scanned = autobump::files::scan_tree(
        &args.repo_dir,
        &source.include,
        &source.exclude,
        source.mode,
    )?;
    let references: Vec<_> = scanned
        .into_iter()
        .flat_map(|(_, found)| found.into_iter().map(|f| f.reference))
        .collect();

    let resolver = Resolver::new(args.registry.client()?);
    let now = autobump::clock::Clock::now(&SystemClock);
    // No store yet: nothing is recorded as bad.
    let bad = std::collections::BTreeSet::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results: Vec<_> = runtime.block_on(async {
        let mut all = Vec::new();
        for image in &policy.spec.images {
            all.extend(resolver.resolve(image, &references, &bad, now).await);
        }
        all
    });

    let failed = results
        .iter()
        .any(|r| matches!(r.outcome, Resolved::RegistryError { .. }));
    let mut text = String::new();
    match args.output {
        Output::Json => {
            text = serde_json::to_string_pretty(&results)?;
            text.push('\n');
        }
        Output::Text => {
            for r in &results {
                let what = r.outcome.describe();
                writeln!(text, "{} [{}] {}: {what}", r.image, r.series, r.current)?;
            }
        }
    }
    if results.is_empty() {
        eprintln!(
            "autobump: no references to the policy's images under {} (include: {})",
            args.repo_dir.display(),
            source
                .include
                .iter()
                .map(autobump::policy::values::Glob::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    print_out(&text)?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Serialize)]
struct CheckReport<'a> {
    ok: bool,
    files: usize,
    policies: usize,
    errors: &'a [Diagnostic],
}

fn check(paths: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    // Unreadable paths are exit 2 (through `main`); invalid policies are exit 1.
    let loaded = policy::load_paths(paths)?;
    let ok = loaded.diagnostics.is_empty();
    let mut text = String::new();
    match output {
        Output::Json => {
            text = serde_json::to_string_pretty(&CheckReport {
                ok,
                files: loaded.files.len(),
                policies: loaded.policies.len(),
                errors: &loaded.diagnostics,
            })?;
            text.push('\n');
        }
        Output::Text => {
            for d in &loaded.diagnostics {
                writeln!(text, "{d}")?;
            }
            let files = plural(loaded.files.len(), "file");
            if ok {
                writeln!(
                    text,
                    "ok: {} in {files}",
                    plural(loaded.policies.len(), "policy")
                )?;
            } else {
                let bad_files = {
                    let mut f: Vec<_> = loaded.diagnostics.iter().map(|d| &d.file).collect();
                    f.dedup();
                    f.len()
                };
                writeln!(
                    text,
                    "invalid: {} in {bad_files} of {files}; {} valid",
                    plural(loaded.diagnostics.len(), "error"),
                    plural(loaded.policies.len(), "policy")
                )?;
            }
        }
    }
    print_out(&text)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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

fn rewrite(args: &RewriteArgs) -> anyhow::Result<ExitCode> {
    use autobump::core::rewrite::{Plan, Target, unified_diff};
    use autobump::policy::v1alpha1::RewriteMode;
    use autobump::policy::values::Glob;

    let globs = |texts: &[String]| -> anyhow::Result<Vec<Glob>> {
        texts
            .iter()
            .map(|t| t.parse::<Glob>().map_err(anyhow::Error::msg))
            .collect()
    };
    let mut targets = args
        .set
        .iter()
        .map(|s| s.parse::<Target>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut mode = RewriteMode::Structured;
    let mut include = globs(&["**/*.yaml".into(), "**/*.yml".into()])?;
    let mut exclude = Vec::new();
    if let Some(file) = &args.policy {
        let p = load_one_policy(file)?;
        targets = targets
            .into_iter()
            .map(|t| t.with_policy(&p.spec.images))
            .collect::<Result<_, _>>()?;
        mode = p.spec.source.mode;
        include.clone_from(&p.spec.source.include);
        exclude.clone_from(&p.spec.source.exclude);
    }
    match args.mode.as_deref() {
        Some("text") => mode = RewriteMode::Text,
        Some(_) => mode = RewriteMode::Structured,
        None => {}
    }
    if !args.include.is_empty() {
        include = globs(&args.include)?;
    }
    if !args.exclude.is_empty() {
        exclude = globs(&args.exclude)?;
    }
    let plan = Plan::new(&targets)?;
    let tree = autobump::files::rewrite_tree(&args.dir, &include, &exclude, mode, &plan)?;
    for notice in &tree.notices {
        eprintln!("autobump: warning: {notice}");
    }
    let mut text = String::new();
    if args.dry_run {
        for f in &tree.files {
            text.push_str(&unified_diff(&f.path, &f.before, &f.after));
        }
    } else {
        tree.write(&args.dir)?;
        for c in tree.changes() {
            writeln!(text, "{}:{}: {} -> {}", c.file, c.line, c.old, c.new)?;
        }
    }
    print_out(&text)?;
    let changes = tree.changes().count();
    let scanned = plural(tree.scanned, "file");
    if changes == 0 {
        eprintln!("no changes ({scanned} scanned)");
    } else {
        let files = plural(tree.files.len(), "file");
        let verb = if args.dry_run {
            "would change"
        } else {
            "changed"
        };
        let note = if args.dry_run {
            "; dry run, nothing written"
        } else {
            ""
        };
        eprintln!(
            "{verb} {} in {files} ({scanned} scanned{note})",
            plural(changes, "reference")
        );
    }
    Ok(ExitCode::SUCCESS)
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
