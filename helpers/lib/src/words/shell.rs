//! POSIX `sh` words: splitting one simple command (for images that have no `/bin/sh`) and
//! quoting words for `sh` (command lines, man8env.env, log lines).
//!
//! Splitting follows `sh` quoting: blanks separate words; `'…'` is literal; `"…"` keeps blanks
//! and lets a backslash escape only `$`, `` ` ``, `"`, `\` and a newline; outside quotes a
//! backslash escapes any character (and a backslash-newline disappears). There is no expansion
//! of any kind: `$HOME` stays `$HOME`, because without a shell nobody could expand it and
//! silently dropping it would be worse.

use std::fmt;

/// Why a command string could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// A `'` was opened at this byte offset and never closed.
    UnclosedSingleQuote(usize),
    /// A `"` was opened at this byte offset and never closed.
    UnclosedDoubleQuote(usize),
    /// The string ends with a lone backslash.
    TrailingBackslash,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnclosedSingleQuote(at) => write!(f, "unbalanced ' opened at offset {at}"),
            Self::UnclosedDoubleQuote(at) => write!(f, "unbalanced \" opened at offset {at}"),
            Self::TrailingBackslash => f.write_str("command ends with a lone backslash"),
        }
    }
}

impl std::error::Error for SplitError {}

/// Quote one word for `sh`: a safe word as it is, others in single quotes (`'` as `'"'"'`), as
/// Python's `shlex.quote` does (the old tool wrote man8env.env with it).
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\"'\"'"))
    }
}

/// Words quoted for `sh` ([`quote`]), joined by blanks.
pub fn join(argv: &[String]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// Split `command` into words the way `sh` would, without expansions.
pub fn split(command: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once any part of it was seen, so `''` yields an empty word.
    let mut in_word = false;
    let mut chars = command.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => match chars.next() {
                Some((_, '\n')) => {}
                Some((_, next)) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err(SplitError::TrailingBackslash),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, ch)) => word.push(ch),
                        None => return Err(SplitError::UnclosedSingleQuote(at)),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.peek() {
                            Some(&(_, next @ ('$' | '`' | '"' | '\\'))) => {
                                word.push(next);
                                chars.next();
                            }
                            Some(&(_, '\n')) => {
                                chars.next();
                            }
                            Some(_) => word.push('\\'),
                            None => return Err(SplitError::UnclosedDoubleQuote(at)),
                        },
                        Some((_, ch)) => word.push(ch),
                        None => return Err(SplitError::UnclosedDoubleQuote(at)),
                    }
                }
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cmd: &str) -> Vec<String> {
        split(cmd).unwrap()
    }

    #[test]
    fn plain_words_and_blanks() {
        assert_eq!(
            s("  /entrypoint.sh  run\t--port 80 \n"),
            ["/entrypoint.sh", "run", "--port", "80"]
        );
        assert!(s("").is_empty());
        assert!(s(" \t\n").is_empty());
    }

    #[test]
    fn quotes() {
        assert_eq!(
            s(r#"echo 'a  b' "c  d" e"f"'g'"#),
            ["echo", "a  b", "c  d", "efg"]
        );
        assert_eq!(s(r#"x '' """#), ["x", "", ""]);
        assert_eq!(s(r#"'it''s'"#), ["its"]);
        assert_eq!(s(r#""it's""#), ["it's"]);
        assert_eq!(s(r#"'say "hi"'"#), [r#"say "hi""#]);
    }

    #[test]
    fn backslashes() {
        assert_eq!(s(r"a\ b c\\d \'e"), ["a b", r"c\d", "'e"]);
        assert_eq!(s(r#""\$x \"q\" \\ \n""#), [r#"$x "q" \ \n"#]);
        assert_eq!(s(r"'\n\'"), [r"\n\"]);
        assert_eq!(s("a\\\nb"), ["ab"]);
    }

    #[test]
    fn no_expansion() {
        assert_eq!(
            s("echo $HOME ${X:-y} `id` *"),
            ["echo", "$HOME", "${X:-y}", "`id`", "*"]
        );
    }

    #[test]
    fn unbalanced_is_an_error() {
        assert_eq!(split("echo 'abc"), Err(SplitError::UnclosedSingleQuote(5)));
        assert_eq!(split("echo \"abc"), Err(SplitError::UnclosedDoubleQuote(5)));
        assert_eq!(
            split("echo \"abc\\"),
            Err(SplitError::UnclosedDoubleQuote(5))
        );
        assert_eq!(split("echo abc\\"), Err(SplitError::TrailingBackslash));
        assert!(
            split("a 'b' \"c")
                .unwrap_err()
                .to_string()
                .contains("offset 6")
        );
    }

    #[test]
    fn quoting_matches_shlex() {
        assert_eq!(quote("redis-server"), "redis-server");
        assert_eq!(quote("--port=6379"), "--port=6379");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\"'\"'s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME"), "'$HOME'");
        let argv: Vec<String> = ["/bin/sh", "-c", "exec it's", ""].map(String::from).into();
        assert_eq!(split(&join(&argv)).unwrap(), argv);
    }

    #[test]
    fn unicode_survives() {
        assert_eq!(s("echo 'grüße 世界' ü"), ["echo", "grüße 世界", "ü"]);
    }
}
