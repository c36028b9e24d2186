//! Host-owned directories that other host users must not reach.
//!
//! Rootfs trees and volumes hold whatever an image (or a machine's root, through its idmapped
//! binds) put there, setuid-root files and device nodes included. Like systemd's
//! `/var/lib/machines`, their parents are `0700 root`, so nothing inside is reachable by another
//! user of the host, whatever its own mode.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::{Error, IoContext, Result};

/// Make `dir` exist as a directory of mode 0700 (its parents as usual): an existing one whose
/// mode lets group or others in (one made by the Python tool, or by hand) is tightened. A
/// symlink or other non-directory there is refused.
pub fn private_dir(dir: &Path) -> Result<()> {
    private_dir_made(dir, |d| fs::DirBuilder::new().mode(0o700).create(d))
}

/// [`private_dir`] for a machine's config or storage dir: a new one is made by
/// [`man8s_oci::snapshot::create_volume_dir`] (a btrfs subvolume where the file system is btrfs,
/// so that its snapshots are btrfs snapshots).
pub fn private_volume_dir(dir: &Path) -> Result<()> {
    private_dir_made(dir, |d| man8s_oci::snapshot::create_volume_dir(d).map(drop))
}

fn private_dir_made(dir: &Path, make: impl Fn(&Path) -> io::Result<()> + Copy) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o077 != 0 {
                let mode = m.permissions().mode() & 0o7700;
                fs::set_permissions(dir, fs::Permissions::from_mode(mode)).at(dir)?;
            }
            Ok(())
        }
        Ok(m) => Err(Error::Other(format!(
            "{}: is {}, not a directory",
            dir.display(),
            man8s::untrusted::describe_type(&m.file_type())
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).at(parent)?;
            }
            match make(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return private_dir_made(dir, make);
                }
                Err(e) => return Err(Error::io(dir, e)),
            }
            // Whatever the umask.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).at(dir)
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_tightens_but_never_follows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        private_dir(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        let link = d.path().join("link");
        std::os::unix::fs::symlink("/", &link).unwrap();
        let err = private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert_ne!(
            fs::metadata("/").unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
