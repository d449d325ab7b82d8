//! [`SecretSource`] over the Kubernetes API (does I/O: `GET` a Secret).

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::{SecretData, SecretReadError, SecretSource};

/// Reads Secrets with the controller's client (RBAC: `get` on `secrets` in the
/// namespaces whose policies name their own credentials; see manifests/rbac.yaml).
#[derive(Clone)]
pub struct KubeSecrets {
    client: Client,
}

impl KubeSecrets {
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl SecretSource for KubeSecrets {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretData>, SecretReadError>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let secret = api.get_opt(name).await.map_err(|e| {
                // The API's own message (status reason and text): never the data.
                let (detail, retryable) = match &e {
                    kube::Error::Api(status) => (
                        format!("{} {}", status.code, status.message),
                        status.code >= 500 || status.code == 429,
                    ),
                    other => (crate::error_chain(other), true),
                };
                SecretReadError { detail, retryable }
            })?;
            Ok(secret.map(|secret| SecretData {
                kind: secret.type_.unwrap_or_else(|| "Opaque".to_owned()),
                data: secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(key, value)| (key, value.0))
                    .collect(),
            }))
        })
    }
}
