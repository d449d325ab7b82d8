//! Support code shared by the integration-test binaries.
//!
//! Real servers (Debian's `docker-registry`, `prometheus`, `prometheus-alertmanager`)
//! run as child processes on ephemeral 127.0.0.1 ports, each with its own temporary data
//! directory and log file; they are killed and reaped when their handle drops (also when
//! a test panics). Small in-process HTTP servers stand in for a scrape target and for
//! webhook receivers. The GitHub test data comes from `.cache/github/` (made by
//! `scripts/setup`).
//!
//! A test that cannot start what it needs panics with a message naming `scripts/setup`;
//! nothing here skips silently.
//!
//! Include it from a test binary with
//! `#[path = "../support/mod.rs"] mod support;`.

// Every test binary includes this whole module but uses only part of it (and the
// re-exports below are for the binaries' convenience).
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod cred_helper;
pub mod fake_git;
pub mod git;
pub mod github;
pub mod github_fake;
pub mod gitlab_fake;
pub mod http;
pub mod image;
pub mod process;
pub mod prometheus;
pub mod registry;
pub mod scripted;
pub mod secret_world;
pub mod token;

use std::time::Duration;

use autobump::clock::{Deadline, Stopwatch};

pub use github::{github_openapi_path, webhook_examples, webhooks_examples_dir};
pub use http::{MetricsTarget, Request, WebhookSink};
pub use prometheus::{Alertmanager, AlertmanagerConfig, Prometheus, PrometheusOptions};
pub use registry::{ManifestKind, PushedManifest, Registry, RegistryOptions};

/// Calls `check` every `interval` until it returns `Ok`, and returns that value.
///
/// `check` returns `Err(observation)` while the condition does not hold yet; when
/// `timeout` passes, this panics naming `what` and the last observation, so a failing
/// test says what it saw instead of just "timed out".
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Deadline::after(timeout);
    let watch = Stopwatch::start();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observation) => observation,
        };
        assert!(
            !deadline.expired(),
            "timed out after {:.1?} waiting for {what}; last observation: {last}",
            watch.elapsed()
        );
        tokio::time::sleep(interval.min(deadline.remaining())).await;
    }
}

/// An HTTP client for talking to the local test servers: no proxy (whatever the
/// environment says), short timeouts.
#[must_use]
pub fn http_client() -> reqwest::Client {
    autobump::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("building the test HTTP client")
}

/// `GET url` with [`http_client`], its body as JSON (panics on any failure).
pub async fn get_json(url: &str) -> serde_json::Value {
    http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}
