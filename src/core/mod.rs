//! The pure core: every decision autobump makes, as functions of their inputs.
//!
//! Nothing under `core` does I/O or reads the clock; `now` is always a parameter.
//! That is what lets the planner be checked on random histories.

pub mod change;
pub mod commands;
pub mod gate;
pub mod merge;
pub mod plan;
pub mod pr;
pub mod promotion;
pub mod reference;
pub mod rewrite;
pub mod rollout;
pub mod schedule;
pub mod select;
pub mod tags;
pub mod watch;
