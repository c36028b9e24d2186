//! The binary's contract without privileges: usage errors, --help/--version, and the refusal to
//! run in the host's PID namespace (always with --no-network, so nothing here touches a network).

use std::process::Command;

const INIT: &str = env!("CARGO_BIN_EXE_man8s-init");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(INIT)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let (code, _, err) = run(&["--no-network", "--frobnicate"]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "man8s-init: args: unknown argument \"--frobnicate\" (see --help)\n"
    );
    let (code, _, err) = run(&["--env=NOVALUE"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("usage: man8s-init") && out.contains("man8s-init(8)"),
        "{out}"
    );
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("man8s-init {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn refuses_the_host_pid_namespace() {
    let on_host =
        std::fs::read_link("/proc/self/ns/pid").unwrap().as_os_str() == "pid:[4026531836]";
    let (code, _, err) = run(&["--no-network", "--exec=/bin/true", "--user=0"]);
    if on_host {
        assert_eq!(code, 1, "{err}");
        assert!(
            err.starts_with("man8s-init: args: refusing to run in the host's PID namespace"),
            "{err}"
        );
    } else {
        // Inside a container of its own (a CI runner), the init goes on and runs the command.
        assert_eq!(code, 0, "{err}");
    }
}
