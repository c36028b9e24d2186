//! Copy the image's `/run` and `/tmp` back over nspawn's fresh tmpfs mounts.
//!
//! The fetch helper moves them to `/run.man8sprotected` and `/tmp.man8sprotected` (the Python tool
//! did the same, and its `cp -a SRC/. DST` is what this reproduces): a protected dir that is a
//! symlink is followed (inside the machine's root, where the init runs), the destination gets the
//! source's mode and owner, and modes, owners, symlinks (as symlinks), FIFOs, sockets and mtimes
//! are kept. Existing files in the destination are replaced, existing directories merged. Device
//! nodes are skipped (a container cannot create them). An entry that cannot be copied is counted
//! and the copy goes on, as `cp` does; the caller reports it in one line.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

/// What one copy did.
#[derive(Debug, Default)]
pub struct CopyStats {
    /// Directories created or merged.
    pub dirs: u64,
    /// Regular files copied.
    pub files: u64,
    /// Symlinks recreated.
    pub symlinks: u64,
    /// FIFOs recreated.
    pub fifos: u64,
    /// Sockets recreated (as files: nobody listens on them until the app does).
    pub sockets: u64,
    /// Entries skipped (devices, type clashes).
    pub skipped: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Entries that could not be copied.
    pub failed: u64,
    /// The first of those failures.
    pub first_failure: Option<String>,
}

impl std::fmt::Display for CopyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dirs, {} files ({} bytes), {} symlinks",
            self.dirs, self.files, self.bytes, self.symlinks
        )?;
        if self.fifos > 0 {
            write!(f, ", {} fifos", self.fifos)?;
        }
        if self.sockets > 0 {
            write!(f, ", {} sockets", self.sockets)?;
        }
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// An error with the path it happened at.
#[derive(Debug)]
pub struct CopyError {
    /// Where.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for CopyError {}

fn at(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError {
        path: path.to_owned(),
        source,
    }
}

fn set_times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

fn remove_non_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a directory is in the way",
        )),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copy the contents of `src` into `dst` (which must exist) and give `dst` the mode and owner of
/// `src`. `src` missing is not an error: the result is `None`. A symlinked `src` is followed; one
/// that leads to `dst` itself (or around it) is refused.
pub fn copy_contents(src: &Path, dst: &Path) -> Result<Option<CopyStats>, CopyError> {
    let meta = match fs::metadata(src) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            return Err(CopyError {
                path: src.to_owned(),
                source: io::Error::other("not a directory"),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match fs::symlink_metadata(src) {
                Ok(_) => Err(CopyError {
                    path: src.to_owned(),
                    source: io::Error::other("a symlink to nothing"),
                }),
                Err(_) => Ok(None),
            };
        }
        Err(e) => {
            return Err(CopyError {
                path: src.to_owned(),
                source: e,
            });
        }
    };
    let real_src = fs::canonicalize(src).map_err(at(src))?;
    let real_dst = fs::canonicalize(dst).map_err(at(dst))?;
    if real_dst.starts_with(&real_src) || real_src.starts_with(&real_dst) {
        return Err(CopyError {
            path: src.to_owned(),
            source: io::Error::other(format!(
                "leads to {}, which overlaps {}",
                real_src.display(),
                dst.display()
            )),
        });
    }
    let mut stats = CopyStats::default();
    copy_dir(&real_src, dst, &mut stats);
    std::os::unix::fs::chown(dst, Some(meta.uid()), Some(meta.gid())).map_err(at(dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(at(dst))?;
    Ok(Some(stats))
}

fn copy_dir(src: &Path, dst: &Path, stats: &mut CopyStats) {
    let entries = match fs::read_dir(src) {
        Ok(e) => e,
        Err(e) => return stats.fail(at(src)(e)),
    };
    for entry in entries {
        match entry {
            Ok(entry) => {
                let to = dst.join(entry.file_name());
                if let Err(e) = copy_entry(&entry.path(), &to, stats) {
                    stats.fail(e);
                }
            }
            Err(e) => stats.fail(at(src)(e)),
        }
    }
}

impl CopyStats {
    fn fail(&mut self, e: CopyError) {
        self.failed += 1;
        self.first_failure.get_or_insert_with(|| e.to_string());
    }
}

fn copy_entry(from: &Path, to: &Path, stats: &mut CopyStats) -> Result<(), CopyError> {
    let meta = fs::symlink_metadata(from).map_err(at(from))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        match fs::symlink_metadata(to) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                stats.skipped += 1;
                return Ok(());
            }
            Err(_) => fs::create_dir(to).map_err(at(to))?,
        }
        copy_dir(from, to, stats);
        std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(at(to))?;
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(at(to))?;
        set_times(to, &meta).map_err(at(to))?;
        stats.dirs += 1;
        return Ok(());
    }
    if ft.is_block_device() || ft.is_char_device() {
        stats.skipped += 1;
        return Ok(());
    }
    if remove_non_dir(to).is_err() {
        stats.skipped += 1;
        return Ok(());
    }
    if ft.is_symlink() {
        let target = fs::read_link(from).map_err(at(from))?;
        std::os::unix::fs::symlink(&target, to).map_err(at(to))?;
        stats.symlinks += 1;
    } else if ft.is_fifo() || ft.is_socket() {
        use nix::sys::stat::{Mode, SFlag, mknod};
        let kind = if ft.is_fifo() {
            SFlag::S_IFIFO
        } else {
            SFlag::S_IFSOCK
        };
        mknod(to, kind, Mode::from_bits_truncate(0o600), 0).map_err(|e| at(to)(e.into()))?;
        if ft.is_fifo() {
            stats.fifos += 1;
        } else {
            stats.sockets += 1;
        }
    } else {
        stats.bytes += fs::copy(from, to).map_err(at(to))?;
        stats.files += 1;
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(at(to))?;
    if !ft.is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(at(to))?;
    }
    set_times(to, &meta).map_err(at(to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_tree_keeping_metadata() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("sub/file"), b"hello").unwrap();
        fs::set_permissions(src.join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::symlink("../elsewhere", src.join("link")).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        fs::set_permissions(src.join("fifo"), fs::Permissions::from_mode(0o620)).unwrap();
        let old = TimeSpec::new(1_000_000, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &src.join("sub/file"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        // Something already in the destination: merged dir, replaced file.
        fs::create_dir(dst.join("sub")).unwrap();
        fs::write(dst.join("sub/file"), b"old content that is longer").unwrap();
        fs::write(dst.join("keep"), b"nspawn's").unwrap();

        let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
        drop(sock);
        fs::set_permissions(&src, fs::Permissions::from_mode(0o1777)).unwrap();
        let stats = copy_contents(&src, &dst).unwrap().unwrap();
        assert_eq!(stats.failed, 0, "{:?}", stats.first_failure);
        assert_eq!(stats.sockets, 1);
        assert!(
            fs::symlink_metadata(dst.join("sock"))
                .unwrap()
                .file_type()
                .is_socket()
        );
        assert_eq!(
            fs::metadata(&dst).unwrap().mode() & 0o7777,
            0o1777,
            "dst gets src's mode"
        );
        assert_eq!(
            (
                stats.dirs,
                stats.files,
                stats.symlinks,
                stats.fifos,
                stats.bytes
            ),
            (2, 1, 1, 1, 5)
        );
        assert_eq!(fs::read(dst.join("sub/file")).unwrap(), b"hello");
        let m = fs::metadata(dst.join("sub/file")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(m.mtime(), 1_000_000);
        assert_eq!(
            fs::metadata(dst.join("sub")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("../elsewhere")
        );
        assert!(
            fs::symlink_metadata(dst.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(
            fs::symlink_metadata(dst.join("fifo")).unwrap().mode() & 0o777,
            0o620
        );
        assert!(dst.join("sub/deeper").is_dir());
        assert_eq!(fs::read(dst.join("keep")).unwrap(), b"nspawn's");
        assert!(
            stats
                .to_string()
                .starts_with("2 dirs, 1 files (5 bytes), 1 symlinks")
        );
    }

    #[test]
    fn symlinked_source_is_followed_and_loops_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        let dst = t.path().join("dst");
        fs::create_dir_all(real.join("d")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(real.join("d/f"), b"x").unwrap();
        std::os::unix::fs::symlink("real", t.path().join("prot")).unwrap();
        let stats = copy_contents(&t.path().join("prot"), &dst)
            .unwrap()
            .unwrap();
        assert_eq!((stats.files, stats.failed), (1, 0));
        assert_eq!(fs::read(dst.join("d/f")).unwrap(), b"x");
        std::os::unix::fs::symlink("dst", t.path().join("loop")).unwrap();
        let e = copy_contents(&t.path().join("loop"), &dst).unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        std::os::unix::fs::symlink("absent", t.path().join("dangling")).unwrap();
        assert!(copy_contents(&t.path().join("dangling"), &dst).is_err());
    }

    #[test]
    fn an_entry_that_cannot_be_copied_is_counted_and_the_rest_copied() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        fs::create_dir_all(src.join("a")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("a/ok"), b"1").unwrap();
        fs::write(src.join("z"), b"2").unwrap();
        // A file in the way of a directory of the same name: skipped, the rest copied.
        fs::write(dst.join("a"), b"in the way").unwrap();
        let stats = copy_contents(&src, &dst).unwrap().unwrap();
        assert_eq!(stats.skipped, 1);
        assert_eq!(fs::read(dst.join("z")).unwrap(), b"2");
        // A directory that cannot be read is a counted failure, not an abort.
        let mut failing = CopyStats::default();
        copy_dir(&t.path().join("absent"), &dst, &mut failing);
        assert_eq!(failing.failed, 1);
        assert!(failing.first_failure.unwrap().contains("absent"));
    }

    #[test]
    fn missing_source_is_none() {
        let t = tempfile::tempdir().unwrap();
        assert!(
            copy_contents(&t.path().join("absent"), t.path())
                .unwrap()
                .is_none()
        );
        fs::write(t.path().join("file"), b"").unwrap();
        assert!(copy_contents(&t.path().join("file"), t.path()).is_err());
    }
}
