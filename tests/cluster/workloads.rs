//! Rollout observation and the break-glass image patch (`autobump::cluster`) through
//! kube's `Client` against a real kube-apiserver. There is no kubelet or controller
//! manager: each test plays their part by writing the workloads' status subresource.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use autobump::clock::ManualClock;
use autobump::cluster::{
    ClusterError, KubeWorkloads, PATCHED_AT, PATCHED_TO, RolloutObservation, Workloads,
};
use autobump::core::rollout::RolloutState;
use autobump::policy::v1alpha1::{ImageVersion, Release, WorkloadKind, WorkloadSpec};
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PodSpec};
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::NamespaceResourceScope;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Cluster;

const DIGEST: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn start() -> DateTime<Utc> {
    "2026-11-21T10:00:00Z".parse().unwrap()
}

/// A cluster, a client for the test's own writes, and the adapter under test.
async fn setup() -> (Cluster, Client, KubeWorkloads) {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let workloads = KubeWorkloads::from_kubeconfig(
        cluster.kubeconfig.as_ref(),
        Arc::new(ManualClock::new(start())),
    )
    .await
    .expect("an adapter from the cluster's kubeconfig");
    (cluster, client, workloads)
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn spec(kind: WorkloadKind, namespace: &str, selector: &str) -> WorkloadSpec {
    WorkloadSpec {
        kind,
        namespace: namespace.parse().unwrap(),
        selector: selector.parse().unwrap(),
    }
}

fn release(summary: &str, images: &[(&str, &str, Option<&str>)]) -> Release {
    Release {
        summary: summary.into(),
        images: images
            .iter()
            .map(|(image, tag, digest)| ImageVersion {
                image: (*image).into(),
                tag: (*tag).into(),
                digest: digest.map(str::to_owned),
            })
            .collect(),
        since: start(),
        commit: None,
    }
}

/// An apps/v1 object of `kind` whose pods are labelled like the object.
fn workload<K: DeserializeOwned>(
    kind: &str,
    name: &str,
    labels: &Value,
    pod: &Value,
    replicas: Option<i32>,
) -> K {
    let mut spec = json!({
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    });
    if let Some(r) = replicas {
        spec["replicas"] = json!(r);
    }
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .unwrap()
}

fn pod(containers: &[(&str, &str)]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(name, image)| json!({"name": name, "image": image}))
        .collect();
    json!({"containers": containers})
}

trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
{
}
impl<K> Object for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
{
}

async fn create<K: Object>(client: &Client, namespace: &str, object: &K) -> K {
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), object)
        .await
        .unwrap()
}

async fn get<K: Object>(client: &Client, namespace: &str, name: &str) -> K {
    Api::<K>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap()
}

/// Plays the controllers and kubelet: writes `status` (merged) through the status
/// subresource, with `observedGeneration` set to the object's generation unless given.
async fn set_status<K: Object>(client: &Client, namespace: &str, name: &str, mut status: Value) {
    let api = Api::<K>::namespaced(client.clone(), namespace);
    if status.get("observedGeneration").is_none() {
        let generation = api.get(name).await.unwrap().meta().generation.unwrap();
        status["observedGeneration"] = json!(generation);
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
}

fn deployment_status(updated: i32, replicas: i32, ready: i32, available: i32) -> Value {
    json!({
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
    })
}

async fn observe(
    workloads: &KubeWorkloads,
    specs: &[WorkloadSpec],
    release: &Release,
) -> RolloutObservation {
    workloads.observe(specs, release).await.unwrap()
}

#[track_caller]
fn assert_state(o: &RolloutObservation, state: RolloutState, detail: &str) {
    assert_eq!(o.state, state, "{o:#?}");
    assert!(
        o.detail.contains(detail),
        "detail {:?} should contain {detail:?}",
        o.detail
    );
}

#[tokio::test]
async fn a_deployment_rollout_is_complete_only_when_every_piece_is_there() {
    let (_cluster, client, workloads) = setup().await;
    namespace(&client, "prod").await;
    let web: Deployment = workload(
        "Deployment",
        "web",
        &json!({"app": "web"}),
        &pod(&[("web", "nginx:1.1.0"), ("sidecar", "busybox:1.36")]),
        Some(3),
    );
    create(&client, "prod", &web).await;
    let specs = [spec(WorkloadKind::Deployment, "prod", "app=web")];
    let v110 = release("1.1.0", &[("docker.io/library/nginx", "1.1.0", None)]);

    // Nothing has looked at it yet.
    let o = observe(&workloads, &specs, &v110).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "Deployment prod/web: status not observed yet (generation 1)",
    );
    let w = &o.workloads[0];
    assert_eq!(w.workload.to_string(), "Deployment prod/web");
    assert!(w.runs_release);
    let containers: Vec<(&str, &str)> = w
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.image.as_str()))
        .collect();
    assert_eq!(
        containers,
        [("web", "nginx:1.1.0"), ("sidecar", "busybox:1.36")]
    );

    // Each missing piece is named.
    for (status, detail) in [
        (
            deployment_status(0, 0, 0, 0),
            "0/3 updated, 0/3 ready, 0/3 available",
        ),
        (
            deployment_status(2, 2, 2, 2),
            "2/3 updated, 2/3 ready, 2/3 available",
        ),
        (
            deployment_status(3, 4, 3, 3),
            "1 old replica pending termination",
        ),
        (deployment_status(3, 3, 1, 1), "1/3 ready, 1/3 available"),
        (deployment_status(3, 3, 3, 2), "2/3 available"),
    ] {
        set_status::<Deployment>(&client, "prod", "web", status).await;
        let o = observe(&workloads, &specs, &v110).await;
        assert_state(
            &o,
            RolloutState::Progressing,
            &format!("1 of 1 workload(s) still rolling out 1.1.0: Deployment prod/web: {detail}"),
        );
        assert_eq!(o.workloads[0].detail, detail);
    }

    set_status::<Deployment>(&client, "prod", "web", deployment_status(3, 3, 3, 3)).await;
    let o = observe(&workloads, &specs, &v110).await;
    assert_state(&o, RolloutState::Complete, "1 workload(s) rolled out 1.1.0");
    assert_eq!(o.workloads[0].detail, "3/3 updated, ready and available");

    // The same status against a release it does not run.
    let v120 = release("1.2.0", &[("nginx", "1.2.0", None)]);
    let o = observe(&workloads, &specs, &v120).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "web runs nginx:1.1.0, want 1.2.0",
    );

    // A spec change the controller has not seen yet.
    Api::<Deployment>::namespaced(client.clone(), "prod")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    let o = observe(&workloads, &specs, &v110).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "observedGeneration 1 < generation 2",
    );
}

#[tokio::test]
async fn a_rollout_past_its_progress_deadline_is_failed() {
    let (_cluster, client, workloads) = setup().await;
    namespace(&client, "prod").await;
    let web: Deployment = workload(
        "Deployment",
        "web",
        &json!({"app": "web"}),
        &pod(&[("web", "localhost:5000/team/web:v2")]),
        Some(2),
    );
    create(&client, "prod", &web).await;
    let mut stuck = deployment_status(1, 3, 2, 2);
    stuck["conditions"] = json!([
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
        {
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"web-7d9f\" has timed out progressing.",
        },
    ]);
    set_status::<Deployment>(&client, "prod", "web", stuck).await;
    let specs = [spec(WorkloadKind::Deployment, "prod", "app=web")];

    let v2 = release("v2", &[("localhost:5000/team/web", "v2", None)]);
    let o = observe(&workloads, &specs, &v2).await;
    assert_state(
        &o,
        RolloutState::Failed,
        "rollout of v2 failed: Deployment prod/web: progress deadline exceeded: ReplicaSet \"web-7d9f\" has timed out progressing.",
    );
    assert_eq!(o.workloads[0].state, RolloutState::Failed);

    // Stuck on a version that is not the release's: not the release's failure.
    let v3 = release("v3", &[("localhost:5000/team/web", "v3", None)]);
    let o = observe(&workloads, &specs, &v3).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "web runs localhost:5000/team/web:v2, want v3; progress deadline exceeded",
    );
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario per cluster: a cluster costs ~10 s and 450 MB
async fn stateful_sets_and_daemon_sets_roll_out() {
    let (_cluster, client, workloads) = setup().await;
    namespace(&client, "data").await;
    let labels = json!({"app.kubernetes.io/part-of": "store"});
    let db: StatefulSet = workload(
        "StatefulSet",
        "db",
        &labels,
        &pod(&[("db", "gcr.io/acme/db:v7")]),
        Some(2),
    );
    let agent: DaemonSet = workload(
        "DaemonSet",
        "agent",
        &labels,
        &pod(&[("agent", "gcr.io/acme/agent:v7")]),
        None,
    );
    create(&client, "data", &db).await;
    create(&client, "data", &agent).await;
    let specs = [
        spec(
            WorkloadKind::StatefulSet,
            "data",
            "app.kubernetes.io/part-of=store",
        ),
        spec(
            WorkloadKind::DaemonSet,
            "data",
            "app.kubernetes.io/part-of=store",
        ),
    ];
    let v7 = release(
        "v7",
        &[
            ("gcr.io/acme/db", "v7", None),
            ("gcr.io/acme/agent", "v7", None),
        ],
    );

    let o = observe(&workloads, &specs, &v7).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "2 of 2 workload(s) still rolling out v7: StatefulSet data/db: status not observed yet (generation 1); DaemonSet data/agent: status not observed yet (generation 1)",
    );

    // The StatefulSet mid-update, the DaemonSet on one of two nodes.
    set_status::<StatefulSet>(
        &client,
        "data",
        "db",
        json!({"replicas": 2, "updatedReplicas": 1, "readyReplicas": 2, "currentReplicas": 1,
               "currentRevision": "db-1", "updateRevision": "db-2"}),
    )
    .await;
    set_status::<DaemonSet>(
        &client,
        "data",
        "agent",
        json!({"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0,
               "updatedNumberScheduled": 1, "numberReady": 1, "numberAvailable": 1}),
    )
    .await;
    let o = observe(&workloads, &specs, &v7).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "StatefulSet data/db: 1/2 updated; DaemonSet data/agent: 1/2 updated, 1/2 ready, 1/2 available",
    );

    // The StatefulSet done: revisions agree, all ready.
    set_status::<StatefulSet>(
        &client,
        "data",
        "db",
        json!({"updatedReplicas": 2, "currentReplicas": 2, "currentRevision": "db-2"}),
    )
    .await;
    let o = observe(&workloads, &specs, &v7).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "1 of 2 workload(s) still rolling out v7: DaemonSet data/agent: 1/2 updated",
    );
    assert_eq!(o.workloads[0].state, RolloutState::Complete);
    assert_eq!(o.workloads[0].detail, "2/2 updated and ready");

    set_status::<DaemonSet>(
        &client,
        "data",
        "agent",
        json!({"updatedNumberScheduled": 2, "numberReady": 2, "numberAvailable": 2}),
    )
    .await;
    let o = observe(&workloads, &specs, &v7).await;
    assert_state(
        &o,
        RolloutState::Complete,
        "2 workload(s) rolled out v7: StatefulSet data/db; DaemonSet data/agent",
    );

    // A StatefulSet pod that is not ready any more.
    set_status::<StatefulSet>(&client, "data", "db", json!({"readyReplicas": 1})).await;
    let o = observe(&workloads, &specs, &v7).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "StatefulSet data/db: 1/2 ready",
    );
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario per cluster: a cluster costs ~10 s and 450 MB
async fn selectors_select_by_label_within_the_namespace() {
    let (_cluster, client, workloads) = setup().await;
    for ns in ["a", "b"] {
        namespace(&client, ns).await;
    }
    let nginx = pod(&[("web", "nginx:1.1.0")]);
    let web: Deployment = workload(
        "Deployment",
        "web",
        &json!({"app": "web", "tier": "front"}),
        &nginx,
        Some(1),
    );
    let api: Deployment = workload(
        "Deployment",
        "api",
        &json!({"app": "api"}),
        &pod(&[("api", "busybox:1.36")]),
        Some(1),
    );
    create(&client, "a", &web).await;
    create(&client, "a", &api).await;
    create(&client, "b", &web).await;
    for (ns, name) in [("a", "web"), ("a", "api"), ("b", "web")] {
        set_status::<Deployment>(&client, ns, name, deployment_status(1, 1, 1, 1)).await;
    }
    let v110 = release("1.1.0", &[("nginx", "1.1.0", None)]);
    let names = |o: &RolloutObservation| -> Vec<String> {
        o.workloads.iter().map(|w| w.workload.to_string()).collect()
    };

    let o = observe(
        &workloads,
        &[spec(WorkloadKind::Deployment, "a", "app=web")],
        &v110,
    )
    .await;
    assert_eq!(names(&o), ["Deployment a/web"]);
    assert_state(
        &o,
        RolloutState::Complete,
        "1 workload(s) rolled out 1.1.0: Deployment a/web",
    );

    let o = observe(
        &workloads,
        &[spec(
            WorkloadKind::Deployment,
            "a",
            "app in (web, api),tier!=back",
        )],
        &v110,
    )
    .await;
    let mut selected = names(&o);
    selected.sort();
    assert_eq!(selected, ["Deployment a/api", "Deployment a/web"]);
    assert_state(
        &o,
        RolloutState::Complete,
        "1 workload(s) rolled out 1.1.0: Deployment a/web",
    );
    assert!(
        !o.workloads
            .iter()
            .find(|w| w.workload.name == "api")
            .unwrap()
            .runs_release
    );

    // Two specs selecting the same workload report it once.
    let o = observe(
        &workloads,
        &[
            spec(WorkloadKind::Deployment, "b", "app=web"),
            spec(WorkloadKind::Deployment, "b", "tier=front"),
        ],
        &v110,
    )
    .await;
    assert_eq!(names(&o), ["Deployment b/web"]);

    // A selector that selects nothing, or nothing relevant, is never healthy.
    let o = observe(
        &workloads,
        &[
            spec(WorkloadKind::Deployment, "a", "app=wbe"),
            spec(WorkloadKind::StatefulSet, "a", "app=web"),
        ],
        &v110,
    )
    .await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "no workload selected (Deployments in a with app=wbe; StatefulSets in a with app=web): check the selectors",
    );
    let o = observe(
        &workloads,
        &[spec(WorkloadKind::Deployment, "a", "app=api")],
        &v110,
    )
    .await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "1 selected workload(s) (Deployment a/api), but none runs an image of 1.1.0 (docker.io/library/nginx): check the selectors",
    );
    // A namespace that does not exist selects nothing as well.
    let o = observe(
        &workloads,
        &[spec(WorkloadKind::Deployment, "c", "app=web")],
        &v110,
    )
    .await;
    assert_state(&o, RolloutState::Progressing, "no workload selected");
}

fn images(spec: Option<&PodSpec>) -> Vec<(String, String)> {
    let spec = spec.unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

fn pair(name: &str, image: &str) -> (String, String) {
    (name.to_owned(), image.to_owned())
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario per cluster: a cluster costs ~10 s and 450 MB
async fn patching_sets_only_the_release_images_once() {
    let (_cluster, client, workloads) = setup().await;
    namespace(&client, "prod").await;
    let mut web_pod = pod(&[
        ("web", "localhost:5000/team/web:v1"),
        ("sidecar", "busybox:1.36"),
        ("proxy", "docker.io/library/nginx:1.0.0"),
    ]);
    web_pod["initContainers"] = json!([{"name": "migrate", "image": "nginx:1.0.0"}]);
    let labels = json!({"app.kubernetes.io/part-of": "shop"});
    let web: Deployment = workload("Deployment", "web", &labels, &web_pod, Some(2));
    let cache: StatefulSet = workload(
        "StatefulSet",
        "cache",
        &labels,
        &pod(&[("cache", "localhost:5000/team/web:v1")]),
        Some(1),
    );
    let agent: DaemonSet = workload(
        "DaemonSet",
        "agent",
        &labels,
        &pod(&[("agent", "busybox:1.36")]),
        None,
    );
    let other: Deployment = workload(
        "Deployment",
        "other",
        &json!({"app": "other"}),
        &pod(&[("web", "localhost:5000/team/web:v1")]),
        Some(1),
    );
    create(&client, "prod", &web).await;
    create(&client, "prod", &cache).await;
    create(&client, "prod", &agent).await;
    create(&client, "prod", &other).await;
    set_status::<Deployment>(&client, "prod", "web", deployment_status(2, 2, 2, 2)).await;
    let before_agent = get::<DaemonSet>(&client, "prod", "agent").await;

    let selector = "app.kubernetes.io/part-of=shop";
    let specs = [
        spec(WorkloadKind::Deployment, "prod", selector),
        spec(WorkloadKind::StatefulSet, "prod", selector),
        spec(WorkloadKind::DaemonSet, "prod", selector),
    ];
    let good = release(
        "v2",
        &[
            ("localhost:5000/team/web", "v2", None),
            ("nginx", "1.1.0", Some(DIGEST)),
        ],
    );
    let patched = workloads.patch_images(&specs, &good).await.unwrap();
    let summary: Vec<(String, &str, bool, &str, &str)> = patched
        .iter()
        .map(|p| {
            (
                p.workload.to_string(),
                p.container.as_str(),
                p.init,
                p.from.as_str(),
                p.to.as_str(),
            )
        })
        .collect();
    let pinned = format!("1.1.0@{DIGEST}");
    assert_eq!(
        summary,
        [
            (
                "Deployment prod/web".to_owned(),
                "migrate",
                true,
                "nginx:1.0.0",
                &*format!("nginx:{pinned}")
            ),
            (
                "Deployment prod/web".to_owned(),
                "web",
                false,
                "localhost:5000/team/web:v1",
                "localhost:5000/team/web:v2"
            ),
            (
                "Deployment prod/web".to_owned(),
                "proxy",
                false,
                "docker.io/library/nginx:1.0.0",
                &*format!("docker.io/library/nginx:{pinned}"),
            ),
            (
                "StatefulSet prod/cache".to_owned(),
                "cache",
                false,
                "localhost:5000/team/web:v1",
                "localhost:5000/team/web:v2"
            ),
        ]
    );

    // The spec changed, nothing else did, and the annotations say who did it.
    let web = get::<Deployment>(&client, "prod", "web").await;
    assert_eq!(
        images(web.spec.template.spec.as_ref()),
        [
            pair("migrate", &format!("nginx:{pinned}")),
            pair("web", "localhost:5000/team/web:v2"),
            pair("sidecar", "busybox:1.36"),
            pair("proxy", &format!("docker.io/library/nginx:{pinned}")),
        ]
    );
    let annotations = web.metadata.annotations.clone().unwrap();
    assert_eq!(annotations[PATCHED_AT], "2026-11-21T10:00:00Z");
    assert_eq!(annotations[PATCHED_TO], "v2");
    assert_eq!(
        annotations["kubernetes.io/change-cause"],
        "autobump: images set to v2"
    );
    assert!(
        web.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("autobump")),
        "{:#?}",
        web.metadata.managed_fields
    );
    assert_eq!(web.metadata.generation, Some(2));
    let cache = get::<StatefulSet>(&client, "prod", "cache").await;
    assert_eq!(
        images(cache.spec.template.spec.as_ref()),
        [pair("cache", "localhost:5000/team/web:v2")]
    );
    let agent = get::<DaemonSet>(&client, "prod", "agent").await;
    assert_eq!(
        agent.metadata.resource_version,
        before_agent.metadata.resource_version
    );
    let other = get::<Deployment>(&client, "prod", "other").await;
    assert_eq!(
        images(other.spec.template.spec.as_ref()),
        [pair("web", "localhost:5000/team/web:v1")],
        "not selected, not patched"
    );

    // Observation sees the new generation waiting for its controller.
    let o = observe(&workloads, &specs[..1], &good).await;
    assert_state(
        &o,
        RolloutState::Progressing,
        "Deployment prod/web: observedGeneration 1 < generation 2",
    );

    // A second patch writes nothing.
    let again = workloads.patch_images(&specs, &good).await.unwrap();
    assert!(again.is_empty(), "{again:#?}");
    assert_eq!(
        get::<Deployment>(&client, "prod", "web")
            .await
            .metadata
            .resource_version,
        web.metadata.resource_version
    );
    assert_eq!(
        get::<StatefulSet>(&client, "prod", "cache")
            .await
            .metadata
            .resource_version,
        cache.metadata.resource_version
    );
}

#[tokio::test]
async fn a_conflicting_write_is_retried_then_given_up() {
    let (_cluster, client, workloads) = setup().await;
    namespace(&client, "prod").await;
    for name in ["web", "busy"] {
        let d: Deployment = workload(
            "Deployment",
            name,
            &json!({"app": name}),
            &pod(&[("web", "nginx:1.0.0")]),
            Some(1),
        );
        create(&client, "prod", &d).await;
    }
    let good = release("1.1.0", &[("nginx", "1.1.0", None)]);

    // Another writer changes the object once, between our read and our write.
    let calls = Arc::new(AtomicU32::new(0));
    let hook = {
        let (client, calls) = (client.clone(), calls.clone());
        Arc::new(move |id: autobump::cluster::WorkloadId| {
            let (client, calls) = (client.clone(), calls.clone());
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    Api::<Deployment>::namespaced(client, &id.namespace)
                        .patch(
                            &id.name,
                            &PatchParams::default(),
                            &Patch::Merge(
                                json!({"metadata": {"labels": {"touched": "by-someone-else"}}}),
                            ),
                        )
                        .await
                        .unwrap();
                }
            }) as futures::future::BoxFuture<'static, ()>
        })
    };
    let racing = workloads.clone().before_replace(hook);
    let patched = racing
        .patch_images(&[spec(WorkloadKind::Deployment, "prod", "app=web")], &good)
        .await
        .unwrap();
    assert_eq!(patched.len(), 1, "{patched:#?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one conflict, one retry");
    let web = get::<Deployment>(&client, "prod", "web").await;
    assert_eq!(
        images(web.spec.template.spec.as_ref()),
        [pair("web", "nginx:1.1.0")]
    );
    assert_eq!(
        web.metadata.labels.unwrap()["touched"],
        "by-someone-else",
        "the other writer's change is kept"
    );

    // A writer that always gets there first: a typed, retryable error after 5 tries.
    let calls = Arc::new(AtomicU32::new(0));
    let hook = {
        let (client, calls) = (client.clone(), calls.clone());
        Arc::new(move |id: autobump::cluster::WorkloadId| {
            let (client, calls) = (client.clone(), calls.clone());
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                Api::<Deployment>::namespaced(client, &id.namespace)
                    .patch(
                        &id.name,
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"metadata": {"annotations": {"round": n.to_string()}}}),
                        ),
                    )
                    .await
                    .unwrap();
            }) as futures::future::BoxFuture<'static, ()>
        })
    };
    let losing = workloads.clone().before_replace(hook);
    let e = losing
        .patch_images(&[spec(WorkloadKind::Deployment, "prod", "app=busy")], &good)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ClusterError::ConflictRetriesExhausted {
            workload: "Deployment prod/busy".into(),
            attempts: 5
        }
    );
    assert!(e.is_retryable());
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let busy = get::<Deployment>(&client, "prod", "busy").await;
    assert_eq!(
        images(busy.spec.template.spec.as_ref()),
        [pair("web", "nginx:1.0.0")]
    );
}

#[tokio::test]
async fn errors_say_whether_to_retry() {
    let (cluster, client, workloads) = setup().await;
    namespace(&client, "prod").await;
    let specs = [spec(WorkloadKind::Deployment, "prod", "app=web")];
    let good = release("1.1.0", &[("nginx", "1.1.0", None)]);
    let web: Deployment = workload(
        "Deployment",
        "web",
        &json!({"app": "web"}),
        &pod(&[("web", "nginx:1.0.0")]),
        Some(1),
    );
    create(&client, "prod", &web).await;

    // The API server gone: retryable.
    drop(cluster);
    let e = workloads.observe(&specs, &good).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.metric_label(), "unreachable", "{e}");
    assert!(
        e.to_string()
            .contains("list Deployments in prod with app=web"),
        "{e}"
    );
    let e = workloads.patch_images(&specs, &good).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.metric_label(), "unreachable", "{e}");
}

#[tokio::test]
async fn a_silent_api_server_times_out_retryably() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    autobump::install_crypto_provider();
    let mut config = kube::Config::new(url.parse().unwrap());
    config.read_timeout = Some(std::time::Duration::from_millis(500));
    let workloads = KubeWorkloads::new(
        Client::try_from(config).unwrap(),
        Arc::new(ManualClock::new(start())),
    );
    let e = workloads
        .observe(
            &[spec(WorkloadKind::Deployment, "prod", "app=web")],
            &release("1.1.0", &[("nginx", "1.1.0", None)]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "timeout", "{e}");
    assert!(e.is_retryable(), "{e}");
    held.abort();
}
