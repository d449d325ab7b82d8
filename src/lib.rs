//! `autobump`: a GitOps continuous-deployment controller.
//!
//! ```text
//!  registries ──tags──▶ select ──▶ rewrite manifests ──▶ autobump PR (≤ 1/hour, in window)
//!                                                               │ checks green, gate clear,
//!                                                               ▼ diff verified, not held
//!  alerts (Prometheus/Alertmanager) ◀── bake window ◀── deployed ◀── merge (expected head SHA)
//!         │ firing during bake                     │ quiet for the whole bake
//!         ▼                                        ▼
//!  auto-hold + rollback to last known-good    promote to known-good
//! ```
//!
//! Every reconcile of a policy is: observe → immutable snapshot → plan (a pure function
//! of snapshot, policy and `now`) → execute the plan's effects, each an idempotent ensure.
//!
//! Modules:
//! * [`policy`]: the versioned policy API (`autobump.dev/v1alpha1`), loading and
//!   validation with `FILE:LINE:COL` errors (pure apart from reading files).
//! * [`core`]: pure decisions ([`core::schedule`], …).
//! * [`clock`]: the only place that reads time.
//! * [`store`]: durable per-policy state (holds, versions, history) in a JSON file
//!   written atomically under a lock.
//! * [`files`]: listing, reading and atomically writing the files of a checked-out tree.
//! * [`repo`]: the GitOps repository over git2: cached clones, bump commits built
//!   without a checkout, pull-request and direct pushes (does I/O).
//! * [`alerts`]: the alert gate's sources — Prometheus (`/api/v1/alerts`) and
//!   Alertmanager (`/api/v2/alerts`, silenced and inhibited alerts left out) — read into
//!   a Clear / Firing / Unknown verdict, and the Alertmanager webhook payload as a
//!   reconcile trigger (does I/O).
//! * [`forge`]: the `Forge` trait and its GitHub implementation (octocrab; token or App
//!   auth, retries, rate limits, conditional requests) and the webhook helpers.
//! * [`incluster`]: in-cluster mode — Lease leader election, the state store on the
//!   `Autobump` objects' status, status conditions, Events, and the driver running
//!   kube-runtime's controller (does I/O).
//! * [`notify`]: notifications to people — Slack incoming webhooks and a generic JSON
//!   webhook — with secrets read from the environment or files and never logged (does I/O).

pub mod alerts;
pub mod clock;
pub mod cluster;
pub mod controller;
pub mod core;
pub mod credentials;
pub mod dashboard;
pub mod files;
pub mod forge;
pub mod http;
pub mod incluster;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod policy;
pub mod registry;
pub mod repo;
pub mod resolve;
pub mod status;
pub mod store;

/// Installs rustls' `ring` crypto provider for the process, once. Every binary and
/// test that builds an HTTPS client (reqwest, kube) calls this first: the dependency
/// graph is ring-only, and rustls refuses to guess a provider.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error and its sources, `: `-separated, without repeating a source whose text
/// the error already includes (TLS and connection failures hide in the sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    use std::fmt::Write as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            let _ = write!(text, ": {s_text}");
        }
        source = s.source();
    }
    text
}
