//! The upstream policies of a promotion chain (`promotion.from`), modelled.
//!
//! In chain scenarios ([`crate::scenario::Mix::Chain`]) the simulated policy is the
//! last of a chain of two or three (dev → staging → production). The policies above
//! it are not reconciled here; what they record is generated the way a real policy
//! records it, through the real state code: a release becomes known-good with
//! [`StateChange::Promote`] (so the proof carries the same evidence), a rollback
//! marks versions bad. The generator keeps to what the real upstreams guarantee: the
//! top one proves any build in the registry (good or bad: its own alerts may miss a
//! bad one), the middle one only versions the top one proved and neither recorded as
//! bad (the same [`Admission`] the real reconcile uses). Now and then a version is
//! recorded bad upstream after the fact, so the downstream must drop a proposal it
//! already made.
//!
//! The invariants on the simulated policy (`P1`, `P2` in `invariants.rs`) compare
//! what lands and what is proposed with these records at that moment.

use autobump::core::change::StateChange;
use autobump::core::promotion::{Admission, Conditions};
use autobump::core::watch::canonical;
use autobump::policy::v1alpha1::{BadVersion, ImageVersion, Release};
use autobump::store::PolicyState;
use fastrand::Rng;

use crate::world::{World, Writer};

/// The upstream's state (default when never written).
pub fn state(w: &World, name: &str) -> PolicyState {
    w.store.get(name).cloned().unwrap_or_default()
}

/// Tags every app of the scenario has in the registry now, oldest first.
fn common_tags(w: &World) -> Vec<String> {
    let apps = w.scenario.apps.len();
    let first = w.scenario.repo(0);
    w.registry.repos.get(&first).map_or_else(Vec::new, |tags| {
        tags.iter()
            .map(|t| t.tag.clone())
            .filter(|t| (0..apps).all(|a| w.registry.has(&w.scenario.repo(a), t)))
            .collect()
    })
}

/// The release of every app at `tag`.
fn release(w: &World, tag: &str) -> Release {
    Release {
        summary: tag.to_owned(),
        images: (0..w.scenario.apps.len())
            .map(|a| ImageVersion {
                image: w.scenario.repo(a),
                tag: tag.to_owned(),
                digest: None,
            })
            .collect(),
        since: w.now,
        commit: None,
    }
}

/// Whether upstream `i` (0: the direct one) may prove `tag` now: the top one any tag,
/// the others what the one above them admits.
fn may_prove(w: &World, i: usize, tag: &str) -> bool {
    let chain = &w.scenario.upstreams;
    let Some(above) = chain.get(i + 1) else {
        return true;
    };
    let admission = Admission::promoted(&state(w, &chain[i]), &state(w, above));
    (0..w.scenario.apps.len()).all(|a| admission.admits(&canonical(&w.scenario.repo(a)), tag))
}

/// Upstream `i` records `tag` as known-good (through the real state code).
fn prove(w: &mut World, i: usize, tag: &str) {
    let name = w.scenario.upstreams[i].clone();
    let mut s = state(w, &name);
    let r = release(w, tag);
    let conditions = Conditions::of(&w.scenario.policy.spec);
    s.current = Some(r.clone());
    s.apply(&[StateChange::Promote(r, conditions)], w.now);
    w.write_state(&name, s, &Writer::Controller);
}

/// Upstream `i` records `tag` as bad (a rollback there).
fn mark_bad(w: &mut World, i: usize, tag: &str) {
    let name = w.scenario.upstreams[i].clone();
    let mut s = state(w, &name);
    for a in 0..w.scenario.apps.len() {
        s.bad_versions.insert(BadVersion {
            image: canonical(&w.scenario.repo(a)),
            tag: tag.to_owned(),
        });
    }
    w.write_state(&name, s, &Writer::Controller);
}

/// The upstreams act between two reconciles of the simulated policy, top first.
pub fn act(w: &mut World, rng: &mut Rng) {
    for i in (0..w.scenario.upstreams.len()).rev() {
        let tags = common_tags(w);
        if tags.is_empty() {
            return;
        }
        match rng.u32(0..100) {
            // Proves a version: mostly the newest, sometimes an older one.
            0..=34 => {
                let tag = if rng.u32(0..3) == 0 {
                    tags[rng.usize(0..tags.len())].clone()
                } else {
                    tags[tags.len() - 1].clone()
                };
                if may_prove(w, i, &tag) {
                    prove(w, i, &tag);
                }
            }
            // Rolls a version back: mostly one it never proved, rarely one it did.
            35..=42 => {
                let s = state(w, &w.scenario.upstreams[i]);
                let proven = autobump::core::promotion::proven_pairs(&s);
                let tag = tags[rng.usize(0..tags.len())].clone();
                let was_proven = proven.contains(&(canonical(&w.scenario.repo(0)), tag.clone()));
                if !was_proven || rng.u32(0..4) == 0 {
                    mark_bad(w, i, &tag);
                }
            }
            _ => {}
        }
    }
}

/// The liveness phase: every upstream, top first, proves `tag` (a new good build).
pub fn prove_everywhere(w: &mut World, tag: &str) {
    for i in (0..w.scenario.upstreams.len()).rev() {
        if may_prove(w, i, tag) {
            prove(w, i, tag);
        }
    }
}
