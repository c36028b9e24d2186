//! Unpacking OCI layers into a root file system, never writing outside it.
//!
//! [`apply_layer`] applies one already-decompressed layer tar stream onto a root directory, the way a container
//! runtime (or `umoci unpack`) does: layers are applied in order onto the same root, whiteouts (`.wh.NAME`) delete
//! lower-layer content, opaque markers (`.wh..wh..opq`) empty a directory of lower-layer content, and every path
//! is resolved by the kernel *inside* the root (`openat2` with `RESOLVE_IN_ROOT`), so absolute and relative
//! symlinks in the image are followed as if the root were `/` and nothing can be written outside it.
//!
//! What is refused (an [`UnpackError::Refused`] naming the entry, before anything of it is written): `..`
//! components, absolute paths, NUL bytes in names, entries other than a directory naming the root itself,
//! whiteouts naming nothing, `.` or `..`, hard links whose target is missing inside the root, a directory, or
//! a symlink climbing out of the root, device nodes when device creation is off, files over
//! [`UnpackOptions::max_file_size`], PAX sparse files and unknown entry types. Tar metadata entries over
//! [`UnpackOptions::max_metadata_size`] end the stream with [`UnpackError::Tar`]. Writing *through* a symlink
//! is not refused: like a container runtime, the symlink is followed inside the root (`esc -> ../../..` then
//! `esc/x` writes `ROOT/x`), and magic links (`/proc/self/root`) are never followed.
//!
//! Metadata: numeric uid/gid (PAX ones too), modes with setuid/setgid/sticky applied after the owner, xattrs
//! from `SCHILY.xattr.*` (those Linux refuses here are counted in [`LayerStats::xattrs_skipped`]), mtimes with
//! PAX nanoseconds; directory modes and times are applied when the layer is complete, and lower-layer
//! directories the layer changes without declaring them keep their times (as umoci does).

mod limit;
mod path;
pub mod rootdir;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, futimens, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};

pub use path::{EntryRole, RelPath, classify, parse_entry_path};
use rootdir::{RootDir, fsetxattr, is_type, lsetxattr_at, lstat_at, open_subdir, remove_all};

/// How a layer is applied.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Apply the numeric uid/gid of each entry (needs root); when false, everything is owned by the caller.
    /// Default: true when the effective uid is 0.
    pub preserve_ownership: bool,
    /// Create character and block device nodes (needs root); when false they are refused.
    /// Default: true when the effective uid is 0.
    pub create_devices: bool,
    /// Largest regular file accepted, in bytes; bigger entries are refused before anything is written.
    pub max_file_size: u64,
    /// Largest tar metadata entry (GNU long name/link, PAX header) accepted, in bytes: those are read into
    /// memory, so this bounds what a hostile layer can make us allocate.
    pub max_metadata_size: u64,
    /// Most bytes of file data this layer may write in all (the installer passes what is left of the
    /// image's `MaxUnpackedSize=`). A GNU sparse file counts by its full size, which is what it occupies.
    pub max_total_size: u64,
    /// Unpack a layer alone, for overlayfs (the layer store): whiteouts become 0:0 character devices and
    /// opaque markers the `trusted.overlay.opaque` xattr, instead of deleting lower content; the layer's own
    /// `trusted.overlay.*`/`user.overlay.*` xattrs are dropped (counted as skipped), so no image can steer
    /// overlayfs (redirects, metacopy) with them.
    pub overlay: bool,
}

/// The xattr that marks a directory opaque for overlayfs.
pub const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

impl Default for UnpackOptions {
    fn default() -> Self {
        let root = nix::unistd::geteuid().is_root();
        UnpackOptions {
            preserve_ownership: root,
            create_devices: root,
            max_file_size: 64 << 30,
            max_metadata_size: 1 << 20,
            max_total_size: u64::MAX,
            overlay: false,
        }
    }
}

/// What applying one layer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries applied (including whiteouts and opaque markers).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Extended attributes not set: unsupported by the file system, or needing privilege we do not have.
    pub xattrs_skipped: u64,
}

/// Why a layer could not be applied. Every variant names the entry (its path as written in the tar).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The root directory could not be opened.
    #[error("cannot open unpack root {root}: {source}")]
    Root {
        /// The root given to [`apply_layer`].
        root: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The tar stream itself is broken (truncated, bad header).
    #[error("reading layer tar stream{}: {source}", after_entry(.after))]
    Tar {
        /// The last entry read successfully, if any.
        after: Option<String>,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The entry is hostile or unsupported and was refused before anything of it was written.
    #[error("layer entry {path:?} refused: {reason}")]
    Refused {
        /// The entry path as written in the tar.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A hard link whose target is not in the root. Apart from a hostile link, this is a layer
    /// unpacked alone (the layer store) that links to a file of a lower layer.
    #[error(
        "layer entry {path:?} refused: hard link target {target:?} does not exist inside the root"
    )]
    MissingLinkTarget {
        /// The entry path as written in the tar.
        path: String,
        /// The link target as written in the tar.
        target: String,
    },
    /// A file-system operation for the entry failed.
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        /// The entry path as written in the tar.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Applies one decompressed layer tar stream onto `root` (which must exist and be a directory).
///
/// Layers must be applied in order; the function is streaming (no file is held in memory) and refuses hostile
/// entries with [`UnpackError::Refused`], never writing outside `root`. On error the root holds a partly
/// applied layer: callers unpack into a scratch directory and discard it on failure. On success the stream
/// has been read to its end (past the end-of-archive blocks).
pub fn apply_layer(
    root: &Path,
    layer: &mut dyn Read,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let root_dir = RootDir::open(root).map_err(|source| UnpackError::Root {
        root: root.to_owned(),
        source,
    })?;
    let mut unpacker = Unpacker {
        root: root_dir,
        opts,
        written: HashSet::new(),
        written_ancestors: HashSet::new(),
        path_hasher: std::hash::RandomState::new(),
        deferred_dirs: Vec::new(),
        unprivileged: !nix::unistd::geteuid().is_root(),
        restore_modes: HashMap::new(),
        touched_dirs: HashMap::new(),
        parent_cache: None,
        buf: vec![0; COPY_BUFFER],
        stats: LayerStats::default(),
    };
    let mut archive = tar::Archive::new(limit::MetadataLimit::new(layer, opts.max_metadata_size));
    let entries = archive.entries().map_err(|source| UnpackError::Tar {
        after: None,
        source,
    })?;
    let mut last: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|source| UnpackError::Tar {
            after: last.clone(),
            source,
        })?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        unpacker.apply_entry(&mut entry, &name)?;
        unpacker.stats.entries += 1;
        last = Some(name);
    }
    unpacker.finish_dirs()?;
    // Read what follows the end-of-archive blocks too, so that a digest computed by a reader wrapped around
    // `layer` (diff_id check) covers the whole stream.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|source| {
        UnpackError::Tar {
            after: last,
            source,
        }
    })?;
    Ok(unpacker.stats)
}

/// Read/write buffer for file contents: large enough that syscalls do not dominate.
const COPY_BUFFER: usize = 256 * 1024;

/// Metadata of one entry, gathered from the header and its PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory of this layer whose mode and mtime are applied once the layer is complete (creating entries in
/// it would change its mtime, and a read-only mode would stop an unprivileged unpack from filling it).
struct DeferredDir {
    path: RelPath,
    name: String,
    dev: u64,
    ino: u64,
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
}

/// A directory whose entries a layer changed, and its times before.
struct TouchedDir {
    path: RelPath,
    atime: TimeSpec,
    mtime: TimeSpec,
}

struct Unpacker<'a> {
    root: RootDir,
    opts: &'a UnpackOptions,
    /// Paths of this layer's entries: whiteouts and opaque markers only hide lower layers, never these.
    /// Kept as 64-bit keyed hashes of the joined path (8 bytes an entry, whatever the path length, for layers
    /// of hundreds of thousands of files); the random key makes a crafted collision impossible.
    written: HashSet<u64>,
    /// Ancestors of `written` paths (kept by an opaque marker, but emptied of lower content).
    written_ancestors: HashSet<u64>,
    path_hasher: std::hash::RandomState,
    deferred_dirs: Vec<DeferredDir>,
    /// Not root: directories of lower layers without owner write/search permission are opened up while the
    /// layer needs them (root needs no permission); their modes are restored in `finish_dirs`.
    unprivileged: bool,
    restore_modes: HashMap<(u64, u64), (OwnedFd, u32)>,
    /// Directories whose entries this layer changed, by (dev, inode), with their times before.
    touched_dirs: HashMap<(u64, u64), TouchedDir>,
    /// The last parent directory resolved (see `parent_dir`).
    parent_cache: Option<(RelPath, Rc<OwnedFd>)>,
    buf: Vec<u8>,
    stats: LayerStats,
}

impl Unpacker<'_> {
    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<(), UnpackError> {
        let refused = |reason: String| UnpackError::Refused {
            path: name.to_owned(),
            reason,
        };
        let path = parse_entry_path(&entry.path_bytes()).map_err(refused)?;
        match classify(&path).map_err(refused)? {
            EntryRole::Opaque { dir } => {
                self.stats.whiteouts += 1;
                return self
                    .opaque(&dir)
                    .map_err(io_err(name, "emptying opaque directory"));
            }
            EntryRole::Whiteout { target } => {
                self.stats.whiteouts += 1;
                return self
                    .whiteout(&target)
                    .map_err(io_err(name, "deleting whited-out path"));
            }
            EntryRole::AufsMeta => return Ok(()),
            EntryRole::Normal => {}
        }
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        let meta = read_meta(entry).map_err(|reason| UnpackError::Refused {
            path: name.to_owned(),
            reason,
        })?;
        let Some((parent, file_name)) = path.split_last() else {
            // `./` as written by `tar -C dir .`: the root's own metadata.
            if kind != tar::EntryType::Directory {
                return Err(refused(format!(
                    "a {kind:?} entry cannot replace the root directory"
                )));
            }
            let fd = self
                .root
                .existing_dir(&path)
                .map_err(io_err(name, "opening root"))?;
            let fd = fd.ok_or_else(|| refused("root directory vanished".into()))?;
            let fd = open_subdir(&fd, b".").map_err(|e| io_err(name, "opening root")(e.into()))?;
            return self.directory_meta(&fd, path.clone(), name, &meta);
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                if size > self.opts.max_file_size {
                    return Err(refused(format!(
                        "file of {size} bytes exceeds the limit of {} bytes",
                        self.opts.max_file_size
                    )));
                }
                if self.stats.bytes.saturating_add(size) > self.opts.max_total_size {
                    return Err(refused(format!(
                        "file of {size} bytes takes the image past its unpacked size limit \
                         (MaxUnpackedSize= in /etc/man8s/man8s.conf)"
                    )));
                }
                let dir = self.parent_dir(&parent, name)?;
                let fd = self.create_replacing(&dir, file_name, name, "creating file", || {
                    openat(
                        &dir,
                        file_name,
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                })?;
                let mut file = File::from(fd);
                let written = copy_exact(entry, &mut file, &mut self.buf, size, name)?;
                self.stats.bytes += written;
                self.file_meta(&file, name, &meta)?;
            }
            tar::EntryType::Directory => {
                let dir = self.parent_dir(&parent, name)?;
                // Owner-only until the layer is complete: the final mode is applied by `finish_dirs`.
                let make =
                    || nix::sys::stat::mkdirat(&dir, file_name, Mode::from_bits_truncate(0o700));
                match make() {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let existing =
                            lstat_at(&dir, file_name).map_err(io_err(name, "inspecting"))?;
                        if !existing.is_some_and(|st| is_type(&st, SFlag::S_IFDIR)) {
                            self.replace(&dir, file_name, name)?;
                            make().map_err(|e| io_err(name, "creating directory")(e.into()))?;
                        }
                    }
                    Err(e) => return Err(io_err(name, "creating directory")(e.into())),
                }
                let fd = open_subdir(&dir, file_name)
                    .map_err(|e| io_err(name, "opening directory")(e.into()))?;
                self.directory_meta(&fd, path.clone(), name, &meta)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(refused("symlink with an empty target".into()));
                }
                if target.contains(&0) {
                    return Err(refused("symlink target contains a NUL byte".into()));
                }
                let dir = self.parent_dir(&parent, name)?;
                self.create_replacing(&dir, file_name, name, "creating symlink", || {
                    symlinkat(target.as_slice(), &dir, file_name)
                })?;
                self.chown_at(&dir, file_name, name, &meta)?;
                self.set_xattrs(name, &meta, true, |key, value| {
                    lsetxattr_at(&dir, file_name, key, value)
                })?;
                utimensat(
                    &dir,
                    file_name,
                    &meta.atime,
                    &meta.mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| io_err(name, "setting mtime")(e.into()))?;
            }
            tar::EntryType::Link => self.hardlink(entry, &parent, file_name, name)?,
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                let (kind_flag, dev) = match kind {
                    tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        if !self.opts.create_devices {
                            return Err(refused(
                                "device node, and device creation is off (not root)".into(),
                            ));
                        }
                        let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                        let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                        let flag = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (flag, nix::sys::stat::makedev(major.into(), minor.into()))
                    }
                };
                let dir = self.parent_dir(&parent, name)?;
                self.create_replacing(&dir, file_name, name, "creating special file", || {
                    mknodat(
                        &dir,
                        file_name,
                        kind_flag,
                        Mode::from_bits_truncate(0o600),
                        dev,
                    )
                })?;
                self.chown_at(&dir, file_name, name, &meta)?;
                // Not a symlink (just created), so following is harmless; chmod after chown keeps setuid bits.
                fchmodat(
                    &dir,
                    file_name,
                    Mode::from_bits_truncate(meta.mode),
                    FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| io_err(name, "setting mode")(e.into()))?;
                self.set_xattrs(name, &meta, true, |key, value| {
                    lsetxattr_at(&dir, file_name, key, value)
                })?;
                utimensat(
                    &dir,
                    file_name,
                    &meta.atime,
                    &meta.mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| io_err(name, "setting mtime")(e.into()))?;
            }
            other => return Err(refused(format!("unsupported tar entry type {other:?}"))),
        }
        self.record_written(path);
        Ok(())
    }

    /// The directory `parent`, resolved inside the root (created when missing) and ready to be changed.
    ///
    /// Tar streams list a directory's entries together, so the last one is cached; any removal drops the
    /// cache (the cached directory or an ancestor may be what was removed). A stale descriptor could only
    /// point at a detached directory, never outside the root: the unpacker renames nothing.
    fn parent_dir(&mut self, parent: &RelPath, name: &str) -> Result<Rc<OwnedFd>, UnpackError> {
        if let Some((cached, fd)) = &self.parent_cache
            && cached == parent
        {
            return Ok(fd.clone());
        }
        let dir = self
            .root
            .dir_creating(parent)
            .map_err(io_err(name, "resolving parent directory inside the root"))?;
        self.about_to_change(&dir, parent)
            .map_err(io_err(name, "preparing the parent directory"))?;
        let dir = Rc::new(dir);
        self.parent_cache = Some((parent.clone(), dir.clone()));
        Ok(dir)
    }

    /// Before changing the entries of directory `dir` (at `path`): remember its times to restore, and
    /// unprivileged, make sure we may write it.
    fn about_to_change(&mut self, dir: &OwnedFd, path: &RelPath) -> std::io::Result<()> {
        let st = fstat(dir)?;
        self.touched_dirs
            .entry((st.st_dev, st.st_ino))
            .or_insert_with(|| TouchedDir {
                path: path.clone(),
                atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
                mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            });
        self.make_writable(dir)
    }

    /// Unprivileged only: gives directory `dir` owner write and search permission for the rest of the layer
    /// (a lower layer may have left it read-only), remembering the mode to restore.
    fn make_writable(&mut self, dir: &OwnedFd) -> std::io::Result<()> {
        if !self.unprivileged {
            return Ok(());
        }
        let st = fstat(dir)?;
        if st.st_mode & 0o300 == 0o300 || st.st_uid != nix::unistd::geteuid().as_raw() {
            return Ok(());
        }
        rootdir::chmod_fd(dir, (st.st_mode | 0o700) & 0o7777)?;
        self.restore_modes
            .entry((st.st_dev, st.st_ino))
            .or_insert((dir.try_clone()?, st.st_mode & 0o7777));
        Ok(())
    }

    /// Makes room for a non-directory entry: whatever is there (a file, a directory tree) goes.
    fn replace(&mut self, dir: &OwnedFd, file_name: &[u8], name: &str) -> Result<(), UnpackError> {
        // A removed directory may be the cached parent or one of its ancestors.
        self.parent_cache = None;
        remove_all(dir, file_name, self.unprivileged)
            .map_err(io_err(name, "removing what the entry replaces"))
    }

    /// Creates `file_name` in `dir` with `create` (which fails with `EEXIST` rather than overwrite); when
    /// something is in the way, removes it, whatever it is, and creates again. Fresh names, the common case,
    /// cost no extra `lstat`.
    fn create_replacing<T>(
        &mut self,
        dir: &OwnedFd,
        file_name: &[u8],
        name: &str,
        what: &'static str,
        create: impl Fn() -> nix::Result<T>,
    ) -> Result<T, UnpackError> {
        match create() {
            Err(Errno::EEXIST) => {
                self.replace(dir, file_name, name)?;
                create().map_err(|e| io_err(name, what)(e.into()))
            }
            result => result.map_err(|e| io_err(name, what)(e.into())),
        }
    }

    fn record_written(&mut self, path: RelPath) {
        use std::hash::BuildHasher;
        let joined = path.to_bytes();
        for (i, _) in joined.iter().enumerate().filter(|(_, b)| **b == b'/') {
            self.written_ancestors
                .insert(self.path_hasher.hash_one(&joined[..i]));
        }
        self.written.insert(self.path_hasher.hash_one(&joined[..]));
    }

    /// True when this layer wrote `path` or something under it.
    fn is_written(&self, path: &RelPath) -> bool {
        use std::hash::BuildHasher;
        let key = self.path_hasher.hash_one(&path.to_bytes()[..]);
        self.written.contains(&key) || self.written_ancestors.contains(&key)
    }

    fn chown_at(
        &self,
        dir: &OwnedFd,
        file_name: &[u8],
        name: &str,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if !self.opts.preserve_ownership {
            return Ok(());
        }
        fchownat(
            dir,
            file_name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(name, "setting owner")(e.into()))
    }

    /// Sets the entry's xattrs with `set`. Ones the file system does not support (`ENOTSUP`), and, unprivileged,
    /// ones outside `user.*` that need privilege (`EPERM`), are skipped and counted; so are `user.*` ones on
    /// symlinks and special files, which Linux never allows (`EPERM`). Anything else is an error.
    fn set_xattrs(
        &mut self,
        name: &str,
        meta: &Meta,
        special_file: bool,
        set: impl Fn(&[u8], &[u8]) -> std::io::Result<()>,
    ) -> Result<(), UnpackError> {
        for (key, value) in &meta.xattrs {
            if self.opts.overlay
                && (key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay."))
            {
                self.stats.xattrs_skipped += 1;
                continue;
            }
            let user = key.starts_with(b"user.");
            match set(key, value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {
                    self.stats.xattrs_skipped += 1
                }
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::EPERM)
                        && ((self.unprivileged && !user) || (special_file && user)) =>
                {
                    self.stats.xattrs_skipped += 1
                }
                Err(e) => return Err(io_err(name, "setting xattr")(e)),
            }
        }
        Ok(())
    }

    /// Owner, mode (after the owner: chown clears setuid), xattrs (after chown too: it drops
    /// `security.capability`) and times of a regular file.
    fn file_meta(&mut self, file: &File, name: &str, meta: &Meta) -> Result<(), UnpackError> {
        if self.opts.preserve_ownership {
            fchown(
                file,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| io_err(name, "setting owner")(e.into()))?;
        }
        fchmod(file, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| io_err(name, "setting mode")(e.into()))?;
        self.set_xattrs(name, meta, false, |key, value| fsetxattr(file, key, value))?;
        futimens(file, &meta.atime, &meta.mtime)
            .map_err(|e| io_err(name, "setting mtime")(e.into()))
    }

    /// Owner and xattrs now; mode and times when the layer is complete.
    fn directory_meta(
        &mut self,
        fd: &OwnedFd,
        path: RelPath,
        name: &str,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if self.opts.preserve_ownership {
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| io_err(name, "setting owner")(e.into()))?;
        }
        self.set_xattrs(name, meta, false, |key, value| fsetxattr(fd, key, value))?;
        let st = fstat(fd).map_err(|e| io_err(name, "inspecting directory")(e.into()))?;
        self.deferred_dirs.push(DeferredDir {
            path,
            name: name.to_owned(),
            dev: st.st_dev,
            ino: st.st_ino,
            mode: meta.mode,
            atime: meta.atime,
            mtime: meta.mtime,
        });
        Ok(())
    }

    /// Applies the deferred directory modes and times, innermost first, to the directories that are still the
    /// ones this layer created (a later entry may have replaced one).
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let declared: HashSet<(u64, u64)> =
            self.deferred_dirs.iter().map(|d| (d.dev, d.ino)).collect();
        for dir in std::mem::take(&mut self.deferred_dirs).into_iter().rev() {
            let name = dir.name.as_str();
            let fd = self
                .reopen_dir(&dir.path, (dir.dev, dir.ino))
                .map_err(io_err(name, "reopening directory"))?;
            let Some(fd) = fd else { continue };
            fchmod(&fd, Mode::from_bits_truncate(dir.mode))
                .map_err(|e| io_err(name, "setting mode")(e.into()))?;
            futimens(&fd, &dir.atime, &dir.mtime)
                .map_err(|e| io_err(name, "setting mtime")(e.into()))?;
        }
        // Lower-layer directories this layer changed without declaring them keep their times (as umoci does),
        // so the result does not depend on when it was unpacked.
        for (key, touched) in std::mem::take(&mut self.touched_dirs) {
            if declared.contains(&key) {
                continue;
            }
            let name = String::from_utf8_lossy(&touched.path.to_bytes()).into_owned();
            let fd = self
                .reopen_dir(&touched.path, key)
                .map_err(io_err(&name, "reopening directory"))?;
            if let Some(fd) = fd {
                futimens(&fd, &touched.atime, &touched.mtime)
                    .map_err(|e| io_err(&name, "restoring mtime")(e.into()))?;
            }
        }
        for (key, (fd, mode)) in std::mem::take(&mut self.restore_modes) {
            // A directory this layer declared got its declared mode above.
            if !declared.contains(&key) {
                rootdir::chmod_fd(&fd, mode)
                    .map_err(io_err("(a lower-layer directory)", "restoring its mode"))?;
            }
        }
        Ok(())
    }

    /// Opens directory `path` again for reading, if it is still the inode `id` (a later entry of the layer
    /// may have replaced it).
    fn reopen_dir(&self, path: &RelPath, id: (u64, u64)) -> std::io::Result<Option<OwnedFd>> {
        let fd = match path.split_last() {
            None => match self.root.existing_dir(path)? {
                Some(root) => Some(open_subdir(&root, b".")?),
                None => None,
            },
            Some((parent, file_name)) => match self.root.existing_dir(&parent)? {
                Some(parent_fd) => match open_subdir(&parent_fd, file_name) {
                    Ok(fd) => Some(fd),
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => None,
                    Err(e) => return Err(e.into()),
                },
                None => None,
            },
        };
        let Some(fd) = fd else { return Ok(None) };
        let st = fstat(&fd)?;
        Ok(((st.st_dev, st.st_ino) == id).then_some(fd))
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: &RelPath,
        file_name: &[u8],
        name: &str,
    ) -> Result<(), UnpackError> {
        let refused = |reason: String| UnpackError::Refused {
            path: name.to_owned(),
            reason,
        };
        let raw_target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let shown = String::from_utf8_lossy(&raw_target).into_owned();
        let target = parse_entry_path(&raw_target)
            .map_err(|why| refused(format!("hard link target {shown:?}: {why}")))?;
        let Some((target_parent, target_name)) = target.split_last() else {
            return Err(refused("hard link to the root directory".into()));
        };
        let missing = || UnpackError::MissingLinkTarget {
            path: name.to_owned(),
            target: shown.clone(),
        };
        let target_dir = self
            .root
            .existing_dir(&target_parent)
            .map_err(io_err(name, "resolving hard link target"))?;
        let target_dir = target_dir.ok_or_else(missing)?;
        let target_st = lstat_at(&target_dir, target_name)
            .map_err(io_err(name, "resolving hard link target"))?;
        let target_st = target_st.ok_or_else(missing)?;
        if is_type(&target_st, SFlag::S_IFDIR) {
            return Err(refused(format!(
                "hard link target {shown:?} is a directory"
            )));
        }
        if is_type(&target_st, SFlag::S_IFLNK) {
            let link = nix::fcntl::readlinkat(&target_dir, target_name)
                .map_err(|e| io_err(name, "reading hard link target")(e.into()))?;
            if path::symlink_climbs_out(
                &target_parent,
                std::os::unix::ffi::OsStrExt::as_bytes(link.as_os_str()),
            ) {
                return Err(refused(format!(
                    "hard link target {shown:?} is a symlink pointing outside the root"
                )));
            }
        }
        let dir = self.parent_dir(parent, name)?;
        if let Some(st) = lstat_at(&dir, file_name).map_err(io_err(name, "inspecting"))?
            && (st.st_dev, st.st_ino) == (target_st.st_dev, target_st.st_ino)
        {
            return Ok(());
        }
        self.create_replacing(&dir, file_name, name, "creating hard link", || {
            linkat(&target_dir, target_name, &dir, file_name, AtFlags::empty())
        })
    }

    /// Hides lower-layer content of `dir`: everything in it that this layer did not write goes.
    fn opaque(&mut self, dir: &RelPath) -> std::io::Result<()> {
        self.parent_cache = None;
        if self.opts.overlay {
            // A layer alone has no lower content to remove: mark the directory for overlayfs.
            let fd = self.root.dir_creating(dir)?;
            self.about_to_change(&fd, dir)?;
            return fsetxattr(&open_subdir(&fd, b".")?, OVERLAY_OPAQUE_XATTR, b"y");
        }
        let Some(fd) = self.root.existing_dir(dir)? else {
            return Ok(());
        };
        self.about_to_change(&fd, dir)?;
        let fd = open_subdir(&fd, b".")?;
        self.empty_lower(&fd, dir)
    }

    fn empty_lower(&mut self, fd: &OwnedFd, dir: &RelPath) -> std::io::Result<()> {
        for child in rootdir::list_dir(fd)? {
            let child_path = dir.join(&child);
            if self.is_written(&child_path) {
                if let Some(st) = lstat_at(fd, &child)?
                    && is_type(&st, SFlag::S_IFDIR)
                {
                    let sub = rootdir::open_subdir_path(fd, &child)?;
                    self.about_to_change(&sub, &child_path)?;
                    let sub = open_subdir(&sub, b".")?;
                    self.empty_lower(&sub, &child_path)?;
                }
            } else {
                remove_all(fd, &child, self.unprivileged)?;
            }
        }
        Ok(())
    }

    /// Deletes `target` of lower layers (entries of this layer stay, whatever the order in the tar).
    fn whiteout(&mut self, target: &RelPath) -> std::io::Result<()> {
        self.parent_cache = None;
        if self.is_written(target) {
            return Ok(());
        }
        let Some((parent, file_name)) = target.split_last() else {
            return Ok(());
        };
        if self.opts.overlay {
            // overlayfs's whiteout: a character device 0:0 hides the name in lower layers.
            let dir = self.root.dir_creating(&parent)?;
            self.about_to_change(&dir, &parent)?;
            return match mknodat(&dir, file_name, SFlag::S_IFCHR, Mode::empty(), 0) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        match self.root.existing_dir(&parent)? {
            Some(dir) => {
                self.about_to_change(&dir, &parent)?;
                remove_all(&dir, file_name, self.unprivileged)
            }
            None => Ok(()),
        }
    }
}

/// " after entry \"NAME\"" for [`UnpackError::Tar`], or nothing at the start of the stream.
fn after_entry(after: &Option<String>) -> String {
    after
        .as_ref()
        .map(|name| format!(" after entry {name:?}"))
        .unwrap_or_default()
}

/// Maps an I/O error of entry `name` during `op`.
fn io_err<'a>(name: &'a str, op: &'static str) -> impl Fn(std::io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        path: name.to_owned(),
        op,
        source,
    }
}

/// Copies exactly `size` bytes of the entry into `file`; a short stream is a broken tar.
fn copy_exact(
    entry: &mut dyn Read,
    file: &mut File,
    buf: &mut [u8],
    size: u64,
    name: &str,
) -> Result<u64, UnpackError> {
    let mut written = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(UnpackError::Tar {
                    after: Some(name.to_owned()),
                    source,
                });
            }
        };
        file.write_all(&buf[..n])
            .map_err(io_err(name, "writing file"))?;
        written += n as u64;
    }
    if written != size {
        return Err(UnpackError::Tar {
            after: Some(name.to_owned()),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file content ends after {written} of {size} bytes"),
            ),
        });
    }
    Ok(written)
}

/// Mode, owner, times and xattrs of an entry; PAX records win over the header.
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
    let header = entry.header();
    let mode = header.mode().map_err(|e| format!("bad mode field: {e}"))? & 0o7777;
    let mut uid = header.uid().map_err(|e| format!("bad uid field: {e}"))?;
    let mut gid = header.gid().map_err(|e| format!("bad gid field: {e}"))?;
    let mtime = header
        .mtime()
        .map_err(|e| format!("bad mtime field: {e}"))?;
    let mut mtime = TimeSpec::new(i64::try_from(mtime).map_err(|_| "mtime out of range")?, 0);
    let mut atime = None;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    {
        for record in pax {
            let record = record.map_err(|e| format!("bad PAX record: {e}"))?;
            let key = record.key_bytes();
            let value = record.value_bytes();
            if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
                if xattr.is_empty() || xattr.contains(&0) {
                    return Err("bad xattr name in PAX record".into());
                }
                xattrs.push((xattr.to_vec(), value.to_vec()));
                continue;
            }
            match key {
                b"uid" => uid = parse_pax_number(value, "uid")?,
                b"gid" => gid = parse_pax_number(value, "gid")?,
                b"mtime" => mtime = parse_pax_time(value, "mtime")?,
                b"atime" => atime = Some(parse_pax_time(value, "atime")?),
                // The tar crate does not expand PAX sparse files: unpacking one would silently write the
                // sparse map into the file (and under a GNUSparseFile.N/ name). OCI image builders do not
                // write them; GNU sparse entries (type `S`) are supported.
                _ if key.starts_with(b"GNU.sparse.") => {
                    return Err("PAX sparse file (GNU.sparse.* records) is not supported".into());
                }
                _ => {}
            }
        }
    }
    let uid = u32::try_from(uid).map_err(|_| format!("uid {uid} out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| format!("gid {gid} out of range"))?;
    Ok(Meta {
        mode,
        uid,
        gid,
        atime: atime.unwrap_or(mtime),
        mtime,
        xattrs,
    })
}

fn parse_pax_number(value: &[u8], what: &str) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("bad PAX {what} {:?}", String::from_utf8_lossy(value)))
}

/// A PAX time: decimal seconds with an optional fraction (`1700000000.123456789`).
fn parse_pax_time(value: &[u8], what: &str) -> Result<TimeSpec, String> {
    let bad = || format!("bad PAX {what} {:?}", String::from_utf8_lossy(value));
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let digits = &frac[..frac.len().min(9)];
    let nanos: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse::<i64>().map_err(|_| bad())?
    };
    let nanos = nanos * 10i64.pow(9 - digits.len() as u32);
    // A negative time with a fraction means secs - fraction.
    let (secs, nanos) = if secs < 0 && nanos > 0 {
        (secs - 1, 1_000_000_000 - nanos)
    } else {
        (secs, nanos)
    };
    Ok(TimeSpec::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_nanoseconds() {
        let t = parse_pax_time(b"1700000000.5", "mtime").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"12.123456789123", "mtime").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (12, 123_456_789));
        let t = parse_pax_time(b"-1.25", "mtime").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 750_000_000));
        assert!(parse_pax_time(b"1e9", "mtime").is_err());
        assert!(parse_pax_time(b"1.-5", "mtime").is_err());
    }

    #[test]
    fn default_options_preserve_ownership_only_as_root() {
        assert_eq!(
            UnpackOptions::default().preserve_ownership,
            nix::unistd::geteuid().is_root()
        );
    }
}
