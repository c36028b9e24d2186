//! Copy the image's `/run` and `/tmp` back over nspawn's fresh tmpfs mounts.
//!
//! The fetch helper moves them to `/run.man8sprotected` and `/tmp.man8sprotected`. Modes, owners,
//! symlinks (as symlinks), FIFOs and mtimes are kept. Existing files in the destination are
//! replaced, existing directories merged. Device nodes and sockets are skipped (a container cannot
//! create device nodes, and a socket file without its listener is dead anyway).

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

/// What one copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Directories created or merged.
    pub dirs: u64,
    /// Regular files copied.
    pub files: u64,
    /// Symlinks recreated.
    pub symlinks: u64,
    /// FIFOs recreated.
    pub fifos: u64,
    /// Entries skipped (devices, sockets, type clashes).
    pub skipped: u64,
    /// Bytes of file content.
    pub bytes: u64,
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

/// Copy the contents of `src` into `dst` (which must exist). `src` missing is not an error: the
/// result is `None`.
pub fn copy_contents(src: &Path, dst: &Path) -> Result<Option<CopyStats>, CopyError> {
    match fs::symlink_metadata(src) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CopyError {
                path: src.to_owned(),
                source: io::Error::other("not a directory"),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CopyError {
                path: src.to_owned(),
                source: e,
            });
        }
    }
    let mut stats = CopyStats::default();
    copy_dir(src, dst, &mut stats)?;
    Ok(Some(stats))
}

fn copy_dir(src: &Path, dst: &Path, stats: &mut CopyStats) -> Result<(), CopyError> {
    for entry in fs::read_dir(src).map_err(at(src))? {
        let entry = entry.map_err(at(src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(at(&from))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            match fs::symlink_metadata(&to) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    stats.skipped += 1;
                    continue;
                }
                Err(_) => fs::create_dir(&to).map_err(at(&to))?,
            }
            copy_dir(&from, &to, stats)?;
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid())).map_err(at(&to))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(at(&to))?;
            set_times(&to, &meta).map_err(at(&to))?;
            stats.dirs += 1;
            continue;
        }
        if ft.is_block_device() || ft.is_char_device() || ft.is_socket() {
            stats.skipped += 1;
            continue;
        }
        if remove_non_dir(&to).is_err() {
            stats.skipped += 1;
            continue;
        }
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(at(&from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(at(&to))?;
            stats.symlinks += 1;
        } else if ft.is_fifo() {
            nix::unistd::mkfifo(&to, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| at(&to)(e.into()))?;
            stats.fifos += 1;
        } else {
            stats.bytes += fs::copy(&from, &to).map_err(at(&to))?;
            stats.files += 1;
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid())).map_err(at(&to))?;
        if !ft.is_symlink() {
            // After chown, which clears set-id bits.
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(at(&to))?;
        }
        set_times(&to, &meta).map_err(at(&to))?;
    }
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

        let stats = copy_contents(&src, &dst).unwrap().unwrap();
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
