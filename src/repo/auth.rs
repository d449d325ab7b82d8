//! Credentials for git remotes (pure apart from libgit2 reading an SSH key file when it
//! authenticates): what is configured ([`Auth`]), the answer given to libgit2's
//! credentials callback, and URLs with their secrets removed for messages.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use git2::{Cred, CredentialType};

/// How to authenticate to a remote. `Debug` never prints a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (public repositories, `file://`).
    #[default]
    None,
    /// HTTP(S) basic authentication: a username and a password or token.
    UserPass {
        /// The username (`x-access-token` for a GitHub App or Actions token).
        username: String,
        /// The password or token.
        password: String,
    },
    /// An SSH private key held in memory (from a Kubernetes `ssh-auth` Secret).
    SshKeyData {
        /// The SSH user; default: the user in the URL, else `git`.
        username: Option<String>,
        /// The private key, PEM or OpenSSH format.
        private_key: String,
        /// The private key's passphrase.
        passphrase: Option<String>,
    },
    /// An SSH key pair from files.
    SshKey {
        /// The SSH user; default: the user in the URL, else `git`.
        username: Option<String>,
        /// The private key file.
        private_key: PathBuf,
        /// The public key file, if libgit2 cannot derive it from the private key.
        public_key: Option<PathBuf>,
        /// The private key's passphrase.
        passphrase: Option<String>,
    },
}

impl Auth {
    /// A GitHub token (App installation, Actions or personal): basic auth as
    /// `x-access-token:<token>`, which GitHub accepts for every kind of token.
    #[must_use]
    pub fn github_token(token: impl Into<String>) -> Self {
        Self::UserPass {
            username: "x-access-token".to_owned(),
            password: token.into(),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::UserPass { username, .. } => f
                .debug_struct("UserPass")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::SshKey {
                username,
                private_key,
                public_key,
                passphrase,
            } => f
                .debug_struct("SshKey")
                .field("username", username)
                .field("private_key", private_key)
                .field("public_key", public_key)
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .finish(),
            Self::SshKeyData {
                username,
                passphrase,
                ..
            } => f
                .debug_struct("SshKeyData")
                .field("username", username)
                .field("private_key", &"<redacted>")
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// The state of one operation's credentials callback. libgit2 calls the callback
/// again every time the server rejects what it returned; answering the same way again
/// would loop forever (over HTTP) or until the server hangs up (SSH). So each kind of
/// answer is given once; asked again, the callback refuses and records that, and the
/// operation fails with [`RepoError::Auth`](super::RepoError::Auth).
#[derive(Debug, Clone, Default)]
pub(super) struct CredentialState {
    gave_username: Arc<AtomicBool>,
    gave_secret: Arc<AtomicBool>,
    refused: Arc<AtomicBool>,
}

impl CredentialState {
    /// Whether the callback refused to answer (missing, rejected or unfit credentials).
    pub(super) fn refused(&self) -> bool {
        self.refused.load(Ordering::SeqCst)
    }

    /// Answers one credentials request from libgit2 for `url` (never logged with
    /// secrets: only which kind of credential was offered).
    pub(super) fn answer(
        &self,
        auth: &Auth,
        url: &str,
        username_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let refuse = |why: &str| {
            self.refused.store(true, Ordering::SeqCst);
            Err(git2::Error::new(
                git2::ErrorCode::Auth,
                git2::ErrorClass::Callback,
                why,
            ))
        };
        let ssh_user = || match auth {
            Auth::SshKey {
                username: Some(u), ..
            }
            | Auth::SshKeyData {
                username: Some(u), ..
            } => u.clone(),
            _ => username_from_url.unwrap_or("git").to_owned(),
        };
        // SSH first asks for a username when the URL has none.
        if allowed.contains(CredentialType::USERNAME) && !allowed.contains(CredentialType::SSH_KEY)
        {
            if self.gave_username.swap(true, Ordering::SeqCst) {
                return refuse("the server rejected the username");
            }
            tracing::debug!(url = %redact_url(url), "offering the SSH username");
            return Cred::username(&ssh_user());
        }
        if self.gave_secret.swap(true, Ordering::SeqCst) {
            return refuse("the server rejected the configured credentials");
        }
        match auth {
            Auth::None => refuse("the server asks for credentials and none are configured"),
            Auth::UserPass { username, password } => {
                if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                    return refuse(
                        "a username and password are configured, but the server wants another kind of credential (an SSH key for ssh:// URLs?)",
                    );
                }
                tracing::debug!(url = %redact_url(url), "offering username and password");
                Cred::userpass_plaintext(username, password)
            }
            Auth::SshKey {
                private_key,
                public_key,
                passphrase,
                ..
            } => {
                if !allowed.contains(CredentialType::SSH_KEY) {
                    return refuse(
                        "an SSH key is configured, but the server wants another kind of credential (a token for https:// URLs?)",
                    );
                }
                tracing::debug!(
                    url = %redact_url(url),
                    key = %private_key.display(),
                    "offering an SSH key"
                );
                Cred::ssh_key(
                    &ssh_user(),
                    public_key.as_deref(),
                    private_key,
                    passphrase.as_deref(),
                )
            }
            Auth::SshKeyData {
                private_key,
                passphrase,
                ..
            } => {
                if !allowed.contains(CredentialType::SSH_KEY) {
                    return refuse(
                        "an SSH key is configured, but the server wants another kind of credential (a token for https:// URLs?)",
                    );
                }
                tracing::debug!(url = %redact_url(url), "offering an SSH key (from a Secret)");
                Cred::ssh_key_from_memory(&ssh_user(), None, private_key, passphrase.as_deref())
            }
        }
    }
}

/// `url` without a user or password (`https://user:tok@host/r` → `https://host/r`;
/// scp-like `git@host:r` keeps its user, which is not a secret). Works on the text, so
/// it also cleans what is not a valid URL (an error message quoting a bad policy
/// value), and changes nothing else.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}{}", &url[..authority_start], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The host (with its port, if not 443) that serves git for the GitHub whose API is
/// at `api_url`: `https://api.github.com` → `github.com`, GitHub Enterprise
/// `https://ghe.example.com/api/v3` → `ghe.example.com`. `None` for an API that is
/// not served over HTTPS: a token never travels in the clear.
#[must_use]
pub fn github_git_host(api_url: &str) -> Option<String> {
    let api = url::Url::parse(api_url).ok()?;
    if api.scheme() != "https" {
        return None;
    }
    let host = api.host_str()?.to_ascii_lowercase();
    let host = match host.as_str() {
        "api.github.com" => "github.com".to_owned(),
        _ => host,
    };
    Some(match api.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// Whether the GitHub token may be sent to the git remote `remote`, given the
/// GitHub host (`github.com`, `ghe.example.com:8443`; see [`github_git_host`]): only
/// to that host, and only over HTTPS. Any other remote (another host, a look-alike
/// such as `github.com.evil.example`, plain HTTP) gets no token. The one exception
/// is a loopback GitHub host (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`: a
/// test installation on the same machine), reached over plain HTTP: that traffic
/// never leaves the machine.
#[must_use]
pub fn github_token_applies(remote: &str, github_host: &str) -> bool {
    let Ok(remote) = url::Url::parse(remote) else {
        return false;
    };
    let Some(host) = remote.host_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let remote_host = match remote.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    if remote_host != github_host.to_ascii_lowercase() {
        return false;
    }
    match remote.scheme() {
        "https" => true,
        "http" => matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_key() -> Auth {
        Auth::SshKey {
            username: None,
            private_key: PathBuf::from("/nonexistent/id_ed25519"),
            public_key: None,
            passphrase: Some("hunter2".into()),
        }
    }

    #[test]
    fn ssh_key_is_offered_once_for_ssh_urls() {
        // No sshd here: this checks the wiring libgit2 sees, not a handshake.
        let state = CredentialState::default();
        let url = "ssh://git@example.com/org/repo.git";
        let user = state
            .answer(&ssh_key(), url, None, CredentialType::USERNAME)
            .unwrap();
        assert_eq!(user.credtype(), CredentialType::USERNAME.bits());
        let key = state
            .answer(
                &ssh_key(),
                url,
                Some("git"),
                CredentialType::SSH_KEY | CredentialType::SSH_CUSTOM,
            )
            .unwrap();
        assert_eq!(key.credtype(), CredentialType::SSH_KEY.bits());
        assert!(key.has_username());
        assert!(!state.refused());
        // The server rejected the key: no second offer.
        let again = state.answer(&ssh_key(), url, Some("git"), CredentialType::SSH_KEY);
        assert_eq!(again.err().unwrap().code(), git2::ErrorCode::Auth);
        assert!(state.refused());
    }

    #[test]
    fn userpass_is_offered_once_and_only_where_it_fits() {
        let auth = Auth::github_token("t0ken");
        let state = CredentialState::default();
        let url = "https://github.com/o/r.git";
        let cred = state
            .answer(&auth, url, None, CredentialType::USER_PASS_PLAINTEXT)
            .unwrap();
        assert_eq!(cred.credtype(), CredentialType::USER_PASS_PLAINTEXT.bits());
        assert!(
            state
                .answer(&auth, url, None, CredentialType::USER_PASS_PLAINTEXT)
                .is_err()
        );
        assert!(state.refused());

        let ssh = CredentialState::default();
        assert!(
            ssh.answer(&auth, "ssh://git@h/r", Some("git"), CredentialType::SSH_KEY)
                .is_err()
        );
        assert!(ssh.refused());

        let none = CredentialState::default();
        assert!(
            none.answer(&Auth::None, url, None, CredentialType::USER_PASS_PLAINTEXT)
                .is_err()
        );
        assert!(none.refused());
    }

    #[test]
    fn secrets_stay_out_of_debug_and_urls() {
        let shown = format!("{:?} {:?}", Auth::github_token("t0ken"), ssh_key());
        assert!(
            !shown.contains("t0ken") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("x-access-token"));
        assert_eq!(
            redact_url("https://bot:t0ken@example.com/o/r.git"),
            "https://example.com/o/r.git"
        );
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(redact_url("file:///tmp/r.git"), "file:///tmp/r.git");
        // Also what is not a valid URL, and only the user info goes.
        assert_eq!(
            redact_url("http://user:PASS@ho st/x.git?a=b@c"),
            "http://ho st/x.git?a=b@c"
        );
        assert_eq!(redact_url("http://u:p@w@h:8080"), "http://h:8080");
        assert_eq!(redact_url("https://h/p@x"), "https://h/p@x");
    }

    #[test]
    fn the_github_token_goes_only_to_the_github_host_over_https() {
        let hosts = [
            ("https://api.github.com", Some("github.com")),
            ("https://api.github.com/", Some("github.com")),
            ("https://ghe.example.com/api/v3", Some("ghe.example.com")),
            (
                "https://GHE.example.com:8443/api/v3",
                Some("ghe.example.com:8443"),
            ),
            // An API over plain HTTP names no git host for the token.
            ("http://127.0.0.1:9", None),
            ("not a url", None),
        ];
        for (api, want) in hosts {
            assert_eq!(github_git_host(api).as_deref(), want, "{api}");
        }
        let cases = [
            ("https://github.com/o/r.git", "github.com", true),
            ("https://GitHub.com/o/r", "github.com", true),
            ("http://github.com/o/r.git", "github.com", false),
            ("https://gitlab.com/o/r.git", "github.com", false),
            ("https://github.com.evil.example/o/r", "github.com", false),
            ("https://evil.example/github.com/o/r", "github.com", false),
            ("https://github.com:8443/o/r", "github.com", false),
            ("https://ghe.example.com/o/r.git", "ghe.example.com", true),
            (
                "https://ghe.example.com:8443/o/r",
                "ghe.example.com:8443",
                true,
            ),
            ("https://ghe.example.com/o/r", "ghe.example.com:8443", false),
            ("ssh://git@github.com/o/r.git", "github.com", false),
            ("git@github.com:o/r.git", "github.com", false),
            // Plain HTTP only to a loopback GitHub host (a test installation).
            ("http://127.0.0.1:3000/o/r.git", "127.0.0.1:3000", true),
            ("http://127.0.0.1:3001/o/r.git", "127.0.0.1:3000", false),
            ("http://10.0.0.1:3000/o/r.git", "10.0.0.1:3000", false),
        ];
        for (remote, host, want) in cases {
            assert_eq!(
                github_token_applies(remote, host),
                want,
                "{remote} to {host}"
            );
        }
    }
}
