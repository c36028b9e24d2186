//! `man8env.env`, with the Python tool's exact semantics.
//!
//! One `KEY=VALUE` a line; empty lines and lines whose first non-blank character is `#` are skipped;
//! split at the first `=`; the value is taken literally to the end of the line (no quote removal, no
//! escapes, no `$` expansion, spaces kept). A line with no `=` or an empty key is reported, not
//! guessed at. A trailing `\r` (a file edited on Windows) is removed with the line ending only.

use std::fmt;

/// A problem with one line of an environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for EnvLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The parsed file: variables in file order (a later duplicate wins when turned into a map), and
/// the lines that could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    /// `(key, value)` in file order.
    pub vars: Vec<(String, String)>,
    /// Lines that were neither blank, comments nor `KEY=VALUE`.
    pub errors: Vec<EnvLineError>,
}

impl EnvFile {
    /// The value of `key` (last one wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse the text of a man8env.env file.
pub fn parse(text: &str) -> EnvFile {
    let mut out = EnvFile::default();
    for (idx, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) => {
                let key = key.trim();
                if key.is_empty() {
                    out.errors.push(EnvLineError {
                        line: idx + 1,
                        reason: "empty variable name before '='",
                    });
                } else if key.contains('\0') || value.contains('\0') {
                    out.errors.push(EnvLineError {
                        line: idx + 1,
                        reason: "NUL byte in line",
                    });
                } else {
                    out.vars.push((key.to_owned(), value.to_owned()));
                }
            }
            None => out.errors.push(EnvLineError {
                line: idx + 1,
                reason: "no '=' in line",
            }),
        }
    }
    out
}

/// Render variables as a man8env.env file. Values are written verbatim; a value containing a
/// newline cannot be represented and is refused.
pub fn render<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<String, String> {
    let mut out = String::new();
    for (k, v) in vars {
        if k.is_empty() || k.contains(['=', '\n', '\r']) || k.trim_start().starts_with('#') {
            return Err(format!(
                "variable name {k:?} cannot be written to man8env.env"
            ));
        }
        if v.contains(['\n', '\r']) {
            return Err(format!(
                "value of {k} contains a line break, which man8env.env cannot hold"
            ));
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_values() {
        let f = parse("A=x=\"y z\" $HOME\n  # c\n\nB= spaced  \r\nC=\n");
        assert_eq!(
            f.vars,
            vec![
                ("A".into(), "x=\"y z\" $HOME".into()),
                ("B".into(), " spaced  ".into()),
                ("C".into(), "".into())
            ]
        );
        assert!(f.errors.is_empty());
    }

    #[test]
    fn bad_lines_reported() {
        let f = parse("novalue\n=x\nOK=1");
        assert_eq!(f.vars, vec![("OK".into(), "1".into())]);
        assert_eq!(
            f.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn round_trip() {
        let text = render([("A", "x=\"y z\" $HOME"), ("B", " b ")]).unwrap();
        let f = parse(&text);
        assert_eq!(f.get("A"), Some("x=\"y z\" $HOME"));
        assert_eq!(f.get("B"), Some(" b "));
        assert!(render([("A", "a\nb")]).is_err());
    }
}
