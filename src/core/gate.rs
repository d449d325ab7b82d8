//! The alert gate's verdict (pure type). Three verdicts, not two: a gate that could
//! not be measured is `Unknown`, and Unknown never merges and never promotes.

/// What the alert gate says about the service right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    /// No selected alert fires (or the policy has no gate).
    Clear,
    /// These selected alerts fire (their names).
    Firing(Vec<String>),
    /// The alert source could not be read, and why.
    Unknown(String),
}

impl GateVerdict {
    /// Whether it is safe to change production: only `Clear` is.
    #[must_use]
    pub fn is_clear(&self) -> bool {
        matches!(self, Self::Clear)
    }
}
