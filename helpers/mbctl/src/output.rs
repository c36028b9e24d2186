//! Terminal output: colour only on a terminal (and never with `NO_COLOR`), aligned tables.

use std::io::IsTerminal;

/// Whether stdout gets ANSI colours.
pub fn colour_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// `text` in the colour that goes with a systemd ActiveState, when `colour` is on.
pub fn paint_state(text: &str, colour: bool) -> String {
    if !colour {
        return text.to_owned();
    }
    let code = match text {
        "active" | "running" => "32",
        "failed" | "invalid" => "31",
        "activating" | "deactivating" | "reloading" => "33",
        _ => return text.to_owned(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Rows as left-aligned columns separated by two spaces; the last column is not padded.
/// Widths count characters of the unpainted text; `paint` colours cells after alignment.
pub fn table(rows: &[Vec<String>], paint: impl Fn(usize, &str) -> String) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(&paint(i, cell));
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(width[i] - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned() {
        let rows = vec![
            vec!["NAME".into(), "STATE".into(), "IMAGE".into()],
            vec!["web".into(), "active".into(), "x".into()],
            vec!["database".into(), "-".into(), "".into()],
        ];
        assert_eq!(
            table(&rows, |_, c| c.to_owned()),
            "NAME      STATE   IMAGE\nweb       active  x\ndatabase  -\n"
        );
    }

    #[test]
    fn paint_only_with_colour() {
        assert_eq!(paint_state("failed", false), "failed");
        assert_eq!(paint_state("failed", true), "\x1b[31mfailed\x1b[0m");
        assert_eq!(paint_state("unknown", true), "unknown");
    }
}
