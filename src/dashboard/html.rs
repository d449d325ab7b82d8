//! The dashboard's pages, rendered on the server with maud (pure: an API document
//! and `now` in, HTML out). Every string from a policy, the state or the history is
//! interpolated by the template, which escapes it; nothing here builds HTML by hand.
//! The pages load one stylesheet and one script from `/assets/` (the
//! Content-Security-Policy allows nothing else) and carry no inline script or style.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::api::{Event, Gate, HoldView, PolicyDetail, PolicyList, PolicySummary, Version};
use crate::policy::v1alpha1::Reason;
use crate::status::human;

/// The overview: one row per policy.
#[must_use]
pub fn overview(list: &PolicyList) -> Markup {
    let now = list.generated_at;
    let held = list.policies.iter().filter(|p| p.hold.is_some()).count();
    page(
        "autobump",
        "/api/v1/policies",
        &list.revision,
        now,
        &html! {
            p class="counts" {
                (list.policies.len()) @if list.policies.len() == 1 { " policy" } @else { " policies" }
                @if held > 0 { " · " span class="badge held" { (held) " held" } }
            }
            @if list.policies.is_empty() {
                p class="empty" { "No policy yet." }
            } @else {
                table class="policies" {
                    thead { tr {
                        th { "Policy" } th { "Current" } th { "Known-good" } th { "Hold" }
                        th { "Baking" } th { "Next window" } th { "Gate" } th { "Last bump" }
                        th { "Last rollback" }
                    } }
                    tbody {
                        @for p in &list.policies { (row(p, now)) }
                    }
                }
            }
        },
    )
}

fn row(p: &PolicySummary, now: DateTime<Utc>) -> Markup {
    html! {
        tr class={ "policy" @if p.hold.is_some() { " is-held" } } data-policy=(p.name) {
            td data-label="Policy" class="name" { div {
                a href=(format!("/policies/{}", p.name)) { (p.name) }
                @if !p.defined { " " span class="badge muted" title="no policy defines it any more" { "no policy" } }
            } }
            (cell("Current", &version(p.current.as_ref(), now)))
            (cell("Known-good", &version(p.known_good.as_ref(), now)))
            (cell("Hold", &hold(p.hold.as_ref(), p.rollback_requested.as_ref(), now)))
            (cell("Baking", &baking(p)))
            (cell("Next window", &window(p, now)))
            (cell("Gate", &gate(&p.gate, now)))
            (cell("Last bump", &event_cell(p.last_bump.as_ref(), now)))
            (cell("Last rollback", &event_cell(p.last_rollback.as_ref(), now)))
        }
    }
}

/// One policy: its row as a list, the 30-day timeline and the whole history.
#[must_use]
pub fn detail(d: &PolicyDetail, days: i64) -> Markup {
    let p = &d.policy;
    let now = d.generated_at;
    let entries: Vec<crate::policy::v1alpha1::HistoryEntry> = d
        .history
        .iter()
        .map(|e| crate::policy::v1alpha1::HistoryEntry {
            seq: e.seq,
            at: e.at,
            reason: e.reason,
            message: e.message.clone(),
        })
        .collect();
    let in_force = p.hold.as_ref().map(|h| (h.since, h.reason.as_str()));
    page(
        &format!("{} · autobump", p.name),
        &format!("/api/v1/policies/{}", p.name),
        &d.revision,
        now,
        &html! {
            p class="crumbs" { a href="/" { "← all policies" } }
            h1 { (p.name) @if p.hold.is_some() { " " span class="badge held" { "held" } } }
            dl class="facts" {
                dt { "Current" } dd { (version(p.current.as_ref(), now)) }
                dt { "Known-good" } dd { (version(p.known_good.as_ref(), now)) }
                dt { "Hold" } dd { (hold(p.hold.as_ref(), p.rollback_requested.as_ref(), now)) }
                dt { "Baking" } dd { (baking(p)) }
                dt { "Next window" } dd { (window(p, now)) }
                dt { "Gate" } dd { (gate(&p.gate, now)) }
                dt { "Last bump" } dd { (event_cell(p.last_bump.as_ref(), now)) }
                dt { "Last rollback" } dd { (event_cell(p.last_rollback.as_ref(), now)) }
                @if let Some(repo) = &p.repo_url { dt { "Repository" } dd { a href=(repo) rel="noreferrer" { (repo) } } }
            }
            h2 { "Last " (days) " days" }
            div class="timeline-wrap" {
                (super::timeline::draw("timeline-30d", &entries, in_force, now - chrono::TimeDelta::days(days), now))
            }
            @if let Some(from) = super::timeline::closeup_from(&entries, now, days) {
                h2 { "Close-up: since " (from.format("%Y-%m-%d %H:%M:%S UTC")) }
                div class="timeline-wrap" {
                    (super::timeline::draw("timeline-closeup", &entries, in_force, from, now))
                }
            }
            p class="legend" {
                span class="key ev-Merged" {} "bump " span class="key ev-Promoted" {} "promotion "
                span class="key ev-Held" {} "hold " span class="key ev-Unheld" {} "unhold "
                span class="key ev-RolledBack" {} "rollback · hover a mark for its evidence, click it for the entry"
            }
            h2 { "History (" (d.history.len()) ")" }
            @if d.history.is_empty() {
                p class="empty" { "Nothing recorded yet." }
            } @else {
                table class="history" {
                    thead { tr { th { "#" } th { "When" } th { "What" } th { "Message" } } }
                    tbody {
                        @for e in d.history.iter().rev() {
                            tr id=(format!("e-{}", e.seq)) class=(format!("reason-{}", e.reason.as_str())) {
                                td data-label="#" { div { (e.seq) } }
                                td data-label="When" { div { (time(e.at, now)) } }
                                td data-label="What" { div { span class=(format!("tag ev-{}", e.reason.as_str())) { (e.reason.as_str()) } } }
                                td data-label="Message" class="message" { div {
                                    (e.message)
                                    @if let Some(h) = p.hold.as_ref().filter(|h| e.reason == Reason::Held && e.at == h.since) {
                                        div class="why evidence" { (h.reason) }
                                    }
                                    @for l in &e.links { " " a href=(l.url) rel="noreferrer" { (l.label) } }
                                } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A page saying what went wrong (status pages of the dashboard).
#[must_use]
pub fn problem(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body { main { h1 { (title) } p { (message) } p { a href="/" { "All policies" } } } }
        }
    }
}

/// The token form of `--dashboard-token` (posts to `/login`).
#[must_use]
pub fn login(failed: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head("Sign in · autobump")) }
            body { main class="login" {
                h1 { "autobump" }
                @if failed { p class="error" { "That token is not the dashboard's." } }
                form method="post" action="/login" {
                    label for="token" { "Dashboard token" }
                    input id="token" name="token" type="password" autocomplete="current-password" required;
                    button type="submit" { "Open the dashboard" }
                }
            } }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) }
        link rel="icon" href=(format!("/assets/favicon.svg?v={}", super::serve::ASSET_VERSION)) type="image/svg+xml";
        link rel="stylesheet" href=(format!("/assets/dashboard.css?v={}", super::serve::ASSET_VERSION));
        script src=(format!("/assets/dashboard.js?v={}", super::serve::ASSET_VERSION)) defer {}
    }
}

fn page(title: &str, api: &str, revision: &str, now: DateTime<Utc>, main: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body data-api=(api) data-revision=(revision) {
                header {
                    a class="brand" href="/" { "autobump" }
                    span id="refreshed" data-at=(now.to_rfc3339()) { "as of " (now.format("%Y-%m-%d %H:%M:%S UTC")) }
                }
                main id="main" { (main) }
            }
        }
    }
}

/// A cell of the overview: labelled for the narrow layout, its content in one box.
fn cell(label: &str, content: &Markup) -> Markup {
    html! { td data-label=(label) { div { (content) } } }
}

fn time(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let text = if t <= now {
        format!("{} ago", human(now - t))
    } else {
        format!("in {}", human(t - now))
    };
    html! { time datetime=(t.to_rfc3339()) title=(t.format("%Y-%m-%d %H:%M:%S UTC").to_string()) { (text) } }
}

fn version(v: Option<&Version>, now: DateTime<Utc>) -> Markup {
    let Some(v) = v else {
        return html! { span class="muted" { "–" } };
    };
    let images: Vec<String> = v
        .images
        .iter()
        .map(|i| format!("{}:{}", i.image, i.tag))
        .collect();
    html! {
        span class="version" title=(images.join("\n")) { (v.summary) }
        " " span class="sub" { (time(v.since, now)) }
        @if let Some(c) = &v.commit {
            " " @match &v.commit_url {
                Some(url) => a class="sub commit" href=(url) rel="noreferrer" { (short(c)) },
                None => span class="sub commit" { (short(c)) },
            }
        }
    }
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

fn hold(h: Option<&HoldView>, requested: Option<&HoldView>, now: DateTime<Utc>) -> Markup {
    html! {
        @if let Some(h) = h {
            span class="badge held" { "held" }
            " by " span class="who" { (h.by) } " " span class="sub" { (time(h.since, now)) }
            @if h.automatic { " " span class="badge auto" title="placed by autobump; a person lifts it" { "auto" } }
            div class="why" { (h.reason) }
            @if let Some(via) = &h.via {
                @if via.starts_with("https://") { div class="sub" { a href=(via) rel="noreferrer" { "where" } } }
            }
        } @else {
            span class="muted" { "–" }
        }
        @if let Some(r) = requested {
            div class="requested" { span class="badge warn" { "rollback requested" } " by " (r.by) ": " (r.reason) }
        }
    }
}

fn baking(p: &PolicySummary) -> Markup {
    let Some(b) = &p.baking else {
        return html! { span class="muted" { "–" } };
    };
    html! {
        span class="version" { (b.version) } " "
        @match (b.ends_at, b.remaining_seconds) {
            (Some(ends), Some(left)) => span class="countdown" data-ends-at=(ends.to_rfc3339()) {
                (human(chrono::TimeDelta::seconds(left))) " left"
            },
            _ => span class="sub" { "waiting for a clear gate" },
        }
        @if b.restarts > 0 { " " span class="sub" { "(restarted " (b.restarts) "×)" } }
    }
}

fn window(p: &PolicySummary, now: DateTime<Utc>) -> Markup {
    html! {
        @match p.next_window {
            Some(_) if p.window_open => span class="badge ok" { "open now" },
            Some(t) => (time(t, now)),
            None if p.defined => span class="muted" { "none found" },
            None => span class="muted" { "–" },
        }
    }
}

fn gate(g: &Gate, now: DateTime<Utc>) -> Markup {
    html! {
        span class=(format!("badge gate-{}", g.verdict)) { (g.verdict) }
        @if !g.alerts.is_empty() {
            ul class="alerts" { @for a in &g.alerts { li { (a) } } }
        }
        @if let Some(why) = &g.why { div class="why" { (why) } }
        @if let Some(t) = g.read_at { " " span class="sub" { "read " (time(t, now)) } }
    }
}

fn event_cell(e: Option<&Event>, now: DateTime<Utc>) -> Markup {
    let Some(e) = e else {
        return html! { span class="muted" { "–" } };
    };
    html! {
        (time(e.at, now)) " "
        span class=(format!("tag ev-{}", e.reason.as_str())) { (e.reason.as_str()) }
        div class="why" { (e.message) }
        @for l in &e.links { a class="sub" href=(l.url) rel="noreferrer" { (l.label) } " " }
    }
}
