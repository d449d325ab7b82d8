//! The dashboard's routes (does I/O: reads the [`Source`], answers HTTP).
//!
//! | route | what |
//! |---|---|
//! | `GET /` | every policy at a glance (HTML) |
//! | `GET /policies/NAME` | one policy: timeline and history (HTML) |
//! | `GET /api/v1/policies`, `GET /api/v1/policies/NAME` | the JSON API ([`super::api`]), with the revision as `ETag` (`If-None-Match` → 304) |
//! | `GET /assets/dashboard.css`, `/assets/dashboard.js`, `/assets/favicon.svg` | the page's style, script and icon, built into the binary |
//! | `GET`, `POST /login` | with a token: the form that sets the session cookie |
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and
//! requests only from the dashboard itself; no inline script or style, no frames,
//! forms only to itself), `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//! no-referrer`, and pages and documents `Cache-Control: no-store`.
//!
//! With a token (`--dashboard-token`) every route but the assets and `/login`
//! needs `Authorization: Bearer TOKEN` or the cookie `/login` sets (`HttpOnly`,
//! `SameSite=Strict`, holding a SHA-256 of the token, never the token); pages without
//! it redirect to `/login`, API calls get 401. Compared in constant time.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use super::source::Source;
use super::{TIMELINE_DAYS, api, html};
use crate::clock::Clock;
use crate::metrics::{GateSeen, Metrics};

/// Changes the assets' URLs with each release, so browsers never mix versions.
pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Content-Security-Policy of every answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The cookie `/login` sets.
pub const COOKIE: &str = "autobump_dashboard";

/// The largest `/login` body read (a form with one token).
const MAX_LOGIN_BODY: usize = 4096;

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// What the dashboard serves.
pub struct DashboardConfig {
    /// Policies and state.
    pub source: Arc<dyn Source>,
    /// The controller's last gate readings (none: every gate shows as unread).
    pub metrics: Option<Arc<Metrics>>,
    /// Dates the pages.
    pub clock: Arc<dyn Clock>,
    /// When set, required as a bearer token or the session cookie.
    pub token: Option<String>,
}

#[derive(Clone)]
struct Dash {
    source: Arc<dyn Source>,
    metrics: Option<Arc<Metrics>>,
    clock: Arc<dyn Clock>,
    /// The token's SHA-256 (hex): what the cookie holds.
    session: Option<Arc<(String, String)>>,
}

impl Dash {
    fn gates(&self) -> BTreeMap<String, GateSeen> {
        self.metrics.as_ref().map(|m| m.gates()).unwrap_or_default()
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::SubsecRound::trunc_subsecs(self.clock.now(), 0)
    }
}

/// The dashboard's routes, to merge into the controller's server.
pub fn router(config: DashboardConfig) -> Router {
    let dash = Dash {
        source: config.source,
        metrics: config.metrics,
        clock: config.clock,
        session: config
            .token
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new((cookie_value(&t), t))),
    };
    let guarded = Router::new()
        .route("/", get(overview_page))
        .route("/policies/{*key}", get(detail_page))
        .route("/api/v1/policies", get(overview_json))
        .route("/api/v1/policies/{*key}", get(detail_json))
        .layer(middleware::from_fn_with_state(dash.clone(), authenticate))
        .with_state(dash.clone());
    let open = Router::new()
        .route("/login", get(login_form).post(login))
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/assets/favicon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .with_state(dash);
    guarded
        .merge(open)
        .layer(middleware::from_fn(security_headers))
}

fn cookie_value(token: &str) -> String {
    api::hex(&Sha256::digest(token.as_bytes()))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether the request carries the token (bearer) or the session cookie.
fn signed_in(session: &(String, String), headers: &HeaderMap) -> bool {
    if crate::http::bearer_ok(Some(&session.1), headers) {
        return true;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| {
            name == COOKIE && crate::http::constant_time_eq(value.as_bytes(), session.0.as_bytes())
        })
}

async fn authenticate(State(dash): State<Dash>, request: Request, next: Next) -> Response {
    let Some(session) = &dash.session else {
        return next.run(request).await;
    };
    if signed_in(session, request.headers()) {
        return next.run(request).await;
    }
    if request.uri().path().starts_with("/api/") {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "bad or missing bearer token\n",
        )
            .into_response();
    }
    Redirect::to("/login").into_response()
}

async fn login_form() -> Response {
    html_response(StatusCode::OK, html::login(false))
}

async fn login(State(dash): State<Dash>, headers: HeaderMap, body: Body) -> Response {
    let Some(session) = &dash.session else {
        return Redirect::to("/").into_response();
    };
    let body = match crate::http::read_body(&headers, body, MAX_LOGIN_BODY).await {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let given = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !crate::http::constant_time_eq(given.as_bytes(), session.1.as_bytes()) {
        return html_response(StatusCode::UNAUTHORIZED, html::login(true));
    }
    let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", session.0);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

fn html_response(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn unavailable(e: &super::SourceError) -> Response {
    tracing::warn!(error = %e, "dashboard: reading the state failed");
    html_response(
        StatusCode::SERVICE_UNAVAILABLE,
        html::problem("State unavailable", &api::scrub(&e.to_string())),
    )
}

async fn overview_page(State(dash): State<Dash>) -> Response {
    match dash.source.snapshot().await {
        Ok(snapshot) => html_response(
            StatusCode::OK,
            html::overview(&api::overview(&snapshot, &dash.gates(), dash.now())),
        ),
        Err(e) => unavailable(&e),
    }
}

async fn overview_json(State(dash): State<Dash>, headers: HeaderMap) -> Response {
    match dash.source.snapshot().await {
        Ok(snapshot) => document(
            &headers,
            &api::overview(&snapshot, &dash.gates(), dash.now()),
            |d| &d.revision,
        ),
        Err(e) => json_error(&e),
    }
}

/// A document with its revision as `ETag`; `304 Not Modified` without a body when
/// the request's `If-None-Match` names that revision (the page's poll).
fn document<T: serde::Serialize>(
    headers: &HeaderMap,
    doc: &T,
    revision: impl Fn(&T) -> &String,
) -> Response {
    let etag = format!("\"{}\"", revision(doc));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    ([(header::ETAG, etag)], axum::Json(doc)).into_response()
}

async fn detail_page(State(dash): State<Dash>, Path(key): Path<String>) -> Response {
    match dash.source.record(&key).await {
        Ok(Some(record)) => html_response(
            StatusCode::OK,
            html::detail(
                &api::detail(&key, &record, &dash.gates(), dash.now()),
                TIMELINE_DAYS,
            ),
        ),
        Ok(None) => html_response(
            StatusCode::NOT_FOUND,
            html::problem(
                "No such policy",
                &format!("No policy or state is named {key}."),
            ),
        ),
        Err(e) => unavailable(&e),
    }
}

async fn detail_json(
    State(dash): State<Dash>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    match dash.source.record(&key).await {
        Ok(Some(record)) => document(
            &headers,
            &api::detail(&key, &record, &dash.gates(), dash.now()),
            |d| &d.revision,
        ),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "apiVersion": api::API_VERSION,
                "kind": "Status",
                "code": 404,
                "message": format!("no policy or state is named {key}"),
            })),
        )
            .into_response(),
        Err(e) => json_error(&e),
    }
}

fn json_error(e: &super::SourceError) -> Response {
    tracing::warn!(error = %e, "dashboard: reading the state failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "apiVersion": api::API_VERSION,
            "kind": "Status",
            "code": 503,
            "message": api::scrub(&e.to_string()),
        })),
    )
        .into_response()
}
