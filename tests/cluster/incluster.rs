//! In-cluster mode against a real kube-apiserver: Lease leader election, the state
//! store on the `Autobump` status subresource, and the driver writing conditions and
//! Events. Each test starts its own cluster (multi-thread runtime: the store blocks
//! in place).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use autobump::clock::{Clock, Deadline, ManualClock};
use autobump::incluster::PolicyKey;
use autobump::incluster::driver::{
    Driver, DriverConfig, Failure, Outcome, PolicyReconciler, Request,
};
use autobump::incluster::lease::{LeaderElector, LeaseConfig};
use autobump::policy::v1alpha1::{Hold, ImageVersion, Release};
use autobump::policy::{Autobump, AutobumpSpec};
use autobump::store::kube::{KubeStore, Scope};
use autobump::store::{BadVersion, PolicyState, Store};
use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::watch;

use super::{Cluster, root};

pub(crate) const NS: &str = "autobump";

fn start() -> DateTime<Utc> {
    "2026-11-23T10:00:00Z".parse().unwrap()
}

/// A cluster with the CRD established and the test namespace, and a client.
pub(crate) async fn cluster() -> (Cluster, Client) {
    let cluster = Cluster::start();
    let crd = root().join("manifests/crd.yaml");
    cluster.must(&["apply", "-f", crd.to_str().unwrap()]);
    cluster.must(&[
        "wait",
        "--for=condition=Established",
        "crd/autobumps.autobump.dev",
        "--timeout=60s",
    ]);
    cluster.must(&["create", "namespace", NS]);
    let client = cluster.client().await;
    (cluster, client)
}

async fn create_policy(client: &Client, name: &str) -> Autobump {
    let spec: AutobumpSpec = serde_json::from_value(serde_json::json!({
        "images": [{"name": "gcr.io/k8s-prow/hook", "tags": {"dateSha": {}}}],
        "source": {"repo": "https://github.com/example/infra.git"},
        "directPush": {},
    }))
    .unwrap();
    let api: Api<Autobump> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &Autobump::new(name, spec))
        .await
        .unwrap()
}

/// Calls `check` until it returns `Ok` (every 50 ms, for at most 60 s), else panics
/// with the last observation.
pub(crate) async fn eventually<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Deadline::after(Duration::from_secs(60));
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    !deadline.expired(),
                    "timed out waiting for {what}; last observation: {last}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn lease_spec(client: &Client, name: &str) -> k8s_openapi::api::coordination::v1::LeaseSpec {
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    api.get(name).await.unwrap().spec.unwrap()
}

fn hold(at: DateTime<Utc>) -> Hold {
    Hold {
        by: "user:alice".into(),
        since: at,
        reason: "release freeze".into(),
        via: Some("cli".into()),
        automatic: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_renewed_taken_over_after_expiry_and_free_at_once_after_release() {
    let (_cluster, client) = cluster().await;
    let clock = Arc::new(ManualClock::new(start()));
    let elector = |id: &str| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig::new(NS, "autobump", id),
            Arc::clone(&clock) as Arc<dyn Clock>,
        )
        .unwrap()
    };
    let (a, b) = (elector("a"), elector("b"));
    let a_leads = a.subscribe();

    // Absent: created by the first.
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(*a_leads.borrow());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    let spec = lease_spec(&client, "autobump").await;
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(0));
    assert_eq!(spec.lease_duration_seconds, Some(15));

    // Renewed: still valid 26 s after it was created.
    clock.advance(TimeDelta::seconds(10));
    assert!(a.try_acquire_or_renew().await.unwrap());
    clock.advance(TimeDelta::seconds(15));
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "valid until 15 s after renewal"
    );

    // a stops renewing: b takes over once it expired, and a learns it lost.
    clock.advance(TimeDelta::seconds(1));
    assert!(b.try_acquire_or_renew().await.unwrap());
    let spec = lease_spec(&client, "autobump").await;
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(a.is_leader(), "a has not looked yet");
    assert!(!a.try_acquire_or_renew().await.unwrap());
    assert!(!*a_leads.borrow());
    assert!(
        !a.release().await.unwrap(),
        "a does not hold it: nothing to release"
    );

    // b releases: free at once, no waiting for expiry.
    assert!(b.release().await.unwrap());
    assert!(!b.is_leader());
    assert_eq!(lease_spec(&client, "autobump").await.holder_identity, None);
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert_eq!(
        lease_spec(&client, "autobump").await.lease_transitions,
        Some(2)
    );

    // Two racing for a free lease: exactly one wins (resourceVersion).
    assert!(a.release().await.unwrap());
    let (c, d) = (elector("c"), elector("d"));
    let (c_won, d_won) = tokio::join!(c.try_acquire_or_renew(), d.try_acquire_or_renew());
    assert!(c_won.unwrap() ^ d_won.unwrap());
    let spec = lease_spec(&client, "autobump").await;
    assert!(matches!(spec.holder_identity.as_deref(), Some("c" | "d")));
    assert_eq!(spec.lease_transitions, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_store_round_trips_and_retries_conflicts_without_losing_updates() {
    let (cluster, client) = cluster().await;
    create_policy(&client, "prow").await;
    let store = KubeStore::new(client.clone(), Scope::Namespace(NS.into()));

    // Never written: the default state; a missing object too (for load).
    assert_eq!(store.load("prow").unwrap(), PolicyState::default());
    assert_eq!(store.load("gone").unwrap(), PolicyState::default());
    let err = store.update("gone", &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("no such Autobump object"), "{err}");

    every_field_round_trips(&cluster, &store);
    conflicts_are_retried(&cluster, &store).await;
    concurrent_writers_lose_nothing(&store).await;

    // On a current-thread runtime the synchronous calls cannot block: an error, not
    // a panic.
    let on_current_thread = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async { store.load("prow") })
            })
            .join()
            .unwrap()
    });
    let err = on_current_thread.unwrap_err();
    assert!(err.to_string().contains("multi-thread"), "{err}");
}

/// Every state field through the real API server: nothing pruned, nothing rejected.
fn every_field_round_trips(cluster: &Cluster, store: &KubeStore) {
    let t = start();
    let release = |tag: &str| Release {
        summary: tag.into(),
        images: vec![ImageVersion {
            image: "gcr.io/k8s-prow/hook".into(),
            tag: tag.into(),
            digest: None,
        }],
        since: t,
        commit: Some("abc1234".into()),
    };
    let written = store
        .update("prow", &mut |s| {
            s.hold = Some(Hold {
                // The v1.20 API server refuses "" in a required field.
                reason: String::new(),
                ..hold(t)
            });
            s.current = Some(release("v20261123-bbbbbbb"));
            s.last_known_good = Some(release("v20261122-aaaaaaa"));
            s.bake = Some(autobump::core::rollout::BakeProgress {
                version: "v20261123-bbbbbbb".into(),
                clear_since: Some(t),
                restarts: 1,
            });
            s.last_bump = Some(t);
            s.bad_versions.insert(BadVersion {
                image: "gcr.io/k8s-prow/hook".into(),
                tag: "v20261121-ccccccc".into(),
            });
            s.see_comment(4_000_000_001);
            s.record(
                t,
                autobump::policy::v1alpha1::Reason::Held,
                "held by user:alice",
            );
            s.rollback_request = Some(autobump::policy::v1alpha1::RollbackRequest {
                by: "cli:bob".into(),
                since: t,
                reason: "p99 doubled".into(),
                via: Some("cli".into()),
            });
        })
        .unwrap();
    assert_eq!(written.hold.as_ref().unwrap().reason, "-");
    assert!(written.rollback_request.is_some(), "kept by the CRD schema");
    assert_eq!(store.load("prow").unwrap(), written);
    assert_eq!(store.load(&format!("{NS}/prow")).unwrap(), written);
    let all = store.load_all().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), [&format!("{NS}/prow")]);
    let json = cluster.must(&[
        "get",
        "autobump",
        "prow",
        "-n",
        NS,
        "-o",
        "jsonpath={.status}",
    ]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "bake",
        "lastBump",
        "badVersions",
        "seenComments",
        "history",
        "hold",
    ] {
        assert!(status.get(field).is_some(), "{field} missing in {json}");
    }
    assert_eq!(status["seenComments"][0], 4_000_000_001_u64);
    // The printer columns read the status.
    let table = cluster.must(&["get", "autobumps", "-n", NS]);
    assert!(
        table.contains("v20261123-bbbbbbb") && table.contains("user:alice"),
        "{table}"
    );
}

/// A writer in between read and write: 409, read again, apply again.
async fn conflicts_are_retried(cluster: &Cluster, store: &KubeStore) {
    let calls = AtomicUsize::new(0);
    let key = PolicyKey::new(NS, "prow");
    let after = store
        .update_async(&key, |s| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                cluster.must(&[
                    "patch",
                    "autobump",
                    "prow",
                    "-n",
                    NS,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    r#"{"status":{"lastBump":"2026-11-23T11:00:00Z"}}"#,
                ]);
            }
            s.see_comment(7);
        })
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one conflict, one retry");
    assert_eq!(
        after.last_bump,
        Some("2026-11-23T11:00:00Z".parse().unwrap())
    );
    assert_eq!(after.seen_comments, [4_000_000_001, 7]);
}

/// Concurrent writers through the synchronous trait: nothing lost.
async fn concurrent_writers_lose_nothing(store: &KubeStore) {
    let tasks: Vec<_> = (0..2u64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..12 {
                    store
                        .update("prow", &mut |s| {
                            s.see_comment(1000 * (t + 1) + i);
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.load("prow").unwrap().seen_comments.len(), 2 + 24);
}

/// A stand-in for the per-policy reconcile: counts calls; on its first call holds
/// the policy and records two decisions; fails while told to.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
    record: bool,
    /// A summary that changes every time (so every reconcile writes the status).
    counting: bool,
}

impl PolicyReconciler for Fake {
    fn reconcile(&self, request: Request) -> impl Future<Output = Result<Outcome, Failure>> + Send {
        let this = self.clone();
        async move {
            let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let first = n == 1;
            if this.record && first {
                let now = request.now;
                // Through the synchronous `Store`, as src/controller/ does.
                request
                    .store
                    .update(&request.object.name_any(), &mut |s| {
                        s.hold = Some(hold(now));
                        s.record(
                            now,
                            autobump::policy::v1alpha1::Reason::Held,
                            "held by user:alice: release freeze",
                        );
                        s.record(
                            now,
                            autobump::policy::v1alpha1::Reason::Deployed,
                            "v20261123-bbbbbbb is on main",
                        );
                    })
                    .map_err(|e| Failure::new("store", e.to_string(), true))?;
            }
            if this.fail.load(Ordering::SeqCst) {
                return Err(Failure::new("rate_limited", "GitHub answered 429", true));
            }
            Ok(Outcome::new(if this.counting {
                format!("reconcile number {n}")
            } else {
                "waiting for the schedule window".to_owned()
            }))
        }
    }
}

fn driver_config(identity: &str) -> DriverConfig {
    let mut config = DriverConfig::new(
        Scope::Namespace(NS.into()),
        LeaseConfig::new(NS, "autobump", identity).timings(
            // Long enough that only a release (or the test's clock) ends a term.
            Duration::from_secs(60),
            Duration::from_millis(200),
            Duration::from_secs(30),
        ),
    );
    config.interval = Duration::from_millis(300);
    config.backoff_base = Duration::from_millis(200);
    config.backoff_max = Duration::from_secs(2);
    config
}

struct Running {
    identity: String,
    calls: Arc<AtomicUsize>,
    elector: Arc<LeaderElector>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), autobump::incluster::driver::DriverError>>,
}

fn run(client: &Client, clock: &Arc<ManualClock>, identity: &str, fake: Fake) -> Running {
    run_with(client, clock, driver_config(identity), fake)
}

fn run_with(
    client: &Client,
    clock: &Arc<ManualClock>,
    config: DriverConfig,
    fake: Fake,
) -> Running {
    let identity = config.lease.identity.clone();
    let calls = Arc::clone(&fake.calls);
    let driver = Driver::new(
        client.clone(),
        config,
        Arc::clone(clock) as Arc<dyn Clock>,
        fake,
    )
    .unwrap();
    let elector = driver.elector();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(driver.run(stopped));
    Running {
        identity,
        calls,
        elector,
        stop,
        task,
    }
}

fn condition<'a>(o: &'a Autobump, t: &str) -> Option<&'a autobump::policy::v1alpha1::Condition> {
    o.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

async fn events_of(client: &Client, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    let mut events: Vec<Event> = api
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    events.sort_by_key(|e| e.reason.clone());
    events
}

/// After the first reconcile: the four conditions, Held by the fake's hold.
fn check_first_status(o: &Autobump, created: &Autobump) {
    let status = o.status.as_ref().unwrap();
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Held", "Baking", "RolledBack"]);
    let ready = condition(o, "Ready").unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("Reconciled", "waiting for the schedule window")
    );
    let held = condition(o, "Held").unwrap();
    assert_eq!(held.reason, "ManualHold");
    assert!(held.message.contains("user:alice"), "{}", held.message);
    assert_eq!(held.last_transition_time, start());
    assert_eq!(status.observed_generation, created.metadata.generation);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == created.metadata.generation)
    );
}

/// One Event per decision: Held is a Warning, Deployed Normal.
async fn check_events(client: &Client, created: &Autobump) {
    let events = eventually("two events", async || {
        let events = events_of(client, "prow").await;
        if events.len() >= 2 {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    let seen: Vec<(Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| (e.reason.as_deref(), e.type_.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("Deployed"), Some("Normal")),
            (Some("Held"), Some("Warning"))
        ]
    );
    let held_event = &events[1];
    assert_eq!(
        held_event.note.as_deref(),
        Some("held by user:alice: release freeze")
    );
    assert_eq!(
        held_event.reporting_controller.as_deref(),
        Some("autobump.dev/controller")
    );
    assert_eq!(held_event.reporting_instance.as_deref(), Some("pod-a"));
    let regarding = held_event.regarding.as_ref().unwrap();
    assert_eq!(regarding.uid, created.metadata.uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_writes_conditions_and_one_event_per_decision() {
    let (_cluster, client) = cluster().await;
    let created = create_policy(&client, "prow").await;
    let clock = Arc::new(ManualClock::new(start()));
    let fake = Fake {
        record: true,
        ..Fake::default()
    };
    let fail = Arc::clone(&fake.fail);
    let first = run(&client, &clock, "pod-a", fake);
    let api: Api<Autobump> = Api::namespaced(client.clone(), NS);

    let o = eventually("Ready and Held conditions", async || {
        let o = api.get("prow").await.map_err(|e| e.to_string())?;
        match (condition(&o, "Ready"), condition(&o, "Held")) {
            (Some(r), Some(h)) if r.status == "True" && h.status == "True" => Ok(o),
            _ => Err(format!("{:?}", o.status)),
        }
    })
    .await;
    check_first_status(&o, &created);
    check_events(&client, &created).await;

    // Requeued on the interval.
    let calls = Arc::clone(&first.calls);
    eventually("periodic reconciles", async || {
        let n = calls.load(Ordering::SeqCst);
        if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n} calls"))
        }
    })
    .await;

    // A failing reconcile: Ready turns False with the failure's reason; the other
    // conditions keep their transition times.
    fail.store(true, Ordering::SeqCst);
    clock.advance(TimeDelta::minutes(5));
    let o = eventually("Ready False", async || {
        let o = api.get("prow").await.map_err(|e| e.to_string())?;
        match condition(&o, "Ready") {
            Some(r) if r.status == "False" => Ok(o),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let ready = condition(&o, "Ready").unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("RateLimited", "GitHub answered 429")
    );
    assert_eq!(ready.last_transition_time, start() + TimeDelta::minutes(5));
    assert_eq!(condition(&o, "Held").unwrap().last_transition_time, start());

    // Shutdown releases the lease.
    first.stop.send(true).unwrap();
    first.task.await.unwrap().unwrap();
    assert_eq!(lease_spec(&client, "autobump").await.holder_identity, None);

    // A restart republishes nothing: Event names come from the entries.
    let second = run(&client, &clock, "pod-b", Fake::default());
    let calls = Arc::clone(&second.calls);
    eventually("the new replica reconciling twice", async || {
        let n = calls.load(Ordering::SeqCst);
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} calls"))
        }
    })
    .await;
    assert_eq!(events_of(&client, "prow").await.len(), 2);
    second.stop.send(true).unwrap();
    second.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_one_acts_and_the_other_takes_over() {
    let (_cluster, client) = cluster().await;
    create_policy(&client, "prow").await;
    create_policy(&client, "deck").await;
    let clock = Arc::new(ManualClock::new(start()));
    let a = run(&client, &clock, "pod-a", Fake::default());
    let b = run(&client, &clock, "pod-b", Fake::default());

    // One of them leads and reconciles; the other only tries for the lease.
    let (leader, standby) = eventually("a leader reconciling", async || {
        for (l, s) in [(&a, &b), (&b, &a)] {
            if l.elector.is_leader() && l.calls.load(Ordering::SeqCst) >= 4 {
                return Ok((l, s));
            }
        }
        Err(format!(
            "a: {} calls, b: {} calls",
            a.calls.load(Ordering::SeqCst),
            b.calls.load(Ordering::SeqCst)
        ))
    })
    .await;
    let rounds = standby.elector.rounds();
    eventually("the standby trying again", async || {
        if standby.elector.rounds() >= rounds + 2 {
            Ok(())
        } else {
            Err(format!("{} rounds", standby.elector.rounds()))
        }
    })
    .await;
    assert!(!standby.elector.is_leader());
    assert_eq!(
        standby.calls.load(Ordering::SeqCst),
        0,
        "the standby never acts"
    );

    // A clean stop releases the lease: the standby takes over well before the 60 s
    // lease could expire (the test clock does not even move).
    let (leader, standby) = if leader.identity == a.identity {
        (a, b)
    } else {
        (b, a)
    };
    leader.stop.send(true).unwrap();
    leader.task.await.unwrap().unwrap();
    let acted = leader.calls.load(Ordering::SeqCst);
    eventually("the standby taking over", async || {
        let n = standby.calls.load(Ordering::SeqCst);
        if standby.elector.is_leader() && n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} calls"))
        }
    })
    .await;
    assert_eq!(
        leader.calls.load(Ordering::SeqCst),
        acted,
        "the old leader stopped acting"
    );
    assert_eq!(
        lease_spec(&client, "autobump").await.lease_transitions,
        Some(1)
    );

    // The new leader vanishes without releasing (its task dropped): a third replica
    // waits for the lease to expire, then takes over.
    let c = run(&client, &clock, "pod-c", Fake::default());
    standby.task.abort();
    assert!(standby.task.await.unwrap_err().is_cancelled());
    let rounds = c.elector.rounds();
    eventually("the third replica trying", async || {
        if c.elector.rounds() >= rounds + 3 {
            Ok(())
        } else {
            Err(format!("{} rounds", c.elector.rounds()))
        }
    })
    .await;
    assert!(!c.elector.is_leader(), "the lease has not expired");
    assert_eq!(c.calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        lease_spec(&client, "autobump").await.holder_identity,
        Some(standby.identity.clone()),
        "still held by the vanished replica"
    );
    clock.advance(TimeDelta::seconds(61));
    eventually("the third replica taking over after expiry", async || {
        let n = c.calls.load(Ordering::SeqCst);
        if c.elector.is_leader() && n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} calls"))
        }
    })
    .await;
    let spec = lease_spec(&client, "autobump").await;
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-c"));
    assert_eq!(spec.lease_transitions, Some(2));
    c.stop.send(true).unwrap();
    c.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_status_writes_do_not_retrigger_but_other_changes_do() {
    let (cluster, client) = cluster().await;
    create_policy(&client, "prow").await;
    let clock = Arc::new(ManualClock::new(start()));
    // An hour between periodic reconciles: every reconcile below is a watch event's.
    let mut config = driver_config("pod-a");
    config.interval = Duration::from_secs(3600);
    let fake = Fake {
        record: true,
        counting: true,
        ..Fake::default()
    };
    let calls = Arc::clone(&fake.calls);
    let driver = run_with(&client, &clock, config, fake);
    let count = || calls.load(Ordering::SeqCst);

    // The first reconcile writes the state and then the conditions (each a watch
    // event); with a summary that differs every time, reacting to its own writes
    // would loop.
    eventually("the first reconcile's events", async || {
        let n = events_of(&client, "prow").await.len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} events"))
        }
    })
    .await;
    let rounds = driver.elector.rounds();
    eventually("a few lease rounds (about a second)", async || {
        let r = driver.elector.rounds();
        if r >= rounds + 5 {
            Ok(())
        } else {
            Err(format!("{r} rounds"))
        }
    })
    .await;
    assert_eq!(count(), 1, "no reconcile for its own writes");

    // A spec change reconciles at once.
    cluster.must(&[
        "patch",
        "autobump",
        "prow",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"schedule":{"minInterval":"2h"}}}"#,
    ]);
    eventually("a reconcile for the spec change", async || {
        if count() == 2 {
            Ok(())
        } else {
            Err(format!("{} calls", count()))
        }
    })
    .await;

    // So does a status change by someone else (a person's hold through the CLI).
    cluster.must(&[
        "patch",
        "autobump",
        "prow",
        "-n",
        NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"hold":{"by":"user:bob","since":"2026-11-23T10:30:00Z","reason":"incident"}}}"#,
    ]);
    eventually("a reconcile for the foreign status write", async || {
        if count() == 3 {
            Ok(())
        } else {
            Err(format!("{} calls", count()))
        }
    })
    .await;
    let api: Api<Autobump> = Api::namespaced(client.clone(), NS);
    let o = eventually("the Ready message of the third reconcile", async || {
        let o = api.get("prow").await.map_err(|e| e.to_string())?;
        match condition(&o, "Ready") {
            Some(r) if r.message == "reconcile number 3" => Ok(o),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(condition(&o, "Held").unwrap().message.contains("user:bob"));
    assert_eq!(
        o.status.unwrap().observed_generation,
        o.metadata.generation,
        "conditions describe the new spec"
    );
    driver.stop.send(true).unwrap();
    driver.task.await.unwrap().unwrap();
}
