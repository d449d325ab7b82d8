//! Registry auth and TLS fixtures: a test PKI (CA, server certificates), a bearer-token
//! issuer that signs ES256 JWTs the way distribution's `auth.token` expects them, a
//! `docker-registry` configured for token auth or for TLS, and a minimal image pusher
//! that works against either (support's `Registry` only speaks plain HTTP + basic auth).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use autobump::clock::{Clock, SystemClock};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use reqwest::{Method, header};
use serde_json::json;

use super::image::{gzip_stored, sha256_digest, tar_with_file};
use super::process::{ServerProcess, ServerSpec, arg, find_binary};
use super::scripted::Served;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A CA and what it signs, written as PEM files into a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_pem: String,
}

impl TestPki {
    #[must_use]
    pub fn new() -> Self {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "autobump test CA");
        let ca_pem = ca_params
            .self_signed(&ca_key)
            .expect("CA certificate")
            .pem();
        let dir = tempfile::Builder::new()
            .prefix("autobump-test-pki-")
            .tempdir()
            .expect("temporary directory for the test PKI");
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("writing ca.pem");
        Self {
            dir,
            ca_key,
            ca_params,
            ca_pem,
        }
    }

    /// The CA certificate (PEM file), for a client's CA bundle.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by the CA;
    /// returns the (certificate, key) PEM file paths.
    #[must_use]
    pub fn server_cert(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "autobump test server");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let cert_path = self.dir.path().join("server.pem");
        let key_path = self.dir.path().join("server-key.pem");
        std::fs::write(&cert_path, cert.pem()).expect("writing server.pem");
        std::fs::write(&key_path, key.serialize_pem()).expect("writing server-key.pem");
        (cert_path, key_path)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Signs registry tokens: an ES256 key with a self-signed certificate that the
/// registry trusts (`rootcertbundle`); each JWT carries it in its `x5c` header.
pub struct JwtSigner {
    key: ring::signature::EcdsaKeyPair,
    cert_der_b64: String,
    cert_pem: String,
}

impl JwtSigner {
    #[must_use]
    pub fn new() -> Self {
        let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("signing key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("signing cert params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "autobump test token signer");
        let cert = params.self_signed(&key_pair).expect("signing certificate");
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("loading the signing key into ring");
        Self {
            key,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            cert_pem: cert.pem(),
        }
    }

    /// The certificate the registry must trust.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A compact JWS of `claims`.
    #[must_use]
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .expect("ES256 signing");
        format!("{signing_input}.{}", b64url(signature.as_ref()))
    }
}

impl Default for JwtSigner {
    fn default() -> Self {
        Self::new()
    }
}

pub const TOKEN_SERVICE: &str = "autobump-test-registry";
pub const TOKEN_ISSUER: &str = "autobump-test-issuer";

struct IssuerState {
    signer: JwtSigner,
    user: String,
    password: String,
    expires_in: AtomicU32,
    hits: AtomicUsize,
    refused: AtomicUsize,
    scopes: std::sync::Mutex<Vec<String>>,
    /// Passwords `PREFIX<unix time>` are accepted until that time.
    expiring_prefix: std::sync::Mutex<Option<String>>,
    /// Identity (refresh) tokens accepted by the `OAuth2` grant.
    refresh_tokens: std::sync::Mutex<Vec<String>>,
    refresh_grants: AtomicUsize,
}

/// An HTTP token endpoint on 127.0.0.1 (`GET /token?service=..&scope=..`): checks the
/// basic login and issues a JWT granting the requested scopes. Counts its hits.
/// `POST /token` is the `OAuth2` refresh-token grant of distribution's token spec
/// (docs/spec/auth/oauth.md: form fields `grant_type=refresh_token`, `service`,
/// `client_id`, `scope` space-separated, `refresh_token`; answer `access_token`,
/// `expires_in`; an unknown refresh token is a 401).
pub struct TokenIssuer {
    state: Arc<IssuerState>,
    served: Served,
}

impl TokenIssuer {
    pub async fn start(user: &str, password: &str) -> Self {
        let state = Arc::new(IssuerState {
            signer: JwtSigner::new(),
            user: user.to_owned(),
            password: password.to_owned(),
            expires_in: AtomicU32::new(300),
            hits: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            scopes: std::sync::Mutex::default(),
            expiring_prefix: std::sync::Mutex::default(),
            refresh_tokens: std::sync::Mutex::default(),
            refresh_grants: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/token", get(issue).post(refresh_grant))
            .with_state(Arc::clone(&state));
        let served = Served::start(router).await;
        Self { state, served }
    }

    /// `http://127.0.0.1:PORT/token`
    #[must_use]
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.served.addr())
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }

    /// Token requests answered (with a token or a refusal).
    #[must_use]
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Token requests refused for a bad or missing login.
    #[must_use]
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Every `scope` parameter received, in order.
    #[must_use]
    pub fn scopes(&self) -> Vec<String> {
        self.state
            .scopes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The `expires_in` of the tokens issued from now on (the JWT's `exp` stays 5
    /// minutes, so an early refresh is the client's own decision).
    pub fn set_expires_in(&self, seconds: u32) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// Also accepts the password `{prefix}{unix time}` (as a credential helper for a
    /// cloud registry hands out: ECR's are good for 12 hours) until that time.
    pub fn accept_expiring_passwords(&self, prefix: &str) {
        *lock(&self.state.expiring_prefix) = Some(prefix.to_owned());
    }

    /// Accepts `token` in the refresh-token grant.
    pub fn accept_refresh_token(&self, token: &str) {
        lock(&self.state.refresh_tokens).push(token.to_owned());
    }

    /// Refresh-token grants answered (with a token or a refusal); they count in
    /// [`hits`](Self::hits) too.
    #[must_use]
    pub fn refresh_grants(&self) -> usize {
        self.state.refresh_grants.load(Ordering::SeqCst)
    }

    /// The certificate the registry must trust for these tokens.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        self.state.signer.cert_pem()
    }

    /// Issues a token directly (for pushing test images).
    #[must_use]
    pub fn token_for(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        mint(&self.state, &scopes)
    }
}

fn mint(state: &IssuerState, scopes: &[String]) -> String {
    let access: Vec<_> = scopes
        .iter()
        .filter_map(|scope| {
            // type:name:actions, where the name may itself contain ':' (never here).
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let now = SystemClock.now().timestamp();
    state.signer.sign(&json!({
        "iss": TOKEN_ISSUER,
        "sub": state.user,
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{:016x}", fastrand::u64(..)),
        "access": access,
    }))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `password` is the issuer's, or an unexpired `PREFIX<unix time>` one.
fn password_ok(state: &IssuerState, password: &str) -> bool {
    if password == state.password {
        return true;
    }
    let prefix = lock(&state.expiring_prefix).clone();
    prefix
        .and_then(|prefix| password.strip_prefix(&prefix)?.parse::<i64>().ok())
        .is_some_and(|until| SystemClock.now().timestamp() < until)
}

async fn issue(State(state): State<Arc<IssuerState>>, headers: HeaderMap, uri: Uri) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let login = headers
        .get(header::AUTHORIZATION.as_str())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let authorized = login
        .as_deref()
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(user, password)| user == state.user && password_ok(&state, password));
    if !authorized {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "bad or missing login").into_response();
    }
    let mut service = None;
    let mut scopes = Vec::new();
    for (name, value) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "service" => service = Some(value.into_owned()),
            "scope" => scopes.push(value.into_owned()),
            _ => {}
        }
    }
    if service.as_deref() != Some(TOKEN_SERVICE) {
        return (
            StatusCode::BAD_REQUEST,
            format!("unknown service {service:?}"),
        )
            .into_response();
    }
    state
        .scopes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(scopes.iter().cloned());
    let token = mint(&state, &scopes);
    axum::Json(json!({
        "token": token,
        "access_token": token,
        "expires_in": state.expires_in.load(Ordering::SeqCst),
    }))
    .into_response()
}

async fn refresh_grant(State(state): State<Arc<IssuerState>>, body: String) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.refresh_grants.fetch_add(1, Ordering::SeqCst);
    let mut fields = std::collections::HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body.as_bytes()) {
        fields.insert(name.into_owned(), value.into_owned());
    }
    let field = |name: &str| fields.get(name).map(String::as_str);
    if field("grant_type") != Some("refresh_token")
        || field("client_id").is_none_or(str::is_empty)
        || field("service") != Some(TOKEN_SERVICE)
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    let known = field("refresh_token")
        .is_some_and(|t| lock(&state.refresh_tokens).iter().any(|known| known == t));
    if !known {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "unknown refresh token").into_response();
    }
    let scopes: Vec<String> = field("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    lock(&state.scopes).extend(scopes.iter().cloned());
    let token = mint(&state, &scopes);
    axum::Json(json!({
        "access_token": token,
        "expires_in": state.expires_in.load(Ordering::SeqCst),
        "scope": scopes.join(" "),
    }))
    .into_response()
}

/// A `docker-registry` whose `auth.token` trusts `issuer`.
pub async fn start_token_registry(issuer: &TokenIssuer) -> ServerProcess {
    let realm = issuer.realm();
    let cert = issuer.cert_pem().to_owned();
    start_registry_process(
        "docker-registry-token",
        &[200, 401],
        |dir, _port, config| {
            let bundle = dir.join("token-signer.pem");
            std::fs::write(&bundle, &cert).expect("writing the token signer's certificate");
            write!(
                config,
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
             issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                bundle.display()
            )
            .expect("writing to a String");
        },
    )
    .await
}

/// A `docker-registry` serving HTTPS with a certificate for 127.0.0.1 from `pki`.
/// (Readiness is probed with plain HTTP, which a Go TLS server answers with 400.)
pub async fn start_tls_registry(pki: &TestPki) -> ServerProcess {
    let (cert, key) = pki.server_cert(&["127.0.0.1", "localhost"]);
    start_registry_process("docker-registry-tls", &[400], |_, _, config| {
        write!(
            config,
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        )
        .expect("writing to a String");
    })
    .await
}

/// Starts `docker-registry` with the base config; `extra` appends to it (right after
/// the `http:` section, so it may add `  tls:` keys or top-level sections).
async fn start_registry_process(
    name: &'static str,
    ready_statuses: &'static [u16],
    mut extra: impl FnMut(&Path, u16, &mut String),
) -> ServerProcess {
    let spec = ServerSpec {
        name,
        binary: find_binary("docker-registry", "docker-registry"),
        ready_path: "/v2/",
        ready_statuses,
    };
    ServerProcess::start(&spec, |dir, port| {
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: autobump-test-secret\n",
            data = dir.join("data").display(),
        );
        extra(dir, port, &mut config);
        let path = dir.join("config.yml");
        std::fs::write(&path, config).expect("writing the registry config");
        vec![arg("serve"), arg(path)]
    })
    .await
}

/// Pushes a one-layer linux/amd64 OCI image as `repo:tag` to the registry at
/// `base_url` with `client`, sending `authorization` (e.g. `Bearer …`) if given;
/// returns the manifest digest.
pub async fn push_small_image(
    client: &reqwest::Client,
    base_url: &str,
    authorization: Option<&str>,
    repo: &str,
    tag: &str,
    created: &str,
) -> String {
    let tar = tar_with_file("autobump.txt", format!("{repo}:{tag}\n").as_bytes());
    let diff_id = sha256_digest(&tar);
    let layer = gzip_stored(&tar);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
    }))
    .expect("config JSON");
    let config_size = config.len();
    let layer_size = layer.len();
    let config_digest = upload(client, base_url, authorization, repo, config).await;
    let layer_digest = upload(client, base_url, authorization, repo, layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_size,
        }],
    }))
    .expect("manifest JSON");
    let digest = sha256_digest(&manifest);
    let response = with_auth(
        client.request(Method::PUT, format!("{base_url}/v2/{repo}/manifests/{tag}")),
        authorization,
    )
    .header(
        header::CONTENT_TYPE,
        "application/vnd.oci.image.manifest.v1+json",
    )
    .body(manifest)
    .send()
    .await
    .expect("PUT manifest");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::CREATED,
        "PUT manifest {repo}:{tag}: {}",
        response.text().await.unwrap_or_default()
    );
    digest
}

fn with_auth(
    builder: reqwest::RequestBuilder,
    authorization: Option<&str>,
) -> reqwest::RequestBuilder {
    match authorization {
        Some(value) => builder.header(header::AUTHORIZATION, value),
        None => builder,
    }
}

async fn upload(
    client: &reqwest::Client,
    base_url: &str,
    authorization: Option<&str>,
    repo: &str,
    bytes: Vec<u8>,
) -> String {
    let digest = sha256_digest(&bytes);
    let start = with_auth(
        client.post(format!("{base_url}/v2/{repo}/blobs/uploads/")),
        authorization,
    )
    .send()
    .await
    .expect("starting a blob upload");
    let status = start.status();
    let location = start
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(location) = location.filter(|_| status == reqwest::StatusCode::ACCEPTED) else {
        panic!(
            "POST /v2/{repo}/blobs/uploads/ answered {status}: {}",
            start.text().await.unwrap_or_default()
        );
    };
    let location = if location.starts_with('/') {
        format!("{base_url}{location}")
    } else {
        location
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = with_auth(
        client.put(format!("{location}{separator}digest={digest}")),
        authorization,
    )
    .header(header::CONTENT_TYPE, "application/octet-stream")
    .body(bytes)
    .send()
    .await
    .expect("finishing a blob upload");
    assert_eq!(
        put.status(),
        reqwest::StatusCode::CREATED,
        "PUT blob {digest}: {}",
        put.text().await.unwrap_or_default()
    );
    digest
}
