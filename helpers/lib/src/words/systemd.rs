//! systemd's words (`extract_first_word()` in systemd's `src/basic/extract-word.c`): how a
//! setting's value splits into words, and how to write a word so that it reads back as itself.
//!
//! Blanks separate words; `"…"` and `'…'` quote and join with what touches them. With
//! [`Escapes::CUnescape`] a backslash starts a C escape anywhere (`Environment=`, command lines,
//! man8s declarations); with [`Escapes::Retain`] it is an ordinary character (nspawn's
//! `Parameters=`). Specifiers (`%%`) and, on command lines, variables (`$$`) are expanded by
//! systemd after splitting, so they are escaped on top.

/// What a backslash does while splitting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escapes {
    /// `EXTRACT_CUNESCAPE`: `\n`, `\t`, `\xNN`, `\\`, `\"`, … are decoded.
    CUnescape,
    /// `EXTRACT_RETAIN_ESCAPE`: a backslash stays as it is.
    Retain,
}

/// Split `value` as `extract_first_word(EXTRACT_UNQUOTE | escapes)` does, word after word.
pub fn split(value: &str, escapes: Escapes) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) if escapes == Escapes::CUnescape => word.push(unescape(&mut chars)?),
                (q, None) if q == '"' || q == '\'' => quote = Some(q),
                (q, Some(open)) if q == open => quote = None,
                (w, None) if w.is_whitespace() => break,
                (other, _) => word.push(other),
            }
        }
        if let Some(q) = quote {
            return Err(format!("unterminated {q} quote"));
        }
        words.push(word);
    }
}

/// One C escape, after its backslash.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let c = chars.next().ok_or("trailing backslash")?;
    Ok(match c {
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\x0b',
        's' => ' ',
        '\\' | '"' | '\'' => c,
        'x' => {
            let hex: String = [chars.next(), chars.next()].into_iter().flatten().collect();
            let v = u8::from_str_radix(&hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?;
            if v == 0 || v > 0x7f {
                return Err(format!("escape \\x{hex} is not a non-NUL ASCII character"));
            }
            char::from(v)
        }
        other => return Err(format!("unknown escape \\{other}")),
    })
}

/// `word` as one double-quoted C string that [`split`] with [`Escapes::CUnescape`] reads back as
/// `word` (ASCII control characters as escapes). For values no specifier is expanded in (man8s
/// declarations).
pub fn quote(word: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `word` as one word of a unit-file value that systemd C-unescapes and expands specifiers in
/// (`Environment=`): [`quote`] with `%` doubled. Control characters other than newline and tab
/// are dropped: unit files are shown on terminals (`systemctl cat`, `status`).
pub fn quote_unit_value(word: &str) -> String {
    let printable: String = word
        .chars()
        .filter(|c| matches!(c, '\n' | '\t') || !c.is_control())
        .collect();
    escape_specifiers(&quote(&printable))
}

/// `word` as one word of a unit-file command line (`ExecStart=`…), where systemd also expands
/// `$VAR`: [`quote_unit_value`] with `$` doubled.
pub fn quote_exec_word(word: &str) -> String {
    quote_unit_value(word).replace('$', "$$")
}

/// `word` as one word of a value split with [`Escapes::Retain`] (nspawn's `Parameters=`): no
/// escapes exist there, so double quotes go in single-quoted pieces and everything else in
/// double-quoted ones (adjacent pieces join into one word).
pub fn quote_retained(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        if c == '"' {
            out.push_str("\"'\"'\"");
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Text for a unit-file value that is specifier-expanded: `%` → `%%`.
pub fn escape_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// What systemd's specifier expansion makes of text that [`escape_specifiers`] wrote (`%%` → `%`);
/// any other specifier is an error.
pub fn unescape_specifiers(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' && chars.next() != Some('%') {
            return Err(format!("a specifier other than %% in {s:?}"));
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn c(value: &str) -> Vec<String> {
        split(value, Escapes::CUnescape).unwrap()
    }

    #[test]
    fn c_unescaping_words() {
        assert_eq!(
            c(r#""GREETING=held out" A=1 'B=it''s' C="x\ty" D=\x41"#),
            ["GREETING=held out", "A=1", "B=its", "C=x\ty", "D=A"]
        );
        assert_eq!(c("  "), Vec::<String>::new());
        for (bad, why) in [
            ("a\\", "trailing backslash"),
            ("\"a", "unterminated \" quote"),
            ("\\q", "unknown escape \\q"),
            ("\\x00", "not a non-NUL ASCII"),
        ] {
            assert!(
                split(bad, Escapes::CUnescape).unwrap_err().contains(why),
                "{bad}"
            );
        }
    }

    #[test]
    fn retained_escapes_match_systemd_examples() {
        assert_eq!(
            split(r#"a "b c" 'd"e' f"g"'h' \x"#, Escapes::Retain).unwrap(),
            ["a", "b c", "d\"e", "fgh", "\\x"]
        );
    }

    #[test]
    fn unit_quoting() {
        assert_eq!(quote("A=x\"y\\z\n"), "\"A=x\\\"y\\\\z\\n\"");
        assert_eq!(quote("\x01"), "\"\\x01\"");
        assert_eq!(quote_unit_value("50%\x07\t$x"), "\"50%%\\t$x\"");
        assert_eq!(quote_exec_word("50%\x07\t$x"), "\"50%%\\t$$x\"");
        assert_eq!(unescape_specifiers("a%%b").unwrap(), "a%b");
        assert!(unescape_specifiers("a%b").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn quote_round_trips(word in "[^\0]*") {
            prop_assert_eq!(c(&quote(&word)), vec![word]);
        }

        #[test]
        fn retained_quoting_round_trips(words in proptest::collection::vec("[^\n\r\0]*", 1..6)) {
            let line = words.iter().map(|w| quote_retained(w)).collect::<Vec<_>>().join(" ");
            prop_assert_eq!(split(&line, Escapes::Retain).unwrap(), words);
        }

        #[test]
        fn unit_quoting_round_trips(word in "[^\0\r]*") {
            let quoted = quote_exec_word(&word);
            prop_assert!(!quoted.contains('\n'));
            let words = c(&unescape_specifiers(&quoted.replace("$$", "$")).unwrap());
            let expected: String = word.chars().filter(|c| matches!(c, '\n' | '\t') || !c.is_control()).collect();
            prop_assert_eq!(words, vec![expected]);
        }
    }
}
