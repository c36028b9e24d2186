//! Atomic rootfs install (machine provisioning around it is `man8s-provision`'s).
//!
//! A rootfs is built in `.NAME+tmp-XXXXXX` beside its target, checked layer by layer (diff_ids),
//! given `/.man8s/image.json` + `/.man8s/source.json`, its `/run` and `/tmp` moved to
//! `/run.man8sprotected` and `/tmp.man8sprotected`, and only then renamed into place (with
//! `renameat2(RENAME_EXCHANGE)` over an existing one, whose old tree is then removed or kept as
//! `.NAME.previous`). Until that rename the previous rootfs is untouched; a failure removes the
//! temp dir, and stale temp dirs of an interrupted run are removed at the next start.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cache::BlobCache;
use crate::decompress::Pipelined;
use crate::error::{Error, IoContext, Result};
use crate::progress::{Event, Progress};
use crate::pull::ResolvedImage;
use crate::unpack::{UnpackOptions, apply_layer};

/// Where the image's `/run` is kept (the init copies it back over nspawn's tmpfs).
pub const RUN_PROTECTED: &str = "run.man8sprotected";
/// Where the image's `/tmp` is kept.
pub const TMP_PROTECTED: &str = "tmp.man8sprotected";
/// Metadata dir inside a rootfs.
pub const META_DIR: &str = ".man8s";

/// How to install.
#[derive(Clone, Debug, Default)]
pub struct InstallOptions {
    /// Keep the replaced rootfs as `.NAME.previous` (for rollback) instead of deleting it.
    pub keep_previous: bool,
    /// Move `/run` and `/tmp` to their protected names (machines: yes; `mbctl oci download`: no).
    pub protect_run_tmp: bool,
    /// Options for the unpacker.
    pub unpack: UnpackOptions,
}

/// Apply every layer of `image` (from the cache) onto `root`, checking each diff_id.
pub fn unpack_layers(
    root: &Path,
    image: &ResolvedImage,
    cache: &BlobCache,
    opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<()> {
    unpack_layers_when_ready(root, image, cache, opts, progress, &|_| Ok(()))
}

/// [`unpack_layers`], waiting with `ready(i)` until layer `i` is in the cache.
fn unpack_layers_when_ready(
    root: &Path,
    image: &ResolvedImage,
    cache: &BlobCache,
    opts: &UnpackOptions,
    progress: &dyn Progress,
    ready: &dyn Fn(usize) -> Result<()>,
) -> Result<()> {
    let n = image.manifest.layers.len();
    // `max_total_size` is the image's budget; each layer gets what the ones before left.
    let mut left = opts.max_total_size;
    for index in 0..n {
        ready(index)?;
        progress.event(Event::Unpacking { index, layers: n });
        let layer_opts = UnpackOptions {
            max_total_size: left,
            ..opts.clone()
        };
        let stats = unpack_layer(root, image, index, cache, &layer_opts)?;
        left = left.saturating_sub(stats.bytes);
    }
    Ok(())
}

/// Apply layer `index` of `image` (from the cache) onto `root`, checking its diff_id.
pub(crate) fn unpack_layer(
    root: &Path,
    image: &ResolvedImage,
    index: usize,
    cache: &BlobCache,
    opts: &UnpackOptions,
) -> Result<crate::unpack::LayerStats> {
    let name = image.reference.to_string();
    let layer = &image.manifest.layers[index];
    let path = cache
        .blob_path(&layer.digest)
        .ok_or_else(|| Error::Other(format!("bad digest {}", layer.digest)))?;
    let file = File::open(&path).at(&path)?;
    let unpack_err = |reason: String| Error::Unpack {
        image: name.clone(),
        index,
        digest: layer.digest.clone(),
        reason,
    };
    let mut stream = Pipelined::start(file)
        .map_err(|e| unpack_err(format!("cannot start decompression: {e}")))?;
    let stats = match apply_layer(root, &mut stream, opts) {
        Ok(stats) => stats,
        Err(e) => {
            if let crate::unpack::UnpackError::Io { source, .. } = &e
                && source.raw_os_error() == Some(nix::libc::ENOSPC)
            {
                return Err(Error::DiskFull {
                    image: name,
                    path: root.to_owned(),
                });
            }
            if let crate::unpack::UnpackError::MissingLinkTarget { .. } = &e {
                return Err(Error::MissingLinkTarget {
                    image: name,
                    index,
                    digest: layer.digest.clone(),
                    source: e,
                });
            }
            return Err(unpack_err(e.to_string()));
        }
    };
    let (actual, _) = stream
        .finish()
        .map_err(|e| unpack_err(format!("cannot decompress: {e}")))?;
    let expected = &image.config.rootfs.diff_ids[index];
    if &actual != expected {
        // The blob matched its digest, so the image itself is inconsistent; never reuse it silently.
        cache.remove_blob(&layer.digest);
        return Err(Error::DiffId {
            image: name,
            index,
            digest: layer.digest.clone(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(stats)
}

/// What `/.man8s/source.json` records.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// The reference as normalised.
    pub reference: String,
    /// Platform manifest digest.
    pub manifest_digest: String,
    /// Index digest, when the image came from an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// When it was pulled (RFC 3339, UTC).
    pub pulled_at: String,
}

impl Source {
    /// The record of `image`, pulled now.
    pub fn of(image: &ResolvedImage) -> Source {
        Source {
            reference: image.reference.to_string(),
            manifest_digest: image.manifest_digest.clone(),
            index_digest: image.index_digest.clone(),
            pulled_at: rfc3339(SystemTime::now()),
        }
    }
}

/// Read `/.man8s/source.json` of a tree this process installed (`mbctl oci download`, tests),
/// bounded and never through a symlink or FIFO. Host tools never use it on a machine's rootfs,
/// which the machine can rewrite: they read `man8s_provision::state`.
pub fn read_source(tree: &Path) -> Option<Source> {
    let text = man8s::untrusted::read_regular(
        &tree.join(META_DIR).join("source.json"),
        man8s::untrusted::SMALL_FILE_LIMIT,
    )
    .ok()?;
    serde_json::from_slice(&text).ok()
}

/// Remove whatever is at `path` (never following a symlink); missing is fine.
pub fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).at(path),
        Ok(_) => fs::remove_file(path).at(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Write a new file that must not exist (and whose parent we created): no symlink is followed.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .at(path)?;
    f.write_all(data).at(path)
}

/// Finish an unpacked tree: metadata files, protected `/run` and `/tmp`.
pub fn finish_tree(root: &Path, image: &ResolvedImage, protect_run_tmp: bool) -> Result<()> {
    // The image may carry its own /.man8s (even a symlink out of the tree): replace it.
    let meta = root.join(META_DIR);
    remove_any(&meta)?;
    fs::create_dir(&meta).at(&meta)?;
    fs::set_permissions(&meta, fs::Permissions::from_mode(0o755)).at(&meta)?;
    write_new(&meta.join("image.json"), &image.config_json, 0o644)?;
    let mut json = serde_json::to_vec_pretty(&Source::of(image)).expect("serialisable");
    json.push(b'\n');
    write_new(&meta.join("source.json"), &json, 0o644)?;
    if protect_run_tmp {
        for (dir, protected, mode) in [
            ("run", RUN_PROTECTED, 0o755),
            ("tmp", TMP_PROTECTED, 0o1777),
        ] {
            let from = root.join(dir);
            let to = root.join(protected);
            remove_any(&to)?;
            match fs::symlink_metadata(&from) {
                Ok(_) => fs::rename(&from, &to).at(&to)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&from, e)),
            }
            fs::create_dir(&from).at(&from)?;
            fs::set_permissions(&from, fs::Permissions::from_mode(mode)).at(&from)?;
        }
        // systemd-nspawn refuses a directory without /usr as "not an OS tree"; images of a single
        // static binary have none, so give them an empty one.
        let usr = root.join("usr");
        if let Err(e) = fs::symlink_metadata(&usr) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(Error::io(&usr, e));
            }
            fs::create_dir(&usr).at(&usr)?;
            fs::set_permissions(&usr, fs::Permissions::from_mode(0o755)).at(&usr)?;
        }
    }
    Ok(())
}

/// Separates a target's name from the suffix of its temp dirs. No machine name (and no name
/// `mbctl oci download` is given, which is the user's own dir) can contain it, so stale-temp
/// cleanup of machine `a` can never match anything of machine `a.tmp-x`.
pub const TEMP_SEPARATOR: char = '+';

/// Temp dirs of `target` look like `.NAME+tmp-XXXXXX` in its parent.
fn tmp_prefix(target: &Path) -> Result<String> {
    let name = target.file_name().and_then(OsStr::to_str).ok_or_else(|| {
        Error::Other(format!("{}: not a usable install target", target.display()))
    })?;
    Ok(format!(".{name}{TEMP_SEPARATOR}tmp-"))
}

/// Remove temp dirs left by an interrupted install of `target`.
pub fn clean_stale(target: &Path) -> Result<()> {
    let prefix = tmp_prefix(target)?;
    let parent = target.parent().expect("target has a parent");
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            remove_any(&e.path())?;
        }
    }
    Ok(())
}

/// Unpack `image` into a temp dir beside `target` and rename it into place atomically.
/// Returns the path of the previous tree when it was kept.
pub fn install_tree(
    target: &Path,
    image: &ResolvedImage,
    cache: &BlobCache,
    opts: &InstallOptions,
    progress: &dyn Progress,
) -> Result<Option<PathBuf>> {
    install_tree_when_ready(target, image, cache, opts, progress, &|_| Ok(()))
}

/// Download the layers `image` lacks and install it at `target`, unpacking each layer as soon
/// as it is in the cache while the next one downloads (a cold pull then takes about the longer
/// of download and unpack, not their sum). Same guarantees as [`install_tree`].
pub fn pull_and_install(
    puller: &crate::pull::Puller<'_>,
    target: &Path,
    image: &ResolvedImage,
    opts: &InstallOptions,
) -> Result<Option<PathBuf>> {
    pull_while(puller, image, &|ready| {
        install_tree_when_ready(target, image, puller.cache, opts, puller.progress, ready)
    })
}

/// Waits until layer `i` is in the cache (see [`pull_while`]).
pub type Ready<'a> = &'a dyn Fn(usize) -> Result<()>;

/// Run `work` while the layers `image` lacks download on another thread; `work` waits for layer
/// `i` with `ready(i)`. A failed download ends `work` at the next `ready`, and is the error returned.
pub fn pull_while<T>(
    puller: &crate::pull::Puller<'_>,
    image: &ResolvedImage,
    work: &dyn Fn(Ready<'_>) -> Result<T>,
) -> Result<T> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cancel = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    std::thread::scope(|s| {
        let cancel = &cancel;
        let downloads = s.spawn(move || {
            let notify = move |i: usize| {
                let _ = tx.send(i);
            };
            // Its own runtime (and connection pool) on this thread.
            crate::pull::block_on(puller.fetch_layers(image, &notify, cancel)).and_then(|r| r)
        });
        let ready_count = std::cell::Cell::new(0usize);
        let ready = |i: usize| -> Result<()> {
            while ready_count.get() <= i {
                match rx.recv() {
                    Ok(_) => ready_count.set(ready_count.get() + 1),
                    Err(_) => return Err(Error::Other("layer download stopped".into())),
                }
            }
            Ok(())
        };
        let done = work(&ready);
        if done.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        drop(rx);
        let downloaded = downloads
            .join()
            .map_err(|_| Error::Other("download thread panicked".into()))?;
        match (done, downloaded) {
            (Ok(v), _) => Ok(v),
            // The unpacker stopped because a download failed: that failure is the news.
            (Err(_), Err(download_err)) => Err(download_err),
            (Err(e), Ok(_)) => Err(e),
        }
    })
}

fn install_tree_when_ready(
    target: &Path,
    image: &ResolvedImage,
    cache: &BlobCache,
    opts: &InstallOptions,
    progress: &dyn Progress,
    ready: &dyn Fn(usize) -> Result<()>,
) -> Result<Option<PathBuf>> {
    let parent = target
        .parent()
        .ok_or_else(|| Error::Other(format!("{}: no parent dir", target.display())))?;
    let image_name = image.reference.to_string();
    if !parent.is_dir() {
        // Like systemd's /var/lib/machines: root filesystems of machines are not for other users.
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| Error::io_for(&image_name, parent, e))?;
    }
    let lock_path = parent.join(format!(
        ".{}.lock",
        target.file_name().and_then(OsStr::to_str).unwrap_or("x")
    ));
    let lock_file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .at(&lock_path)?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(&lock_path, io::Error::from(e)))?;
    clean_stale(target)?;
    let tmp = tempfile::Builder::new()
        .prefix(&tmp_prefix(target)?)
        .tempdir_in(parent)
        .map_err(|e| Error::io_for(&image_name, parent, e))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).at(tmp.path())?;
    unpack_layers_when_ready(tmp.path(), image, cache, &opts.unpack, progress, ready)?;
    finish_tree(tmp.path(), image, opts.protect_run_tmp)?;
    let tmp_path = tmp.keep();
    let result = (|| {
        match fs::symlink_metadata(target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::rename(&tmp_path, target).at(target)?;
                Ok(None)
            }
            Err(e) => Err(Error::io(target, e)),
            Ok(_) => {
                let exchanged = nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &tmp_path,
                    nix::fcntl::AT_FDCWD,
                    target,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
                match exchanged {
                    Ok(()) => {}
                    // File systems without RENAME_EXCHANGE: two renames, the old tree parked as
                    // .NAME.previous (never under the temp prefix that the next start deletes).
                    Err(
                        nix::errno::Errno::EINVAL
                        | nix::errno::Errno::ENOSYS
                        | nix::errno::Errno::EOPNOTSUPP,
                    ) => {
                        let prev = previous_path(target)?;
                        remove_any(&prev)?;
                        fs::rename(target, &prev).at(&prev)?;
                        if let Err(e) = fs::rename(&tmp_path, target) {
                            let _ = fs::rename(&prev, target);
                            return Err(Error::io(target, e));
                        }
                        if opts.keep_previous {
                            return Ok(Some(prev));
                        }
                        remove_any(&prev)?;
                        return Ok(None);
                    }
                    Err(e) => return Err(Error::io(target, io::Error::from(e))),
                }
                // tmp_path now holds the old tree.
                if opts.keep_previous {
                    let prev = previous_path(target)?;
                    remove_any(&prev)?;
                    fs::rename(&tmp_path, &prev).at(&prev)?;
                    Ok(Some(prev))
                } else {
                    remove_any(&tmp_path)?;
                    Ok(None)
                }
            }
        }
    })();
    if result.is_err() && tmp_path.exists() && fs::symlink_metadata(target).is_ok() {
        // Never leave a half-state behind: whatever tmp_path holds now is not in use.
        let _ = remove_any(&tmp_path);
    }
    if result.is_ok() {
        progress.event(Event::Installed { path: target });
    }
    result
}

/// What [`defuse_special`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Special {
    /// Regular files with a setuid or setgid bit.
    pub setid_files: u64,
    /// Block and character device nodes.
    pub devices: u64,
}

/// For a tree installed outside a private parent (`mbctl oci download DIR`): a setuid-root file
/// or a 0666 block device from an image would be a root shell or a raw disk for every local user.
/// Unless `keep`, remove setuid/setgid bits and group/other access to device nodes; with `keep`,
/// leave them and make `root` itself 0700. Walked through directory handles, never following a
/// symlink. Returns what was found.
pub fn defuse_special(root: &Path, keep: bool) -> Result<Special> {
    use crate::unpack::rootdir::{is_type, list_dir, lstat_at, open_subdir};
    use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat};
    fn walk(
        dir: &std::os::fd::OwnedFd,
        shown: &Path,
        keep: bool,
        found: &mut Special,
    ) -> Result<()> {
        for name in list_dir(dir).at(shown)? {
            let path = shown.join(std::ffi::OsStr::from_bytes(&name));
            let Some(st) = lstat_at(dir, &name).at(&path)? else {
                continue;
            };
            let mode = st.st_mode & 0o7777;
            let new_mode = if is_type(&st, SFlag::S_IFDIR) {
                let sub = open_subdir(dir, &name).map_err(|e| Error::io(&path, e.into()))?;
                walk(&sub, &path, keep, found)?;
                continue;
            } else if is_type(&st, SFlag::S_IFREG) && mode & 0o6000 != 0 {
                found.setid_files += 1;
                mode & !0o6000
            } else if is_type(&st, SFlag::S_IFBLK) || is_type(&st, SFlag::S_IFCHR) {
                found.devices += 1;
                mode & 0o700
            } else {
                continue;
            };
            if !keep {
                // Not a symlink (lstat above), and the tree is ours and fresh.
                fchmodat(
                    dir,
                    name.as_slice(),
                    Mode::from_bits_truncate(new_mode),
                    FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| Error::io(&path, e.into()))?;
            }
        }
        Ok(())
    }
    use std::os::unix::ffi::OsStrExt;
    let fd = nix::fcntl::open(
        root,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::io(root, e.into()))?;
    let mut found = Special::default();
    walk(&fd, root, keep, &mut found)?;
    if keep && found != Special::default() {
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).at(root)?;
    }
    Ok(found)
}

/// `.NAME.previous` beside `target`.
pub fn previous_path(target: &Path) -> Result<PathBuf> {
    let name = target
        .file_name()
        .and_then(OsStr::to_str)
        .ok_or_else(|| Error::Other("bad target".into()))?;
    Ok(target.with_file_name(format!(".{name}.previous")))
}

/// Format a time as RFC 3339 UTC (`2026-11-23T16:40:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_cleanup_touches_only_this_machines_temp_dirs() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            ".web+tmp-abc",
            ".web+tmp-",
            ".web2+tmp-abc",
            ".webtmp-x",
            "web",
            ".web.previous",
            // Everything of machine `web.tmp-x` (a valid name): never matched by `web`'s prefix.
            "web.tmp-x",
            ".web.tmp-x.previous",
            ".web.tmp-x+tmp-abc",
            ".web.tmp-x.lock",
        ] {
            fs::create_dir_all(d.path().join(n).join("etc")).unwrap();
        }
        clean_stale(&d.path().join("web")).unwrap();
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                ".web.previous",
                ".web.tmp-x+tmp-abc",
                ".web.tmp-x.lock",
                ".web.tmp-x.previous",
                ".web2+tmp-abc",
                ".webtmp-x",
                "web",
                "web.tmp-x"
            ]
        );
        assert!(man8s::MachineName::new(&format!("a{TEMP_SEPARATOR}b")).is_err());
    }

    #[test]
    fn rfc3339_known_dates() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
