//! Docker credential helpers (does I/O: runs `docker-credential-NAME get`).
//!
//! The protocol of `docker/docker-credential-helpers`: the program is called with the
//! argument `get`, reads the server URL on stdin and prints
//! `{"ServerURL": .., "Username": .., "Secret": ..}` on stdout, exit status 0. When it
//! has nothing for that server it exits non-zero and prints
//! `credentials not found in native keychain`. A `Username` of `<token>` means the
//! `Secret` is an identity (OAuth 2.0 refresh) token rather than a password.
//!
//! Bounded: the program must answer within a timeout (it is killed past it) and its
//! output is read up to 64 KiB per stream. Nothing it prints on success ever reaches
//! an error message or a log; on failure the first 200 characters of what it printed
//! do (helpers print their error message there, not the secret).

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use super::config::{BasicAuth, Login};

/// Output read per stream; a helper printing more is broken or hostile.
const OUTPUT_LIMIT: u64 = 64 << 10;
/// What helpers print when they hold nothing for the server (docker-credential-helpers'
/// `credentials.errCredentialsNotFoundMessage`).
const NOT_FOUND: &str = "credentials not found in native keychain";
/// The `Username` that marks the secret as an identity token.
const TOKEN_USERNAME: &str = "<token>";

/// What a helper answered.
#[derive(Debug)]
pub(crate) enum Answer {
    Found(Login),
    /// The helper has nothing for this server: go on anonymously.
    NotFound,
}

/// Why a helper gave no answer; `detail` never holds a secret.
#[derive(Debug)]
pub(crate) struct HelperFailure {
    pub detail: String,
    /// A timeout may pass; a missing program or bad output needs a person.
    pub retryable: bool,
}

#[derive(Deserialize)]
struct Output {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Whether `name` can be the NAME of a `docker-credential-NAME` program (no path
/// separators or other surprises).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// Runs `docker-credential-{helper} get` with `server_url` on stdin, searching
/// `path` (a `PATH` value) instead of the process's `PATH` when given.
pub(crate) async fn get(
    helper: &str,
    server_url: &str,
    path: Option<&OsString>,
    timeout: Duration,
) -> Result<Answer, HelperFailure> {
    let failure = |detail: String, retryable: bool| HelperFailure { detail, retryable };
    if !valid_name(helper) {
        return Err(failure("not a helper name".to_owned(), false));
    }
    let program = format!("docker-credential-{helper}");
    let mut command = tokio::process::Command::new(&program);
    command
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let mut child = command.spawn().map_err(|e| {
        let detail = if e.kind() == std::io::ErrorKind::NotFound {
            "not installed (not found on PATH)".to_owned()
        } else {
            format!("starting it: {e}")
        };
        failure(detail, false)
    })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(failure("no pipes to talk to it".to_owned(), false));
    };
    let exchange = async {
        // A helper that exits without reading stdin makes this write fail; its exit
        // status and output say more than the broken pipe, so the error is ignored.
        let _ = stdin.write_all(server_url.as_bytes()).await;
        drop(stdin);
        let (out, err, status) =
            tokio::join!(read_bounded(stdout), read_bounded(stderr), child.wait());
        (out, err, status)
    };
    let (out, err, status) = tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        failure(
            format!("`get` did not answer within {}s", timeout.as_secs_f64()),
            true,
        )
    })?;
    let status = status.map_err(|e| failure(format!("waiting for it: {e}"), true))?;
    let (out, err) = match (out, err) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => return Err(failure(format!("`get`: {e}"), false)),
    };
    if !status.success() {
        let said = snippet(&out, &err);
        if said.contains(NOT_FOUND) {
            return Ok(Answer::NotFound);
        }
        return Err(failure(format!("`get` failed ({status}): {said}"), false));
    }
    let parsed: Output = serde_json::from_slice(&out).map_err(|_| {
        // The output may hold the secret: only its size is told.
        failure(
            format!(
                "`get` printed {} bytes that are not the helper JSON \
                 ({{\"Username\": .., \"Secret\": ..}})",
                out.len()
            ),
            false,
        )
    })?;
    if parsed.secret.is_empty() {
        return Ok(Answer::NotFound);
    }
    Ok(Answer::Found(if parsed.username == TOKEN_USERNAME {
        Login::IdentityToken(parsed.secret)
    } else {
        Login::Basic(BasicAuth {
            username: parsed.username,
            password: parsed.secret,
        })
    }))
}

async fn read_bounded(stream: impl AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    stream
        .take(OUTPUT_LIMIT + 1)
        .read_to_end(&mut buffer)
        .await?;
    if buffer.len() as u64 > OUTPUT_LIMIT {
        return Err(std::io::Error::other(format!(
            "printed more than {OUTPUT_LIMIT} bytes"
        )));
    }
    Ok(buffer)
}

/// The first 200 characters of what a failed helper printed (stdout, else stderr).
fn snippet(out: &[u8], err: &[u8]) -> String {
    let text = String::from_utf8_lossy(if out.trim_ascii().is_empty() {
        err
    } else {
        out
    });
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None if text.is_empty() => "(it printed nothing)".to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names() {
        for ok in [
            "ecr-login",
            "gcr",
            "acr-env",
            "desktop",
            "osxkeychain",
            "pass",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "../bin/sh", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn snippets() {
        assert_eq!(snippet(b"  boom\n", b"ignored"), "boom");
        assert_eq!(snippet(b"\n", b"on stderr\n"), "on stderr");
        assert_eq!(snippet(b"", b""), "(it printed nothing)");
        assert_eq!(snippet(&[b'x'; 300], b"").chars().count(), 201);
    }
}
