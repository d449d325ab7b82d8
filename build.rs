//! Link options for the `autobump` binary.
//!
//! On Linux with glibc the binary is linked with packed relative relocations
//! (`-z pack-relative-relocs`, `DT_RELR`). A position-independent executable carries one
//! relocation per pointer in its read-only data (vtables, tables of strings): 74,000
//! of them for autobump, 1.7 MiB that the dynamic loader reads at every start and that
//! stayed resident for the life of the process. Packed, they take 28 KiB. The binary
//! then needs glibc 2.36 or later (Debian 12, Ubuntu 22.10) to start; the linker Rust
//! uses on x86-64 Linux (its own lld) and GNU ld 2.38 or later both write it.
//! Everything else about the executable (position independence, RELRO, `BIND_NOW`) is
//! unchanged.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
