//! JSON objects shaped like GitHub's (users, repository, labels, pull requests,
//! comments, statuses, check runs), complete enough to validate against the
//! `OpenAPI` schemas: every required field is present, URLs follow GitHub's patterns
//! (rooted at the fake's address).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// A stable positive id for a name (so the same user or label keeps its id).
pub fn id_of(name: &str) -> u64 {
    // FNV-1a, folded into the range JavaScript and GitHub ids live in.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 1_000_000_000 + 1
}

pub fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Where things live: the API root (`http://127.0.0.1:PORT`) and the web root.
#[derive(Clone)]
pub struct Urls {
    pub api: String,
    pub html: String,
    pub owner: String,
    pub name: String,
}

impl Urls {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    pub fn repo_api(&self) -> String {
        format!("{}/repos/{}", self.api, self.full_name())
    }

    pub fn repo_html(&self) -> String {
        format!("{}/{}", self.html, self.full_name())
    }
}

/// `simple-user`.
pub fn user(urls: &Urls, login: &str) -> Value {
    let api = format!("{}/users/{login}", urls.api);
    let kind = if login.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    };
    json!({
        "login": login,
        "id": id_of(login),
        "node_id": format!("U_{}", id_of(login)),
        "avatar_url": format!("{}/avatars/{login}", urls.html),
        "gravatar_id": "",
        "url": api,
        "html_url": format!("{}/{login}", urls.html),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": kind,
        "site_admin": false,
        "user_view_type": "public"
    })
}

/// `repository` (also valid as `minimal-repository`).
pub fn repository(urls: &Urls, created: DateTime<Utc>, open_issues: u64) -> Value {
    let api = urls.repo_api();
    let full = urls.full_name();
    let mut repo = json!({
        "id": id_of(&full),
        "node_id": format!("R_{}", id_of(&full)),
        "name": urls.name,
        "full_name": full,
        "owner": user(urls, &urls.owner),
        "private": false,
        "html_url": urls.repo_html(),
        "description": null,
        "fork": false,
        "url": api,
        "clone_url": format!("{}.git", urls.repo_html()),
        "git_url": format!("git://github.com/{full}.git"),
        "ssh_url": format!("git@github.com:{full}.git"),
        "svn_url": urls.repo_html(),
        "mirror_url": null,
        "homepage": null,
        "language": null,
        "forks_count": 0,
        "forks": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "watchers": 0,
        "size": 0
    });
    // Two `json!` calls: one would exceed the macro recursion limit.
    let more = json!({
        "default_branch": "main",
        "open_issues_count": open_issues,
        "open_issues": open_issues,
        "is_template": false,
        "topics": [],
        "has_issues": true,
        "has_projects": true,
        "has_wiki": true,
        "has_pages": false,
        "has_downloads": true,
        "archived": false,
        "disabled": false,
        "visibility": "public",
        "license": null,
        "pushed_at": time(created),
        "created_at": time(created),
        "updated_at": time(created),
        "allow_forking": true,
        "web_commit_signoff_required": false
    });
    if let (Some(repo), Value::Object(more)) = (repo.as_object_mut(), more) {
        repo.extend(more);
    }
    let templates = [
        ("archive_url", "/{archive_format}{/ref}"),
        ("assignees_url", "/assignees{/user}"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("branches_url", "/branches{/branch}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("comments_url", "/comments{/number}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("contributors_url", "/contributors"),
        ("deployments_url", "/deployments"),
        ("downloads_url", "/downloads"),
        ("events_url", "/events"),
        ("forks_url", "/forks"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("issue_events_url", "/issues/events{/number}"),
        ("issues_url", "/issues{/number}"),
        ("keys_url", "/keys{/key_id}"),
        ("labels_url", "/labels{/name}"),
        ("languages_url", "/languages"),
        ("merges_url", "/merges"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("stargazers_url", "/stargazers"),
        ("statuses_url", "/statuses/{sha}"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("tags_url", "/tags"),
        ("teams_url", "/teams"),
        ("trees_url", "/git/trees{/sha}"),
    ];
    for (field, suffix) in templates {
        repo[field] = Value::String(format!("{api}{suffix}"));
    }
    repo
}

/// `label`.
pub fn label(urls: &Urls, name: &str) -> Value {
    json!({
        "id": id_of(&format!("label:{name}")),
        "node_id": format!("LA_{}", id_of(&format!("label:{name}"))),
        "url": format!("{}/labels/{}", urls.repo_api(), name.replace('/', "%2F")),
        "name": name,
        // GitHub's pull-request schemas type a label's description as a plain string
        // (the labels endpoints allow null); "" satisfies both.
        "description": "",
        "color": "ededed",
        "default": false
    })
}

/// What a pull-request object is built from.
pub struct PullView<'a> {
    pub number: u64,
    pub title: &'a str,
    pub body: Option<&'a str>,
    pub author: &'a str,
    pub open: bool,
    pub draft: bool,
    pub head_branch: &'a str,
    pub head_sha: &'a str,
    pub base_branch: &'a str,
    pub base_sha: &'a str,
    pub labels: &'a [String],
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub merged_at: Option<DateTime<Utc>>,
    pub merged_by: Option<&'a str>,
    pub merge_commit_sha: Option<&'a str>,
    pub mergeable: Option<bool>,
    pub mergeable_state: &'a str,
    pub comments: u64,
    pub commits: u64,
    pub additions: u64,
    pub deletions: u64,
    pub changed_files: u64,
    pub repo: &'a Value,
}

fn branch(urls: &Urls, owner_login: &str, name: &str, sha: &str, repo: &Value) -> Value {
    json!({
        "label": format!("{owner_login}:{name}"),
        "ref": name,
        "sha": sha,
        "user": user(urls, owner_login),
        "repo": repo
    })
}

/// `pull-request` (single PR); [`simple`] turns it into `pull-request-simple`.
pub fn pull(urls: &Urls, pr: &PullView<'_>) -> Value {
    let api = format!("{}/pulls/{}", urls.repo_api(), pr.number);
    let issue_api = format!("{}/issues/{}", urls.repo_api(), pr.number);
    let html = format!("{}/pull/{}", urls.repo_html(), pr.number);
    let statuses = format!("{}/statuses/{}", urls.repo_api(), pr.head_sha);
    let labels: Vec<Value> = pr.labels.iter().map(|l| label(urls, l)).collect();
    let link = |href: &str| json!({ "href": href });
    let mut pull = json!({
        "url": api,
        "id": id_of(&format!("pr:{}", pr.number)),
        "node_id": format!("PR_{}", id_of(&format!("pr:{}", pr.number))),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": issue_api,
        "commits_url": format!("{api}/commits"),
        "review_comments_url": format!("{api}/comments"),
        "review_comment_url": format!("{}/pulls/comments{{/number}}", urls.repo_api()),
        "comments_url": format!("{issue_api}/comments"),
        "statuses_url": statuses,
        "number": pr.number,
        "state": if pr.open { "open" } else { "closed" },
        "locked": false,
        "title": pr.title,
        "user": user(urls, pr.author),
        "body": pr.body,
        "labels": labels,
        "milestone": null,
        "active_lock_reason": null,
        "created_at": time(pr.created_at),
        "updated_at": time(pr.updated_at),
        "closed_at": pr.closed_at.map(time),
        "merged_at": pr.merged_at.map(time),
        "merge_commit_sha": pr.merge_commit_sha,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": []
    });
    // Two `json!` calls: one would exceed the macro recursion limit.
    let more = json!({
        "head": branch(urls, &urls.owner, pr.head_branch, pr.head_sha, pr.repo),
        "base": branch(urls, &urls.owner, pr.base_branch, pr.base_sha, pr.repo),
        "_links": {
            "self": link(&api),
            "html": link(&html),
            "issue": link(&issue_api),
            "comments": link(&format!("{issue_api}/comments")),
            "review_comments": link(&format!("{api}/comments")),
            "review_comment": link(&format!("{}/pulls/comments{{/number}}", urls.repo_api())),
            "commits": link(&format!("{api}/commits")),
            "statuses": link(&statuses)
        },
        "author_association": if pr.author == urls.owner { "OWNER" } else { "CONTRIBUTOR" },
        "auto_merge": null,
        "draft": pr.draft,
        "merged": pr.merged_at.is_some(),
        "mergeable": pr.mergeable,
        "rebaseable": pr.mergeable,
        "mergeable_state": pr.mergeable_state,
        "merged_by": pr.merged_by.map(|login| user(urls, login)),
        "comments": pr.comments,
        "review_comments": 0,
        "maintainer_can_modify": false,
        "commits": pr.commits,
        "additions": pr.additions,
        "deletions": pr.deletions,
        "changed_files": pr.changed_files
    });
    if let (Some(object), Value::Object(more)) = (pull.as_object_mut(), more) {
        object.extend(more);
    }
    pull
}

/// `pull-request-simple`: what lists return (no merge state or counts).
pub fn simple(mut pull: Value) -> Value {
    if let Some(object) = pull.as_object_mut() {
        for field in [
            "merged",
            "mergeable",
            "rebaseable",
            "mergeable_state",
            "merged_by",
            "comments",
            "review_comments",
            "maintainer_can_modify",
            "commits",
            "additions",
            "deletions",
            "changed_files",
        ] {
            object.remove(field);
        }
    }
    pull
}

/// `issue-comment`.
pub fn comment(
    urls: &Urls,
    issue: u64,
    id: u64,
    author: &str,
    body: &str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> Value {
    json!({
        "id": id,
        "node_id": format!("IC_{id}"),
        "url": format!("{}/issues/comments/{id}", urls.repo_api()),
        "html_url": format!("{}/pull/{issue}#issuecomment-{id}", urls.repo_html()),
        "issue_url": format!("{}/issues/{issue}", urls.repo_api()),
        "body": body,
        "user": user(urls, author),
        "created_at": time(created_at),
        "updated_at": time(updated_at),
        "author_association": if author == urls.owner { "OWNER" } else { "NONE" }
    })
}

/// `diff-entry`.
#[allow(clippy::too_many_arguments)] // one field each; a struct would only rename them
pub fn diff_entry(
    urls: &Urls,
    head_sha: &str,
    filename: &str,
    previous: Option<&str>,
    status: &str,
    blob_sha: Option<&str>,
    additions: u64,
    deletions: u64,
    patch: Option<&str>,
) -> Value {
    let mut entry = json!({
        "sha": blob_sha,
        "filename": filename,
        "status": status,
        "additions": additions,
        "deletions": deletions,
        "changes": additions + deletions,
        "blob_url": format!("{}/blob/{head_sha}/{filename}", urls.repo_html()),
        "raw_url": format!("{}/raw/{head_sha}/{filename}", urls.repo_html()),
        "contents_url": format!("{}/contents/{filename}?ref={head_sha}", urls.repo_api()),
    });
    if let Some(patch) = patch {
        entry["patch"] = Value::String(patch.to_owned());
    }
    if let Some(previous) = previous {
        entry["previous_filename"] = Value::String(previous.to_owned());
    }
    entry
}

/// `simple-commit-status`.
#[allow(clippy::too_many_arguments)] // one field each
pub fn status(
    urls: &Urls,
    sha: &str,
    id: u64,
    context: &str,
    state: &str,
    description: Option<&str>,
    target_url: Option<&str>,
    at: DateTime<Utc>,
) -> Value {
    json!({
        "url": format!("{}/statuses/{sha}", urls.repo_api()),
        "avatar_url": null,
        "id": id,
        "node_id": format!("SC_{id}"),
        "state": state,
        "description": description,
        "target_url": target_url,
        "context": context,
        "created_at": time(at),
        "updated_at": time(at),
    })
}

/// `check-run`.
#[allow(clippy::too_many_arguments)] // one field each
pub fn check_run(
    urls: &Urls,
    sha: &str,
    id: u64,
    name: &str,
    status: &str,
    conclusion: Option<&str>,
    started_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    pull_requests: &[Value],
) -> Value {
    json!({
        "id": id,
        "node_id": format!("CR_{id}"),
        "head_sha": sha,
        "external_id": format!("ext-{id}"),
        "url": format!("{}/check-runs/{id}", urls.repo_api()),
        "html_url": format!("{}/runs/{id}", urls.repo_html()),
        "details_url": format!("{}/ci/{id}", urls.html),
        "status": status,
        "conclusion": conclusion,
        "started_at": time(started_at),
        "completed_at": completed_at.map(time),
        "output": {
            "title": null,
            "summary": null,
            "text": null,
            "annotations_count": 0,
            "annotations_url": format!("{}/check-runs/{id}/annotations", urls.repo_api())
        },
        "name": name,
        "check_suite": { "id": id_of(&format!("suite:{sha}")) },
        "app": null,
        "pull_requests": pull_requests
    })
}

/// `pull-request-minimal`, as check runs list them.
pub fn pull_minimal(urls: &Urls, number: u64, head: (&str, &str), base: (&str, &str)) -> Value {
    let repo = json!({
        "id": id_of(&urls.full_name()),
        "url": urls.repo_api(),
        "name": urls.name
    });
    json!({
        "id": id_of(&format!("pr:{number}")),
        "number": number,
        "url": format!("{}/pulls/{number}", urls.repo_api()),
        "head": { "ref": head.0, "sha": head.1, "repo": repo },
        "base": { "ref": base.0, "sha": base.1, "repo": repo }
    })
}

/// `basic-error`.
pub fn error(status: u16, message: &str, docs: &str) -> Value {
    json!({
        "message": message,
        "documentation_url": format!("https://docs.github.com/rest/{docs}"),
        "status": status.to_string(),
    })
}

/// `validation-error` (422).
pub fn validation_error(message: &str, resource: &str, code: &str, docs: &str) -> Value {
    json!({
        "message": "Validation Failed",
        "errors": [{ "resource": resource, "code": code, "message": message }],
        "documentation_url": format!("https://docs.github.com/rest/{docs}"),
        "status": "422"
    })
}
