//! Entering a running machine: `setns` into every namespace of its leader, `chroot` to its root,
//! fork (the PID namespace applies to children only), exec a shell. No `nsenter` needed.

// unsafe: fork() into the machine's PID namespace, SIG_IGN for the terminal.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork};

/// The shell every machine is entered with.
pub const SHELL: &str = "/bin/sh";

/// Namespaces in the order nsenter(1) uses; the user namespace is first so that the second pass
/// (after the privileged first pass) enters it before retrying anything that failed.
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// What to run in the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run<'a> {
    /// A login shell (`/bin/sh -l`).
    LoginShell,
    /// `--command`: split at white space and run directly, as the Python tool's
    /// `nsenter … $command` did (no shell, no quoting).
    Words(&'a str),
    /// `--shell-command`: a string for `/bin/sh -c`.
    ShellString(&'a str),
}

/// argv of the shell: a login shell, or `sh -c COMMAND`.
pub fn shell_argv(command: Option<&str>) -> Vec<String> {
    match command {
        Some(c) => vec![SHELL.into(), "-c".into(), c.into()],
        None => vec![SHELL.into(), "-l".into()],
    }
}

/// argv for a command run without a shell: white-space separated words; a first word without
/// `/` is looked up in the shell environment's `PATH` (`exists` says whether a path is a file).
pub fn direct_argv(command: &str, exists: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let mut words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    let Some(first) = words.first_mut() else {
        bail!("the command is empty")
    };
    if !first.contains('/') {
        let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        match path
            .split(':')
            .map(|d| format!("{d}/{first}"))
            .find(|p| exists(p))
        {
            Some(found) => *first = found,
            None => bail!("{first} is not in PATH ({path})"),
        }
    } else if !exists(first) {
        bail!("{first} does not exist");
    }
    Ok(words)
}

/// The environment the shell starts with: a clean one, as a login would give, keeping `TERM`.
pub fn shell_env(term: Option<&str>) -> Vec<String> {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        "HOME=/root".to_owned(),
        "USER=root".to_owned(),
        "LOGNAME=root".to_owned(),
        format!("SHELL={SHELL}"),
    ];
    env.push(format!(
        "TERM={}",
        term.filter(|t| !t.is_empty() && !t.contains('\0'))
            .unwrap_or("xterm")
    ));
    env
}

fn threads_of_self() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Enter the namespaces and root of `leader`, run the shell (or `command`) as root of the
/// machine, wait for it and return its exit code (128+signal when killed). `machine` names the
/// machine in messages. Must be called from a single-threaded process.
pub fn run_in_machine(machine: &str, leader: i32, what: Run<'_>) -> Result<u8> {
    enter_machine(machine, leader)?;
    run_entered(machine, what)
}

/// Enter every namespace and the root of `leader` (the PID namespace applies to children
/// forked afterwards). Must be called from a single-threaded process.
pub fn enter_machine(machine: &str, leader: i32) -> Result<()> {
    let threads = threads_of_self();
    if threads != 1 {
        bail!("internal error: cannot enter a machine from a process with {threads} threads");
    }
    // Open everything first: once in the machine's mount namespace, /proc/LEADER is not ours.
    let mut targets = Vec::new();
    for (ns, flag) in NAMESPACES {
        let theirs = format!("/proc/{leader}/ns/{ns}");
        let file = File::open(&theirs)
            .with_context(|| format!("cannot open {theirs} (has machine {machine} stopped?)"))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{ns}"));
        let same = match (file.metadata(), ours) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        // setns into one's own user namespace is EINVAL; others are pointless. Skip both.
        if !same {
            targets.push((ns, flag, Some(file)));
        }
    }
    let root_path = format!("/proc/{leader}/root");
    let root = File::open(&root_path).with_context(|| format!("cannot open {root_path}"))?;

    // Pass 1 while still privileged here: everything but the user namespace.
    // Pass 2: the user namespace, then whatever failed in pass 1.
    for pass in 0..2 {
        for (ns, flag, file) in targets.iter_mut() {
            let Some(f) = file.as_ref() else { continue };
            if pass == 0 && *flag == CloneFlags::CLONE_NEWUSER {
                continue;
            }
            match setns(f.as_fd(), *flag) {
                Ok(()) => *file = None,
                Err(e) if pass == 1 => {
                    bail!(
                        "cannot enter the {ns} namespace of machine {machine} (PID {leader}): {e}"
                    )
                }
                Err(_) => {}
            }
        }
    }
    nix::unistd::fchdir(root.as_fd()).context("cannot change to the machine's root")?;
    nix::unistd::chroot(".").context("cannot chroot to the machine's root")?;
    std::env::set_current_dir("/").context("cannot change to / in the machine")?;
    drop(root);
    Ok(())
}

/// A program for `machines exec`: what the app's own start would use, per program.
#[derive(Debug, Clone)]
pub struct Program {
    /// argv; a first word without `/` is looked up in the environment's `PATH`.
    pub argv: Vec<String>,
    /// Docker user spec, resolved in the machine's /etc/passwd (empty: root).
    pub user: String,
    /// Working directory inside the machine.
    pub workdir: String,
    /// Environment before the `HOME`/`PATH` fallbacks of [`man8s_init::env::finish`].
    pub env: man8s_init::env::Env,
    /// The app's bounding set: the program never has more capabilities than the app.
    pub capabilities: Vec<u8>,
    /// `NoNewPrivileges=` of the machine.
    pub no_new_privileges: bool,
}

/// Exit status when the program cannot be run (user, directory, permissions), as `docker exec`.
pub const EXIT_CANNOT_RUN: u8 = 126;
/// Exit status when the program does not exist.
pub const EXIT_NOT_FOUND: u8 = 127;

/// Enter the namespaces and root of `leader`, run `program` there, wait for it and return its
/// exit status (128+signal when killed; [`EXIT_CANNOT_RUN`], [`EXIT_NOT_FOUND`] with a message
/// on stderr when it cannot start). Must be called from a single-threaded process.
pub fn exec_in_machine(machine: &str, leader: i32, program: &Program) -> Result<u8> {
    enter_machine(machine, leader)?;
    let say = |code: u8, msg: String| -> Result<u8> {
        eprintln!("mbctl: machine {machine}: {msg}");
        Ok(code)
    };
    let read = |p: &str| read_bounded_in_machine(p).unwrap_or_default();
    let user = if program.user.is_empty() {
        "0"
    } else {
        program.user.as_str()
    };
    let creds = match man8s_init::passwd::resolve(
        user,
        &man8s_init::passwd::parse_passwd(&read("/etc/passwd")),
        &man8s_init::passwd::parse_group(&read("/etc/group")),
    ) {
        Ok(c) => c,
        Err(e) => return say(EXIT_CANNOT_RUN, format!("user {user:?}: {e}")),
    };
    let mut env = program.env.clone();
    man8s_init::env::finish(&mut env, creds.home.as_deref(), creds.uid, &[]);
    let path_var = env.get("PATH").unwrap_or_default().to_owned();
    let Some(argv0) = program.argv.first() else {
        bail!("no program given");
    };
    let workdir = std::path::Path::new(&program.workdir);
    let path = match man8s_init::exec::find_program(argv0, &path_var, workdir) {
        Ok(p) => p,
        Err(e) if e.contains("not an executable") => return say(EXIT_CANNOT_RUN, e),
        Err(e) => return say(EXIT_NOT_FOUND, e),
    };
    let env = env.to_strings();
    fork_and_wait(|| {
        let fail = |msg: String| -> ! {
            eprintln!("mbctl: machine {machine}: {msg}");
            std::process::exit(i32::from(EXIT_CANNOT_RUN));
        };
        if let Err(e) = man8s_init::exec::prepare_signals() {
            fail(format!("cannot reset signal dispositions: {e}"));
        }
        if program.no_new_privileges {
            // SAFETY: prctl with integer arguments only.
            if unsafe { nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                fail(format!(
                    "cannot set no_new_privs: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if let Err(e) = man8s_init::exec::limit_bounding_set(&program.capabilities) {
            fail(e);
        }
        if let Err(e) = become_user(&creds) {
            fail(format!("cannot become user {user:?}: {e}"));
        }
        if let Err(e) = std::env::set_current_dir(workdir) {
            fail(format!("cannot change to {}: {e}", program.workdir));
        }
        fail(format!(
            "cannot run {}",
            man8s_init::exec::exec(&path, &program.argv, &env)
        ));
    })
}

/// Drop to `creds`. Unlike the init's switch, a refused `setgroups` (a user namespace with
/// setgroups denied) leaves the groups as they are: the program still runs as uid/gid.
pub fn become_user(creds: &man8s_init::passwd::Credentials) -> nix::Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid};
    let groups: Vec<Gid> = creds.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    match setgroups(&groups) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    let (g, u) = (Gid::from_raw(creds.gid), Uid::from_raw(creds.uid));
    setresgid(g, g, g)?;
    setresuid(u, u, u)
}

/// A small file of the machine (`/etc/passwd`), read after entering its root: never blocks
/// (a FIFO there is opened non-blocking) and never reads more than 1 MiB.
pub fn read_bounded_in_machine(path: &str) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Fork (into the entered PID namespace), run `child` there (it execs, or returns an exit
/// status), wait for it; its exit status, or
/// 128+N when a signal killed it. ^C and ^\ are for the child, not for us.
fn fork_and_wait(child: impl FnOnce() -> i32) -> Result<u8> {
    // SAFETY: the process is single-threaded (checked when entering), so the child may run any code.
    match unsafe { fork() }.context("cannot fork into the machine's PID namespace")? {
        ForkResult::Child => std::process::exit(child()),
        ForkResult::Parent { child } => {
            // SAFETY: SigIgn installs no handler code.
            unsafe {
                let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
                let _ = signal(Signal::SIGQUIT, SigHandler::SigIgn);
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(u8::try_from(code).unwrap_or(1)),
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        return Ok(128u8.saturating_add(sig as u8));
                    }
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => bail!("cannot wait for the program: {e}"),
                }
            }
        }
    }
}

/// In the entered machine: fork and exec the shell or command, wait for it.
fn run_entered(machine: &str, what: Run<'_>) -> Result<u8> {
    let has_shell = std::path::Path::new(SHELL).exists();
    let words = match (what, has_shell) {
        (Run::Words(c), _) => direct_argv(c, |p| std::path::Path::new(p).is_file())?,
        (Run::LoginShell, true) => shell_argv(None),
        (Run::ShellString(c), true) => shell_argv(Some(c)),
        (Run::LoginShell, false) => bail!(
            "machine {machine} has no shell: {SHELL} does not exist in it (a distroless image?); \
             run one of its programs with --command '/path/to/program ARGS'"
        ),
        (Run::ShellString(_), false) => bail!(
            "machine {machine} has no {SHELL}, so --shell-command cannot run; \
             --command '/path/to/program ARGS' runs a program directly"
        ),
    };
    let argv: Vec<CString> = words
        .into_iter()
        .map(CString::new)
        .collect::<Result<_, _>>()
        .context("the command contains a NUL byte")?;
    let env: Vec<CString> = shell_env(std::env::var("TERM").ok().as_deref())
        .into_iter()
        .map(CString::new)
        .collect::<Result<_, _>>()
        .context("TERM contains a NUL byte")?;
    let path = argv[0].clone();
    fork_and_wait(|| {
        // Root of the machine: uid/gid 0 of its user namespace. setgroups may be denied
        // in a user namespace; the supplementary groups are then already empty or unmapped.
        let _ = nix::unistd::setgroups(&[]);
        if let Err(e) = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .and_then(|_| {
                nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            })
        {
            eprintln!("mbctl: cannot become root of machine {machine}: {e}");
            std::process::exit(1);
        }
        let e = nix::unistd::execve(&path, &argv, &env).unwrap_err();
        eprintln!(
            "mbctl: cannot run {} in machine {machine}: {e}",
            path.to_string_lossy()
        );
        std::process::exit(127);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_commands() {
        let exists = |p: &str| p == "/usr/bin/app" || p == "/app";
        assert_eq!(
            direct_argv("app --version  x", exists).unwrap(),
            ["/usr/bin/app", "--version", "x"]
        );
        assert_eq!(direct_argv("/app", exists).unwrap(), ["/app"]);
        assert!(direct_argv("/nope", exists).is_err());
        assert!(
            direct_argv("nope", exists)
                .unwrap_err()
                .to_string()
                .contains("not in PATH")
        );
        assert!(direct_argv("   ", exists).is_err());
    }

    #[test]
    fn argv_and_env() {
        assert_eq!(shell_argv(None), ["/bin/sh", "-l"]);
        assert_eq!(shell_argv(Some("echo hi")), ["/bin/sh", "-c", "echo hi"]);
        let env = shell_env(Some("screen"));
        assert!(env.contains(&"TERM=screen".to_owned()));
        assert!(env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin:")));
        assert!(shell_env(None).contains(&"TERM=xterm".to_owned()));
    }
}
