//! Where man8s reads and writes, relocatable with `MAN8S_ROOT`.
//!
//! Two views of every path: the *canonical* one (`/var/lib/man8machines/NAME`), which is what goes
//! into generated files because that is what the running system sees, and the *file-system* one
//! (`$MAN8S_ROOT/var/lib/man8machines/NAME`), which is where this process actually reads or writes.

use std::path::{Path, PathBuf};

use crate::MachineName;

/// Declaration directories, highest precedence first.
pub const DECLARATION_DIRS: [&str; 3] = [
    "/etc/man8s/machines",
    "/run/man8s/machines",
    "/usr/lib/man8s/machines",
];
/// Installed machine root file systems.
pub const ROOTFS_DIR: &str = "/var/lib/man8machines";
/// machinectl's directory; man8s links each machine there.
pub const MACHINES_DIR: &str = "/var/lib/machines";
/// Per-machine configuration: `man8env.env` and `config` volumes.
pub const CONFIG_DIR: &str = "/var/lib/man8machine_configs";
/// Per-machine data: `data` volumes.
pub const STORAGE_DIR: &str = "/var/lib/man8machine_storage";
/// Volume snapshots, one directory per machine (host-owned; never bound into a machine).
pub const SNAPSHOT_DIR: &str = "/var/lib/man8s/snapshots";
/// Content-addressed blob cache and image metadata.
pub const CACHE_DIR: &str = "/var/cache/man8s";
/// The Python mbctl's scratch space (image downloads, unpacking); `mbctl cache clear` empties it.
pub const PYTHON_SCRATCH_DIR: &str = "/var/tmp/man8s";
/// What `mbctl migrate` appends to the Python mbctl's `/etc/systemd/nspawn/NAME.nspawn` when it
/// keeps it (it would win over the generated settings file).
pub const PYTHON_SETTINGS_KEPT_SUFFIX: &str = ".python-mbctl";
/// The admin's unit files and drop-ins.
pub const UNIT_ETC_DIR: &str = "/etc/systemd/system";
/// Settings files written by the generator.
pub const NSPAWN_RUN_DIR: &str = "/run/systemd/nspawn";
/// A user's own settings files, which win over ours.
pub const NSPAWN_ETC_DIR: &str = "/etc/systemd/nspawn";
/// Host-wide man8s configuration (bridge name, …).
pub const MAN8S_CONF: &str = "/etc/man8s/man8s.conf";
/// Registry credentials in Docker's `auths` format.
pub const AUTH_FILE: &str = "/etc/man8s/auth.json";
/// Registries that may be reached over plain HTTP.
pub const REGISTRIES_CONF: &str = "/etc/man8s/registries.conf";
/// The init, bound read-only into every machine.
pub const INIT_BINARY: &str = "/usr/lib/man8s/man8s-init";
/// Environment variable the generator sets in `man8@NAME.service` to the fingerprint of the
/// declaration it rendered (`man8s::declaration::fingerprint`); `man8s-fetch` compares.
pub const DECLARATION_FINGERPRINT_ENV: &str = "MAN8S_DECLARATION_SHA256";
/// Where the init appears inside a machine.
pub const INIT_IN_MACHINE: &str = "/run/host/man8s/man8s-init";
/// Host-owned state of each machine (image config, source record): `NAME/` below it. Host
/// tools trust only this copy, never anything inside the rootfs, which the machine can rewrite.
pub const MACHINE_STATE_DIR: &str = "/var/lib/man8s/machines";
/// Subdirectory of a machine's state dir bound read-only into the machine (the image config).
pub const IMAGE_STATE_SUBDIR: &str = "image";
/// Where that subdirectory appears inside a machine (`image.json` in it).
pub const IMAGE_STATE_IN_MACHINE: &str = "/run/host/man8s/image";
/// Where man8env.env appears inside a machine.
pub const ENV_FILE_IN_MACHINE: &str = "/man8env.env";
/// Name of the environment file inside a machine's config dir.
pub const ENV_FILE_NAME: &str = "man8env.env";

/// Resolves canonical paths against an optional root prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self::new("/")
    }
}

impl Paths {
    /// Paths under `root` (use `/` for the real system).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Paths under `$MAN8S_ROOT`, or `/` when it is unset or empty.
    pub fn from_env() -> Self {
        match std::env::var_os("MAN8S_ROOT") {
            Some(r) if !r.is_empty() => Self::new(r),
            _ => Self::default(),
        }
    }

    /// The root prefix.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `canonical` (an absolute path) lives on this process's file system.
    pub fn fs(&self, canonical: impl AsRef<Path>) -> PathBuf {
        let canonical = canonical.as_ref();
        let relative = canonical.strip_prefix("/").unwrap_or(canonical);
        if relative.as_os_str().is_empty() {
            return self.root.clone();
        }
        self.root.join(relative)
    }

    /// Declaration search directories (file-system view), highest precedence first.
    pub fn declaration_dirs(&self) -> Vec<PathBuf> {
        DECLARATION_DIRS.iter().map(|d| self.fs(d)).collect()
    }

    /// Canonical rootfs path of a machine.
    pub fn rootfs_canonical(name: &MachineName) -> PathBuf {
        Path::new(ROOTFS_DIR).join(name.as_str())
    }
    /// File-system rootfs path of a machine.
    pub fn rootfs(&self, name: &MachineName) -> PathBuf {
        self.fs(Self::rootfs_canonical(name))
    }
    /// The `/var/lib/machines/NAME` link (file-system view).
    pub fn machines_link(&self, name: &MachineName) -> PathBuf {
        self.fs(MACHINES_DIR).join(name.as_str())
    }
    /// Canonical config dir of a machine.
    pub fn config_dir_canonical(name: &MachineName) -> PathBuf {
        Path::new(CONFIG_DIR).join(name.as_str())
    }
    /// File-system config dir of a machine.
    pub fn config_dir(&self, name: &MachineName) -> PathBuf {
        self.fs(Self::config_dir_canonical(name))
    }
    /// Canonical data dir of a machine.
    pub fn storage_dir_canonical(name: &MachineName) -> PathBuf {
        Path::new(STORAGE_DIR).join(name.as_str())
    }
    /// File-system data dir of a machine.
    pub fn storage_dir(&self, name: &MachineName) -> PathBuf {
        self.fs(Self::storage_dir_canonical(name))
    }
    /// File-system man8env.env of a machine.
    pub fn env_file(&self, name: &MachineName) -> PathBuf {
        self.config_dir(name).join(ENV_FILE_NAME)
    }
    /// Canonical host-owned state dir of a machine.
    pub fn state_dir_canonical(name: &MachineName) -> PathBuf {
        Path::new(MACHINE_STATE_DIR).join(name.as_str())
    }
    /// File-system host-owned state dir of a machine.
    pub fn state_dir(&self, name: &MachineName) -> PathBuf {
        self.fs(Self::state_dir_canonical(name))
    }
    /// File-system snapshot dir of a machine (its config and data volumes at points in time).
    pub fn snapshot_dir(&self, name: &MachineName) -> PathBuf {
        self.fs(SNAPSHOT_DIR).join(name.as_str())
    }
    /// File-system cache dir.
    pub fn cache_dir(&self) -> PathBuf {
        self.fs(CACHE_DIR)
    }
    /// A user's own settings file for a machine (file-system view).
    pub fn nspawn_etc(&self, name: &MachineName) -> PathBuf {
        self.fs(NSPAWN_ETC_DIR).join(format!("{name}.nspawn"))
    }
    /// The Python mbctl's settings file of a machine as `mbctl migrate` kept it.
    pub fn nspawn_etc_kept(&self, name: &MachineName) -> PathBuf {
        self.fs(NSPAWN_ETC_DIR)
            .join(format!("{name}.nspawn{PYTHON_SETTINGS_KEPT_SUFFIX}"))
    }
    /// The admin's drop-in dir of a machine's unit, `/etc/systemd/system/man8@NAME.service.d`.
    pub fn unit_dropin_dir(&self, name: &MachineName) -> PathBuf {
        self.fs(UNIT_ETC_DIR).join(format!("man8@{name}.service.d"))
    }
    /// File-system view of the Python mbctl's scratch dir.
    pub fn python_scratch_dir(&self) -> PathBuf {
        self.fs(PYTHON_SCRATCH_DIR)
    }
    /// Our generated settings file for a machine (file-system view).
    pub fn nspawn_run(&self, name: &MachineName) -> PathBuf {
        self.fs(NSPAWN_RUN_DIR).join(format!("{name}.nspawn"))
    }
}

/// Write `text` to `path` unless it already holds exactly that: temp file + rename, so readers
/// never see half a file, and an unchanged file keeps its mtime (path units watching it stay
/// quiet). Creates the parent directories. `Ok(true)` when written.
pub fn write_if_changed(path: &Path, text: &str) -> std::io::Result<bool> {
    match std::fs::read(path) {
        Ok(old) if old == text.as_bytes() => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let dir = path.parent().expect("absolute path has a parent");
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().expect("file path").to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocates_under_root() {
        let p = Paths::new("/tmp/x");
        let n = MachineName::new("web").unwrap();
        assert_eq!(p.rootfs(&n), Path::new("/tmp/x/var/lib/man8machines/web"));
        assert_eq!(
            Paths::rootfs_canonical(&n),
            Path::new("/var/lib/man8machines/web")
        );
        assert_eq!(p.fs("/"), Path::new("/tmp/x"));
        assert_eq!(
            Paths::default().env_file(&n),
            Path::new("/var/lib/man8machine_configs/web/man8env.env")
        );
    }
}
