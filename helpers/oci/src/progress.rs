//! Progress reporting: events from the pull, shown as a bar on a terminal, as `STATUS=` (plus
//! `EXTEND_TIMEOUT_USEC=`) under systemd, and as plain lines for the journal.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Something that happened during a pull.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// Looking up the manifest.
    Resolving {
        /// The image.
        image: &'a str,
    },
    /// Manifest and config known.
    Resolved {
        /// The image.
        image: &'a str,
        /// Platform manifest digest.
        digest: &'a str,
        /// Number of layers.
        layers: usize,
        /// Compressed bytes still to download.
        download_bytes: u64,
    },
    /// Starting the download of a layer.
    Downloading {
        /// Layer number (0-based).
        index: usize,
        /// Its digest.
        digest: &'a str,
        /// Its size.
        size: u64,
        /// Bytes already on disk from an earlier interrupted download.
        resumed_at: u64,
    },
    /// Bytes received.
    Bytes(u64),
    /// A request failed and will be retried.
    Retry {
        /// What was being fetched.
        what: &'a str,
        /// Attempt that failed (1-based).
        attempt: u32,
        /// Wait before the next try.
        delay: Duration,
        /// Why.
        cause: &'a str,
    },
    /// Unpacking a layer.
    Unpacking {
        /// Layer number (0-based).
        index: usize,
        /// Number of layers.
        layers: usize,
    },
    /// Done: the rootfs is in place.
    Installed {
        /// Where.
        path: &'a std::path::Path,
    },
    /// Nothing to do.
    UpToDate {
        /// Why.
        reason: &'a str,
    },
}

/// A sink for [`Event`]s; called from the download and unpack threads.
pub trait Progress: Send + Sync {
    /// Report one event. Must be cheap: [`Event::Bytes`] comes once per received chunk.
    fn event(&self, event: Event<'_>);
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}

/// The right reporter for this process: systemd notifications when `NOTIFY_SOCKET` is set, a bar
/// when stderr is a terminal, plain lines otherwise.
pub fn auto() -> Box<dyn Progress> {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        Box::new(Systemd::new())
    } else if std::io::stderr().is_terminal() {
        Box::new(Terminal::new())
    } else {
        Box::new(Lines::new())
    }
}

/// A byte count for people: `3.0 MiB`.
pub fn human(bytes: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// One readable stderr line per step (no escape codes): good for the journal and for logs.
#[derive(Debug)]
pub struct Lines {
    total: AtomicU64,
    done: AtomicU64,
    last: Mutex<Instant>,
}

impl Lines {
    /// A new reporter.
    pub fn new() -> Self {
        Self {
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    /// The line for an event, if it deserves one (`Bytes` every 5 s at most).
    fn line(&self, event: &Event<'_>) -> Option<String> {
        Some(match event {
            Event::Resolving { image } => format!("resolving {image}"),
            Event::Resolved {
                image,
                digest,
                layers,
                download_bytes,
            } => {
                self.total.store(*download_bytes, Ordering::Relaxed);
                format!(
                    "{image}: {digest}, {layers} layers, {} to download",
                    human(*download_bytes)
                )
            }
            Event::Downloading {
                index,
                digest,
                size,
                resumed_at,
            } if *resumed_at > 0 => {
                format!(
                    "layer {}: resuming {digest} at {} of {}",
                    index + 1,
                    human(*resumed_at),
                    human(*size)
                )
            }
            Event::Downloading {
                index,
                digest,
                size,
                ..
            } => {
                format!(
                    "layer {}: downloading {digest} ({})",
                    index + 1,
                    human(*size)
                )
            }
            Event::Bytes(n) => {
                let done = self.done.fetch_add(*n, Ordering::Relaxed) + n;
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() < Duration::from_secs(5) {
                    return None;
                }
                *last = Instant::now();
                format!(
                    "downloaded {} of {}",
                    human(done),
                    human(self.total.load(Ordering::Relaxed))
                )
            }
            Event::Retry {
                what,
                attempt,
                delay,
                cause,
            } => {
                format!(
                    "{what}: attempt {attempt} failed ({cause}); retrying in {:.1} s",
                    delay.as_secs_f64()
                )
            }
            Event::Unpacking { index, layers } => {
                format!("unpacking layer {} of {layers}", index + 1)
            }
            Event::Installed { path } => format!("installed {}", path.display()),
            Event::UpToDate { reason } => (*reason).to_owned(),
        })
    }
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Lines {
    fn event(&self, event: Event<'_>) {
        if let Some(l) = self.line(&event) {
            let _ = writeln!(std::io::stderr().lock(), "{l}");
        }
    }
}

/// Under systemd: journal lines plus `STATUS=` and `EXTEND_TIMEOUT_USEC=` so that a long first
/// pull never hits `TimeoutStartSec=` while it makes progress.
///
/// A keep-alive thread repeats the extension every 30 s, but only while work progresses: bytes
/// arrived since its last tick, or a layer is being unpacked (local work, bounded by
/// `MaxUnpackedSize=`). A stalled or dripping registry therefore never keeps a start alive past
/// `TimeoutStartSec=` (and the downloader's `LowSpeedLimit=` stops it before that). The thread stops
/// when the reporter is dropped.
#[derive(Debug)]
pub struct Systemd {
    lines: Lines,
    last_notify: Mutex<Option<Instant>>,
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
    activity: std::sync::Arc<Activity>,
}

/// What the keep-alive thread looks at.
#[derive(Debug, Default)]
struct Activity {
    /// Bumped by every `Bytes` event.
    bytes_events: AtomicU64,
    /// Between the first `Unpacking` and `Installed`.
    unpacking: std::sync::atomic::AtomicBool,
}

impl Activity {
    /// Whether the keep-alive may extend the timeout, given the byte counter it saw last.
    fn progressed(&self, last_seen: &mut u64) -> bool {
        let now = self.bytes_events.load(Ordering::Relaxed);
        let moved = now != *last_seen;
        *last_seen = now;
        moved || self.unpacking.load(Ordering::Relaxed)
    }
}

/// How much more time each progress notification asks for.
const EXTEND: Duration = Duration::from_secs(90);

impl Systemd {
    /// A new reporter.
    pub fn new() -> Self {
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = alive.clone();
        let activity = std::sync::Arc::new(Activity::default());
        let seen = activity.clone();
        let _ = std::thread::Builder::new()
            .name("sd-notify-keepalive".into())
            .spawn(move || {
                let mut ticks = 0u32;
                let mut last_seen = 0;
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    ticks += 1;
                    if ticks.is_multiple_of(120)
                        && flag.load(Ordering::Relaxed)
                        && seen.progressed(&mut last_seen)
                    {
                        let _ = libsystemd::daemon::notify(
                            false,
                            &[libsystemd::daemon::NotifyState::Other(format!(
                                "EXTEND_TIMEOUT_USEC={}",
                                EXTEND.as_micros()
                            ))],
                        );
                    }
                }
            });
        Self {
            lines: Lines::new(),
            last_notify: Mutex::new(None),
            alive,
            activity,
        }
    }

    fn notify(&self, status: &str, force: bool) {
        let mut last = self.last_notify.lock().unwrap_or_else(|p| p.into_inner());
        if !force && last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        use libsystemd::daemon::{NotifyState, notify};
        let _ = notify(
            false,
            &[
                NotifyState::Status(status.replace('\n', " ")),
                NotifyState::Other(format!("EXTEND_TIMEOUT_USEC={}", EXTEND.as_micros())),
            ],
        );
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Relaxed);
    }
}

impl Default for Systemd {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Systemd {
    fn event(&self, event: Event<'_>) {
        let is_bytes = matches!(event, Event::Bytes(_));
        match event {
            Event::Bytes(_) => {
                self.activity.bytes_events.fetch_add(1, Ordering::Relaxed);
            }
            Event::Unpacking { .. } => self.activity.unpacking.store(true, Ordering::Relaxed),
            Event::Installed { .. } => self.activity.unpacking.store(false, Ordering::Relaxed),
            _ => {}
        }
        if is_bytes {
            let done = self.lines.done.load(Ordering::Relaxed);
            let total = self.lines.total.load(Ordering::Relaxed);
            self.notify(
                &format!("Downloading: {} of {}", human(done), human(total)),
                false,
            );
        }
        if let Some(l) = self.lines.line(&event) {
            let _ = writeln!(std::io::stderr().lock(), "{l}");
            if !is_bytes {
                self.notify(&l, true);
            }
        }
    }
}

/// An indicatif bar on a terminal (bytes, rate, layer).
pub struct Terminal {
    bar: indicatif::ProgressBar,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Terminal")
    }
}

impl Terminal {
    /// A new bar on stderr.
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            // Hidden until the total is known (Resolved), so it never shows "0 B/0 B".
            indicatif::ProgressDrawTarget::hidden(),
        );
        let style = indicatif::ProgressStyle::with_template(
            "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Self { bar }
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Terminal {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Resolving { image } => self.bar.set_message(format!("resolving {image}")),
            Event::Resolved {
                layers,
                download_bytes,
                ..
            } => {
                self.bar.set_length(download_bytes);
                self.bar
                    .set_draw_target(indicatif::ProgressDrawTarget::stderr());
                self.bar.set_message(format!("{layers} layers"));
            }
            Event::Downloading {
                index, resumed_at, ..
            } => {
                self.bar.set_message(format!("layer {}", index + 1));
                if resumed_at > 0 {
                    // suspend, not println: println drops lines while the bar is hidden.
                    self.bar.suspend(|| {
                        eprintln!("layer {}: resuming at {}", index + 1, human(resumed_at))
                    });
                }
            }
            Event::Bytes(n) => self.bar.inc(n),
            Event::Retry {
                what,
                attempt,
                delay,
                cause,
            } => self.bar.suspend(|| {
                eprintln!(
                    "{what}: attempt {attempt} failed ({cause}); retrying in {:.1} s",
                    delay.as_secs_f64()
                )
            }),
            Event::Unpacking { index, layers } => self
                .bar
                .set_message(format!("unpacking {}/{layers}", index + 1)),
            Event::Installed { path } => {
                self.bar.finish_and_clear();
                eprintln!("installed {}", path.display());
            }
            Event::UpToDate { reason } => {
                self.bar.finish_and_clear();
                eprintln!("{reason}");
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn keepalive_extends_only_while_bytes_arrive_or_a_layer_unpacks() {
        let a = Activity::default();
        let mut seen = 0;
        assert!(!a.progressed(&mut seen), "nothing happened yet");
        a.bytes_events.fetch_add(1, Ordering::Relaxed);
        assert!(a.progressed(&mut seen));
        assert!(
            !a.progressed(&mut seen),
            "a stalled transfer gets no extension"
        );
        a.unpacking.store(true, Ordering::Relaxed);
        assert!(a.progressed(&mut seen));
    }

    use super::*;

    #[test]
    fn lines_are_plain_and_rate_limited() {
        let l = Lines::new();
        let line = l
            .line(&Event::Resolved {
                image: "a",
                digest: "sha256:x",
                layers: 2,
                download_bytes: 3 << 20,
            })
            .unwrap();
        assert_eq!(line, "a: sha256:x, 2 layers, 3.0 MiB to download");
        assert!(
            l.line(&Event::Bytes(10)).is_none(),
            "byte lines come at most every 5 s"
        );
        assert!(!line.contains('\x1b'));
    }
}
