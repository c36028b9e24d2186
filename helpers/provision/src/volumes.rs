//! Volumes: the host directories bound into a machine, created and seeded from the image on first creation.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use man8s::Paths;
use man8s::machine::Machine;

use man8s_oci::install::remove_any;

use crate::{IoContext, Result};

/// Create and seed (from the installed rootfs) every volume of `machine` that does not exist yet.
pub fn ensure_volumes(paths: &Paths, machine: &Machine) -> Result<()> {
    let name = &machine.name;
    let rootfs = paths.rootfs(name);
    for v in &machine.volumes {
        // Host paths are canonical too: MAN8S_ROOT relocates them like everything else.
        let host = paths.fs(v.host_path(name));
        if fs::symlink_metadata(&host).is_ok() {
            continue; // not a first creation: the user's data stays as it is
        }
        let parent = host.parent().expect("volume path has a parent");
        fs::create_dir_all(parent).at(parent)?;
        match resolve_in_root(&rootfs, &v.container_path) {
            Some(src) if fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) => {
                // Copy into a temp name first: an interrupted copy is not mistaken for a seeded volume.
                let tmp = parent.join(format!(
                    ".{}.seed-tmp",
                    host.file_name().and_then(OsStr::to_str).unwrap_or("volume")
                ));
                remove_any(&tmp)?;
                copy_tree(&src, &tmp)?;
                fs::rename(&tmp, &host).at(&host)?;
            }
            _ => {
                fs::create_dir(&host).at(&host)?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755)).at(&host)?;
            }
        }
    }
    Ok(())
}

/// Resolve `path` inside `root` as if `root` were `/`: symlinks (absolute or relative) are
/// followed within the tree, `..` stops at the root. Returns a host path with no symlink in
/// its components below `root`, or `None` if it does not exist or loops.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(comp) = todo.pop() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let candidate: PathBuf = cur
            .iter()
            .chain(std::iter::once(&comp))
            .fold(root.to_path_buf(), |p, c| p.join(c));
        let meta = fs::symlink_metadata(&candidate).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = fs::read_link(&candidate).ok()?;
            if target.is_absolute() {
                cur.clear();
            }
            let parts: Vec<String> = target
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                })
                .collect();
            todo.extend(parts.into_iter().rev());
        } else {
            cur.push(comp);
        }
    }
    Some(cur.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// Copy a tree keeping modes, owners and symlinks (never following them). Device nodes,
/// fifos and sockets are skipped: volumes hold data.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(src).at(src)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let t = fs::read_link(src).at(src)?;
        std::os::unix::fs::symlink(&t, dst).at(dst)?;
    } else if ft.is_dir() {
        fs::create_dir(dst).at(dst)?;
        for e in fs::read_dir(src).at(src)? {
            let e = e.at(src)?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).at(dst)?;
    } else if ft.is_file() {
        let mut from = File::open(src).at(src)?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .at(dst)?;
        io::copy(&mut from, &mut to).at(dst)?;
    } else {
        return Ok(());
    }
    if nix::unistd::geteuid().is_root() || !ft.is_symlink() {
        let _ = nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            dst,
            Some(nix::unistd::Uid::from_raw(meta.uid())),
            Some(nix::unistd::Gid::from_raw(meta.gid())),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
    }
    if ft.is_file() {
        // After chown, which clears setuid/setgid.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).at(dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("run/x")).unwrap();
        fs::create_dir_all(r.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", r.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("var/esc")).unwrap();
        assert_eq!(resolve_in_root(r, "/var/run/x"), Some(r.join("run/x")));
        // `..` cannot climb out of the root: lands on /etc inside it, which does not exist.
        assert_eq!(resolve_in_root(r, "/var/esc"), None);
        fs::create_dir(r.join("etc")).unwrap();
        assert_eq!(resolve_in_root(r, "/var/esc"), Some(r.join("etc")));
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in_root(r, "/loop"), None);
    }
}
