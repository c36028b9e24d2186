//! Root tier: `mbctl machines shell` enters every namespace and the root of a running
//! "machine" — here a process that `unshare` put in new user/mount/pid/net/uts/ipc/cgroup
//! namespaces, chrooted into a busybox tree. `--leader-pid` stands in for machined's answer.

use std::process::{Command, Output, Stdio};

use man8s_testsupport::require_root;

mod pty;
use pty::OnPty;

mod nsmachine;
use nsmachine::{Machine, busybox_tree};

fn shell(leader: i32, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mbctl"));
    c.args([
        "machines",
        "shell",
        "testmachine",
        "--leader-pid",
        &leader.to_string(),
    ]);
    c.args(args);
    c.env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn root_shell_enters_all_namespaces_and_the_root() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_tree(&root, true);
    let m = Machine::start(
        &root,
        "busybox hostname inner-host; busybox touch /ready; exec busybox sleep 600",
    );

    let o = shell(
        m.leader,
        &[
            "--shell-command",
            "busybox hostname; busybox cat /etc/marker; echo pid=$$; busybox id -u; busybox ip -o link | busybox wc -l; echo $PATH",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "inner-host", "uts namespace: {out}");
    assert_eq!(lines[1], "inside the machine", "root: {out}");
    let pid: u32 = lines[2].strip_prefix("pid=").unwrap().parse().unwrap();
    assert!(pid < 10, "pid namespace: the shell is PID {pid}");
    assert_eq!(lines[3], "0", "root of the machine's user namespace");
    assert_eq!(lines[4], "1", "net namespace: only lo");
    assert!(
        lines[5].starts_with("/usr/local/sbin:"),
        "clean environment: {out}"
    );

    // Same namespaces as the leader, checked from outside.
    let o = shell(
        m.leader,
        &[
            "--shell-command",
            "for n in net uts ipc user cgroup mnt; do busybox readlink /proc/self/ns/$n; done",
        ],
    );
    let inside = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{inside}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for ns in ["net", "uts", "ipc", "user", "cgroup", "mnt"] {
        let leader_ns = std::fs::read_link(format!("/proc/{}/ns/{ns}", m.leader)).unwrap();
        assert!(
            inside.contains(leader_ns.to_str().unwrap()),
            "{ns}: {inside}"
        );
    }

    // Exit codes come through.
    assert_eq!(
        shell(m.leader, &["--shell-command", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    // --command is split at white space and run without a shell, as the Python tool did: the
    // quotes reach the program and `$HOME` is not expanded.
    let o = shell(m.leader, &["--command", "busybox echo 'a  b' $HOME"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "'a b' $HOME\n");
}

#[test]
fn root_shell_machine_without_shell_is_a_clear_error() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_tree(&root, false);
    let m = Machine::start(&root, "busybox touch /ready; exec busybox sleep 600");
    let o = shell(m.leader, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("machine testmachine has no shell: /bin/sh does not exist in it"),
        "{err}"
    );
    assert!(err.contains("--command '/path/to/program ARGS'"), "{err}");
    // A program of the image runs directly, without a shell (as the Python tool's nsenter did).
    let o = shell(m.leader, &["--command", "/bin/busybox echo  direct   run"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "direct run\n");
    let o = shell(m.leader, &["--command", "/bin/busybox false"]);
    assert_eq!(o.status.code(), Some(1));
    let o = shell(m.leader, &["--shell-command", "echo hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("has no /bin/sh, so --shell-command cannot run"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = shell(m.leader, &["--command", "nosuchprogram"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nosuchprogram is not in PATH"), "{err}");
}

#[test]
fn root_shell_stopped_machine_is_a_clear_error() {
    require_root();
    // A PID that is not running.
    let o = shell(i32::MAX - 1, &["--command", "true"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("has machine testmachine stopped?"), "{err}");
}

#[test]
fn root_shell_interactive_login_shell_on_a_terminal() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_tree(&root, true);
    let m = Machine::start(
        &root,
        "busybox hostname tty-host; busybox touch /ready; exec busybox sleep 600",
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_mbctl"));
    c.args([
        "machines",
        "shell",
        "testmachine",
        "--leader-pid",
        &m.leader.to_string(),
    ])
    .env("RUST_BACKTRACE", "0")
    .env("TERM", "vt100");
    let mut pty = OnPty::spawn(c);
    // (The terminal is the caller's pty, as with nsenter: inside the machine's own /dev it has no name.)
    pty.send("echo \"sum=$((20 + 22)) term=$TERM host=$(busybox hostname) login=$0\"");
    pty.expect("sum=42 term=vt100 host=tty-host login=/bin/sh");
    pty.send("exit 5");
    let (code, rest) = pty.finish();
    assert_eq!(code, 5, "{rest}");
}

#[test]
fn root_shell_as_an_unprivileged_user_says_it_needs_root() {
    require_root();
    let o = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            env!("CARGO_BIN_EXE_mbctl"),
            "machines",
            "shell",
            "web",
            "--leader-pid",
            "1",
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "mbctl: entering machine web needs root (its namespaces belong to root); run mbctl with sudo\n"
    );
}
