//! `/hold` and `/unhold` comment commands: parsing and who may use them (pure).
//!
//! A command is a line of its own in a comment: `/hold` (optionally followed by a
//! reason), `/hold cancel`, `/unhold` or `/remove-hold`. The last command in a comment
//! wins. Holds belong to the policy, not to a PR, so they work with no PR open.
//!
//! Who may: placing a hold needs at least `triage` on the repository by default,
//! lifting one at least `write`; a hold autobump placed itself (alerts, a tampered PR)
//! can be lifted only by a person with at least `write`, whatever the configuration.

use std::fmt;

/// A repository permission level, lowest first (GitHub's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// No access.
    None,
    /// Read.
    Read,
    /// Triage (labels, close).
    Triage,
    /// Write (push).
    Write,
    /// Maintain.
    Maintain,
    /// Admin.
    Admin,
}

impl Permission {
    /// Lower-case name, as GitHub spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Read => "read",
            Self::Triage => "triage",
            Self::Write => "write",
            Self::Maintain => "maintain",
            Self::Admin => "admin",
        }
    }

    /// Reads GitHub's permission names (`admin`, `maintain`, `write`, `triage`, `read`,
    /// `none`; `push`/`pull` are older spellings); `None` for other names (custom roles).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "read" | "pull" => Self::Read,
            "triage" => Self::Triage,
            "write" | "push" => Self::Write,
            "maintain" => Self::Maintain,
            "admin" => Self::Admin,
            _ => return None,
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command found in a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Hold the policy, with an optional reason.
    Hold(Option<String>),
    /// Lift the hold.
    Unhold,
}

/// The command a comment carries, if any (the last command line wins).
#[must_use]
pub fn parse(comment: &str) -> Option<Command> {
    let mut found = None;
    for line in comment.lines() {
        let line = line.trim();
        let (word, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(w, r)| (w, r.trim()));
        found = match word {
            "/hold" if rest.eq_ignore_ascii_case("cancel") => Some(Command::Unhold),
            "/hold" => Some(Command::Hold((!rest.is_empty()).then(|| rest.to_owned()))),
            "/unhold" | "/remove-hold" => Some(Command::Unhold),
            _ => found,
        };
    }
    found
}

/// The permissions commands need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirements {
    /// To place a hold. Default triage.
    pub hold: Permission,
    /// To lift a hold a person placed. Default write.
    pub unhold: Permission,
}

impl Default for Requirements {
    fn default() -> Self {
        Self {
            hold: Permission::Triage,
            unhold: Permission::Write,
        }
    }
}

/// Whether a command by someone with `permission` may take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// It may.
    Allowed,
    /// It may not; a polite explanation for the reply comment.
    Denied(String),
}

/// Decides whether `command` by `login` (holding `permission`) takes effect, given the
/// hold in force (`automatic`: placed by autobump itself).
#[must_use]
pub fn authorize(
    command: &Command,
    login: &str,
    permission: Permission,
    current_hold_automatic: Option<bool>,
    requirements: Requirements,
) -> Authorization {
    let (needed, what) = match (command, current_hold_automatic) {
        (Command::Hold(_), _) => (requirements.hold, "hold this policy"),
        (Command::Unhold, Some(true)) => (
            requirements.unhold.max(Permission::Write),
            "lift a hold autobump placed itself",
        ),
        (Command::Unhold, _) => (requirements.unhold, "lift a hold"),
    };
    if permission >= needed {
        Authorization::Allowed
    } else {
        Authorization::Denied(format!(
            "Sorry @{login}, to {what} you need at least `{needed}` permission on this repository (you have `{permission}`). Nothing was changed."
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        let cases: &[(&str, Option<Command>)] = &[
            ("/hold", Some(Command::Hold(None))),
            (
                "/hold   the DB migration is running  ",
                Some(Command::Hold(Some("the DB migration is running".into()))),
            ),
            ("/hold cancel", Some(Command::Unhold)),
            ("/hold Cancel", Some(Command::Unhold)),
            ("/unhold", Some(Command::Unhold)),
            ("/remove-hold", Some(Command::Unhold)),
            ("lgtm\n/hold\nthanks", Some(Command::Hold(None))),
            ("/hold\n/unhold", Some(Command::Unhold)),
            ("please do not /hold this", None),
            ("/holdup", None),
            ("> /hold", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), *want, "{text:?}");
        }
    }

    #[test]
    fn who_may() {
        let req = Requirements::default();
        let hold = Command::Hold(None);
        assert_eq!(
            authorize(&hold, "a", Permission::Triage, None, req),
            Authorization::Allowed
        );
        assert!(matches!(
            authorize(&hold, "a", Permission::Read, None, req),
            Authorization::Denied(_)
        ));
        assert_eq!(
            authorize(&Command::Unhold, "a", Permission::Write, Some(false), req),
            Authorization::Allowed
        );
        let Authorization::Denied(msg) = authorize(
            &Command::Unhold,
            "bob",
            Permission::Triage,
            Some(false),
            req,
        ) else {
            panic!("triage must not lift a hold");
        };
        assert_eq!(
            msg,
            "Sorry @bob, to lift a hold you need at least `write` permission on this repository (you have `triage`). Nothing was changed."
        );
        // An automatic hold needs write even if the policy lowered the bar.
        let lax = Requirements {
            hold: Permission::Read,
            unhold: Permission::Triage,
        };
        assert!(matches!(
            authorize(&Command::Unhold, "a", Permission::Triage, Some(true), lax),
            Authorization::Denied(_)
        ));
        assert_eq!(
            authorize(&Command::Unhold, "a", Permission::Maintain, Some(true), lax),
            Authorization::Allowed
        );
        assert_eq!(Permission::parse("push"), Some(Permission::Write));
        assert_eq!(Permission::parse("bogus"), None);
    }
}
