//! The `/var/lib/machines/NAME` link that lets machinectl see a machine.

use std::fs;
use std::io;

use man8s::{MachineName, Paths};

use crate::{Error, IoContext, Result};

/// Make `/var/lib/machines/NAME` a symlink to the canonical rootfs, for machinectl. An existing
/// non-link there (a user's own machine) is left alone.
pub fn link_for_machinectl(paths: &Paths, name: &MachineName) -> Result<()> {
    let link = paths.machines_link(name);
    let target = Paths::rootfs_canonical(name);
    match fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            if fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
                return Ok(());
            }
        }
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&link, e)),
    }
    let dir = link.parent().expect("link has a parent");
    fs::create_dir_all(dir).at(dir)?;
    let tmp = dir.join(format!(
        ".{name}{}link-tmp",
        man8s_oci::install::TEMP_SEPARATOR
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).at(&tmp)?;
    fs::rename(&tmp, &link).at(&link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn machinectl_link_never_replaces_a_real_directory() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        let name = MachineName::new("m").unwrap();
        link_for_machinectl(&paths, &name).unwrap();
        let link = paths.machines_link(&name);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/var/lib/man8machines/m")
        );
        // A stale link elsewhere is corrected; a user's own directory is left alone.
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        link_for_machinectl(&paths, &name).unwrap();
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/var/lib/man8machines/m")
        );
        fs::remove_file(&link).unwrap();
        fs::create_dir(&link).unwrap();
        link_for_machinectl(&paths, &name).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_dir());
    }
}
