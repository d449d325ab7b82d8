//! Real git for the repository tests: the `git` command (to build and inspect
//! repositories independently of libgit2), and a smart-HTTP git server in the test
//! process that requires HTTP basic auth and runs `git http-backend` as a CGI program.
//!
//! The server is plain `std`: one thread accepts on an ephemeral 127.0.0.1 port, one
//! thread per connection reads one request (`Content-Length` or chunked body),
//! answers it and closes the connection (`Connection: close`; libgit2 reconnects).
//! Every request is logged with whether it carried the right credentials, so tests
//! can check that a client gives up after one rejected attempt.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use base64::Engine as _;

use super::process::find_binary;

/// The `git` binary (`/usr/bin/git`, else on `PATH`); panics naming `scripts/setup`.
#[must_use]
pub fn git_binary() -> PathBuf {
    find_binary("git", "git")
}

/// A `git` command with a hermetic environment: no system or global config, a fixed
/// identity and fixed dates (so fixtures are the same on every run).
#[must_use]
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new(git_binary());
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.com")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_NAME", "Fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.com")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    cmd
}

/// Runs `git ARGS` in `dir`; panics with its stderr unless it succeeds. Returns stdout
/// with the trailing newline removed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running git {args:?}: {e} (run scripts/setup)"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = String::from_utf8(out.stdout).expect("git output is UTF-8");
    if s.ends_with('\n') {
        s.pop();
    }
    s
}

/// Creates the bare repository `root/name` whose `main` has one commit with `files`.
pub fn bare_repo(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let bare = root.join(name);
    git(root, &["init", "--quiet", "--bare", "-b", "main", name]);
    let work = tempfile::tempdir().expect("temporary work tree");
    git(work.path(), &["init", "--quiet", "-b", "main"]);
    write_files(work.path(), files);
    git(work.path(), &["add", "--all"]);
    git(work.path(), &["commit", "--quiet", "-m", "initial"]);
    git(
        work.path(),
        &["push", "--quiet", bare.to_str().unwrap(), "main"],
    );
    bare
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

/// Another writer: clones `bare`, writes `files` on `branch`, commits with `message`
/// and pushes. Returns the new commit.
pub fn commit_to(bare: &Path, branch: &str, files: &[(&str, &str)], message: &str) -> String {
    let work = tempfile::tempdir().expect("temporary work tree");
    let w = work.path();
    git(
        w,
        &[
            "clone",
            "--quiet",
            "--branch",
            branch,
            bare.to_str().unwrap(),
            ".",
        ],
    );
    write_files(w, files);
    git(w, &["add", "--all"]);
    git(w, &["commit", "--quiet", "-m", message]);
    git(w, &["push", "--quiet", "origin", branch]);
    git(w, &["rev-parse", "HEAD"])
}

/// The commit `rev` names in `git_dir` (a bare repository), or `None`.
#[must_use]
pub fn rev_parse(git_dir: &Path, rev: &str) -> Option<String> {
    let out = git_command(git_dir)
        .args(["rev-parse", "--verify", "--quiet", rev])
        .output()
        .expect("running git rev-parse");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// One request the HTTP server answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// `None`: no `Authorization` header; `Some(ok)`: one, right or wrong.
    pub credentials: Option<bool>,
    pub status: u16,
}

/// A smart-HTTP git server over the bare repositories under a root directory.
pub struct GitHttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Logged>>>,
    accept: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serves the repositories under `root` at `http://127.0.0.1:PORT/<name>`, to
    /// clients that authenticate as `username`:`password`.
    #[must_use]
    pub fn start(root: &Path, username: &str, password: &str) -> Self {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        );
        Self::start_checking(root, username, move |_, _| false, Some(expected))
    }

    /// Serves the repositories under `root` to clients whose basic login `check`
    /// accepts (`check(user, password)`, e.g. a token the GitHub fake minted and
    /// has not expired yet); `REMOTE_USER` is `user` for the hooks.
    #[must_use]
    pub fn start_with_check(
        root: &Path,
        user: &str,
        check: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::start_checking(root, user, check, None)
    }

    fn start_checking(
        root: &Path,
        user: &str,
        check: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
        expected: Option<String>,
    ) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let ctx = Arc::new(Ctx {
            root: root.to_path_buf(),
            git: git_binary(),
            user: user.to_owned(),
            expected: expected.unwrap_or_default(),
            check: Box::new(check),
            log: Arc::clone(&log),
        });
        let stopping = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let ctx = Arc::clone(&ctx);
                std::thread::spawn(move || {
                    if let Err(e) = serve(&ctx, conn) {
                        eprintln!("git http server: {e}");
                    }
                });
            }
        });
        Self {
            port,
            stop,
            log,
            accept: Some(accept),
        }
    }

    /// The URL of the repository `name` (a directory under the root).
    #[must_use]
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// The requests answered so far.
    #[must_use]
    pub fn requests(&self) -> Vec<Logged> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether some request came with a login the server accepted (and none with
    /// one it refused).
    #[must_use]
    pub fn only_accepted_logins(&self) -> bool {
        let requests = self.requests();
        requests.iter().any(|r| r.credentials == Some(true))
            && requests.iter().all(|r| r.credentials != Some(false))
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

struct Ctx {
    root: PathBuf,
    git: PathBuf,
    user: String,
    /// The one `Authorization` value accepted (empty: ask `check`).
    expected: String,
    check: LoginCheck,
    log: Arc<Mutex<Vec<Logged>>>,
}

/// Whether a basic login (`user`, `password`) may use the server.
type LoginCheck = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

impl Ctx {
    fn accepts(&self, authorization: &str) -> bool {
        if !self.expected.is_empty() {
            return authorization == self.expected;
        }
        authorization
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|login| {
                let (user, password) = login.split_once(':')?;
                Some((self.check)(user, password))
            })
            .unwrap_or(false)
    }
}

fn serve(ctx: &Ctx, conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(()); // the wake-up connection, or a client that gave up
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(&mut reader)?
    } else {
        let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap_or(0));
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    };
    let credentials = header("authorization").map(|v| ctx.accepts(v));
    let (status, head, payload) = if credentials == Some(true) {
        cgi(ctx, &method, &target, &headers, &body)?
    } else {
        (
            401,
            vec![
                (
                    "WWW-Authenticate".to_owned(),
                    "Basic realm=\"git\"".to_owned(),
                ),
                ("Content-Type".to_owned(), "text/plain".to_owned()),
            ],
            b"authentication required\n".to_vec(),
        )
    };
    ctx.log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Logged {
            method,
            target,
            credentials,
            status,
        });
    let mut out = conn;
    let mut response = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in &head {
        let _ = write!(response, "{k}: {v}\r\n");
    }
    let _ = write!(
        response,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    out.write_all(response.as_bytes())?;
    out.write_all(&payload)?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Status",
    }
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = size.trim().split(';').next().unwrap_or_default();
        let n = usize::from_str_radix(size, 16)
            .map_err(|e| std::io::Error::other(format!("bad chunk size {size:?}: {e}")))?;
        if n == 0 {
            // Trailers (none expected), then the empty line.
            loop {
                let mut t = String::new();
                reader.read_line(&mut t)?;
                if t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + n, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

type CgiResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// Runs `git http-backend` for one request and splits its CGI response.
fn cgi(
    ctx: &Ctx,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<CgiResponse> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let mut cmd = Command::new(&ctx.git);
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &ctx.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", &ctx.user)
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = body.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut output)?;
    let _ = writer.join();
    child.wait()?;
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .ok_or_else(|| std::io::Error::other("CGI response without a header end"))?;
    let head = String::from_utf8_lossy(&output[..split.0]).into_owned();
    let payload = output[split.0 + split.1..].to_vec();
    let mut status = 200;
    let mut out_headers = Vec::new();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("status") {
            status = v
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
        } else {
            out_headers.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok((status, out_headers, payload))
}
