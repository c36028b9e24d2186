//! A canary tree outside the root a hostile input aims at, and its snapshot: a test takes one
//! before and one after and asserts they are equal, so any write, chown or chmod through a
//! symlink out of the root shows.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A canary directory with an `etc/systemd/system` and an `etc/passwd`, as the host's own.
pub struct Canary {
    dir: tempfile::TempDir,
}

impl Default for Canary {
    fn default() -> Self {
        Self::new()
    }
}

impl Canary {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/systemd/system")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every path below the canary with its mode, owner and (for files) content, sorted.
    pub fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![self.path().to_owned()];
        while let Some(p) = todo.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            } else {
                String::new()
            };
            out.push(format!(
                "{} {:o} {}:{} {content}",
                p.display(),
                m.mode(),
                m.uid(),
                m.gid()
            ));
            if m.is_dir() {
                for e in std::fs::read_dir(&p).unwrap() {
                    todo.push(e.unwrap().path());
                }
            }
        }
        out.sort();
        out
    }
}
