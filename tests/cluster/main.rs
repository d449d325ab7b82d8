//! The generated CRD against a real kube-apiserver (v1.20, etcd, from
//! `../shared/tools/kube-test-cluster`, installed by `scripts/setup`): it must be
//! accepted as a structural schema, the example policies must apply as custom
//! resources and read back unchanged (nothing pruned, defaults agreeing), and the
//! status subresource must fill the printer columns.

use std::path::PathBuf;
use std::process::Command;

use autobump::policy::{self, AutobumpSpec};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tools() -> PathBuf {
    root().join("../shared/tools/kube-test-cluster")
}

/// A throw-away cluster; stopped when dropped (also on panic).
struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: String,
}

impl Cluster {
    /// Starts a cluster; one retry in a fresh directory, since etcd was once seen to
    /// exit at start-up without a word (infrastructure, not the code under test).
    fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..2 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "{} failed twice: run scripts/setup (it builds the cluster binaries)\n{}",
            tools().join("start").display(),
            failures.join("\n---\n")
        );
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("a temporary directory for the cluster");
        let start = tools().join("start");
        let out = Command::new(&start)
            .arg(dir.path())
            .output()
            .map_err(|e| format!("{} could not run: {e}", start.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let kubeconfig = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .ok_or("start printed no kubeconfig path")?
            .trim()
            .to_owned();
        Ok(Self { dir, kubeconfig })
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl not found: the base image has it; scripts/setup says so");
        let stderr: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("version difference") && !l.contains("skew"))
            .collect::<Vec<_>>()
            .join("\n");
        (
            out.status.success(),
            format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)),
        )
    }

    fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {}: {out}", args.join(" "));
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(tools().join("stop"))
            .arg(self.dir.path())
            .output();
    }
}

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
