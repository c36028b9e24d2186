//! Machine declarations: `NAME.machine` files in systemd's INI dialect, found in
//! `/etc/man8s/machines` > `/run/man8s/machines` > `/usr/lib/man8s/machines` (first found wins),
//! plus drop-ins `NAME.machine.d/*.conf` from all three directories, merged by file name (a drop-in
//! in /etc masks a same-named one in /run or /usr/lib) and applied in lexical order.
//!
//! Three modules with one job each: [`discovery`] finds and reads the files (through
//! [`crate::Paths`], so `MAN8S_ROOT` relocates them); [`values`] holds the grammar of each key's
//! value; [`fold`] turns the lexed assignments into a [`crate::machine::Machine`]. [`parse`] is
//! pure (text in, `Machine` or [`Diagnostics`] out).
//!
//! Syntax, as in systemd unit files: `[Section]` headers; `Key=Value` (whitespace around both is
//! dropped); lines starting with `#` or `;` are comments; a line ending in `\` continues on the
//! next one (the backslash becomes a space; comment lines inside a continuation are skipped); list
//! keys accumulate when repeated and an empty assignment (`Key=`) resets them; for single-valued
//! keys the last assignment wins and `Key=` restores the default. Keys and sections starting with
//! `X-` are ignored. Everything else unknown is an error, with a "did you mean" hint.

use std::fmt;

pub use crate::ini::Diagnostic;

pub mod discovery;
pub mod fold;
pub mod runtime;
pub mod values;

pub use discovery::{
    DiscoverError, LoadError, MAX_FILE_SIZE, SUFFIX, discover, discover_sources, dropins, find,
    fingerprint, load, load_fingerprinted, load_sources, load_sources_fingerprinted, read_file,
};
pub use fold::parse;
pub use values::{parse_port, parse_volume, split_environment, validate_image_reference};

/// All problems found in one machine's declaration (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    /// One diagnostic a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests;
