//! The layer store: each image layer unpacked once, read-only, shared by every layered machine.
//!
//! Layout (below the cache dir):
//!
//! | path | what |
//! |---|---|
//! | `layers/sha256/<chain_id hex>/` | one layer alone, its whiteouts as overlayfs reads them (a 0:0 character device; opaque directories carry `trusted.overlay.opaque=y`) |
//! | `layers/top/<manifest hex>/` | an image's own top layer: `/.man8s/image.json`, `/run` and `/tmp` kept under their protected names and emptied, an empty `/usr` where the image has none (what [`crate::install::finish_tree`] does to a full copy) |
//! | `layers/.gc.lock` | shared while layers are added, exclusive while [`LayerStore::gc`] removes them |
//!
//! Layers are keyed by chain_id (OCI image spec: `chain_id(L0) = diff_id(L0)`, `chain_id(Ln) =
//! sha256(chain_id(Ln-1) + " " + diff_id(Ln))`): a layer is unpacked alone, but a hard link in it
//! may only name a file of the same layer, and keying by the chain keeps the door open to resolving
//! more against the layers below. A directory lands under its name only by rename once complete
//! and checked against its diff_id, so anything there is whole.
//!
//! Semantics are those of Docker's and containerd's overlay drivers: a layer is unpacked on its
//! own, so a path through a symlink of a lower layer (`var/run/x` with `var/run -> /run` below) is
//! a real directory of this layer. Image builders never write such entries.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::cache::BlobCache;
use crate::error::{Error, IoContext, Result};
use crate::install::{META_DIR, RUN_PROTECTED, TEMP_SEPARATOR, TMP_PROTECTED, remove_any};
use crate::progress::{Event, Progress};
use crate::pull::ResolvedImage;
use crate::reference::digest_hex;
use crate::unpack::{OVERLAY_OPAQUE_XATTR, UnpackOptions};

/// The layers of one image, as a machine records them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerSet {
    /// The image's manifest digest (names its top layer).
    pub manifest_digest: String,
    /// The chain_ids of its layers, bottom first.
    pub chain_ids: Vec<String>,
}

/// The chain_ids of `diff_ids` (bottom first).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// What [`LayerStore::gc`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Layer directories removed.
    pub removed: usize,
}

/// Held while layers just added are not yet recorded by a machine: [`LayerStore::gc`] waits.
pub struct Pin {
    _lock: nix::fcntl::Flock<File>,
}

/// The layer store of one cache dir.
#[derive(Clone, Debug)]
pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    /// The store of a system (`/var/cache/man8s/layers`, relocated by `MAN8S_ROOT`).
    pub fn new(paths: &man8s::Paths) -> Self {
        Self::at(paths.cache_dir().join("layers"))
    }

    /// A store at an explicit directory.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the layer with `chain_id` (whether or not it exists).
    pub fn layer_dir(&self, chain_id: &str) -> Result<PathBuf> {
        let hex = digest_hex(chain_id)
            .ok_or_else(|| Error::Other(format!("invalid chain_id {chain_id:?}")))?;
        Ok(self.root.join("sha256").join(hex))
    }

    /// Directory of the top layer of the image with `manifest_digest`.
    pub fn top_dir(&self, manifest_digest: &str) -> Result<PathBuf> {
        let hex = digest_hex(manifest_digest)
            .ok_or_else(|| Error::Other(format!("invalid digest {manifest_digest:?}")))?;
        Ok(self.root.join("top").join(hex))
    }

    /// The overlayfs lower dirs of `set`, topmost first (its top layer, then its layers).
    pub fn lowers(&self, set: &LayerSet) -> Result<Vec<PathBuf>> {
        let mut out = vec![self.top_dir(&set.manifest_digest)?];
        for c in set.chain_ids.iter().rev() {
            out.push(self.layer_dir(c)?);
        }
        Ok(out)
    }

    /// True when every directory of `set` is in the store.
    pub fn has(&self, set: &LayerSet) -> bool {
        self.lowers(set)
            .is_ok_and(|dirs| dirs.iter().all(|d| d.is_dir()))
    }

    fn private_dirs(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.root.join("sha256"),
            self.root.join("top"),
        ] {
            if !d.is_dir() {
                // Layers of private images: not for other users (like the blob cache).
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&d)
                    .at(&d)?;
            }
        }
        Ok(())
    }

    fn lock(
        &self,
        name: &str,
        arg: nix::fcntl::FlockArg,
    ) -> Result<Option<nix::fcntl::Flock<File>>> {
        lock_file(&self.root.join(name), arg)
    }

    /// The lock of one store dir `dir` (`.HEX.lock` beside it): two machines of one image
    /// starting at once, the second waits, then finds the dir complete.
    fn lock_dir(&self, dir: &Path) -> Result<Option<nix::fcntl::Flock<File>>> {
        let hex = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
        lock_file(
            &dir.with_file_name(format!(".{hex}.lock")),
            nix::fcntl::FlockArg::LockExclusive,
        )
    }

    /// Make every layer of `image` and its top layer exist in the store, unpacking the missing
    /// ones (each waits for its blob with `ready(i)`). The returned [`Pin`] keeps
    /// [`LayerStore::gc`] away until the caller has recorded the set.
    pub fn ensure(
        &self,
        image: &ResolvedImage,
        cache: &BlobCache,
        opts: &UnpackOptions,
        progress: &dyn Progress,
        ready: &dyn Fn(usize) -> Result<()>,
    ) -> Result<(LayerSet, Pin)> {
        self.private_dirs()?;
        let pin = Pin {
            _lock: self
                .lock(".gc.lock", nix::fcntl::FlockArg::LockShared)?
                .expect("a blocking lock"),
        };
        let chains = chain_ids(&image.config.rootfs.diff_ids);
        let n = image.manifest.layers.len();
        if chains.len() != n {
            return Err(Error::Manifest {
                image: image.reference.to_string(),
                reason: format!("{n} layers but {} diff_ids", chains.len()),
            });
        }
        let layer_opts = UnpackOptions {
            overlay: true,
            ..opts.clone()
        };
        let mut left = opts.max_total_size;
        for (index, chain) in chains.iter().enumerate() {
            let dir = self.layer_dir(chain)?;
            let _one = self.lock_dir(&dir)?;
            if dir.is_dir() {
                ready(index)?;
                continue;
            }
            ready(index)?;
            progress.event(Event::Unpacking { index, layers: n });
            let tmp = self.temp_dir(&dir)?;
            let opts = UnpackOptions {
                max_total_size: left,
                ..layer_opts.clone()
            };
            let stats = crate::install::unpack_layer(tmp.path(), image, index, cache, &opts)?;
            left = left.saturating_sub(stats.bytes);
            fs::rename(tmp.keep(), &dir).at(&dir)?;
        }
        let set = LayerSet {
            manifest_digest: image.manifest_digest.clone(),
            chain_ids: chains,
        };
        self.ensure_top(image, &set)?;
        Ok((set, pin))
    }

    /// `.HEX+tmp-XXXXXX` beside `dir`, mode 0755 (the layer's root unless its tar says otherwise).
    fn temp_dir(&self, dir: &Path) -> Result<tempfile::TempDir> {
        let parent = dir.parent().expect("store dirs have a parent");
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}{TEMP_SEPARATOR}tmp-"))
            .tempdir_in(parent)
            .at(parent)?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).at(tmp.path())?;
        Ok(tmp)
    }

    /// The image's top layer (see the module doc), made from a read-only overlay of its layers.
    fn ensure_top(&self, image: &ResolvedImage, set: &LayerSet) -> Result<()> {
        let dir = self.top_dir(&set.manifest_digest)?;
        let _one = self.lock_dir(&dir)?;
        if dir.is_dir() {
            return Ok(());
        }
        let tmp = self.temp_dir(&dir)?;
        let mut layer_dirs = Vec::new();
        for c in set.chain_ids.iter().rev() {
            layer_dirs.push(self.layer_dir(c)?);
        }
        let merged = Merged::mount(&layer_dirs, &self.root)?;
        fill_top(tmp.path(), merged.path(), &image.config_json)?;
        drop(merged);
        fs::rename(tmp.keep(), &dir).at(&dir)?;
        Ok(())
    }

    /// Remove every layer and top layer that no set in `keep` names, and temp dirs of
    /// interrupted unpacks. Waits while layers are being added.
    pub fn gc(&self, keep: &[LayerSet]) -> Result<GcReport> {
        let mut report = GcReport::default();
        if !self.root.is_dir() {
            return Ok(report);
        }
        let _lock = self.lock(".gc.lock", nix::fcntl::FlockArg::LockExclusive)?;
        let mut live = BTreeSet::new();
        for set in keep {
            for d in self.lowers(set)? {
                live.insert(d);
            }
        }
        for sub in ["sha256", "top"] {
            let dir = self.root.join(sub);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".lock") || live.contains(&path) {
                    continue;
                }
                remove_any(&path)?;
                if !name.starts_with('.') {
                    report.removed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Number of complete layers in the store (top layers not counted).
    pub fn count(&self) -> usize {
        fs::read_dir(self.root.join("sha256"))
            .map(|r| {
                r.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// Open (creating) `path` and `flock` it; `None` when a non-blocking `arg` finds it taken.
pub fn lock_file(
    path: &Path,
    arg: nix::fcntl::FlockArg,
) -> Result<Option<nix::fcntl::Flock<File>>> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at(path)?;
    match nix::fcntl::Flock::lock(file, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::io(path, io::Error::from(e))),
    }
}

/// A read-only overlay of layer dirs (topmost first) at a temp mount point, unmounted on drop.
/// One layer needs no mount.
pub struct Merged {
    mount: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Merged {
    /// Mount `lowers` (topmost first) below `scratch`.
    pub fn mount(lowers: &[PathBuf], scratch: &Path) -> Result<Merged> {
        match lowers {
            [] => Err(Error::Other("an image without layers".into())),
            [one] => Ok(Merged {
                mount: None,
                path: one.clone(),
            }),
            _ => {
                let at = tempfile::Builder::new()
                    .prefix(&format!(".merged{TEMP_SEPARATOR}tmp-"))
                    .tempdir_in(scratch)
                    .at(scratch)?;
                let list: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
                let opts = format!("lowerdir={}", list.join(":"));
                nix::mount::mount(
                    Some("overlay"),
                    at.path(),
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY
                        | nix::mount::MsFlags::MS_NOSUID
                        | nix::mount::MsFlags::MS_NODEV,
                    Some(opts.as_str()),
                )
                .map_err(|e| Error::io(at.path(), e.into()))?;
                Ok(Merged {
                    path: at.path().to_owned(),
                    mount: Some(at),
                })
            }
        }
    }

    /// The merged tree.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        if let Some(at) = &self.mount {
            let _ = nix::mount::umount2(at.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Fill a new top layer `top` for the image whose merged layers are at `merged` (image content:
/// nothing there is followed).
fn fill_top(top: &Path, merged: &Path, config_json: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let opaque_dir = |path: &Path, mode: u32| -> Result<()> {
        fs::create_dir(path).at(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).at(path)?;
        let fd = File::open(path).at(path)?;
        crate::unpack::rootdir::fsetxattr(&fd, OVERLAY_OPAQUE_XATTR, b"y").at(path)
    };
    let meta = top.join(META_DIR);
    opaque_dir(&meta, 0o755)?;
    let json = meta.join("image.json");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&json)
        .at(&json)?;
    io::Write::write_all(&mut f, config_json).at(&json)?;
    for (dir, protected, mode) in [
        ("run", RUN_PROTECTED, 0o755),
        ("tmp", TMP_PROTECTED, 0o1777),
    ] {
        let from = merged.join(dir);
        match fs::symlink_metadata(&from) {
            Ok(m) if m.is_dir() => {
                crate::snapshot::copy_tree(&from, top, protected)
                    .map_err(|e| Error::Other(e.to_string()))?;
                let kept = File::open(top.join(protected)).at(top.join(protected))?;
                // Our copy replaces whatever the image had under that name.
                crate::unpack::rootdir::fsetxattr(&kept, OVERLAY_OPAQUE_XATTR, b"y")
                    .at(top.join(protected))?;
            }
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&from).at(&from)?;
                std::os::unix::fs::symlink(target, top.join(protected)).at(top.join(protected))?;
            }
            _ => {}
        }
        opaque_dir(&top.join(dir), mode)?;
    }
    // systemd-nspawn refuses a tree without /usr (see finish_tree).
    if fs::symlink_metadata(merged.join("usr")).is_err() {
        let usr = top.join("usr");
        fs::create_dir(&usr).at(&usr)?;
        fs::set_permissions(&usr, fs::Permissions::from_mode(0o755)).at(&usr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let ids = chain_ids(&[d('a'), d('b')]);
        assert_eq!(ids[0], d('a'));
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{} {}", d('a'), d('b')).as_bytes()))
        );
        assert_eq!(ids[1], want);
        // The same diff on another parent is another layer.
        assert_ne!(chain_ids(&[d('c'), d('b')])[1], ids[1]);
        assert!(chain_ids(&[]).is_empty());
    }
}
