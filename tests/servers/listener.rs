//! autobump's own HTTP listener (`autobump::http::serve`) against hostile and careless
//! clients (issue 14, F4): authentication from the headers before any body is read,
//! body size limits, header-read timeouts, the connection cap, and accept errors
//! (out of file descriptors) that never stop the controller. Raw TCP clients, so the
//! tests see exactly what the server does with the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use autobump::http::{ServeLimits, Webhooks, serve, server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "s3cret";
const GITHUB_SECRET: &[u8] = b"hook-secret";

/// The controller's whole router (every webhook, with secrets) served within `limits`.
async fn start(limits: ServeLimits) -> SocketAddr {
    let (router, events) = server(Webhooks {
        github_secret: Some(GITHUB_SECRET.to_vec()),
        registry_token: Some(TOKEN.into()),
        alertmanager_token: Some(TOKEN.into()),
        ready: Arc::new(AtomicBool::new(true)),
        ..Webhooks::default()
    });
    // Keep the receivers alive for the server's lifetime.
    std::mem::forget(events);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, router, limits));
    addr
}

/// Reads until the server closes the connection (bounded, so a broken server fails
/// the test instead of hanging it); returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await;
    let _ = read.expect("the server did not close the connection within 30 s");
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> &str {
    response
        .split_whitespace()
        .nth(1)
        .unwrap_or("(no response)")
}

/// A request head announcing a 1.9 MB body (issue 14's hostile clients).
fn post_head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: 1900000\r\n\r\n"
    )
}

#[tokio::test]
async fn an_unauthenticated_request_is_refused_before_its_body_is_read() {
    let addr = start(ServeLimits::default()).await;
    for (path, extra, want) in [
        ("/webhooks/registry", "", "401"),
        (
            "/webhooks/alertmanager",
            "Authorization: Bearer wrong\r\n",
            "401",
        ),
        ("/webhooks/github", "X-GitHub-Event: ping\r\n", "401"),
        (
            "/webhooks/github",
            "X-Hub-Signature-256: sha256=nothex\r\nX-GitHub-Event: ping\r\n",
            "401",
        ),
        (
            "/webhooks/github",
            &format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64)),
            "400",
        ),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Only the head and 1 KiB of the announced 1.9 MB: the answer must come
        // anyway, and the connection must close (the rest is never read).
        stream
            .write_all(post_head(path, extra).as_bytes())
            .await
            .unwrap();
        stream.write_all(&[b'x'; 1024]).await.unwrap();
        let response = read_to_close(&mut stream).await;
        assert_eq!(status_of(&response), want, "{path} {extra:?}: {response}");
    }
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_unread() {
    let addr = start(ServeLimits::default()).await;
    for (path, extra) in [
        (
            "/webhooks/registry",
            format!("Authorization: Bearer {TOKEN}\r\n"),
        ),
        (
            "/webhooks/github",
            format!(
                "X-Hub-Signature-256: sha256={}\r\nX-GitHub-Event: ping\r\n",
                "0".repeat(64)
            ),
        ),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(post_head(path, &extra).as_bytes())
            .await
            .unwrap();
        let response = read_to_close(&mut stream).await;
        assert_eq!(status_of(&response), "413", "{path}: {response}");
    }
}

#[tokio::test]
async fn an_authenticated_body_that_never_finishes_is_cut_off() {
    let addr = start(ServeLimits::default()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /webhooks/registry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{\"events\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Nothing more is sent: the body read times out (BODY_READ_TIMEOUT).
    let response = read_to_close(&mut stream).await;
    assert_eq!(status_of(&response), "408", "{response}");
}

#[tokio::test]
async fn headers_that_never_finish_and_idle_connections_are_closed() {
    let addr = start(ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    })
    .await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // Both are closed by the server; at most an error response for the partial head.
    let response = read_to_close(&mut stalled).await;
    assert!(!response.contains("200 OK"), "{response}");
    let response = read_to_close(&mut idle).await;
    assert!(!response.contains("200 OK"), "{response}");
    // A kept-alive connection that goes quiet after a request is closed too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_to_close(&mut kept).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// Opens a connection and completes one request on it (so the server has certainly
/// accepted it); the connection stays open, idle.
async fn idle_connection(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    s
}

#[tokio::test]
async fn at_the_connection_cap_the_oldest_idle_connection_makes_room() {
    let addr = start(ServeLimits {
        max_connections: 4,
        ..ServeLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(idle_connection(addr).await);
    }
    // A fifth client (a health probe) is served at once ...
    healthz(&addr.to_string()).await.expect("served at the cap");
    // ... and the oldest idle connection was closed for it; the newest still works.
    assert_eq!(read_to_close(&mut held[0]).await, "");
    let newest = held.last_mut().unwrap();
    newest
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_close(newest).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn at_the_connection_cap_with_every_connection_in_a_request_a_new_one_is_refused() {
    let addr = start(ServeLimits {
        max_connections: 2,
        ..ServeLimits::default()
    })
    .await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        // Authenticated, with a body that is still coming: in a request.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "POST /webhooks/registry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        busy.push(s);
    }
    // Give the server a moment to parse both heads (until then a new connection
    // could still close one as idle), then expect refusals.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = super::support::wait_until(
        "a new connection refused",
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || match healthz(&addr.to_string()).await {
            Ok(()) => Err("served".to_owned()),
            Err(e) => Ok(e),
        },
    )
    .await;
    assert!(!refused.contains("200"), "{refused}");
    // The requests in flight are not disturbed: each ends with its own answer.
    for mut s in busy {
        s.write_all(&[b' '; 99]).await.unwrap();
        let response = read_to_close_or_answer(&mut s).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    }
}

/// Reads one response (the connection may stay open).
async fn read_to_close_or_answer(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
        .await
        .expect("no answer within 30 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `GET /healthz` on a fresh connection: `Ok` for a 200.
async fn healthz(addr: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if text.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(text)
    }
}

/// `autobump run --listen` with 64 file descriptors and 100 connections: accepting
/// fails with EMFILE; the controller logs it, keeps running and answers again once
/// the connections are gone (before: it exited).
#[tokio::test]
async fn running_out_of_file_descriptors_does_not_stop_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    // A policy whose reconcile fails at once (nothing listens on port 9): the loop
    // runs, the listener is what is tested.
    std::fs::write(
        policies.join("p.yaml"),
        "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {name: p}\nspec:\n  images:\n    - prefix: 127.0.0.1:9/team/\n      tags: {semver: {}}\n  source:\n    repo: http://127.0.0.1:9/infra.git\n  directPush: {}\n",
    )
    .unwrap();
    let port = super::support::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = dir.path().join("log");
    let mut child = tokio::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_autobump"))
        .args(["run", "--policies", "policies", "--state", "state.json"])
        .args([
            "--cache-dir",
            "cache",
            "--interval",
            "1h",
            "--listen",
            &listen,
        ])
        .current_dir(dir.path())
        .env_remove("GITHUB_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("running prlimit (util-linux)");
    super::support::wait_until(
        "the controller answers /healthz",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || healthz(&listen).await,
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(&listen).await.unwrap());
    }
    super::support::wait_until(
        "the accept error in the log",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("accepting an HTTP connection failed") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the controller exited: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    drop(idle);
    super::support::wait_until(
        "the controller answers /healthz again",
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || healthz(&listen).await,
    )
    .await;
    assert!(child.try_wait().unwrap().is_none(), "the controller exited");
    child.start_kill().unwrap();
}
