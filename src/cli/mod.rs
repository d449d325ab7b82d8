//! The binary's subcommands (compiled into `autobump` only, not the library): each
//! turns parsed arguments into calls on the library and prints the outcome. This is
//! the one place besides `main.rs` where `anyhow` is used.

pub mod github;
pub mod ops;
pub mod run;
pub mod status;
pub mod tools;
