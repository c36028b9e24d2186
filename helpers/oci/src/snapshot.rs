//! Volume snapshots: point-in-time copies of a machine's config and data directories.
//!
//! A machine's snapshots live in a host-owned directory ([`man8s::Paths::snapshot_dir`],
//! `/var/lib/man8s/snapshots/NAME/`), one subdirectory per snapshot (`ID/config`, `ID/storage`,
//! `ID/snapshot.json`), never inside anything the machine can write. A snapshot is built as
//! `.ID.partial` and renamed into place when complete, so a crash leaves no half snapshot under a
//! real ID.
//!
//! The volume content is machine-writable and therefore hostile: the copy walks it with
//! directory descriptors and `*at` calls that never follow a symlink (the unpacker's
//! [`crate::unpack::rootdir`] helpers, `O_NOFOLLOW` on every open), copies symlinks as symlinks,
//! opens regular files `O_NONBLOCK` and checks their type after opening (a FIFO swapped in cannot
//! block us), and skips sockets and device nodes. Regular files are cloned with `FICLONE`
//! (btrfs, XFS, bcachefs: a reflink costs no data copy) and copied where the file system cannot
//! clone; [`Method`] reports which happened. Ownership, modes, times and extended attributes are
//! kept (xattrs after the owner, as chown drops file capabilities), and so are hard links within
//! a part (a seeded volume's copy makes each link its own file).
//!
//! The part named [`LAYER_PART`] is a layered machine's writable layer (`rw/`: the overlayfs
//! upper and work dirs): its whiteouts (character devices 0/0) are kept too, and an xattr that
//! cannot be set (`trusted.overlay.opaque` and the like, which say what the layer hides) fails the
//! copy instead of being dropped. Its snapshot records the layer set it sits on
//! ([`Snapshot::layers`]), as a writable layer only means something over those layers.
//!
//! On btrfs a directory made by [`create_volume_dir`] is a subvolume, and a subvolume is copied
//! as a whole by one btrfs snapshot (`BTRFS_IOC_SNAP_CREATE`: constant time, nothing read, the
//! kernel's own atomic copy), falling back to the walk above when that is refused (another file
//! system, another btrfs). A plain directory (one made before, or on another file system) is
//! always walked. Subvolumes nested inside a snapshotted one are not in the snapshot (btrfs
//! leaves an empty directory there). Snapshots that are subvolumes are deleted with
//! `BTRFS_IOC_SNAP_DESTROY`.
//!
//! Restoring replaces a directory whole: the snapshot is copied next to the live directory and the
//! two are swapped with `RENAME_EXCHANGE`, so a failed restore leaves the live one untouched. The
//! caller takes a snapshot of the current state first (see `mbctl machines restore`), so a restore
//! never loses data.

// unsafe: the FICLONE and btrfs ioctls have no safe wrapper.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, readlinkat, renameat, renameat2};
use nix::sys::stat::{
    Mode, SFlag, UtimensatFlags, fchmod, fstat, futimens, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, symlinkat};
use serde::{Deserialize, Serialize};

use crate::layers::LayerSet;
use crate::unpack::rootdir::{
    is_type, list_dir, lsetxattr_at, lstat_at, lxattrs_at, open_subdir, remove_all,
};

/// The part of a snapshot that is a layered machine's writable layer (copied with its whiteouts
/// and every xattr).
pub const LAYER_PART: &str = "rw";

/// The record of a finished snapshot, inside it.
const RECORD: &str = "snapshot.json";

/// An error of the snapshot store, naming the path and why.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// There is no snapshot of that ID.
    #[error("no snapshot {id} in {dir}")]
    NotFound {
        /// The ID asked for.
        id: String,
        /// The machine's snapshot directory.
        dir: PathBuf,
    },
    /// An ID that cannot name a snapshot (a path, a dot file, …).
    #[error("{0:?} is not a snapshot ID (IDs look like 20261201T221500Z)")]
    BadId(String),
}

type Result<T, E = SnapshotError> = std::result::Result<T, E>;

trait At<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T, E: Into<io::Error>> At<T> for std::result::Result<T, E> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| SnapshotError::Io {
            path: path.to_owned(),
            source: e.into(),
        })
    }
}

/// How the files of a snapshot (or a restore) were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Every part was a btrfs subvolume, copied by a btrfs snapshot: nothing was read.
    BtrfsSnapshot,
    /// Every regular file was cloned (`FICLONE`), or came with a btrfs snapshot: no data was
    /// copied.
    Reflink,
    /// At least one file's data was copied (the file system cannot clone, or a clone failed).
    Copy,
}

impl Method {
    /// `btrfs-snapshot`, `reflink` or `copy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::BtrfsSnapshot => "btrfs-snapshot",
            Method::Reflink => "reflink",
            Method::Copy => "copy",
        }
    }
}

/// What a tree copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStats {
    /// Regular files cloned.
    pub cloned: u64,
    /// Regular files whose data was copied.
    pub copied: u64,
    /// Bytes in regular files.
    pub bytes: u64,
    /// Directories, symlinks and FIFOs made.
    pub other: u64,
    /// Sockets, device nodes and entries that changed type while being copied: left out.
    pub skipped: u64,
    /// Directories copied whole as btrfs snapshots (their files are not counted above).
    #[serde(default)]
    pub snapshots: u64,
    /// Regular files made as hard links to one copied before (a link of the source).
    #[serde(default)]
    pub linked: u64,
}

impl CopyStats {
    /// How the files were made: [`Method::BtrfsSnapshot`] when only snapshots were taken,
    /// [`Method::Reflink`] when nothing had to be copied.
    pub fn method(&self) -> Method {
        if self.copied > 0 {
            Method::Copy
        } else if self.snapshots > 0 && self.cloned == 0 && self.other == 0 {
            Method::BtrfsSnapshot
        } else {
            Method::Reflink
        }
    }

    fn add(&mut self, o: &CopyStats) {
        self.cloned += o.cloned;
        self.copied += o.copied;
        self.bytes += o.bytes;
        self.other += o.other;
        self.skipped += o.skipped;
        self.snapshots += o.snapshots;
        self.linked += o.linked;
    }
}

/// One finished snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its ID: the UTC time it was taken (`20261201T221500Z`, `-2`… when taken in the same second).
    pub id: String,
    /// When, RFC 3339 UTC.
    pub created: String,
    /// Why it was taken (`manual`, `before update to sha256:…`, `before restore of ID`).
    pub reason: String,
    /// The parts it holds (`config`, `storage`), each a copy of one directory.
    pub parts: Vec<String>,
    /// How its files were made.
    pub method: Method,
    /// What the copy did.
    pub stats: CopyStats,
    /// The layer set the [`LAYER_PART`] was taken on (none without that part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<LayerSet>,
}

/// The snapshots of one machine: a directory of snapshot directories.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (normally `Paths::snapshot_dir(NAME)`); nothing is created yet.
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Take a snapshot of `parts` (name, live directory); a part whose directory does not exist
    /// is left out. The snapshot appears under its ID only when complete.
    pub fn take(&self, parts: &[(&str, &Path)], reason: &str) -> Result<Snapshot> {
        self.take_on(parts, reason, None)
    }

    /// [`Store::take`], recording that the [`LAYER_PART`] among `parts` sits on `layers`.
    pub fn take_on(
        &self,
        parts: &[(&str, &Path)],
        reason: &str,
        layers: Option<&LayerSet>,
    ) -> Result<Snapshot> {
        create_private_dir(&self.dir)?;
        let now = SystemTime::now();
        let id = self.free_id(&compact_utc(now))?;
        let partial = self.dir.join(format!(".{id}.partial"));
        remove_path(&partial)?;
        create_private_dir(&partial)?;
        let mut stats = CopyStats::default();
        let mut taken = Vec::new();
        for (part, src) in parts {
            if !src.is_dir() {
                continue;
            }
            stats.add(&copy_tree_as(src, &partial, part, Fidelity::of(part))?);
            taken.push((*part).to_owned());
        }
        let layers = layers.filter(|_| taken.iter().any(|p| p == LAYER_PART));
        let snapshot = Snapshot {
            id: id.clone(),
            created: crate::install::rfc3339(now),
            reason: reason.to_owned(),
            parts: taken,
            method: stats.method(),
            stats,
            layers: layers.cloned(),
        };
        let record = partial.join(RECORD);
        let json = serde_json::to_vec_pretty(&snapshot).expect("a snapshot record serializes");
        std::fs::write(&record, json).at(&record)?;
        let target = self.dir.join(&id);
        std::fs::rename(&partial, &target).at(&target)?;
        Ok(snapshot)
    }

    /// Every finished snapshot, oldest first. Unreadable records are skipped (a hand-made
    /// directory is not a snapshot).
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(&self.dir),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.at(&self.dir)?;
            let name = entry.file_name();
            if name.as_bytes().starts_with(b".") {
                continue;
            }
            if let Ok(s) = self.read(&name.to_string_lossy()) {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The snapshot `id`.
    pub fn get(&self, id: &str) -> Result<Snapshot> {
        check_id(id)?;
        self.read(id).map_err(|_| SnapshotError::NotFound {
            id: id.to_owned(),
            dir: self.dir.clone(),
        })
    }

    fn read(&self, id: &str) -> Result<Snapshot> {
        let record = self.dir.join(id).join(RECORD);
        let bytes = std::fs::read(&record).at(&record)?;
        let s: Snapshot = serde_json::from_slice(&bytes)
            .map_err(io::Error::other)
            .at(&record)?;
        if s.id != id {
            return Err(io::Error::other("record names another snapshot")).at(&record);
        }
        Ok(s)
    }

    /// Replace each live directory in `parts` (name, live directory) whose part the snapshot holds
    /// with the snapshot's copy. The old content is removed once the swap is done: take a
    /// snapshot of it first. Parts the snapshot does not hold are left alone.
    pub fn restore(&self, id: &str, parts: &[(&str, &Path)]) -> Result<CopyStats> {
        let snapshot = self.get(id)?;
        let mut stats = CopyStats::default();
        for (part, live) in parts {
            if !snapshot.parts.iter().any(|p| p == part) {
                continue;
            }
            let src = self.dir.join(id).join(part);
            let parent = live.parent().unwrap_or(Path::new("/"));
            let base = live.file_name().map(|n| n.to_string_lossy().into_owned());
            let base = base.unwrap_or_else(|| (*part).to_owned());
            std::fs::create_dir_all(parent).at(parent)?;
            let staging_name = format!(".{base}.restore");
            let staging = parent.join(&staging_name);
            remove_path(&staging)?;
            stats.add(&copy_tree_as(
                &src,
                parent,
                &staging_name,
                Fidelity::of(part),
            )?);
            // A subvolume stays one (its snapshots and qgroup limit depend on it), also when the
            // snapshot was a walked copy on another file system.
            if File::open(live).is_ok_and(|d| is_subvolume(&d)) {
                into_subvolume(&staging)?;
            }
            swap_in(&staging, live)?;
        }
        Ok(stats)
    }

    /// Remove snapshot `id`.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.get(id)?;
        remove_path(&self.dir.join(id))
    }

    /// Remove all but the newest `keep` snapshots; returns the IDs removed, oldest first.
    pub fn prune(&self, keep: usize) -> Result<Vec<String>> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for s in &all[..excess] {
            remove_path(&self.dir.join(&s.id))?;
            removed.push(s.id.clone());
        }
        Ok(removed)
    }

    fn free_id(&self, base: &str) -> Result<String> {
        let mut id = base.to_owned();
        let mut n = 1;
        while self.dir.join(&id).exists() {
            n += 1;
            id = format!("{base}-{n}");
        }
        Ok(id)
    }
}

/// Put the complete copy `staging` in place of `live` (`RENAME_EXCHANGE`: the live one is never
/// half replaced), then remove the old content.
fn swap_in(staging: &Path, live: &Path) -> Result<()> {
    match renameat2(
        nix::fcntl::AT_FDCWD,
        staging,
        nix::fcntl::AT_FDCWD,
        live,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => remove_path(staging),
        Err(Errno::ENOENT) => {
            renameat(nix::fcntl::AT_FDCWD, staging, nix::fcntl::AT_FDCWD, live).at(live)
        }
        Err(e) => Err(e).at(live),
    }
}

/// Turn directory `live`, a layered machine's writable layer made before it would be a
/// subvolume, into a btrfs subvolume with the same content (copied as the [`LAYER_PART`] is,
/// then swapped in). `false` when it is one already; an error where its parent is not on btrfs.
pub fn into_subvolume(live: &Path) -> Result<bool> {
    let src = nix::fcntl::open(
        live,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .at(live)?;
    if is_subvolume(&src) {
        return Ok(false);
    }
    let parent = live.parent().unwrap_or(Path::new("/"));
    let base = live.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".{base}.subvolume"));
    remove_path(&staging)?;
    if !create_volume_dir(&staging).at(&staging)? {
        remove_path(&staging)?;
        return Err(io::Error::other("not on btrfs: no subvolume can be made")).at(live);
    }
    let dst = nix::fcntl::open(
        &staging,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .at(&staging)?;
    let mut at = Where::new(live, Fidelity::of(LAYER_PART), &dst)?;
    copy_dir(&src, &dst, &mut at, &mut CopyStats::default())?;
    set_meta(&dst, &fstat(&src).at(live)?).at(live)?;
    copy_xattrs(&dst, b".", &src, b".", &at)?;
    swap_in(&staging, live)?;
    Ok(true)
}

/// A snapshot ID is one plain name: no `/`, no leading dot.
fn check_id(id: &str) -> Result<()> {
    let plain = !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(SnapshotError::BadId(id.to_owned()))
    }
}

/// `2026-12-01T22:15:00Z` → `20261201T221500Z`: sorts like the time, safe as a file name.
fn compact_utc(t: SystemTime) -> String {
    crate::install::rfc3339(t).replace(['-', ':'], "")
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .at(dir)
}

/// Remove `path` whatever it is, never following a symlink in it; nothing when absent. A btrfs
/// subvolume there, or directly inside it (a snapshot's parts), is deleted as a whole.
fn remove_path(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    let dir = match File::open(parent) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at(parent),
    };
    if let Ok(sub) = open_subdir(&dir, name.as_bytes()) {
        if is_subvolume(&sub) && btrfs::destroy(&dir, name.as_bytes()).is_ok() {
            return Ok(());
        }
        for child in list_dir(&sub).unwrap_or_default() {
            if let Ok(fd) = open_subdir(&sub, &child)
                && is_subvolume(&fd)
            {
                let _ = btrfs::destroy(&sub, &child);
            }
        }
    }
    remove_all(&dir, name.as_bytes(), true).at(path)
}

/// Create directory `dir` (mode 0700; its parent must exist) so that it snapshots cheaply: a
/// btrfs subvolume when the parent is on btrfs, else a plain directory. Returns whether it is
/// a subvolume. Fails with `AlreadyExists` when something is there.
pub fn create_volume_dir(dir: &Path) -> io::Result<bool> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let name = dir
        .file_name()
        .ok_or_else(|| io::Error::other("no directory name"))?;
    let parent_fd = nix::fcntl::open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let subvolume = on_btrfs(&parent_fd) && btrfs::create(&parent_fd, name.as_bytes()).is_ok();
    if !subvolume {
        mkdirat(&parent_fd, name, Mode::from_bits_truncate(0o700))?;
    }
    let fd = open_subdir(&parent_fd, name.as_bytes())?;
    // Whatever the umask (a new subvolume's root is 0755).
    fchmod(&fd, Mode::from_bits_truncate(0o700))?;
    Ok(subvolume)
}

/// Whether `fd` is on btrfs.
fn on_btrfs(fd: &impl AsFd) -> bool {
    nix::sys::statfs::fstatfs(fd)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// Whether the open directory `fd` is the root of a btrfs subvolume (inode 256 on btrfs).
pub fn is_subvolume(fd: &impl AsFd) -> bool {
    /// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's root directory.
    const SUBVOLUME_ROOT_INODE: u64 = 256;
    fstat(fd).is_ok_and(|st| st.st_ino == SUBVOLUME_ROOT_INODE) && on_btrfs(fd)
}

/// The three btrfs ioctls used here (`linux/btrfs.h`), all taking `btrfs_ioctl_vol_args`.
mod btrfs {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd};

    /// `BTRFS_PATH_NAME_MAX` + 1.
    const NAME_BYTES: usize = 4088;

    /// `struct btrfs_ioctl_vol_args`.
    #[repr(C)]
    struct VolArgs {
        fd: i64,
        name: [u8; NAME_BYTES],
    }

    /// `_IOW(0x94, 1, struct btrfs_ioctl_vol_args)`.
    const SNAP_CREATE: nix::libc::Ioctl = 0x5000_9401;
    /// `_IOW(0x94, 14, …)`.
    const SUBVOL_CREATE: nix::libc::Ioctl = 0x5000_940e;
    /// `_IOW(0x94, 15, …)`.
    const SNAP_DESTROY: nix::libc::Ioctl = 0x5000_940f;

    fn call(dir: &impl AsFd, request: nix::libc::Ioctl, fd: i64, name: &[u8]) -> io::Result<()> {
        if name.is_empty() || name.len() >= NAME_BYTES || name.contains(&b'/') || name.contains(&0)
        {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut args = Box::new(VolArgs {
            fd,
            name: [0; NAME_BYTES],
        });
        args.name[..name.len()].copy_from_slice(name);
        // SAFETY: `args` is a live, correctly laid out `btrfs_ioctl_vol_args` for the whole call,
        // and the kernel only reads it; `dir` is an open descriptor.
        let rc =
            unsafe { nix::libc::ioctl(dir.as_fd().as_raw_fd(), request, &*args as *const VolArgs) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// A writable snapshot of subvolume `src` as `name` in `dst_dir`.
    pub fn snapshot(src: &impl AsFd, dst_dir: &impl AsFd, name: &[u8]) -> io::Result<()> {
        call(dst_dir, SNAP_CREATE, src.as_fd().as_raw_fd().into(), name)
    }

    /// A new, empty subvolume `name` in `dir`.
    pub fn create(dir: &impl AsFd, name: &[u8]) -> io::Result<()> {
        call(dir, SUBVOL_CREATE, 0, name)
    }

    /// Delete subvolume `name` of `dir`, whatever it holds.
    pub fn destroy(dir: &impl AsFd, name: &[u8]) -> io::Result<()> {
        call(dir, SNAP_DESTROY, 0, name)
    }
}

/// Copy directory `src` (hostile content) to a new directory `name` in `dst_parent` (ours),
/// never following a symlink inside `src`. `src` itself must be a real directory. A btrfs
/// subvolume is copied as a btrfs snapshot when the destination can take one.
pub fn copy_tree(src: &Path, dst_parent: &Path, name: &str) -> Result<CopyStats> {
    copy_tree_as(src, dst_parent, name, Fidelity::PLAIN)
}

/// What a copy keeps beyond content, owners, modes and times.
#[derive(Debug, Clone, Copy)]
struct Fidelity {
    /// Extended attributes; `Some(true)`: one that cannot be set fails the copy, `Some(false)`:
    /// it is left out when the destination refuses it (EPERM, ENOTSUP).
    xattrs: Option<bool>,
    /// overlayfs whiteouts (character devices 0/0), which are otherwise skipped.
    whiteouts: bool,
    /// Hard links between regular files stay links (else each is its own copy).
    hard_links: bool,
}

impl Fidelity {
    /// Seeding a volume from an image and the unpacker's copies: content only.
    const PLAIN: Fidelity = Fidelity {
        xattrs: None,
        whiteouts: false,
        hard_links: false,
    };

    /// A snapshot part: every xattr; a writable layer also its whiteouts, strictly.
    fn of(part: &str) -> Fidelity {
        let layer = part == LAYER_PART;
        Fidelity {
            xattrs: Some(layer),
            whiteouts: layer,
            hard_links: true,
        }
    }
}

fn copy_tree_as(src: &Path, dst_parent: &Path, name: &str, keep: Fidelity) -> Result<CopyStats> {
    let src_fd = nix::fcntl::open(
        src,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .at(src)?;
    let parent = nix::fcntl::open(
        dst_parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .at(dst_parent)?;
    if is_subvolume(&src_fd) && btrfs::snapshot(&src_fd, &parent, name.as_bytes()).is_ok() {
        return Ok(CopyStats {
            snapshots: 1,
            ..CopyStats::default()
        });
    }
    let st = fstat(&src_fd).at(src)?;
    mkdirat(&parent, name, Mode::from_bits_truncate(0o700)).at(&dst_parent.join(name))?;
    let dst = open_subdir(&parent, name.as_bytes()).at(&dst_parent.join(name))?;
    let mut stats = CopyStats::default();
    let mut at = Where::new(src, keep, &dst)?;
    copy_dir(&src_fd, &dst, &mut at, &mut stats)?;
    set_meta(&dst, &st).at(src)?;
    copy_xattrs(&parent, name.as_bytes(), &src_fd, b".", &at)?;
    Ok(stats)
}

/// [`copy_tree`] between open directories: the content of `src` (hostile) into the empty
/// directory `dst` (ours), then `src`'s owner, mode and times onto `dst`. `shown` names `src` in
/// errors. Used to seed a volume from an image's directory, resolved inside its rootfs.
pub fn copy_contents(src: &OwnedFd, dst: &OwnedFd, shown: &Path) -> Result<CopyStats> {
    let st = fstat(src).at(shown)?;
    let mut stats = CopyStats::default();
    let mut at = Where::new(shown, Fidelity::PLAIN, dst)?;
    copy_dir(src, dst, &mut at, &mut stats)?;
    set_meta(dst, &st).at(shown)?;
    Ok(stats)
}

/// The source path being copied, for error messages only (never opened by name), and what the
/// copy keeps.
struct Where {
    src: PathBuf,
    keep: Fidelity,
    /// The entry's path below the destination's top (ours: only directories we made).
    rel: PathBuf,
    /// With [`Fidelity::hard_links`]: the destination's top, and the first copy of each source
    /// inode with more than one link (by device and inode).
    links: Option<(OwnedFd, FirstCopies)>,
}

/// The first copy (a path below the destination's top) of each source inode (device, inode).
type FirstCopies = std::collections::HashMap<(u64, u64), PathBuf>;

impl Where {
    fn new(src: &Path, keep: Fidelity, dst_top: &OwnedFd) -> Result<Where> {
        let links = if keep.hard_links {
            Some((dst_top.try_clone().at(src)?, Default::default()))
        } else {
            None
        };
        Ok(Where {
            src: src.to_owned(),
            keep,
            rel: PathBuf::new(),
            links,
        })
    }
}

/// Copy the xattrs of `src_name` in `src_dir` onto `dst_name` in `dst_dir` (neither followed),
/// as [`Where::keep`] says. Last, after the owner: chown drops `security.capability`.
fn copy_xattrs(
    dst_dir: &impl AsFd,
    dst_name: &[u8],
    src_dir: &impl AsFd,
    src_name: &[u8],
    at: &Where,
) -> Result<()> {
    let Some(strict) = at.keep.xattrs else {
        return Ok(());
    };
    for (key, value) in lxattrs_at(src_dir, src_name).at(&at.src)? {
        match lsetxattr_at(dst_dir, dst_name, &key, &value) {
            Ok(()) => {}
            Err(e)
                if !strict
                    && matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EPERM | nix::libc::ENOTSUP)
                    ) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot keep xattr {}: {e}", String::from_utf8_lossy(&key)),
                ))
                .at(&at.src);
            }
        }
    }
    Ok(())
}

fn copy_dir(src: &OwnedFd, dst: &OwnedFd, at: &mut Where, stats: &mut CopyStats) -> Result<()> {
    for name in list_dir(src).at(&at.src)? {
        at.src.push(std::ffi::OsStr::from_bytes(&name));
        at.rel.push(std::ffi::OsStr::from_bytes(&name));
        let r = copy_entry(src, dst, &name, at, stats);
        at.src.pop();
        at.rel.pop();
        r?;
    }
    Ok(())
}

fn copy_entry(
    src: &OwnedFd,
    dst: &OwnedFd,
    name: &[u8],
    at: &mut Where,
    stats: &mut CopyStats,
) -> Result<()> {
    // Gone since the listing: nothing to copy.
    let Some(st) = lstat_at(src, name).at(&at.src)? else {
        return Ok(());
    };
    let skip = |stats: &mut CopyStats| {
        stats.skipped += 1;
        Ok(())
    };
    if is_type(&st, SFlag::S_IFDIR) {
        let sub_src = match open_subdir(src, name) {
            Ok(fd) => fd,
            // Replaced by a symlink or a file after the lstat: not followed, not copied.
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => return skip(stats),
            Err(e) => return Err(e).at(&at.src),
        };
        let st = fstat(&sub_src).at(&at.src)?;
        mkdirat(dst, name, Mode::from_bits_truncate(0o700)).at(&at.src)?;
        let sub_dst = open_subdir(dst, name).at(&at.src)?;
        copy_dir(&sub_src, &sub_dst, at, stats)?;
        // After the content: a read-only directory must not stop its own copy.
        set_meta(&sub_dst, &st).at(&at.src)?;
        copy_xattrs(dst, name, src, name, at)?;
        stats.other += 1;
    } else if is_type(&st, SFlag::S_IFREG) {
        let file = match openat(
            src,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOENT | Errno::ENXIO) => return skip(stats),
            Err(e) => return Err(e).at(&at.src),
        };
        let st = fstat(&file).at(&at.src)?;
        if !is_type(&st, SFlag::S_IFREG) {
            return skip(stats);
        }
        let inode = (st.st_dev as u64, st.st_ino as u64);
        if st.st_nlink > 1
            && let Some((top, seen)) = &at.links
            && let Some(first) = seen.get(&inode)
        {
            nix::unistd::linkat(top, first.as_path(), dst, name, AtFlags::empty()).at(&at.src)?;
            stats.linked += 1;
            return Ok(());
        }
        let out = openat(
            dst,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .at(&at.src)?;
        let (file, out) = (File::from(file), File::from(out));
        if clone_file(&file, &out).is_ok() {
            stats.cloned += 1;
        } else {
            let mut reader = &file;
            let mut writer = &out;
            io::copy(&mut reader, &mut writer).at(&at.src)?;
            stats.copied += 1;
        }
        stats.bytes += st.st_size as u64;
        set_meta(&out, &st).at(&at.src)?;
        copy_xattrs(dst, name, src, name, at)?;
        if st.st_nlink > 1
            && let Some((_, seen)) = &mut at.links
        {
            seen.insert(inode, at.rel.clone());
        }
    } else if is_type(&st, SFlag::S_IFLNK) {
        let target = readlinkat(src, name).at(&at.src)?;
        symlinkat(target.as_os_str(), dst, name).at(&at.src)?;
        fchownat(
            dst,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .at(&at.src)?;
        set_times_at(dst, name, &st).at(&at.src)?;
        copy_xattrs(dst, name, src, name, at)?;
        stats.other += 1;
    } else if is_type(&st, SFlag::S_IFIFO)
        || (at.keep.whiteouts && is_type(&st, SFlag::S_IFCHR) && st.st_rdev == 0)
    {
        // A FIFO, or an overlayfs whiteout: a character device 0/0, which opens no device.
        let kind = if is_type(&st, SFlag::S_IFIFO) {
            SFlag::S_IFIFO
        } else {
            SFlag::S_IFCHR
        };
        mknodat(dst, name, kind, Mode::from_bits_truncate(0o600), 0).at(&at.src)?;
        let fifo = openat(
            dst,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .at(&at.src)?;
        fchownat(
            dst,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .at(&at.src)?;
        crate::unpack::rootdir::chmod_fd(&fifo, st.st_mode & 0o7777).at(&at.src)?;
        set_times_at(dst, name, &st).at(&at.src)?;
        copy_xattrs(dst, name, src, name, at)?;
        stats.other += 1;
    } else {
        // Sockets belong to a running process; device nodes have no business in a volume.
        return skip(stats);
    }
    Ok(())
}

/// `FICLONE`: share the data of `src` with `dst` (same file system, one that can clone).
fn clone_file(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes an fd number.
    let rc = unsafe { nix::libc::ioctl(dst.as_raw_fd(), nix::libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Owner, then mode (chown clears setuid), then times of an open file or directory.
fn set_meta(fd: &impl AsFd, st: &nix::sys::stat::FileStat) -> nix::Result<()> {
    fchown(
        fd,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )?;
    fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    futimens(
        fd,
        &TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

fn set_times_at(dir: &impl AsFd, name: &[u8], st: &nix::sys::stat::FileStat) -> nix::Result<()> {
    utimensat(
        dir,
        name,
        &TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        UtimensatFlags::NoFollowSymlink,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    /// Every path under `root` with what it is: file content, symlink target, or a directory.
    fn tree(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let mode = m.permissions().mode() & 0o7777;
                if m.file_type().is_symlink() {
                    let t = std::fs::read_link(&p).unwrap();
                    out.insert(rel, format!("-> {}", t.display()));
                } else if m.is_dir() {
                    out.insert(rel, format!("dir {mode:o}"));
                    walk(root, &p, out);
                } else if m.is_file() {
                    let c = std::fs::read(&p).unwrap();
                    out.insert(
                        rel,
                        format!("file {mode:o} {}", String::from_utf8_lossy(&c)),
                    );
                } else {
                    out.insert(rel, format!("other {mode:o}"));
                }
            }
        }
        walk(root, root, &mut out);
        out
    }

    /// A volume with hostile symlinks pointing at a canary tree outside it.
    fn hostile_volume(base: &Path) -> (PathBuf, PathBuf) {
        let canary = base.join("canary");
        std::fs::create_dir_all(canary.join("deep")).unwrap();
        std::fs::write(canary.join("secret"), "host secret").unwrap();
        std::fs::write(canary.join("deep/file"), "deep").unwrap();
        let vol = base.join("vol");
        std::fs::create_dir_all(vol.join("db/ro")).unwrap();
        std::fs::write(vol.join("db/data"), "rows 1 2 3").unwrap();
        std::fs::write(vol.join("db/ro/inner"), "inner").unwrap();
        std::fs::set_permissions(vol.join("db/ro"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        std::fs::set_permissions(vol.join("db/data"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        symlink(&canary, vol.join("abs")).unwrap();
        symlink("../canary", vol.join("rel")).unwrap();
        symlink(canary.join("secret"), vol.join("db/secret")).unwrap();
        symlink("/proc/self/root/etc", vol.join("magic")).unwrap();
        nix::unistd::mkfifo(&vol.join("pipe"), Mode::from_bits_truncate(0o644)).unwrap();
        let _ = std::os::unix::net::UnixListener::bind(vol.join("sock")).unwrap();
        (vol, canary)
    }

    #[test]
    fn snapshots_copy_symlinks_as_links_and_never_leave_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let (vol, canary) = hostile_volume(dir.path());
        let canary_before = tree(&canary);
        let store = Store::new(dir.path().join("snaps"));
        let s = store.take(&[("storage", &vol)], "manual").unwrap();
        assert_eq!(s.parts, ["storage"]);
        assert_eq!(s.stats.cloned + s.stats.copied, 2, "{:?}", s.stats);
        assert_eq!(s.stats.skipped, 1, "the socket: {:?}", s.stats);
        let copy = store.dir().join(&s.id).join("storage");
        let mut want = tree(&vol);
        want.remove("sock");
        assert_eq!(tree(&copy), want);
        assert_eq!(
            std::fs::read_link(copy.join("abs")).unwrap(),
            canary,
            "a symlink stays a symlink"
        );
        assert!(!copy.join("canary").exists());
        assert_eq!(tree(&canary), canary_before, "the canary is untouched");
        let m = std::fs::symlink_metadata(copy.join("db/data")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(
            m.mtime(),
            std::fs::metadata(vol.join("db/data")).unwrap().mtime()
        );
        // Snapshot dirs are private.
        let m = std::fs::metadata(store.dir()).unwrap();
        assert_eq!(m.mode() & 0o777, 0o700);
    }

    #[test]
    fn restore_brings_back_the_old_tree_and_leaves_the_canary_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (vol, canary) = hostile_volume(dir.path());
        let store = Store::new(dir.path().join("snaps"));
        let before = tree(&vol);
        let s = store.take(&[("storage", &vol)], "manual").unwrap();
        // The app "migrates" the data, and plants a link into the host.
        std::fs::write(vol.join("db/data"), "migrated to v3").unwrap();
        std::fs::remove_file(vol.join("rel")).unwrap();
        symlink("/", vol.join("rel")).unwrap();
        std::fs::write(vol.join("new"), "new file").unwrap();
        let canary_before = tree(&canary);
        store.restore(&s.id, &[("storage", &vol)]).unwrap();
        let mut want = before;
        want.remove("sock");
        assert_eq!(tree(&vol), want);
        assert_eq!(tree(&canary), canary_before);
        assert!(!dir.path().join(".vol.restore").exists(), "staging removed");
    }

    #[test]
    fn a_missing_part_is_left_out_and_restore_of_it_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("snaps"));
        let cfg = dir.path().join("cfg");
        std::fs::create_dir(&cfg).unwrap();
        std::fs::write(cfg.join("man8env.env"), "A=1\n").unwrap();
        let data = dir.path().join("data");
        let s = store
            .take(&[("config", &cfg), ("storage", &data)], "manual")
            .unwrap();
        assert_eq!(s.parts, ["config"]);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("x"), "kept").unwrap();
        std::fs::write(cfg.join("man8env.env"), "A=2\n").unwrap();
        store
            .restore(&s.id, &[("config", &cfg), ("storage", &data)])
            .unwrap();
        assert_eq!(std::fs::read(cfg.join("man8env.env")).unwrap(), b"A=1\n");
        assert_eq!(std::fs::read(data.join("x")).unwrap(), b"kept");
    }

    #[test]
    fn list_prune_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        std::fs::create_dir(&vol).unwrap();
        let store = Store::new(dir.path().join("snaps"));
        let ids: Vec<String> = (0..4)
            .map(|i| {
                store
                    .take(&[("storage", &vol)], &format!("n{i}"))
                    .unwrap()
                    .id
            })
            .collect();
        let listed: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(listed, ids, "oldest first, unique IDs within a second");
        // A hand-made or half-written directory is no snapshot.
        std::fs::create_dir(store.dir().join("junk")).unwrap();
        std::fs::create_dir(store.dir().join(".x.partial")).unwrap();
        assert_eq!(store.list().unwrap().len(), 4);
        assert_eq!(store.prune(1).unwrap(), ids[..3]);
        assert_eq!(store.list().unwrap()[0].id, ids[3]);
        for bad in ["../x", ".hidden", "a/b", ""] {
            assert!(
                matches!(store.get(bad), Err(SnapshotError::BadId(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            store.get("20000101T000000Z"),
            Err(SnapshotError::NotFound { .. })
        ));
        assert!(store.remove(&ids[3]).is_ok());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn compact_ids_sort_like_time() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(compact_utc(t), "20231114T221320Z");
    }
}
