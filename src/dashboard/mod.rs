//! The read-only web dashboard of `autobump run --listen`: every policy at a glance
//! (`/`), one policy's 30-day timeline and full history (`/policies/NAME`), and the
//! versioned JSON API both are drawn from (`/api/v1/policies`, [`api`]).
//!
//! The pages are built from the same data as `autobump status`: the policies in
//! force and each one's state, read through a [`Source`] (standalone: the SQLite
//! store and the policy folder; in-cluster: the `Autobump` objects), plus the last
//! gate reading the controller made ([`crate::metrics::Metrics::gates`]). Building
//! a page is pure ([`api::overview`], [`api::detail`], [`html`], [`timeline`]) with
//! `now` as a parameter; only the [`Source`] and [`serve`] do I/O.
//!
//! Nothing here writes: no route changes state, and no secret, token or webhook URL
//! is part of any page (notification targets are never read; every URL shown has its
//! user info removed, [`api::scrub`]).

pub mod api;
pub mod html;
pub mod serve;
pub mod source;
pub mod timeline;

pub use serve::{DashboardConfig, router};
pub use source::{ClusterSource, FilesSource, Snapshot, Source, SourceError};

use crate::policy::v1alpha1::Reason;

/// The reasons whose newest entry a row shows (its last bump and last rollback).
pub const ROW_REASONS: &[Reason] = &[
    Reason::BumpPushed,
    Reason::Pushed,
    Reason::Merged,
    Reason::RolledBack,
];

/// The reasons that count as a bump (opened for review, pushed, or merged).
pub const BUMP_REASONS: &[Reason] = &[Reason::BumpPushed, Reason::Pushed, Reason::Merged];

/// How far back the timeline reaches.
pub const TIMELINE_DAYS: i64 = 30;
