//! The processes of a running machine as the host sees them: its leader (nspawn's stub PID 1),
//! the app (PID 2 inside, the contract), everything else in its PID namespace; and signalling the
//! app through a pidfd, so that a recycled PID can never receive the signal.
//!
//! Everything is read from `/proc` with bounded reads (a machine's processes are hostile: their
//! names are theirs to choose, but `/proc/PID/status` is written by the kernel).

// unsafe: pidfd_open/pidfd_send_signal have no safe wrapper in nix.
#![allow(unsafe_code)]

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use man8s::signal::Signal;

/// One process, from `/proc/PID/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    /// PID on the host (in our PID namespace).
    pub pid: i32,
    /// Parent PID on the host (0 when the parent is outside our namespace).
    pub ppid: i32,
    /// `NSpid`: the PID in each nested namespace, ours first.
    pub nspid: Vec<i32>,
    /// Real uid as the host sees it.
    pub uid: u32,
    /// `Name` (the kernel's comm, at most 15 bytes, chosen by the process).
    pub name: String,
    /// `State` letter (R, S, D, Z, …).
    pub state: char,
}

impl Proc {
    /// The PID inside the process's own (innermost) PID namespace.
    pub fn inner_pid(&self) -> i32 {
        self.nspid.last().copied().unwrap_or(self.pid)
    }
}

/// Parse the text of `/proc/PID/status` (pure).
pub fn parse_status(text: &str) -> Option<Proc> {
    let mut p = Proc {
        pid: 0,
        ppid: 0,
        nspid: Vec::new(),
        uid: 0,
        name: String::new(),
        state: '?',
    };
    let mut have_pid = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            // The name may contain anything but a newline; the kernel escapes nothing else.
            "Name" => p.name = value.to_owned(),
            "State" => p.state = value.chars().next().unwrap_or('?'),
            "Pid" => {
                p.pid = value.parse().ok()?;
                have_pid = true;
            }
            "PPid" => p.ppid = value.parse().ok()?,
            "Uid" => p.uid = value.split_whitespace().next()?.parse().ok()?,
            "NSpid" => {
                p.nspid = value
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?
            }
            _ => {}
        }
    }
    if p.nspid.is_empty() {
        p.nspid.push(p.pid);
    }
    have_pid.then_some(p)
}

/// `/proc/PID/status`, or None when the process is gone.
pub fn read_proc(pid: i32) -> Option<Proc> {
    let mut text = String::new();
    fs::File::open(format!("/proc/{pid}/status"))
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    parse_status(&text)
}

/// Every process we can see.
pub fn all_processes() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut procs: Vec<Proc> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect();
    procs.sort_by_key(|p| p.pid);
    procs
}

/// The depth of our own PID namespace (1 on a plain host).
fn own_depth() -> usize {
    read_proc(std::process::id() as i32).map_or(1, |p| p.nspid.len())
}

/// The machine's leader among `procs`: the child of nspawn (`nspawn_pid`, the unit's main process)
/// that is PID 1 of a PID namespace one level below ours. Pure over `procs`.
pub fn leader_below(procs: &[Proc], nspawn_pid: i32, depth: usize) -> Option<i32> {
    procs
        .iter()
        .find(|p| p.ppid == nspawn_pid && p.nspid.len() == depth + 1 && p.inner_pid() == 1)
        .map(|p| p.pid)
}

/// The app among `procs`: PID 2 of the leader's namespace, a child of the leader (the stub forks it
/// first and outlives it). Pure over `procs`.
pub fn app_below(procs: &[Proc], leader: &Proc) -> Option<i32> {
    procs
        .iter()
        .find(|p| p.ppid == leader.pid && p.nspid.len() == leader.nspid.len() && p.inner_pid() == 2)
        .map(|p| p.pid)
}

/// Processes in the leader's PID namespace (its own level: not nested ones), leader first.
pub fn machine_processes(procs: &[Proc], leader: &Proc) -> Vec<Proc> {
    let ns = |pid: i32| fs::metadata(format!("/proc/{pid}/ns/pid")).ok();
    let Some(theirs) = ns(leader.pid) else {
        return Vec::new();
    };
    use std::os::unix::fs::MetadataExt;
    procs
        .iter()
        .filter(|p| p.nspid.len() >= leader.nspid.len())
        .filter(|p| {
            // /proc/PID/ns/pid is the namespace the process lives in (its innermost); a process of
            // a nested namespace below the machine's also belongs to the machine.
            p.pid == leader.pid
                || ns(p.pid).is_some_and(|m| m.ino() == theirs.ino() && m.dev() == theirs.dev())
                || p.nspid.len() > leader.nspid.len() && descends_from(procs, p, leader.pid)
        })
        .cloned()
        .collect()
}

fn descends_from(procs: &[Proc], p: &Proc, ancestor: i32) -> bool {
    let mut cur = p.ppid;
    for _ in 0..procs.len() {
        if cur == ancestor {
            return true;
        }
        match procs.iter().find(|q| q.pid == cur) {
            Some(q) if q.ppid != cur => cur = q.ppid,
            _ => return false,
        }
    }
    false
}

/// Where the app of a machine is found.
#[derive(Clone, Copy, Debug)]
pub enum Anchor {
    /// The unit's main process (nspawn), as systemd gives it to ExecStop= in `$MAINPID`.
    Nspawn(i32),
    /// The machine's leader, as machined reports it.
    Leader(i32),
}

/// The host PIDs of the machine's leader and of its app (None: the app has exited already).
pub fn find(anchor: Anchor) -> Result<(Proc, Option<i32>)> {
    let procs = all_processes();
    let leader_pid = match anchor {
        Anchor::Leader(pid) => pid,
        Anchor::Nspawn(nspawn) => match leader_below(&procs, nspawn, own_depth()) {
            Some(pid) => pid,
            None => bail!("nspawn (PID {nspawn}) has no container running"),
        },
    };
    let leader = procs
        .iter()
        .find(|p| p.pid == leader_pid)
        .cloned()
        .with_context(|| format!("the machine's leader (PID {leader_pid}) has exited"))?;
    let app = app_below(&procs, &leader);
    Ok((leader, app))
}

/// A process held by a pidfd: signals reach this process or nobody.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    /// The host PID it was opened for.
    pub pid: i32,
}

impl Pidfd {
    /// Open a pidfd for `pid` (ESRCH: it has exited).
    pub fn open(pid: i32) -> std::io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Pidfd { fd, pid })
    }

    /// Send `sig`.
    pub fn signal(&self, sig: Signal) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid fd, no siginfo, no flags.
        let r = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig.number(),
                std::ptr::null::<nix::libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait up to `timeout` for the process to exit; true when it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(n) if n > 0 => return true,
                Ok(_) if left.is_zero() => return false,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }
}

/// What [`stop`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// No app was running (it had exited, or the machine is down).
    NotRunning,
    /// The app exited within the timeout after the stop signal.
    Exited(Duration),
    /// It did not; it was killed with SIGKILL.
    Killed,
}

/// Stop the app as its image asks: `sig`, then up to `timeout` for it to exit, then SIGKILL.
pub fn stop(app: i32, sig: Signal, timeout: Duration) -> Result<Stopped> {
    let pidfd = match Pidfd::open(app) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => return Ok(Stopped::NotRunning),
        Err(e) => return Err(e).context(format!("cannot open the app (PID {app})")),
    };
    let started = Instant::now();
    match pidfd.signal(sig) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => return Ok(Stopped::NotRunning),
        Err(e) => return Err(e).context(format!("cannot send {sig} to the app (PID {app})")),
    }
    if pidfd.wait_exit(timeout) {
        return Ok(Stopped::Exited(started.elapsed()));
    }
    match pidfd.signal(Signal::KILL) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {
            return Ok(Stopped::Exited(started.elapsed()));
        }
        Err(e) => return Err(e).context(format!("cannot kill the app (PID {app})")),
    }
    pidfd.wait_exit(Duration::from_secs(5));
    Ok(Stopped::Killed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, nspid: &[i32]) -> Proc {
        Proc {
            pid,
            ppid,
            nspid: nspid.to_vec(),
            uid: 0,
            name: "x".into(),
            state: 'S',
        }
    }

    #[test]
    fn status_parsing() {
        let text = "Name:\tredis-server\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n\
                    Pid:\t4242\nPPid:\t4200\nTracerPid:\t0\nUid:\t655360\t655360\t655360\t655360\n\
                    Gid:\t655360\t655360\t655360\t655360\nNSpid:\t4242\t2\nNSpgid:\t4242\t2\n";
        let p = parse_status(text).unwrap();
        assert_eq!(
            (
                p.pid,
                p.ppid,
                p.nspid.clone(),
                p.uid,
                p.name.as_str(),
                p.state
            ),
            (4242, 4200, vec![4242, 2], 655360, "redis-server", 'S')
        );
        assert_eq!(p.inner_pid(), 2);
        assert!(parse_status("Name:\tx\n").is_none());
        assert!(parse_status("Pid:\tnope\n").is_none());
    }

    #[test]
    fn leader_and_app_are_found_by_namespace_pid_and_parent() {
        let procs = [
            p(100, 1, &[100]),         // nspawn
            p(101, 100, &[101]),       // a helper nspawn forked, not a container
            p(110, 100, &[110, 1]),    // the stub
            p(111, 110, &[111, 2]),    // the app
            p(112, 111, &[112, 3]),    // a child of the app
            p(120, 112, &[120, 4, 1]), // a nested container's init
            p(121, 120, &[121, 5, 2]), // its PID 2: not our app
            p(130, 999, &[130, 2]),    // PID 2 of another machine
        ];
        assert_eq!(leader_below(&procs, 100, 1), Some(110));
        assert_eq!(leader_below(&procs, 999, 1), None);
        assert_eq!(app_below(&procs, &procs[2]), Some(111));
        // The app has exited: nothing, never some other PID 2.
        let without: Vec<Proc> = procs.iter().filter(|q| q.pid != 111).cloned().collect();
        assert_eq!(app_below(&without, &procs[2]), None);
        assert!(descends_from(&procs, &procs[6], 110));
        assert!(!descends_from(&procs, &procs[7], 110));
    }

    #[test]
    fn stop_of_a_child_that_handles_nothing_and_one_that_ignores_the_signal() {
        use std::process::Command;
        // Default disposition: SIGINT ends it at once.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let r = stop(
            child.id() as i32,
            Signal::parse("INT").unwrap(),
            Duration::from_secs(5),
        );
        assert!(
            matches!(r, Ok(Stopped::Exited(d)) if d < Duration::from_secs(5)),
            "{r:?}"
        );
        child.wait().unwrap();
        // Ignores SIGTERM: killed after the timeout.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 30"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let r = stop(child.id() as i32, Signal::TERM, Duration::from_millis(500)).unwrap();
        assert_eq!(r, Stopped::Killed);
        assert!(t.elapsed() >= Duration::from_millis(500));
        child.wait().unwrap();
        // Gone already.
        assert_eq!(
            stop(child.id() as i32, Signal::TERM, Duration::from_secs(1)).unwrap(),
            Stopped::NotRunning
        );
    }
}
