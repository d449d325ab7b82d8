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

/// The timeline of `history` (oldest first) over the `days` before `now`;
/// `held_since` is the hold in force, drawn as a band up to now.
#[must_use]
// Coordinates: seconds within 30 days and lane numbers below 10 are exact in f64.
#[allow(clippy::cast_precision_loss)]
pub fn draw(
    history: &[HistoryEntry],
    held_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    days: i64,
) -> Markup {
    let from = now - TimeDelta::days(days);
    let span = (now - from).num_seconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        let s = (t - from)
            .num_seconds()
            .clamp(0, (now - from).num_seconds()) as f64;
        LEFT + (WIDTH - LEFT - 10.0) * s / span
    };
    let height = TOP + LANE * LANES.len() as f64 + 6.0;
    let shown: Vec<&HistoryEntry> = history.iter().filter(|e| e.at >= from).collect();
    let spans = hold_spans(history, held_since, from, now);
    html! {
        svg class="timeline" viewBox=(format!("0 0 {WIDTH} {height}")) role="img"
            aria-label=(format!("timeline of the last {days} days: {} events", shown.len())) {
            @for (i, name) in LANES.iter().enumerate() {
                @let y = TOP + LANE * i as f64;
                rect class=(format!("lane lane-{}", i % 2)) x=(LEFT) y=(y) width=(WIDTH - LEFT) height=(LANE) {}
                text class="lane-label" x="4" y=(y + LANE / 2.0 + 5.0) { (name) }
            }
            @for d in 0..=days {
                @let t = from + TimeDelta::days(d);
                @let gx = x(t);
                line class=(if d % 7 == 0 { "grid week" } else { "grid" }) x1=(gx) x2=(gx) y1=(TOP) y2=(height - 6.0) {}
                @if (days - d) % 7 == 0 {
                    text class="date" x=(gx) y="14" text-anchor=(if d == days { "end" } else { "middle" }) {
                        (if d == days { "now".to_owned() } else { t.format("%b %d").to_string() })
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
                        title { (format!("{} {}: {}", stamp(e.at), e.reason, e.message)) }
                    }
                }
            }
        }
    }
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
    t.format("%Y-%m-%d %H:%M UTC").to_string()
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
        let svg = draw(&history, Some(at("2026-12-02T10:00:00Z")), now, 30).into_string();
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("href=\"#e-3\""));
        assert!(svg.contains("&lt;b&gt;5xx&lt;/b&gt; &amp; rising"), "{svg}");
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("held-span open"));
        assert!(!svg.contains("too old"));
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
