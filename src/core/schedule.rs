//! When a bump may happen: weekly windows, freezes and the minimum interval between bumps.
//!
//! This module is pure: no I/O, and it never reads the clock. `now` (and the time of the
//! last bump) are always parameters, so every answer is a function of its inputs.
//!
//! # Windows
//!
//! A [`Window`] is written `DAYS HH:MM-HH:MM`, e.g. `Mon-Fri 09:00-17:00`.
//!
//! * `DAYS` is a day (`Mon`), a range (`Mon-Fri`; ranges may wrap, `Fri-Mon` is Friday to
//!   Monday), or a comma list of days and ranges without spaces (`Mon,Wed,Fri-Sat`). Day
//!   names are the English three-letter names, case-insensitive. `*` (or `Mon-Sun`) is
//!   every day.
//! * Times are 24-hour `HH:MM` (two digits each). The end may be `24:00`. If the end is not
//!   after the start (`22:00-02:00`, or `17:00-00:00`), the window runs overnight into the
//!   next day and belongs to its start day: `Fri 22:00-02:00` is open on Saturday at 01:00.
//!   `17:00-00:00` and `17:00-24:00` are the same window. A start equal to the end is an
//!   error (an empty window); `00:00-24:00` is the whole day.
//! * A window covers `start <= t < end` in wall-clock time in the schedule's IANA
//!   timezone: an instant is inside a window when its local weekday and local time are.
//!   Consequences around daylight-saving changes:
//!   - spring forward: the skipped local times never occur. A window whose start falls in
//!     the gap opens at the first instant after the gap (in `America/Los_Angeles` on
//!     2026-03-08, `Sun 02:30-04:00` opens at 03:00 PDT = 10:00 UTC); a window lying
//!     entirely inside the gap does not open that day;
//!   - fall back: the repeated local times occur twice, and a window containing them is
//!     open both times (`Sun 01:00-01:30` on 2026-11-01 in `America/Los_Angeles` is open
//!     08:00–08:30 UTC and again 09:00–09:30 UTC).
//! * No windows at all means any time (only freezes and the minimum interval apply).
//!
//! Display gives a canonical form (days as sorted runs, `Mon-Sun` for every day, an end of
//! midnight as `24:00`) that parses back to an equal window.
//!
//! # Freezes
//!
//! A [`Freeze`] closes the schedule from `from` to `to`, overriding every window. Each
//! bound ([`FreezeBound`]) is one of:
//!
//! * a date, `2026-12-19`, in the schedule's timezone. As `from` it means the start of that
//!   day; as `to` it is **inclusive**: the freeze lasts until the end of that day. So
//!   `from: 2026-12-19, to: 2027-01-04` is frozen through all of January 4th;
//! * a local date-time, `2026-12-19T18:00` or `2026-12-19T18:00:00`, in the schedule's
//!   timezone (a nonexistent local time means the first instant after the gap, an
//!   ambiguous one the earlier of its two instants, as for window starts);
//! * an RFC 3339 instant with an offset or `Z`, `2026-12-19T18:00:00Z`.
//!
//! A freeze covers the instants `t` with `from <= t < end`, where `end` is the end of the
//! `to` day for a date and `to` itself otherwise. Kinds may be mixed.
//!
//! # Minimum interval
//!
//! A bump may happen only at `t >= last_bump + min_interval`. [`Schedule::is_open`] does
//! not know the last bump and ignores it; [`Schedule::next_open`] and
//! [`Schedule::evaluate`] take it into account.
//!
//! # Finding the next opening
//!
//! [`Schedule::next_open`] is exact to the second, not sampled. The set of instants at
//! which a bump is allowed can only begin at: `now`; `last_bump + min_interval`; the end of
//! a freeze; a window start resolved to an instant for a given day (both instants when the
//! local time is ambiguous, the gap end when it does not exist); or a change of the
//! timezone's UTC offset (after falling back, the local time can jump back into a window).
//! The search jumps from one such candidate to the next and returns the first at which a
//! bump is allowed. Offset changes are found by probing the offset hourly and bisecting to
//! the second (this assumes changes are more than an hour apart, as they are in practice).
//! `None` means never: the search gives up past
//! `max(now, last freeze end, last_bump + min_interval) + 8 days`. Every window that
//! parses opens at least once a week, so in practice that happens only when a freeze or
//! the minimum interval reaches the end of representable time.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    SecondsFormat, TimeDelta, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;

/// Day names, Monday first; the index is `Weekday::num_days_from_monday`.
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
/// Every bit of a day mask set.
const ALL_DAYS: u8 = 0x7f;
const MINUTES_PER_DAY: u16 = 24 * 60;
const SECONDS_PER_DAY: i64 = 86_400;
const WINDOW_SYNTAX: &str = r#"expected DAYS HH:MM-HH:MM, e.g. "Mon-Fri 09:00-17:00""#;
const FREEZE_BOUND_SYNTAX: &str = "expected a date (2026-12-19), a local date-time \
     (2026-12-19T18:00) or an RFC 3339 instant (2026-12-19T18:00:00Z)";
/// How far past the last freeze end / minimum interval [`Schedule::next_open`] searches.
const HORIZON_DAYS: i64 = 8;

/// A weekly window such as `Mon-Fri 09:00-17:00`, in wall-clock time of the schedule's
/// timezone. Parse it with [`FromStr`]; see the [module docs](self) for the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Bit `i` set: the window starts on the day `i` days after Monday. Never 0.
    days: u8,
    /// Minutes after local midnight, `0..1440`.
    start: u16,
    /// Minutes after local midnight, `1..=1440` (midnight is stored as 1440). When
    /// `end <= start` the window ends on the next day.
    end: u16,
}

impl Window {
    /// Whether the local (wall-clock) date-time `local` is inside this window.
    #[must_use]
    pub fn contains(&self, local: NaiveDateTime) -> bool {
        let day = local.weekday();
        let secs = local.time().num_seconds_from_midnight();
        let start = u32::from(self.start) * 60;
        let end = u32::from(self.end) * 60;
        if self.start < self.end {
            self.starts_on(day) && start <= secs && secs < end
        } else {
            (self.starts_on(day) && start <= secs) || (self.starts_on(day.pred()) && secs < end)
        }
    }

    /// Whether the window starts on `day`.
    #[must_use]
    pub fn starts_on(&self, day: Weekday) -> bool {
        self.days & day_bit(day) != 0
    }

    /// The local time at which the window starts.
    #[must_use]
    pub fn start_time(&self) -> NaiveTime {
        let minutes = u32::from(self.start);
        NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).unwrap_or(NaiveTime::MIN)
    }

    /// Whether the window runs past midnight into the next day.
    #[must_use]
    pub fn is_overnight(&self) -> bool {
        self.end <= self.start
    }
}

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_window(s).map_err(|detail| format!("invalid window {s:?}: {detail}"))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}-{}",
            format_days(self.days),
            format_minutes(self.start),
            format_minutes(self.end)
        )
    }
}

fn parse_window(s: &str) -> Result<Window, String> {
    let mut tokens = s.split_whitespace();
    let Some(days) = tokens.next() else {
        return Err(format!("empty ({WINDOW_SYNTAX})"));
    };
    let Some(times) = tokens.next() else {
        return Err(if days.contains(':') {
            format!("missing days before the time range ({WINDOW_SYNTAX}; \"*\" is every day)")
        } else {
            format!("missing time range ({WINDOW_SYNTAX})")
        });
    };
    let days = parse_days(days)?;
    let (start, end) = parse_time_range(times)?;
    let extra: Vec<&str> = tokens.collect();
    if !extra.is_empty() {
        return Err(format!(
            "unexpected {:?} after the time range ({WINDOW_SYNTAX})",
            extra.join(" ")
        ));
    }
    Ok(Window { days, start, end })
}

fn day_bit(day: Weekday) -> u8 {
    1 << day.num_days_from_monday()
}

fn parse_days(s: &str) -> Result<u8, String> {
    if s == "*" {
        return Ok(ALL_DAYS);
    }
    let mut mask = 0;
    for item in s.split(',') {
        if item.is_empty() {
            return Err(format!("empty day in {s:?}"));
        }
        mask |= match item.split_once('-') {
            None => 1 << parse_day(item)?,
            Some((first, last)) => {
                if first.is_empty() || last.is_empty() || last.contains('-') {
                    return Err(format!(
                        "bad day range {item:?} (expected DAY-DAY, e.g. Mon-Fri)"
                    ));
                }
                let (first, last) = (parse_day(first)?, parse_day(last)?);
                let len = (last + 7 - first) % 7 + 1;
                (first..first + len).fold(0, |bits, i| bits | (1 << (i % 7)))
            }
        };
    }
    Ok(mask)
}

/// A day name's index, Monday = 0.
fn parse_day(s: &str) -> Result<usize, String> {
    if s == "*" {
        return Err(r#""*" (every day) cannot be combined with other days"#.to_owned());
    }
    DAY_NAMES
        .iter()
        .position(|name| name.eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown day {s:?} (expected {})", DAY_NAMES.join(", ")))
}

fn format_days(mask: u8) -> String {
    if mask == ALL_DAYS {
        return "Mon-Sun".to_owned();
    }
    let has = |i: usize| mask & (1 << (i % 7)) != 0;
    let mut runs = Vec::new();
    for (first, name) in DAY_NAMES.iter().enumerate() {
        // A run of consecutive days (cyclically) begins at a day whose predecessor is unset.
        if has(first) && !has(first + 6) {
            let mut len = 1;
            while has(first + len) {
                len += 1;
            }
            runs.push(if len == 1 {
                (*name).to_owned()
            } else {
                format!("{name}-{}", DAY_NAMES[(first + len - 1) % 7])
            });
        }
    }
    runs.join(",")
}

/// `HH:MM-HH:MM` to (start, end) in minutes; an end of `00:00` becomes 1440.
fn parse_time_range(s: &str) -> Result<(u16, u16), String> {
    let Some((start, end)) = s.split_once('-') else {
        return Err(format!(
            "time range {s:?} has no \"-\" (expected HH:MM-HH:MM)"
        ));
    };
    let (start, end) = (parse_minutes(start)?, parse_minutes(end)?);
    if start == MINUTES_PER_DAY {
        return Err("a window cannot start at 24:00 (use 00:00)".to_owned());
    }
    if start == end {
        return Err(format!(
            "empty window: it starts and ends at {} (use 00:00-24:00 for the whole day)",
            format_minutes(start)
        ));
    }
    Ok((start, if end == 0 { MINUTES_PER_DAY } else { end }))
}

/// `HH:MM` (`00:00` to `24:00`) to minutes after midnight.
fn parse_minutes(s: &str) -> Result<u16, String> {
    let bad = || format!("bad time {s:?} (expected HH:MM, 00:00 to 24:00)");
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return Err(bad());
    }
    let digit = |i: usize| u16::from(b[i] - b'0');
    let (hours, minutes) = (digit(0) * 10 + digit(1), digit(3) * 10 + digit(4));
    if minutes > 59 || hours > 24 || (hours == 24 && minutes > 0) {
        return Err(bad());
    }
    Ok(hours * 60 + minutes)
}

fn format_minutes(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// One end of a [`Freeze`]. Parse with [`FromStr`]; [`Display`](fmt::Display) round-trips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeBound {
    /// A calendar day in the schedule's timezone (`2026-12-19`). As `from`, the start of
    /// the day; as `to`, inclusive: the end of the day.
    Date(NaiveDate),
    /// A wall-clock date-time in the schedule's timezone (`2026-12-19T18:00`).
    Local(NaiveDateTime),
    /// An absolute instant (`2026-12-19T18:00:00Z`, `2026-12-19T18:00:00+01:00`).
    Instant(DateTime<FixedOffset>),
}

impl FreezeBound {
    /// The instant at which a freeze starting at this bound starts, in timezone `tz`.
    /// `None` only for dates at the very ends of chrono's range (never parsed).
    #[must_use]
    pub fn start_instant(&self, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Self::Date(date) => resolve_earliest(tz, date.and_time(NaiveTime::MIN)),
            Self::Local(local) => resolve_earliest(tz, *local),
            Self::Instant(instant) => Some(instant.to_utc()),
        }
    }

    /// The instant at which a freeze ending at this bound ends (exclusive), in timezone
    /// `tz`: the start of the next day for a date, the bound itself otherwise.
    #[must_use]
    pub fn end_instant(&self, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Self::Date(date) => resolve_earliest(tz, date.succ_opt()?.and_time(NaiveTime::MIN)),
            Self::Local(_) | Self::Instant(_) => self.start_instant(tz),
        }
    }

    /// The local date-time this bound starts a freeze at (`None` for an instant).
    fn local_start(&self) -> Option<NaiveDateTime> {
        match self {
            Self::Date(date) => Some(date.and_time(NaiveTime::MIN)),
            Self::Local(local) => Some(*local),
            Self::Instant(_) => None,
        }
    }

    /// The local date-time a freeze ending at this bound ends at (`None` for an instant).
    fn local_end(&self) -> Option<NaiveDateTime> {
        match self {
            Self::Date(date) => date.succ_opt().map(|next| next.and_time(NaiveTime::MIN)),
            Self::Local(local) => Some(*local),
            Self::Instant(_) => None,
        }
    }
}

impl FromStr for FreezeBound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |detail: &str| format!("invalid freeze bound {s:?}: {detail}");
        let t = s.trim();
        if t.is_empty() {
            return Err(err(&format!("empty ({FREEZE_BOUND_SYNTAX})")));
        }
        if has_shape(t, "dddd-dd-dd") {
            return NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map(Self::Date)
                .map_err(|_| err("no such date"));
        }
        for (shape, format) in [
            ("dddd-dd-ddTdd:dd", "%Y-%m-%dT%H:%M"),
            ("dddd-dd-ddTdd:dd:dd", "%Y-%m-%dT%H:%M:%S"),
        ] {
            if has_shape(t, shape) {
                return NaiveDateTime::parse_from_str(t, format)
                    .ok()
                    // A leap second (`:60`) is not a wall-clock time anyone schedules.
                    .filter(|local| local.nanosecond() == 0)
                    .map(Self::Local)
                    .ok_or_else(|| err("no such date or time"));
            }
        }
        DateTime::parse_from_rfc3339(t)
            .map(Self::Instant)
            .map_err(|_| err(FREEZE_BOUND_SYNTAX))
    }
}

/// Whether `s` matches `shape`, where `d` stands for an ASCII digit and any other
/// character for itself.
fn has_shape(s: &str, shape: &str) -> bool {
    s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, want)| match want {
            b'd' => c.is_ascii_digit(),
            _ => c == want,
        })
}

impl fmt::Display for FreezeBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Date(date) => write!(f, "{}", date.format("%Y-%m-%d")),
            Self::Local(local) if local.second() == 0 && local.nanosecond() == 0 => {
                write!(f, "{}", local.format("%Y-%m-%dT%H:%M"))
            }
            Self::Local(local) => write!(f, "{}", local.format("%Y-%m-%dT%H:%M:%S%.f")),
            Self::Instant(instant) => {
                f.write_str(&instant.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
        }
    }
}

/// A period during which nothing is bumped, whatever the windows say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    /// The first instant frozen.
    pub from: FreezeBound,
    /// The end: inclusive for a date (frozen through that day), exclusive otherwise.
    pub to: FreezeBound,
    /// Why; shown to users while the freeze is in force.
    pub reason: String,
}

impl Freeze {
    /// Checks what can be checked without the schedule's timezone: the freeze must end
    /// after it starts. Two local bounds (dates, local date-times) or two instants are
    /// compared exactly; an instant and a local bound only loosely (the freeze is rejected
    /// if it would be empty under any UTC offset, all of which are under a day).
    /// [`Freeze::validate_in`] is exact.
    pub fn validate(&self) -> Result<(), String> {
        let slack = TimeDelta::days(1);
        let ok = match (&self.from, &self.to) {
            (FreezeBound::Instant(from), FreezeBound::Instant(to)) => from < to,
            (FreezeBound::Instant(from), to) => to
                .local_end()
                .and_then(|end| end.checked_add_signed(slack))
                .is_none_or(|end| end.and_utc() > from.to_utc()),
            (from, FreezeBound::Instant(to)) => from
                .local_start()
                .and_then(|start| start.checked_sub_signed(slack))
                .is_none_or(|start| to.to_utc() > start.and_utc()),
            (from, to) => match (from.local_start(), to.local_end()) {
                (Some(start), Some(end)) => start < end,
                // Past the end of chrono's calendar: nothing sensible to compare.
                _ => true,
            },
        };
        if ok {
            Ok(())
        } else {
            Err(self.not_after_error(""))
        }
    }

    /// [`Freeze::validate`], then the exact check in timezone `tz`: the freeze must cover
    /// at least one instant.
    pub fn validate_in(&self, tz: Tz) -> Result<(), String> {
        self.validate()?;
        match (self.from.start_instant(tz), self.to.end_instant(tz)) {
            (Some(start), Some(end)) if start < end => Ok(()),
            (Some(_), Some(_)) => Err(self.not_after_error(&format!(" in {tz}"))),
            _ => Err(format!(
                "{}: outside the supported range of dates",
                self.name()
            )),
        }
    }

    /// The instants `[start, end)` this freeze covers in timezone `tz`. A bound beyond
    /// chrono's range (which parsing never produces) counts as the beginning or the end of
    /// time, erring on the side of being frozen.
    #[must_use]
    pub fn interval_in(&self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            self.from
                .start_instant(tz)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            self.to.end_instant(tz).unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    fn name(&self) -> String {
        if self.reason.is_empty() {
            "freeze".to_owned()
        } else {
            format!("freeze {:?}", self.reason)
        }
    }

    fn not_after_error(&self, suffix: &str) -> String {
        format!(
            "{}: to {} is not after from {}{suffix}",
            self.name(),
            self.to,
            self.from
        )
    }
}

/// Whether a bump may happen now, and if not, why and when it next may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A bump may happen now.
    Open,
    /// No bump now.
    Closed {
        /// The first applicable reason, in the order frozen, outside window, minimum
        /// interval.
        reason: ClosedReason,
        /// The earliest instant a bump may happen ([`Schedule::next_open`]).
        next_open: Option<DateTime<Utc>>,
    },
}

impl Verdict {
    /// Whether a bump may happen now.
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }
}

/// Why the schedule is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosedReason {
    /// Not inside any window.
    OutsideWindow,
    /// Inside a freeze. When several freezes cover the instant, the one ending last.
    Frozen {
        /// The freeze's reason.
        reason: String,
        /// When that freeze ends (the first instant no longer covered by it).
        until: DateTime<Utc>,
    },
    /// The minimum interval since the last bump has not elapsed.
    MinInterval {
        /// `last_bump + min_interval`.
        until: DateTime<Utc>,
    },
}

impl fmt::Display for ClosedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        match self {
            Self::OutsideWindow => f.write_str("outside the schedule's windows"),
            Self::Frozen { reason, until } if reason.is_empty() => {
                write!(f, "frozen until {}", at(until))
            }
            Self::Frozen { reason, until } => write!(f, "frozen until {}: {reason}", at(until)),
            Self::MinInterval { until } => write!(
                f,
                "minimum interval since the last bump has not elapsed (until {})",
                at(until)
            ),
        }
    }
}

/// A policy's schedule: windows, freezes and minimum interval in one IANA timezone.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: Tz,
    windows: Vec<Window>,
    freezes: Vec<Freeze>,
    /// `freezes[i].interval_in(tz)`, same order.
    intervals: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    min_interval: TimeDelta,
}

impl Schedule {
    /// A schedule in timezone `tz`. No windows means any time. Freezes are expected to
    /// have passed [`Freeze::validate_in`]; one that covers nothing is harmless. A
    /// `min_interval` of zero or less means no minimum.
    #[must_use]
    pub fn new(
        tz: Tz,
        windows: Vec<Window>,
        freezes: Vec<Freeze>,
        min_interval: TimeDelta,
    ) -> Self {
        let intervals = freezes.iter().map(|f| f.interval_in(tz)).collect();
        Self {
            tz,
            windows,
            freezes,
            intervals,
            min_interval,
        }
    }

    /// The schedule's timezone.
    #[must_use]
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The windows (empty: any time).
    #[must_use]
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The freezes.
    #[must_use]
    pub fn freezes(&self) -> &[Freeze] {
        &self.freezes
    }

    /// The minimum interval between bumps.
    #[must_use]
    pub fn min_interval(&self) -> TimeDelta {
        self.min_interval
    }

    /// Whether `now` is inside some window (or there are none) and not frozen. The
    /// minimum interval is not considered: it needs the last bump (see
    /// [`Schedule::evaluate`]).
    #[must_use]
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.frozen_at(now).is_none() && self.in_window(now)
    }

    /// The earliest instant `t >= now` at which a bump may happen: inside a window, not
    /// frozen, and `t >= last_bump + min_interval`. `Some(now)` when a bump may happen
    /// now. `None` if the search finds nothing before its horizon (see the
    /// [module docs](self)).
    #[must_use]
    pub fn next_open(
        &self,
        now: DateTime<Utc>,
        last_bump: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let not_before = self.not_before(last_bump);
        let base = self
            .intervals
            .iter()
            .map(|&(_, end)| end)
            .chain(not_before)
            .fold(now, DateTime::max);
        let horizon = base
            .checked_add_signed(TimeDelta::days(HORIZON_DAYS))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut t = now;
        // Every step moves `t` strictly forward to the next candidate, so this ends.
        while t <= horizon && t < DateTime::<Utc>::MAX_UTC {
            if let Some((_, end)) = self.frozen_at(t) {
                t = end;
            } else if let Some(not_before) = not_before
                && t < not_before
            {
                t = not_before;
            } else if self.in_window(t) {
                return Some(t);
            } else {
                t = self.next_window_start(t)?;
            }
        }
        None
    }

    /// Whether a bump may happen at `now` given the last bump, and if not the first
    /// applicable reason (frozen, then outside window, then minimum interval) and
    /// [`Schedule::next_open`].
    #[must_use]
    pub fn evaluate(&self, now: DateTime<Utc>, last_bump: Option<DateTime<Utc>>) -> Verdict {
        let reason = if let Some((freeze, until)) = self.frozen_at(now) {
            ClosedReason::Frozen {
                reason: freeze.reason.clone(),
                until,
            }
        } else if !self.in_window(now) {
            ClosedReason::OutsideWindow
        } else if let Some(until) = self.not_before(last_bump)
            && now < until
        {
            ClosedReason::MinInterval { until }
        } else {
            return Verdict::Open;
        };
        Verdict::Closed {
            reason,
            next_open: self.next_open(now, last_bump),
        }
    }

    /// `last_bump + min_interval`, saturating at the ends of time.
    fn not_before(&self, last_bump: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let last_bump = last_bump?;
        Some(last_bump.checked_add_signed(self.min_interval).unwrap_or(
            if self.min_interval > TimeDelta::zero() {
                DateTime::<Utc>::MAX_UTC
            } else {
                DateTime::<Utc>::MIN_UTC
            },
        ))
    }

    /// The freeze covering `t` that ends last, with its end.
    fn frozen_at(&self, t: DateTime<Utc>) -> Option<(&Freeze, DateTime<Utc>)> {
        self.freezes
            .iter()
            .zip(&self.intervals)
            .filter(|(_, (start, end))| *start <= t && t < *end)
            .map(|(freeze, &(_, end))| (freeze, end))
            // On equal ends, the first listed (`max_by_key` keeps the last of equals).
            .rev()
            .max_by_key(|&(_, end)| end)
    }

    /// Whether `t` is inside some window (always, with no windows).
    fn in_window(&self, t: DateTime<Utc>) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        local_time(self.tz, t).is_some_and(|local| self.windows.iter().any(|w| w.contains(local)))
    }

    /// The earliest candidate instant after `after` at which some window may open: a
    /// window start resolved to an instant, or a change of UTC offset. `None` only near
    /// the end of representable time (every window starts at least once a week).
    fn next_window_start(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = local_time(self.tz, after)?.date();
        let mut best = None;
        // From the day before (a start resolved through a gap can move to the next day)
        // to beyond a week, which holds a start of every window.
        for delta in -1..=HORIZON_DAYS {
            let Some(day) = today.checked_add_signed(TimeDelta::days(delta)) else {
                continue;
            };
            for window in self.windows.iter().filter(|w| w.starts_on(day.weekday())) {
                for candidate in resolve_all(self.tz, day.and_time(window.start_time())) {
                    keep_earliest(&mut best, candidate, after);
                }
            }
        }
        if let Some(change) = self.next_offset_change(after, best) {
            keep_earliest(&mut best, change, after);
        }
        best
    }

    /// The first change of UTC offset after `after`, looking no further than `limit` (or
    /// nine days). Probes hourly, then bisects to the second (changes are on whole
    /// seconds).
    fn next_offset_change(
        &self,
        after: DateTime<Utc>,
        limit: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let first = after.timestamp();
        let last = limit.map_or(i64::MAX, |l| l.timestamp().saturating_add(1));
        let last = last.min(first.saturating_add((HORIZON_DAYS + 1) * SECONDS_PER_DAY));
        let mut lo = first;
        let mut lo_offset = self.offset_at(lo)?;
        while lo < last {
            let hi = (lo + 3600).min(last);
            let hi_offset = self.offset_at(hi)?;
            if hi_offset != lo_offset {
                // Bisect for the first second with the new offset, in (lo, hi].
                let (mut a, mut b) = (lo, hi);
                while b - a > 1 {
                    let mid = a + (b - a) / 2;
                    if self.offset_at(mid)? == lo_offset {
                        a = mid;
                    } else {
                        b = mid;
                    }
                }
                let change = DateTime::from_timestamp(b, 0)?;
                if change > after {
                    return Some(change);
                }
            }
            (lo, lo_offset) = (hi, hi_offset);
        }
        None
    }

    fn offset_at(&self, secs: i64) -> Option<FixedOffset> {
        let t = DateTime::from_timestamp(secs, 0)?;
        Some(self.tz.offset_from_utc_datetime(&t.naive_utc()).fix())
    }
}

fn keep_earliest(best: &mut Option<DateTime<Utc>>, candidate: DateTime<Utc>, after: DateTime<Utc>) {
    if candidate > after && best.is_none_or(|b| candidate < b) {
        *best = Some(candidate);
    }
}

/// The wall-clock time of `t` in `tz` (`None` past the ends of chrono's range).
fn local_time(tz: Tz, t: DateTime<Utc>) -> Option<NaiveDateTime> {
    let offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    t.naive_utc().checked_add_offset(offset)
}

/// Every instant at which the wall clock in `tz` reads `local`, or just passes it: one
/// instant, both instants of an ambiguous time, or for a nonexistent time the first
/// instant after the gap.
fn resolve_all(tz: Tz, local: NaiveDateTime) -> impl Iterator<Item = DateTime<Utc>> {
    let (first, second) = match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => (Some(t.to_utc()), None),
        LocalResult::Ambiguous(a, b) => (Some(a.to_utc()), Some(b.to_utc())),
        LocalResult::None => (gap_end(tz, local), None),
    };
    first.into_iter().chain(second)
}

/// The earliest instant of [`resolve_all`].
fn resolve_earliest(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    resolve_all(tz, local).min()
}

/// For a local time that does not exist in `tz` (skipped by a move forward of the
/// clocks): the first instant whose local time is later, i.e. the end of the gap.
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let is_past = |secs: i64| -> Option<bool> {
        let t = DateTime::from_timestamp(secs, 0)?;
        Some(local_time(tz, t)? > local)
    };
    // Every UTC offset is under a day, so a day either side of the local time read as UTC
    // brackets the change: not past at `lo`, past at `hi`.
    let guess = local.and_utc().timestamp();
    let (mut lo, mut hi) = (guess - SECONDS_PER_DAY, guess + SECONDS_PER_DAY);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if is_past(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono_tz::America::{Los_Angeles, Santiago};
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test instant {s}: {e}"))
    }

    fn window(s: &str) -> Window {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn bound(s: &str) -> FreezeBound {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn freeze(from: &str, to: &str, reason: &str) -> Freeze {
        Freeze {
            from: bound(from),
            to: bound(to),
            reason: reason.to_owned(),
        }
    }

    fn schedule(tz: Tz, windows: &[&str]) -> Schedule {
        Schedule::new(
            tz,
            windows.iter().map(|w| window(w)).collect(),
            vec![],
            TimeDelta::zero(),
        )
    }

    fn hours(h: i64) -> TimeDelta {
        TimeDelta::hours(h)
    }

    #[test]
    fn window_parses_to_canonical_form() {
        for (input, canonical) in [
            ("Mon-Fri 09:00-17:00", "Mon-Fri 09:00-17:00"),
            ("mon-FRI 09:00-17:00", "Mon-Fri 09:00-17:00"),
            ("  Mon \t 09:00-17:00  ", "Mon 09:00-17:00"),
            ("Fri-Mon 22:00-02:00", "Fri-Mon 22:00-02:00"),
            ("Mon,Wed,Fri-Sat 10:00-11:30", "Mon,Wed,Fri-Sat 10:00-11:30"),
            ("Wed,Mon 10:00-11:00", "Mon,Wed 10:00-11:00"),
            ("Sat,Sun,Mon 01:00-02:00", "Sat-Mon 01:00-02:00"),
            ("Sun,Mon,Wed 01:00-02:00", "Wed,Sun-Mon 01:00-02:00"),
            ("Mon,Tue 01:00-02:00", "Mon-Tue 01:00-02:00"),
            ("Mon,Mon 09:00-10:00", "Mon 09:00-10:00"),
            ("Thu-Thu 09:00-10:00", "Thu 09:00-10:00"),
            ("* 00:00-24:00", "Mon-Sun 00:00-24:00"),
            ("Mon-Sun 08:00-09:00", "Mon-Sun 08:00-09:00"),
            ("Tue-Mon 08:00-09:00", "Mon-Sun 08:00-09:00"),
            ("Mon-Wed,Thu-Sun 08:00-09:00", "Mon-Sun 08:00-09:00"),
            ("Mon-Fri 17:00-24:00", "Mon-Fri 17:00-24:00"),
            ("Mon-Fri 17:00-00:00", "Mon-Fri 17:00-24:00"),
            ("Sun 23:59-00:01", "Sun 23:59-00:01"),
            ("Sat 00:00-23:59", "Sat 00:00-23:59"),
        ] {
            let parsed = window(input);
            assert_eq!(parsed.to_string(), canonical, "{input}");
            assert_eq!(window(canonical), parsed, "round trip of {input}");
        }
    }

    #[test]
    fn window_spellings_that_mean_the_same() {
        for (a, b) in [
            ("Mon-Fri 17:00-24:00", "Mon-Fri 17:00-00:00"),
            ("* 09:00-10:00", "Mon-Sun 09:00-10:00"),
            ("Fri-Mon 09:00-10:00", "Fri,Sat,Sun,Mon 09:00-10:00"),
            ("fri-mon 09:00-10:00", "FRI-MON 09:00-10:00"),
        ] {
            assert_eq!(window(a), window(b), "{a} vs {b}");
        }
        assert_ne!(window("Mon 09:00-10:00"), window("Tue 09:00-10:00"));
        assert!(window("Fri 22:00-02:00").is_overnight());
        assert!(!window("Fri 17:00-00:00").is_overnight());
    }

    #[test]
    fn window_rejects_garbage_with_specific_messages() {
        let days = "expected Mon, Tue, Wed, Thu, Fri, Sat, Sun";
        let syntax = r#"expected DAYS HH:MM-HH:MM, e.g. "Mon-Fri 09:00-17:00""#;
        for (input, message) in [
            (
                "Mon-Fry 09:00-17:00",
                format!(r#"invalid window "Mon-Fry 09:00-17:00": unknown day "Fry" ({days})"#),
            ),
            (
                "Monday 09:00-17:00",
                format!(r#"invalid window "Monday 09:00-17:00": unknown day "Monday" ({days})"#),
            ),
            ("", format!(r#"invalid window "": empty ({syntax})"#)),
            ("   ", format!(r#"invalid window "   ": empty ({syntax})"#)),
            (
                "Mon-Fri",
                format!(r#"invalid window "Mon-Fri": missing time range ({syntax})"#),
            ),
            (
                "09:00-17:00",
                format!(
                    r#"invalid window "09:00-17:00": missing days before the time range ({syntax}; "*" is every day)"#
                ),
            ),
            (
                "Mon 25:00-26:00",
                r#"invalid window "Mon 25:00-26:00": bad time "25:00" (expected HH:MM, 00:00 to 24:00)"#.to_owned(),
            ),
            (
                "Mon 09:00-24:30",
                r#"invalid window "Mon 09:00-24:30": bad time "24:30" (expected HH:MM, 00:00 to 24:00)"#.to_owned(),
            ),
            (
                "Mon 9:00-17:00",
                r#"invalid window "Mon 9:00-17:00": bad time "9:00" (expected HH:MM, 00:00 to 24:00)"#.to_owned(),
            ),
            (
                "Mon 09:60-17:00",
                r#"invalid window "Mon 09:60-17:00": bad time "09:60" (expected HH:MM, 00:00 to 24:00)"#.to_owned(),
            ),
            (
                "Mon 09:00-",
                r#"invalid window "Mon 09:00-": bad time "" (expected HH:MM, 00:00 to 24:00)"#.to_owned(),
            ),
            (
                "Mon 09:00 17:00",
                r#"invalid window "Mon 09:00 17:00": time range "09:00" has no "-" (expected HH:MM-HH:MM)"#.to_owned(),
            ),
            (
                "Mon 09:00-17:00 UTC",
                format!(
                    r#"invalid window "Mon 09:00-17:00 UTC": unexpected "UTC" after the time range ({syntax})"#
                ),
            ),
            (
                "Mon 09:00-17:00 in Berlin",
                format!(
                    r#"invalid window "Mon 09:00-17:00 in Berlin": unexpected "in Berlin" after the time range ({syntax})"#
                ),
            ),
            (
                "Mon 09:00-09:00",
                r#"invalid window "Mon 09:00-09:00": empty window: it starts and ends at 09:00 (use 00:00-24:00 for the whole day)"#.to_owned(),
            ),
            (
                "Mon 00:00-00:00",
                r#"invalid window "Mon 00:00-00:00": empty window: it starts and ends at 00:00 (use 00:00-24:00 for the whole day)"#.to_owned(),
            ),
            (
                "Mon 24:00-01:00",
                r#"invalid window "Mon 24:00-01:00": a window cannot start at 24:00 (use 00:00)"#.to_owned(),
            ),
            (
                "Mon,,Fri 09:00-17:00",
                r#"invalid window "Mon,,Fri 09:00-17:00": empty day in "Mon,,Fri""#.to_owned(),
            ),
            (
                "Mon, 09:00-17:00",
                r#"invalid window "Mon, 09:00-17:00": empty day in "Mon,""#.to_owned(),
            ),
            (
                "Mon-Wed-Fri 09:00-17:00",
                r#"invalid window "Mon-Wed-Fri 09:00-17:00": bad day range "Mon-Wed-Fri" (expected DAY-DAY, e.g. Mon-Fri)"#.to_owned(),
            ),
            (
                "Mon- 09:00-17:00",
                r#"invalid window "Mon- 09:00-17:00": bad day range "Mon-" (expected DAY-DAY, e.g. Mon-Fri)"#.to_owned(),
            ),
            (
                "*,Mon 09:00-17:00",
                r#"invalid window "*,Mon 09:00-17:00": "*" (every day) cannot be combined with other days"#.to_owned(),
            ),
        ] {
            assert_eq!(input.parse::<Window>(), Err(message), "{input:?}");
        }
    }

    /// (window, instant in UTC, open?) in a UTC schedule; 2026-06-01 is a Monday.
    const WINDOW_CASES: &[(&str, &str, bool)] = &[
        ("Mon-Fri 09:00-17:00", "2026-06-01T09:00:00Z", true),
        ("Mon-Fri 09:00-17:00", "2026-06-01T08:59:59Z", false),
        ("Mon-Fri 09:00-17:00", "2026-06-01T16:59:59Z", true),
        ("Mon-Fri 09:00-17:00", "2026-06-01T17:00:00Z", false),
        ("Mon-Fri 09:00-17:00", "2026-06-05T12:00:00Z", true),
        ("Mon-Fri 09:00-17:00", "2026-06-06T12:00:00Z", false),
        ("Mon-Fri 09:00-17:00", "2026-06-07T12:00:00Z", false),
        ("Fri-Mon 10:00-11:00", "2026-06-05T10:30:00Z", true),
        ("Fri-Mon 10:00-11:00", "2026-06-06T10:30:00Z", true),
        ("Fri-Mon 10:00-11:00", "2026-06-07T10:30:00Z", true),
        ("Fri-Mon 10:00-11:00", "2026-06-08T10:30:00Z", true),
        ("Fri-Mon 10:00-11:00", "2026-06-09T10:30:00Z", false),
        ("Fri-Mon 10:00-11:00", "2026-06-04T10:30:00Z", false),
        ("Mon,Wed,Fri-Sat 10:00-11:00", "2026-06-02T10:30:00Z", false),
        ("Mon,Wed,Fri-Sat 10:00-11:00", "2026-06-03T10:30:00Z", true),
        ("Mon,Wed,Fri-Sat 10:00-11:00", "2026-06-06T10:30:00Z", true),
        ("Mon,Wed,Fri-Sat 10:00-11:00", "2026-06-07T10:30:00Z", false),
        ("* 09:00-10:00", "2026-06-07T09:30:00Z", true),
        ("* 09:00-10:00", "2026-06-07T10:00:00Z", false),
        ("Fri 22:00-02:00", "2026-06-05T21:59:59Z", false),
        ("Fri 22:00-02:00", "2026-06-05T22:00:00Z", true),
        ("Fri 22:00-02:00", "2026-06-06T01:00:00Z", true),
        ("Fri 22:00-02:00", "2026-06-06T01:59:59Z", true),
        ("Fri 22:00-02:00", "2026-06-06T02:00:00Z", false),
        ("Fri 22:00-02:00", "2026-06-05T01:00:00Z", false),
        ("Fri 22:00-02:00", "2026-06-06T22:30:00Z", false),
        ("Sun 23:00-01:00", "2026-06-08T00:30:00Z", true),
        ("Sun 23:00-01:00", "2026-06-07T00:30:00Z", false),
        ("Sun 23:00-01:00", "2026-06-07T23:30:00Z", true),
        ("Mon-Fri 17:00-24:00", "2026-06-01T17:00:00Z", true),
        ("Mon-Fri 17:00-24:00", "2026-06-05T23:59:59Z", true),
        ("Mon-Fri 17:00-24:00", "2026-06-06T00:00:00Z", false),
        ("Mon-Fri 17:00-24:00", "2026-06-02T00:30:00Z", false),
        ("Mon-Fri 17:00-24:00", "2026-06-01T16:59:59Z", false),
        ("Mon-Fri 17:00-00:00", "2026-06-05T23:59:59Z", true),
        ("Mon-Fri 17:00-00:00", "2026-06-06T00:00:00Z", false),
        ("Mon-Fri 17:00-00:00", "2026-06-02T00:30:00Z", false),
        ("Wed 00:00-24:00", "2026-06-03T00:00:00Z", true),
        ("Wed 00:00-24:00", "2026-06-03T23:59:59Z", true),
        ("Wed 00:00-24:00", "2026-06-04T00:00:00Z", false),
        ("Wed 00:00-24:00", "2026-06-02T23:59:59Z", false),
    ];

    #[test]
    fn is_open_inside_and_outside_windows() {
        for &(w, at, open) in WINDOW_CASES {
            let s = schedule(UTC, &[w]);
            assert_eq!(s.is_open(utc(at)), open, "{w} at {at}");
            let local = utc(at).naive_utc();
            assert_eq!(window(w).contains(local), open, "{w} contains {at}");
        }
    }

    #[test]
    fn is_open_uses_the_schedule_timezone() {
        let s = schedule(Los_Angeles, &["Mon-Fri 09:00-17:00"]);
        // Mon 2026-06-01 09:00 PDT is 16:00 UTC.
        assert!(!s.is_open(utc("2026-06-01T15:59:59Z")));
        assert!(s.is_open(utc("2026-06-01T16:00:00Z")));
        assert!(s.is_open(utc("2026-06-01T23:59:59Z")));
        assert!(!s.is_open(utc("2026-06-02T00:00:00Z")));
        // Monday 03:00 UTC is still Sunday evening in Los Angeles.
        assert!(!s.is_open(utc("2026-06-01T03:00:00Z")));
        assert!(s.is_open(utc("2026-06-05T23:59:59Z")));
    }

    #[test]
    fn no_windows_means_any_time() {
        let s = schedule(Berlin, &[]);
        for at in [
            "2026-06-06T03:00:00Z",
            "2026-03-29T01:30:00Z",
            "2026-12-25T00:00:00Z",
        ] {
            assert!(s.is_open(utc(at)), "{at}");
            assert_eq!(s.next_open(utc(at), None), Some(utc(at)));
        }
        let frozen = Schedule::new(
            Berlin,
            vec![],
            vec![freeze("2026-12-24", "2026-12-26", "xmas")],
            TimeDelta::zero(),
        );
        // 2026-12-27 00:00 CET.
        assert_eq!(
            frozen.next_open(utc("2026-12-25T12:00:00Z"), None),
            Some(utc("2026-12-26T23:00:00Z"))
        );
    }

    #[test]
    fn several_windows() {
        let s = schedule(
            UTC,
            &[
                "Mon-Fri 09:00-12:00",
                "Mon-Fri 13:00-17:00",
                "Sat 10:00-11:00",
            ],
        );
        assert!(s.is_open(utc("2026-06-01T11:59:00Z")));
        assert!(!s.is_open(utc("2026-06-01T12:30:00Z")));
        assert!(s.is_open(utc("2026-06-01T13:00:00Z")));
        assert!(s.is_open(utc("2026-06-06T10:30:00Z")));
        for (now, next) in [
            ("2026-06-01T12:30:00Z", "2026-06-01T13:00:00Z"),
            ("2026-06-01T08:00:00Z", "2026-06-01T09:00:00Z"),
            ("2026-06-05T17:00:00Z", "2026-06-06T10:00:00Z"),
            ("2026-06-06T11:00:00Z", "2026-06-08T09:00:00Z"),
            ("2026-06-01T14:15:16Z", "2026-06-01T14:15:16Z"),
        ] {
            assert_eq!(s.next_open(utc(now), None), Some(utc(next)), "from {now}");
        }
    }

    #[test]
    fn next_open_is_now_when_open() {
        let s = schedule(Los_Angeles, &["Mon-Fri 09:00-17:00"]);
        let now = utc("2026-06-01T18:00:00.123456789Z");
        assert!(s.is_open(now));
        assert_eq!(s.next_open(now, None), Some(now));
        assert_eq!(s.next_open(now, Some(now - hours(2))), Some(now));
        assert_eq!(s.evaluate(now, None), Verdict::Open);
        assert!(s.evaluate(now, None).is_open());
    }

    #[test]
    fn los_angeles_spring_forward() {
        // 2026-03-08 (Sunday) 02:00 PST (10:00 UTC) becomes 03:00 PDT.
        let s = schedule(Los_Angeles, &["Sun 02:30-04:00"]);
        assert!(!s.is_open(utc("2026-03-08T09:59:59Z"))); // 01:59:59 PST
        assert!(s.is_open(utc("2026-03-08T10:00:00Z"))); // 03:00 PDT
        assert!(s.is_open(utc("2026-03-08T10:59:59Z"))); // 03:59:59 PDT
        assert!(!s.is_open(utc("2026-03-08T11:00:00Z"))); // 04:00 PDT
        assert_eq!(
            s.next_open(utc("2026-03-08T09:00:00Z"), None),
            Some(utc("2026-03-08T10:00:00Z"))
        );
        // A week later, in PDT: 02:30 PDT = 09:30 UTC.
        assert_eq!(
            s.next_open(utc("2026-03-08T11:00:00Z"), None),
            Some(utc("2026-03-15T09:30:00Z"))
        );
        // A window entirely inside the gap does not open that day.
        let gap = schedule(Los_Angeles, &["Sun 02:10-02:40"]);
        assert_eq!(
            gap.next_open(utc("2026-03-08T08:00:00Z"), None),
            Some(utc("2026-03-15T09:10:00Z"))
        );
        // An overnight window cut short by the gap: Sat 23:00 PST to Sun 01:59:59 PST.
        let night = schedule(Los_Angeles, &["Sat 23:00-02:30"]);
        assert!(night.is_open(utc("2026-03-08T09:59:59Z")));
        assert!(!night.is_open(utc("2026-03-08T10:00:00Z")));
    }

    #[test]
    fn los_angeles_fall_back() {
        // 2026-11-01 (Sunday) 02:00 PDT (09:00 UTC) becomes 01:00 PST: 01:00-02:00 twice.
        let s = schedule(Los_Angeles, &["Sun 01:00-01:30"]);
        for (at, open) in [
            ("2026-11-01T07:59:59Z", false), // 00:59:59 PDT
            ("2026-11-01T08:00:00Z", true),  // 01:00 PDT
            ("2026-11-01T08:29:59Z", true),
            ("2026-11-01T08:30:00Z", false), // 01:30 PDT
            ("2026-11-01T08:59:59Z", false),
            ("2026-11-01T09:00:00Z", true), // 01:00 PST
            ("2026-11-01T09:29:59Z", true),
            ("2026-11-01T09:30:00Z", false), // 01:30 PST
        ] {
            assert_eq!(s.is_open(utc(at)), open, "{at}");
        }
        for (now, next) in [
            ("2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"),
            ("2026-11-01T08:45:00Z", "2026-11-01T09:00:00Z"),
            ("2026-11-01T09:30:00Z", "2026-11-08T09:00:00Z"),
        ] {
            assert_eq!(s.next_open(utc(now), None), Some(utc(next)), "from {now}");
        }
        // Reopening at the second occurrence of the start...
        let late = schedule(Los_Angeles, &["Sun 01:15-01:45"]);
        assert_eq!(
            late.next_open(utc("2026-11-01T08:50:00Z"), None),
            Some(utc("2026-11-01T09:15:00Z"))
        );
        // ...or at the change itself, when the clock jumps back into the window.
        let early = schedule(Los_Angeles, &["Sun 00:30-01:30"]);
        assert!(!early.is_open(utc("2026-11-01T08:59:59Z")));
        assert_eq!(
            early.next_open(utc("2026-11-01T08:45:00Z"), None),
            Some(utc("2026-11-01T09:00:00Z"))
        );
    }

    #[test]
    fn berlin_spring_forward_and_fall_back() {
        // 2026-03-29 (Sunday) 02:00 CET (01:00 UTC) becomes 03:00 CEST.
        let spring = schedule(Berlin, &["Sun 02:30-04:00"]);
        assert!(!spring.is_open(utc("2026-03-29T00:59:59Z")));
        assert!(spring.is_open(utc("2026-03-29T01:00:00Z")));
        assert!(!spring.is_open(utc("2026-03-29T02:00:00Z")));
        assert_eq!(
            spring.next_open(utc("2026-03-28T20:00:00Z"), None),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        // 2026-10-25 (Sunday) 03:00 CEST (01:00 UTC) becomes 02:00 CET: 02:00-03:00 twice.
        let fall = schedule(Berlin, &["Sun 02:00-02:30"]);
        for (at, open) in [
            ("2026-10-24T23:59:59Z", false),
            ("2026-10-25T00:00:00Z", true), // 02:00 CEST
            ("2026-10-25T00:30:00Z", false),
            ("2026-10-25T01:00:00Z", true), // 02:00 CET
            ("2026-10-25T01:29:59Z", true),
            ("2026-10-25T01:30:00Z", false),
        ] {
            assert_eq!(fall.is_open(utc(at)), open, "{at}");
        }
        assert_eq!(
            fall.next_open(utc("2026-10-24T22:00:00Z"), None),
            Some(utc("2026-10-25T00:00:00Z"))
        );
        assert_eq!(
            fall.next_open(utc("2026-10-25T00:40:00Z"), None),
            Some(utc("2026-10-25T01:00:00Z"))
        );
    }

    #[test]
    fn weekend_to_monday_across_clock_changes() {
        for (tz, now, next) in [
            // Sat 2026-03-07 18:00 PST → Mon 2026-03-09 09:00 PDT.
            (Los_Angeles, "2026-03-08T02:00:00Z", "2026-03-09T16:00:00Z"),
            // Sat 2026-10-31 18:00 PDT → Mon 2026-11-02 09:00 PST.
            (Los_Angeles, "2026-11-01T01:00:00Z", "2026-11-02T17:00:00Z"),
            // Sat 2026-03-28 18:00 CET → Mon 2026-03-30 09:00 CEST.
            (Berlin, "2026-03-28T17:00:00Z", "2026-03-30T07:00:00Z"),
            // Sat 2026-10-24 18:00 CEST → Mon 2026-10-26 09:00 CET.
            (Berlin, "2026-10-24T16:00:00Z", "2026-10-26T08:00:00Z"),
        ] {
            let s = schedule(tz, &["Mon-Fri 09:00-17:00"]);
            assert!(!s.is_open(utc(now)));
            assert_eq!(
                s.next_open(utc(now), None),
                Some(utc(next)),
                "{tz} from {now}"
            );
            assert!(s.is_open(utc(next)));
            assert!(!s.is_open(utc(next) - TimeDelta::seconds(1)));
        }
    }

    #[test]
    fn midnight_in_a_gap() {
        // Chile moves from 00:00 -04 to 01:00 -03 on Sunday 2026-09-06 (04:00 UTC).
        let s = schedule(Santiago, &["Sun 00:00-24:00"]);
        assert!(!s.is_open(utc("2026-09-06T03:59:59Z")));
        assert!(s.is_open(utc("2026-09-06T04:00:00Z")));
        assert_eq!(
            s.next_open(utc("2026-09-05T12:00:00Z"), None),
            Some(utc("2026-09-06T04:00:00Z"))
        );
        assert_eq!(
            bound("2026-09-06").start_instant(Santiago),
            Some(utc("2026-09-06T04:00:00Z"))
        );
        assert_eq!(
            bound("2026-09-05").end_instant(Santiago),
            Some(utc("2026-09-06T04:00:00Z"))
        );
    }

    #[test]
    fn freeze_bounds_parse_and_round_trip() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let local = |y, m, d, h, min, s| date(y, m, d).and_hms_opt(h, min, s).unwrap();
        let instant = |s: &str| FreezeBound::Instant(DateTime::parse_from_rfc3339(s).unwrap());
        for (input, expected, canonical) in [
            (
                "2026-12-19",
                FreezeBound::Date(date(2026, 12, 19)),
                "2026-12-19",
            ),
            (
                "2026-12-19T18:00",
                FreezeBound::Local(local(2026, 12, 19, 18, 0, 0)),
                "2026-12-19T18:00",
            ),
            (
                "2026-12-19T18:00:00",
                FreezeBound::Local(local(2026, 12, 19, 18, 0, 0)),
                "2026-12-19T18:00",
            ),
            (
                "2026-12-19T18:00:30",
                FreezeBound::Local(local(2026, 12, 19, 18, 0, 30)),
                "2026-12-19T18:00:30",
            ),
            (
                "2026-12-19T18:00:00Z",
                instant("2026-12-19T18:00:00Z"),
                "2026-12-19T18:00:00Z",
            ),
            (
                "2026-12-19T18:00:00+01:00",
                instant("2026-12-19T17:00:00Z"),
                "2026-12-19T18:00:00+01:00",
            ),
            (
                "2026-12-19T18:00:00.5-08:00",
                instant("2026-12-20T02:00:00.5Z"),
                "2026-12-19T18:00:00.500-08:00",
            ),
            (
                " 2026-12-19 ",
                FreezeBound::Date(date(2026, 12, 19)),
                "2026-12-19",
            ),
        ] {
            let parsed = bound(input);
            assert_eq!(parsed, expected, "{input}");
            assert_eq!(parsed.to_string(), canonical, "{input}");
            assert_eq!(bound(canonical), parsed, "round trip of {input}");
        }
    }

    #[test]
    fn freeze_bounds_reject_garbage() {
        let syntax = "expected a date (2026-12-19), a local date-time (2026-12-19T18:00) \
                      or an RFC 3339 instant (2026-12-19T18:00:00Z)";
        for (input, detail) in [
            ("", format!("empty ({syntax})")),
            ("2026-02-30", "no such date".to_owned()),
            ("2026-13-01", "no such date".to_owned()),
            ("2026-12-19T25:00", "no such date or time".to_owned()),
            ("2026-12-19T23:59:60", "no such date or time".to_owned()),
            ("2026-12-19T18:00:00+25:00", syntax.to_owned()),
            ("2026-12-19 18:00", syntax.to_owned()),
            ("19.12.2026", syntax.to_owned()),
            ("tomorrow", syntax.to_owned()),
            ("26-12-19", syntax.to_owned()),
        ] {
            assert_eq!(
                input.parse::<FreezeBound>(),
                Err(format!("invalid freeze bound {input:?}: {detail}")),
                "{input:?}"
            );
        }
    }

    #[test]
    fn freeze_bounds_resolve_in_the_timezone() {
        for (input, start, end) in [
            // A date starts at local midnight and, as `to`, ends at the next midnight.
            ("2026-12-19", "2026-12-19T08:00:00Z", "2026-12-20T08:00:00Z"),
            ("2026-03-08", "2026-03-08T08:00:00Z", "2026-03-09T07:00:00Z"),
            (
                "2026-12-19T18:00",
                "2026-12-20T02:00:00Z",
                "2026-12-20T02:00:00Z",
            ),
            // In the spring-forward gap: the first instant after it.
            (
                "2026-03-08T02:30",
                "2026-03-08T10:00:00Z",
                "2026-03-08T10:00:00Z",
            ),
            // Ambiguous after falling back: the earlier instant (PDT).
            (
                "2026-11-01T01:30",
                "2026-11-01T08:30:00Z",
                "2026-11-01T08:30:00Z",
            ),
            (
                "2026-12-19T18:00:00+01:00",
                "2026-12-19T17:00:00Z",
                "2026-12-19T17:00:00Z",
            ),
        ] {
            let b = bound(input);
            assert_eq!(
                b.start_instant(Los_Angeles),
                Some(utc(start)),
                "{input} as from"
            );
            assert_eq!(b.end_instant(Los_Angeles), Some(utc(end)), "{input} as to");
        }
    }

    #[test]
    fn freeze_validation() {
        for (from, to) in [
            ("2026-12-19", "2027-01-04"),
            ("2026-12-19", "2026-12-19"),
            ("2026-12-19T18:00", "2026-12-19"),
            ("2026-12-19", "2026-12-19T00:01"),
            ("2026-12-19T10:00:00Z", "2026-12-19T10:00:01Z"),
            ("2026-12-19T10:00:00Z", "2026-12-19"),
            ("2026-12-19", "2026-12-19T10:00:00Z"),
            ("2026-12-19T10:00:00Z", "2026-12-19T09:00"),
        ] {
            assert_eq!(freeze(from, to, "x").validate(), Ok(()), "{from} .. {to}");
        }
        for (from, to, message) in [
            (
                "2026-12-19",
                "2026-12-18",
                r#"freeze "holidays": to 2026-12-18 is not after from 2026-12-19"#,
            ),
            (
                "2026-12-20T00:00",
                "2026-12-19",
                r#"freeze "holidays": to 2026-12-19 is not after from 2026-12-20T00:00"#,
            ),
            (
                "2026-12-19T10:00",
                "2026-12-19T10:00",
                r#"freeze "holidays": to 2026-12-19T10:00 is not after from 2026-12-19T10:00"#,
            ),
            (
                "2026-12-19T10:00:00Z",
                "2026-12-19T11:00:00+02:00",
                r#"freeze "holidays": to 2026-12-19T11:00:00+02:00 is not after from 2026-12-19T10:00:00Z"#,
            ),
            (
                "2026-12-21T00:00:00Z",
                "2026-12-19",
                r#"freeze "holidays": to 2026-12-19 is not after from 2026-12-21T00:00:00Z"#,
            ),
        ] {
            let f = freeze(from, to, "holidays");
            assert_eq!(f.validate(), Err(message.to_owned()), "{from} .. {to}");
            assert_eq!(
                f.validate_in(Berlin),
                Err(message.to_owned()),
                "{from} .. {to}"
            );
        }
        let unnamed = freeze("2026-12-19", "2026-12-18", "");
        assert_eq!(
            unnamed.validate(),
            Err("freeze: to 2026-12-18 is not after from 2026-12-19".to_owned())
        );
        // Mixed kinds need the timezone: 09:00 local is 17:00 UTC in Los Angeles (fine)
        // but 08:00 UTC in Berlin (before 10:00 UTC).
        let mixed = freeze("2026-12-19T10:00:00Z", "2026-12-19T09:00", "mixed");
        assert_eq!(mixed.validate_in(Los_Angeles), Ok(()));
        assert_eq!(
            mixed.validate_in(Berlin),
            Err(
                r#"freeze "mixed": to 2026-12-19T09:00 is not after from 2026-12-19T10:00:00Z in Europe/Berlin"#
                    .to_owned()
            )
        );
    }

    #[test]
    fn freeze_spanning_windows() {
        let s = Schedule::new(
            Los_Angeles,
            vec![window("Mon-Fri 09:00-17:00")],
            vec![freeze("2026-12-19", "2027-01-04", "holidays")],
            TimeDelta::zero(),
        );
        // Frozen from Sat 2026-12-19 00:00 PST through Mon 2027-01-04 (inclusive), i.e.
        // until 2027-01-05 00:00 PST = 08:00 UTC.
        let until = utc("2027-01-05T08:00:00Z");
        assert!(s.is_open(utc("2026-12-18T20:00:00Z"))); // Fri 12:00 PST
        assert!(!s.is_open(utc("2026-12-21T18:00:00Z"))); // Mon 10:00 PST
        assert!(!s.is_open(utc("2027-01-04T18:00:00Z"))); // Mon 10:00 PST, last day
        assert!(s.is_open(utc("2027-01-05T17:00:00Z"))); // Tue 09:00 PST
        let next = utc("2027-01-05T17:00:00Z");
        assert_eq!(
            s.next_open(utc("2026-12-18T23:30:00Z"), None),
            Some(utc("2026-12-18T23:30:00Z"))
        );
        assert_eq!(s.next_open(utc("2026-12-19T01:00:00Z"), None), Some(next));
        assert_eq!(s.next_open(utc("2026-12-21T18:00:00Z"), None), Some(next));
        assert_eq!(
            s.evaluate(utc("2026-12-21T18:00:00Z"), None),
            Verdict::Closed {
                reason: ClosedReason::Frozen {
                    reason: "holidays".to_owned(),
                    until
                },
                next_open: Some(next),
            }
        );
    }

    #[test]
    fn freeze_ending_inside_a_window() {
        for (to, next) in [
            // Mon 2027-01-04 12:00 PST, inside the window.
            ("2027-01-04T12:00", "2027-01-04T20:00:00Z"),
            ("2027-01-04T20:00:00Z", "2027-01-04T20:00:00Z"),
            ("2027-01-04T20:00:00.25Z", "2027-01-04T20:00:00.25Z"),
            // Ends after the window closes: the next morning.
            ("2027-01-04T18:00", "2027-01-05T17:00:00Z"),
        ] {
            let s = Schedule::new(
                Los_Angeles,
                vec![window("Mon-Fri 09:00-17:00")],
                vec![freeze("2026-12-19T18:00:00Z", to, "")],
                TimeDelta::zero(),
            );
            assert_eq!(
                s.next_open(utc("2026-12-22T18:00:00Z"), None),
                Some(utc(next)),
                "to {to}"
            );
        }
    }

    #[test]
    fn overlapping_and_chained_freezes() {
        let s = Schedule::new(
            UTC,
            vec![window("* 09:00-17:00")],
            vec![
                freeze("2026-06-01T00:00:00Z", "2026-06-03T10:00:00Z", "a"),
                freeze("2026-06-02", "2026-06-04T12:00", "b"),
                freeze("2026-06-04T12:00", "2026-06-04T13:30", "c"),
                freeze("2026-06-02", "2026-06-04T12:00:00Z", "d"),
            ],
            TimeDelta::zero(),
        );
        assert_eq!(
            s.evaluate(utc("2026-06-02T10:00:00Z"), None),
            Verdict::Closed {
                // "b" and "d" end at the same instant; the first listed wins.
                reason: ClosedReason::Frozen {
                    reason: "b".to_owned(),
                    until: utc("2026-06-04T12:00:00Z")
                },
                next_open: Some(utc("2026-06-04T13:30:00Z")),
            }
        );
        assert_eq!(
            s.evaluate(utc("2026-06-01T10:00:00Z"), None),
            Verdict::Closed {
                reason: ClosedReason::Frozen {
                    reason: "a".to_owned(),
                    until: utc("2026-06-03T10:00:00Z")
                },
                next_open: Some(utc("2026-06-04T13:30:00Z")),
            }
        );
    }

    #[test]
    fn min_interval_pushes_next_open_later() {
        let s = Schedule::new(
            Los_Angeles,
            vec![window("Mon-Fri 09:00-17:00")],
            vec![],
            hours(1),
        );
        // Mon 2026-06-01 10:00 PDT = 17:00 UTC.
        let last = utc("2026-06-01T17:00:00Z");
        let now = utc("2026-06-01T17:30:00Z");
        assert!(s.is_open(now));
        assert_eq!(
            s.next_open(now, Some(last)),
            Some(utc("2026-06-01T18:00:00Z"))
        );
        assert_eq!(
            s.evaluate(now, Some(last)),
            Verdict::Closed {
                reason: ClosedReason::MinInterval {
                    until: utc("2026-06-01T18:00:00Z")
                },
                next_open: Some(utc("2026-06-01T18:00:00Z")),
            }
        );
        assert_eq!(
            s.evaluate(utc("2026-06-01T18:00:00Z"), Some(last)),
            Verdict::Open
        );
        // Last bump at 16:30 PDT: the interval runs out after the window closes.
        let late = utc("2026-06-01T23:30:00Z");
        assert_eq!(
            s.next_open(utc("2026-06-01T23:45:00Z"), Some(late)),
            Some(utc("2026-06-02T16:00:00Z"))
        );
        // A long interval over a weekend: Friday 10:00 PDT + 60h = Sunday 22:00, so Monday.
        let long = Schedule::new(
            Los_Angeles,
            vec![window("Mon-Fri 09:00-17:00")],
            vec![],
            hours(60),
        );
        assert_eq!(
            long.next_open(
                utc("2026-06-05T18:00:00Z"),
                Some(utc("2026-06-05T17:00:00Z"))
            ),
            Some(utc("2026-06-08T16:00:00Z"))
        );
    }

    #[test]
    fn evaluate_reports_frozen_then_outside_then_min_interval() {
        let s = Schedule::new(
            UTC,
            vec![window("Mon-Fri 09:00-17:00")],
            vec![freeze("2026-06-06", "2026-06-08T10:00", "weekend")],
            hours(4),
        );
        let closed = |reason, next: &str| Verdict::Closed {
            reason,
            next_open: Some(utc(next)),
        };
        let last = Some(utc("2026-06-05T16:00:00Z"));
        for (now, last_bump, verdict) in [
            // Frozen, outside the window and within the interval: frozen wins.
            (
                "2026-06-06T12:00:00Z",
                Some(utc("2026-06-06T11:00:00Z")),
                closed(
                    ClosedReason::Frozen {
                        reason: "weekend".to_owned(),
                        until: utc("2026-06-08T10:00:00Z"),
                    },
                    "2026-06-08T10:00:00Z",
                ),
            ),
            // Outside the window and within the interval: outside wins.
            (
                "2026-06-05T18:00:00Z",
                last,
                closed(ClosedReason::OutsideWindow, "2026-06-08T10:00:00Z"),
            ),
            (
                "2026-06-05T08:00:00Z",
                None,
                closed(ClosedReason::OutsideWindow, "2026-06-05T09:00:00Z"),
            ),
            (
                "2026-06-05T16:30:00Z",
                last,
                closed(
                    ClosedReason::MinInterval {
                        until: utc("2026-06-05T20:00:00Z"),
                    },
                    "2026-06-08T10:00:00Z",
                ),
            ),
            ("2026-06-05T16:30:00Z", None, Verdict::Open),
            ("2026-06-08T10:00:00Z", last, Verdict::Open),
        ] {
            assert_eq!(s.evaluate(utc(now), last_bump), verdict, "at {now}");
        }
    }

    #[test]
    fn closed_reasons_display() {
        let until = utc("2027-01-05T08:00:00Z");
        for (reason, text) in [
            (
                ClosedReason::OutsideWindow,
                "outside the schedule's windows",
            ),
            (
                ClosedReason::Frozen {
                    reason: "holidays".to_owned(),
                    until,
                },
                "frozen until 2027-01-05T08:00:00Z: holidays",
            ),
            (
                ClosedReason::Frozen {
                    reason: String::new(),
                    until,
                },
                "frozen until 2027-01-05T08:00:00Z",
            ),
            (
                ClosedReason::MinInterval { until },
                "minimum interval since the last bump has not elapsed (until 2027-01-05T08:00:00Z)",
            ),
        ] {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn extremes_give_none_without_panicking() {
        let forever = Freeze {
            from: FreezeBound::Date(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()),
            to: FreezeBound::Date(NaiveDate::MAX),
            reason: "forever".to_owned(),
        };
        let now = utc("2026-06-01T12:00:00Z");
        let s = Schedule::new(
            Berlin,
            vec![window("* 09:00-17:00")],
            vec![forever],
            TimeDelta::zero(),
        );
        assert!(!s.is_open(now));
        assert_eq!(s.next_open(now, None), None);
        assert!(matches!(
            s.evaluate(now, None),
            Verdict::Closed {
                reason: ClosedReason::Frozen { .. },
                next_open: None
            }
        ));
        let huge = Schedule::new(Berlin, vec![], vec![], TimeDelta::MAX);
        assert_eq!(huge.next_open(now, Some(now)), None);
        let end = DateTime::<Utc>::MAX_UTC - TimeDelta::hours(1);
        let late = Schedule::new(
            Berlin,
            vec![window("Mon 09:00-10:00")],
            vec![],
            TimeDelta::zero(),
        );
        assert_eq!(late.next_open(end, None), None);
        assert!(!late.is_open(DateTime::<Utc>::MAX_UTC));
    }

    /// Checks `next_open` against a minute-by-minute scan of `is_open` and the minimum
    /// interval, from every 7th minute of `[from, to)`. Every boundary in the schedules
    /// used is on a whole minute, so the scan is exact.
    fn check_against_scan(s: &Schedule, from: &str, to: &str, last_bump: Option<DateTime<Utc>>) {
        let (from, to) = (utc(from), utc(to));
        let not_before = last_bump.map(|b| b + s.min_interval());
        let minutes = usize::try_from((to - from).num_minutes()).unwrap() + 9 * 24 * 60;
        let at = |i: usize| from + TimeDelta::minutes(i64::try_from(i).unwrap());
        let allowed: Vec<bool> = (0..minutes)
            .map(|i| s.is_open(at(i)) && not_before.is_none_or(|nb| at(i) >= nb))
            .collect();
        for i in (0..minutes - 9 * 24 * 60).step_by(7) {
            let expected = (i..minutes).find(|&j| allowed[j]).map(at);
            assert_eq!(s.next_open(at(i), last_bump), expected, "from {}", at(i));
        }
    }

    #[test]
    fn next_open_agrees_with_a_scan_around_clock_changes() {
        // Both sets have windows starting in the spring-forward gap, lying inside it,
        // starting in the repeated hour, and one the clock jumps back into on falling back
        // (closed just before the change, open just after it).
        let los_angeles: Vec<Window> = [
            "Sun 01:00-01:30",
            "Sun 00:30-01:10",
            "Sun 01:40-01:50",
            "Sun 02:10-02:20",
            "Sun 02:30-04:00",
            "Sat 23:00-00:15",
            "Mon-Fri 09:00-17:00",
        ]
        .iter()
        .map(|w| window(w))
        .collect();
        let berlin: Vec<Window> = [
            "Sun 01:50-02:20",
            "Sun 02:10-02:15",
            "Sun 02:30-02:45",
            "Sun 03:00-04:00",
            "Sat 23:00-00:15",
            "Mon-Fri 09:00-17:00",
        ]
        .iter()
        .map(|w| window(w))
        .collect();
        for (tz, windows, from, to) in [
            (
                Los_Angeles,
                &los_angeles,
                "2026-03-07T00:00:00Z",
                "2026-03-09T00:00:00Z",
            ),
            (
                Los_Angeles,
                &los_angeles,
                "2026-10-31T00:00:00Z",
                "2026-11-02T00:00:00Z",
            ),
            (
                Berlin,
                &berlin,
                "2026-03-28T00:00:00Z",
                "2026-03-30T00:00:00Z",
            ),
            (
                Berlin,
                &berlin,
                "2026-10-24T00:00:00Z",
                "2026-10-26T00:00:00Z",
            ),
        ] {
            let s = Schedule::new(tz, windows.clone(), vec![], TimeDelta::zero());
            check_against_scan(&s, from, to, None);
        }
        let frozen = Schedule::new(
            Los_Angeles,
            los_angeles,
            vec![
                freeze("2026-11-01T01:20", "2026-11-01T01:50:00-08:00", "fall"),
                freeze("2026-10-31T12:00:00Z", "2026-10-31", "sat"),
            ],
            TimeDelta::minutes(45),
        );
        check_against_scan(
            &frozen,
            "2026-10-31T00:00:00Z",
            "2026-11-02T00:00:00Z",
            None,
        );
        check_against_scan(
            &frozen,
            "2026-10-31T00:00:00Z",
            "2026-11-02T00:00:00Z",
            Some(utc("2026-11-01T08:40:00Z")),
        );
    }
}
