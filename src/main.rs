//! The `autobump` command line: parsing and wiring only (the one place `anyhow` is
//! used). Each subcommand's work lives in the library.

// Doc comments here are the CLI's --help text, printed by clap as plain text, where
// Markdown backticks would show literally.
#![allow(clippy::doc_markdown)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use autobump::policy::{self, Diagnostic};

/// autobump keeps a service's deployed images current through its GitOps repository,
/// and rolls back to the last known-good version when its alerts fire.
#[derive(Debug, Parser)]
#[command(name = "autobump", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate policy files and directories (recursively, *.yaml and *.yml).
    ///
    /// Exit status: 0 when every policy is valid, 1 when any is invalid (every
    /// problem is printed as FILE:LINE:COL: field.path: message), 2 on usage or I/O
    /// errors.
    Check {
        /// Policy files or directories.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// How to print the result.
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the CustomResourceDefinition of the Autobump kind (YAML).
    Crd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One line per problem, then a summary.
    Text,
    /// A JSON document with every problem.
    Json,
}

/// Exit status for usage and I/O errors (clap uses 2 for usage errors too).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    autobump::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("autobump: error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { paths, output } => check(&paths, output),
        Command::Crd => {
            print_out(&policy::crd_yaml())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Serialize)]
struct CheckReport<'a> {
    ok: bool,
    files: usize,
    policies: usize,
    errors: &'a [Diagnostic],
}

fn check(paths: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    // Unreadable paths are exit 2 (through `main`); invalid policies are exit 1.
    let loaded = policy::load_paths(paths)?;
    let ok = loaded.diagnostics.is_empty();
    let mut text = String::new();
    match output {
        Output::Json => {
            text = serde_json::to_string_pretty(&CheckReport {
                ok,
                files: loaded.files.len(),
                policies: loaded.policies.len(),
                errors: &loaded.diagnostics,
            })?;
            text.push('\n');
        }
        Output::Text => {
            for d in &loaded.diagnostics {
                writeln!(text, "{d}")?;
            }
            let files = plural(loaded.files.len(), "file");
            if ok {
                writeln!(
                    text,
                    "ok: {} in {files}",
                    plural(loaded.policies.len(), "policy")
                )?;
            } else {
                let bad_files = {
                    let mut f: Vec<_> = loaded.diagnostics.iter().map(|d| &d.file).collect();
                    f.dedup();
                    f.len()
                };
                writeln!(
                    text,
                    "invalid: {} in {bad_files} of {files}; {} valid",
                    plural(loaded.diagnostics.len(), "error"),
                    plural(loaded.policies.len(), "policy")
                )?;
            }
        }
    }
    print_out(&text)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn plural(n: usize, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "policy") => format!("{n} policies"),
        _ => format!("{n} {noun}s"),
    }
}

/// Writes to stdout; a closed pipe (`autobump crd | head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
