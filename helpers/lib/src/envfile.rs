//! `man8env.env`: the literal format (the default) and the Python mbctl's semantics
//! ([`python_mbctl`], declaration key `EnvironmentCompat=python-mbctl`).
//!
//! Literal: one `KEY=VALUE` a line; empty lines and lines whose first non-blank character is `#`
//! are skipped; split at the first `=`; the value is taken literally to the end of the line (no
//! quote removal, no escapes, no `$` expansion, spaces kept). An `export ` before the key is
//! dropped (`export A=1` sets `A`, as it did under the Python tool). A line with no `=` or an empty
//! key is reported, not guessed at. A trailing `\r` (a file edited on Windows) is removed with the
//! line ending only.

pub mod python_mbctl;

use std::fmt;

/// Variables man8s sets itself (`MAN8S_CONTAINER_NAME`, `MAN8S_YGGDRASIL_ADDRESS`, …): an image's
/// `Env` never sets a name with this prefix; the values man8s computes win.
pub const RESERVED_PREFIX: &str = "MAN8S_";

/// How a man8env.env is read (`EnvironmentCompat=` of the declaration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Values literal to the end of the line (new machines).
    #[default]
    Literal,
    /// What the Python mbctl's `export KEY="VALUE"` + `eval` loader made of each line
    /// (machines migrated from it), without running a shell.
    PythonMbctl,
}

impl Mode {
    /// The declaration value (`python-mbctl`), `None` for the default.
    pub fn as_key_value(self) -> Option<&'static str> {
        match self {
            Self::Literal => None,
            Self::PythonMbctl => Some(python_mbctl::KEY_VALUE),
        }
    }
}

/// A problem with one line of an environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
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
    /// Lines that were ignored (neither blank, comments nor usable assignments).
    pub errors: Vec<EnvLineError>,
    /// Lines that were used, with a caveat (python-mbctl mode: a command substitution kept
    /// literally, an expansion not reproduced).
    pub warnings: Vec<EnvLineError>,
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

/// What one literal line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiteralLine<'a> {
    /// Blank or a comment.
    Skip,
    /// `KEY=VALUE`.
    Set(&'a str, &'a str),
    /// Not usable, and why.
    Bad(&'static str),
}

/// One line (without its `\n`; a trailing `\r` is dropped) in the literal format.
pub fn literal_line(raw: &str) -> LiteralLine<'_> {
    let line = raw.strip_suffix('\r').unwrap_or(raw);
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return LiteralLine::Skip;
    }
    let Some((key, value)) = line.split_once('=') else {
        return LiteralLine::Bad("no '=' in line");
    };
    let key = key.trim();
    let key = key
        .strip_prefix("export")
        .filter(|rest| rest.starts_with([' ', '\t']))
        .map_or(key, str::trim_start);
    if key.is_empty() {
        LiteralLine::Bad("empty variable name before '='")
    } else if key.contains('\0') || value.contains('\0') {
        LiteralLine::Bad("NUL byte in line")
    } else {
        LiteralLine::Set(key, value)
    }
}

/// Parse the text of a man8env.env file in the literal format.
pub fn parse(text: &str) -> EnvFile {
    let mut out = EnvFile::default();
    for (idx, raw) in text.split('\n').enumerate() {
        match literal_line(raw) {
            LiteralLine::Skip => {}
            LiteralLine::Set(k, v) => out.vars.push((k.to_owned(), v.to_owned())),
            LiteralLine::Bad(reason) => out.errors.push(EnvLineError {
                line: idx + 1,
                reason: reason.to_owned(),
            }),
        }
    }
    out
}

/// Parse in `mode`; `outer` gives the variables known before the file (image config `Env`,
/// nspawn's environment), which only python-mbctl mode expands.
pub fn parse_mode(text: &str, mode: Mode, outer: &dyn Fn(&str) -> Option<String>) -> EnvFile {
    match mode {
        Mode::Literal => parse(text),
        Mode::PythonMbctl => python_mbctl::parse(text, outer),
    }
}

/// A line that means different things in the two modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeDifference {
    /// 1-based line number.
    pub line: usize,
    /// What the literal mode makes of it (`KEY="value"`, or `ignored: why`).
    pub literal: String,
    /// What python-mbctl mode makes of it.
    pub python_mbctl: String,
}

impl fmt::Display for ModeDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: literal mode: {}; python-mbctl mode: {}",
            self.line, self.literal, self.python_mbctl
        )
    }
}

/// Every line of `text` whose meaning differs between the modes (`outer` as in [`parse_mode`]).
pub fn mode_differences(text: &str, outer: &dyn Fn(&str) -> Option<String>) -> Vec<ModeDifference> {
    let show = |vars: &[(String, String)]| {
        vars.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = Vec::new();
    let mut state = python_mbctl::Loader::new(outer);
    for (idx, raw) in text.split('\n').enumerate() {
        let literal = match literal_line(raw) {
            LiteralLine::Skip => None,
            LiteralLine::Set(k, v) => Some(Ok(vec![(k.to_owned(), v.to_owned())])),
            LiteralLine::Bad(why) => Some(Err(why.to_owned())),
        };
        let compat = state.line(raw).map(|o| o.result);
        if literal == compat {
            continue;
        }
        let describe = |r: Option<Result<Vec<(String, String)>, String>>| match r {
            None => "skipped (blank or comment)".to_owned(),
            Some(Ok(v)) if v.is_empty() => "sets nothing".to_owned(),
            Some(Ok(v)) => show(&v),
            Some(Err(why)) => format!("ignored ({why})"),
        };
        out.push(ModeDifference {
            line: idx + 1,
            literal: describe(literal),
            python_mbctl: describe(compat),
        });
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
    fn export_prefix_sets_the_key() {
        let f = parse("export A=1\nexport\tB=$x\nexportC=2\nexport=3\n");
        assert_eq!(
            f.vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "$x".into()),
                ("exportC".into(), "2".into()),
                ("export".into(), "3".into())
            ]
        );
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

    #[test]
    fn differences_name_line_and_both_values() {
        let outer = |k: &str| (k == "HOME").then(|| "/root".to_owned());
        let text = "SAME=plain value\nH=$HOME/x\n# c\nQ=\"q\"\nexport E=1\nNOEQ\nB=a\\\\b\n";
        let d = mode_differences(text, &outer);
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                r#"line 2: literal mode: H="$HOME/x"; python-mbctl mode: H="/root/x""#,
                r#"line 6: literal mode: ignored (no '=' in line); python-mbctl mode: NOEQ="NOEQ""#,
                r#"line 7: literal mode: B="a\\\\b"; python-mbctl mode: B="a\\b""#,
            ]
        );
    }
}
