use chrono::DateTime;
use serde_json::{Value, json};

use super::*;
use crate::policy::v1alpha1::ImageVersion;

fn release(images: &[(&str, &str)]) -> Release {
    Release {
        summary: "1.1.0".into(),
        images: images
            .iter()
            .map(|(image, tag)| ImageVersion {
                image: (*image).into(),
                tag: (*tag).into(),
                digest: None,
            })
            .collect(),
        since: DateTime::UNIX_EPOCH,
        commit: None,
    }
}

fn object<T: DeserializeOwned>(kind: &str, spec: &Value, status: Value) -> T {
    let mut object = json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "web", "namespace": "prod", "generation": 5},
        "spec": spec,
    });
    if !status.is_null() {
        object["status"] = status;
    }
    serde_json::from_value(object).unwrap()
}

fn template(containers: &Value) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}})
}

fn deployment(spec: Value, status: Value) -> Deployment {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": "web"}});
    spec["template"] = template(&json!([{"name": "web", "image": "nginx:1.1.0"}]));
    object("Deployment", &spec, status)
}

fn deployment_status(updated: i32, replicas: i32, ready: i32, available: i32) -> Value {
    json!({
        "observedGeneration": 5,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
    })
}

#[test]
#[allow(clippy::too_many_lines)] // one table: every branch of the Deployment rules
fn deployment_progress_branches() {
    let stuck = |reason: &str, status: &str, message: Option<&str>| {
        let mut s = deployment_status(1, 3, 2, 2);
        s["conditions"] = json!([
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": status, "reason": reason, "message": message},
        ]);
        s
    };
    let waiting = |s: &str| Progress::Waiting(s.to_owned());
    let cases = [
        (
            "replicas reached",
            json!({"replicas": 3}),
            deployment_status(3, 3, 3, 3),
            Progress::Done("3/3 updated, ready and available".into()),
        ),
        (
            "replicas default to 1",
            json!({}),
            deployment_status(1, 1, 1, 1),
            Progress::Done("1/1 updated, ready and available".into()),
        ),
        (
            "scaled to zero",
            json!({"replicas": 0}),
            deployment_status(0, 0, 0, 0),
            Progress::Done("0/0 updated, ready and available".into()),
        ),
        (
            "no status yet",
            json!({"replicas": 3}),
            Value::Null,
            waiting("status not observed yet (generation 5)"),
        ),
        (
            "status of an older generation",
            json!({"replicas": 3}),
            json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
            waiting("observedGeneration 4 < generation 5"),
        ),
        (
            "not all updated",
            json!({"replicas": 3}),
            deployment_status(2, 2, 2, 2),
            waiting("2/3 updated, 2/3 ready, 2/3 available"),
        ),
        (
            "one old replica left",
            json!({"replicas": 3}),
            deployment_status(3, 4, 3, 3),
            waiting("1 old replica pending termination"),
        ),
        (
            "old replicas left",
            json!({"replicas": 3}),
            deployment_status(1, 3, 3, 3),
            waiting("1/3 updated, 2 old replicas pending termination"),
        ),
        (
            "not ready",
            json!({"replicas": 3}),
            deployment_status(3, 3, 1, 3),
            waiting("1/3 ready"),
        ),
        (
            "not available",
            json!({"replicas": 3}),
            deployment_status(3, 3, 3, 2),
            waiting("2/3 available"),
        ),
        (
            "paused",
            json!({"replicas": 3, "paused": true}),
            deployment_status(3, 3, 3, 3),
            waiting("paused"),
        ),
        (
            "deadline exceeded",
            json!({"replicas": 3}),
            stuck(
                "ProgressDeadlineExceeded",
                "False",
                Some("ReplicaSet \"web-1\" has timed out progressing."),
            ),
            Progress::DeadlineExceeded(
                "progress deadline exceeded: ReplicaSet \"web-1\" has timed out progressing."
                    .into(),
            ),
        ),
        (
            "deadline exceeded without a message",
            json!({"replicas": 3}),
            stuck("ProgressDeadlineExceeded", "False", None),
            Progress::DeadlineExceeded("progress deadline exceeded".into()),
        ),
        (
            "still progressing",
            json!({"replicas": 3}),
            stuck("ReplicaSetUpdated", "True", None),
            waiting("1/3 updated, 2 old replicas pending termination, 2/3 ready, 2/3 available"),
        ),
    ];
    for (name, spec, status, expected) in cases {
        assert_eq!(
            deployment_progress(&deployment(spec, status)),
            expected,
            "{name}"
        );
    }

    // A stale deadline (an older generation's) is not this rollout's failure.
    let mut stale = stuck("ProgressDeadlineExceeded", "False", None);
    stale["observedGeneration"] = json!(4);
    assert_eq!(
        deployment_progress(&deployment(json!({"replicas": 3}), stale)),
        waiting("observedGeneration 4 < generation 5")
    );
    // Objects that never went through the API have no generation: only counts matter.
    let mut d = deployment(
        json!({"replicas": 2}),
        json!({"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
    );
    d.metadata.generation = None;
    assert!(matches!(deployment_progress(&d), Progress::Done(_)));
}

fn stateful_set(replicas: Option<i32>, status: Value) -> StatefulSet {
    let mut spec = json!({
        "serviceName": "web",
        "selector": {"matchLabels": {"app": "web"}},
        "template": template(&json!([{"name": "web", "image": "nginx:1.1.0"}])),
    });
    if let Some(r) = replicas {
        spec["replicas"] = json!(r);
    }
    object("StatefulSet", &spec, status)
}

#[test]
fn stateful_set_progress_branches() {
    let status = |updated: i32, ready: i32, current: &str, update: &str| {
        json!({
            "observedGeneration": 5, "replicas": 3, "updatedReplicas": updated,
            "readyReplicas": ready, "currentRevision": current, "updateRevision": update,
        })
    };
    let waiting = |s: &str| Progress::Waiting(s.to_owned());
    let cases = [
        (
            "done",
            Some(3),
            status(3, 3, "web-2", "web-2"),
            Progress::Done("3/3 updated and ready".into()),
        ),
        (
            "revisions agree although updatedReplicas is not reported",
            Some(3),
            json!({"observedGeneration": 5, "replicas": 3, "readyReplicas": 3, "currentRevision": "web-2", "updateRevision": "web-2"}),
            Progress::Done("3/3 updated and ready".into()),
        ),
        (
            "all updated before the revisions are swapped",
            Some(3),
            status(3, 3, "web-1", "web-2"),
            Progress::Done("3/3 updated and ready".into()),
        ),
        (
            "replicas default to 1",
            None,
            json!({"observedGeneration": 5, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "a"}),
            Progress::Done("1/1 updated and ready".into()),
        ),
        (
            "no status",
            Some(3),
            Value::Null,
            waiting("status not observed yet (generation 5)"),
        ),
        (
            "older generation",
            Some(3),
            json!({"observedGeneration": 3, "replicas": 3}),
            waiting("observedGeneration 3 < generation 5"),
        ),
        (
            "rolling",
            Some(3),
            status(1, 3, "web-1", "web-2"),
            waiting("1/3 updated"),
        ),
        (
            "not ready",
            Some(3),
            status(3, 2, "web-2", "web-2"),
            waiting("2/3 ready"),
        ),
        (
            "rolling and not ready",
            Some(3),
            status(2, 2, "web-1", "web-2"),
            waiting("2/3 updated, 2/3 ready"),
        ),
        (
            "available reported and short",
            Some(3),
            json!({"observedGeneration": 5, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 1, "currentRevision": "a", "updateRevision": "a"}),
            waiting("1/3 available"),
        ),
    ];
    for (name, replicas, status, expected) in cases {
        assert_eq!(
            stateful_set_progress(&stateful_set(replicas, status)),
            expected,
            "{name}"
        );
    }
}

fn daemon_set(status: Value) -> DaemonSet {
    let spec = json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": template(&json!([{"name": "web", "image": "nginx:1.1.0"}])),
    });
    object("DaemonSet", &spec, status)
}

#[test]
fn daemon_set_progress_branches() {
    let status = |desired: i32, updated: i32, ready: i32, available: i32| {
        json!({
            "observedGeneration": 5, "desiredNumberScheduled": desired,
            "currentNumberScheduled": desired, "numberMisscheduled": 0,
            "updatedNumberScheduled": updated, "numberReady": ready, "numberAvailable": available,
        })
    };
    let waiting = |s: &str| Progress::Waiting(s.to_owned());
    let cases = [
        (
            "done",
            status(2, 2, 2, 2),
            Progress::Done("2/2 updated, ready and available".into()),
        ),
        (
            "no nodes",
            status(0, 0, 0, 0),
            Progress::Done("0/0 updated, ready and available".into()),
        ),
        (
            "no status",
            Value::Null,
            waiting("status not observed yet (generation 5)"),
        ),
        (
            "older generation",
            json!({"observedGeneration": 4, "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 2}),
            waiting("observedGeneration 4 < generation 5"),
        ),
        ("not updated", status(2, 1, 2, 2), waiting("1/2 updated")),
        ("not ready", status(2, 2, 0, 2), waiting("0/2 ready")),
        (
            "not available",
            status(2, 2, 2, 1),
            waiting("1/2 available"),
        ),
        (
            "nothing yet",
            json!({"observedGeneration": 5, "desiredNumberScheduled": 2, "currentNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0}),
            waiting("0/2 updated, 0/2 ready, 0/2 available"),
        ),
    ];
    for (name, status, expected) in cases {
        assert_eq!(daemon_set_progress(&daemon_set(status)), expected, "{name}");
    }
}

fn id(name: &str) -> WorkloadId {
    WorkloadId {
        kind: WorkloadKind::Deployment,
        namespace: "prod".into(),
        name: name.into(),
    }
}

fn container(name: &str, image: &str) -> ContainerImage {
    ContainerImage {
        name: name.into(),
        image: image.into(),
        init: false,
    }
}

#[test]
#[allow(clippy::too_many_lines)] // one table: every image × status combination
fn judge_branches() {
    let images = ReleaseImages::new(&release(&[("nginx", "1.1.0")]));
    let done = || Progress::Done("3/3 updated, ready and available".into());
    let waiting = || Progress::Waiting("2/3 updated".into());
    let stuck = || Progress::DeadlineExceeded("progress deadline exceeded".into());
    let at = || {
        vec![
            container("web", "docker.io/library/nginx:1.1.0"),
            container("sidecar", "busybox:1"),
        ]
    };
    let old = || {
        vec![
            container("web", "nginx:1.0.0"),
            container("sidecar", "busybox:1"),
        ]
    };
    let none = || vec![container("sidecar", "busybox:1")];
    let cases = [
        (
            "at version, done",
            at(),
            done(),
            true,
            RolloutState::Complete,
            "3/3 updated, ready and available",
        ),
        (
            "at version, waiting",
            at(),
            waiting(),
            true,
            RolloutState::Progressing,
            "2/3 updated",
        ),
        (
            "at version, stuck",
            at(),
            stuck(),
            true,
            RolloutState::Failed,
            "progress deadline exceeded",
        ),
        (
            "old version, done",
            old(),
            done(),
            true,
            RolloutState::Progressing,
            "web runs nginx:1.0.0, want 1.1.0",
        ),
        (
            "old version, waiting",
            old(),
            waiting(),
            true,
            RolloutState::Progressing,
            "web runs nginx:1.0.0, want 1.1.0; 2/3 updated",
        ),
        (
            "old version, stuck: not the release's failure",
            old(),
            stuck(),
            true,
            RolloutState::Progressing,
            "web runs nginx:1.0.0, want 1.1.0; progress deadline exceeded",
        ),
        (
            "no release image, done",
            none(),
            done(),
            false,
            RolloutState::Complete,
            "3/3 updated, ready and available",
        ),
        (
            "no release image, waiting",
            none(),
            waiting(),
            false,
            RolloutState::Progressing,
            "2/3 updated",
        ),
        (
            "no release image, stuck",
            none(),
            stuck(),
            false,
            RolloutState::Failed,
            "progress deadline exceeded",
        ),
        (
            "an init container at an old version",
            vec![
                ContainerImage {
                    name: "migrate".into(),
                    image: "nginx:1.0.0".into(),
                    init: true,
                },
                container("web", "nginx:1.1.0"),
            ],
            done(),
            true,
            RolloutState::Progressing,
            "migrate runs nginx:1.0.0, want 1.1.0",
        ),
    ];
    for (name, containers, progress, runs_release, state, detail) in cases {
        let o = judge(id("web"), containers.clone(), progress, &images);
        assert_eq!(o.runs_release, runs_release, "{name}");
        assert_eq!(o.state, state, "{name}");
        assert_eq!(o.detail, detail, "{name}");
        assert_eq!(o.containers, containers, "{name}");
    }
}

#[test]
fn observe_object_reads_containers_and_init_containers() {
    let mut d = deployment(json!({"replicas": 1}), deployment_status(1, 1, 1, 1));
    d.spec.template.spec = Some(
        serde_json::from_value(json!({
            "initContainers": [{"name": "migrate", "image": "nginx:1.1.0"}],
            "containers": [{"name": "web", "image": "nginx:1.1.0"}, {"name": "bare"}],
        }))
        .unwrap(),
    );
    let o = observe_object(&d, &ReleaseImages::new(&release(&[("nginx", "1.1.0")])));
    assert_eq!(o.workload.to_string(), "Deployment prod/web");
    assert_eq!(
        o.containers,
        vec![
            ContainerImage {
                name: "migrate".into(),
                image: "nginx:1.1.0".into(),
                init: true
            },
            container("web", "nginx:1.1.0"),
            container("bare", ""),
        ]
    );
    assert_eq!(o.state, RolloutState::Complete);
    assert!(containers(None).is_empty());
}

fn observation(
    name: &str,
    runs_release: bool,
    state: RolloutState,
    detail: &str,
) -> WorkloadObservation {
    WorkloadObservation {
        workload: id(name),
        containers: Vec::new(),
        runs_release,
        state,
        detail: detail.into(),
    }
}

fn spec(selector: &str) -> WorkloadSpec {
    WorkloadSpec {
        kind: WorkloadKind::Deployment,
        namespace: "prod".parse().unwrap(),
        selector: selector.parse().unwrap(),
    }
}

#[test]
fn aggregate_branches() {
    use RolloutState::{Complete, Failed, Progressing};
    let release = release(&[("nginx", "1.1.0")]);
    let specs = [spec("app=web")];
    let cases = [
        (
            "nothing configured",
            &[][..],
            vec![],
            Progressing,
            "no workloads to observe (rollout.workloads is empty)".to_owned(),
        ),
        (
            "nothing selected",
            &specs[..],
            vec![],
            Progressing,
            "no workload selected (Deployments in prod with app=web): check the selectors".to_owned(),
        ),
        (
            "nothing relevant selected",
            &specs[..],
            vec![observation("cache", false, Complete, "1/1 updated, ready and available")],
            Progressing,
            "1 selected workload(s) (Deployment prod/cache), but none runs an image of 1.1.0 (docker.io/library/nginx): check the selectors".to_owned(),
        ),
        (
            "a failure outside the release does not count",
            &specs[..],
            vec![
                observation("cache", false, Failed, "progress deadline exceeded"),
                observation("web", true, Complete, "3/3"),
            ],
            Complete,
            "1 workload(s) rolled out 1.1.0: Deployment prod/web".to_owned(),
        ),
        (
            "complete",
            &specs[..],
            vec![observation("web", true, Complete, "3/3"), observation("api", true, Complete, "2/2")],
            Complete,
            "2 workload(s) rolled out 1.1.0: Deployment prod/web; Deployment prod/api".to_owned(),
        ),
        (
            "progressing",
            &specs[..],
            vec![
                observation("web", true, Complete, "3/3"),
                observation("api", true, Progressing, "1/2 updated"),
                observation("cache", false, Progressing, "0/1 ready"),
            ],
            Progressing,
            "1 of 2 workload(s) still rolling out 1.1.0: Deployment prod/api: 1/2 updated".to_owned(),
        ),
        (
            "failed beats progressing",
            &specs[..],
            vec![
                observation("web", true, Failed, "progress deadline exceeded"),
                observation("api", true, Progressing, "1/2 updated"),
            ],
            Failed,
            "rollout of 1.1.0 failed: Deployment prod/web: progress deadline exceeded".to_owned(),
        ),
    ];
    for (name, specs, workloads, state, detail) in cases {
        let o = aggregate(specs, &release, workloads.clone());
        assert_eq!(o.state, state, "{name}");
        assert_eq!(o.detail, detail, "{name}");
        assert_eq!(o.workloads, workloads, "{name}");
    }

    let empty = Release {
        images: Vec::new(),
        ..release.clone()
    };
    let o = aggregate(
        &specs,
        &empty,
        vec![observation("web", false, Complete, "")],
    );
    assert_eq!(o.state, Progressing);
    assert_eq!(
        o.detail,
        "1 selected workload(s) (Deployment prod/web), but 1.1.0 names no image: check the selectors"
    );
}

#[test]
fn kinds_print_as_kubernetes_spells_them() {
    for (kind, name) in [
        (WorkloadKind::Deployment, "Deployment"),
        (WorkloadKind::StatefulSet, "StatefulSet"),
        (WorkloadKind::DaemonSet, "DaemonSet"),
    ] {
        assert_eq!(kind_name(kind), name);
    }
}
