//! Host-owned state of a machine: what was installed (source record) and its image config.
//!
//! Lives in `/var/lib/man8s/machines/NAME/` (mode 0700), which nothing inside the machine can
//! reach or write:
//!
//! ```text
//! source.json            reference, manifest digest, when pulled
//! image/image.json       the OCI image config, bound read-only at /run/host/man8s/image
//! previous/…             the same two for the kept `.NAME.previous` rootfs (rollback)
//! ```
//!
//! A rootfs also carries `/.man8s/image.json` and `/.man8s/source.json` for the machine's own use
//! (and for machines made before this directory existed, which the init falls back to); host
//! tools never read those, because the machine's root can rewrite them. Even the files here are
//! read bounded and never through a symlink or FIFO.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use man8s::paths::{IMAGE_STATE_SUBDIR, MACHINE_STATE_DIR};
use man8s::untrusted::{SMALL_FILE_LIMIT, read_regular};
use man8s::{MachineName, Paths};
use man8s_oci::install::Source;
use man8s_oci::manifest::MAX_CONFIG_BYTES;
use man8s_oci::pull::ResolvedImage;

use crate::private::private_dir;
use crate::{Error, IoContext, Result};

const SOURCE: &str = "source.json";
const IMAGE_CONFIG: &str = "image.json";
const PREVIOUS: &str = "previous";

/// The state dir of one machine.
#[derive(Clone, Debug)]
pub struct MachineState {
    dir: PathBuf,
}

impl MachineState {
    /// Machine `name`'s state (nothing is created yet).
    pub fn new(paths: &Paths, name: &MachineName) -> Self {
        Self {
            dir: paths.state_dir(name),
        }
    }

    /// The directory (file-system view).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Make the state dir (0700, in a 0700 parent) and its `image/` subdir exist: nspawn's
    /// read-only bind of it needs a source even for a machine with no recorded image.
    pub fn ensure(&self) -> Result<()> {
        if let Some(top) = self.dir.parent()
            && top.ends_with(MACHINE_STATE_DIR.trim_start_matches('/'))
        {
            private_dir(top)?;
        }
        private_dir(&self.dir)?;
        let image = self.dir.join(IMAGE_STATE_SUBDIR);
        match fs::symlink_metadata(&image) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::Other(format!(
                "{}: not a directory",
                image.display()
            ))),
            Err(_) => {
                fs::create_dir(&image).at(&image)?;
                fs::set_permissions(&image, fs::Permissions::from_mode(0o755)).at(&image)
            }
        }
    }

    /// What is installed, when recorded.
    pub fn source(&self) -> Option<Source> {
        read_json(&self.dir.join(SOURCE))
    }

    /// What the kept previous rootfs holds, when recorded.
    pub fn previous_source(&self) -> Option<Source> {
        read_json(&self.dir.join(PREVIOUS).join(SOURCE))
    }

    /// The image config JSON of what is installed, when recorded.
    pub fn image_config(&self) -> Option<Vec<u8>> {
        read_regular(
            &self.dir.join(IMAGE_STATE_SUBDIR).join(IMAGE_CONFIG),
            MAX_CONFIG_BYTES,
        )
        .ok()
    }

    /// Record `image` as installed. With `keep_previous` the record of what was installed
    /// before moves to `previous/` (as `install_tree` keeps the old rootfs); otherwise a
    /// `previous/` record is dropped with it.
    pub fn record(&self, image: &ResolvedImage, keep_previous: bool) -> Result<()> {
        self.ensure()?;
        let previous = self.dir.join(PREVIOUS);
        man8s_oci::install::remove_any(&previous)?;
        if keep_previous && self.dir.join(SOURCE).exists() {
            fs::create_dir(&previous).at(&previous)?;
            fs::create_dir(previous.join(IMAGE_STATE_SUBDIR)).at(&previous)?;
            for rel in [
                PathBuf::from(SOURCE),
                Path::new(IMAGE_STATE_SUBDIR).join(IMAGE_CONFIG),
            ] {
                let from = self.dir.join(&rel);
                if from.exists() {
                    fs::copy(&from, previous.join(&rel)).at(previous.join(&rel))?;
                }
            }
        }
        let image_dir = self.dir.join(IMAGE_STATE_SUBDIR);
        write_atomic(&image_dir, IMAGE_CONFIG, &image.config_json)?;
        let mut json =
            serde_json::to_vec_pretty(&Source::of(image)).expect("a source record serialises");
        json.push(b'\n');
        write_atomic(&self.dir, SOURCE, &json)
    }

    /// After a rollback swapped the rootfs with `.NAME.previous`: swap the records too.
    pub fn swap_previous(&self) -> Result<()> {
        let previous = self.dir.join(PREVIOUS);
        if !previous.is_dir() {
            return Ok(());
        }
        for rel in [
            PathBuf::from(SOURCE),
            Path::new(IMAGE_STATE_SUBDIR).join(IMAGE_CONFIG),
        ] {
            let (a, b) = (self.dir.join(&rel), previous.join(&rel));
            match (a.exists(), b.exists()) {
                (true, true) => nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &a,
                    nix::fcntl::AT_FDCWD,
                    &b,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .map_err(|e| Error::io(&a, e.into()))?,
                (true, false) => fs::rename(&a, &b).at(&b)?,
                (false, true) => fs::rename(&b, &a).at(&a)?,
                (false, false) => {}
            }
        }
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = read_regular(path, SMALL_FILE_LIMIT).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Write `dir/name` whole or not at all (temp file + rename), mode 0644.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
    tmp.write_all(data).at(&path)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644)).at(&path)?;
    tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(digest: &str, config: &str) -> ResolvedImage {
        ResolvedImage {
            reference: man8s_oci::ImageRef::parse("localhost:5000/app:1").unwrap(),
            manifest_digest: digest.into(),
            index_digest: None,
            manifest: man8s_oci::manifest::ImageManifest {
                config: man8s_oci::manifest::Descriptor {
                    media_type: String::new(),
                    digest: String::new(),
                    size: 0,
                    platform: None,
                },
                layers: Vec::new(),
            },
            config_json: config.as_bytes().to_vec(),
            config: Default::default(),
            from_network: false,
        }
    }

    #[test]
    fn records_keeps_previous_and_swaps_back() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        let state = MachineState::new(&paths, &MachineName::new("m").unwrap());
        assert!(state.source().is_none());
        state.record(&image("sha256:1", "{\"a\":1}"), true).unwrap();
        state.record(&image("sha256:2", "{\"a\":2}"), true).unwrap();
        assert_eq!(state.source().unwrap().manifest_digest, "sha256:2");
        assert_eq!(state.previous_source().unwrap().manifest_digest, "sha256:1");
        assert_eq!(state.image_config().unwrap(), b"{\"a\":2}");
        state.swap_previous().unwrap();
        assert_eq!(state.source().unwrap().manifest_digest, "sha256:1");
        assert_eq!(state.image_config().unwrap(), b"{\"a\":1}");
        let top = paths.fs(MACHINE_STATE_DIR);
        for dir in [top, state.dir().to_owned()] {
            let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        state.record(&image("sha256:3", "{}"), false).unwrap();
        assert!(state.previous_source().is_none());
    }

    #[test]
    fn a_fifo_or_link_in_place_of_a_record_is_no_record() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        let state = MachineState::new(&paths, &MachineName::new("m").unwrap());
        state.ensure().unwrap();
        nix::unistd::mkfifo(
            &state.dir().join(SOURCE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", state.dir().join("image/image.json")).unwrap();
        assert!(state.source().is_none());
        assert!(state.image_config().is_none());
    }
}
