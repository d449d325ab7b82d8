//! GitHub App options of `run` (reads the App's private key file).

use std::path::PathBuf;

use anyhow::Context as _;
use autobump::forge::GitHubApp;

/// Authenticate to GitHub as an App instead of with `GITHUB_TOKEN`.
#[derive(Debug, clap::Args)]
pub(crate) struct GitHubAppArgs {
    /// Act as this GitHub App (its numeric id): installation tokens, found per
    /// repository and renewed before their hour is up, for the API and git over HTTPS.
    /// Needs --github-app-key. Wins over GITHUB_TOKEN.
    #[arg(
        long,
        value_name = "ID",
        env = "GITHUB_APP_ID",
        requires = "github_app_key"
    )]
    pub github_app_id: Option<u64>,
    /// The App's private key (PEM file, as GitHub downloads it); unused without
    /// --github-app-id.
    #[arg(long, value_name = "FILE", env = "AUTOBUMP_GITHUB_APP_KEY")]
    pub github_app_key: Option<PathBuf>,
}

impl GitHubAppArgs {
    /// The App, when one is configured; its key file read and checked now, so that a
    /// wrong path or a key that is not an RSA PEM stops `run` before anything acts.
    pub(crate) fn app(&self) -> anyhow::Result<Option<GitHubApp>> {
        let (Some(app_id), Some(path)) = (self.github_app_id, &self.github_app_key) else {
            return Ok(None);
        };
        let private_key_pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the GitHub App key {}", path.display()))?;
        if !private_key_pem.contains("-----BEGIN") || !private_key_pem.contains("PRIVATE KEY-----")
        {
            anyhow::bail!(
                "{}: not a PEM private key (expected the .pem file GitHub generates for the App)",
                path.display()
            );
        }
        Ok(Some(GitHubApp {
            app_id,
            private_key_pem,
        }))
    }
}
