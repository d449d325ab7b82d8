//! The forges `autobump run` talks to (does I/O through them): GitHub, GitLab or
//! both, each policy's requests going to the forge its repository is on.

use chrono::{DateTime, Utc};

use super::{
    ChangedFile, Check, Comment, DeliveredComment, Forge, ForgeError, ForgeKind, GitHub, GitLab,
    MergeMethod, Mergeability, Merged, NewPullRequest, Permission, PullRequest, PullRequestEdit,
    RepoName,
};

/// GitHub and/or GitLab; a [`Forge`] that sends each call to the forge of its
/// [`RepoName::forge`].
#[derive(Debug, Default)]
pub struct Forges {
    /// GitHub (`GITHUB_TOKEN` or a GitHub App), if configured.
    pub github: Option<GitHub>,
    /// GitLab (`GITLAB_TOKEN`), if configured.
    pub gitlab: Option<GitLab>,
}

/// One forge's client, borrowed.
enum One<'a> {
    GitHub(&'a GitHub),
    GitLab(&'a GitLab),
}

impl Forges {
    /// Whether neither forge is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.github.is_none() && self.gitlab.is_none()
    }

    fn of(&self, repo: &RepoName) -> Result<One<'_>, ForgeError> {
        match repo.forge {
            ForgeKind::GitHub => self.github.as_ref().map(One::GitHub),
            ForgeKind::GitLab => self.gitlab.as_ref().map(One::GitLab),
        }
        .ok_or_else(|| ForgeError::Config {
            detail: format!("no {} access for {repo}", repo.forge.as_str()),
        })
    }
}

/// Calls `$call` on the forge of `$repo` (`$f` bound to its client).
macro_rules! dispatch {
    ($self:ident, $repo:expr, $f:ident => $call:expr) => {
        match $self.of($repo)? {
            One::GitHub($f) => $call.await,
            One::GitLab($f) => $call.await,
        }
    };
}

impl Forge for Forges {
    fn repository(&self, url: &str, explicit: Option<ForgeKind>) -> Result<RepoName, String> {
        let gitlab_url = self.gitlab.as_ref().map(GitLab::url);
        let repo = RepoName::locate(url, explicit, gitlab_url)?;
        let shown = crate::repo::redact_url(url);
        match (repo.forge, &self.github, &self.gitlab) {
            (ForgeKind::GitHub, Some(github), _) => github.repository(url, explicit),
            (ForgeKind::GitLab, _, Some(gitlab)) => gitlab.repository(url, Some(ForgeKind::GitLab)),
            (ForgeKind::GitHub, None, _) => Err(format!(
                "{shown} is on GitHub: give autobump GitHub access (GITHUB_TOKEN, or a GitHub \
                 App: --github-app-id and --github-app-key)"
            )),
            (ForgeKind::GitLab, _, None) => Err(format!(
                "{shown} is on GitLab: give autobump GitLab access (GITLAB_TOKEN, and \
                 --gitlab-url for a self-managed GitLab)"
            )),
        }
    }

    async fn find_open_pr(
        &self,
        repo: &RepoName,
        head_branch: &str,
        author: &str,
    ) -> Result<Option<PullRequest>, ForgeError> {
        dispatch!(self, repo, f => f.find_open_pr(repo, head_branch, author))
    }

    async fn create_pr(
        &self,
        repo: &RepoName,
        pr: &NewPullRequest,
    ) -> Result<PullRequest, ForgeError> {
        dispatch!(self, repo, f => f.create_pr(repo, pr))
    }

    async fn update_pr(
        &self,
        repo: &RepoName,
        number: u64,
        edit: &PullRequestEdit,
    ) -> Result<PullRequest, ForgeError> {
        dispatch!(self, repo, f => f.update_pr(repo, number, edit))
    }

    async fn add_labels(
        &self,
        repo: &RepoName,
        number: u64,
        labels: &[String],
    ) -> Result<Vec<String>, ForgeError> {
        dispatch!(self, repo, f => f.add_labels(repo, number, labels))
    }

    async fn remove_label(
        &self,
        repo: &RepoName,
        number: u64,
        label: &str,
    ) -> Result<(), ForgeError> {
        dispatch!(self, repo, f => f.remove_label(repo, number, label))
    }

    async fn list_comments(
        &self,
        repo: &RepoName,
        number: u64,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Comment>, ForgeError> {
        dispatch!(self, repo, f => f.list_comments(repo, number, since))
    }

    async fn post_comment(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> Result<Comment, ForgeError> {
        dispatch!(self, repo, f => f.post_comment(repo, number, body))
    }

    async fn pr_files(&self, repo: &RepoName, number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        dispatch!(self, repo, f => f.pr_files(repo, number))
    }

    async fn checks(&self, repo: &RepoName, sha: &str) -> Result<Vec<Check>, ForgeError> {
        dispatch!(self, repo, f => f.checks(repo, sha))
    }

    async fn mergeability(&self, repo: &RepoName, number: u64) -> Result<Mergeability, ForgeError> {
        dispatch!(self, repo, f => f.mergeability(repo, number))
    }

    async fn merge(
        &self,
        repo: &RepoName,
        number: u64,
        method: MergeMethod,
        expected_head_sha: &str,
    ) -> Result<Merged, ForgeError> {
        dispatch!(self, repo, f => f.merge(repo, number, method, expected_head_sha))
    }

    async fn permission(&self, repo: &RepoName, user: &str) -> Result<Permission, ForgeError> {
        dispatch!(self, repo, f => f.permission(repo, user))
    }

    async fn git_token(&self, repo: &RepoName) -> Result<Option<String>, ForgeError> {
        dispatch!(self, repo, f => f.git_token(repo))
    }

    async fn list_comments_relaxed(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> Result<Vec<Comment>, ForgeError> {
        dispatch!(self, repo, f => f.list_comments_relaxed(repo, number))
    }

    async fn checks_relaxed(&self, repo: &RepoName, sha: &str) -> Result<Vec<Check>, ForgeError> {
        dispatch!(self, repo, f => f.checks_relaxed(repo, sha))
    }

    /// Either forge's answers may come from memory (the reconcile then confirms a
    /// green verdict strictly; a forge without a feed answers strictly anyway).
    fn answers_from_memory(&self) -> bool {
        self.github.as_ref().is_some_and(Forge::answers_from_memory)
            || self.gitlab.as_ref().is_some_and(Forge::answers_from_memory)
    }

    fn delivered_commands(&self, repo: &RepoName, policy: &str) -> Vec<DeliveredComment> {
        match self.of(repo) {
            Ok(One::GitHub(f)) => f.delivered_commands(repo, policy),
            Ok(One::GitLab(f)) => f.delivered_commands(repo, policy),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;
    use crate::forge::{GitHubAuth, GitHubConfig, GitLabConfig};

    fn github() -> GitHub {
        GitHub::new(
            GitHubConfig::new(GitHubAuth::Token("t".into())),
            Arc::new(SystemClock),
        )
        .unwrap()
    }

    fn gitlab() -> GitLab {
        GitLab::new(
            GitLabConfig::new("https://code.example.com", "glpat-t"),
            Arc::new(SystemClock),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn each_policy_goes_to_the_forge_its_repository_is_on() {
        let both = Forges {
            github: Some(github()),
            gitlab: Some(gitlab()),
        };
        assert_eq!(
            both.repository("https://github.com/acme/infra.git", None),
            Ok(RepoName::new("acme", "infra"))
        );
        // The --gitlab-url host is GitLab, even with one group level.
        assert_eq!(
            both.repository("https://code.example.com/acme/infra.git", None),
            Ok(RepoName::gitlab("acme", "infra"))
        );
        let elsewhere = both
            .repository("https://gitlab.com/acme/infra.git", None)
            .unwrap_err();
        assert!(elsewhere.contains("--gitlab-url"), "{elsewhere}");

        let github_only = Forges {
            github: Some(github()),
            gitlab: None,
        };
        let why = github_only
            .repository("https://gitlab.com/acme/platform/infra.git", None)
            .unwrap_err();
        assert!(why.contains("GITLAB_TOKEN"), "{why}");
        let gitlab_only = Forges {
            github: None,
            gitlab: Some(gitlab()),
        };
        let why = gitlab_only
            .repository("https://github.com/acme/infra.git", None)
            .unwrap_err();
        assert!(why.contains("GITHUB_TOKEN"), "{why}");
        // A call for a forge that is not configured fails, naming it.
        let e = gitlab_only
            .find_open_pr(&RepoName::new("acme", "infra"), "b", "bot")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no github access"), "{e}");
    }
}
