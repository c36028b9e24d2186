//! Root tier: `mbctl machines exec` runs argv (no shell) inside a running "machine" (a process
//! in fresh namespaces with a busybox root), in the image's working directory, with its
//! environment, the app's capabilities and the program's exit status. `--leader-pid` stands in
//! for machined's answer; `MAN8S_ROOT` holds the declaration and the host-owned image config.
//! The stand-in maps only its root (unshare --map-root-user), so switching to the image's
//! non-root user is checked by the system tier (14-image-corpus) on a real nspawn machine.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use man8s_testsupport::require_root;

mod nsmachine;
use nsmachine::{Machine, busybox_tree};

fn exec(tree: &Path, leader: i32, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mbctl"))
        .args(["machines", "exec", "--leader-pid", &leader.to_string()])
        .args(args)
        .env("MAN8S_ROOT", tree)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn root_exec_runs_argv_with_the_apps_settings() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let paths = man8s::Paths::new(&tree);
    let name = man8s::MachineName::new("app").unwrap();
    let root = dir.path().join("root");
    busybox_tree(&root, true);
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnode:x:1000:\n").unwrap();
    std::fs::create_dir_all(root.join("home/node/app")).unwrap();

    // The declaration and the image config as the host keeps them.
    let decl = paths.fs("/etc/man8s/machines");
    std::fs::create_dir_all(&decl).unwrap();
    std::fs::write(
        decl.join("app.machine"),
        "[Machine]\nImage=example/app\nEnvironment=FROM_DECL=yes\n",
    )
    .unwrap();
    let image = paths
        .state_dir(&name)
        .join(man8s::paths::IMAGE_STATE_SUBDIR);
    std::fs::create_dir_all(&image).unwrap();
    std::fs::write(
        image.join("image.json"),
        r#"{"config":{"Env":["PATH=/bin","FROM_IMAGE=yes"],"User":"root","WorkingDir":"/home/node/app"}}"#,
    )
    .unwrap();

    let m = Machine::start(
        &root,
        "busybox hostname inner; busybox touch /ready; exec busybox sleep 600",
    );

    // argv arrives as given (no shell: the quotes and `$HOME` stay); the image's User and
    // WorkingDir, its Env and the declaration's Environment= apply.
    let o = exec(
        &tree,
        m.leader,
        &["app", "--", "busybox", "echo", "a  b", "$HOME"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "a  b $HOME\n");
    let o = exec(
        &tree,
        m.leader,
        &[
            "app",
            "--",
            "busybox",
            "sh",
            "-c",
            "busybox id; busybox pwd; busybox env",
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("uid=0(root) gid=0(root)"), "{out}");
    assert!(out.contains("/home/node/app\n"), "{out}");
    for var in ["FROM_IMAGE=yes", "FROM_DECL=yes", "HOME=/root", "PATH=/bin"] {
        assert!(out.contains(var), "{var}: {out}");
    }
    // Docker's capability set: the app's root has no CAP_SYS_ADMIN (bit 21) in its bounding set.
    let o = exec(
        &tree,
        m.leader,
        &[
            "-u",
            "0",
            "-w",
            "/",
            "-e",
            "X=1",
            "app",
            "busybox",
            "sh",
            "-c",
            "busybox grep CapBnd /proc/self/status; echo X=$X; busybox id -u; busybox pwd",
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let bnd = out
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    let bnd = u64::from_str_radix(bnd, 16).unwrap();
    assert_eq!(bnd & (1 << 21), 0, "CAP_SYS_ADMIN kept: {out}");
    assert_ne!(bnd & (1 << 6), 0, "CAP_SETGID lost: {out}");
    assert!(out.contains("X=1\n0\n/\n"), "{out}");

    // Exit statuses come through; what cannot run is 126 or 127, as docker exec.
    assert_eq!(
        exec(
            &tree,
            m.leader,
            &["app", "--", "busybox", "sh", "-c", "exit 7"]
        )
        .status
        .code(),
        Some(7)
    );
    let o = exec(&tree, m.leader, &["app", "--", "nosuchprogram"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o));
    assert!(
        text(&o).contains("\"nosuchprogram\" not found in PATH=/bin"),
        "{}",
        text(&o)
    );
    let o = exec(
        &tree,
        m.leader,
        &["-u", "nobody", "app", "--", "busybox", "true"],
    );
    assert_eq!(o.status.code(), Some(126), "{}", text(&o));
    assert!(text(&o).contains("user \"nobody\""), "{}", text(&o));
    let o = exec(
        &tree,
        m.leader,
        &["-w", "/nonexistent", "app", "--", "busybox", "true"],
    );
    assert_eq!(o.status.code(), Some(126), "{}", text(&o));
    assert!(
        text(&o).contains("cannot change to /nonexistent"),
        "{}",
        text(&o)
    );
}
