//! Disk usage of trees a machine may write (its writable layer, copy, volumes): allocated
//! blocks (`st_blocks`), never following a symlink (every step is an `openat` with
//! `O_NOFOLLOW`, so a machine swapping a directory for a link cannot send the walk elsewhere),
//! staying on the tree's file system, each inode counted once however many hard links it has,
//! and bounded in entries and depth (a hostile tree makes the answer a lower bound, never slow).

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};

/// Entries one [`Walker`] looks at before it stops (the answer is then a lower bound).
pub const MAX_ENTRIES: u64 = 2_000_000;
/// Directory depth below a tree's top the walk descends to (one open fd per level).
pub const MAX_DEPTH: usize = 256;

/// Bytes on disk, and whether a bound cut the walk short (then `bytes` is a lower bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Allocated bytes (512-byte blocks × 512).
    pub bytes: u64,
    /// A bound ([`MAX_ENTRIES`], [`MAX_DEPTH`]) or an unreadable directory cut the walk short.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            bytes: self.bytes + o.bytes,
            partial: self.partial || o.partial,
        }
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(it: I) -> Usage {
        it.fold(Usage::default(), |a, b| a + b)
    }
}

/// Measures trees; inodes seen by one walker (hard links, within and across its trees) count
/// once.
#[derive(Default)]
pub struct Walker {
    seen: HashSet<(u64, u64)>,
    entries: u64,
}

impl Walker {
    /// A walker with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Usage of the tree at `top` (a missing tree is 0; a symlink at `top` is not followed).
    pub fn tree(&mut self, top: &Path) -> Usage {
        let Ok(dir) = Dir::open(top, dir_flags(), Mode::empty()) else {
            // Missing, or not a directory (a file is measured as itself).
            return match nix::sys::stat::lstat(top) {
                Ok(st) if kind(&st) != SFlag::S_IFDIR => Usage {
                    bytes: self.count(&st),
                    partial: false,
                },
                Ok(_) => Usage {
                    bytes: 0,
                    partial: true,
                },
                Err(_) => Usage::default(),
            };
        };
        let Ok(st) = nix::sys::stat::fstat(dir.as_fd()) else {
            return Usage {
                bytes: 0,
                partial: true,
            };
        };
        let mut u = Usage {
            bytes: self.count(&st),
            partial: false,
        };
        self.walk(dir, st.st_dev, 0, &mut u);
        u
    }

    /// Bytes of `st`, 0 when its inode was counted already.
    fn count(&mut self, st: &FileStat) -> u64 {
        let dir = kind(st) == SFlag::S_IFDIR;
        if !dir && st.st_nlink > 1 && !self.seen.insert((st.st_dev, st.st_ino)) {
            return 0;
        }
        u64::try_from(st.st_blocks).unwrap_or(0) * 512
    }

    fn walk(&mut self, mut dir: Dir, dev: u64, depth: usize, u: &mut Usage) {
        let mut names: Vec<std::ffi::CString> = Vec::new();
        for e in dir.iter() {
            let Ok(e) = e else {
                u.partial = true;
                break;
            };
            let name = e.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                u.partial = true;
                break;
            }
            names.push(name.to_owned());
        }
        let mut subdirs = Vec::new();
        for name in names {
            let Ok(st) = stat_at(&dir, &name) else {
                continue; // gone meanwhile
            };
            u.bytes += self.count(&st);
            if kind(&st) == SFlag::S_IFDIR && st.st_dev == dev {
                subdirs.push(name);
            }
        }
        for name in subdirs {
            if depth + 1 > MAX_DEPTH || self.entries > MAX_ENTRIES {
                u.partial = true;
                return;
            }
            match Dir::openat(dir.as_fd(), name.as_c_str(), dir_flags(), Mode::empty()) {
                Ok(sub) => self.walk(sub, dev, depth + 1, u),
                // Swapped for a symlink or file since (O_NOFOLLOW), or unreadable.
                Err(_) => u.partial = true,
            }
        }
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn stat_at(dir: &Dir, name: &CStr) -> nix::Result<FileStat> {
    fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// `12 KiB`, `3.4 MiB`, `1.2 GiB` (binary units; a `≥` in front of a lower bound).
pub fn human(u: Usage) -> String {
    let b = u.bytes;
    let n = if b < 1 << 20 {
        format!("{} KiB", b.div_ceil(1024))
    } else if b < 1 << 30 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} GiB", b as f64 / f64::from(1 << 30))
    };
    if u.partial { format!("≥{n}") } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn write_mib(path: &Path, mib: usize) {
        let mut f = fs::File::create(path).unwrap();
        // Not zeros: some file systems would not allocate them.
        let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
        for _ in 0..mib {
            f.write_all(&block).unwrap();
        }
        f.sync_all().unwrap();
    }

    #[test]
    fn counts_allocated_blocks_and_hard_links_once() {
        let t = tempfile::tempdir().unwrap();
        let base = Walker::new().tree(t.path()).bytes;
        write_mib(&t.path().join("a"), 10);
        let mut w = Walker::new();
        let one = w.tree(t.path());
        assert!(!one.partial);
        let grew = one.bytes - base;
        assert!(
            (10 << 20..(10 << 20) + (1 << 20)).contains(&grew),
            "10 MiB written, {grew} bytes counted"
        );
        fs::create_dir(t.path().join("sub")).unwrap();
        fs::hard_link(t.path().join("a"), t.path().join("sub/link")).unwrap();
        let linked = Walker::new().tree(t.path()).bytes;
        assert!(linked - one.bytes < 1 << 20, "a hard link counted twice");
        // A second tree with the same inode, through the same walker: counted once overall.
        let other = tempfile::tempdir_in(t.path().parent().unwrap()).unwrap();
        fs::hard_link(t.path().join("a"), other.path().join("b")).unwrap();
        let mut w = Walker::new();
        let both = w.tree(t.path()) + w.tree(other.path());
        assert!(
            both.bytes - linked < 1 << 20,
            "a hard link across trees counted twice"
        );
    }

    #[test]
    fn never_follows_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let big = tempfile::tempdir().unwrap();
        write_mib(&big.path().join("x"), 4);
        std::os::unix::fs::symlink(big.path(), t.path().join("link")).unwrap();
        std::os::unix::fs::symlink(big.path().join("x"), t.path().join("flink")).unwrap();
        let u = Walker::new().tree(t.path());
        assert!(u.bytes < 1 << 20, "followed a symlink: {u:?}");
        // A symlink as the top itself is not followed either.
        let u = Walker::new().tree(&t.path().join("link"));
        assert!(u.bytes < 1 << 20, "followed the top symlink: {u:?}");
    }

    #[test]
    fn missing_tree_is_zero_and_a_file_is_itself() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(Walker::new().tree(&t.path().join("nope")), Usage::default());
        write_mib(&t.path().join("f"), 1);
        let u = Walker::new().tree(&t.path().join("f"));
        assert!(u.bytes >= 1 << 20 && !u.partial, "{u:?}");
    }

    #[test]
    fn depth_bound_gives_a_lower_bound() {
        let t = tempfile::tempdir().unwrap();
        let mut p = t.path().to_path_buf();
        for _ in 0..MAX_DEPTH + 3 {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        let u = Walker::new().tree(t.path());
        assert!(u.partial, "{u:?}");
        assert!(human(u).starts_with('≥'));
    }

    #[test]
    fn human_units() {
        let u = |bytes| Usage {
            bytes,
            partial: false,
        };
        assert_eq!(human(u(0)), "0 KiB");
        assert_eq!(human(u(4096)), "4 KiB");
        assert_eq!(human(u(10 << 20)), "10.0 MiB");
        assert_eq!(human(u(3 << 30)), "3.0 GiB");
    }
}
