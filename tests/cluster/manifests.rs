//! `manifests/`, the kustomize base that deploys autobump: every object parses strictly
//! into its Kubernetes API type, the objects agree with each other (labels, ports,
//! service account), RBAC grants exactly what autobump uses, every alert has a runbook
//! and only uses autobump's metrics (and its logic is checked with `promtool test
//! rules`), and the base applies to a real kube-apiserver (server-side dry run; the CRD
//! and the namespace for real), where the granted permissions are checked with
//! `kubectl auth can-i`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Cluster, root};

/// Every metric autobump exports (the alerts may use no other of its own).
const METRICS: &[&str] = &[
    "autobump_reconciles_total",
    "autobump_reconcile_errors_total",
    "autobump_reconcile_duration_seconds",
    "autobump_bumps_opened_total",
    "autobump_merges_total",
    "autobump_holds_total",
    "autobump_unholds_total",
    "autobump_held",
    "autobump_held_since_timestamp_seconds",
    "autobump_rollbacks_total",
    "autobump_gate_verdicts_total",
    "autobump_policy_load_errors_total",
    "autobump_policy_files_invalid",
    "autobump_seconds_since_last_bump",
    "autobump_github_rate_limit_remaining",
    "autobump_registry_requests_total",
    "autobump_registry_backoffs_total",
    "autobump_leader",
];

/// Histograms, whose series carry a suffix.
const HISTOGRAMS: &[&str] = &["autobump_reconcile_duration_seconds"];

/// Series Prometheus makes itself for every target.
const PROMETHEUS_SERIES: &[&str] = &["up"];

/// The alerts issue 7 asks for (more may exist; each needs a runbook all the same).
const REQUIRED_ALERTS: &[&str] = &[
    "AutobumpDown",
    "AutobumpPolicyLoadFailing",
    "AutobumpReconcileErrors",
    "AutobumpImagesStale",
    "AutobumpHeldTooLong",
    "AutobumpGitHubBudgetLow",
];

fn manifests_dir() -> PathBuf {
    root().join("manifests")
}

// -------------------------------------------------------------------------------------
// Strict parsing

/// `kustomization.yaml`, only the fields this base uses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    resources: Vec<String>,
}

/// `monitoring.coreos.com/v1` `PrometheusRule`: the fields used here, nothing else.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: Value,
    spec: RuleSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// `monitoring.coreos.com/v1` `ServiceMonitor`: the fields used here, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: Value,
    spec: ServiceMonitorSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceMonitorSpec {
    selector: Value,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
    scrape_timeout: String,
}

/// Every object of the base, by type.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    crds: Vec<CustomResourceDefinition>,
    rules: Vec<PrometheusRule>,
    monitors: Vec<ServiceMonitor>,
    /// (file, kind, namespace) of every object.
    objects: Vec<(String, String, Option<String>)>,
}

fn kustomization() -> Kustomization {
    let path = manifests_dir().join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of a YAML file, as JSON values (empty documents left out).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The first place where `a` and `b` differ, as a JSON path.
fn first_difference(input: &Value, output: &Value, path: &str) -> Option<String> {
    match (input, output) {
        (Value::Object(before), Value::Object(after)) => {
            let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            keys.into_iter().find_map(|key| {
                let here = format!("{path}.{key}");
                match (before.get(key), after.get(key)) {
                    (Some(was), Some(is)) => first_difference(was, is, &here),
                    (Some(_), None) => Some(format!("{here}: dropped (unknown field?)")),
                    (None, Some(_)) => Some(format!("{here}: added")),
                    (None, None) => None,
                }
            })
        }
        (Value::Array(before), Value::Array(after)) if before.len() == after.len() => before
            .iter()
            .zip(after)
            .enumerate()
            .find_map(|(i, (was, is))| first_difference(was, is, &format!("{path}[{i}]"))),
        _ if input == output => None,
        _ => Some(format!("{path}: {input} became {output}")),
    }
}

/// Deserializes `value` into `T` and fails on anything `T` does not keep: k8s-openapi
/// ignores unknown fields, so the typed value is serialized back and compared.
fn strict<T: DeserializeOwned + Serialize>(what: &str, value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| {
        panic!(
            "{what}: does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let back = serde_json::to_value(&typed).unwrap();
    if let Some(diff) = first_difference(value, &back, "") {
        panic!("{what}: not a valid {}: {diff}", std::any::type_name::<T>());
    }
    typed
}

/// Deserializes with `deny_unknown_fields` types (no k8s-openapi type exists).
fn denying<T: DeserializeOwned>(what: &str, value: &Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    for file in kustomization().resources {
        for (i, doc) in documents(&manifests_dir().join(&file))
            .into_iter()
            .enumerate()
        {
            let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let what = format!("manifests/{file} document {} ({kind})", i + 1);
            m.objects.push((
                file.clone(),
                kind.clone(),
                doc["metadata"]["namespace"].as_str().map(str::to_owned),
            ));
            match (api_version.as_str(), kind.as_str()) {
                ("v1", "Namespace") => m.namespaces.push(strict(&what, &doc)),
                ("v1", "ServiceAccount") => m.service_accounts.push(strict(&what, &doc)),
                ("v1", "Service") => m.services.push(strict(&what, &doc)),
                ("apps/v1", "Deployment") => m.deployments.push(strict(&what, &doc)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    m.cluster_roles.push(strict(&what, &doc));
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    m.cluster_role_bindings.push(strict(&what, &doc));
                }
                ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(strict(&what, &doc)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    m.role_bindings.push(strict(&what, &doc));
                }
                ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                    m.crds.push(strict(&what, &doc));
                }
                ("monitoring.coreos.com/v1", "PrometheusRule") => {
                    let rule: PrometheusRule = denying(&what, &doc);
                    strict::<ObjectMeta>(&format!("{what} metadata"), &rule.metadata);
                    m.rules.push(rule);
                }
                ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                    let monitor: ServiceMonitor = denying(&what, &doc);
                    strict::<ObjectMeta>(&format!("{what} metadata"), &monitor.metadata);
                    strict::<LabelSelector>(&format!("{what} selector"), &monitor.spec.selector);
                    m.monitors.push(monitor);
                }
                other => panic!("{what}: {other:?} is not expected in the base; teach this test"),
            }
        }
    }
    m
}

// -------------------------------------------------------------------------------------
// Offline checks

#[test]
fn kustomization_lists_exactly_the_manifest_files() {
    let k = kustomization();
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    let listed: BTreeSet<String> = k.resources.iter().cloned().collect();
    assert_eq!(listed.len(), k.resources.len(), "a file is listed twice");
    let on_disk: BTreeSet<String> = std::fs::read_dir(manifests_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let ext = Path::new(n)
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            matches!(ext.as_deref(), Some("yaml" | "yml")) && n != "kustomization.yaml"
        })
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml resources vs the files in manifests/"
    );
}

#[test]
fn every_manifest_parses_strictly() {
    let m = load();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(m.service_accounts.len(), 1);
    assert_eq!(m.deployments.len(), 1);
    assert_eq!(m.services.len(), 1);
    assert_eq!(m.crds.len(), 1);
    assert_eq!(m.rules.len(), 1);
    assert_eq!(m.monitors.len(), 1);
    assert_eq!(m.roles.len(), 1);
    assert_eq!(m.role_bindings.len(), 1);
    assert_eq!(m.cluster_role_bindings.len(), 1);
    assert_eq!(m.cluster_roles.len(), 3);
    let ns = m.namespaces[0].metadata.name.as_deref().unwrap();
    assert_eq!(ns, "autobump");
    for (file, kind, namespace) in &m.objects {
        let cluster_scoped = matches!(
            kind.as_str(),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition"
        );
        if cluster_scoped {
            assert_eq!(namespace.as_deref(), None, "{file}: {kind} has a namespace");
        } else {
            assert_eq!(namespace.as_deref(), Some(ns), "{file}: {kind}");
        }
    }
    assert_eq!(
        m.crds[0].metadata.name.as_deref(),
        Some("autobumps.autobump.dev")
    );

    // The same objects, as kustomize renders them.
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(manifests_dir())
        .output()
        .expect("kubectl not found: the base image has it; scripts/setup says so");
    assert!(
        out.status.success(),
        "kubectl kustomize manifests/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let rendered: Vec<Value> = yaml_serde::Deserializer::from_str(&rendered)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    assert_eq!(rendered.len(), m.objects.len());
}

fn container(d: &Deployment) -> &Container {
    let containers = &d.spec.template.spec.as_ref().unwrap().containers;
    assert_eq!(containers.len(), 1);
    &containers[0]
}

#[test]
fn the_deployment_is_hardened() {
    let m = load();
    let d = &m.deployments[0];
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "Deployment selector {k}");
    }
    assert_eq!(
        pod.service_account_name.as_deref(),
        m.service_accounts[0].metadata.name.as_deref()
    );

    // Security: non-root, read-only root, no escalation, no capabilities, seccomp.
    let pod_sc = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let c = container(d);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_ne!(sc.privileged, Some(true));

    // Resources: requests and limits for CPU and memory.
    let resources = c.resources.as_ref().unwrap();
    for part in [&resources.requests, &resources.limits] {
        let part = part.as_ref().unwrap();
        assert!(
            part.contains_key("cpu") && part.contains_key("memory"),
            "{part:?}"
        );
    }
}

#[test]
fn the_deployment_runs_cluster_mode_behind_its_probes() {
    let m = load();
    let d = &m.deployments[0];
    let pod = d.spec.template.spec.as_ref().unwrap();
    let c = container(d);

    // The command line: cluster mode, listening where the probes and Service look,
    // cloning into a writable emptyDir.
    let args = c.args.as_deref().unwrap();
    let arg_after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    assert_eq!(args[0], "run");
    assert!(args.iter().any(|a| a == "--kubernetes"), "{args:?}");
    assert_eq!(arg_after("--listen"), Some("0.0.0.0:8080"));
    let cache = arg_after("--cache-dir").unwrap();
    let mounts = c.volume_mounts.as_deref().unwrap();
    let volumes = pod.volumes.as_deref().unwrap();
    let cache_mount = mounts.iter().find(|v| v.mount_path == cache).unwrap();
    let cache_volume = volumes.iter().find(|v| v.name == cache_mount.name).unwrap();
    assert!(
        cache_volume.empty_dir.is_some(),
        "the git cache is an emptyDir"
    );
    assert_ne!(cache_mount.read_only, Some(true));

    let ports = c.ports.as_deref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].container_port, 8080);
    let port_name = ports[0].name.clone().unwrap();
    assert_eq!(port_name, "http-metrics");
    for (probe, path) in [
        (c.liveness_probe.as_ref(), "/healthz"),
        (c.readiness_probe.as_ref(), "/readyz"),
    ] {
        let get = probe.unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String(port_name.clone()));
    }

    // Environment: the lease identity from the downward API; secrets optional.
    let env = c.env.as_deref().unwrap();
    let pod_name = env.iter().find(|e| e.name == "POD_NAME").unwrap();
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    let secret_env: Vec<_> = env
        .iter()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.as_str(), r))
        })
        .collect();
    assert!(secret_env.iter().any(|(n, _)| *n == "GITHUB_TOKEN"));
    assert!(secret_env.iter().any(|(n, _)| *n == "GITHUB_APP_ID"));
    for (name, r) in secret_env {
        assert_eq!(r.name, "autobump", "{name}");
        assert_eq!(r.optional, Some(true), "{name}: every key is optional");
    }
    // The GitHub App's key: the one key of the Secret mounted as a file, where
    // AUTOBUMP_GITHUB_APP_KEY points.
    let key_path = env
        .iter()
        .find(|e| e.name == "AUTOBUMP_GITHUB_APP_KEY")
        .and_then(|e| e.value.clone())
        .unwrap();
    let (dir, file) = key_path.rsplit_once('/').unwrap();
    let mount = c
        .volume_mounts
        .as_deref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == dir)
        .unwrap();
    let pod = d.spec.template.spec.as_ref().unwrap();
    let volume = pod
        .volumes
        .as_deref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("autobump"));
    assert_eq!(secret.optional, Some(true));
    let items = secret.items.as_deref().unwrap();
    assert_eq!(items.len(), 1, "only the App key reaches the filesystem");
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("github-app-private-key", file)
    );
}

#[test]
fn the_service_and_the_service_monitor_select_the_pods() {
    // The Service selects the Deployment's pods and exposes their named port; the
    // ServiceMonitor scrapes the Service's port.
    let m = load();
    let d = &m.deployments[0];
    let pod_labels = d
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let port_name = container(d).ports.as_deref().unwrap()[0]
        .name
        .clone()
        .unwrap();
    let svc = &m.services[0];
    let svc_spec = svc.spec.as_ref().unwrap();
    for (k, v) in svc_spec.selector.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "Service selector {k}");
    }
    let svc_port = &svc_spec.ports.as_ref().unwrap()[0];
    assert_eq!(svc_port.name.as_deref(), Some("http-metrics"));
    assert_eq!(svc_port.port, 8080);
    assert_eq!(svc_port.target_port, Some(IntOrString::String(port_name)));
    let monitor = &m.monitors[0];
    let selector: LabelSelector = serde_json::from_value(monitor.spec.selector.clone()).unwrap();
    let svc_labels = svc.metadata.labels.as_ref().unwrap();
    for (k, v) in selector.match_labels.as_ref().unwrap() {
        assert_eq!(svc_labels.get(k), Some(v), "ServiceMonitor selector {k}");
    }
    assert_eq!(monitor.spec.endpoints.len(), 1);
    let endpoint = &monitor.spec.endpoints[0];
    assert_eq!(endpoint.port, "http-metrics");
    assert_eq!(endpoint.path, "/metrics");
    assert!(!endpoint.interval.is_empty() && !endpoint.scrape_timeout.is_empty());
    assert_eq!(monitor.api_version, "monitoring.coreos.com/v1");
    assert_eq!(monitor.kind, "ServiceMonitor");
}

/// A rule as (API group, resource, sorted verbs).
fn rules(rules: &[PolicyRule]) -> BTreeSet<(String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for r in rules {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        for group in r.api_groups.as_deref().unwrap() {
            for resource in r.resources.as_deref().unwrap() {
                let mut verbs = r.verbs.clone();
                verbs.sort();
                for text in verbs.iter().chain([group, resource]) {
                    assert!(!text.contains('*'), "no wildcards in RBAC: {r:?}");
                }
                out.insert((group.clone(), resource.clone(), verbs));
            }
        }
    }
    out
}

fn expect_rules(table: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, Vec<String>)> {
    table
        .iter()
        .map(|(g, r, verbs)| {
            let mut verbs: Vec<String> = verbs.iter().map(|v| (*v).to_owned()).collect();
            verbs.sort();
            ((*g).to_owned(), (*r).to_owned(), verbs)
        })
        .collect()
}

#[test]
fn rbac_grants_exactly_what_autobump_uses() {
    let m = load();
    let sa = &m.service_accounts[0].metadata;
    let by_name = |name: &str| {
        m.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ClusterRole {name}"))
    };
    assert_eq!(
        rules(by_name("autobump").rules.as_deref().unwrap()),
        expect_rules(&[
            ("autobump.dev", "autobumps", &["get", "list", "watch"]),
            (
                "autobump.dev",
                "autobumps/status",
                &["get", "update", "patch"]
            ),
            (
                "apps",
                "deployments",
                &["get", "list", "watch", "patch", "update"]
            ),
            (
                "apps",
                "statefulsets",
                &["get", "list", "watch", "patch", "update"]
            ),
            (
                "apps",
                "daemonsets",
                &["get", "list", "watch", "patch", "update"]
            ),
            ("events.k8s.io", "events", &["create", "patch"]),
            ("", "events", &["create", "patch"]),
        ])
    );
    assert_eq!(
        rules(&m.roles[0].rules.clone().unwrap()),
        expect_rules(&[(
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update"]
        )])
    );
    assert_eq!(m.roles[0].metadata.namespace, sa.namespace);
    for name in ["autobump-notify-secrets", "autobump-policy-credentials"] {
        assert_eq!(
            rules(by_name(name).rules.as_deref().unwrap()),
            expect_rules(&[("", "secrets", &["get"])]),
            "{name}"
        );
    }

    // Bindings: the controller's roles to the ServiceAccount; the secrets role to
    // nobody (bound per namespace by whoever needs it).
    let crb = &m.cluster_role_bindings[0];
    assert_eq!(crb.role_ref.kind, "ClusterRole");
    assert_eq!(crb.role_ref.name, "autobump");
    let rb = &m.role_bindings[0];
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(Some(&rb.role_ref.name), m.roles[0].metadata.name.as_ref());
    assert_eq!(rb.metadata.namespace, sa.namespace);
    for subjects in [&crb.subjects, &rb.subjects] {
        let subjects = subjects.as_deref().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(Some(&subjects[0].name), sa.name.as_ref());
        assert_eq!(subjects[0].namespace, sa.namespace);
    }
}

// -------------------------------------------------------------------------------------
// Alerts

/// `expr` with strings, label matchers (`{...}`) and ranges (`[...]`) blanked out.
fn blank_out(expr: &str) -> String {
    let mut plain = String::new();
    let mut closing: Option<char> = None;
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            plain.push(' ');
            continue;
        }
        if let Some(end) = closing {
            if c == '"' || c == '\'' || c == '`' {
                quote = Some(c);
            } else if c == end {
                closing = None;
            }
            plain.push(' ');
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                plain.push(' ');
            }
            '{' => {
                closing = Some('}');
                plain.push(' ');
            }
            '[' => {
                closing = Some(']');
                plain.push(' ');
            }
            c => plain.push(c),
        }
    }
    plain
}

/// The metric names an expression selects: everything but strings, label matchers,
/// ranges, numbers, functions and aggregations (a name before `(`), keywords and the
/// label lists of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Aggregations may be followed by `by (...)` rather than `(`.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let plain = blank_out(expr);
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            // A number (or duration): skip it whole, letters included (`4e3`, `5m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let before_paren = chars.get(j) == Some(&'(');
        if GROUPING.contains(&word.as_str()) {
            if before_paren {
                while j < chars.len() && chars[j] != ')' {
                    j += 1;
                }
                i = j + 1;
            }
        } else if !before_paren && !KEYWORDS.contains(&word.as_str()) {
            names.insert(word);
        }
    }
    names
}

#[test]
fn metric_names_of_expressions() {
    assert_eq!(
        metric_names(
            r#"sum by (policy) (rate(a_total{result="error", x=~"{b}"}[15m])) / on (policy) group_left(c) b > 4 * 86400 unless max without(d) (e offset 5m) == bool 1e3"#
        ),
        ["a_total", "b", "e"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    );
    assert_eq!(
        metric_names(r#"absent(up{job="autobump"} == 1)"#),
        BTreeSet::from(["up".to_owned()])
    );
}

fn rule() -> PrometheusRule {
    load().rules.remove(0)
}

fn alerts(rule: &PrometheusRule) -> Vec<&AlertRule> {
    rule.spec.groups.iter().flat_map(|g| &g.rules).collect()
}

#[test]
fn every_alert_has_a_runbook_and_uses_only_autobump_metrics() {
    let rule = rule();
    assert_eq!(rule.api_version, "monitoring.coreos.com/v1");
    assert_eq!(rule.kind, "PrometheusRule");
    let alerts = alerts(&rule);
    let names: BTreeSet<&str> = alerts.iter().map(|a| a.alert.as_str()).collect();
    assert_eq!(names.len(), alerts.len(), "an alert name is used twice");
    for required in REQUIRED_ALERTS {
        assert!(names.contains(required), "no alert {required}");
    }
    let known: BTreeSet<String> = METRICS
        .iter()
        .map(|m| (*m).to_owned())
        .chain(
            HISTOGRAMS
                .iter()
                .flat_map(|h| ["_bucket", "_sum", "_count"].map(|suffix| format!("{h}{suffix}"))),
        )
        .chain(PROMETHEUS_SERIES.iter().map(|m| (*m).to_owned()))
        .collect();
    for a in &alerts {
        let name = &a.alert;
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                a.annotations.get(key).is_some_and(|v| !v.trim().is_empty()),
                "{name}: no {key}"
            );
        }
        assert_eq!(a.annotations.len(), 3, "{name}: unexpected annotations");
        let url = &a.annotations["runbook_url"];
        assert!(url.starts_with("https://"), "{name}: {url}");
        let page = format!("runbooks/{name}.md");
        assert!(
            url.ends_with(&format!("/{page}")),
            "{name}: {url} is not its page"
        );
        assert!(
            root().join(&page).is_file(),
            "{name}: {page} does not exist"
        );
        assert!(
            matches!(
                a.labels.get("severity").map(String::as_str),
                Some("critical" | "warning")
            ),
            "{name}: severity"
        );
        let used = metric_names(&a.expr);
        assert!(!used.is_empty(), "{name}: selects no metric");
        for metric in &used {
            assert!(
                known.contains(metric),
                "{name}: unknown metric {metric} in {}",
                a.expr
            );
        }
        assert!(!a.for_.is_empty(), "{name}: no `for`");
    }
}

fn promtool() -> Command {
    let probe = Command::new("promtool").arg("--version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "promtool not found: it comes with Debian's prometheus package; run scripts/setup"
    );
    Command::new("promtool")
}

fn run_promtool(args: &[&str], dir: &Path) {
    let out = promtool().args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unit tests of the alert expressions (promtool's format). Annotations are left out
/// of the rules under test (promtool would compare their rendered text);
/// `promtool check rules` checks that their templates parse.
const ALERT_TESTS: &str = r#"
rule_files: [logic.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="autobump", namespace="autobump", instance="a"}'
        values: '1x10 0x20'
    alert_rule_test:
      - {eval_time: 14m, alertname: AutobumpDown, exp_alerts: []}
      - eval_time: 20m
        alertname: AutobumpDown
        exp_alerts:
          # absent() of a comparison carries no labels of the selector.
          - exp_labels: {severity: critical}

  - interval: 1m
    input_series:
      - {series: 'autobump_leader{instance="a"}', values: '1x30'}
      - {series: 'autobump_leader{instance="b"}', values: '0x10 1x20'}
    alert_rule_test:
      - {eval_time: 10m, alertname: AutobumpNoLeader, exp_alerts: []}
      - eval_time: 20m
        alertname: AutobumpNoLeader
        exp_alerts: [{exp_labels: {severity: critical}}]

  - interval: 1m
    input_series:
      - {series: 'autobump_policy_files_invalid{instance="a"}', values: '0x5 1x30'}
      - {series: 'autobump_policy_files_invalid{instance="b"}', values: '0x35'}
      - {series: 'autobump_policy_load_errors_total{instance="a"}', values: '0x35'}
    alert_rule_test:
      - {eval_time: 12m, alertname: AutobumpPolicyLoadFailing, exp_alerts: []}
      - eval_time: 20m
        alertname: AutobumpPolicyLoadFailing
        exp_alerts: [{exp_labels: {severity: warning}}]

  - interval: 1m
    input_series:
      - {series: 'autobump_reconciles_total{policy="prow", result="ok", instance="a"}', values: '0+1x60'}
      - {series: 'autobump_reconciles_total{policy="prow", result="error", instance="a"}', values: '0x10 0+3x50'}
      - {series: 'autobump_reconciles_total{policy="docs", result="ok", instance="a"}', values: '0+1x60'}
      - {series: 'autobump_reconciles_total{policy="docs", result="error", instance="a"}', values: '0x60'}
    alert_rule_test:
      - {eval_time: 15m, alertname: AutobumpReconcileErrors, exp_alerts: []}
      - eval_time: 45m
        alertname: AutobumpReconcileErrors
        exp_alerts: [{exp_labels: {severity: warning, policy: prow}}]

  - interval: 1m
    input_series:
      - {series: 'autobump_seconds_since_last_bump{policy="prow", instance="a"}', values: '400000+60x100'}
      - {series: 'autobump_held{policy="prow", instance="a"}', values: '0x100'}
      - {series: 'autobump_seconds_since_last_bump{policy="docs", instance="a"}', values: '400000+60x100'}
      - {series: 'autobump_held{policy="docs", instance="a"}', values: '1x100'}
      - {series: 'autobump_seconds_since_last_bump{policy="web", instance="a"}', values: '1000+60x100'}
      - {series: 'autobump_held{policy="web", instance="a"}', values: '0x100'}
    alert_rule_test:
      - {eval_time: 50m, alertname: AutobumpImagesStale, exp_alerts: []}
      - eval_time: 70m
        alertname: AutobumpImagesStale
        exp_alerts: [{exp_labels: {severity: warning, policy: prow}}]

  - interval: 1m
    input_series:
      - {series: 'autobump_held{policy="prow", instance="a"}', values: '1x1600'}
      - {series: 'autobump_held_since_timestamp_seconds{policy="prow", instance="a"}', values: '60x1600'}
      - {series: 'autobump_held{policy="docs", instance="a"}', values: '0x1600'}
      - {series: 'autobump_held_since_timestamp_seconds{policy="docs", instance="a"}', values: '0x1600'}
    alert_rule_test:
      - {eval_time: 23h, alertname: AutobumpHeldTooLong, exp_alerts: []}
      - eval_time: 25h
        alertname: AutobumpHeldTooLong
        exp_alerts: [{exp_labels: {severity: warning, policy: prow}}]

  - interval: 1m
    input_series:
      # The standby's gauge is old and low; only the leader's counts.
      - {series: 'autobump_github_rate_limit_remaining{instance="a"}', values: '4000x30'}
      - {series: 'autobump_github_rate_limit_remaining{instance="b"}', values: '100x30'}
      - {series: 'autobump_leader{instance="a"}', values: '1x30'}
      - {series: 'autobump_leader{instance="b"}', values: '0x30'}
    alert_rule_test:
      - {eval_time: 20m, alertname: AutobumpGitHubBudgetLow, exp_alerts: []}

  - interval: 1m
    input_series:
      - {series: 'autobump_github_rate_limit_remaining{instance="a"}', values: '4000x5 300x25'}
      - {series: 'autobump_leader{instance="a"}', values: '1x30'}
    alert_rule_test:
      - {eval_time: 10m, alertname: AutobumpGitHubBudgetLow, exp_alerts: []}
      - eval_time: 20m
        alertname: AutobumpGitHubBudgetLow
        exp_alerts: [{exp_labels: {severity: warning}}]
"#;

#[test]
fn alert_rules_are_valid_and_fire_when_they_should() {
    let rule = rule();
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::to_value(&rule.spec).unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        yaml_serde::to_string(&spec).unwrap(),
    )
    .unwrap();
    run_promtool(&["check", "rules", "rules.yaml"], dir.path());

    let mut logic = spec.clone();
    for group in logic["groups"].as_array_mut().unwrap() {
        for r in group["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("annotations");
        }
    }
    std::fs::write(
        dir.path().join("logic.yaml"),
        yaml_serde::to_string(&logic).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("tests.yaml"), ALERT_TESTS).unwrap();
    run_promtool(&["test", "rules", "tests.yaml"], dir.path());

    // Every alert has a case above.
    for a in alerts(&rule) {
        assert!(
            ALERT_TESTS.contains(&format!("alertname: {}", a.alert)),
            "{}: no promtool test case",
            a.alert
        );
    }
}

// -------------------------------------------------------------------------------------
// Against a real API server

/// `kubectl auth can-i VERB RESOURCE [-n NS | -A]` as autobump's service account.
fn can_i(cluster: &Cluster, args: &[&str]) -> bool {
    let mut full = vec![
        "auth",
        "can-i",
        "--as=system:serviceaccount:autobump:autobump",
    ];
    full.extend_from_slice(args);
    let (_, out) = cluster.kubectl(&full);
    match out.lines().next().map(str::trim) {
        Some("yes") => true,
        Some("no") => false,
        _ => panic!("kubectl {}: {out}", full.join(" ")),
    }
}

#[test]
fn the_base_applies_to_a_real_api_server_with_least_privilege() {
    let cluster = Cluster::start();
    let dir = manifests_dir();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();

    // The CRD and the namespace for real: the dry run of the objects in the namespace
    // needs it to exist (a dry-run namespace is not there for the next object).
    cluster.must(&["apply", "-f", &file("crd.yaml")]);
    cluster.must(&[
        "wait",
        "--for=condition=Established",
        "crd/autobumps.autobump.dev",
        "--timeout=60s",
    ]);
    cluster.must(&["apply", "-f", &file("namespace.yaml")]);

    // Everything else as kustomize renders it, server-side dry run — except the
    // PrometheusRule and the ServiceMonitor: their kinds come from the Prometheus
    // Operator's CRDs, which this API server does not have (and fetching them would
    // leave the machine); they are checked strictly offline and with promtool above.
    let rendered = cluster.must(&["kustomize", dir.to_str().unwrap()]);
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&rendered) {
        let v = Value::deserialize(doc).unwrap();
        let kind = v["kind"].as_str().unwrap().to_owned();
        if v["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
        {
            skipped.push(kind);
        } else {
            kept.push((kind, yaml_serde::to_string(&v).unwrap()));
        }
    }
    skipped.sort();
    assert_eq!(skipped, ["PrometheusRule", "ServiceMonitor"]);
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects.yaml");
    let joined: Vec<&str> = kept.iter().map(|(_, y)| y.as_str()).collect();
    std::fs::write(&objects, joined.join("---\n")).unwrap();
    let out = cluster.must(&["apply", "--dry-run=server", "-f", objects.to_str().unwrap()]);
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count(),
        kept.len(),
        "every object accepted: {out}"
    );

    check_permissions(&cluster);
}

/// Applies the RBAC for real and asks the API server what autobump's service account
/// may and may not do.
fn check_permissions(cluster: &Cluster) {
    let file = |name: &str| manifests_dir().join(name).to_str().unwrap().to_owned();
    cluster.must(&["apply", "-f", &file("serviceaccount.yaml")]);
    cluster.must(&["apply", "-f", &file("rbac.yaml")]);
    cluster.must(&["create", "namespace", "prow"]);
    cluster.must(&["create", "namespace", "payments"]);
    let allowed: &[&[&str]] = &[
        &["list", "autobumps.autobump.dev", "-A"],
        &["watch", "autobumps.autobump.dev", "-A"],
        &["get", "autobumps.autobump.dev", "-n", "prow"],
        &[
            "patch",
            "autobumps.autobump.dev",
            "--subresource=status",
            "-n",
            "prow",
        ],
        &[
            "update",
            "autobumps.autobump.dev",
            "--subresource=status",
            "-n",
            "prow",
        ],
        &["watch", "deployments.apps", "-A"],
        &["patch", "deployments.apps", "-n", "prow"],
        &["update", "statefulsets.apps", "-n", "prow"],
        &["list", "daemonsets.apps", "-A"],
        &["create", "events.events.k8s.io", "-n", "prow"],
        &["patch", "events.events.k8s.io", "-n", "prow"],
        &["create", "events", "-n", "prow"],
        &["get", "leases.coordination.k8s.io", "-n", "autobump"],
        &["create", "leases.coordination.k8s.io", "-n", "autobump"],
        &["update", "leases.coordination.k8s.io", "-n", "autobump"],
    ];
    let denied: &[&[&str]] = &[
        // People own the spec; autobump writes only status.
        &["update", "autobumps.autobump.dev", "-n", "prow"],
        &["delete", "autobumps.autobump.dev", "-n", "prow"],
        &["create", "deployments.apps", "-n", "prow"],
        &["delete", "deployments.apps", "-n", "prow"],
        &["list", "pods", "-n", "prow"],
        &["get", "secrets", "-n", "prow"],
        &["get", "secrets", "-n", "autobump"],
        &["list", "secrets", "-A"],
        &["create", "leases.coordination.k8s.io", "-n", "prow"],
        &["delete", "leases.coordination.k8s.io", "-n", "autobump"],
        &["list", "namespaces"],
        &["create", "customresourcedefinitions.apiextensions.k8s.io"],
    ];
    for args in allowed {
        assert!(can_i(cluster, args), "autobump should be allowed: {args:?}");
    }
    for args in denied {
        assert!(!can_i(cluster, args), "autobump should be denied: {args:?}");
    }

    // The documented opt-in for secretKeyRef notification URLs, in one namespace only.
    cluster.must(&[
        "create",
        "rolebinding",
        "autobump-notify-secrets",
        "-n",
        "payments",
        "--clusterrole=autobump-notify-secrets",
        "--serviceaccount=autobump:autobump",
    ]);
    assert!(can_i(cluster, &["get", "secrets", "-n", "payments"]));
    assert!(!can_i(cluster, &["list", "secrets", "-n", "payments"]));
    assert!(!can_i(cluster, &["get", "secrets", "-n", "prow"]));

    check_narrow_credentials_grant(cluster);
}

/// The documented narrow grant for policies' own credentials: only the Secrets named,
/// in their namespace.
fn check_narrow_credentials_grant(cluster: &Cluster) {
    cluster.must(&["create", "namespace", "team-a"]);
    cluster.must(&[
        "create",
        "role",
        "autobump-policy-credentials",
        "-n",
        "team-a",
        "--verb=get",
        "--resource=secrets",
        "--resource-name=team-a-pull",
        "--resource-name=team-a-deploy",
    ]);
    cluster.must(&[
        "create",
        "rolebinding",
        "autobump-policy-credentials",
        "-n",
        "team-a",
        "--role=autobump-policy-credentials",
        "--serviceaccount=autobump:autobump",
    ]);
    assert!(can_i(
        cluster,
        &["get", "secrets/team-a-pull", "-n", "team-a"]
    ));
    assert!(can_i(
        cluster,
        &["get", "secrets/team-a-deploy", "-n", "team-a"]
    ));
    assert!(!can_i(cluster, &["get", "secrets/other", "-n", "team-a"]));
    assert!(!can_i(cluster, &["list", "secrets", "-n", "team-a"]));
    assert!(!can_i(
        cluster,
        &["get", "secrets/team-a-pull", "-n", "prow"]
    ));
}

// -------------------------------------------------------------------------------------
// Runbooks

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The relative `(FILE.md#ANCHOR)` links of a Markdown text.
fn relative_links(text: &str) -> Vec<(String, Option<String>)> {
    text.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')')?];
            if target.contains("://") {
                return None;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a.to_owned())),
                None => (target, None),
            };
            Some((file.to_owned(), fragment))
        })
        .collect()
}

#[test]
fn runbooks_are_complete_and_their_links_resolve() {
    const SECTIONS: &[&str] = &[
        "What it means",
        "Confirm",
        "Unhold",
        "Roll forward",
        "Pin a version",
        "Break-glass: roll back without autobump",
    ];
    let dir = root().join("runbooks");
    let pages: BTreeMap<String, String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    let index = &pages["README.md"];
    let alert_names: BTreeSet<String> = alerts(&rule()).iter().map(|a| a.alert.clone()).collect();
    for (name, text) in &pages {
        if name == "README.md" || name == "procedures.md" {
            continue;
        }
        assert!(
            index.contains(&format!("]({name})")),
            "runbooks/README.md does not link {name}"
        );
        let headings: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("## ")).collect();
        for section in SECTIONS {
            assert!(
                headings.contains(section),
                "{name}: no section \"## {section}\""
            );
        }
        let confirm = text.split("## Confirm").nth(1).unwrap();
        let confirm = confirm.split("\n## ").next().unwrap();
        assert!(confirm.contains("```sh"), "{name}: Confirm has no commands");
        // Alert pages belong to alerts that exist.
        if let Some(alert) = name
            .strip_suffix(".md")
            .filter(|n| n.starts_with("Autobump"))
        {
            assert!(
                alert_names.contains(alert),
                "{name}: no alert {alert} in the rules"
            );
        }
    }
    for (name, text) in &pages {
        for (file, fragment) in relative_links(text) {
            let target = if file.is_empty() {
                name.clone()
            } else {
                file.clone()
            };
            let Some(target_text) = pages.get(&target) else {
                panic!("{name}: link to {file}, which is not in runbooks/");
            };
            if let Some(fragment) = fragment {
                let anchors: BTreeSet<String> = target_text
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|l| anchor(l.trim_start_matches('#')))
                    .collect();
                assert!(
                    anchors.contains(&fragment),
                    "{name}: link to {target}#{fragment}: no such heading"
                );
            }
        }
    }
}
