//! The systemd-style INI dialect shared by every man8s file (declarations, man8s.conf,
//! registries.conf): `[Section]` headers; `Key=Value` with whitespace around both dropped; `#` and
//! `;` comment lines; a trailing `\` continues a line (the backslash becomes a space); sections and
//! keys starting with `X-` are ignored; anything else unknown is an error naming file and line,
//! with a "did you mean" hint. What the values mean is each file's own business.

use std::fmt;
use std::path::{Path, PathBuf};

/// The sections a file may have, each with its keys.
pub type Schema = &'static [(&'static str, &'static [&'static str])];

/// The key list of a section whose keys are names the user picks (man8s.conf's `[Hosts]`):
/// every key is accepted, [`Assignment::key`] is this and [`Assignment::name`] the key as written.
pub const ANY_KEY: &str = "*";

/// One problem in a file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (canonical path).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is about the whole file (e.g. a missing key).
    pub line: usize,
    /// The key concerned, if any (without `=`).
    pub key: Option<String>,
    /// Why it is wrong.
    pub message: String,
    /// A likely intended spelling.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// The problem without its place: `Key=: why (did you mean X?)`.
    pub fn what(&self) -> String {
        let mut s = String::new();
        if let Some(key) = &self.key {
            s.push_str(key);
            s.push_str("=: ");
        }
        s.push_str(&self.message);
        if let Some(hint) = &self.hint {
            s.push_str(&format!(" (did you mean {hint}?)"));
        }
        s
    }
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE: Key=: why (did you mean X?)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, ": {}", self.what())
    }
}

/// One `Key=Value` assignment with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment<'a> {
    /// The file it is in.
    pub file: &'a Path,
    /// 1-based line where it starts.
    pub line: usize,
    /// Its section (one of the schema's).
    pub section: &'static str,
    /// Its key (one of the schema's, or [`ANY_KEY`]).
    pub key: &'static str,
    /// The key as written (differs from `key` only in [`ANY_KEY`] sections).
    pub name: String,
    /// The value, whitespace-trimmed, continuation lines joined.
    pub value: String,
}

/// A diagnostic without a hint.
pub fn diag(file: &Path, line: usize, key: Option<&str>, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line,
        key: key.map(str::to_owned),
        message: message.into(),
        hint: None,
    }
}

/// Split one file into assignments of the sections and keys `schema` knows; report syntax errors,
/// unknown sections and unknown keys (with "did you mean"). `first_section` names the section to
/// suggest for assignments above any header.
pub fn lex<'a>(
    file: &'a Path,
    text: &str,
    schema: Schema,
    first_section: &str,
    out: &mut Vec<Assignment<'a>>,
    errs: &mut Vec<Diagnostic>,
) {
    // None: before any section; Some(None): an ignored (X- or unknown) section.
    let mut section: Option<Option<&'static (&'static str, &'static [&'static str])>> = None;
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((idx, raw)) = lines.next() {
        let start_line = idx + 1;
        // Borrowed unless a continuation has to join lines (most lines are not).
        let mut logical = std::borrow::Cow::Borrowed(raw.trim());
        if logical.starts_with('#') || logical.starts_with(';') {
            continue;
        }
        // Continuations: `\` at the end joins the next line.
        while logical.ends_with('\\') {
            let logical = logical.to_mut();
            logical.pop();
            logical.push(' ');
            let mut joined = false;
            for (_, next) in lines.by_ref() {
                let next = next.trim();
                if next.starts_with('#') || next.starts_with(';') {
                    continue;
                }
                logical.push_str(next);
                joined = true;
                break;
            }
            if !joined {
                break;
            }
        }
        let line = logical.trim();
        if line.is_empty() {
            continue;
        }
        if line.contains('\0') {
            errs.push(diag(file, start_line, None, "NUL byte in line"));
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                errs.push(diag(
                    file,
                    start_line,
                    None,
                    format!("bad section header {line:?}: missing ']'"),
                ));
                section = Some(None);
                continue;
            };
            if name.starts_with("X-") {
                section = Some(None);
                continue;
            }
            match schema.iter().find(|(s, _)| *s == name) {
                Some(known) => section = Some(Some(known)),
                None => {
                    let mut d = diag(file, start_line, None, format!("unknown section [{name}]"));
                    d.hint =
                        closest(name, schema.iter().map(|(s, _)| *s)).map(|s| format!("[{s}]"));
                    errs.push(d);
                    section = Some(None);
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            errs.push(diag(
                file,
                start_line,
                None,
                format!("not a Key=Value assignment: {line:?}"),
            ));
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() {
            errs.push(diag(
                file,
                start_line,
                None,
                format!("empty key in {line:?}"),
            ));
            continue;
        }
        let known = match section {
            None => {
                errs.push(diag(
                    file,
                    start_line,
                    Some(key),
                    format!("assignment outside of any section (add {first_section} above it)"),
                ));
                continue;
            }
            Some(None) => continue,
            Some(Some(known)) => known,
        };
        if key.starts_with("X-") {
            continue;
        }
        let written = key;
        let Some(&key) = known.1.iter().find(|k| **k == key || **k == ANY_KEY) else {
            let mut d = diag(
                file,
                start_line,
                Some(key),
                format!("unknown key in [{}]", known.0),
            );
            if let Some((other, _)) = schema
                .iter()
                .find(|(s, keys)| *s != known.0 && keys.contains(&key))
            {
                d.message = format!("{key}= belongs in [{other}], not [{}]", known.0);
            } else {
                d.hint = closest(key, known.1.iter().copied()).map(|k| format!("{k}="));
            }
            errs.push(d);
            continue;
        };
        out.push(Assignment {
            file,
            line: start_line,
            section: known.0,
            key,
            name: written.to_owned(),
            value: value.to_owned(),
        });
    }
}

/// Case-insensitive optimal-string-alignment distance: insertions, deletions, substitutions and
/// transpositions of neighbours (`Imgae` → `Image`) cost 1.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The candidate closest to `word` (case-insensitive edit distance), if close enough to be a typo.
pub fn closest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    if word.len() > 64 {
        return None;
    }
    let limit = (word.chars().count().div_ceil(3)).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
