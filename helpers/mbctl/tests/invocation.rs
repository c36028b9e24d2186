//! The invocation contract: every command has `--help` with an example and exits 0 on it; clap's
//! own errors and bad names exit 2; runtime failures exit 1. Runs the real binary.

use std::process::{Command, Output};

fn mbctl(args: &[&str], root: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mbctl"))
        .args(args)
        .env("MAN8S_ROOT", root)
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        // No system bus: commands that need systemd must fail cleanly (exit 1).
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}/no-bus", root.display()),
        )
        .output()
        .expect("run mbctl")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

const COMMANDS: &[&[&str]] = &[
    &[],
    &["machines"],
    &["machines", "pull"],
    &["machines", "shell"],
    &["machines", "remove"],
    &["machines", "list"],
    &["machines", "status"],
    &["machines", "start"],
    &["machines", "stop"],
    &["machines", "restart"],
    &["machines", "enable"],
    &["machines", "disable"],
    &["machines", "logs"],
    &["machines", "update"],
    &["machines", "snapshot"],
    &["machines", "snapshots"],
    &["machines", "restore"],
    &["machines", "health"],
    &["auto-update"],
    &["address"],
    &["address", "getsuffix"],
    &["verify"],
    &["import"],
    &["migrate"],
    &["images"],
    &["images", "list"],
    &["images", "prune"],
    &["cache"],
    &["cache", "clear"],
    &["oci"],
    &["oci", "download"],
    &["version"],
];

#[test]
fn every_command_has_help_with_an_example() {
    let root = tempfile::tempdir().unwrap();
    for cmd in COMMANDS {
        let mut args = cmd.to_vec();
        args.push("--help");
        let o = mbctl(&args, root.path());
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(code(&o), 0, "{args:?}: {out}");
        assert!(
            out.contains("Example:\n  mbctl "),
            "{args:?} --help has no example:\n{out}"
        );
        // The example uses the command it documents.
        let invocation = format!("mbctl {}", cmd.join(" "));
        assert!(
            out.contains(invocation.trim_end()),
            "{args:?}: example does not show {invocation:?}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let root = tempfile::tempdir().unwrap();
    for args in [
        &["bogus"][..],
        &[],
        &["machines"],
        &["machines", "start"],
        &["machines", "start", "a", "b"],
        &["machines", "list", "--bogus"],
        &["address", "getsuffix"],
        &["address", "getsuffix", "x", "--prefix", "not-a-prefix"],
        &["address", "getsuffix", "x", "--prefix", "10.0.0.0/8"],
        &["machines", "start", "bad/name"],
        &["machines", "remove", "../etc"],
        &["machines", "status", "-x"],
        &[
            "machines",
            "pull",
            "redis",
            "web",
            "--volume",
            "relative=data",
        ],
        &[
            "machines",
            "pull",
            "redis",
            "web",
            "--volume",
            "/data=elsewhere",
        ],
        &["machines", "shell", "a b"],
        &[
            "machines",
            "pull",
            "redis",
            "web",
            "--volume",
            "/a=data",
            "--volume",
            "/a/=config",
        ],
        &["machines", "pull", "not a reference!", "web"],
        &["machines", "pull", "redis", "web", "--template", "macvlan"],
        &["machines", "pull", "redis", "web", "--template", "bogus"],
        &["import", "x.tar", "--reference", "not a reference!"],
        &[
            "import",
            "x.tar",
            "--reference",
            "localhost/x:1",
            "--machine",
            "bad_name",
        ],
        &["oci", "download", "not a reference!"],
    ] {
        let o = mbctl(args, root.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 2, "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        assert!(o.stdout.is_empty(), "{args:?}: usage errors go to stderr");
    }
}

#[test]
fn runtime_errors_exit_1_with_one_line() {
    let root = tempfile::tempdir().unwrap();
    for args in [
        &["machines", "start", "nosuch"][..],
        &["machines", "status", "nosuch"],
        &["machines", "remove", "nosuch"],
        &["machines", "enable", "nosuch"],
        &["machines", "stop", "nosuch"],
        &["verify", "/nonexistent/x.machine"],
    ] {
        let o = mbctl(args, root.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 1, "{args:?}: {err}");
        assert!(
            !err.contains("stack backtrace") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    let o = mbctl(&["machines", "start", "nosuch"], root.path());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "mbctl: no machine nosuch: no nosuch.machine in /etc/man8s/machines, /run/man8s/machines, /usr/lib/man8s/machines\n"
    );
}

#[test]
fn address_getsuffix_golden() {
    let root = tempfile::tempdir().unwrap();
    let o = mbctl(&["address", "getsuffix", "TestBWContainer3"], root.path());
    assert_eq!(
        (code(&o), String::from_utf8_lossy(&o.stdout).as_ref()),
        (0, "::1d44:bc13:a177:c4d\n")
    );
    let o = mbctl(
        &[
            "address",
            "getsuffix",
            "TestBWContainer3",
            "--prefix",
            "300:2e98:a4b0:1789::/64",
        ],
        root.path(),
    );
    assert_eq!(
        (code(&o), String::from_utf8_lossy(&o.stdout).as_ref()),
        (0, "300:2e98:a4b0:1789:1d44:bc13:a177:c4d\n")
    );
}

#[test]
fn version_prints_version() {
    let root = tempfile::tempdir().unwrap();
    let o = mbctl(&["version"], root.path());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("mbctl {}\n", env!("CARGO_PKG_VERSION"))
    );
    let o = mbctl(&["--version"], root.path());
    assert_eq!(code(&o), 0);
}

#[test]
fn generate_docs_writes_what_make_installs() {
    let root = tempfile::tempdir().unwrap();
    let man = root.path().join("man");
    let comp = root.path().join("completions");
    let o = mbctl(
        &[
            "generate-docs",
            "--man-dir",
            man.to_str().unwrap(),
            "--completions-dir",
            comp.to_str().unwrap(),
        ],
        root.path(),
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["mbctl.bash", "_mbctl", "mbctl.fish"] {
        let text = std::fs::read_to_string(comp.join(f)).unwrap();
        assert!(
            text.contains("getsuffix") && text.contains("machines"),
            "{f}"
        );
    }
    let page = std::fs::read_to_string(man.join("mbctl-machines-pull.1")).unwrap();
    assert!(page.contains(".TH") && page.contains("volume"), "{page}");
    assert!(man.join("mbctl.1").exists());
    assert!(
        !man.join("mbctl-generate-docs.1").exists(),
        "hidden command gets no page"
    );
    assert!(!man.join("mbctl-help.1").exists());
    // An existing mbctl.1 (from scdoc) is kept.
    std::fs::write(man.join("mbctl.1"), "scdoc page").unwrap();
    let o = mbctl(
        &[
            "generate-docs",
            "--man-dir",
            man.to_str().unwrap(),
            "--completions-dir",
            comp.to_str().unwrap(),
        ],
        root.path(),
    );
    assert_eq!(code(&o), 0);
    assert_eq!(
        std::fs::read_to_string(man.join("mbctl.1")).unwrap(),
        "scdoc page"
    );
}
