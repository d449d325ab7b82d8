//! A notification receiver on 127.0.0.1 (Slack incoming webhook or generic JSON
//! webhook): records every request with the time it arrived, and answers from a
//! script — e.g. 500 then 200, or 429 with `Retry-After` — then 200 `ok` (what Slack
//! answers) once the script is used up.
//!
//! Not part of `support/mod.rs` (owned elsewhere); a test module includes it with
//! `#[path = "../support/notify_receiver.rs"] mod notify_receiver;`, next to a
//! `support` module at the crate root.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use autobump::clock::Stopwatch;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::support::scripted::Served;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    #[must_use]
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    #[must_use]
    pub fn body(mut self, body: &str) -> Self {
        body.clone_into(&mut self.body);
        self
    }
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived, since the receiver started.
    pub at: Duration,
}

impl Received {
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; panics with the body when it is not.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

/// The receiver; stops when dropped.
pub struct NotifyReceiver {
    served: Served,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panicking test thread leaves valid data behind.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NotifyReceiver {
    /// Starts a receiver that answers `script` in order, then 200 `ok`.
    pub async fn start(script: Vec<Answer>) -> Self {
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            received: Vec::new(),
        }));
        let watch = Arc::new(Stopwatch::start());
        let handler = {
            let state = Arc::clone(&state);
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&state);
                let watch = Arc::clone(&watch);
                async move {
                    let answer = {
                        let mut s = lock(&state);
                        s.received.push(Received {
                            method: method.to_string(),
                            path: uri
                                .path_and_query()
                                .map_or_else(|| uri.path().to_owned(), ToString::to_string),
                            headers,
                            body,
                            at: watch.elapsed(),
                        });
                        s.script
                            .pop_front()
                            .unwrap_or_else(|| Answer::status(200).body("ok"))
                    };
                    respond(&answer)
                }
            }
        };
        let served = Served::start(Router::new().fallback(handler)).await;
        Self { served, state }
    }

    /// A URL on this receiver with `path` (e.g. a Slack-like secret path).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.served.host())
    }

    /// Everything received so far, oldest first.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }
}

fn respond(answer: &Answer) -> Response {
    let mut response = (
        StatusCode::from_u16(answer.status).expect("a valid scripted status"),
        answer.body.clone(),
    )
        .into_response();
    for (name, value) in &answer.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a valid scripted header name"),
            HeaderValue::from_str(value).expect("a valid scripted header value"),
        );
    }
    response
}
