//! `mbctl`, the user's CLI over man8s: declarations, the fetch cache, systemd and machined.
//!
//! `main.rs` only calls [`run`]; each command lives in [`cmd`]. Errors are `anyhow` chains printed
//! on one line; a [`UsageError`] anywhere in the chain makes the exit code 2, anything else 1.

#![deny(missing_docs)]

pub mod bus;
pub mod cli;
pub mod cmd;
pub mod disk;
pub mod docs;
pub mod health;
pub mod import;
pub mod nsenter;
pub mod output;
pub mod payload;
pub mod prompt;
pub mod render;
pub mod updates;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// Exit code of a successful run.
pub const EXIT_OK: u8 = 0;
/// Exit code of a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code of a usage error (bad arguments, bad names).
pub const EXIT_USAGE: u8 = 2;

/// The user asked for something that cannot be (bad name, bad address, contradictory options):
/// exit code 2, like clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand for returning a usage error.
pub fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError(msg.into()).into())
}

/// Parse `args` (including argv\[0\]) and run the command; returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; every other clap error is usage (2).
            let _ = e.print();
            return ExitCode::from(if e.exit_code() == 0 {
                EXIT_OK
            } else {
                EXIT_USAGE
            });
        }
    };
    match cmd::dispatch(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("mbctl: {}", one_line(&err));
            let usage = err
                .chain()
                .any(|c| c.downcast_ref::<UsageError>().is_some());
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_RUNTIME })
        }
    }
}

/// The error chain on one line: `outer: inner: cause`, without repeating a cause the outer
/// message already contains.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text.replace('\n', " ").trim());
    }
    out
}
