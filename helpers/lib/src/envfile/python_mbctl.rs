//! man8env.env as the Python mbctl loaded it (`EnvironmentCompat=python-mbctl`).
//!
//! Its loader turned each line that is not blank or a `#` comment into the shell command
//! `export KEY="VALUE"` — key = text before the first `=`, value = the rest with only `"` escaped
//! (a line without `=` is both key and value: `X` became `export X="X"`) — and `eval`ed it. This
//! module computes what that shell command did, without running a shell:
//!
//! - inside the double quotes the shell's rules apply: a backslash escapes only `$`, `` ` ``,
//!   `"` and `\` (and is otherwise kept), `$NAME` and `${NAME}` expand from the earlier lines and
//!   the outer environment (unset → empty);
//! - the key is unquoted shell text: `export A=1` became `export export A="1"` (sets `A`);
//!   blanks around it vanish; a key that is no variable name (`=x`, `A B=`, `1A=`) made the
//!   shell fail, and the line is ignored with a reason;
//! - a value with a backslash right before a `"` closed the quotes early; what followed was
//!   unquoted shell text, handled here with the shell's unquoted rules (and refused where it
//!   would have run something);
//! - command substitution (`$(…)`, backticks) is never run: it is kept literally and reported;
//!   so are other expansions this module does not reproduce (`${A:-x}`, `$1`, `$$`, `$((…))`);
//! - a `\r` before the line end stays in the value (the shell kept it too); later lines win.

use super::{EnvFile, EnvLineError};

/// The value of `EnvironmentCompat=` that selects this mode.
pub const KEY_VALUE: &str = "python-mbctl";

/// What one line did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineOutcome {
    /// The variables it set, in order; or why the line is ignored.
    pub result: Result<Vec<(String, String)>, String>,
    /// Caveats of a line that was used (an expansion kept literally).
    pub warnings: Vec<String>,
}

/// The loader's state: variables set so far over the outer environment.
pub struct Loader<'a> {
    outer: &'a dyn Fn(&str) -> Option<String>,
    set: Vec<(String, String)>,
}

impl<'a> Loader<'a> {
    /// A loader expanding unknown variables from `outer`.
    pub fn new(outer: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            outer,
            set: Vec::new(),
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.set
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| (self.outer)(name))
    }

    /// Evaluate one line (without its `\n`); `None` for a blank or comment line. What it sets is
    /// remembered for later lines.
    pub fn line(&mut self, raw: &str) -> Option<LineOutcome> {
        let trimmed = raw.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        let (key, value) = raw.split_once('=').unwrap_or((raw, raw));
        if raw.contains('\0') {
            return Some(LineOutcome {
                result: Err("NUL byte in line".into()),
                warnings: Vec::new(),
            });
        }
        let command = format!("export {key}=\"{}\"", value.replace('"', "\\\""));
        let mut warnings = Vec::new();
        let result = Shell {
            chars: command.chars().collect(),
            pos: 0,
            loader: self,
            warnings: &mut warnings,
        }
        .export_args();
        if let Ok(vars) = &result {
            self.set.extend(vars.iter().cloned());
        }
        Some(LineOutcome { result, warnings })
    }
}

/// Parse man8env.env `text` the way the Python mbctl's loader did; `outer` gives the variables
/// known before the file.
pub fn parse(text: &str, outer: &dyn Fn(&str) -> Option<String>) -> EnvFile {
    let mut loader = Loader::new(outer);
    let mut out = EnvFile::default();
    for (idx, raw) in text.split('\n').enumerate() {
        let Some(outcome) = loader.line(raw) else {
            continue;
        };
        let line = idx + 1;
        out.warnings.extend(
            outcome
                .warnings
                .into_iter()
                .map(|reason| EnvLineError { line, reason }),
        );
        match outcome.result {
            Ok(vars) => out.vars.extend(vars),
            Err(reason) => out.errors.push(EnvLineError { line, reason }),
        }
    }
    out
}

/// Whether `s` is a shell variable name.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// One word of the command as the shell builds it.
#[derive(Default)]
struct Word {
    text: String,
    /// Everything so far was unquoted name characters (the word may still become an
    /// assignment, which the shell recognises before expanding).
    plain_name: bool,
    /// The unquoted `=` of an assignment was seen (its value is not field-split).
    assignment: bool,
    /// An unquoted expansion outside an assignment value (the shell would field-split it).
    split_expansion: bool,
}

/// A tiny interpreter of the one simple command the loader built.
struct Shell<'s, 'a> {
    chars: Vec<char>,
    pos: usize,
    loader: &'s Loader<'a>,
    warnings: &'s mut Vec<String>,
}

impl Shell<'_, '_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// The words of the command, expanded.
    fn words(&mut self) -> Result<Vec<Word>, String> {
        let mut words = Vec::new();
        let mut word: Option<Word> = None;
        let mut in_double = false;
        while let Some(c) = self.bump() {
            if in_double {
                let w = word.get_or_insert_with(Word::default);
                match c {
                    '"' => in_double = false,
                    '\\' => match self.peek() {
                        Some(n @ ('$' | '`' | '"' | '\\')) => {
                            self.pos += 1;
                            w.text.push(n);
                        }
                        Some(_) => w.text.push('\\'),
                        None => return Err(unterminated()),
                    },
                    '$' => {
                        let expanded = self.dollar()?;
                        word.get_or_insert_with(Word::default)
                            .text
                            .push_str(&expanded);
                    }
                    '`' => {
                        let kept = self.backticks()?;
                        word.get_or_insert_with(Word::default).text.push_str(&kept);
                    }
                    other => w.text.push(other),
                }
                continue;
            }
            match c {
                ' ' | '\t' => {
                    if let Some(w) = word.take() {
                        words.push(w);
                    }
                }
                ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                    return Err(format!(
                        "the Python tool's loader would have run this line as more than an \
                         assignment (unquoted {c:?}); not reproduced"
                    ));
                }
                '#' if word.is_none() => break,
                _ => {
                    let w = word.get_or_insert_with(|| Word {
                        plain_name: true,
                        ..Word::default()
                    });
                    match c {
                        '=' if w.plain_name && !w.assignment && is_name(&w.text) => {
                            w.assignment = true;
                            w.plain_name = false;
                            w.text.push('=');
                            if self.peek() == Some('~') {
                                return Err(tilde());
                            }
                        }
                        '\\' => {
                            w.plain_name = false;
                            match self.bump() {
                                Some(n) => w.text.push(n),
                                None => return Err(unterminated()),
                            }
                        }
                        '\'' => {
                            w.plain_name = false;
                            loop {
                                match self.bump() {
                                    Some('\'') => break,
                                    Some(ch) => w.text.push(ch),
                                    None => {
                                        return Err("syntax error: unterminated quoted string \
                                                    (the shell stopped loading here)"
                                            .into());
                                    }
                                }
                            }
                        }
                        '"' => {
                            w.plain_name = false;
                            in_double = true;
                        }
                        '$' | '`' => {
                            w.plain_name = false;
                            if !w.assignment {
                                w.split_expansion = true;
                            }
                            let expanded = if c == '$' {
                                self.dollar()?
                            } else {
                                self.backticks()?
                            };
                            word.get_or_insert_with(Word::default)
                                .text
                                .push_str(&expanded);
                        }
                        ':' if w.assignment && self.peek() == Some('~') => return Err(tilde()),
                        other => {
                            if !is_name_char(other) {
                                w.plain_name = false;
                            }
                            w.text.push(other);
                        }
                    }
                }
            }
        }
        if in_double {
            return Err(unterminated());
        }
        words.extend(word);
        Ok(words)
    }

    /// What `export ARGS…` sets.
    fn export_args(&mut self) -> Result<Vec<(String, String)>, String> {
        let words = self.words()?;
        let mut vars = Vec::new();
        for w in words.iter().skip(1) {
            if w.split_expansion {
                return Err(format!(
                    "the shell would have split the expansion in {:?} into words; not reproduced",
                    w.text
                ));
            }
            match w.text.split_once('=') {
                Some((k, v)) if is_name(k) => vars.push((k.to_owned(), v.to_owned())),
                Some(_) | None if !is_name(&w.text) => {
                    return Err(format!(
                        "{:?} is not a variable name (the shell's export failed here)",
                        w.text.split_once('=').map_or(w.text.as_str(), |(k, _)| k)
                    ));
                }
                // `export NAME` without a value sets nothing.
                _ => {}
            }
        }
        Ok(vars)
    }

    /// After a `$`: the expansion, or the text kept literally (with a warning).
    fn dollar(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self.peek().is_some_and(is_name_char) {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                Ok(self.loader.lookup(&name).unwrap_or_default())
            }
            Some('{') => {
                let start = self.pos - 1;
                self.pos += 1;
                let inner_start = self.pos;
                let mut depth = 1;
                while depth > 0 {
                    match self.bump() {
                        Some('{') => depth += 1,
                        Some('}') => depth -= 1,
                        Some('\\') => {
                            self.bump();
                        }
                        Some(_) => {}
                        None => {
                            return Err(
                                "syntax error: missing '}' (the shell stopped loading here)".into(),
                            );
                        }
                    }
                }
                let inner: String = self.chars[inner_start..self.pos - 1].iter().collect();
                if is_name(&inner) {
                    Ok(self.loader.lookup(&inner).unwrap_or_default())
                } else if inner.is_empty() {
                    Err("bad substitution ${} (the shell stopped loading here)".into())
                } else {
                    Ok(self.kept(start, "this expansion is not reproduced"))
                }
            }
            Some('(') => {
                let start = self.pos - 1;
                let mut depth = 0;
                loop {
                    match self.bump() {
                        Some('(') => depth += 1,
                        Some(')') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Some('\\') => {
                            self.bump();
                        }
                        Some(_) => {}
                        None => return Err(unterminated()),
                    }
                }
                Ok(self.kept(start, "command substitution is not run"))
            }
            Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(c) => {
                let start = self.pos - 1;
                self.pos += 1;
                Ok(self.kept(start, "special parameters are not reproduced"))
            }
            // Anything else (a blank, a quote, the end): the `$` itself.
            _ => Ok("$".into()),
        }
    }

    /// After a backtick: the command substitution, kept literally.
    fn backticks(&mut self) -> Result<String, String> {
        let start = self.pos - 1;
        loop {
            match self.bump() {
                Some('`') => break,
                Some('\\') => {
                    self.bump();
                }
                Some(_) => {}
                None => return Err(unterminated()),
            }
        }
        Ok(self.kept(start, "command substitution is not run"))
    }

    /// The source text from `start` to here, as the user wrote it, and a warning.
    fn kept(&mut self, start: usize, why: &str) -> String {
        let text: String = self.chars[start..self.pos].iter().collect();
        let text = text.replace("\\\"", "\"");
        self.warnings
            .push(format!("{text} kept literally: {why} in python-mbctl mode"));
        text
    }
}

fn unterminated() -> String {
    "syntax error: unterminated quoted string (a backslash before a '\"' ended the quotes; the \
     shell stopped loading here)"
        .into()
}

fn tilde() -> String {
    "an unquoted ~ would have expanded to a home directory; not reproduced".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outer(k: &str) -> Option<String> {
        match k {
            "HOME" => Some("/root".into()),
            "container" => Some("systemd-nspawn".into()),
            _ => None,
        }
    }

    fn vars(text: &str) -> Vec<(String, String)> {
        let f = parse(text, &outer);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        f.vars
    }

    fn one(text: &str) -> String {
        let v = vars(text);
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].1.clone()
    }

    #[test]
    fn expansion_from_earlier_lines_and_outside() {
        assert_eq!(
            vars("A=1\nB=$A-${A}x\nC=$HOME/$container $UNSET.\nA=2\nD=$A"),
            [
                ("A".into(), "1".into()),
                ("B".into(), "1-1x".into()),
                ("C".into(), "/root/systemd-nspawn .".into()),
                ("A".into(), "2".into()),
                ("D".into(), "2".into())
            ]
        );
    }

    #[test]
    fn backslashes_follow_double_quote_rules() {
        assert_eq!(one(r"A=a\\b"), r"a\b");
        assert_eq!(one(r"A=\$HOME"), "$HOME");
        assert_eq!(one(r"A=\`id\`"), "`id`");
        assert_eq!(one(r"A=\n\t\x"), r"\n\t\x");
        // The loader's closing quote was escaped by a trailing backslash: unterminated.
        assert!(
            parse(r"A=end\", &outer).errors[0]
                .reason
                .contains("unterminated")
        );
    }

    #[test]
    fn quotes_stay_and_dollar_alone_is_literal() {
        assert_eq!(one(r#"A="quoted" 'single'"#), r#""quoted" 'single'"#);
        assert_eq!(one("A=x=\"y z\" $"), "x=\"y z\" $");
        assert_eq!(one("A=$ $. $/"), "$ $. $/");
        assert_eq!(one("A=cost: 5$"), "cost: 5$");
    }

    #[test]
    fn keys_as_the_shell_saw_them() {
        assert_eq!(vars("export FOO=1"), [("FOO".into(), "1".into())]);
        assert_eq!(vars("  \tB=2"), [("B".into(), "2".into())]);
        assert_eq!(vars("X"), [("X".into(), "X".into())]);
        assert_eq!(one("A=b=c"), "b=c");
        assert_eq!(one("A=crlf\r"), "crlf\r");
        assert_eq!(vars("A B C=1"), [("C".into(), "1".into())]);
        assert_eq!(vars("X Y"), [("Y".into(), "X Y".into())]);
        for bad in ["=x", "1A=1", "A =1", "export =1", "A-B=1"] {
            let f = parse(bad, &outer);
            assert!(f.vars.is_empty() && f.errors.len() == 1, "{bad}: {f:?}");
        }
        assert_eq!(vars("export export A=1"), [("A".into(), "1".into())]);
    }

    #[test]
    fn command_substitution_is_kept_and_reported() {
        let f = parse(
            "A=$(id -u) and `date` and \"$(echo \"x\")\"\nB=${A:-x}$1\n",
            &outer,
        );
        assert_eq!(
            f.vars,
            [
                (
                    "A".into(),
                    "$(id -u) and `date` and \"$(echo \"x\")\"".into()
                ),
                ("B".into(), "${A:-x}$1".into())
            ]
        );
        let lines: Vec<usize> = f.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [1, 1, 1, 2, 2]);
        assert!(f.warnings[0].reason.contains("$(id -u) kept literally"));
    }

    #[test]
    fn a_quote_after_a_backslash_closes_the_quotes() {
        // `A=a\"b` became `export A="a\\"b"`: `a\`, then `b`, then an unterminated quote.
        let f = parse("A=a\\\"b\nOK=1", &outer);
        assert_eq!(f.vars, [("OK".into(), "1".into())]);
        assert!(f.errors[0].reason.contains("unterminated"), "{f:?}");
        // `A=a\"b c\"` → `export A="a\\"b c\""`: A=`a\b`, then `c"` is no name.
        let f = parse("A=a\\\"b c\\\"", &outer);
        assert_eq!(f.errors.len(), 1, "{f:?}");
        // `A=x\" B=\"y` → `export A="x\\" B=\\"y"` → A=`x\`, B=`\y`.
        assert_eq!(
            vars("A=x\\\" B=\\\"y"),
            [("A".into(), "x\\".into()), ("B".into(), "\\y".into())]
        );
        // Anything that would run a command is refused.
        assert!(!parse("A=x\\\"; id; \\\"", &outer).errors.is_empty());
    }

    #[test]
    fn names() {
        assert!(
            is_name("_a1") && is_name("A") && !is_name("") && !is_name("1a") && !is_name("a-b")
        );
    }
}
