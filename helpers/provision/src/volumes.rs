//! Volumes: the host directories bound into a machine, created and seeded from the image on
//! first creation, and checked on every start.
//!
//! Everything here is done on directory handles, never on host path strings built from image
//! content:
//!
//! - the image side (what seeds a volume) is resolved inside the rootfs with `RESOLVE_IN_ROOT`,
//!   as a container runtime would: the image's own symlinks are followed, but only inside it;
//! - the host side (`config`/`data` volumes under the machine's config or storage dir) is walked
//!   one component at a time with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`: those trees belong to
//!   the host, so a symlink in them can only have been planted (copied from the image into an
//!   outer volume, or made by the machine's root through its bind) and is refused, never followed;
//! - the seed is copied from handle to handle ([`man8s_oci::snapshot::copy_contents`], which
//!   never follows a symlink and skips device nodes and sockets), into a temp name that is
//!   renamed into place only when complete.
//!
//! A bind source (the last component) must be a real directory; anything else is refused with one
//! line, because nspawn would follow a symlink there on the host and bind whatever it names.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use man8s::Paths;
use man8s::machine::{Machine, Volume, VolumeSource};
use man8s_oci::unpack::rootdir::{
    RootDir, is_type, lstat_at, open_subdir, remove_all, subdir_no_symlinks,
};
use man8s_oci::unpack::{RelPath, parse_entry_path};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, mkdirat};
use nix::unistd::{Gid, Uid, fchownat};

use crate::layered::RootIds;
use crate::private::{private_dir, private_volume_dir};
use crate::{Error, Result};

/// Temp name of a seed being copied, in the volume's parent (`+` is no machine-name character, and
/// no volume is called this: [`ensure_volumes`] refuses volume names starting with it).
const SEED_TMP: &[u8] = b".man8s+seed-tmp";

/// Create and seed (from the installed rootfs at `rootfs`) every volume of `machine` that does
/// not exist yet, and check that every `config`/`data`/`+` bind source is a real directory reached
/// without a symlink. Outer volumes are handled before the volumes nested in them.
pub fn ensure_volumes(paths: &Paths, machine: &Machine, rootfs: &Path) -> Result<()> {
    let image = RootDir::open(rootfs).ok();
    let ids = RootIds::of(paths, &machine.name)?;
    let mut volumes: Vec<&Volume> = machine.volumes.iter().collect();
    volumes.sort_by_key(|v| {
        v.container_path
            .split('/')
            .filter(|c| !c.is_empty())
            .count()
    });
    for v in volumes {
        ensure_volume(paths, machine, image.as_ref(), &ids, v)?;
    }
    Ok(())
}

fn ensure_volume(
    paths: &Paths,
    machine: &Machine,
    image: Option<&RootDir>,
    ids: &RootIds,
    v: &Volume,
) -> Result<()> {
    let name = &machine.name;
    let what = |why: String| Error::Other(format!("volume {}: {why}", v.container_path));
    let rel = parse_entry_path(v.container_path.trim_start_matches('/').as_bytes())
        .map_err(|e| what(format!("bad container path: {e}")))?;
    let (base, base_canonical, rel) = match &v.source {
        VolumeSource::Config => (
            paths.config_dir(name),
            Paths::config_dir_canonical(name),
            rel,
        ),
        VolumeSource::Data => (
            paths.storage_dir(name),
            Paths::storage_dir_canonical(name),
            rel,
        ),
        // nspawn's `+`: a directory of the rootfs, walked like the host trees below (the
        // machine writes its rootfs, so a symlink on the way is refused: nspawn would follow it
        // on the host). A missing one is made empty, as nspawn needs a source.
        VolumeSource::Root(p) => (
            paths.rootfs(name),
            Paths::rootfs_canonical(name),
            parse_entry_path(p.trim_start_matches('/').as_bytes())
                .map_err(|e| what(format!("bad path in the root: {e}")))?,
        ),
        VolumeSource::Host(p) => {
            // A path the administrator chose: trusted as it is, like any Bind= they write. Only
            // the seed (image content) is written through handles.
            let host = paths.fs(p);
            if host.symlink_metadata().is_ok() {
                return Ok(());
            }
            let (Some(parent), Some(last)) = (host.parent(), host.file_name()) else {
                return Err(what(format!("{} cannot be a volume", p.display())));
            };
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            let parent_fd = RootDir::open(parent).map_err(|e| Error::io(parent, e))?;
            use std::os::unix::ffi::OsStrExt;
            return seed(image, ids, &rel, parent_fd.fd(), last.as_bytes())
                .map_err(|e| what(format!("cannot create {}: {e}", p.display())));
        }
    };
    let in_root = matches!(v.source, VolumeSource::Root(_));
    if !in_root {
        let top = match &v.source {
            VolumeSource::Config => paths.fs(man8s::paths::CONFIG_DIR),
            _ => paths.fs(man8s::paths::STORAGE_DIR),
        };
        private_dir(&top)?;
        private_volume_dir(&base)?;
    }
    let Some((parent_rel, last)) = rel.split_last() else {
        return Err(what("the root cannot be a volume".into()));
    };
    if last.starts_with(SEED_TMP) {
        return Err(what("reserved name".into()));
    }
    let shown = |r: &RelPath| -> PathBuf {
        base_canonical.join(String::from_utf8_lossy(&r.to_bytes()).as_ref())
    };
    let root = RootDir::open(&base).map_err(|e| Error::io(&base, e))?;
    let mut dir: OwnedFd = root.fd().try_clone().map_err(|e| Error::io(&base, e))?;
    let mut walked = RelPath::default();
    for component in parent_rel.components() {
        walked = walked.join(component);
        dir = match subdir_no_symlinks(&dir, component.as_slice()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                mkdir_0755(&dir, component)
                    .and_then(|()| own_in_root(in_root, ids, &dir, component))
                    .map_err(|e| {
                        what(format!("cannot create {}: {e}", shown(&walked).display()))
                    })?;
                subdir_no_symlinks(&dir, component.as_slice())
                    .map_err(|e| what(format!("{}: {e}", shown(&walked).display())))?
            }
            Err(Errno::ELOOP) => {
                return Err(what(format!(
                    "{} is a symlink (put there by the image or the machine); \
                     man8s never writes through a symlink on the host",
                    shown(&walked).display()
                )));
            }
            Err(Errno::ENOTDIR) => {
                return Err(what(format!(
                    "{} is not a directory",
                    shown(&walked).display()
                )));
            }
            Err(e) => return Err(what(format!("{}: {e}", shown(&walked).display()))),
        };
    }
    match lstat_at(&dir, last).map_err(|e| what(format!("{}: {e}", shown(&rel).display())))? {
        Some(st) if is_type(&st, SFlag::S_IFDIR) => Ok(()),
        Some(st) => Err(what(format!(
            "bind source {} is {}, not a directory man8s created; refusing to bind it \
             (remove it if you did not put it there)",
            shown(&rel).display(),
            describe_mode(st.st_mode)
        ))),
        None if in_root => mkdir_0755(&dir, last)
            .and_then(|()| own_in_root(in_root, ids, &dir, last))
            .map_err(|e| what(format!("cannot create {}: {e}", shown(&rel).display()))),
        None => seed(image, ids, &rel, &dir, last)
            .map_err(|e| what(format!("cannot create {}: {e}", shown(&rel).display()))),
    }
}

/// A directory host root just made inside the machine's root (a `+` source) belongs to the
/// machine's root, as nspawn's own mount points do.
fn own_in_root(in_root: bool, ids: &RootIds, dir: &impl AsFd, name: &[u8]) -> std::io::Result<()> {
    if !in_root {
        return Ok(());
    }
    let id = ids.root_uid();
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(id)),
        Some(Gid::from_raw(id)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Create volume `last` in `parent`: a copy of the image's directory at `rel` when it has one,
/// else an empty directory (0755, host root's).
fn seed(
    image: Option<&RootDir>,
    ids: &RootIds,
    rel: &RelPath,
    parent: &impl AsFd,
    last: &[u8],
) -> std::io::Result<()> {
    let source = match image {
        Some(image) if !rel.is_root() => image.existing_dir(rel)?,
        _ => None,
    };
    let Some(source) = source else {
        return mkdir_0755(parent, last);
    };
    let source = openat(
        &source,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let shown = Path::new("/").join(String::from_utf8_lossy(&rel.to_bytes()).as_ref());
    // Owners as the machine sees them, stored as on-disk 0…65535 (see RootIds).
    let view = ids
        .copy_target(parent, &shown)
        .map_err(std::io::Error::other)?;
    let parent = match &view {
        Some(v) => v.as_fd(),
        None => parent.as_fd(),
    };
    // An interrupted copy stays under the temp name and is never mistaken for a seeded volume.
    remove_all(&parent, SEED_TMP, false)?;
    mkdirat(parent, SEED_TMP, Mode::from_bits_truncate(0o700))?;
    let tmp = open_subdir(parent, SEED_TMP)?;
    man8s_oci::snapshot::copy_contents(&source, &tmp, &shown).map_err(std::io::Error::other)?;
    renameat2(
        parent,
        SEED_TMP,
        parent,
        last,
        RenameFlags::RENAME_NOREPLACE,
    )?;
    Ok(())
}

fn mkdir_0755(parent: &impl AsFd, name: &[u8]) -> std::io::Result<()> {
    mkdirat(parent, name, Mode::from_bits_truncate(0o755))?;
    // Whatever the umask: the machine's processes must be able to enter it.
    fchmodat(
        parent,
        name,
        Mode::from_bits_truncate(0o755),
        FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|e| match e {
        // Older kernels cannot chmod without following; it is the directory just made.
        Errno::EOPNOTSUPP => fchmodat(
            parent,
            name,
            Mode::from_bits_truncate(0o755),
            FchmodatFlags::FollowSymlink,
        ),
        e => Err(e),
    })?;
    Ok(())
}

/// "a symlink", "a regular file", … from an `st_mode`.
fn describe_mode(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFCHR => "a character device",
        _ => "not a directory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use man8s::MachineName;
    use man8s::machine::SourceFiles;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn machine(vols: &[&str]) -> Machine {
        let mut m = Machine::new(
            MachineName::new("m").unwrap(),
            SourceFiles {
                main: "/etc/man8s/machines/m.machine".into(),
                dropins: vec![],
            },
            "x".into(),
        );
        for v in vols {
            m.volumes.push(Volume {
                container_path: (*v).into(),
                source: VolumeSource::Data,
                read_only: false,
            });
        }
        m
    }

    #[test]
    fn seeds_from_the_image_inside_its_root() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path().join("host"));
        let rootfs = d.path().join("rootfs");
        fs::create_dir_all(rootfs.join("data/sub")).unwrap();
        fs::write(rootfs.join("data/sub/f"), b"seed").unwrap();
        symlink("/etc/passwd", rootfs.join("data/l")).unwrap();
        // The image's /srv is a symlink to its /data: resolved inside the image.
        symlink("/data", rootfs.join("srv")).unwrap();
        ensure_volumes(&paths, &machine(&["/data", "/srv", "/empty"]), &rootfs).unwrap();
        let store = paths.storage_dir(&MachineName::new("m").unwrap());
        assert_eq!(fs::read(store.join("data/sub/f")).unwrap(), b"seed");
        assert_eq!(fs::read(store.join("srv/sub/f")).unwrap(), b"seed");
        assert_eq!(
            fs::read_link(store.join("data/l")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(store.join("empty").is_dir());
        use std::os::unix::fs::PermissionsExt;
        for private in [store.clone(), store.parent().unwrap().to_owned()] {
            let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", private.display());
        }
    }

    #[test]
    fn nested_volumes_never_go_through_a_seeded_symlink() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path().join("host"));
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let rootfs = d.path().join("rootfs");
        fs::create_dir_all(rootfs.join("a")).unwrap();
        symlink(&outside, rootfs.join("a/link")).unwrap();
        symlink("../../../../../../../../", rootfs.join("a/up")).unwrap();
        for (vols, why) in [
            (&["/a", "/a/link/x"][..], "is a symlink"),
            (&["/a/up/x", "/a"][..], "is a symlink"),
            (&["/a", "/a/link"][..], "bind source"),
        ] {
            let err = ensure_volumes(&paths, &machine(vols), &rootfs)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why) && !err.contains('\n'), "{vols:?}: {err}");
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{vols:?}");
        }
    }

    #[test]
    fn root_sources_stay_in_the_root_and_refuse_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path().join("host"));
        let name = MachineName::new("m").unwrap();
        let rootfs = paths.rootfs(&name);
        let outside = d.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(rootfs.join("srv/kept")).unwrap();
        fs::write(rootfs.join("srv/kept/f"), b"x").unwrap();
        fs::write(rootfs.join("file"), b"x").unwrap();
        symlink(&outside, rootfs.join("abs")).unwrap();
        symlink("../../../..", rootfs.join("up")).unwrap();
        let with = |src: &str| {
            let mut m = machine(&[]);
            m.volumes.push(Volume {
                container_path: "/mnt".into(),
                source: VolumeSource::Root(src.into()),
                read_only: false,
            });
            m
        };
        ensure_volumes(&paths, &with("/srv/kept"), &rootfs).unwrap();
        assert_eq!(fs::read(rootfs.join("srv/kept/f")).unwrap(), b"x");
        // A missing one is made empty, inside the root; no config or storage dir appears.
        ensure_volumes(&paths, &with("/var/cache/new"), &rootfs).unwrap();
        assert!(rootfs.join("var/cache/new").is_dir());
        assert!(!paths.storage_dir(&name).exists());
        for (src, why) in [
            ("/abs", "is a symlink"),
            ("/abs/x", "is a symlink"),
            ("/up/etc", "is a symlink"),
            ("/file", "a regular file"),
            ("/file/x", "not a directory"),
        ] {
            let err = ensure_volumes(&paths, &with(src), &rootfs)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why) && !err.contains('\n'), "{src}: {err}");
        }
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
