//! A policy's own credentials (`spec.images[].credentials`, `spec.source.credentials`;
//! does I/O: reads Secrets through a [`SecretSource`] and files).
//!
//! In cluster mode a policy names a Secret, always looked up in the policy's own
//! namespace (the API has no namespace field, and a name is a DNS label, so no other
//! namespace's Secret can be named); a `file` is refused, since the controller's files
//! are not a policy's to read. Standalone, a policy names a file; a `secret` is refused
//! (there is no cluster). Both are read afresh on every reconcile: a rotated Secret or
//! file applies at the next reconcile, without a restart.
//!
//! * Registries: a `kubernetes.io/dockerconfigjson` Secret (or `dockercfg`) or a Docker
//!   `config.json` file. A Secret may hold logins and identity tokens only: a
//!   `credHelpers`/`credsStore` entry would make the controller run a program a
//!   namespace chose. Its logins win over the controller's for the hosts it names.
//! * Git: a Secret holding an SSH key (`kubernetes.io/ssh-auth`, `ssh-privatekey`), a
//!   login (`kubernetes.io/basic-auth`, `username`/`password`) or a `token` (sent as
//!   `x-access-token`, as GitHub and most forges take tokens); or a file holding an SSH
//!   private key or a token. It replaces the controller's git credentials for that
//!   policy. A login or token is given only over HTTPS (plain HTTP to a loopback
//!   host), and only to the policy's own remote.
//!
//! No error and no `Debug` output holds a secret value.

pub mod kube;
mod resolvers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use crate::policy::Policy;
use crate::policy::v1alpha1::CredentialsRef;
use crate::registry::Credentials;
use crate::repo::Auth;

pub use resolvers::OwnResolvers;

/// Reads Secrets (the in-cluster controller has one: [`kube::KubeSecrets`]).
pub trait SecretSource: Send + Sync {
    /// The Secret `name` in `namespace`; `Ok(None)` when there is none.
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretData>, SecretReadError>>;
}

/// A Secret's type and data (decoded); `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData {
    /// `type` (`kubernetes.io/dockerconfigjson`, `Opaque`, ...).
    pub kind: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("kind", &self.kind)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a Secret could not be read (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretReadError {
    pub detail: String,
    /// An unreachable API server may come back; a refusal (RBAC) needs a person.
    pub retryable: bool,
}

/// A policy's credentials that cannot be used; names the field, the Secret or file,
/// and what is wrong, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "{field}: `secret` needs cluster mode (run --kubernetes); standalone, name a file (`file: PATH`)"
    )]
    SecretOutsideCluster { field: String },
    #[error(
        "{field}: `file` is refused in cluster mode (the controller's files are not a policy's to read); name a Secret in the policy's namespace (`secret: NAME`)"
    )]
    FileInCluster { field: String },
    #[error(
        "{field}: Secret {namespace}/{name} not found (it is looked up in the policy's namespace only)"
    )]
    NotFound {
        field: String,
        namespace: String,
        name: String,
    },
    #[error("{field}: reading Secret {namespace}/{name}: {detail}")]
    Read {
        field: String,
        namespace: String,
        name: String,
        detail: String,
        retryable: bool,
    },
    #[error("{field}: {origin}: {detail}")]
    Unusable {
        field: String,
        /// `Secret NS/NAME` or `file PATH`.
        origin: String,
        detail: String,
    },
}

impl CredentialsError {
    /// Whether a later reconcile may succeed without anyone changing anything.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Read {
                retryable: true,
                ..
            }
        )
    }

    /// The variant, for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::SecretOutsideCluster { .. } | Self::FileInCluster { .. } => "credentials_mode",
            Self::NotFound { .. } => "credentials_not_found",
            Self::Read { .. } => "credentials_read",
            Self::Unusable { .. } => "credentials_unusable",
        }
    }
}

/// What a policy brings of its own; `None`: the controller's.
#[derive(Debug, Default)]
pub struct PolicyCredentials {
    /// Registry logins, by host (to merge over the controller's).
    pub registry: Option<Credentials>,
    /// Git credentials for the policy's remote.
    pub git: Option<Auth>,
}

/// Reads `policy`'s own credentials: with `secrets` (cluster mode) from Secrets in
/// its namespace, without from files.
pub async fn for_policy(
    policy: &Policy,
    secrets: Option<&dyn SecretSource>,
) -> Result<PolicyCredentials, CredentialsError> {
    let reader = Reader {
        namespace: policy.metadata.namespace.as_ref().map(ToString::to_string),
        secrets,
    };
    let mut own = PolicyCredentials::default();
    for (i, image) in policy.spec.images.iter().enumerate() {
        let Some(reference) = &image.credentials else {
            continue;
        };
        let field = format!("spec.images[{i}].credentials");
        let found = reader.registry(&field, reference).await?;
        own.registry = Some(match own.registry.take() {
            Some(earlier) => earlier.merge(found),
            None => found,
        });
    }
    if let Some(reference) = &policy.spec.source.credentials {
        let field = "spec.source.credentials".to_owned();
        let url = policy.spec.source.repo.as_str();
        own.git = Some(reader.git(&field, reference, url).await?);
    }
    Ok(own)
}

/// Where the secrets of one policy come from.
struct Reader<'a> {
    namespace: Option<String>,
    secrets: Option<&'a dyn SecretSource>,
}

/// A Secret or a file, read.
enum Found {
    Secret { origin: String, data: SecretData },
    File { path: PathBuf, bytes: Vec<u8> },
}

/// The most read from a credentials file (a Docker config or an SSH key is a few KiB).
const FILE_LIMIT: u64 = 1 << 20;

impl Reader<'_> {
    async fn read(
        &self,
        field: &str,
        reference: &CredentialsRef,
    ) -> Result<Found, CredentialsError> {
        match (reference, self.secrets) {
            (CredentialsRef::Secret(_), None) => Err(CredentialsError::SecretOutsideCluster {
                field: field.to_owned(),
            }),
            (CredentialsRef::File(_), Some(_)) => Err(CredentialsError::FileInCluster {
                field: field.to_owned(),
            }),
            (CredentialsRef::Secret(name), Some(secrets)) => {
                let name = name.to_string();
                let Some(namespace) = self.namespace.clone() else {
                    return Err(CredentialsError::Unusable {
                        field: field.to_owned(),
                        origin: format!("Secret {name}"),
                        detail: "the policy has no namespace to look it up in".into(),
                    });
                };
                match secrets.get(&namespace, &name).await {
                    Ok(Some(data)) => Ok(Found::Secret {
                        origin: format!("Secret {namespace}/{name}"),
                        data,
                    }),
                    Ok(None) => Err(CredentialsError::NotFound {
                        field: field.to_owned(),
                        namespace,
                        name,
                    }),
                    Err(e) => Err(CredentialsError::Read {
                        field: field.to_owned(),
                        namespace,
                        name,
                        detail: e.detail,
                        retryable: e.retryable,
                    }),
                }
            }
            (CredentialsRef::File(path), None) => {
                let path = PathBuf::from(path);
                let bytes =
                    read_file(&path)
                        .await
                        .map_err(|detail| CredentialsError::Unusable {
                            field: field.to_owned(),
                            origin: format!("file {}", path.display()),
                            detail,
                        })?;
                Ok(Found::File { path, bytes })
            }
        }
    }

    async fn registry(
        &self,
        field: &str,
        reference: &CredentialsRef,
    ) -> Result<Credentials, CredentialsError> {
        let unusable = |origin: &str, detail: String| CredentialsError::Unusable {
            field: field.to_owned(),
            origin: origin.to_owned(),
            detail,
        };
        match self.read(field, reference).await? {
            Found::Secret { origin, data } => {
                let key = match data.kind.as_str() {
                    "kubernetes.io/dockerconfigjson" => ".dockerconfigjson",
                    "kubernetes.io/dockercfg" => ".dockercfg",
                    other => {
                        return Err(unusable(
                            &origin,
                            format!(
                                "is of type {other:?}; registry credentials need a \
                                 kubernetes.io/dockerconfigjson Secret \
                                 (kubectl create secret docker-registry)"
                            ),
                        ));
                    }
                };
                let bytes = data
                    .data
                    .get(key)
                    .ok_or_else(|| unusable(&origin, format!("has no key {key}")))?;
                let credentials = Credentials::from_dockerconfigjson_secret(bytes)
                    .map_err(|e| unusable(&origin, e.to_string()))?;
                if credentials.uses_helpers() {
                    return Err(unusable(
                        &origin,
                        "names credential helpers (credHelpers, credsStore); a policy's \
                         Secret may hold logins and identity tokens only"
                            .into(),
                    ));
                }
                Ok(credentials)
            }
            Found::File { path, bytes } => {
                let origin = format!("file {}", path.display());
                Credentials::from_docker_config(&bytes)
                    .map_err(|e| unusable(&origin, e.to_string()))
            }
        }
    }

    async fn git(
        &self,
        field: &str,
        reference: &CredentialsRef,
        url: &str,
    ) -> Result<Auth, CredentialsError> {
        let unusable = |origin: &str, detail: String| CredentialsError::Unusable {
            field: field.to_owned(),
            origin: origin.to_owned(),
            detail,
        };
        let text = |origin: &str, bytes: &[u8], key: &str| {
            String::from_utf8(bytes.to_vec())
                .map(|s| s.trim().to_owned())
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| unusable(origin, format!("{key} is empty or not UTF-8")))
        };
        let (origin, auth) = match self.read(field, reference).await? {
            Found::Secret { origin, data } => {
                let get = |key: &str| data.data.get(key).map(Vec::as_slice);
                let auth = if let Some(key) = get("ssh-privatekey") {
                    Auth::SshKeyData {
                        username: get("username")
                            .map(|u| text(&origin, u, "username"))
                            .transpose()?,
                        private_key: text(&origin, key, "ssh-privatekey")?,
                        passphrase: get("passphrase")
                            .map(|p| text(&origin, p, "passphrase"))
                            .transpose()?,
                    }
                } else if let (Some(user), Some(password)) = (get("username"), get("password")) {
                    Auth::UserPass {
                        username: text(&origin, user, "username")?,
                        password: text(&origin, password, "password")?,
                    }
                } else if let Some(token) = get("token") {
                    Auth::github_token(text(&origin, token, "token")?)
                } else {
                    return Err(unusable(
                        &origin,
                        format!(
                            "holds none of ssh-privatekey, username and password, token (keys: {})",
                            data.data.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                (origin, auth)
            }
            Found::File { path, bytes } => {
                let origin = format!("file {}", path.display());
                let content = text(&origin, &bytes, "the file")?;
                let auth = if content.starts_with("-----BEGIN") {
                    Auth::SshKey {
                        username: None,
                        private_key: path,
                        public_key: None,
                        passphrase: None,
                    }
                } else {
                    Auth::github_token(content)
                };
                (origin, auth)
            }
        };
        if matches!(auth, Auth::UserPass { .. }) && !login_may_go_to(url) {
            return Err(unusable(
                &origin,
                format!(
                    "a login or token goes only over HTTPS (or plain HTTP to a loopback host), not to {}",
                    crate::repo::redact_url(url)
                ),
            ));
        }
        Ok(auth)
    }
}

/// Whether a login may be sent to `url`: HTTPS, or plain HTTP to a loopback host.
fn login_may_go_to(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        _ => false,
    }
}

/// A regular file of at most [`FILE_LIMIT`] bytes.
async fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().await.map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(format!("larger than {FILE_LIMIT} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_go_over_https_or_to_loopback_only() {
        for (url, ok) in [
            ("https://github.com/a/b.git", true),
            ("http://127.0.0.1:8080/a/b.git", true),
            ("http://localhost/a.git", true),
            ("http://git.example.com/a/b.git", false),
            ("ssh://git@github.com/a/b.git", false),
            ("git@github.com:a/b.git", false),
        ] {
            assert_eq!(login_may_go_to(url), ok, "{url}");
        }
    }

    /// Secrets in memory, by namespace and name.
    struct Secrets(BTreeMap<(String, String), SecretData>);

    impl SecretSource for Secrets {
        fn get<'a>(
            &'a self,
            namespace: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<SecretData>, SecretReadError>> {
            let found = self
                .0
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned();
            Box::pin(async move { Ok(found) })
        }
    }

    /// `secrets` in the namespace `team-a`.
    fn in_team_a(secrets: Vec<(&str, SecretData)>) -> Secrets {
        Secrets(
            secrets
                .into_iter()
                .map(|(name, data)| (("team-a".to_owned(), name.to_owned()), data))
                .collect(),
        )
    }

    fn secret(kind: &str, data: &[(&str, &str)]) -> SecretData {
        SecretData {
            kind: kind.to_owned(),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// A policy in `team-a` with `images[0].credentials` and `source.credentials` as
    /// given (YAML flow mappings), its repository at `repo`.
    fn policy(image: &str, source: &str, repo: &str) -> Policy {
        let text = format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: app, namespace: team-a}}\nspec:\n  images:\n    - name: ghcr.io/team/app\n      tags: {{semver: {{}}}}\n{image}  source:\n    repo: {repo}\n{source}  directPush: {{}}\n"
        );
        let (mut policies, diagnostics) = crate::policy::load_str(Path::new("app.yaml"), &text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}\n{text}");
        policies.remove(0)
    }

    fn with_secret(name: &str) -> String {
        format!("    credentials: {{secret: {name}}}\n")
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn secrets_by_kind_and_what_is_refused() {
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let docker = format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#,
            b64("team:pw")
        );
        let helpers = r#"{"credHelpers":{"ghcr.io":"ecr-login"}}"#;
        let key =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----";
        let store = in_team_a(vec![
            (
                "pull",
                secret(
                    "kubernetes.io/dockerconfigjson",
                    &[(".dockerconfigjson", &docker)],
                ),
            ),
            (
                "helpers",
                secret(
                    "kubernetes.io/dockerconfigjson",
                    &[(".dockerconfigjson", helpers)],
                ),
            ),
            (
                "opaque",
                secret("Opaque", &[(".dockerconfigjson", &docker)]),
            ),
            (
                "ssh",
                secret("kubernetes.io/ssh-auth", &[("ssh-privatekey", key)]),
            ),
            (
                "login",
                secret(
                    "kubernetes.io/basic-auth",
                    &[("username", "u"), ("password", "p")],
                ),
            ),
            ("token", secret("Opaque", &[("token", "ghp_x\n")])),
            ("odd", secret("Opaque", &[("cert.pem", "x")])),
        ]);
        let https = "https://github.com/team/infra.git";
        let read = |image: &str, source: &str, repo: &str| {
            run(for_policy(&policy(image, source, repo), Some(&store)))
        };
        let own = read(&format!("  {}", with_secret("pull")), "", https).unwrap();
        let login = own.registry.unwrap().lookup("ghcr.io").cloned().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("team", "pw")
        );
        assert!(own.git.is_none());
        for (name, want) in [
            ("ssh", "SshKeyData"),
            ("login", "UserPass { username: \"u\""),
            ("token", "UserPass { username: \"x-access-token\""),
        ] {
            let own = read("", &with_secret(name), https).unwrap();
            let shown = format!("{:?}", own.git.unwrap());
            assert!(shown.starts_with(want), "{name}: {shown}");
            assert!(
                !shown.contains("ghp_x") && !shown.contains("b3Blbn"),
                "{shown}"
            );
        }
    }

    #[test]
    fn what_a_policy_cannot_use() {
        let docker = r#"{"auths":{"ghcr.io":{"username":"team","password":"pw"}}}"#;
        let helpers = r#"{"credHelpers":{"ghcr.io":"ecr-login"}}"#;
        let store = in_team_a(vec![
            (
                "helpers",
                secret(
                    "kubernetes.io/dockerconfigjson",
                    &[(".dockerconfigjson", helpers)],
                ),
            ),
            ("opaque", secret("Opaque", &[(".dockerconfigjson", docker)])),
            ("token", secret("Opaque", &[("token", "ghp_x\n")])),
            ("odd", secret("Opaque", &[("cert.pem", "x")])),
        ]);
        let https = "https://github.com/team/infra.git";
        let error = |image: &str, source: &str, repo: &str| {
            run(for_policy(&policy(image, source, repo), Some(&store)))
                .unwrap_err()
                .to_string()
        };
        let cases = [
            (
                format!("  {}", with_secret("helpers")),
                String::new(),
                https,
                "names credential helpers",
            ),
            (
                format!("  {}", with_secret("opaque")),
                String::new(),
                https,
                "is of type \"Opaque\"",
            ),
            (
                String::new(),
                with_secret("odd"),
                https,
                "holds none of ssh-privatekey",
            ),
            (
                String::new(),
                with_secret("missing"),
                https,
                "Secret team-a/missing not found",
            ),
            (
                String::new(),
                with_secret("token"),
                "http://git.example.com/team/infra.git",
                "only over HTTPS",
            ),
            (
                String::new(),
                "    credentials: {file: /etc/passwd}\n".into(),
                https,
                "`file` is refused in cluster mode",
            ),
        ];
        for (image, source, repo, says) in cases {
            let text = error(&image, &source, repo);
            assert!(text.contains(says), "{text}");
            assert!(!text.contains("ghp_x") && !text.contains("pw\""), "{text}");
        }
        // Standalone: no Secrets; files instead.
        let text = run(for_policy(&policy("", &with_secret("token"), https), None))
            .unwrap_err()
            .to_string();
        assert!(text.contains("`secret` needs cluster mode"), "{text}");
    }

    #[test]
    fn files_standalone() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            r#"{"auths":{"ghcr.io":{"username":"team","password":"pw"}}}"#,
        )
        .unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "ghp_from_file\n").unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n").unwrap();
        let file = |path: &Path| format!("    credentials: {{file: {}}}\n", path.display());
        let https = "https://github.com/team/infra.git";
        let own = run(for_policy(
            &policy(&format!("  {}", file(&config)), &file(&token), https),
            None,
        ))
        .unwrap();
        assert_eq!(
            own.registry.unwrap().lookup("ghcr.io").unwrap().username,
            "team"
        );
        assert_eq!(own.git, Some(Auth::github_token("ghp_from_file")));
        let own = run(for_policy(
            &policy("", &file(&key), "ssh://git@github.com/team/infra.git"),
            None,
        ))
        .unwrap();
        assert!(
            matches!(own.git, Some(Auth::SshKey { ref private_key, .. }) if *private_key == key)
        );
        let missing = dir.path().join("nope");
        let text = run(for_policy(&policy("", &file(&missing), https), None))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("spec.source.credentials: file") && text.contains("nope"),
            "{text}"
        );
    }

    #[test]
    fn debug_shows_keys_not_values() {
        let data = SecretData {
            kind: "Opaque".into(),
            data: BTreeMap::from([("token".to_owned(), b"s3cr3t".to_vec())]),
        };
        let shown = format!("{data:?}");
        assert!(
            shown.contains("token") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
