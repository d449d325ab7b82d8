//! A fake Docker credential helper: a `docker-credential-NAME` shell script in a
//! temporary directory, speaking the docker-credential-helpers protocol
//! (github.com/docker/docker-credential-helpers, `client/client.go`: `get` reads the
//! server URL on stdin, prints `{"ServerURL","Username","Secret"}`, or exits 1 with
//! `credentials not found in native keychain`). Every call is counted in a file and the
//! server URL it was asked about is recorded.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// What the script answers.
pub enum Behaviour {
    /// `Username: USER`, `Secret: PREFIX<unix time + lifetime>`: a password that
    /// expires (as ECR's 12-hour tokens do), for
    /// [`TokenIssuer::accept_expiring_passwords`](super::token::TokenIssuer::accept_expiring_passwords).
    ExpiringPassword {
        user: String,
        prefix: String,
        lifetime_secs: u32,
    },
    /// `Username: USER`, `Secret: SECRET`.
    Login { user: String, secret: String },
    /// `Username: <token>`, `Secret: TOKEN`: an identity (refresh) token.
    IdentityToken(String),
    /// Exits 1 with the helpers' not-found message.
    NotFound,
    /// Exits `status` printing `message` on stdout (helpers print errors there).
    Fails { status: u8, message: String },
    /// Prints `text` and exits 0 (not the protocol's JSON).
    Prints(String),
    /// Sleeps this many seconds before answering anything.
    Hangs(u32),
}

pub struct FakeHelper {
    dir: tempfile::TempDir,
    name: String,
}

impl FakeHelper {
    /// Writes `docker-credential-{name}` answering as `behaviour`.
    #[must_use]
    pub fn new(name: &str, behaviour: &Behaviour) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("autobump-cred-helper-")
            .tempdir()
            .expect("temporary directory for the credential helper");
        let helper = Self {
            dir,
            name: name.to_owned(),
        };
        helper.set(behaviour);
        helper
    }

    /// Rewrites the script (calls so far stay counted).
    pub fn set(&self, behaviour: &Behaviour) {
        let calls = self.dir.path().join("calls");
        let urls = self.dir.path().join("urls");
        let answer = match behaviour {
            Behaviour::ExpiringPassword {
                user,
                prefix,
                lifetime_secs,
            } => format!(
                "until=$(( $(date +%s) + {lifetime_secs} ))\n\
                 printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{prefix}%s\"}}\\n' \"$url\" \"$until\"\n"
            ),
            Behaviour::Login { user, secret } => format!(
                "printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}\\n' \"$url\"\n"
            ),
            Behaviour::IdentityToken(token) => format!(
                "printf '{{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"{token}\"}}\\n' \"$url\"\n"
            ),
            Behaviour::NotFound => {
                "echo 'credentials not found in native keychain'\nexit 1\n".to_owned()
            }
            Behaviour::Fails { status, message } => {
                format!("echo '{message}'\nexit {status}\n")
            }
            Behaviour::Prints(text) => format!("echo '{text}'\n"),
            Behaviour::Hangs(secs) => format!("sleep {secs}\n"),
        };
        let script = format!(
            "#!/bin/sh\n\
             # A fake docker-credential helper written by autobump's tests.\n\
             [ \"$1\" = get ] || {{ echo \"unsupported: $1\"; exit 1; }}\n\
             echo call >> '{calls}'\n\
             url=$(cat)\n\
             printf '%s\\n' \"$url\" >> '{urls}'\n\
             {answer}",
            calls = calls.display(),
            urls = urls.display(),
        );
        let path = self.program();
        // Write beside and rename, so a concurrent run never sees half a script.
        let staging = self.dir.path().join(".staging");
        std::fs::write(&staging, script).expect("writing the fake credential helper");
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))
            .expect("making the fake credential helper executable");
        std::fs::rename(&staging, &path).expect("installing the fake credential helper");
    }

    /// The script's path.
    #[must_use]
    pub fn program(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("docker-credential-{}", self.name))
    }

    /// The helper's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `PATH` with the helper's directory first, then the process's `PATH`.
    #[must_use]
    pub fn path_env(&self) -> OsString {
        let mut dirs = vec![self.dir.path().to_path_buf()];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(dirs).expect("a PATH value")
    }

    /// How often the helper has been run.
    #[must_use]
    pub fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .map_or(0, |text| text.lines().count())
    }

    /// The server URLs it was asked about, in order.
    #[must_use]
    pub fn server_urls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("urls"))
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}
