//! The check runner: runs one [`HealthCheck`] against a running machine and keeps its state.
//!
//! - `tcp:` and `http://` checks run from the host side in the machine's network namespace: the
//!   runner enters that namespace once ([`enter_netns`]) and then only opens sockets, so they
//!   cost no fork and need nothing in the image.
//! - `CMD`/`CMD-SHELL` checks fork a child that enters every namespace and the root of the
//!   machine (as `machines shell` does), becomes the image's user and execs the command; its
//!   output is read through a pipe, bounded, and the whole group is killed at the timeout.
//! - [`Tracker`] turns results into Docker's states: failures inside the start period do not
//!   count; `retries` failures in a row make the machine unhealthy; one pass makes it healthy.

// unsafe: fork() of exec checks into the machine, default signal dispositions before exec.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use man8s::health::{HealthCheck, HealthTest};
use nix::sched::{CloneFlags, setns};
use serde::{Deserialize, Serialize};

/// Most output kept from one exec check (the last line of it is reported).
const MAX_OUTPUT: usize = 4096;
/// Most of an HTTP answer read: the status line is all that counts.
const MAX_HTTP_HEAD: usize = 1024;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Healthy.
    pub ok: bool,
    /// One line saying what happened (`HTTP 200`, the command's last output line, `timed out`).
    pub output: String,
}

impl Outcome {
    fn ok(output: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            output: output.into(),
        }
    }
    fn fail(output: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            output: output.into(),
        }
    }
}

/// Enter the network namespace of `leader` for the rest of this thread's life; tcp/http checks
/// then reach the machine's own loopback. Path sockets (systemd's notify socket, the system bus)
/// keep working: they belong to the file system, not the network namespace.
pub fn enter_netns(leader: i32) -> Result<()> {
    let path = format!("/proc/{leader}/ns/net");
    let ns = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter the network namespace of PID {leader}"))
}

/// Run `test` once, within `timeout`. `exec` runs `CMD`/`CMD-SHELL` checks (inside the machine).
pub fn run_check(
    test: &HealthTest,
    timeout: Duration,
    exec: &dyn Fn(&[String], Duration) -> Outcome,
) -> Outcome {
    match test {
        HealthTest::Tcp(port) => check_tcp("127.0.0.1", *port, timeout),
        HealthTest::Http { host, port, path } => check_http(host, *port, path, timeout),
        HealthTest::Exec(argv) => exec(argv, timeout),
        HealthTest::Shell(s) => exec(&["/bin/sh".into(), "-c".into(), s.clone()], timeout),
    }
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    let mut last = format!("{host}:{port}: no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// A TCP connection to `host:port` is accepted.
pub fn check_tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    match connect(host, port, timeout) {
        Ok(_) => Outcome::ok(format!("port {port} accepts connections")),
        Err(e) => Outcome::fail(e),
    }
}

/// `GET path` on `host:port` answers 2xx or 3xx within `timeout`.
pub fn check_http(host: &str, port: u16, path: &str, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut stream = match connect(host, port, timeout) {
        Ok(s) => s,
        Err(e) => return Outcome::fail(e),
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(left));
    let _ = stream.set_write_timeout(Some(left));
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: man8s-health\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Outcome::fail(format!("sending the request: {e}"));
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_HTTP_HEAD {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Outcome::fail(format!("no answer within {} s", timeout.as_secs_f32()));
            }
            Err(e) => return Outcome::fail(format!("reading the answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("").trim();
    match parse_status(line) {
        Some(code) if (200..400).contains(&code) => Outcome::ok(format!("HTTP {code}")),
        Some(code) => Outcome::fail(format!("HTTP {code}")),
        None => Outcome::fail(format!("not an HTTP answer: {:?}", clip(line, 80))),
    }
}

/// The status code of an HTTP status line (`HTTP/1.1 204 No Content`).
pub fn parse_status(line: &str) -> Option<u16> {
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// `s` cut to `max` characters, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// The last non-empty line of a command's output, clipped, with control characters made
/// visible (it ends up in `STATUS=` and in the journal).
pub fn last_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let clean: String = line
        .trim()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    clip(&clean, 200)
}

/// Health as Docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No check has passed yet, and not enough have failed.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed after the start period.
    Unhealthy,
}

impl Status {
    /// `starting`, `healthy`, `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// Counts results into a [`Status`].
#[derive(Debug, Clone)]
pub struct Tracker {
    retries: u32,
    start_period: Duration,
    started: Instant,
    /// Failures in a row that counted (outside the start period).
    pub failing_streak: u32,
    /// The current status.
    pub status: Status,
}

impl Tracker {
    /// A tracker for a machine started at `started`.
    pub fn new(check: &HealthCheck, started: Instant) -> Tracker {
        Tracker {
            retries: check.retries.max(1),
            start_period: check.start_period,
            started,
            failing_streak: 0,
            status: Status::Starting,
        }
    }

    /// Whether `now` is still in the start period.
    pub fn in_start_period(&self, now: Instant) -> bool {
        now.duration_since(self.started) < self.start_period
    }

    /// Count one result at `now`; returns the new status when it changed.
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<Status> {
        let next = if ok {
            self.failing_streak = 0;
            Status::Healthy
        } else if self.in_start_period(now) && self.status == Status::Starting {
            Status::Starting
        } else {
            self.failing_streak += 1;
            if self.failing_streak >= self.retries {
                Status::Unhealthy
            } else {
                self.status
            }
        };
        let changed = next != self.status;
        self.status = next;
        changed.then_some(next)
    }
}

/// What `mbctl machines status` shows: written by the runner after every check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// `starting`, `healthy`, `unhealthy`.
    pub status: Status,
    /// The check, as written (`http://127.0.0.1:8080/`, `tcp:6379`, the command).
    pub check: String,
    /// When the last check ran (RFC 3339 UTC).
    pub last_check: String,
    /// What it said.
    pub last_output: String,
    /// Failures in a row.
    pub failing_streak: u32,
    /// systemd's `$INVOCATION_ID` of the unit run that wrote it (empty outside systemd, and in
    /// states written before this field existed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub invocation: String,
}

/// Where the runner keeps the state of machine `name` (under `/run`: gone at reboot, as the
/// machine's health is).
pub fn state_path(paths: &man8s::Paths, name: &man8s::MachineName) -> PathBuf {
    paths.fs("/run/man8s/health").join(format!("{name}.json"))
}

/// Write `state` atomically.
pub fn write_state(path: &Path, state: &State) -> Result<()> {
    let dir = path.parent().context("state path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(state)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The state the runner last wrote, if any.
pub fn read_state(path: &Path) -> Option<State> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// `now` as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    man8s_oci::install::rfc3339(SystemTime::now())
}

/// Send `STATUS=…` (or any state line) to systemd when run by it (`$NOTIFY_SOCKET`).
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = socket.as_encoded_bytes();
    let sent = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&socket))
    };
    let _ = sent;
}

/// A running exec check's child: its pid (a process group) and the read end of its output.
struct Child {
    pid: nix::unistd::Pid,
    output: OwnedFd,
}

/// Run `argv` inside the machine whose leader is `leader`, as `user` (a Docker user spec,
/// resolved in the machine's /etc/passwd), with `env`; kill it at `timeout`.
/// Must be called from a single-threaded process.
pub fn exec_in_machine(
    leader: i32,
    user: &str,
    env: &[String],
    argv: &[String],
    timeout: Duration,
) -> Outcome {
    let child = match spawn_in_machine(leader, user, env, argv) {
        Ok(c) => c,
        Err(e) => return Outcome::fail(format!("cannot run the check: {e:#}")),
    };
    wait_bounded(child, timeout)
}

fn spawn_in_machine(leader: i32, user: &str, env: &[String], argv: &[String]) -> Result<Child> {
    use nix::unistd::{ForkResult, fork, pipe};
    let (read, write) = pipe().context("pipe")?;
    // SAFETY: the runner is single-threaded (it never starts threads), so the child may run any code.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            drop(write);
            Ok(Child {
                pid: child,
                output: read,
            })
        }
        ForkResult::Child => {
            drop(read);
            let _ =
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
            let code = match crate::nsenter::enter_machine("the machine", leader) {
                Ok(()) => run_entered(user, env, argv, write),
                Err(e) => {
                    let _ = nix::unistd::write(&write, format!("{e:#}\n").as_bytes());
                    125
                }
            };
            std::process::exit(code);
        }
    }
}

/// In the child that entered the machine's namespaces (the PID namespace applies to its
/// children): fork the command, wait, exit with its status.
fn run_entered(user: &str, env: &[String], argv: &[String], out: OwnedFd) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, dup2_stderr, dup2_stdout, fork};
    let say = |m: String| {
        let _ = nix::unistd::write(&out, format!("{m}\n").as_bytes());
    };
    let read_small = |p: &str| crate::nsenter::read_bounded_in_machine(p).unwrap_or_default();
    let creds = match man8s_init::passwd::resolve(
        user,
        &man8s_init::passwd::parse_passwd(&read_small("/etc/passwd")),
        &man8s_init::passwd::parse_group(&read_small("/etc/group")),
    ) {
        Ok(c) => c,
        Err(e) => {
            say(format!("user {user:?}: {e}"));
            return 125;
        }
    };
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(man8s_init::env::DEFAULT_PATH)
        .to_owned();
    let program = match man8s_init::exec::find_program(&argv[0], &path_var, Path::new("/")) {
        Ok(p) => p,
        Err(e) => {
            say(e);
            return 127;
        }
    };
    // SAFETY: single-threaded (forked from the single-threaded runner).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // Ignored signals survive execve: give the command the defaults.
            use nix::sys::signal::{SigHandler, Signal, signal};
            for sig in [
                Signal::SIGHUP,
                Signal::SIGQUIT,
                Signal::SIGUSR1,
                Signal::SIGUSR2,
                Signal::SIGPIPE,
            ] {
                // SAFETY: SigDfl installs no handler code.
                let _ = unsafe { signal(sig, SigHandler::SigDfl) };
            }
            let _ = dup2_stdout(&out);
            let _ = dup2_stderr(&out);
            if let Ok(null) = File::open("/dev/null") {
                let _ = nix::unistd::dup2_stdin(&null);
            }
            if let Err(e) = crate::nsenter::become_user(&creds) {
                say(format!("cannot become user {user:?}: {e}"));
                std::process::exit(125);
            }
            let home = creds.home.clone().unwrap_or_else(|| "/".into());
            let _ = std::env::set_current_dir(&home).or_else(|_| std::env::set_current_dir("/"));
            let mut env = env.to_vec();
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.push(format!("PATH={path_var}"));
            }
            if !env.iter().any(|e| e.starts_with("HOME=")) {
                env.push(format!("HOME={home}"));
            }
            let e = man8s_init::exec::exec(&program, argv, &env);
            say(format!("cannot run {e}"));
            std::process::exit(126);
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => return c,
                Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 125,
            }
        },
        Err(e) => {
            say(format!("fork: {e}"));
            125
        }
    }
}

/// Collect the child's output until it exits or `timeout` passes (then kill its group).
fn wait_bounded(child: Child, timeout: Duration) -> Outcome {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signal::{Signal, killpg};
    use nix::sys::wait::{WaitStatus, waitpid};
    let deadline = Instant::now() + timeout;
    let mut output = Vec::new();
    let mut timed_out = false;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(child.output.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => match nix::unistd::read(&child.output, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    output.extend_from_slice(&buf[..n]);
                    if output.len() > MAX_OUTPUT {
                        output.drain(..output.len() - MAX_OUTPUT);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            },
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if timed_out {
        let _ = killpg(child.pid, Signal::SIGKILL);
    }
    let status = loop {
        match waitpid(child.pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    // Whatever is left of the group (a daemon the check started) goes with it.
    let _ = killpg(child.pid, Signal::SIGKILL);
    let line = last_line(&output);
    if timed_out {
        return Outcome::fail(format!("timed out after {} s", timeout.as_secs_f32()));
    }
    match status {
        Ok(WaitStatus::Exited(_, 0)) => Outcome::ok(if line.is_empty() {
            "exit 0".into()
        } else {
            line
        }),
        Ok(WaitStatus::Exited(_, c)) => Outcome::fail(if line.is_empty() {
            format!("exit {c}")
        } else {
            format!("exit {c}: {line}")
        }),
        other => Outcome::fail(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use man8s::health::OnFailure;

    fn check(retries: u32, start: u64) -> HealthCheck {
        HealthCheck {
            test: HealthTest::Tcp(1),
            interval: Some(Duration::from_secs(1)),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_secs(start),
            on_failure: OnFailure::None,
            source: "declaration".into(),
        }
    }

    #[test]
    fn tracker_counts_like_docker() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&check(2, 10), t0);
        // Failures in the start period do not count.
        assert_eq!(t.record(false, t0 + Duration::from_secs(1)), None);
        assert_eq!(t.record(false, t0 + Duration::from_secs(2)), None);
        assert_eq!(t.failing_streak, 0);
        assert_eq!(
            t.record(true, t0 + Duration::from_secs(3)),
            Some(Status::Healthy)
        );
        // Once healthy, failures count even in the start period.
        assert_eq!(t.record(false, t0 + Duration::from_secs(4)), None);
        assert_eq!(
            t.record(false, t0 + Duration::from_secs(5)),
            Some(Status::Unhealthy)
        );
        assert_eq!(t.record(false, t0 + Duration::from_secs(6)), None);
        assert_eq!(t.failing_streak, 3);
        assert_eq!(
            t.record(true, t0 + Duration::from_secs(7)),
            Some(Status::Healthy)
        );
        assert_eq!(t.failing_streak, 0);

        let mut t = Tracker::new(&check(1, 0), t0);
        assert_eq!(t.record(false, t0), Some(Status::Unhealthy));
    }

    #[test]
    fn status_lines_and_output() {
        assert_eq!(parse_status("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status("HTTP/1.0 302"), Some(302));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status("HTTP/1.1 20"), None);
        assert_eq!(last_line(b"one\ntwo\n\n  \n"), "two");
        assert_eq!(last_line(b"bad \x1b[31mred\n"), "bad ?[31mred");
        assert_eq!(last_line(&[b'x'; 300]).chars().count(), 201);
    }

    /// A loopback server answering each connection with `answer`, for `n` connections.
    fn serve(answer: &'static [u8], n: usize) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer);
            }
        });
        port
    }

    #[test]
    fn http_checks_want_2xx_or_3xx() {
        let t = Duration::from_secs(5);
        let p = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1);
        assert_eq!(check_http("127.0.0.1", p, "/", t), Outcome::ok("HTTP 200"));
        let p = serve(b"HTTP/1.0 301 Moved\r\n\r\n", 1);
        assert!(check_http("localhost", p, "/x", t).ok);
        let p = serve(b"HTTP/1.1 503 Busy\r\n\r\n", 1);
        assert_eq!(
            check_http("127.0.0.1", p, "/", t),
            Outcome::fail("HTTP 503")
        );
        let p = serve(b"garbage", 1);
        assert!(
            check_http("127.0.0.1", p, "/", t)
                .output
                .contains("not an HTTP answer")
        );
    }

    #[test]
    fn http_check_times_out_on_a_silent_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let start = Instant::now();
        let o = check_http("127.0.0.1", port, "/", Duration::from_millis(300));
        assert!(!o.ok);
        assert!(o.output.contains("no answer within"), "{}", o.output);
        assert!(start.elapsed() < Duration::from_secs(3));
        drop(l);
    }

    #[test]
    fn tcp_checks() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(check_tcp("127.0.0.1", port, Duration::from_secs(1)).ok);
        drop(l);
        let o = check_tcp("127.0.0.1", port, Duration::from_secs(1));
        assert!(!o.ok && o.output.contains("refused"), "{}", o.output);
    }

    #[test]
    fn state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/web.json");
        let s = State {
            status: Status::Unhealthy,
            check: "tcp:80".into(),
            last_check: now_rfc3339(),
            last_output: "refused".into(),
            failing_streak: 3,
            invocation: "0123abcd".into(),
        };
        write_state(&p, &s).unwrap();
        assert_eq!(read_state(&p), Some(s));
    }
}
