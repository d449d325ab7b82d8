//! One policy's last 30 days as an SVG drawn on the server (pure).
//!
//! Four lanes — bumps (opened, pushed, merged, deployed), promotions, holds (each
//! hold a band from when it was placed to when it was lifted, or to now) and
//! rollbacks — over a day grid that ends at `now`. Every event is a mark with a
//! `<title>` (the browser's hover text: time, reason and the recorded message, which
//! for an alert hold is the alerts' evidence) inside a link to its row of the
//! history table (`#e-SEQ`), so a click shows the whole entry. Text is escaped by
//! the template; the drawing needs no script and no inline style.

use chrono::{DateTime, TimeDelta, Utc};
use maud::{Markup, html};

use crate::policy::v1alpha1::{HistoryEntry, Reason};

/// Drawing width in SVG units (the element scales to its box).
const WIDTH: f64 = 1000.0;
/// Where the lanes start (room for their labels).
const LEFT: f64 = 110.0;
/// Height of one lane.
const LANE: f64 = 34.0;
/// Room above the first lane for the date labels.
const TOP: f64 = 22.0;

/// The lanes, top to bottom.
const LANES: [&str; 4] = ["bumps", "promotions", "holds", "rollbacks"];

/// The lane an entry is drawn in.
#[must_use]
pub fn lane(reason: Reason) -> usize {
    match reason {
        Reason::Deployed | Reason::BumpPushed | Reason::Pushed | Reason::Merged => 0,
        Reason::Promoted => 1,
        Reason::Held | Reason::Unheld => 2,
        Reason::RolledBack
        | Reason::RollbackRequested
        | Reason::NothingToRollBack
        | Reason::ClusterPatched
        | Reason::ClusterPatchFailed => 3,
    }
}

/// Grid steps to choose from, in seconds (10 s to a week).
const STEPS: [i64; 11] = [
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
    6 * 3600,
    12 * 3600,
    86_400,
    7 * 86_400,
];

/// The timeline of `history` (oldest first) from `from` to `now`; `hold` is the hold
/// in force (since when, and its reason: the alerts' evidence for an alert hold),
/// drawn as a band up to now, its reason in the hover text of the entry that placed
/// it. `id` names the drawing.
#[must_use]
// Coordinates: seconds within weeks and lane numbers below 10 are exact in f64.
#[allow(clippy::cast_precision_loss)]
pub fn draw(
    id: &str,
    history: &[HistoryEntry],
    hold: Option<(DateTime<Utc>, &str)>,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Markup {
    let held_since = hold.map(|(since, _)| since);
    let total = (now - from).num_seconds().max(1);
    let x = |t: DateTime<Utc>| {
        let s = (t - from).num_seconds().clamp(0, total) as f64;
        LEFT + (WIDTH - LEFT - 12.0) * s / total as f64
    };
    let height = TOP + LANE * LANES.len() as f64 + 6.0;
    let shown: Vec<&HistoryEntry> = history.iter().filter(|e| e.at >= from).collect();
    let spans = hold_spans(history, held_since, from, now);
    // Grid lines back from now at a step giving at most 40 of them, about 5 labelled.
    let step = STEPS
        .iter()
        .copied()
        .find(|s| total / s <= 40)
        .unwrap_or(7 * 86_400);
    let ticks = total / step;
    let every = (ticks / 5).max(1);
    let format = if step >= 86_400 {
        "%b %d"
    } else if step >= 60 {
        "%H:%M"
    } else {
        "%H:%M:%S"
    };
    html! {
        svg id=(id) class="timeline" viewBox=(format!("0 0 {WIDTH} {height}")) role="img"
            aria-label=(format!("timeline from {} to {}: {} events", stamp(from), stamp(now), shown.len())) {
            @for (i, name) in LANES.iter().enumerate() {
                @let y = TOP + LANE * i as f64;
                rect class=(format!("lane lane-{}", i % 2)) x=(LEFT) y=(y) width=(WIDTH - LEFT) height=(LANE) {}
                text class="lane-label" x="4" y=(y + LANE / 2.0 + 5.0) { (name) }
            }
            @for k in 0..=ticks {
                @let t = now - TimeDelta::seconds(k * step);
                @let gx = x(t);
                line class=(if k % every == 0 { "grid major" } else { "grid" }) x1=(gx) x2=(gx) y1=(TOP) y2=(height - 6.0) {}
                @if k % every == 0 && (k == 0 || gx > LEFT + 30.0) {
                    text class="date" x=(gx) y="14" text-anchor=(if k == 0 { "end" } else { "middle" }) {
                        (if k == 0 { "now".to_owned() } else { t.format(format).to_string() })
                    }
                }
            }
            @for (start, end, open) in &spans {
                rect class=(if *open { "held-span open" } else { "held-span" })
                    x=(x(*start)) y=(TOP + LANE * 2.0 + 8.0) width=((x(*end) - x(*start)).max(2.0)) height=(LANE - 16.0) {
                    title { (format!("held {} – {}", stamp(*start), if *open { "now".to_owned() } else { stamp(*end) })) }
                }
            }
            @for e in &shown {
                @let cx = x(e.at);
                @let cy = TOP + LANE * lane(e.reason) as f64 + LANE / 2.0;
                a href=(format!("#e-{}", e.seq)) class="mark" {
                    circle class=(format!("ev ev-{}", e.reason.as_str())) cx=(format!("{cx:.1}")) cy=(cy) r="7"
                        data-seq=(e.seq) data-reason=(e.reason.as_str()) {
                        title {
                            (format!("{} {}: {}", stamp(e.at), e.reason, e.message))
                            @if let Some((_, reason)) = hold.filter(|(since, _)| e.reason == Reason::Held && e.at == *since) {
                                "\n" (reason)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Where a close-up of the recent events starts, when they crowd together on the
/// `days`-wide timeline: the oldest of the last 12 events within it, less a margin;
/// `None` when there are fewer than two or they span more than a 20th of it.
#[must_use]
pub fn closeup_from(
    history: &[HistoryEntry],
    now: DateTime<Utc>,
    days: i64,
) -> Option<DateTime<Utc>> {
    let window = TimeDelta::days(days);
    let recent: Vec<&HistoryEntry> = history
        .iter()
        .rev()
        .take_while(|e| e.at >= now - window)
        .take(12)
        .collect();
    let oldest = recent.last()?.at;
    let span = now - oldest;
    (recent.len() >= 2 && span * 20 < window)
        .then(|| oldest - (span / 10).max(TimeDelta::seconds(5)))
}

/// The holds that overlap `[from, now]`: `(start, end, still in force)`.
fn hold_spans(
    history: &[HistoryEntry],
    held_since: Option<DateTime<Utc>>,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>, bool)> {
    let mut spans = Vec::new();
    let mut start: Option<DateTime<Utc>> = None;
    for e in history {
        match e.reason {
            Reason::Held if start.is_none() => start = Some(e.at),
            Reason::Unheld => {
                if let Some(s) = start.take()
                    && e.at >= from
                {
                    spans.push((s.max(from), e.at, false));
                }
            }
            _ => {}
        }
    }
    if let Some(since) = held_since.or(start) {
        spans.push((since.max(from), now, true));
    }
    spans
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn entry(seq: u64, when: &str, reason: Reason, message: &str) -> HistoryEntry {
        HistoryEntry {
            seq,
            at: at(when),
            reason,
            message: message.into(),
        }
    }

    #[test]
    fn events_of_the_window_are_marked_with_escaped_evidence() {
        let now = at("2026-12-06T12:00:00Z");
        let history = vec![
            entry(1, "2026-10-01T10:00:00Z", Reason::Merged, "too old to draw"),
            entry(2, "2026-12-01T10:00:00Z", Reason::Merged, "PR #7 merged"),
            entry(
                3,
                "2026-12-02T10:00:00Z",
                Reason::Held,
                "held by alert:HookDown: <b>5xx</b> & rising",
            ),
            entry(
                4,
                "2026-12-02T10:01:00Z",
                Reason::RolledBack,
                "v2 -> v1 pushed",
            ),
        ];
        let from = now - TimeDelta::days(30);
        let hold = Some((at("2026-12-02T10:00:00Z"), "WebErrors {job=\"web\"}: 5xx"));
        let svg = draw("t", &history, hold, from, now).into_string();
        assert!(
            svg.contains("rising\nWebErrors {job=&quot;web&quot;}: 5xx"),
            "{svg}"
        );
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("href=\"#e-3\""));
        assert!(svg.contains("&lt;b&gt;5xx&lt;/b&gt; &amp; rising"), "{svg}");
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("held-span open"));
        assert!(!svg.contains("too old"));
    }

    #[test]
    fn crowded_recent_events_get_a_closeup() {
        let now = at("2026-12-06T12:00:00Z");
        let story = vec![
            entry(1, "2026-12-06T11:58:00Z", Reason::Pushed, "1.0.0 -> 1.1.0"),
            entry(
                2,
                "2026-12-06T11:59:00Z",
                Reason::Held,
                "held by alert:WebErrors",
            ),
            entry(
                3,
                "2026-12-06T11:59:10Z",
                Reason::RolledBack,
                "1.1.0 -> 1.0.0",
            ),
        ];
        assert_eq!(
            closeup_from(&story, now, 30),
            Some(at("2026-12-06T11:57:48Z")),
            "two minutes of events, a 12 s margin"
        );
        let spread = vec![
            entry(1, "2026-11-10T10:00:00Z", Reason::Merged, "PR #1"),
            entry(2, "2026-12-06T11:00:00Z", Reason::Merged, "PR #2"),
        ];
        assert_eq!(closeup_from(&spread, now, 30), None);
        assert_eq!(closeup_from(&story[..1], now, 30), None);
        let svg = draw("c", &story, None, at("2026-12-06T11:57:48Z"), now).into_string();
        assert!(svg.contains(">11:59:00<"), "labels every 20 s: {svg}");
    }

    #[test]
    fn a_lifted_hold_is_a_closed_band() {
        let now = at("2026-12-06T12:00:00Z");
        let history = vec![
            entry(
                1,
                "2026-12-01T10:00:00Z",
                Reason::Held,
                "held by user:alice: flaky",
            ),
            entry(2, "2026-12-01T12:00:00Z", Reason::Unheld, "lifted"),
        ];
        let spans = hold_spans(&history, None, now - TimeDelta::days(30), now);
        assert_eq!(
            spans,
            vec![(
                at("2026-12-01T10:00:00Z"),
                at("2026-12-01T12:00:00Z"),
                false
            )]
        );
    }
}
