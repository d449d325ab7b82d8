//! Debian's `docker-registry` (distribution v2.8) as a test server, and helpers that
//! push small images over the registry HTTP API.

use std::fmt::Write as _;

use reqwest::{Method, RequestBuilder, StatusCode, header};
use serde_json::json;

use super::image::{gzip_stored, sha256_digest, tar_with_file};
use super::process::{ServerProcess, ServerSpec, arg, find_binary};

/// How a registry test server is configured.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    htpasswd: Option<(String, String)>,
    notification_url: Option<String>,
}

impl RegistryOptions {
    /// Require HTTP basic auth for this user (a bcrypt `htpasswd` file).
    #[must_use]
    pub fn htpasswd(mut self, user: &str, password: &str) -> Self {
        self.htpasswd = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Send push/pull notifications (`notifications: endpoints:`) to `url`.
    #[must_use]
    pub fn notify(mut self, url: &str) -> Self {
        self.notification_url = Some(url.to_owned());
        self
    }

    pub async fn start(self) -> Registry {
        Registry::start_with(self).await
    }
}

/// Which manifest format [`Registry::push_image`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// `application/vnd.oci.image.manifest.v1+json` (indexes: OCI image index).
    OciManifest,
    /// `application/vnd.docker.distribution.manifest.v2+json` (indexes: manifest list).
    DockerV2,
}

impl ManifestKind {
    #[must_use]
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Self::OciManifest => "application/vnd.oci.image.manifest.v1+json",
            Self::DockerV2 => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }

    #[must_use]
    pub fn index_media_type(self) -> &'static str {
        match self {
            Self::OciManifest => "application/vnd.oci.image.index.v1+json",
            Self::DockerV2 => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    fn config_media_type(self) -> &'static str {
        match self {
            Self::OciManifest => "application/vnd.oci.image.config.v1+json",
            Self::DockerV2 => "application/vnd.docker.container.image.v1+json",
        }
    }

    fn layer_media_type(self) -> &'static str {
        match self {
            Self::OciManifest => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::DockerV2 => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// A manifest that was pushed: what an index needs to reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    pub digest: String,
    pub size: usize,
    pub media_type: &'static str,
    pub architecture: String,
}

/// A running `docker-registry`; killed when dropped.
pub struct Registry {
    process: ServerProcess,
    credentials: Option<(String, String)>,
    client: reqwest::Client,
}

impl Registry {
    /// A registry without auth.
    pub async fn start() -> Self {
        Self::start_with(RegistryOptions::default()).await
    }

    /// A registry that requires basic auth as `user`/`password` on every request.
    pub async fn start_with_htpasswd(user: &str, password: &str) -> Self {
        Self::start_with(RegistryOptions::default().htpasswd(user, password)).await
    }

    /// Start from a builder: `Registry::options().notify(url).start().await`.
    #[must_use]
    pub fn options() -> RegistryOptions {
        RegistryOptions::default()
    }

    pub async fn start_with(options: RegistryOptions) -> Self {
        let spec = ServerSpec {
            name: "docker-registry",
            binary: find_binary("docker-registry", "docker-registry"),
            ready_path: "/v2/",
            ready_statuses: &[200, 401],
        };
        let htpasswd_line = options.htpasswd.as_ref().map(|(user, password)| {
            // Cost 4 (the minimum) keeps the registry's per-request check fast.
            let hash = bcrypt::hash(password, 4).expect("bcrypt-hashing the test password");
            format!("{user}:{hash}\n")
        });
        let process = ServerProcess::start(&spec, |dir, port| {
            let mut config = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: autobump-test-secret\n",
                data = dir.join("data").display(),
            );
            if let Some(line) = &htpasswd_line {
                let path = dir.join("htpasswd");
                std::fs::write(&path, line).expect("writing htpasswd");
                write!(
                    config,
                    "auth:\n  htpasswd:\n    realm: autobump-test\n    path: {}\n",
                    path.display()
                )
                .expect("writing to a String");
            }
            if let Some(url) = &options.notification_url {
                write!(
                    config,
                    "notifications:\n  endpoints:\n    - name: autobump-test\n      \
                     url: {url}\n      timeout: 2s\n      threshold: 3\n      backoff: 500ms\n"
                )
                .expect("writing to a String");
            }
            let path = dir.join("config.yml");
            std::fs::write(&path, config).expect("writing the registry config");
            vec![arg("serve"), arg(path)]
        })
        .await;
        Self {
            process,
            credentials: options.htpasswd,
            client: super::http_client(),
        }
    }

    /// `http://127.0.0.1:PORT`
    #[must_use]
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// `127.0.0.1:PORT`, as it appears in image references.
    #[must_use]
    pub fn host(&self) -> String {
        self.process.host()
    }

    /// The basic-auth user and password, if the registry requires them.
    #[must_use]
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    #[must_use]
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// A request to `path` (`/v2/...`) or to an absolute URL, with basic auth when the
    /// registry requires it.
    pub fn request(&self, method: Method, path_or_url: &str) -> RequestBuilder {
        let url = if path_or_url.starts_with('/') {
            format!("{}{path_or_url}", self.url())
        } else {
            path_or_url.to_owned()
        };
        let builder = self.client.request(method, url);
        match &self.credentials {
            Some((user, password)) => builder.basic_auth(user, Some(password)),
            None => builder,
        }
    }

    /// Uploads a blob (POST to start the upload, then one monolithic PUT); returns its
    /// digest.
    pub async fn upload_blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        let digest = sha256_digest(&bytes);
        let start = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .expect("starting a blob upload");
        let status = start.status();
        let location = start
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(location) = location.filter(|_| status == StatusCode::ACCEPTED) else {
            panic!(
                "POST /v2/{repo}/blobs/uploads/ answered {status} ({}): {}",
                start.text().await.unwrap_or_default(),
                self.log_tail()
            );
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = self
            .request(
                Method::PUT,
                &format!("{location}{separator}digest={digest}"),
            )
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("finishing a blob upload");
        assert_eq!(
            put.status(),
            StatusCode::CREATED,
            "PUT blob {digest} to {repo}: {}",
            put.text().await.unwrap_or_default()
        );
        digest
    }

    /// PUTs a manifest under `reference` (a tag or its digest); returns its digest after
    /// checking that the registry computed the same one.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Vec<u8>,
    ) -> String {
        let digest = sha256_digest(&body);
        let response = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header(header::CONTENT_TYPE, media_type)
            .body(body)
            .send()
            .await
            .expect("putting a manifest");
        let status = response.status();
        let returned = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            status,
            StatusCode::CREATED,
            "PUT manifest {repo}:{reference} ({media_type}): {}",
            response.text().await.unwrap_or_default()
        );
        assert_eq!(
            returned.as_deref(),
            Some(digest.as_str()),
            "registry's Docker-Content-Digest for {repo}:{reference}"
        );
        digest
    }

    /// Tags `repo:to` with the OCI manifest of `repo:from` (one manifest PUT, no blobs).
    pub async fn retag(&self, repo: &str, from: &str, to: &str) {
        let accept = "application/vnd.oci.image.manifest.v1+json";
        let response = self
            .request(Method::GET, &format!("/v2/{repo}/manifests/{from}"))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .expect("reading a manifest to retag");
        assert!(
            response.status().is_success(),
            "GET {repo}:{from}: {}",
            response.status()
        );
        let body = response.bytes().await.expect("manifest body").to_vec();
        self.put_manifest(repo, to, accept, body).await;
    }

    /// Pushes a small linux/amd64 image (a config blob with `created` when given, one
    /// gzip layer holding one file) as `repo:tag`; returns the manifest digest.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        kind: ManifestKind,
        created: Option<&str>,
    ) -> String {
        self.push_manifest(repo, Some(tag), kind, created, "amd64")
            .await
            .digest
    }

    /// Pushes a small image for `architecture` by digest only (no tag), to be referenced
    /// from an index ([`Registry::push_index`]).
    pub async fn push_platform_image(
        &self,
        repo: &str,
        kind: ManifestKind,
        created: Option<&str>,
        architecture: &str,
    ) -> PushedManifest {
        self.push_manifest(repo, None, kind, created, architecture)
            .await
    }

    /// Pushes an OCI image index / Docker manifest list referencing `images` (pushed
    /// before, e.g. with [`Registry::push_platform_image`]) as `repo:tag`; returns its
    /// digest.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        kind: ManifestKind,
        images: &[PushedManifest],
    ) -> String {
        let manifests: Vec<_> = images
            .iter()
            .map(|m| {
                json!({
                    "mediaType": m.media_type,
                    "digest": m.digest,
                    "size": m.size,
                    "platform": {"architecture": m.architecture, "os": "linux"},
                })
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": kind.index_media_type(),
            "manifests": manifests,
        });
        let body = serde_json::to_vec_pretty(&index).expect("serializing an index");
        self.put_manifest(repo, tag, kind.index_media_type(), body)
            .await
    }

    async fn push_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        kind: ManifestKind,
        created: Option<&str>,
        architecture: &str,
    ) -> PushedManifest {
        // Content differs per repo/tag/arch/created, so every push has its own digests.
        let content = format!(
            "autobump test image {repo}:{} {architecture} {}\n",
            tag.unwrap_or("-"),
            created.unwrap_or("-")
        );
        let tar = tar_with_file("autobump-test.txt", content.as_bytes());
        let diff_id = sha256_digest(&tar);
        let layer = gzip_stored(&tar);
        let layer_size = layer.len();
        let layer_digest = self.upload_blob(repo, layer).await;

        let mut config = json!({
            "architecture": architecture,
            "os": "linux",
            "config": {"Labels": {"dev.autobump.test": "true"}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        if let Some(created) = created {
            config["created"] = json!(created);
        }
        let config = serde_json::to_vec(&config).expect("serializing a config");
        let config_size = config.len();
        let config_digest = self.upload_blob(repo, config).await;

        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": kind.manifest_media_type(),
            "config": {
                "mediaType": kind.config_media_type(),
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [{
                "mediaType": kind.layer_media_type(),
                "digest": layer_digest,
                "size": layer_size,
            }],
        });
        let body = serde_json::to_vec_pretty(&manifest).expect("serializing a manifest");
        let size = body.len();
        let reference = tag.map_or_else(|| sha256_digest(&body), str::to_owned);
        let digest = self
            .put_manifest(repo, &reference, kind.manifest_media_type(), body)
            .await;
        PushedManifest {
            digest,
            size,
            media_type: kind.manifest_media_type(),
            architecture: architecture.to_owned(),
        }
    }

    /// The tags of `repo` from `/v2/<repo>/tags/list` (sorted as the registry returns
    /// them; an unknown repo panics with the registry's answer).
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let response = self
            .request(Method::GET, &format!("/v2/{repo}/tags/list"))
            .send()
            .await
            .expect("listing tags");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "GET /v2/{repo}/tags/list: {text}");
        let list: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("tag list {text:?}: {e}"));
        assert_eq!(list["name"], repo, "tag list names another repo: {text}");
        list["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .map(|t| t.as_str().expect("tags are strings").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `HEAD /v2/<repo>/manifests/<reference>` with `Accept: <accept>`; returns the
    /// `Docker-Content-Digest` header, or `None` on 404.
    pub async fn head_manifest(&self, repo: &str, reference: &str, accept: &str) -> Option<String> {
        let response = self
            .request(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .expect("HEAD manifest");
        if response.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "HEAD /v2/{repo}/manifests/{reference}"
        );
        let digest = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| {
                panic!("HEAD /v2/{repo}/manifests/{reference} has no Docker-Content-Digest")
            });
        Some(digest.to_owned())
    }
}
