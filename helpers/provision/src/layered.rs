//! A machine's root: its image's shared layers plus one writable layer of its own, or a full
//! copy where that cannot work.
//!
//! Layered (the default): `man8s-fetch` mounts an overlayfs at `/var/lib/man8machines/NAME`
//! whose lower layers are the image's layers in the store ([`man8s_oci::layers`]) and whose upper
//! layer is `/var/lib/man8s/machines/NAME/rw/data`. overlayfs itself cannot be idmapped (kernel
//! 6.18: `mount_setattr` answers EINVAL), so nspawn's `PrivateUsersOwnership=map` cannot work on
//! it, and nspawn refuses `--mstack=` without a managed user namespace (which needs BPF-LSM). So
//! every layer is idmapped below the overlay instead, with a UID range man8s allocates to the
//! machine ([`UID_RANGE_FIRST`]…), and nspawn gets `--private-users=BASE:65536
//! --private-users-ownership=off` through the env file `/run/man8s/root/NAME.env`, which the unit
//! reads. Files keep the image's own owners on disk (0…65535), as in a full copy.
//!
//! `storage.json` in the host-owned state dir records which kind a machine is; a machine
//! without one that has a rootfs is a full copy made before (its upgrade: `mbctl machines reset
//! --convert`).

#![allow(unsafe_code)] // open_tree/mount_setattr/move_mount have no wrapper in nix; fork for a user namespace.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use man8s::{MachineName, Paths};
use man8s_oci::install::remove_any;
use man8s_oci::layers::{LayerSet, LayerStore};

use crate::{Error, IoContext, Result};

/// First UID of the ranges man8s gives layered machines: above every range nspawn's
/// `PrivateUsers=pick` uses (524288…1879048191) and below systemd's foreign range (2147352576).
pub const UID_RANGE_FIRST: u32 = 0x7000_0000;
/// End (exclusive) of the ranges: the start of systemd's foreign UID range.
pub const UID_RANGE_END: u32 = 0x7FFE_0000;
/// Size of one machine's range.
pub const UID_RANGE_SIZE: u32 = 0x1_0000;
/// On-disk owner of what host root writes into a layered machine's root before its user
/// namespace exists (nspawn's mount points); nspawn uses the same id for its own idmapped mounts.
const HOST_ROOT_ON_DISK: u32 = 2_147_483_646;

/// Where the unit finds the nspawn arguments of a layered root.
pub const ROOT_ARGS_DIR: &str = "/run/man8s/root";
/// Staging mount points of the idmapped layers while the overlay is assembled.
const STAGE_DIR: &str = "/run/man8s/stage";
const RECORD: &str = "storage.json";

/// How a machine's root is stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Storage {
    /// Shared layers + `rw/` of its own.
    Layered {
        /// First UID of its range.
        uid_base: u32,
        /// The layers it runs.
        current: LayerSet,
        /// The layers it ran before the last update (rollback).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<LayerSet>,
    },
    /// A private copy of the image at the rootfs path.
    Copy {
        /// Why not layered.
        reason: String,
    },
}

/// The state files of one machine's root.
pub struct Root {
    name: MachineName,
    state: PathBuf,
    rootfs: PathBuf,
    args_file: PathBuf,
    stage: PathBuf,
}

impl Root {
    /// Machine `name`'s root.
    pub fn new(paths: &Paths, name: &MachineName) -> Self {
        Root {
            name: name.clone(),
            state: paths.state_dir(name),
            rootfs: paths.rootfs(name),
            args_file: paths.fs(ROOT_ARGS_DIR).join(format!("{name}.env")),
            stage: paths.fs(STAGE_DIR).join(name.as_str()),
        }
    }

    /// The recorded storage, when there is a record.
    pub fn storage(&self) -> Option<Storage> {
        let bytes = man8s::untrusted::read_regular(
            &self.state.join(RECORD),
            man8s::untrusted::SMALL_FILE_LIMIT,
        )
        .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Record `storage`.
    pub fn record(&self, storage: &Storage) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(storage).expect("a storage record serialises");
        json.push(b'\n');
        let path = self.state.join(RECORD);
        let mut tmp = tempfile::NamedTempFile::new_in(&self.state).at(&self.state)?;
        tmp.write_all(&json).at(&path)?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }

    /// Forget the record (the next install chooses again).
    pub fn forget(&self) -> Result<()> {
        remove_any(&self.state.join(RECORD))
    }

    /// The machine's writable layer: `rw/data` (overlayfs upperdir) and `rw/work`.
    pub fn rw(&self) -> PathBuf {
        self.state.join("rw")
    }

    /// Is a root installed? Layered: a recorded layer set; otherwise a non-empty rootfs dir.
    pub fn installed(&self) -> bool {
        match self.storage() {
            Some(Storage::Layered { .. }) => true,
            _ => fs::read_dir(&self.rootfs).is_ok_and(|mut d| d.next().is_some()),
        }
    }

    /// The writable layer, made when missing (0755 root: it is the merged root's own inode); a
    /// btrfs subvolume on btrfs, which snapshots whole and takes a `DiskMax=` qgroup limit.
    pub fn ensure_rw(&self) -> Result<()> {
        let rw = self.rw();
        if !rw.exists() && self.state.is_dir() {
            man8s_oci::snapshot::create_volume_dir(&rw).at(&rw)?;
        }
        for d in [rw.clone(), rw.join("data"), rw.join("work")] {
            if !d.is_dir() {
                fs::create_dir_all(&d).at(&d)?;
                fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).at(&d)?;
            }
        }
        Ok(())
    }

    /// Drop the machine's own changes: an empty writable layer. The caller makes sure the
    /// machine is not running.
    pub fn reset(&self) -> Result<()> {
        self.unmount()?;
        remove_any(&self.rw())?;
        self.ensure_rw()
    }

    /// Is an overlay mounted at the rootfs path?
    pub fn is_mounted(&self) -> bool {
        nix::sys::statfs::statfs(&self.rootfs)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
    }

    /// Unmount the overlay (all of them, should starts have stacked) and remove the env file.
    pub fn unmount(&self) -> Result<()> {
        for _ in 0..16 {
            if !self.is_mounted() {
                break;
            }
            nix::mount::umount2(&self.rootfs, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| Error::io(&self.rootfs, e.into()))?;
        }
        remove_any(&self.args_file)
    }

    /// For a full copy: no nspawn arguments of a layered root may linger.
    pub fn clear_args(&self) -> Result<()> {
        remove_any(&self.args_file)
    }

    /// Mount the machine's layered root at the rootfs path and write the env file for nspawn.
    pub fn mount(&self, store: &LayerStore, uid_base: u32, set: &LayerSet) -> Result<()> {
        self.unmount()?;
        self.ensure_rw()?;
        if let Some(parent) = self.rootfs.parent() {
            crate::private::private_dir(parent)?;
        }
        fs::create_dir_all(&self.rootfs).at(&self.rootfs)?;
        let userns = UserNs::new(uid_base)?;
        let lowers = store.lowers(set)?;
        remove_stage(&self.stage);
        fs::create_dir_all(&self.stage).at(&self.stage)?;
        let mut staged = Vec::new();
        let result = (|| -> Result<()> {
            for (i, lower) in lowers.iter().enumerate() {
                let at = self.stage.join(i.to_string());
                idmapped_mount(lower, &at, &userns, true)?;
                staged.push(at);
            }
            let rw = self.stage.join("rw");
            idmapped_mount(&self.rw(), &rw, &userns, false)?;
            staged.push(rw.clone());
            let list: Vec<String> = staged[..staged.len() - 1]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                list.join(":"),
                rw.join("data").display(),
                rw.join("work").display()
            );
            nix::mount::mount(
                Some("overlay"),
                &self.rootfs,
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(opts.as_str()),
            )
            .map_err(|e| {
                Error::Other(format!(
                    "{}: cannot mount the layered root (overlayfs): {e}",
                    self.rootfs.display()
                ))
            })
        })();
        // The overlay holds its layers; the staging mounts are not needed any more.
        for at in staged.iter().rev() {
            let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
        }
        remove_stage(&self.stage);
        result?;
        let dir = self.args_file.parent().expect("env file has a parent");
        fs::create_dir_all(dir).at(dir)?;
        let text = format!(
            "# Written by man8s-fetch for {}: a layered root, idmapped below its overlay.\n\
             MAN8S_ROOT_ARGS=--private-users={uid_base}:{UID_RANGE_SIZE} --private-users-ownership=off\n",
            self.name
        );
        fs::write(&self.args_file, text).at(&self.args_file)
    }
}

fn remove_stage(stage: &Path) {
    if let Ok(entries) = fs::read_dir(stage) {
        for e in entries.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(e.path());
        }
    }
    let _ = fs::remove_dir(stage);
}

/// Why a new machine cannot be layered here, or `None` when it can.
pub fn unavailable(paths: &Paths, store: &LayerStore) -> Option<String> {
    if paths.root() != Path::new("/") {
        // Its mounts would be the host's and outlive the command (as the bridge's filter would).
        return Some(format!(
            "relocated root {} (MAN8S_ROOT): only the system's own machines are layered",
            paths.root().display()
        ));
    }
    match man8s::hostconfig::HostConfig::load(paths) {
        Ok(c) if !c.pull.shared_layers => {
            return Some("SharedLayers=no in [Pull] of /etc/man8s/man8s.conf".into());
        }
        Ok(_) => {}
        Err(e) => return Some(e.to_string()),
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.ends_with("\toverlay")) {
        return Some("the kernel has no overlayfs".into());
    }
    if let Err(e) = fs::create_dir_all(store.root()) {
        return Some(format!("{}: {e}", store.root().display()));
    }
    // Idmapped mounts depend on the file system the store is on.
    match UserNs::new(UID_RANGE_FIRST).and_then(|ns| idmap_probe(store.root(), &ns)) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "no idmapped mounts on the layer store's file system ({e})"
        )),
    }
}

/// A free UID range for a new layered machine (the lowest one no recorded machine holds).
pub fn allocate_uid_base(paths: &Paths, name: &MachineName) -> Result<u32> {
    let top = paths.fs(man8s::paths::MACHINE_STATE_DIR);
    let mut taken = std::collections::BTreeSet::new();
    if let Ok(entries) = fs::read_dir(&top) {
        for e in entries.flatten() {
            let Ok(other) = MachineName::new(&e.file_name().to_string_lossy()) else {
                continue;
            };
            if &other == name {
                continue;
            }
            if let Some(Storage::Layered { uid_base, .. }) = Root::new(paths, &other).storage() {
                taken.insert(uid_base);
            }
        }
    }
    (UID_RANGE_FIRST..UID_RANGE_END)
        .step_by(UID_RANGE_SIZE as usize)
        .find(|b| !taken.contains(b))
        .ok_or_else(|| Error::Other("no free UID range for another layered machine".into()))
}

/// A user namespace mapping on-disk ids 0…65535 to `base…` (and host root's writes to
/// [`HOST_ROOT_ON_DISK`]), held open by its descriptor.
struct UserNs {
    fd: OwnedFd,
}

impl UserNs {
    fn new(base: u32) -> Result<UserNs> {
        let map = format!("0 {base} {UID_RANGE_SIZE}\n{HOST_ROOT_ON_DISK} 0 1\n");
        let (go_r, go_w) = nix::unistd::pipe().map_err(|e| Error::Other(e.to_string()))?;
        let (done_r, done_w) = nix::unistd::pipe().map_err(|e| Error::Other(e.to_string()))?;
        // SAFETY: the child only calls async-signal-safe syscalls (unshare, write, read, _exit).
        match unsafe { nix::unistd::fork() }.map_err(|e| Error::Other(format!("fork: {e}")))? {
            nix::unistd::ForkResult::Child => {
                drop(go_r);
                drop(done_w);
                let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
                let _ = nix::unistd::write(&go_w, &[u8::from(ok)]);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(&done_r, &mut b);
                // SAFETY: _exit never returns and runs no destructors of the parent's state.
                unsafe { nix::libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(go_w);
                drop(done_r);
                let mut b = [0u8; 1];
                let mut go = File::from(go_r);
                let got = go.read(&mut b);
                let result = (|| {
                    if !matches!(got, Ok(1)) || b[0] != 1 {
                        return Err(Error::Other("cannot create a user namespace".into()));
                    }
                    for f in ["uid_map", "gid_map"] {
                        let p = PathBuf::from(format!("/proc/{child}/{f}"));
                        OpenOptions::new()
                            .write(true)
                            .open(&p)
                            .and_then(|mut w| w.write_all(map.as_bytes()))
                            .at(&p)?;
                    }
                    let p = PathBuf::from(format!("/proc/{child}/ns/user"));
                    let fd: OwnedFd = File::open(&p).at(&p)?.into();
                    Ok(UserNs { fd })
                })();
                drop(done_w);
                let _ = nix::sys::wait::waitpid(child, None);
                result
            }
        }
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: u32 = 1;
const AT_EMPTY_PATH: u32 = 0x1000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// A detached clone of the mount at `src`, idmapped through `ns` (read-only when `ro`).
fn idmapped_clone(src: &Path, ns: &UserNs, ro: bool) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(src.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("{}: NUL in path", src.display())))?;
    // SAFETY: a NUL-terminated path; the returned descriptor is owned below.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_open_tree,
            nix::libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | nix::libc::O_CLOEXEC as u32,
        )
    };
    idmap_tree(fd, src, ns, ro)
}

/// A detached, idmapped clone of the directory `dir` is open on (never resolved by name again).
fn idmapped_clone_fd(dir: &impl AsFd, shown: &Path, ns: &UserNs) -> Result<OwnedFd> {
    // SAFETY: an open descriptor and an empty path with AT_EMPTY_PATH.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_open_tree,
            dir.as_fd().as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | AT_EMPTY_PATH | nix::libc::O_CLOEXEC as u32,
        )
    };
    idmap_tree(fd, shown, ns, false)
}

/// Idmap the detached tree `fd` that open_tree returned (its errno when negative).
fn idmap_tree(fd: nix::libc::c_long, src: &Path, ns: &UserNs, ro: bool) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(Error::io(src, std::io::Error::last_os_error()));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | if ro { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.fd.as_raw_fd() as u64,
    };
    // SAFETY: valid descriptor, empty path with AT_EMPTY_PATH, attr outlives the call.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(Error::io(src, std::io::Error::last_os_error()));
    }
    Ok(fd)
}

fn idmap_probe(dir: &Path, ns: &UserNs) -> Result<()> {
    idmapped_clone(dir, ns, true).map(drop)
}

/// Attach an idmapped clone of `src` at `at` (made here).
fn idmapped_mount(src: &Path, at: &Path, ns: &UserNs, ro: bool) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let fd = idmapped_clone(src, ns, ro)?;
    fs::create_dir_all(at).at(at)?;
    let c = std::ffi::CString::new(at.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("{}: NUL in path", at.display())))?;
    // SAFETY: valid descriptor and NUL-terminated target path.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            nix::libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(Error::io(at, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One path the machine changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `A` added, `C` changed, `D` deleted.
    pub kind: char,
    /// Path inside the machine (`/etc/x`).
    pub path: String,
}

/// What the machine changed against its image: its writable layer, read handle by handle
/// (machine-written: nothing is followed), each path looked up in the image's layers.
pub fn diff(store: &LayerStore, root: &Root, set: &LayerSet) -> Result<Vec<Change>> {
    use man8s_oci::unpack::rootdir::{is_type, list_dir, lstat_at, open_subdir};
    use nix::sys::stat::SFlag;
    fn walk(
        dir: &OwnedFd,
        rel: &mut Vec<Vec<u8>>,
        lowers: &[PathBuf],
        out: &mut Vec<Change>,
        shown: &Path,
    ) -> Result<()> {
        let mut names = list_dir(dir).at(shown)?;
        names.sort();
        for name in names {
            let Some(st) = lstat_at(dir, &name).at(shown)? else {
                continue;
            };
            rel.push(name.clone());
            let path = format!(
                "/{}",
                rel.iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let in_image = in_layers(lowers, rel);
            if is_type(&st, SFlag::S_IFCHR) && st.st_rdev == 0 {
                out.push(Change { kind: 'D', path });
            } else if is_type(&st, SFlag::S_IFDIR) {
                let image_dir = in_image == Some(true);
                if !image_dir {
                    out.push(Change {
                        kind: if in_image.is_some() { 'C' } else { 'A' },
                        path: path.clone() + "/",
                    });
                }
                if let Ok(sub) = open_subdir(dir, &name) {
                    walk(&sub, rel, lowers, out, shown)?;
                }
            } else {
                out.push(Change {
                    kind: if in_image.is_some() { 'C' } else { 'A' },
                    path,
                });
            }
            rel.pop();
        }
        Ok(())
    }
    let data = root.rw().join("data");
    let fd = match nix::fcntl::open(
        &data,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&data, e.into())),
    };
    let lowers = store.lowers(set)?;
    let mut out = Vec::new();
    walk(&fd, &mut Vec::new(), &lowers, &mut out, &data)?;
    Ok(out)
}

/// Is `rel` in the image (`lowers` topmost first)? `Some(true)` a directory, `Some(false)`
/// something else, `None` absent (or whited out above). Never follows a symlink of a layer.
fn in_layers(lowers: &[PathBuf], rel: &[Vec<u8>]) -> Option<bool> {
    use man8s_oci::unpack::rootdir::{is_type, lstat_at, subdir_no_symlinks};
    use nix::sys::stat::SFlag;
    let (last, parent) = rel.split_last()?;
    for lower in lowers {
        let Ok(top) = File::open(lower) else { continue };
        let dir = if parent.is_empty() {
            subdir_no_symlinks(&top, b".")
        } else {
            subdir_no_symlinks(&top, &parent.join(&b'/'))
        };
        let Ok(dir) = dir else { continue };
        match lstat_at(&dir, last) {
            Ok(Some(st)) if is_type(&st, SFlag::S_IFCHR) && st.st_rdev == 0 => return None,
            Ok(Some(st)) => return Some(is_type(&st, SFlag::S_IFDIR)),
            _ => {}
        }
    }
    None
}

/// What [`install`] replaced, for a rollback.
#[derive(Debug)]
pub enum Replaced {
    /// Nothing was there (or it was not kept).
    Nothing,
    /// A layered machine's layer set; the old one is its record's `previous`.
    Layers,
    /// A full copy's previous tree, kept at this path.
    Copy(PathBuf),
}

/// Install `resolved` as machine `name`'s root, downloading missing layers while unpacking.
/// A layered machine gets the new layer set under its own writable layer (emptied when
/// `reset`; the old set stays as `previous` when `opts.keep_previous`); a full copy is
/// replaced by a new one; a new machine is layered where [`unavailable`] says nothing against
/// it, else a full copy that records why.
pub fn install(
    paths: &Paths,
    name: &MachineName,
    puller: &man8s_oci::pull::Puller<'_>,
    resolved: &man8s_oci::pull::ResolvedImage,
    opts: &man8s_oci::install::InstallOptions,
    reset: bool,
) -> Result<Replaced> {
    let root = Root::new(paths, name);
    let store = LayerStore::new(paths);
    let ensure_layers = || {
        man8s_oci::install::pull_while(puller, resolved, &|ready| {
            store.ensure(resolved, puller.cache, &opts.unpack, puller.progress, ready)
        })
    };
    let copy = |reason: String| -> Result<Replaced> {
        let prev = man8s_oci::install::pull_and_install(puller, &root.rootfs, resolved, opts)?;
        root.record(&Storage::Copy { reason })?;
        root.clear_args()?;
        Ok(prev.map_or(Replaced::Nothing, Replaced::Copy))
    };
    match root.storage() {
        Some(Storage::Layered {
            uid_base, current, ..
        }) => {
            let (set, _pin) = ensure_layers().map_err(|e| match e {
                Error::MissingLinkTarget { image, index, .. } => Error::Other(format!(
                    "{image}: {}, which shared layers cannot hold; \
                     `mbctl machines reset --convert {name}` makes machine {name} a full copy of it \
                     (its own changes in the root are dropped)",
                    links_below(index)
                )),
                e => e,
            })?;
            if reset {
                root.reset()?;
            }
            root.record(&Storage::Layered {
                uid_base,
                current: set,
                previous: opts.keep_previous.then_some(current),
            })?;
            Ok(Replaced::Layers)
        }
        Some(Storage::Copy { reason }) if root.installed() => copy(reason),
        None if root.installed() => copy(PRE_LAYERS.into()),
        _ => match unavailable(paths, &store) {
            Some(reason) => copy(reason),
            None => {
                let (set, _pin) = match ensure_layers() {
                    Ok(v) => v,
                    // A layer that links to a file of a lower one cannot stand alone.
                    Err(Error::MissingLinkTarget { index, .. }) => {
                        return copy(links_below(index));
                    }
                    Err(e) => return Err(e),
                };
                let _lock = uid_lock(paths)?;
                let uid_base = allocate_uid_base(paths, name)?;
                root.reset()?;
                root.record(&Storage::Layered {
                    uid_base,
                    current: set,
                    previous: None,
                })?;
                Ok(Replaced::Layers)
            }
        },
    }
}

/// Why layer `index` (0-based) cannot stand alone in the store.
fn links_below(index: usize) -> String {
    format!("layer {} hard-links into a lower layer", index + 1)
}

/// Why a machine without a record is a full copy.
pub const PRE_LAYERS: &str = "made before shared layers";

fn uid_lock(paths: &Paths) -> Result<Option<nix::fcntl::Flock<File>>> {
    let path = paths
        .fs(man8s::paths::MACHINE_STATE_DIR)
        .join(".uid-ranges.lock");
    man8s_oci::layers::lock_file(&path, nix::fcntl::FlockArg::LockExclusive)
}

/// Before nspawn starts: mount a layered root (or make sure a full copy gets no layered
/// arguments).
pub fn activate(paths: &Paths, name: &MachineName) -> Result<()> {
    let root = Root::new(paths, name);
    match root.storage() {
        Some(Storage::Layered {
            uid_base, current, ..
        }) => root.mount(&LayerStore::new(paths), uid_base, &current),
        _ => root.clear_args(),
    }
}

/// How host-side writes into what a machine sees get the owners it expects on disk.
///
/// A full copy's root shows on-disk owners (0…65535) to the host, like its volumes. A layered
/// root shows them shifted into the machine's UID range (its layers are idmapped below the
/// overlay), so whatever is copied from it into a volume (a seed) would keep the shifted owners
/// on disk, and nspawn's `:idmap` bind would show them as nobody inside. Writing such a copy
/// through an idmapped clone of the volume's parent, with the root's own mapping, stores the
/// owners the machine sees as on-disk 0…65535 again: a volume looks the same on disk whichever
/// way the machine is stored, and survives a conversion either way.
pub struct RootIds {
    /// The UID base of a layered root; its user namespace is made only for a copy (a seed is
    /// rare, a start is not).
    uid_base: Option<u32>,
}

impl RootIds {
    /// The ids of machine `name`'s root as recorded now.
    pub fn of(paths: &Paths, name: &MachineName) -> Result<RootIds> {
        let uid_base = match Root::new(paths, name).storage() {
            Some(Storage::Layered { uid_base, .. }) => Some(uid_base),
            _ => None,
        };
        Ok(RootIds { uid_base })
    }

    /// The host uid (and gid) of the machine's root: what a directory host root makes inside
    /// the mounted root must be chowned to, so the machine's root owns it.
    pub fn root_uid(&self) -> u32 {
        self.uid_base.unwrap_or(0)
    }

    /// A view of the host directory `dir` to copy root content into (`None`: `dir` itself will
    /// do). Only copies whose owners are set from the root go through it: host root's own new
    /// entries there land as nobody on disk.
    pub fn copy_target(&self, dir: &impl AsFd, shown: &Path) -> Result<Option<OwnedFd>> {
        match self.uid_base {
            Some(base) => idmapped_clone_fd(dir, shown, &UserNs::new(base)?).map(Some),
            None => Ok(None),
        }
    }
}

/// After a failed update: back to the layer set it ran before (instant: a record swap).
pub fn roll_back_layers(paths: &Paths, name: &MachineName) -> Result<bool> {
    let root = Root::new(paths, name);
    match root.storage() {
        Some(Storage::Layered {
            uid_base,
            current,
            previous: Some(previous),
        }) => {
            root.record(&Storage::Layered {
                uid_base,
                current: previous,
                previous: Some(current),
            })?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Every layer set a machine records (current and previous), for the store's gc.
pub fn sets_in_use(paths: &Paths) -> Vec<LayerSet> {
    let mut out = Vec::new();
    let top = paths.fs(man8s::paths::MACHINE_STATE_DIR);
    for e in fs::read_dir(&top).into_iter().flatten().flatten() {
        let Ok(name) = MachineName::new(&e.file_name().to_string_lossy()) else {
            continue;
        };
        if let Some(Storage::Layered {
            current, previous, ..
        }) = Root::new(paths, &name).storage()
        {
            out.push(current);
            out.extend(previous);
        }
    }
    out
}
