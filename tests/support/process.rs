//! A server run as a child process on an ephemeral loopback port.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use autobump::clock::{Deadline, Stopwatch};
use tempfile::TempDir;

/// How long a server may take to become ready before the start counts as failed.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a start is retried when the picked port was taken in the meantime.
const BIND_ATTEMPTS: u32 = 5;

/// Finds a server binary: `/usr/bin/NAME` (where the Debian package puts it), else on
/// `PATH`. Panics naming `scripts/setup` if it is missing.
#[must_use]
pub fn find_binary(name: &str, debian_package: &str) -> PathBuf {
    let usual = Path::new("/usr/bin").join(name);
    if usual.is_file() {
        return usual;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{name} not found (neither /usr/bin/{name} nor on PATH): run scripts/setup \
         (installs the Debian packages the tests need; this one is `{debian_package}`)"
    );
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
/// Another process may take it before the server binds it; [`ServerProcess::start`]
/// retries with a new port when that happens.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to pick a free port")
        .port()
}

/// What to start and how to tell that it is ready.
pub struct ServerSpec {
    /// For messages: the binary's name.
    pub name: &'static str,
    pub binary: PathBuf,
    /// `GET http://127.0.0.1:PORT{ready_path}` answering one of `ready_statuses` means ready.
    pub ready_path: &'static str,
    pub ready_statuses: &'static [u16],
}

/// A running child server. Dropping it kills the child, waits for it, and removes its
/// data directory.
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
    // Declared last: removed after the child is gone.
    dir: TempDir,
}

impl ServerProcess {
    /// Starts `spec.binary` with the arguments `args(dir, port)` returns (it may also
    /// write config files into `dir`, the server's own temporary directory), in `dir`,
    /// with stdout and stderr going to `dir/server.log`; waits until the server answers
    /// its readiness endpoint. Retries with another port if the port was taken; panics
    /// with the log's tail on any other failure.
    pub async fn start(
        spec: &ServerSpec,
        mut args: impl FnMut(&Path, u16) -> Vec<OsString>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("autobump-test-{}-", spec.name))
            .tempdir()
            .expect("creating a temporary directory for a test server");
        let client = super::http_client();
        let watch = Stopwatch::start();
        for attempt in 1..=BIND_ATTEMPTS {
            let port = free_port();
            let log = dir.path().join("server.log");
            let log_file = File::create(&log).expect("creating the server log");
            let mut child = Command::new(&spec.binary)
                .args(args(dir.path(), port))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("cloning the log file handle"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", spec.binary.display()));
            match wait_ready(spec, &mut child, port, &client).await {
                Ok(()) => {
                    eprintln!(
                        "support: {} ready on 127.0.0.1:{port} in {:.0?} (attempt {attempt})",
                        spec.name,
                        watch.elapsed()
                    );
                    return Self {
                        name: spec.name,
                        child,
                        port,
                        log,
                        dir,
                    };
                }
                Err(failure) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let tail = log_tail(&log);
                    let port_taken = tail.contains("address already in use");
                    if port_taken && attempt < BIND_ATTEMPTS {
                        eprintln!(
                            "support: {} could not bind 127.0.0.1:{port}; retrying on another port",
                            spec.name
                        );
                        continue;
                    }
                    panic!(
                        "{} ({}) failed to start on 127.0.0.1:{port}: {failure}\n\
                         --- last lines of {} ---\n{tail}",
                        spec.name,
                        spec.binary.display(),
                        log.display()
                    );
                }
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    #[must_use]
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's temporary directory (config, data, `server.log`).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's combined stdout/stderr, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Panics (with the log's tail) if the server has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited unexpectedly ({status})\n--- last lines of {} ---\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(
    spec: &ServerSpec,
    child: &mut Child,
    port: u16,
    client: &reqwest::Client,
) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}{}", spec.ready_path);
    let deadline = Deadline::after(STARTUP_TIMEOUT);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("it exited ({status}) before it was ready"));
        }
        // A short timeout: whatever holds the port may accept and never answer.
        let check = client
            .get(&url)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        let last = match check {
            Ok(response) if spec.ready_statuses.contains(&response.status().as_u16()) => {
                // Whoever answered, make sure it is still our child (not a server that
                // took the port while ours failed to bind).
                return match child.try_wait().map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(status) => Err(format!("it exited ({status}) while starting")),
                };
            }
            Ok(response) => format!("GET {url} answered {}", response.status()),
            Err(e) => format!("GET {url}: {e}"),
        };
        if deadline.expired() {
            return Err(format!(
                "not ready after {STARTUP_TIMEOUT:?}; last readiness check: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last 40 lines of a log file (reading at most its last 16 KiB).
fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Shorthand for building argument lists.
pub fn arg(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// The command lines of the running processes that mention `text` (a working
/// directory, say): what a script left behind.
#[must_use]
pub fn processes_mentioning(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(text)
        {
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}
