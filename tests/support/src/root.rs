//! A relocated root (`MAN8S_ROOT`) that root-tier tests run man8s binaries in, and the checks
//! they make of those runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory that stands in for `/`: every man8s binary run through
/// [`Root::command`] reads and writes below it.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// An empty root. Fails (not skips) when the test is not run as root.
    #[allow(clippy::new_without_default)] // a root-tier fixture, not a value
    pub fn new() -> Self {
        crate::require_root();
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the canonical path `canonical` (`/etc/…`) is in this root.
    pub fn at(&self, canonical: &str) -> PathBuf {
        self.path().join(canonical.trim_start_matches('/'))
    }

    /// Write the declaration `/etc/man8s/machines/NAME.machine`.
    pub fn declare(&self, name: &str, text: &str) {
        let dir = self.at("/etc/man8s/machines");
        std::fs::create_dir_all(&dir).expect("declaration dir");
        std::fs::write(dir.join(format!("{name}.machine")), text).expect("write declaration");
    }

    /// `binary` relocated to this root, without backtraces, and without the test runner's
    /// `NOTIFY_SOCKET` (a binary under test must not talk to the real systemd).
    pub fn command(&self, binary: &str) -> Command {
        let mut c = Command::new(binary);
        c.env("MAN8S_ROOT", self.path())
            .env("RUST_BACKTRACE", "0")
            .env_remove("NOTIFY_SOCKET");
        c
    }
}

/// The stdout of a run that must have succeeded; otherwise panic with its exit code and both
/// streams.
pub fn stdout_of_success(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stderr of a run, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run `script` with `sh -ec`; it must succeed (panics with its stderr otherwise).
pub fn sh(script: &str) -> Output {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A file system image (`btrfs`, `ext4`) loop-mounted in a scratch dir under /var/tmp, for
/// tests of what depends on the file system (snapshots, quotas); unmounted when dropped.
pub struct LoopFs {
    _dir: tempfile::TempDir,
    /// Where it is mounted.
    pub mnt: PathBuf,
}

impl LoopFs {
    /// A fresh 256 MiB file system of `kind` (made by `mkfs.KIND`). Fails when not root.
    pub fn new(kind: &str) -> LoopFs {
        crate::require_root();
        let dir = tempfile::Builder::new()
            .prefix(&format!("man8s-{kind}."))
            .tempdir_in("/var/tmp")
            .expect("scratch dir in /var/tmp");
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let quiet = if kind == "ext4" { "-qF" } else { "-q" };
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run");
            assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
        };
        run(Command::new("truncate").arg("-s").arg("256M").arg(&img));
        run(Command::new(format!("mkfs.{kind}")).arg(quiet).arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        LoopFs { _dir: dir, mnt }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}
