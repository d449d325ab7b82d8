//! Tiny HTTP/1.1 servers inside the test process: a Prometheus scrape target whose
//! gauges the test sets, and a webhook sink that records what it receives (Alertmanager
//! webhooks, registry notifications). One request per connection (`Connection: close`),
//! bodies by `Content-Length` only; enough for Go's HTTP clients.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A request the in-process server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// Binds 127.0.0.1:0 and serves `handler` until the returned task is aborted.
async fn serve(handler: Handler) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("binding 127.0.0.1:0 for an in-process HTTP server");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                // A client that hangs up mid-request is its problem, not the test's.
                let _ = handle_connection(stream, &handler).await;
            });
        }
    });
    (addr, task)
}

async fn handle_connection(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    const MAX_HEAD: usize = 64 * 1024;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return write_response(&mut stream, &plain(431, "request head too large")).await;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if header("transfer-encoding").is_some() {
        return write_response(&mut stream, &plain(411, "send a Content-Length")).await;
    }
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let response = handler(Request {
        method,
        path,
        headers,
        body,
    });
    write_response(&mut stream, &response).await
}

fn plain(status: u16, text: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: text.as_bytes().to_vec(),
    }
}

async fn write_response(stream: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        404 => "Not Found",
        411 => "Length Required",
        431 => "Request Header Fields Too Large",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread leaves valid data behind.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Prometheus scrape target in the test process: serves `GET /metrics` with the
/// series the test set, so alert rules fire and resolve on demand.
pub struct MetricsTarget {
    addr: SocketAddr,
    series: Arc<Mutex<BTreeMap<String, f64>>>,
    scrapes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl MetricsTarget {
    pub async fn start() -> Self {
        let series: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
        let scrapes = Arc::new(AtomicUsize::new(0));
        let handler: Handler = {
            let series = Arc::clone(&series);
            let scrapes = Arc::clone(&scrapes);
            Arc::new(move |request: Request| {
                if request.path != "/metrics" && !request.path.starts_with("/metrics?") {
                    return plain(404, "only /metrics here");
                }
                scrapes.fetch_add(1, Ordering::SeqCst);
                let mut body = String::new();
                for (name, value) in lock(&series).iter() {
                    writeln!(body, "{name} {}", format_value(*value)).expect("String write");
                }
                Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: body.into_bytes(),
                }
            })
        };
        let (addr, task) = serve(handler).await;
        Self {
            addr,
            series,
            scrapes,
            task,
        }
    }

    /// Sets a series: a metric name, optionally with labels
    /// (`r#"autobump_test_up{service="hook"}"#`).
    pub fn set(&self, series: &str, value: f64) {
        lock(&self.series).insert(series.to_owned(), value);
    }

    /// Stops exposing a series.
    pub fn remove(&self, series: &str) {
        lock(&self.series).remove(series);
    }

    /// How many times `/metrics` was fetched.
    #[must_use]
    pub fn scrapes(&self) -> usize {
        self.scrapes.load(Ordering::SeqCst)
    }

    /// `127.0.0.1:PORT`, as a Prometheus scrape target.
    #[must_use]
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for MetricsTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

/// Records every request it receives and answers 200: a receiver for Alertmanager
/// webhooks and registry notifications.
pub struct WebhookSink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl WebhookSink {
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<Request>>> = Arc::default();
        let handler: Handler = {
            let received = Arc::clone(&received);
            Arc::new(move |request: Request| {
                lock(&received).push(request);
                plain(200, "ok")
            })
        };
        let (addr, task) = serve(handler).await;
        Self {
            addr,
            received,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/hook`
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Everything received so far, oldest first.
    #[must_use]
    pub fn received(&self) -> Vec<Request> {
        lock(&self.received).clone()
    }

    /// Waits until a received request satisfies `matches` and returns it (the first
    /// such); panics after `timeout` listing what did arrive.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Request) -> bool,
    ) -> Request {
        super::wait_until(what, timeout, Duration::from_millis(50), async || {
            let received = self.received();
            received
                .iter()
                .find(|r| matches(r))
                .cloned()
                .ok_or_else(|| {
                    let bodies: Vec<_> = received
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {} {}",
                                r.method,
                                r.path,
                                String::from_utf8_lossy(&r.body)
                            )
                        })
                        .collect();
                    format!("{} requests received: {bodies:?}", received.len())
                })
        })
        .await
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
