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
    let fetch = libexec.join("man8s-fetch");
    fs::write(&fetch, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&fetch, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let template =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../units/man8@.service"))
            .unwrap();
    fs::write(
        units.join("man8@.service"),
        template.replace("@LIBEXECDIR@", &libexec.to_string_lossy()),
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
