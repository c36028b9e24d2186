//! Signal names as images, declarations and `mbctl` spell them: `SIGINT`, `INT`, `2`,
//! `SIGRTMIN+3`, `RTMIN+3`, `SIGRTMAX-1` (Docker's and systemd's spellings, case-insensitive).
//! Pure: parsing gives the Linux signal number and its canonical name.

use std::fmt;

/// Standard Linux signals (x86-64/aarch64 numbering), canonical names.
const STANDARD: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGILL", 4),
    ("SIGTRAP", 5),
    ("SIGABRT", 6),
    ("SIGBUS", 7),
    ("SIGFPE", 8),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGSEGV", 11),
    ("SIGUSR2", 12),
    ("SIGPIPE", 13),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGSTKFLT", 16),
    ("SIGCHLD", 17),
    ("SIGCONT", 18),
    ("SIGSTOP", 19),
    ("SIGTSTP", 20),
    ("SIGTTIN", 21),
    ("SIGTTOU", 22),
    ("SIGURG", 23),
    ("SIGXCPU", 24),
    ("SIGXFSZ", 25),
    ("SIGVTALRM", 26),
    ("SIGPROF", 27),
    ("SIGWINCH", 28),
    ("SIGIO", 29),
    ("SIGPWR", 30),
    ("SIGSYS", 31),
];
/// Aliases accepted on input.
const ALIASES: &[(&str, i32)] = &[("SIGIOT", 6), ("SIGPOLL", 29), ("SIGCLD", 17)];
/// glibc's SIGRTMIN/SIGRTMAX (the kernel's 32 and 64 minus the two glibc keeps).
pub const RTMIN: i32 = 34;
/// See [`RTMIN`].
pub const RTMAX: i32 = 64;

/// A valid signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signal(i32);

/// Why a signal name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a signal (a name like SIGINT or INT, a number 1-64, or SIGRTMIN+N)")]
pub struct BadSignal(pub String);

impl Signal {
    /// SIGTERM, the stop signal when an image names none.
    pub const TERM: Signal = Signal(15);
    /// SIGHUP, the reload signal when a declaration names none.
    pub const HUP: Signal = Signal(1);
    /// SIGKILL.
    pub const KILL: Signal = Signal(9);

    /// Parse a name or number.
    pub fn parse(text: &str) -> Result<Signal, BadSignal> {
        let bad = || BadSignal(text.to_owned());
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return match t.parse::<i32>() {
                Ok(n) if (1..=RTMAX).contains(&n) && !(32..RTMIN).contains(&n) => Ok(Signal(n)),
                _ => Err(bad()),
            };
        }
        let upper = t.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        if let Some(&(_, n)) = STANDARD.iter().chain(ALIASES).find(|(s, _)| *s == name) {
            return Ok(Signal(n));
        }
        let rt = |rest: &str, base: i32, sign: i32| -> Option<Signal> {
            let off = if rest.is_empty() {
                0
            } else {
                let digits = rest.strip_prefix(if sign > 0 { '+' } else { '-' })?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse::<i32>().ok()?
            };
            let n = base + sign * off;
            (RTMIN..=RTMAX).contains(&n).then_some(Signal(n))
        };
        if let Some(rest) = name.strip_prefix("SIGRTMIN") {
            return rt(rest, RTMIN, 1).ok_or_else(bad);
        }
        if let Some(rest) = name.strip_prefix("SIGRTMAX") {
            return rt(rest, RTMAX, -1).ok_or_else(bad);
        }
        Err(bad())
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The shell's exit status of a process killed by this signal (128 + number).
    pub fn exit_status(self) -> i32 {
        128 + self.0
    }
}

impl fmt::Display for Signal {
    /// Canonical name: `SIGINT`, `SIGRTMIN+3` (systemd's spelling, valid in unit files).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match STANDARD.iter().find(|(_, n)| *n == self.0) {
            Some((s, _)) => f.write_str(s),
            None if self.0 == RTMIN => f.write_str("SIGRTMIN"),
            None => write!(f, "SIGRTMIN+{}", self.0 - RTMIN),
        }
    }
}

impl std::str::FromStr for Signal {
    type Err = BadSignal;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signal::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for (text, n) in [
            ("SIGINT", 2),
            ("int", 2),
            ("2", 2),
            ("SIGQUIT", 3),
            ("QUIT", 3),
            ("SIGRTMIN+3", 37),
            ("rtmin+3", 37),
            ("SIGRTMIN", 34),
            ("SIGRTMAX", 64),
            ("SIGRTMAX-2", 62),
            ("SIGIOT", 6),
            ("64", 64),
        ] {
            assert_eq!(Signal::parse(text).map(Signal::number), Ok(n), "{text}");
        }
    }

    #[test]
    fn refusals() {
        for text in [
            "",
            "SIG",
            "SIGFOO",
            "0",
            "65",
            "33",
            "SIGRTMIN+31",
            "SIGRTMIN-1",
            "SIGRTMIN+",
            "-2",
            "SIGINT ",
            "SIGRTMIN+x",
        ] {
            // A trailing space is trimmed; everything else is refused.
            if text == "SIGINT " {
                assert!(Signal::parse(text).is_ok());
                continue;
            }
            assert!(Signal::parse(text).is_err(), "{text:?}");
        }
        assert_eq!(
            Signal::parse("SIGFOO").unwrap_err().to_string(),
            "\"SIGFOO\" is not a signal (a name like SIGINT or INT, a number 1-64, or SIGRTMIN+N)"
        );
    }

    #[test]
    fn canonical_names_round_trip() {
        for n in (1..32).chain(RTMIN..=RTMAX) {
            let s = Signal(n);
            assert_eq!(Signal::parse(&s.to_string()), Ok(s), "{s}");
        }
        assert_eq!(Signal::parse("RTMIN+3").unwrap().to_string(), "SIGRTMIN+3");
        assert_eq!(Signal::parse("9").unwrap().to_string(), "SIGKILL");
    }
}
