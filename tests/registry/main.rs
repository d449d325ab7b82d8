//! The registry client against real servers: Debian's `docker-registry` (plain, with
//! htpasswd basic auth, with `auth.token` and a token issuer run here, with TLS from a
//! test CA) and small in-process servers that page, throttle, fail and stall on cue.
//! If `docker-registry` is missing, run `scripts/setup`.

#[path = "../support/mod.rs"]
mod support;

mod credentials;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autobump::clock::{Clock, ManualClock, Stopwatch, SystemClock};
use autobump::core::reference::ImageRef;
use autobump::registry::{
    Credentials, OCI_MANIFEST, Registry, RegistryClient, RegistryConfig, RegistryError,
    RetryPolicy, Scheme, install_crypto_provider,
};
use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;
use support::scripted::Served;
use support::token::{
    TestPki, TokenIssuer, push_small_image, start_tls_registry, start_token_registry,
};
use support::{ManifestKind, Registry as TestRegistry};

fn image(text: &str) -> ImageRef {
    ImageRef::parse(text).unwrap_or_else(|| panic!("{text} is an image reference"))
}

fn new_client(config: RegistryConfig) -> RegistryClient {
    install_crypto_provider();
    RegistryClient::new(config, Arc::new(SystemClock)).expect("building the registry client")
}

/// Fast retries for tests that exercise them.
fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
    }
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339 time")
        .with_timezone(&Utc)
}

/// 100 semver, 100 dateSha (half with a variant suffix) and 60 junk tags.
fn many_tags() -> Vec<String> {
    let mut tags = Vec::new();
    for i in 0..100 {
        tags.push(if i % 2 == 0 {
            format!("v1.{}.{}", i / 10, i % 10)
        } else {
            format!("2.{i}.0-rc.{}", i % 3)
        });
    }
    for day in 0..100 {
        let sha = format!("{:07x}", 0xabc_0000 + day * 7919);
        let date = format!("v2024{:02}{:02}", 1 + day / 28, 1 + day % 28);
        tags.push(if day % 2 == 0 {
            format!("{date}-{sha}")
        } else {
            format!("{date}-{sha}-master")
        });
    }
    for i in 0..20 {
        tags.push(format!("sha256-{:064x}.sig", i + 1));
        tags.push(format!("build_{i}"));
        tags.push(format!("junk.{i}.att"));
    }
    tags
}

#[tokio::test]
async fn lists_hundreds_of_tags_from_a_real_registry() {
    let registry = TestRegistry::start().await;
    let first = registry
        .push_image("team/app", "v0.0.1", ManifestKind::OciManifest, None)
        .await;
    let manifest = registry
        .request(Method::GET, "/v2/team/app/manifests/v0.0.1")
        .header(reqwest::header::ACCEPT, OCI_MANIFEST)
        .send()
        .await
        .expect("GET manifest")
        .bytes()
        .await
        .expect("manifest body")
        .to_vec();
    let tags = many_tags();
    for tag in &tags {
        registry
            .put_manifest("team/app", tag, OCI_MANIFEST, manifest.clone())
            .await;
    }
    let client = new_client(RegistryConfig::default().page_size(50));
    let watch = Stopwatch::start();
    let listed = client
        .tags(&image(&format!("{}/team/app", registry.host())))
        .await
        .expect("listing tags");
    eprintln!("listed {} tags in {:.0?}", listed.len(), watch.elapsed());
    let mut want: BTreeSet<String> = tags.iter().cloned().collect();
    want.insert("v0.0.1".into());
    assert_eq!(listed.len(), 261);
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), want);
    // The Debian registry ignores `n` and answers in one page: one request, no more.
    assert_eq!(client.stats().snapshot().tags, 1);
    assert_eq!(client.stats().snapshot().requests(), 1);
    // Every tag resolves to the one manifest; spot-check a few kinds.
    for tag in [
        "v1.0.0",
        "v20240101-abc0000",
        "v20240102-abc1eef-master",
        "build_3",
    ] {
        let digest = client
            .digest(&image(&format!("{}/team/app", registry.host())), tag)
            .await
            .unwrap_or_else(|e| panic!("digest of {tag}: {e}"));
        assert_eq!(digest, first, "{tag}");
    }
    // `localhost:PORT/...` references work too (default scheme http).
    let port = registry
        .host()
        .rsplit_once(':')
        .expect("host:port")
        .1
        .to_owned();
    let via_localhost = client
        .tags(&image(&format!("localhost:{port}/team/app")))
        .await
        .expect("listing via localhost");
    assert_eq!(via_localhost.len(), 261);
}

#[tokio::test]
async fn digests_and_build_times_of_manifests_and_indexes() {
    let registry = TestRegistry::start().await;
    let host = registry.host();
    let app = image(&format!("{host}/app"));
    let client = new_client(RegistryConfig::default());
    for (tag, kind, created) in [
        (
            "oci",
            ManifestKind::OciManifest,
            Some("2024-01-02T03:04:05Z"),
        ),
        (
            "docker",
            ManifestKind::DockerV2,
            Some("2023-05-06T07:08:09.123456789Z"),
        ),
        ("undated", ManifestKind::OciManifest, None),
    ] {
        let pushed = registry.push_image("app", tag, kind, created).await;
        let before = client.stats().snapshot();
        assert_eq!(
            client.digest(&app, tag).await.expect("digest"),
            pushed,
            "{tag}"
        );
        let after = client.stats().snapshot();
        // One HEAD, no GET: the registry sends Docker-Content-Digest.
        assert_eq!(
            (
                after.manifest_head - before.manifest_head,
                after.manifest_get - before.manifest_get
            ),
            (1, 0)
        );
        let want = created.map(time);
        assert_eq!(
            client.created(&app, tag).await.expect("created"),
            want,
            "{tag}"
        );
    }
    for kind in [ManifestKind::OciManifest, ManifestKind::DockerV2] {
        let arm = registry
            .push_platform_image("app", kind, Some("2020-01-01T00:00:00Z"), "arm64")
            .await;
        let amd = registry
            .push_platform_image("app", kind, Some("2024-06-30T12:00:00Z"), "amd64")
            .await;
        // arm64 first: the client must pick amd64, not the first entry.
        let tag = format!("multi-{kind:?}").to_lowercase();
        let index = registry
            .push_index("app", &tag, kind, &[arm, amd.clone()])
            .await;
        let digest = client.digest(&app, &tag).await.expect("index digest");
        assert_eq!(
            digest, index,
            "{kind:?}: the index's digest, not a platform's"
        );
        assert_ne!(digest, amd.digest);
        assert_eq!(
            client.created(&app, &tag).await.expect("index created"),
            Some(time("2024-06-30T12:00:00Z")),
            "{kind:?}"
        );
    }
    // Missing tag and missing repository: permanent, named, attempted once.
    let before = client.stats().snapshot();
    let error = client.digest(&app, "nope").await.expect_err("missing tag");
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error}");
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains(&format!("{host}/app")),
        "{error}"
    );
    let error = client
        .tags(&image(&format!("{host}/missing")))
        .await
        .expect_err("missing repository");
    assert_eq!(error.metric_label(), "not_found", "{error}");
    let after = client.stats().snapshot();
    assert_eq!(after.requests() - before.requests(), 2);
    assert_eq!(after.retries, 0);
}

#[tokio::test]
async fn basic_auth_with_docker_config_credentials() {
    let registry = TestRegistry::start_with_htpasswd("robot", "s3cret:pw").await;
    let host = registry.host();
    let pushed = registry
        .push_image(
            "app",
            "v1",
            ManifestKind::OciManifest,
            Some("2024-01-01T00:00:00Z"),
        )
        .await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let config_path = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret:pw");
    let config = json!({"auths": {
        format!("http://{host}"): {"auth": auth},
        "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("hub:x")},
    }});
    std::fs::write(&config_path, config.to_string()).expect("writing config.json");
    let credentials = Credentials::from_docker_config_file(&config_path).expect("config.json");
    let app = image(&format!("{host}/app"));

    let authed = new_client(RegistryConfig::default().credentials(credentials));
    assert_eq!(
        authed.tags(&app).await.expect("tags with basic auth"),
        ["v1"]
    );
    // The first request drew the challenge; from then on basic auth goes up front.
    assert_eq!(authed.stats().snapshot().tags, 2);
    assert_eq!(authed.digest(&app, "v1").await.expect("digest"), pushed);
    assert_eq!(authed.tags(&app).await.expect("tags again"), ["v1"]);
    let stats = authed.stats().snapshot();
    assert_eq!((stats.tags, stats.manifest_head, stats.token), (3, 1, 0));

    let anonymous = new_client(RegistryConfig::default());
    let error = anonymous.tags(&app).await.expect_err("no credentials");
    assert!(
        matches!(error, RegistryError::Unauthorized { .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    let text = error.to_string();
    assert!(
        text.contains("no credentials") && text.contains(&format!("{host}/app")),
        "{text}"
    );
    assert_eq!(
        anonymous.stats().snapshot().tags,
        1,
        "no retry without credentials"
    );

    let wrong =
        new_client(RegistryConfig::default().credentials(Credentials::basic("robot", "wrong")));
    let error = wrong.tags(&app).await.expect_err("wrong password");
    assert_eq!(error.metric_label(), "unauthorized", "{error}");
    assert_eq!(
        wrong.stats().snapshot().tags,
        2,
        "one retry with the login, then stop"
    );
}

#[tokio::test]
async fn token_auth_fetches_once_and_refreshes_after_expiry() {
    let issuer = TokenIssuer::start("robot", "tok-pw").await;
    let registry = start_token_registry(&issuer).await;
    let base = registry.url();
    let push_token = issuer.token_for(&["repository:team/app:pull,push"]);
    let pushed = push_small_image(
        &support::http_client(),
        &base,
        Some(&format!("Bearer {push_token}")),
        "team/app",
        "v1.2.3",
        "2024-02-03T04:05:06Z",
    )
    .await;
    let app = image(&format!("{}/team/app", registry.host()));
    // Credentials as a kubernetes.io/dockerconfigjson secret carries them.
    let secret = json!({"auths": {registry.host(): {"username": "robot", "password": "tok-pw"}}});
    let credentials =
        Credentials::from_dockerconfigjson_secret(secret.to_string().as_bytes()).expect("secret");
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    install_crypto_provider();
    let client = RegistryClient::new(
        RegistryConfig::default().credentials(credentials),
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .expect("client");
    issuer.set_expires_in(120);

    assert_eq!(client.tags(&app).await.expect("tags"), ["v1.2.3"]);
    assert_eq!(issuer.hits(), 1);
    assert_eq!(issuer.scopes(), ["repository:team/app:pull"]);
    assert_eq!(client.digest(&app, "v1.2.3").await.expect("digest"), pushed);
    assert_eq!(
        client.created(&app, "v1.2.3").await.expect("created"),
        Some(time("2024-02-03T04:05:06Z"))
    );
    assert_eq!(client.tags(&app).await.expect("tags again"), ["v1.2.3"]);
    assert_eq!(issuer.hits(), 1, "the token is cached and reused");
    let stats = client.stats().snapshot();
    // 401 + retry, then one request per call with the cached token.
    assert_eq!((stats.tags, stats.manifest_head, stats.token), (3, 1, 1));

    clock.advance(chrono::Duration::seconds(100));
    client.tags(&app).await.expect("tags within the lifetime");
    assert_eq!(issuer.hits(), 1, "still valid at 100 s of 120 s");
    clock.advance(chrono::Duration::seconds(15));
    client.tags(&app).await.expect("tags after expiry");
    assert_eq!(
        issuer.hits(),
        2,
        "refreshed within the safety margin before expiry"
    );
    // The refreshed token goes up front: no extra 401.
    assert_eq!(client.stats().snapshot().tags, 5);

    let anonymous =
        RegistryClient::new(RegistryConfig::default(), Arc::new(SystemClock)).expect("client");
    let error = anonymous
        .tags(&app)
        .await
        .expect_err("the issuer wants a login");
    assert!(
        matches!(error, RegistryError::Unauthorized { .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("token endpoint"), "{error}");
    assert_eq!(issuer.refused(), 1);
}

/// A registry (in process) that accepts only the newest token its realm issued; the
/// test can revoke tokens.
#[tokio::test]
async fn stale_token_is_replaced_once_then_the_error_is_final() {
    #[derive(Default)]
    struct State {
        issued: AtomicUsize,
        accepted_from: AtomicUsize,
        tag_requests: AtomicUsize,
    }
    let state = Arc::new(State::default());
    let router = {
        let (s1, s2) = (Arc::clone(&state), Arc::clone(&state));
        Router::new()
            .route(
                "/token",
                get(move || async move {
                    let n = s1.issued.fetch_add(1, Ordering::SeqCst) + 1;
                    axum::Json(json!({"access_token": format!("tok-{n}")}))
                }),
            )
            .route(
                "/v2/app/tags/list",
                get(move |headers: HeaderMap| async move {
                    s2.tag_requests.fetch_add(1, Ordering::SeqCst);
                    let host = headers[header::HOST].to_str().unwrap_or_default().to_owned();
                    let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                    let accepted = sent
                        .and_then(|v| v.strip_prefix("Bearer tok-"))
                        .and_then(|n| n.parse::<usize>().ok())
                        .is_some_and(|n| n >= s2.accepted_from.load(Ordering::SeqCst));
                    if accepted {
                        axum::Json(json!({"name": "app", "tags": ["a"]})).into_response()
                    } else {
                        let challenge = format!(
                            r#"Bearer realm="http://{host}/token",service="svc",scope="repository:app:pull""#
                        );
                        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], "")
                            .into_response()
                    }
                }),
            )
    };
    let server = Served::start(router).await;
    let client = new_client(RegistryConfig::default());
    let app = image(&format!("{}/app", server.host()));
    client.tags(&app).await.expect("first call");
    assert_eq!(state.issued.load(Ordering::SeqCst), 1);
    // Revoke tok-1: the cached token draws a 401, a fresh one is fetched, one retry.
    state.accepted_from.store(2, Ordering::SeqCst);
    client.tags(&app).await.expect("after revocation");
    assert_eq!(state.issued.load(Ordering::SeqCst), 2);
    assert_eq!(state.tag_requests.load(Ordering::SeqCst), 4);
    // Now nothing is accepted: exactly one fresh token and one retry, then a final error.
    state.accepted_from.store(usize::MAX, Ordering::SeqCst);
    let error = client.tags(&app).await.expect_err("always 401");
    assert_eq!(error.metric_label(), "unauthorized", "{error}");
    assert_eq!(state.issued.load(Ordering::SeqCst), 3);
    assert_eq!(state.tag_requests.load(Ordering::SeqCst), 6);
}

/// Serves `count` tags `t00`, `t01`, … in pages of `n`, with `Link` headers that
/// alternate between relative and absolute URLs.
fn paging_router(count: usize, requests: Arc<Mutex<Vec<String>>>) -> Router {
    let all: Vec<String> = (0..count).map(|i| format!("t{i:02}")).collect();
    Router::new().route(
        "/v2/app/tags/list",
        get(move |uri: Uri, headers: HeaderMap| {
            let all = all.clone();
            let requests = Arc::clone(&requests);
            async move {
                let query = uri.query().unwrap_or_default().to_owned();
                let page_number = {
                    let mut seen = requests.lock().expect("lock");
                    seen.push(query.clone());
                    seen.len()
                };
                let mut n = 100;
                let mut last = None;
                for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                    match k.as_ref() {
                        "n" => n = v.parse().unwrap_or(100),
                        "last" => last = Some(v.into_owned()),
                        _ => {}
                    }
                }
                let start =
                    last.map_or(0, |l| all.iter().position(|t| *t == l).map_or(0, |i| i + 1));
                let page: Vec<_> = all.iter().skip(start).take(n).cloned().collect();
                let body = axum::Json(json!({"name": "app", "tags": page}));
                match page.last().filter(|_| start + n < all.len()) {
                    Some(last) => {
                        let path = format!("/v2/app/tags/list?n={n}&last={last}");
                        let target = if page_number % 2 == 0 {
                            let host = headers[header::HOST].to_str().unwrap_or_default();
                            format!("http://{host}{path}")
                        } else {
                            path
                        };
                        ([(header::LINK, format!("<{target}>; rel=\"next\""))], body)
                            .into_response()
                    }
                    None => body.into_response(),
                }
            }
        }),
    )
}

#[tokio::test]
async fn pagination_reads_every_page_and_honours_max_tags() {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let server = Served::start(paging_router(23, Arc::clone(&requests))).await;
    let app = image(&format!("{}/app", server.host()));
    let paged = new_client(RegistryConfig::default().page_size(5));
    let tags = paged.tags(&app).await.expect("all pages");
    let want: Vec<String> = (0..23).map(|i| format!("t{i:02}")).collect();
    assert_eq!(tags, want);
    assert_eq!(paged.stats().snapshot().tags, 5);
    assert_eq!(
        requests.lock().expect("lock").clone(),
        [
            "n=5",
            "n=5&last=t04",
            "n=5&last=t09",
            "n=5&last=t14",
            "n=5&last=t19"
        ]
    );

    requests.lock().expect("lock").clear();
    let bounded = new_client(RegistryConfig::default().page_size(5).max_tags(12));
    let error = bounded.tags(&app).await.expect_err("over max_tags");
    assert!(
        matches!(error, RegistryError::TooManyTags { limit: 12, .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(
        requests.lock().expect("lock").len(),
        3,
        "stops at the page that crosses the bound"
    );

    // Exactly at the bound is fine.
    let exact = new_client(RegistryConfig::default().page_size(5).max_tags(23));
    assert_eq!(exact.tags(&app).await.expect("exactly max_tags").len(), 23);
}

#[tokio::test]
async fn link_to_another_host_is_refused() {
    let router = Router::new().route(
        "/v2/app/tags/list",
        get(|| async {
            (
                [(
                    header::LINK,
                    r#"<http://127.0.0.2:9/v2/app/tags/list?last=a>; rel="next""#,
                )],
                axum::Json(json!({"name": "app", "tags": ["a"]})),
            )
        }),
    );
    let server = Served::start(router).await;
    let error = new_client(RegistryConfig::default())
        .tags(&image(&format!("{}/app", server.host())))
        .await
        .expect_err("cross-host link");
    assert_eq!(error.metric_label(), "invalid_response", "{error}");
}

/// Answers `/v2/app/tags/list` from a script of (status, Retry-After) pairs, then 200;
/// records when each request arrived.
struct Scripted {
    server: Served,
    arrivals: Arc<Mutex<Vec<Duration>>>,
}

impl Scripted {
    async fn start(script: Vec<(u16, Option<&'static str>)>) -> Self {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let watch = Stopwatch::start();
        let seen = Arc::clone(&arrivals);
        let router = Router::new().route(
            "/v2/app/tags/list",
            get(move || {
                let seen = Arc::clone(&seen);
                let script = script.clone();
                async move {
                    let index = {
                        let mut seen = seen.lock().expect("lock");
                        seen.push(watch.elapsed());
                        seen.len() - 1
                    };
                    match script.get(index) {
                        Some((status, retry_after)) => {
                            let status = StatusCode::from_u16(*status).expect("status");
                            let mut response: Response = (status, "scripted").into_response();
                            if let Some(value) = retry_after {
                                response.headers_mut().insert(
                                    header::RETRY_AFTER,
                                    value.parse().expect("header value"),
                                );
                            }
                            response
                        }
                        None => axum::Json(json!({"name": "app", "tags": ["ok"]})).into_response(),
                    }
                }
            }),
        );
        Self {
            server: Served::start(router).await,
            arrivals,
        }
    }

    fn app(&self) -> ImageRef {
        image(&format!("{}/app", self.server.host()))
    }

    fn arrivals(&self) -> Vec<Duration> {
        self.arrivals.lock().expect("lock").clone()
    }
}

#[tokio::test]
async fn too_many_requests_waits_as_told_then_succeeds() {
    let server = Scripted::start(vec![(429, Some("1"))]).await;
    let client = new_client(RegistryConfig::default().retry(quick_retries(4)));
    assert_eq!(client.tags(&server.app()).await.expect("after 429"), ["ok"]);
    let stats = client.stats().snapshot();
    assert_eq!((stats.tags, stats.retries, stats.rate_limited), (2, 1, 1));
    assert_eq!(
        stats.backoff,
        Duration::from_secs(1),
        "Retry-After: 1, not the 20 ms back-off"
    );
    let arrivals = server.arrivals();
    // Sanity only: the second request came no sooner than told.
    assert!(
        arrivals[1].saturating_sub(arrivals[0]) >= Duration::from_millis(950),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn unavailable_twice_then_success() {
    // The first 503 says `Retry-After: 1`; the second says nothing (exponential back-off).
    let server = Scripted::start(vec![(503, Some("1")), (503, None)]).await;
    let client = new_client(RegistryConfig::default().retry(quick_retries(4)));
    assert_eq!(
        client.tags(&server.app()).await.expect("after 503, 503"),
        ["ok"]
    );
    let stats = client.stats().snapshot();
    assert_eq!((stats.tags, stats.retries, stats.rate_limited), (3, 2, 0));
    // 1 s as told, plus the second retry's back-off step of [20, 40) ms.
    assert!(
        stats.backoff >= Duration::from_millis(1020) && stats.backoff < Duration::from_millis(1040),
        "{:?}",
        stats.backoff
    );
    let arrivals = server.arrivals();
    assert!(
        arrivals[1].saturating_sub(arrivals[0]) >= Duration::from_millis(950),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn retry_after_is_capped_and_attempts_are_bounded() {
    let server = Scripted::start(vec![(429, Some("3600"))]).await;
    let mut retry = quick_retries(4);
    retry.max_retry_after = Duration::from_millis(50);
    let client = new_client(RegistryConfig::default().retry(retry));
    assert_eq!(
        client.tags(&server.app()).await.expect("capped wait"),
        ["ok"]
    );
    assert_eq!(client.stats().snapshot().backoff, Duration::from_millis(50));

    let server = Scripted::start(vec![(502, None); 10]).await;
    let client = new_client(RegistryConfig::default().retry(quick_retries(3)));
    let error = client.tags(&server.app()).await.expect_err("always 502");
    assert!(
        matches!(
            error,
            RegistryError::Server {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(server.arrivals().len(), 3);
}

#[tokio::test]
async fn not_found_is_final_and_attempted_once() {
    let server = Scripted::start(vec![(404, None); 10]).await;
    let client = new_client(RegistryConfig::default().retry(quick_retries(5)));
    let error = client.tags(&server.app()).await.expect_err("404");
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error}");
    assert!(!error.is_retryable());
    let text = error.to_string();
    assert!(
        text.contains(&server.server.host()) && text.contains("/app"),
        "{text}"
    );
    assert_eq!(server.arrivals().len(), 1);
    assert_eq!(client.stats().snapshot().retries, 0);
}

#[tokio::test]
async fn every_request_has_a_timeout() {
    let router = Router::new().route(
        "/v2/app/tags/list",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }),
    );
    let server = Served::start(router).await;
    let client = new_client(
        RegistryConfig::default()
            .request_timeout(Duration::from_millis(200))
            .retry(quick_retries(2)),
    );
    let watch = Stopwatch::start();
    let error = client
        .tags(&image(&format!("{}/app", server.host())))
        .await
        .expect_err("stalled server");
    assert!(
        matches!(error, RegistryError::Timeout { attempts: 2, .. }),
        "{error}"
    );
    assert!(error.is_retryable());
    assert!(
        watch.elapsed() < Duration::from_secs(10),
        "{:?}",
        watch.elapsed()
    );
}

/// A slow tag endpoint that records how many requests were in flight at once and when
/// each arrived.
fn slow_router(
    delay: Duration,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Duration>>>,
) -> Router {
    let watch = Stopwatch::start();
    Router::new().route(
        "/v2/{repo}/tags/list",
        get(move || {
            let (in_flight, peak, arrivals) = (
                Arc::clone(&in_flight),
                Arc::clone(&peak),
                Arc::clone(&arrivals),
            );
            async move {
                arrivals.lock().expect("lock").push(watch.elapsed());
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                axum::Json(json!({"tags": ["x"]}))
            }
        }),
    )
}

#[tokio::test]
async fn concurrency_cap_and_rate_limit_are_observable() {
    let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let server = Served::start(slow_router(
        Duration::from_millis(100),
        Arc::clone(&in_flight),
        Arc::clone(&peak),
        Arc::clone(&arrivals),
    ))
    .await;
    let capped = new_client(RegistryConfig::default().max_concurrency(3));
    let calls = (0..12).map(|i| {
        let capped = capped.clone();
        let app = image(&format!("{}/app{i}", server.host()));
        tokio::spawn(async move { capped.tags(&app).await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.expect("task").expect("tags");
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "at most 3 in flight, and the cap was reached"
    );

    let server = Served::start(slow_router(
        Duration::ZERO,
        in_flight,
        peak,
        Arc::clone(&arrivals),
    ))
    .await;
    arrivals.lock().expect("lock").clear();
    let limited = new_client(RegistryConfig::default().rate_limit(20.0, 1));
    let calls = (0..10).map(|i| {
        let limited = limited.clone();
        let app = image(&format!("{}/app{i}", server.host()));
        tokio::spawn(async move { limited.tags(&app).await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.expect("task").expect("tags");
    }
    let mut times = arrivals.lock().expect("lock").clone();
    times.sort();
    // 10 requests at 20/s with no burst: at least 9 × 50 ms from first to last.
    assert!(
        times[9].saturating_sub(times[0]) >= Duration::from_millis(430),
        "{times:?}"
    );
    assert_eq!(limited.stats().snapshot().throttled, 9);
}

#[tokio::test]
async fn https_registry_with_a_custom_ca_bundle() {
    install_crypto_provider();
    let pki = TestPki::new();
    let registry = start_tls_registry(&pki).await;
    let host = registry.host();
    let base = format!("https://{host}");
    let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).expect("CA certificate");
    let push_client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .build()
        .expect("TLS push client");
    let pushed = push_small_image(
        &push_client,
        &base,
        None,
        "app",
        "v1",
        "2024-01-01T00:00:00Z",
    )
    .await;
    let app = image(&format!("{host}/app"));

    let https = RegistryConfig::default().scheme(Scheme::Https);
    let trusted = new_client(RegistryConfig::default())
        .with_registry(&host, https.clone().ca_bundle(pki.ca_file()))
        .expect("client with CA bundle");
    assert_eq!(
        trusted.digest(&app, "v1").await.expect("digest over TLS"),
        pushed
    );
    assert_eq!(trusted.tags(&app).await.expect("tags over TLS"), ["v1"]);

    let untrusted = new_client(RegistryConfig::default())
        .with_registry(&host, https.clone().retry(quick_retries(1)))
        .expect("client without CA bundle");
    let error = untrusted.tags(&app).await.expect_err("unknown issuer");
    assert_eq!(error.metric_label(), "connection", "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );

    let missing = new_client(RegistryConfig::default())
        .with_registry(&host, https.ca_bundle("/nonexistent/ca.pem"))
        .expect_err("unreadable CA bundle");
    assert_eq!(missing.metric_label(), "config", "{missing}");
}

/// A bearer-protected fake registry whose manifest `HEAD` carries no
/// `Docker-Content-Digest`: the client falls back to `GET` and hashes the body, and
/// concurrent first requests that all draw a 401 share one token.
#[tokio::test]
async fn digest_falls_back_to_get_and_concurrent_challenges_share_one_token() {
    const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
    let tokens = Arc::new(AtomicUsize::new(0));
    let (heads, gets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let router = {
        let tokens = Arc::clone(&tokens);
        let (heads, gets) = (Arc::clone(&heads), Arc::clone(&gets));
        Router::new()
            .route(
                "/token",
                get(move || async move {
                    tokens.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that every concurrent request draws its own 401 first.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    axum::Json(json!({"token": "T", "expires_in": 300}))
                }),
            )
            .route(
                "/v2/app/manifests/v1",
                get(
                    move |method: axum::http::Method, headers: HeaderMap| async move {
                        let counter = if method == axum::http::Method::HEAD {
                            &heads
                        } else {
                            &gets
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                        if headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            != Some("Bearer T")
                        {
                            let host = headers[header::HOST].to_str().unwrap_or_default();
                            let challenge =
                                format!(r#"Bearer realm="http://{host}/token",service="svc""#);
                            return (
                                StatusCode::UNAUTHORIZED,
                                [(header::WWW_AUTHENTICATE, challenge)],
                            )
                                .into_response();
                        }
                        ([(header::CONTENT_TYPE, OCI_MANIFEST)], MANIFEST).into_response()
                    },
                ),
            )
    };
    let server = Served::start(router).await;
    let client = new_client(RegistryConfig::default());
    let app = image(&format!("{}/app", server.host()));
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (client, app) = (client.clone(), app.clone());
            tokio::spawn(async move { client.digest(&app, "v1").await })
        })
        .collect();
    let want = support::image::sha256_digest(MANIFEST.as_bytes());
    for call in calls {
        assert_eq!(call.await.expect("task").expect("digest"), want);
    }
    assert_eq!(tokens.load(Ordering::SeqCst), 1, "one token for all");
    assert_eq!(
        gets.load(Ordering::SeqCst),
        6,
        "one GET per digest (no header on HEAD)"
    );
    assert!(
        heads.load(Ordering::SeqCst) <= 12,
        "at most one 401 and one retry each"
    );
    let stats = client.stats().snapshot();
    assert_eq!((stats.token, stats.manifest_get), (1, 6));
}

/// A registry that answers every tag page with the same tag and a `Link` to a `last=`
/// it never used before (what issue 14's F3 saw: `resolve` never ended). Counts the
/// requests.
fn repeating_pages_router(requests: Arc<AtomicUsize>, fresh_tags: bool) -> Router {
    Router::new().route(
        "/v2/app/tags/list",
        get(move || {
            let requests = Arc::clone(&requests);
            async move {
                let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                // Either the same tag on every page, or a new one each time.
                let tag = if fresh_tags {
                    format!("v1.0.{n}")
                } else {
                    "v1.0.0".to_owned()
                };
                (
                    [(
                        header::LINK,
                        format!("</v2/app/tags/list?n=1000&last=v1.0.0-{n}>; rel=\"next\""),
                    )],
                    axum::Json(json!({"name": "app", "tags": [tag]})),
                )
            }
        }),
    )
}

#[tokio::test]
async fn pagination_that_brings_no_new_tag_stops_and_says_so() {
    let requests = Arc::new(AtomicUsize::new(0));
    let server = Served::start(repeating_pages_router(Arc::clone(&requests), false)).await;
    let client = new_client(RegistryConfig::default());
    let error = client
        .tags(&image(&format!("{}/app", server.host())))
        .await
        .expect_err("pages that never advance");
    assert_eq!(error.metric_label(), "invalid_response", "{error}");
    let text = error.to_string();
    assert!(
        text.contains("does not advance") && text.contains("1 distinct tags in 2 pages"),
        "{text}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "the second page, bringing nothing new, is the last"
    );
}

#[tokio::test]
async fn pagination_is_capped_in_pages() {
    // Every page brings a new tag and links on: only the page cap ends it.
    let requests = Arc::new(AtomicUsize::new(0));
    let server = Served::start(repeating_pages_router(Arc::clone(&requests), true)).await;
    let client = new_client(RegistryConfig::default().max_pages(7));
    let error = client
        .tags(&image(&format!("{}/app", server.host())))
        .await
        .expect_err("endless pages");
    assert!(
        matches!(
            error,
            RegistryError::TooManyPages {
                limit: 7,
                tags: 7,
                ..
            }
        ),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("max_pages"), "{error}");
    assert_eq!(requests.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn a_retry_after_past_the_call_deadline_ends_the_call_at_once() {
    // 429 with `Retry-After: 3600` (issue 14, W4): the wait is cut to
    // max_retry_after (30 s by default), which is more than the 2 s this call has
    // left, so the call gives up now and says why.
    let server = Scripted::start(vec![(429, Some("3600")); 10]).await;
    let client = new_client(RegistryConfig::default().call_timeout(Duration::from_secs(2)));
    let error = client.tags(&server.app()).await.expect_err("rate limited");
    assert!(
        matches!(error, RegistryError::Deadline { requests: 1, .. }),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(error.metric_label(), "deadline");
    let text = error.to_string();
    assert!(
        text.contains("429 Too Many Requests with Retry-After: 3600")
            && text.contains("waiting 30s would pass the deadline"),
        "{text}"
    );
    assert_eq!(server.arrivals().len(), 1);
    assert_eq!(client.stats().snapshot().retries, 0, "no wait was started");
}

/// Sends a tag list one byte every `pace` (issue 14, W4: 1 byte/s bodies).
fn dribbling_router(pace: Duration, requests: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/v2/app/tags/list",
        get(move || {
            requests.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = br#"{"name":"app","tags":["v1.0.0","v1.1.0"]}"#.to_vec();
                let stream = futures::stream::unfold(0usize, move |i| {
                    let byte = body.get(i).copied();
                    async move {
                        tokio::time::sleep(pace).await;
                        byte.map(|b| (Ok::<_, std::io::Error>(vec![b]), i + 1))
                    }
                });
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    axum::body::Body::from_stream(stream),
                )
            }
        }),
    )
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_cut_off_and_the_error_says_how_far_it_got() {
    let requests = Arc::new(AtomicUsize::new(0));
    let server = Served::start(dribbling_router(
        Duration::from_millis(100),
        Arc::clone(&requests),
    ))
    .await;
    let app = image(&format!("{}/app", server.host()));
    // Each attempt is cut at the request timeout.
    let client = new_client(
        RegistryConfig::default()
            .request_timeout(Duration::from_millis(350))
            .retry(quick_retries(2)),
    );
    let error = client.tags(&app).await.expect_err("too slow");
    assert!(
        matches!(error, RegistryError::Timeout { attempts: 2, .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("body still arriving after 350ms") && text.contains("bytes read)"),
        "{text}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);

    // However many attempts the retry policy allows, the call deadline ends it.
    requests.store(0, Ordering::SeqCst);
    let client = new_client(
        RegistryConfig::default()
            .request_timeout(Duration::from_millis(350))
            .call_timeout(Duration::from_millis(900))
            .retry(quick_retries(100)),
    );
    let error = client.tags(&app).await.expect_err("too slow");
    assert_eq!(error.metric_label(), "deadline", "{error}");
    let sent = requests.load(Ordering::SeqCst);
    assert!((2..=4).contains(&sent), "{sent} requests: {error}");
}
