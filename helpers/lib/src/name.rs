//! Machine names, validated the way systemd-nspawn and machined accept them.

use std::fmt;

/// Why a machine name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty string.
    #[error("machine name is empty")]
    Empty,
    /// Longer than a host name may be.
    #[error("machine name {0:?} is longer than 64 characters")]
    TooLong(String),
    /// A character outside `[A-Za-z0-9.-]`, or a label that starts or ends with `-` or is empty.
    #[error(
        "machine name {0:?} is not a valid host name (ASCII letters, digits, '-' and '.'; labels may not start or end with '-')"
    )]
    Invalid(String),
}

/// A validated machine name: a host name as systemd's `hostname_is_valid()` accepts it (letters,
/// digits, hyphens; dot-separated labels), which is what machined and `systemd-nspawn -M` require.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineName(String);

impl MachineName {
    /// Validate `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > 64 {
            return Err(NameError::TooLong(name.to_owned()));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !name.split('.').all(label_ok) {
            return Err(NameError::Invalid(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for MachineName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in ["web", "TestBWContainer3", "a.b", "my-app-2", "x"] {
            assert!(MachineName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "a.",
            "a..b",
            "a/b",
            "a b",
            "ä",
            "../x",
            "a_b",
            "a-.b",
            &"a".repeat(65),
        ] {
            assert!(MachineName::new(bad).is_err(), "{bad:?}");
        }
    }
}
