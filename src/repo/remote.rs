//! Talking to the remote (does I/O: network): fetching branches into the cache and
//! pushing one commit to one branch, with credentials and a transfer deadline.

use std::cell::RefCell;
use std::collections::HashMap;

use git2::{AutotagOption, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository};

use super::auth::{CredentialState, redact_url};
use super::error::{Failure, Phase, classify};
use super::{GitConfig, RepoError, Source};
use crate::clock::Deadline;

/// The local ref that tracks the remote's `branch`.
pub(super) fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

/// The callbacks every network operation uses: credentials (offered once), and
/// transfer progress that aborts after the deadline.
fn callbacks<'a>(
    source: &'a Source,
    state: &'a CredentialState,
    deadline: Deadline,
) -> RemoteCallbacks<'a> {
    let mut cbs = RemoteCallbacks::new();
    cbs.credentials(move |url, user, allowed| state.answer(&source.auth, url, user, allowed));
    cbs.transfer_progress(move |_| !deadline.expired());
    cbs.sideband_progress(move |_| !deadline.expired());
    cbs
}

/// Fetches `branches` from the remote into their tracking refs and returns the heads
/// the remote advertised for them (a branch missing there is missing here, and its
/// stale tracking ref is deleted).
pub(super) fn fetch(
    repo: &Repository,
    config: &GitConfig,
    source: &Source,
    branches: &[&str],
) -> Result<HashMap<String, Oid>, Failure> {
    let url = redact_url(source.url.as_str());
    let local = |e: git2::Error| classify(&e, Phase::Local, &url, false);
    let mut remote = repo.remote_anonymous(source.url.as_str()).map_err(|e| {
        Failure::Error(RepoError::InvalidRequest {
            detail: format!("{url}: {}", e.message()),
        })
    })?;
    let refspecs: Vec<String> = branches
        .iter()
        .map(|b| format!("+refs/heads/{b}:{}", tracking_ref(b)))
        .collect();
    let state = CredentialState::default();
    let deadline = Deadline::after(config.transfer_timeout);
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks(source, &state, deadline))
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    if let Err(e) = remote.fetch(&refspecs, Some(&mut options), None) {
        if deadline.expired() && !state.refused() {
            return Err(Failure::Error(RepoError::Network {
                url,
                detail: format!(
                    "transfer still running after {:?}: {}",
                    config.transfer_timeout,
                    e.message()
                ),
            }));
        }
        return Err(classify(&e, Phase::Remote, &url, state.refused()));
    }
    let advertised: HashMap<String, Oid> = remote
        .list()
        .map_err(local)?
        .iter()
        .map(|h| (h.name().to_owned(), h.oid()))
        .collect();
    let mut heads = HashMap::new();
    for branch in branches {
        let tracking = tracking_ref(branch);
        match advertised.get(&format!("refs/heads/{branch}")) {
            Some(oid) => {
                // libgit2 has already updated the tracking ref; make sure anyway.
                repo.reference(&tracking, *oid, true, "autobump: fetch")
                    .map_err(local)?;
                heads.insert((*branch).to_owned(), *oid);
            }
            None => {
                if let Ok(mut r) = repo.find_reference(&tracking) {
                    r.delete().map_err(local)?;
                }
            }
        }
    }
    tracing::debug!(?branches, found = heads.len(), "fetched");
    Ok(heads)
}

/// How a push ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PushResult {
    /// The remote branch now points at the commit.
    Done,
    /// Another push got there first (not a fast-forward any more, or the server's ref
    /// moved while it was updating it): fetch and try again.
    Race(String),
}

/// Whether a server's push status (`ng <ref> <why>`) says another push won.
fn is_race(status: &str) -> bool {
    const RACE: &[&str] = &[
        "non-fast-forward",
        "fetch first",
        "failed to update ref",
        "failed to lock",
        "cannot lock ref",
        "stale info",
        "incorrect old value",
    ];
    let s = status.to_ascii_lowercase();
    RACE.iter().any(|r| s.contains(r))
}

/// Pushes `commit` to `branch` on the remote (forced when `force`), then points the
/// branch's tracking ref at it.
pub(super) fn push(
    repo: &Repository,
    config: &GitConfig,
    source: &Source,
    commit: Oid,
    branch: &str,
    force: bool,
) -> Result<PushResult, Failure> {
    let url = redact_url(source.url.as_str());
    let local = |e: git2::Error| classify(&e, Phase::Local, &url, false);
    // libgit2 pushes refs, not object ids: name the commit with a private local ref.
    let local_ref = format!("refs/autobump/push/{branch}");
    repo.reference(&local_ref, commit, true, "autobump: push")
        .map_err(local)?;
    let mut remote = repo.remote_anonymous(source.url.as_str()).map_err(|e| {
        Failure::Error(RepoError::InvalidRequest {
            detail: format!("{url}: {}", e.message()),
        })
    })?;
    let refspec = format!(
        "{}{local_ref}:refs/heads/{branch}",
        if force { "+" } else { "" }
    );
    let state = CredentialState::default();
    let statuses: RefCell<Vec<(String, Option<String>)>> = RefCell::new(Vec::new());
    let result = {
        let mut cbs = callbacks(source, &state, Deadline::after(config.transfer_timeout));
        cbs.push_update_reference(|name, status| {
            statuses
                .borrow_mut()
                .push((name.to_owned(), status.map(str::to_owned)));
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(cbs);
        remote.push(&[refspec.as_str()], Some(&mut options))
    };
    if let Err(e) = result {
        if e.code() == git2::ErrorCode::NotFastForward {
            return Ok(PushResult::Race(e.message().to_owned()));
        }
        return Err(classify(&e, Phase::Remote, &url, state.refused()));
    }
    if let Some(why) = statuses.into_inner().into_iter().find_map(|(_, s)| s) {
        if is_race(&why) {
            return Ok(PushResult::Race(why));
        }
        return Err(Failure::Error(RepoError::PushRejected {
            url,
            branch: branch.to_owned(),
            detail: why,
        }));
    }
    repo.reference(&tracking_ref(branch), commit, true, "autobump: pushed")
        .map_err(local)?;
    tracing::info!(%commit, branch, force, "pushed");
    Ok(PushResult::Done)
}

#[cfg(test)]
mod tests {
    use super::is_race;

    #[test]
    fn race_statuses() {
        for s in [
            "failed to update ref",
            "non-fast-forward",
            "fetch first",
            "cannot lock ref 'refs/heads/main': is at 1234 but expected 5678",
        ] {
            assert!(is_race(s), "{s}");
        }
        for s in [
            "pre-receive hook declined",
            "protected branch hook declined",
        ] {
            assert!(!is_race(s), "{s}");
        }
    }
}
