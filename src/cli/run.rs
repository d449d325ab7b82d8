//! `autobump run`: wiring the adapters, signals, the HTTP listener and the loop (standalone) or the kube-runtime driver (`--kubernetes`).

use std::process::ExitCode;

use std::path::PathBuf;
use std::sync::Arc;

use autobump::clock::SystemClock;

use crate::RunArgs;

/// `autobump run`'s dashboard options.
#[derive(Debug, clap::Args)]
pub(crate) struct DashboardArgs {
    /// Require this token for the dashboard on --listen (/, /policies/NAME,
    /// /api/v1/...): sent as `Authorization: Bearer TOKEN`, or typed once into the
    /// form at /login, which sets an HttpOnly cookie. Prefer the environment variable
    /// (argv is visible to every user of the machine). Without a token the dashboard
    /// is open to whoever reaches --listen: keep that to localhost or a trusted
    /// network.
    #[arg(
        long,
        env = "AUTOBUMP_DASHBOARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) dashboard_token: Option<String>,
    /// Do not serve the dashboard on --listen.
    #[arg(long)]
    pub(crate) no_dashboard: bool,
}

impl DashboardArgs {
    /// The dashboard's configuration, unless turned off.
    fn config(
        &self,
        source: impl autobump::dashboard::Source,
        metrics: &Arc<autobump::metrics::Metrics>,
    ) -> Option<autobump::dashboard::DashboardConfig> {
        (!self.no_dashboard).then(|| autobump::dashboard::DashboardConfig {
            source: Arc::new(source),
            metrics: Some(Arc::clone(metrics)),
            clock: Arc::new(SystemClock),
            token: self.dashboard_token.clone().filter(|t| !t.is_empty()),
        })
    }
}

/// Serves the webhooks and the dashboard; every delivery pokes the loop, and
/// registry pushes queue their image for cache invalidation.
#[allow(clippy::too_many_arguments)] // one call per mode, each argument named there
pub(crate) async fn serve_webhooks(
    addr: std::net::SocketAddr,
    feed: Arc<autobump::forge::WebhookFeed>,
    poke: Arc<tokio::sync::Notify>,
    pushed: Arc<std::sync::Mutex<Vec<String>>>,
    metrics: Arc<autobump::metrics::Metrics>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    policy_load: Option<Arc<autobump::policy::health::LoadHealth>>,
    dashboard: Option<autobump::dashboard::DashboardConfig>,
) -> anyhow::Result<()> {
    let secret = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (router, mut events) = autobump::http::server(autobump::http::Webhooks {
        github_secret: secret("GITHUB_WEBHOOK_SECRET").map(String::into_bytes),
        gitlab_secret: secret("GITLAB_WEBHOOK_SECRET").map(String::into_bytes),
        github_feed: Some(feed),
        registry_token: secret("AUTOBUMP_REGISTRY_WEBHOOK_TOKEN"),
        alertmanager_token: secret("AUTOBUMP_ALERTMANAGER_WEBHOOK_TOKEN"),
        metrics: Some(metrics),
        ready,
        policy_load,
        dashboard,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {addr}: {e}"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        "serving /healthz, /readyz, /metrics, the webhooks and the dashboard"
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
pub(crate) fn run_standalone(args: &RunArgs) -> anyhow::Result<ExitCode> {
    use std::sync::atomic::{AtomicBool, Ordering};

    use autobump::controller::engine::{self, Engine};
    use autobump::controller::standalone::{self, Standalone};
    use autobump::forge::WebhookFeed;
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
        let feed = Arc::new(WebhookFeed::new(args.github_resync.delta()));
        let mut engine = Engine::production(
            engine::Config {
                // A secret: from the environment only, never a flag (argv is public).
                github_token: std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty()),
                github_api: args.github_api.clone(),
                github_git_host: args.github_git_host.clone(),
                bot_login: args.bot_login.clone(),
                ssh_key: args.ssh_key.clone(),
                github_app: args.github_app.app()?,
                // A secret: from the environment only, like GITHUB_TOKEN.
                gitlab: std::env::var("GITLAB_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
                    .map(|token| (args.gitlab_url.clone(), token)),
            },
            Arc::new(SystemClock),
            args.registry.client()?,
            repo,
            Arc::clone(&feed),
        )
        .map_err(|e| anyhow::anyhow!(e))?
        .with_reconcile_timeout(
            args.reconcile_timeout
                .delta()
                .to_std()
                .unwrap_or(engine::DEFAULT_RECONCILE_TIMEOUT),
        );
        engine = with_app_bot_login(engine, args).await;
        if args.kubernetes {
            return run_in_cluster(args, engine, feed).await;
        }
        // One run per database (a second one refuses, naming the first), and a state
        // this build cannot read stops here, before anything acts; it is never
        // overwritten.
        let lease = autobump::store::sqlite::open_for_run(
            &args.state.path,
            autobump::clock::Clock::now(&SystemClock),
        )?;
        if let Some(kubeconfig) = &args.kubeconfig {
            let workloads = autobump::cluster::KubeWorkloads::from_kubeconfig(
                kubeconfig,
                Arc::new(SystemClock),
            )
            .await?;
            engine = engine.with_cluster(workloads);
        }
        let mut driver = Standalone::new(
            standalone::Config {
                policies: args.policies.clone(),
                state: args.state.path.clone(),
            },
            engine,
            feed,
        )
        .with_concurrency(args.concurrency)
        .with_not_ready_after(args.not_ready_after.delta().to_std().unwrap_or_default());
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
            let source = autobump::dashboard::FilesSource::new(
                Arc::new(lease.store().clone()),
                args.policies.clone(),
            );
            serve_webhooks(
                addr,
                driver.webhook_feed(),
                Arc::clone(&poke),
                Arc::clone(&pushed),
                driver.metrics(),
                Arc::clone(&ready),
                Some(driver.load_health()),
                args.dashboard.config(source, &driver.metrics()),
            )
            .await?;
        }
        watch_policy_files(args.policies.clone(), Arc::clone(&poke));
        loop {
            for image in take_pushed(&pushed) {
                driver.invalidate(&image);
            }
            // Fails only when the policies never loaded (exit 2); later load failures
            // keep the last good policies (see --not-ready-after).
            let tick = driver.tick(&stop).await?;
            print_tick(&tick, args.once);
            if let Some(keep) = args.history_retention {
                lease
                    .store()
                    .prune_history(keep.delta(), autobump::clock::Clock::now(&SystemClock))?;
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

/// The images registry pushes announced since the last call (their cached tags and
/// digests are dropped before the next reconcile).
fn take_pushed(pushed: &std::sync::Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(
        &mut *pushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Pokes the loop when a policy file is added, removed or changed (checked every
/// 2 s: a stat per file, nothing read), so an edit takes effect at once.
pub(crate) fn watch_policy_files(paths: Vec<PathBuf>, poke: Arc<tokio::sync::Notify>) {
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

/// With a GitHub App and no --bot-login: the App's bot (`SLUG[bot]`, asked of GitHub
/// once) is the bot account of pull-request policies that name none. If GitHub cannot
/// say, such policies are skipped saying they need one, as without the App.
async fn with_app_bot_login(
    engine: autobump::controller::engine::ProductionEngine,
    args: &RunArgs,
) -> autobump::controller::engine::ProductionEngine {
    if args.bot_login.is_some() {
        return engine;
    }
    let Some(github) = engine.forge().and_then(|f| f.github.as_ref()) else {
        return engine;
    };
    match github.app_bot_login().await {
        Ok(Some(login)) => {
            tracing::info!(bot = %login, "pull requests come from the GitHub App's bot");
            engine.with_bot_login(Some(login))
        }
        Ok(None) => engine,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the GitHub App (GET /app); policies without pullRequest.botLogin need --bot-login");
            engine
        }
    }
}

/// `autobump run --kubernetes`: the kube-runtime driver with leader election, state
/// in the objects' status; SIGTERM stops new work, finishes the reconciles in flight
/// and releases the Lease.
pub(crate) async fn run_in_cluster(
    args: &RunArgs,
    engine: autobump::controller::engine::ProductionEngine,
    feed: Arc<autobump::forge::WebhookFeed>,
) -> anyhow::Result<ExitCode> {
    use autobump::incluster::driver::{Driver, DriverConfig};
    use autobump::incluster::lease::LeaseConfig;
    use autobump::incluster::reconciler::ClusterReconciler;
    use autobump::store::kube::Scope;

    let clock: Arc<dyn autobump::clock::Clock> = Arc::new(SystemClock);
    let workloads = autobump::cluster::KubeWorkloads::infer(Arc::clone(&clock)).await?;
    let client = workloads.client().clone();
    // Policies' own credentials come from Secrets in their namespaces.
    let secrets = Arc::new(autobump::credentials::kube::KubeSecrets::new(
        client.clone(),
    ));
    let engine = Arc::new(engine.with_cluster(workloads).with_secrets(secrets));
    let metrics = engine.metrics();
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
        client.clone(),
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
        let source =
            autobump::dashboard::ClusterSource::new(client.clone(), args.namespace.clone());
        let dashboard = args.dashboard.config(source, &metrics);
        serve_webhooks(
            addr,
            feed,
            Arc::clone(&poke),
            Arc::clone(&pushed),
            metrics,
            Arc::clone(&ready),
            None,
            dashboard,
        )
        .await?;
        let trigger = driver.trigger();
        tokio::spawn(async move {
            loop {
                poke.notified().await;
                for image in take_pushed(&pushed) {
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
pub(crate) fn print_tick(tick: &autobump::controller::standalone::Tick, once: bool) {
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
