//! Credentials as installations have them: credential helpers (`credHelpers`,
//! `credsStore`) run as programs, and identity tokens exchanged with the `OAuth2`
//! refresh-token grant, against the real `docker-registry` behind the test token
//! service. The config shapes follow docs.docker.com/reference/cli/docker/login/
//! ("Credential stores", "Credential helpers").

use std::sync::Arc;
use std::time::Duration;

use autobump::clock::{Clock, ManualClock, SystemClock};
use autobump::registry::{
    Credentials, Registry, RegistryClient, RegistryConfig, RegistryError, install_crypto_provider,
};
use serde_json::json;

use super::image;
use super::support::cred_helper::{Behaviour, FakeHelper};
use super::support::token::{TokenIssuer, push_small_image, start_token_registry};
use super::support::{ManifestKind, Registry as TestRegistry};

/// A Docker `config.json` with `config`, read as `autobump resolve/run` read it.
fn docker_config(config: &serde_json::Value) -> Credentials {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("writing config.json");
    Credentials::from_docker_config_file(&path).expect("config.json")
}

fn client_with(
    credentials: Credentials,
    helper: &FakeHelper,
    clock: Arc<dyn Clock>,
) -> RegistryClient {
    install_crypto_provider();
    RegistryClient::new(
        RegistryConfig::default()
            .credentials(credentials)
            .helper_path(helper.path_env()),
        clock,
    )
    .expect("client")
}

/// A token-auth registry holding `team/app:v1.2.3`.
async fn token_registry(
    issuer: &TokenIssuer,
) -> (autobump::core::reference::ImageRef, String, impl Drop) {
    let registry = start_token_registry(issuer).await;
    let push_token = issuer.token_for(&["repository:team/app:pull,push"]);
    let pushed = push_small_image(
        &super::support::http_client(),
        &registry.url(),
        Some(&format!("Bearer {push_token}")),
        "team/app",
        "v1.2.3",
        "2024-02-03T04:05:06Z",
    )
    .await;
    (
        image(&format!("{}/team/app", registry.host())),
        pushed,
        registry,
    )
}

#[tokio::test]
async fn a_helper_is_asked_once_and_again_only_when_its_login_expired() {
    let issuer = TokenIssuer::start("robot", "not-this-one").await;
    issuer.accept_expiring_passwords("helper-secret-");
    issuer.set_expires_in(120);
    let (app, pushed, _registry) = token_registry(&issuer).await;
    let host = app.registry().to_owned();
    // Like ECR's helper: a password that expires (here after 2 s, not 12 h).
    let helper = FakeHelper::new(
        "fakecloud",
        &Behaviour::ExpiringPassword {
            user: "robot".into(),
            prefix: "helper-secret-".into(),
            lifetime_secs: 2,
        },
    );
    let credentials = docker_config(&json!({
        "auths": {},
        "credHelpers": {host.clone(): "fakecloud"},
    }));
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let client = client_with(credentials, &helper, Arc::clone(&clock) as Arc<dyn Clock>);

    // A poll: the tag list and the digest of the deployed tag.
    let poll = || async {
        assert_eq!(client.tags(&app).await.expect("tags"), ["v1.2.3"]);
        assert_eq!(client.digest(&app, "v1.2.3").await.expect("digest"), pushed);
    };
    poll().await;
    assert_eq!(helper.calls(), 1);
    assert_eq!(
        helper.server_urls(),
        vec![host.clone()],
        "the host on stdin"
    );
    assert_eq!(issuer.hits(), 1);
    let first = client.stats().snapshot();
    assert_eq!(first.helper_calls, 1);

    // Idle polls while the token is valid: no helper call, no token request, one
    // request per call.
    for _ in 0..5 {
        clock.advance(chrono::Duration::seconds(15));
        poll().await;
    }
    assert_eq!(helper.calls(), 1, "the helper's answer is kept");
    assert_eq!(issuer.hits(), 1, "the token is kept");
    let idle = client.stats().snapshot();
    assert_eq!(idle.requests() - first.requests(), 10, "{idle:?}");
    assert_eq!((idle.token, idle.helper_calls), (1, 1));

    // The registry token runs out (120 s) and so has the helper's password: the token
    // service refuses the kept password once, the helper is asked again, and the poll
    // goes on without an error and without a 401 from the registry.
    clock.advance(chrono::Duration::seconds(45));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    poll().await;
    assert_eq!(helper.calls(), 2);
    assert_eq!((issuer.hits(), issuer.refused()), (3, 1));
    let after = client.stats().snapshot();
    assert_eq!(after.tags - idle.tags, 1, "the fresh token went up front");
    assert_eq!(after.token - idle.token, 2);
}

#[tokio::test]
async fn identity_tokens_use_the_refresh_token_grant() {
    let issuer = TokenIssuer::start("robot", "unused").await;
    issuer.accept_refresh_token("refresh-0f3c9a");
    let (app, _pushed, _registry) = token_registry(&issuer).await;
    let host = app.registry().to_owned();
    let helper = FakeHelper::new("acr", &Behaviour::IdentityToken("refresh-0f3c9a".into()));

    // From config.json, as `az acr login` leaves it: `identitytoken`, empty auth.
    let from_config = client_with(
        docker_config(
            &json!({"auths": {host.clone(): {"auth": "", "identitytoken": "refresh-0f3c9a"}}}),
        ),
        &helper,
        Arc::new(SystemClock),
    );
    assert_eq!(from_config.tags(&app).await.expect("tags"), ["v1.2.3"]);
    from_config.tags(&app).await.expect("tags again");
    assert_eq!(issuer.refresh_grants(), 1);
    assert_eq!(issuer.scopes(), ["repository:team/app:pull"]);
    assert_eq!(helper.calls(), 0);

    // From a credsStore helper answering `Username: <token>`.
    let from_helper = client_with(
        docker_config(&json!({"auths": {host.clone(): {}}, "credsStore": "acr"})),
        &helper,
        Arc::new(SystemClock),
    );
    assert_eq!(from_helper.tags(&app).await.expect("tags"), ["v1.2.3"]);
    assert_eq!((helper.calls(), issuer.refresh_grants()), (1, 2));

    // A refresh token the service does not know: refused, named, never shown.
    let revoked = client_with(
        docker_config(&json!({"auths": {host.clone(): {"identitytoken": "refresh-revoked-77"}}})),
        &helper,
        Arc::new(SystemClock),
    );
    let error = revoked.tags(&app).await.expect_err("unknown refresh token");
    assert!(
        matches!(error, RegistryError::Unauthorized { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("with an identity token") && text.contains(&host),
        "{text}"
    );
    assert!(!text.contains("refresh-revoked-77"), "{text}");
}

#[tokio::test]
async fn helper_failures_name_the_helper_and_the_registry_never_the_secret() {
    let registry = TestRegistry::start_with_htpasswd("robot", "helper-pw-5521").await;
    registry
        .push_image("app", "v1", ManifestKind::OciManifest, None)
        .await;
    let host = registry.host();
    let app = image(&format!("{host}/app"));
    let helper = FakeHelper::new(
        "vault",
        &Behaviour::Login {
            user: "robot".into(),
            secret: "helper-pw-5521".into(),
        },
    );
    let config = json!({"auths": {}, "credHelpers": {host.clone(): "vault"}});
    let make = |timeout: Duration| {
        install_crypto_provider();
        RegistryClient::new(
            RegistryConfig::default()
                .credentials(docker_config(&config))
                .helper_path(helper.path_env())
                .helper_timeout(timeout),
            Arc::new(SystemClock),
        )
        .expect("client")
    };

    // Basic auth with the helper's login: asked once, kept for later calls.
    let client = make(Duration::from_secs(10));
    for _ in 0..3 {
        assert_eq!(client.tags(&app).await.expect("tags"), ["v1"]);
    }
    assert_eq!(helper.calls(), 1);

    let cases: [(Behaviour, &str, bool); 4] = [
        (
            Behaviour::Fails {
                status: 1,
                message: "error getting credentials - err: exit status 1, out: `vault sealed`"
                    .into(),
            },
            "vault sealed",
            false,
        ),
        (
            // Output that is not the protocol's JSON may hold the secret: never shown.
            Behaviour::Prints("Secret=helper-pw-5521".into()),
            "not the helper JSON",
            false,
        ),
        (Behaviour::Hangs(30), "did not answer within 0.3s", true),
        (Behaviour::NotFound, "has no credentials for it", false),
    ];
    for (behaviour, says, retryable) in cases {
        helper.set(&behaviour);
        let error = make(Duration::from_millis(300))
            .tags(&app)
            .await
            .expect_err("the helper gives no login");
        let text = error.to_string();
        assert!(text.contains(says), "{text}");
        assert!(
            text.contains("docker-credential-vault") && text.contains(&host),
            "{text}"
        );
        assert!(!text.contains("helper-pw-5521"), "{text}");
        assert_eq!(error.is_retryable(), retryable, "{text}");
    }

    let missing = client_with(
        docker_config(&json!({"credsStore": "not-installed"})),
        &helper,
        Arc::new(SystemClock),
    );
    let error = missing.tags(&app).await.expect_err("no such helper");
    assert_eq!(error.metric_label(), "credential_helper", "{error}");
    assert!(
        error
            .to_string()
            .contains("docker-credential-not-installed: not installed"),
        "{error}"
    );
}
