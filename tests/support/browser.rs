//! A real headless Chromium (Debian's `chromium`, installed by `scripts/setup`)
//! loading one page, driven over the Chrome devtools protocol by `tests/support/cdp.py`
//! (Python standard library only): what the page shows, what it logged, how long it
//! took to load, and a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// What one page load showed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageLoad {
    /// Navigation start to the end of the load event, as the page measured it.
    pub load_ms: Option<f64>,
    /// Console errors and warnings, uncaught exceptions, and browser log entries of
    /// level warning or error (CSP violations, failed requests).
    pub console: Vec<String>,
    /// The value of each expression asked for, in order.
    pub values: Vec<serde_json::Value>,
    /// The screenshot's size in bytes.
    pub screenshot_bytes: usize,
}

/// Where tests keep their screenshots: `target/dashboard-screenshots/` (kept after
/// the test, for people and CI artifacts).
#[must_use]
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/dashboard-screenshots");
    dir
}

/// Loads `url` in a `width`×`height` viewport (a phone's when narrower than 500 px),
/// waits `wait_ms` more after the load event (so the page's own refresh runs), then
/// evaluates each of `expressions` and stores a full-page screenshot at `shot`.
/// Panics naming `scripts/setup` when Chromium is missing or does not start.
#[must_use]
pub fn load(
    url: &str,
    (width, height): (u32, u32),
    wait_ms: u64,
    shot: &Path,
    expressions: &[&str],
) -> PageLoad {
    let chromium = super::process::find_binary("chromium", "chromium");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/cdp.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(chromium)
        .arg(url)
        .arg(width.to_string())
        .arg(height.to_string())
        .arg(shot)
        .arg(wait_ms.to_string())
        .args(expressions)
        .output()
        .expect("running python3 (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "headless Chromium could not load {url}: {}\n(run scripts/setup: it installs the Debian package `chromium`)",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cdp.py printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
