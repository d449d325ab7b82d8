//! Rewriting image references (being written).
