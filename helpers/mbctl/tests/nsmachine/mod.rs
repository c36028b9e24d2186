//! A stand-in for a running machine in root-tier tests: a process that `unshare` put in new
//! user/mount/pid/net/uts/ipc/cgroup namespaces, chrooted into a busybox tree.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process in fresh namespaces with `root` as its root; killed on drop.
pub struct Machine {
    unshare: Child,
    /// PID 1 of its PID namespace.
    pub leader: i32,
}

impl Machine {
    /// Start `init` (a busybox sh script that touches /ready when set up) in `root`.
    pub fn start(root: &Path, init: &str) -> Self {
        let unshare = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "--pid",
                "--fork",
                "--net",
                "--uts",
                "--ipc",
                "--cgroup",
                "--mount-proc",
            ])
            .arg(format!("--root={}", root.display()))
            .args(["/bin/busybox", "sh", "-c", init])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        // The leader is unshare's forked child (PID 1 of the new PID namespace).
        let deadline = Instant::now() + Duration::from_secs(10);
        let leader = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                let pid: i32 = pid.parse().unwrap();
                // Wait until it has its hostname set (the init script's first step is done).
                if std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == root)
                    && root.join("ready").exists()
                {
                    break pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "namespaced process did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { unshare, leader }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.leader),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// A root with a static busybox (and `/bin/sh` when `with_shell`).
pub fn busybox_tree(dir: &Path, with_shell: bool) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    if with_shell {
        std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    }
    for d in ["proc", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/marker"), "inside the machine\n").unwrap();
}
