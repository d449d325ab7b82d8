//! The generated CRD must be accepted as a structural schema, the example policies
//! must apply as custom resources and read back unchanged (nothing pruned, defaults
//! agreeing), and the status subresource must fill the printer columns.

use autobump::policy::{self, AutobumpSpec};

use super::{Cluster, root};

#[test]
fn the_crd_and_the_example_policies_work_on_a_real_api_server() {
    let cluster = Cluster::start();
    let crd = root().join("manifests/crd.yaml");
    cluster.must(&["apply", "-f", crd.to_str().unwrap()]);
    cluster.must(&[
        "wait",
        "--for=condition=Established",
        "crd/autobumps.autobump.dev",
        "--timeout=60s",
    ]);
    cluster.must(&["create", "namespace", "prow"]);

    let loaded = policy::load_paths(&[root().join("policies")]).unwrap();
    assert!(loaded.diagnostics.is_empty());
    for p in &loaded.policies {
        // The policy files are manifests as they stand.
        cluster.must(&[
            "apply",
            "--validate=false",
            "-f",
            p.origin.file.to_str().unwrap(),
        ]);
        let namespace = p
            .metadata
            .namespace
            .as_ref()
            .map_or("default", |n| n.as_str());
        let json = cluster.must(&["get", "autobump", p.name(), "-n", namespace, "-o", "json"]);
        let cr: serde_json::Value = serde_json::from_str(&json).unwrap();
        let spec: AutobumpSpec = serde_json::from_value(cr["spec"].clone())
            .unwrap_or_else(|e| panic!("{}: the stored spec does not read back: {e}", p.name()));
        assert_eq!(
            spec,
            p.spec,
            "{}: pruned or defaulted differently",
            p.name()
        );
    }

    // Status through the subresource fills the printer columns.
    cluster.must(&[
        "patch",
        "autobump",
        "prow",
        "-n",
        "prow",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"current":{"summary":"v20261120-abc1234","images":[],"since":"2026-11-21T10:00:00Z"},"lastKnownGood":{"summary":"v20261119-def5678","images":[],"since":"2026-11-20T10:00:00Z"},"hold":{"by":"alert:HookDown","since":"2026-11-21T10:30:00Z","reason":"HookDown firing","automatic":true},"conditions":[{"type":"Held","status":"True","reason":"AlertFiring","message":"HookDown firing","lastTransitionTime":"2026-11-21T10:30:00Z"}]}}"#,
    ]);
    let table = cluster.must(&["get", "autobumps", "-A"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("prow "))
        .unwrap_or_else(|| panic!("{table}"));
    for cell in ["v20261120-abc1234", "v20261119-def5678", "alert:HookDown"] {
        assert!(row.contains(cell), "{table}");
    }
}
