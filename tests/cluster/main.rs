//! Tests against a real kube-apiserver (v1.20, etcd, from
//! `../shared/tools/kube-test-cluster`, built by `scripts/setup`). Every test starts
//! its own throw-away cluster; there is no kubelet, so tests write workload status.

#[path = "../support/mod.rs"]
mod support;

mod bench;
mod crd;
mod credentials;
mod e2e;
mod incluster;
mod manifests;
mod run;
mod secrets;
mod webhooks;
mod workloads;

use std::path::PathBuf;
use std::process::Command;

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tools() -> PathBuf {
    root().join("../shared/tools/kube-test-cluster")
}

/// A throw-away cluster; stopped when dropped (also on panic).
pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    pub(crate) kubeconfig: String,
}

impl Cluster {
    /// Starts a cluster, retrying in a fresh directory. `start` has a start-up race: it
    /// checks that etcd (and then kube-apiserver) is alive by reading the new process's
    /// command line, and on a loaded machine it may read it before `nohup` has exec'd
    /// the server, so it gives up within a second with "not healthy after 120s" and an
    /// empty log (seen in CI). Such an attempt costs about a second, so a few retries are
    /// cheap; a real problem (binaries missing) fails every attempt and is reported.
    pub(crate) fn start() -> Self {
        const ATTEMPTS: usize = 5;
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "{} failed {ATTEMPTS} times: run scripts/setup (it builds the cluster binaries)\n{}",
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

    pub(crate) fn kubectl(&self, args: &[&str]) -> (bool, String) {
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

    pub(crate) fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {}: {out}", args.join(" "));
        out
    }
}

impl Cluster {
    /// A kube client for this cluster, from its kubeconfig.
    pub(crate) async fn client(&self) -> kube::Client {
        autobump::install_crypto_provider();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .expect("start printed a readable kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a usable kubeconfig");
        kube::Client::try_from(config).expect("a kube client")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(tools().join("stop"))
            .arg(self.dir.path())
            .output();
    }
}
