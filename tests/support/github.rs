//! GitHub test data cached by `scripts/setup` under `.cache/github/`: GitHub's `OpenAPI`
//! description (npm `@octokit/openapi`) and webhook payload examples (npm
//! `@octokit/webhooks-examples`).

use std::path::{Path, PathBuf};

/// `.cache/github/` in the repository.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/github")
}

fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} not found ({what}): run scripts/setup (it fetches the GitHub test data into .cache/github/)",
        path.display()
    );
    path
}

/// `.cache/github/api.github.com.json`: GitHub's REST API description (`OpenAPI`), for checking the
/// fake's responses against the real schemas.
#[must_use]
pub fn github_openapi_path() -> PathBuf {
    require(
        cache_dir().join("api.github.com.json"),
        "npm @octokit/openapi, generated/api.github.com.json",
    )
}

/// `.cache/github/webhooks-examples/`: the unpacked `@octokit/webhooks-examples`
/// package. Its `api.github.com/index.json` is a list of
/// `{name, description, actions, properties, examples}`, one per webhook event.
#[must_use]
pub fn webhooks_examples_dir() -> PathBuf {
    let dir = require(
        cache_dir().join("webhooks-examples"),
        "npm @octokit/webhooks-examples",
    );
    require(
        dir.join("api.github.com/index.json"),
        "webhook examples index",
    );
    dir
}

/// The example payloads of one webhook event (`"pull_request"`, `"issue_comment"`, …)
/// on api.github.com; panics if the event has none.
#[must_use]
pub fn webhook_examples(event: &str) -> Vec<serde_json::Value> {
    let index = webhooks_examples_dir().join("api.github.com/index.json");
    let text = std::fs::read_to_string(&index)
        .unwrap_or_else(|e| panic!("reading {}: {e}", index.display()));
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", index.display()));
    let examples = events
        .iter()
        .find(|e| e["name"] == event)
        .and_then(|e| e["examples"].as_array())
        .unwrap_or_else(|| panic!("{} has no examples for event {event:?}", index.display()));
    assert!(
        !examples.is_empty(),
        "{} has an empty example list for event {event:?}",
        index.display()
    );
    examples.clone()
}
