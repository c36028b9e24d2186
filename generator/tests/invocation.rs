//! The invocation contract of the `man8s-generator` binary (systemd.generator(7)): arguments,
//! output directories, exit codes; and `systemd-analyze verify` of what it writes.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const GEN: &str = env!("CARGO_BIN_EXE_man8s-generator");

fn gen_in(root: &Path, args: &[&Path]) -> Output {
    Command::new(GEN)
        .args(args)
        .env("MAN8S_ROOT", root)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn declare(root: &Path, name: &str, text: &str) {
    let dir = root.join("etc/man8s/machines");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("{name}.machine")), text).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn three_arguments_write_to_the_first() {
    let t = tempfile::tempdir().unwrap();
    declare(t.path(), "web", "[Machine]\nImage=redis\n");
    let (n, e, l) = (t.path().join("n"), t.path().join("e"), t.path().join("l"));
    let o = gen_in(t.path(), &[&n, &e, &l]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(n.join("man8@web.service.d/50-man8s.conf").is_file());
    assert!(t.path().join("run/systemd/nspawn/web.nspawn").is_file());
    assert!(!e.exists() && !l.exists(), "early/late dirs are not used");
}

#[test]
fn no_arguments_use_the_default_dir_under_the_root() {
    let t = tempfile::tempdir().unwrap();
    declare(
        t.path(),
        "web",
        "[Machine]\nImage=redis\n[Install]\nWantedBy=machines.target\n",
    );
    let o = gen_in(t.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let link = t
        .path()
        .join("run/systemd/generator/machines.target.wants/man8@web.service");
    assert_eq!(
        fs::read_link(link).unwrap(),
        Path::new("/usr/lib/systemd/system/man8@.service")
    );
}

#[test]
fn wrong_argument_count_is_a_usage_error() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let a = a.as_path();
    for args in [vec![a, a], vec![a, a, a, a]] {
        let o = gen_in(t.path(), &args);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("expected 0, 1 or 3 arguments"),
            "{}",
            stderr(&o)
        );
        assert!(!a.exists());
    }
    let o = Command::new(GEN).arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("usage: man8s-generator"));
}

#[test]
fn unusable_output_dir_is_a_runtime_error() {
    let t = tempfile::tempdir().unwrap();
    declare(t.path(), "web", "[Machine]\nImage=redis\n");
    let file = t.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let o = gen_in(t.path(), &[&file, &file, &file]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!("man8s-generator: {}", file.display())),
        "{}",
        stderr(&o)
    );

    // /run/systemd/nspawn unusable (a file in the way): also exit 1, with the path.
    let t = tempfile::tempdir().unwrap();
    declare(t.path(), "web", "[Machine]\nImage=redis\n");
    fs::create_dir_all(t.path().join("run/systemd")).unwrap();
    fs::write(t.path().join("run/systemd/nspawn"), "").unwrap();
    let o = gen_in(t.path(), &[&t.path().join("out")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("run/systemd/nspawn"), "{}", stderr(&o));
}

#[test]
fn bad_declarations_do_not_fail_the_generator() {
    let t = tempfile::tempdir().unwrap();
    declare(t.path(), "bad", "[Machine]\nImage=\n");
    declare(t.path(), "good", "[Machine]\nImage=redis\n");
    let out = t.path().join("out");
    let o = gen_in(t.path(), &[&out]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("man8s-generator: /etc/man8s/machines/bad.machine: Image=: missing")
    );
    assert!(t.path().join("run/systemd/nspawn/good.nspawn").is_file());
    assert!(!t.path().join("run/systemd/nspawn/bad.nspawn").exists());
}

#[test]
fn nothing_declared_writes_nothing_but_succeeds() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let o = gen_in(t.path(), &[&out]);
    assert!(o.status.success());
    assert!(o.stderr.is_empty());
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    assert!(
        !t.path().join("run/systemd/nspawn").exists()
            || fs::read_dir(t.path().join("run/systemd/nspawn"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn removing_a_declaration_removes_its_files() {
    let t = tempfile::tempdir().unwrap();
    declare(
        t.path(),
        "web",
        "[Machine]\nImage=redis\n[Install]\nWantedBy=machines.target\n",
    );
    let out = t.path().join("out");
    assert!(gen_in(t.path(), &[&out]).status.success());
    fs::remove_file(t.path().join("etc/man8s/machines/web.machine")).unwrap();
    assert!(gen_in(t.path(), &[&out]).status.success());
    assert!(!t.path().join("run/systemd/nspawn/web.nspawn").exists());
    assert!(!out.join("man8@web.service.d").exists());
    assert!(!out.join("machines.target.wants").exists());
}

/// `systemd-analyze verify` (the host's systemd) accepts the shipped template with a generated
/// drop-in for a good and for a bad machine. Keys newer than the host's systemd are the only
/// complaints allowed (the system tier verifies against systemd 262 itself).
#[test]
fn systemd_analyze_verify_accepts_unit_and_dropins() {
    let version = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze is needed");
    let version: u32 = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("systemd version");
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let units = root.join("units");
    let libexec = root.join("libexec");
    fs::create_dir_all(&units).unwrap();
    fs::create_dir_all(&libexec).unwrap();
    for tool in ["man8s-fetch", "mbctl"] {
        let path = libexec.join(tool);
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let template =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../units/man8@.service"))
            .unwrap();
    fs::write(
        units.join("man8@.service"),
        template
            .replace("@LIBEXECDIR@", &libexec.to_string_lossy())
            .replace("@BINDIR@", &libexec.to_string_lossy()),
    )
    .unwrap();

    declare(
        root,
        "good",
        "[Machine]\nImage=redis\nLoadCredential=pw:/etc/pw\nSetCredential=x:100%\n[Resources]\nMemoryMax=1G\nCPUQuota=20%\nTasksMax=50\n",
    );
    declare(
        root,
        "bad",
        "[Machine]\nImage=redis\nImgae=x\nExec=echo \"$HOME\" 100%\n",
    );
    let o = gen_in(root, &[&units]);
    assert!(o.status.success());

    let o = Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            "man8@good.service",
            "man8@bad.service",
        ])
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .current_dir(&units)
        .output()
        .unwrap();
    let err = stderr(&o);
    let newer_keys = ["DelegateSubgroup", "RestartSteps", "RestartMaxDelaySec"];
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !(version < 254
                && newer_keys
                    .iter()
                    .any(|k| l.contains(&format!("Unknown key '{k}'"))))
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complained:\n{err}"
    );
    assert!(
        o.status.success() || version < 254,
        "systemd-analyze verify failed:\n{err}"
    );
}

/// Run the generator, failing (not hanging) when it takes longer than `secs`.
fn gen_within(root: &Path, args: &[&Path], secs: u64) -> Output {
    let mut child = Command::new(GEN)
        .args(args)
        .env("MAN8S_ROOT", root)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("man8s-generator still running after {secs}s: it blocked on a file");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

/// A FIFO as a declaration or a drop-in (issue 10 item 8) never hangs the generator: that machine
/// gets the failing drop-in naming the file, the others are generated.
#[test]
fn fifo_declarations_and_dropins_fail_their_machine_without_blocking() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    mkfifo(&root.join("etc/man8s/machines/pipe.machine"));
    declare(root, "drop", "[Machine]\nImage=redis\n");
    mkfifo(&root.join("etc/man8s/machines/drop.machine.d/10-x.conf"));
    declare(root, "good", "[Machine]\nImage=redis\n");
    let out = root.join("out");
    let o = gen_within(root, &[&out], 20);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    for (name, file) in [
        ("pipe", "/etc/man8s/machines/pipe.machine"),
        ("drop", "/etc/man8s/machines/drop.machine.d/10-x.conf"),
    ] {
        let line = format!("man8s-generator: {file}: not a regular file (a FIFO)");
        assert!(err.contains(&line), "no {line:?} in:\n{err}");
        let dropin =
            fs::read_to_string(out.join(format!("man8@{name}.service.d/50-man8s.conf"))).unwrap();
        assert!(
            dropin.contains("invalid declaration") && dropin.contains(file),
            "{dropin}"
        );
        assert!(
            !root
                .join(format!("run/systemd/nspawn/{name}.nspawn"))
                .exists()
        );
    }
    assert!(root.join("run/systemd/nspawn/good.nspawn").is_file());
}

/// A drop-in directory that cannot be listed fails its machine (as in `man8s-fetch`), instead of
/// generating it without those drop-ins.
#[test]
fn unreadable_dropin_dir_fails_its_machine() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    declare(root, "web", "[Machine]\nImage=redis\n");
    // A symlink loop: listing it fails with ELOOP, also for root.
    std::os::unix::fs::symlink(
        "web.machine.d",
        root.join("etc/man8s/machines/web.machine.d"),
    )
    .unwrap();
    let out = root.join("out");
    let o = gen_in(root, &[&out]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("man8s-generator: /etc/man8s/machines/web.machine.d: "),
        "{}",
        stderr(&o)
    );
    let dropin = fs::read_to_string(out.join("man8@web.service.d/50-man8s.conf")).unwrap();
    assert!(dropin.contains("invalid declaration"), "{dropin}");
    assert!(!root.join("run/systemd/nspawn/web.nspawn").exists());
}

#[test]
fn policy_file_lists_good_machines_for_the_filter() {
    let t = tempfile::tempdir().unwrap();
    declare(
        t.path(),
        "web",
        "[Machine]\nImage=redis\n[Network]\nExpose=80 udp:53\nExpose=80\nAllowFrom=@nas 300:1:2:3::9/64\n",
    );
    declare(
        t.path(),
        "quiet",
        "[Machine]\nImage=redis\n[Network]\nYggdrasilAddress=no\n",
    );
    declare(t.path(), "broken", "[Machine]\nImage=redis\nPrt=1\n");
    let o = gen_in(t.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let policy: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.path().join("run/man8s/policy.json")).unwrap())
            .unwrap();
    // Sorted by name; the broken declaration exposes nothing; duplicates folded.
    assert_eq!(
        policy,
        serde_json::json!({"machines": [
            {"name": "quiet", "address": "none", "expose": [], "allow_from": [], "links": []},
            {"name": "web", "address": "auto", "expose": ["tcp:80", "udp:53"],
             "allow_from": ["@nas", "300:1:2:3::/64"], "links": []},
        ]})
    );
    // A change is flagged for man8s-bridge.path; an unchanged second run flags nothing.
    let flag = t.path().join("run/man8s/policy.changed");
    assert!(flag.exists());
    fs::remove_file(&flag).unwrap();
    let before = fs::metadata(t.path().join("run/man8s/policy.json"))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(gen_in(t.path(), &[]).status.success());
    let after = fs::metadata(t.path().join("run/man8s/policy.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
    assert!(!flag.exists());
}

/// The drop-in records the fingerprint of the declaration files it was generated from (what
/// `man8s-fetch` compares), and it follows every edit of the main file and of a drop-in.
#[test]
fn fingerprint_follows_the_declaration_files() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let out = root.join("out");
    let fingerprint = || {
        let o = gen_in(root, &[&out]);
        assert!(o.status.success(), "{}", stderr(&o));
        let d = fs::read_to_string(out.join("man8@web.service.d/50-man8s.conf")).unwrap();
        let line = d
            .lines()
            .find(|l| l.starts_with("Environment=MAN8S_DECLARATION_SHA256=sha256:"))
            .unwrap_or_else(|| panic!("no fingerprint in:\n{d}"))
            .to_owned();
        assert_eq!(
            line.len(),
            "Environment=MAN8S_DECLARATION_SHA256=sha256:".len() + 64
        );
        line
    };
    declare(root, "web", "[Machine]\nImage=redis\n");
    let first = fingerprint();
    assert_eq!(fingerprint(), first, "same files, same fingerprint");
    declare(root, "web", "[Machine]\nImage=redis:7\n");
    let edited = fingerprint();
    assert_ne!(edited, first);
    let dir = root.join("etc/man8s/machines/web.machine.d");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("10-x.conf"), "[Machine]\nEnvironment=A=1\n").unwrap();
    assert_ne!(fingerprint(), edited);
}
