//! A root directory and the file-system operations of the unpacker, all resolved inside it.
//!
//! Directories are reached with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` on a descriptor of the
//! root, so `..` and absolute symlinks stop at the root like they would for a process chrooted there. The last
//! component of an entry is then handled with `*at` calls on that directory descriptor with no-follow flags, so
//! it is never resolved at all.

// unsafe: xattr syscalls on directory handles have no safe wrapper in nix.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::path::RelPath;

/// Symlinks followed while creating missing parents before giving up (the kernel's own limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;

/// An open root directory.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    /// Opens `path` (trusted: the caller's own directory) as the root.
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir { fd })
    }

    /// Wraps an open directory (of any `open` flags) as a root.
    pub fn from_fd(fd: OwnedFd) -> RootDir {
        RootDir { fd }
    }

    /// The root's descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Opens `components` (which may include `..` from a symlink target) as an `O_PATH` directory, resolved
    /// inside the root.
    fn resolve_dir(&self, components: &[Vec<u8>]) -> nix::Result<OwnedFd> {
        let mut path = components.join(&b'/');
        if path.is_empty() {
            path.push(b'.');
        }
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, path.as_slice(), how)
    }

    /// Opens directory `dir` resolved inside the root; `None` when it does not exist (or is not a directory).
    pub fn existing_dir(&self, dir: &RelPath) -> io::Result<Option<OwnedFd>> {
        match self.resolve_dir(dir.components()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens directory `dir` resolved inside the root, creating missing directories (mode 0755) on the way.
    ///
    /// A dangling symlink on the way is followed to where it points (inside the root) and that directory is
    /// created, as a container runtime does for `var/run -> /run` when `/run` does not exist yet.
    pub fn dir_creating(&self, dir: &RelPath) -> io::Result<OwnedFd> {
        let mut path: Vec<Vec<u8>> = dir.components().to_vec();
        for _ in 0..MAX_SYMLINK_HOPS {
            match self.resolve_dir(&path) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
            match self.create_missing(&path)? {
                Some(redirected) => path = redirected,
                None => continue,
            }
        }
        Err(Errno::ELOOP.into())
    }

    /// Creates the missing directories of `path`; when one is a dangling symlink returns the path with the
    /// symlink replaced by its target instead.
    fn create_missing(&self, path: &[Vec<u8>]) -> io::Result<Option<Vec<Vec<u8>>>> {
        let mut parent = self.resolve_dir(&[])?;
        for (i, name) in path.iter().enumerate() {
            match self.resolve_dir(&path[..=i]) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
            match fstatat(&parent, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_type(&st, SFlag::S_IFLNK) => {
                    let target = nix::fcntl::readlinkat(&parent, name.as_slice())?;
                    let target = target.as_bytes();
                    let mut redirected: Vec<Vec<u8>> = if target.first() == Some(&b'/') {
                        Vec::new()
                    } else {
                        path[..i].to_vec()
                    };
                    redirected.extend(
                        target
                            .split(|&b| b == b'/')
                            .filter(|c| !c.is_empty() && *c != b".")
                            .map(<[u8]>::to_vec),
                    );
                    redirected.extend(path[i + 1..].iter().cloned());
                    return Ok(Some(redirected));
                }
                Ok(_) => return Err(Errno::ENOTDIR.into()),
                Err(Errno::ENOENT) => {
                    match mkdirat(&parent, name.as_slice(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) => {
                            // 0755 whatever the umask (a service may run with 077): processes in the machine
                            // must be able to traverse directories the image never declared.
                            fchmodat(
                                &parent,
                                name.as_slice(),
                                Mode::from_bits_truncate(0o755),
                                FchmodatFlags::NoFollowSymlink,
                            )
                            .or_else(|e| match e {
                                // Older kernels cannot chmod without following; it is the directory we made.
                                Errno::EOPNOTSUPP => fchmodat(
                                    &parent,
                                    name.as_slice(),
                                    Mode::from_bits_truncate(0o755),
                                    FchmodatFlags::FollowSymlink,
                                ),
                                e => Err(e),
                            })?;
                        }
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // Go on below the new directory (a real one, just made: nothing to resolve), so deep
                    // paths do not count against the symlink hop limit.
                    parent = openat(
                        &parent,
                        name.as_slice(),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

/// Opens directory `name` in `dir` as `O_PATH`, refusing a symlink anywhere (`RESOLVE_NO_SYMLINKS`, `ELOOP`)
/// and staying beneath `dir` (`RESOLVE_BENEATH`): for trees the host owns, where a symlink can only be a plant.
pub fn subdir_no_symlinks(dir: impl AsFd, name: &[u8]) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH);
    openat2(dir, name, how)
}

/// True when `st` is of file type `kind`.
pub fn is_type(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == kind
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub fn lstat_at(dir: impl AsFd, name: &[u8]) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens directory `name` in `dir` for reading, never following a symlink.
pub fn open_subdir(dir: impl AsFd, name: &[u8]) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The names in directory `dir`, freshly opened (without `.` and `..`).
pub fn list_dir(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    // `dir` is freshly opened by the callers, so the shared offset is at the start.
    for entry in nix::dir::Dir::from_fd(dir.try_clone()?)?.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` in `dir` whatever it is (a directory with everything in it); nothing if it does not exist.
/// `unprivileged`: give directories on the way owner permissions first (a layer may have made them read-only).
pub fn remove_all(dir: &impl AsFd, name: &[u8], unprivileged: bool) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if is_type(&st, SFlag::S_IFDIR) {
        if unprivileged && st.st_mode & 0o700 != 0o700 {
            chmod_fd(&open_subdir_path(dir, name)?, 0o700)?;
        }
        let sub = open_subdir(dir, name)?;
        for child in list_dir(&sub)? {
            remove_all(&sub, &child, unprivileged)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// Opens directory `name` in `dir` as `O_PATH` (needs no permission on it), never following a symlink.
pub fn open_subdir_path(dir: impl AsFd, name: &[u8]) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `chmod` of an open file or directory, including an `O_PATH` one (through its `/proc/self/fd` entry,
/// which names exactly that inode).
pub fn chmod_fd(fd: &impl AsFd, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `lsetxattr` on `name` in `dir` without following it (for symlinks, which cannot be opened for `fsetxattr`).
pub fn lsetxattr_at(dir: &impl AsFd, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    let key = std::ffi::CString::new(key).map_err(|_| io::Error::from(Errno::EINVAL))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid slice.
    let rc = unsafe {
        nix::libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fsetxattr` on an open file or directory.
pub fn fsetxattr(fd: &impl AsFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let key = std::ffi::CString::new(key).map_err(|_| io::Error::from(Errno::EINVAL))?;
    // SAFETY: the fd is open, the key NUL-terminated, value a valid slice.
    let rc = unsafe {
        nix::libc::fsetxattr(
            fd.as_fd().as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The largest extended-attribute name list and value the kernel has (`XATTR_LIST_MAX`,
/// `XATTR_SIZE_MAX`): reads are bounded by them.
const XATTR_MAX: usize = 65536;

/// `/proc/self/fd/DIR/NAME` as a C string: `name` in `dir` for the `l*xattr` calls, which do not
/// follow its last component (`name` must be one component).
fn proc_path(dir: &impl AsFd, name: &[u8]) -> io::Result<std::ffi::CString> {
    if name.contains(&b'/') {
        return Err(io::Error::from(Errno::EINVAL));
    }
    let mut path = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    std::ffi::CString::new(path).map_err(|_| io::Error::from(Errno::EINVAL))
}

/// The extended attributes of `name` in `dir` (not followed), names and values, in the order
/// the file system lists them. Bounded by the kernel's own limits.
pub fn lxattrs_at(dir: &impl AsFd, name: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let path = proc_path(dir, name)?;
    let mut list = vec![0u8; XATTR_MAX];
    // SAFETY: NUL-terminated path; the buffer is valid for its length.
    let n = unsafe { nix::libc::llistxattr(path.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // A file system without xattrs has none to copy.
        return if e.raw_os_error() == Some(nix::libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    list.truncate(n as usize);
    let mut out = Vec::new();
    let mut value = vec![0u8; XATTR_MAX];
    for key in list.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let ckey = std::ffi::CString::new(key).map_err(|_| io::Error::from(Errno::EINVAL))?;
        // SAFETY: NUL-terminated strings; the buffer is valid for its length.
        let n = unsafe {
            nix::libc::lgetxattr(
                path.as_ptr(),
                ckey.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            // Removed since the listing: nothing to copy.
            if e.raw_os_error() == Some(nix::libc::ENODATA) {
                continue;
            }
            return Err(e);
        }
        out.push((key.to_vec(), value[..n as usize].to_vec()));
    }
    Ok(out)
}
