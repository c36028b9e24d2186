//! Root tier: health checks against a "machine" (a process in fresh namespaces with a private
//! network namespace, see `nsmachine`). tcp/http checks must run in the machine's network
//! namespace — its servers listen on ITS loopback, which the host's loopback does not reach;
//! exec checks run inside the machine.

use std::process::{Command, Output, Stdio};

use man8s_testsupport::require_root;

mod nsmachine;
use nsmachine::{Machine, busybox_tree};

fn health(leader: i32, check: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mbctl"))
        .args([
            "machines",
            "health",
            "web",
            "--leader-pid",
            &leader.to_string(),
        ])
        .args(["--check", check])
        .env("MAN8S_ROOT", "/nonexistent-man8s-root")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn result(o: &Output) -> (i32, String) {
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A free port on the host's loopback (so a check that wrongly ran on the host would fail).
fn free_host_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn root_tcp_and_http_checks_run_in_the_machines_network_namespace() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_tree(&root, true);
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("www/ok"), "fine\n").unwrap();
    let port = free_host_port();
    let m = Machine::start(
        &root,
        &format!(
            "busybox ip link set lo up; busybox httpd -p 127.0.0.1:{port} -h /www; busybox touch /ready; exec busybox sleep 600"
        ),
    );
    // The host's own loopback has nothing on the port.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    let (code, out) = result(&health(m.leader, &format!("http://127.0.0.1:{port}/ok")));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("healthy (HTTP 200)"), "{out}");
    let (code, out) = result(&health(
        m.leader,
        &format!("http://127.0.0.1:{port}/missing"),
    ));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unhealthy (HTTP 404)"), "{out}");
    let (code, out) = result(&health(m.leader, &format!("tcp:{port}")));
    assert_eq!(code, 0, "{out}");
    let (code, out) = result(&health(m.leader, &format!("tcp:{}", port ^ 1)));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused"), "{out}");
}

#[test]
fn root_exec_checks_run_inside_the_machine() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_tree(&root, true);
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .unwrap();
    let m = Machine::start(
        &root,
        "busybox hostname inner; busybox touch /ready; exec busybox sleep 600",
    );
    // Runs in the machine's root (its marker file) and UTS namespace, as root of the machine.
    let (code, out) = result(&health(
        m.leader,
        r#"["CMD", "/bin/busybox", "sh", "-c", "busybox cat /etc/marker; echo $(busybox hostname) $(busybox id -u)"]"#,
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("healthy (inner 0)"), "{out}");
    // CMD-SHELL form, failing: the last line of output is the reason.
    let (code, out) = result(&health(m.leader, "echo first; echo broken >&2; exit 3"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unhealthy (exit 3: broken)"), "{out}");
    // A command the machine does not have.
    let (code, out) = result(&health(m.leader, r#"["CMD", "pg_isready"]"#));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not found"), "{out}");
    assert!(!root.join("ready").metadata().unwrap().is_dir());
}
