//! In-cluster mode (`autobump run --kubernetes`): the building blocks and the driver.
//!
//! * [`lease`]: leader election on a `coordination.k8s.io/v1` Lease, so two or more
//!   replicas can run and only one acts (does I/O).
//! * the state lives in the objects' status: [`crate::store::kube::KubeStore`], the
//!   [`crate::store::Store`] on the status subresource, with conflict retries, beside
//!   the standalone SQLite store (the mapping between [`crate::store::PolicyState`]
//!   and the status is a pure function pair).
//! * [`conditions`]: the `Ready`, `Held`, `Baking` and `RolledBack` status conditions
//!   computed from the state and the last reconcile's outcome (pure).
//! * [`events`]: one Kubernetes Event (`events.k8s.io/v1`) per history entry, with a
//!   name derived from the entry, so a restart republishes nothing twice (does I/O).
//! * [`driver`]: kube-runtime's `Controller` over the `Autobump` objects, acting only
//!   while leader, calling an injected [`driver::PolicyReconciler`] per object and
//!   writing conditions and Events after it (does I/O).
//! * [`reconciler`]: that reconciler, [`reconciler::ClusterReconciler`]: the same
//!   reconcile as standalone mode ([`crate::controller::reconcile`] through the
//!   standalone engine's adapters), with the object's status as the store.
//!
//! Policies are addressed as `namespace/name` ([`PolicyKey`]); a bare `name` means
//! the namespace a [`crate::store::kube::KubeStore`] handle is scoped to.
//!
//! Everything here needs tokio's multi-thread runtime: [`crate::store::kube::KubeStore`] bridges
//! the synchronous [`crate::store::Store`] trait with `block_in_place`.

pub mod conditions;
pub mod driver;
pub mod events;
pub mod lease;
pub mod reconciler;

use std::fmt;

use kube::ResourceExt as _;
use tokio::sync::watch;

use crate::policy::Autobump;

/// Which `Autobump` object a policy is: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// The namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl PolicyKey {
    /// The key of `namespace`/`name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object read from the API server (`None` without a namespace or
    /// name, which only objects never stored lack).
    #[must_use]
    pub fn of(object: &Autobump) -> Option<Self> {
        Some(Self::new(
            object.namespace()?,
            object.metadata.name.clone()?,
        ))
    }

    /// Reads `namespace/name`, or a bare `name` in `default_namespace`.
    ///
    /// # Errors
    ///
    /// A text with more than one `/` or an empty part, described.
    pub fn parse(key: &str, default_namespace: &str) -> Result<Self, String> {
        let (namespace, name) = match key.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (default_namespace, key),
        };
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(format!(
                "{key:?} is not a policy key (`namespace/name`, or `name` in namespace {default_namespace:?})"
            ));
        }
        Ok(Self::new(namespace, name))
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Waits until `shutdown` says `true`, or until its sender is gone (nobody can ask
/// for a shutdown any more, so the owner has ended: stop too).
pub async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_with_and_without_a_namespace() {
        assert_eq!(
            PolicyKey::parse("prow/hook", "default").unwrap(),
            PolicyKey::new("prow", "hook")
        );
        assert_eq!(
            PolicyKey::parse("hook", "ci").unwrap(),
            PolicyKey::new("ci", "hook")
        );
        assert_eq!(PolicyKey::new("prow", "hook").to_string(), "prow/hook");
        for bad in ["", "/hook", "prow/", "a/b/c"] {
            assert!(PolicyKey::parse(bad, "default").is_err(), "{bad}");
        }
    }
}
