//! Atomic rootfs install, and the first-start setup of a machine (config dir, man8env.env, volumes).
//!
//! A rootfs is built in `.NAME.tmp-XXXXXX` beside its target, checked layer by layer (diff_ids),
//! given `/.man8s/image.json` + `/.man8s/source.json`, its `/run` and `/tmp` moved to
//! `/run.man8sprotected` and `/tmp.man8sprotected`, and only then renamed into place (with
//! `renameat2(RENAME_EXCHANGE)` over an existing one, whose old tree is then removed or kept as
//! `.NAME.previous`). Until that rename the previous rootfs is untouched; a failure removes the
//! temp dir, and stale temp dirs of an interrupted run are removed at the next start.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use man8s::machine::{Machine, YggdrasilAddress};
use man8s::{MachineName, Paths};

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
/// Bridge helper's state file with the host's Yggdrasil subnet.
pub const YGGDRASIL_STATE: &str = "/run/man8s/yggdrasil.json";
/// Image variables that go to nspawn settings rather than man8env.env.
const ENV_EXCLUDED: [&str; 4] = ["PATH", "TERM", "HOME", "LANG"];

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
    let name = image.reference.to_string();
    let n = image.manifest.layers.len();
    for (index, layer) in image.manifest.layers.iter().enumerate() {
        ready(index)?;
        progress.event(Event::Unpacking { index, layers: n });
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
        if let Err(e) = apply_layer(root, &mut stream, opts) {
            if let crate::unpack::UnpackError::Io { source, .. } = &e
                && source.raw_os_error() == Some(nix::libc::ENOSPC)
            {
                return Err(Error::DiskFull {
                    image: name,
                    path: root.to_owned(),
                });
            }
            return Err(unpack_err(e.to_string()));
        }
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
    }
    Ok(())
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

/// Read `/.man8s/source.json` of an installed rootfs.
pub fn read_source(rootfs: &Path) -> Option<Source> {
    let text = fs::read(rootfs.join(META_DIR).join("source.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Remove whatever is at `path` (never following a symlink); missing is fine.
fn remove_any(path: &Path) -> Result<()> {
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
    let source = Source {
        reference: image.reference.to_string(),
        manifest_digest: image.manifest_digest.clone(),
        index_digest: image.index_digest.clone(),
        pulled_at: rfc3339(SystemTime::now()),
    };
    let mut json = serde_json::to_vec_pretty(&source).expect("serialisable");
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

/// Temp dirs of `target` look like `.NAME.tmp-XXXXXX` in its parent.
fn tmp_prefix(target: &Path) -> Result<String> {
    let name = target.file_name().and_then(OsStr::to_str).ok_or_else(|| {
        Error::Other(format!("{}: not a usable install target", target.display()))
    })?;
    Ok(format!(".{name}.tmp-"))
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
        let installed =
            install_tree_when_ready(target, image, puller.cache, opts, puller.progress, &ready);
        if installed.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        drop(rx);
        let downloaded = downloads
            .join()
            .map_err(|_| Error::Other("download thread panicked".into()))?;
        match (installed, downloaded) {
            (Ok(prev), _) => Ok(prev),
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

/// `.NAME.previous` beside `target`.
pub fn previous_path(target: &Path) -> Result<PathBuf> {
    let name = target
        .file_name()
        .and_then(OsStr::to_str)
        .ok_or_else(|| Error::Other("bad target".into()))?;
    Ok(target.with_file_name(format!(".{name}.previous")))
}

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
    let tmp = dir.join(format!(".{name}.link-tmp"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).at(&tmp)?;
    fs::rename(&tmp, &link).at(&link)
}

/// The host's Yggdrasil subnet from the bridge helper's state file, if known.
pub fn yggdrasil_subnet(paths: &Paths) -> Option<ipnet::Ipv6Net> {
    #[derive(serde::Deserialize)]
    struct State {
        subnet: String,
    }
    let text = fs::read(paths.fs(YGGDRASIL_STATE)).ok()?;
    let s: State = serde_json::from_slice(&text).ok()?;
    s.subnet.parse().ok()
}

/// The Yggdrasil address a machine gets, when known.
fn yggdrasil_address(machine: &Machine, subnet: Option<ipnet::Ipv6Net>) -> Option<String> {
    match machine.network.yggdrasil {
        YggdrasilAddress::Auto => {
            subnet.map(|s| man8s::address::machine_address(s, machine.name.as_str()).to_string())
        }
        YggdrasilAddress::Fixed(a) => Some(a.to_string()),
        YggdrasilAddress::No => None,
    }
}

/// Quote one word for `/bin/sh` (like Python's `shlex.quote`, which the old tool used).
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\"'\"'"))
    }
}

/// The man8env.env a new machine starts with (pure).
pub fn initial_env(
    machine: &Machine,
    config: &crate::manifest::ImageConfig,
    subnet: Option<ipnet::Ipv6Net>,
) -> std::result::Result<String, String> {
    let rc = config.config.clone().unwrap_or_default();
    let args: Vec<String> = rc
        .entrypoint
        .iter()
        .chain(&rc.cmd)
        .map(|a| shell_quote(a))
        .collect();
    let args = args.join(" ");
    let mut vars: Vec<(String, String)> = vec![
        ("MAN8S_CONTAINER_NAME".into(), machine.name.to_string()),
        (
            "MAN8S_CONTAINER_TEMPLATE".into(),
            machine.template.as_str().into(),
        ),
    ];
    if let Some(a) = yggdrasil_address(machine, subnet) {
        vars.push(("MAN8S_YGGDRASIL_ADDRESS".into(), a));
    }
    vars.push(("MAN8S_OCI_IMAGE_URL".into(), machine.image.clone()));
    vars.push((
        "MAN8S_APPLICATION_ARGS".into(),
        args.replace(['\n', '\r'], " "),
    ));
    for kv in &rc.env {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        if ENV_EXCLUDED.contains(&k) || k.is_empty() || v.contains(['\n', '\r']) {
            continue;
        }
        vars.push((k.into(), v.into()));
    }
    man8s::envfile::render(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Create the machine's config dir and man8env.env when missing (never overwriting a user's
/// file), add a missing `MAN8S_YGGDRASIL_ADDRESS` when `YggdrasilAddress=auto` and the subnet is
/// known, and create + seed volumes on first creation.
pub fn prepare_machine(paths: &Paths, machine: &Machine, image: &ResolvedImage) -> Result<()> {
    let name = &machine.name;
    let config_dir = paths.config_dir(name);
    fs::create_dir_all(&config_dir).at(&config_dir)?;
    let env_path = paths.env_file(name);
    let subnet = yggdrasil_subnet(paths);
    match fs::symlink_metadata(&env_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let text = initial_env(machine, &image.config, subnet)
                .map_err(|e| Error::Other(format!("{}: {e}", env_path.display())))?;
            let mut tmp = tempfile::NamedTempFile::new_in(&config_dir).at(&config_dir)?;
            tmp.write_all(text.as_bytes()).at(&env_path)?;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600)).at(tmp.path())?;
            // persist_noclobber: a file a user created meanwhile wins.
            tmp.persist_noclobber(&env_path)
                .map_err(|e| Error::io(&env_path, e.error))?;
        }
        Err(e) => return Err(Error::io(&env_path, e)),
        Ok(_) => {
            if let Some(addr) = (machine.network.yggdrasil == YggdrasilAddress::Auto)
                .then(|| yggdrasil_address(machine, subnet))
                .flatten()
            {
                let text = fs::read_to_string(&env_path).at(&env_path)?;
                if man8s::envfile::parse(&text)
                    .get("MAN8S_YGGDRASIL_ADDRESS")
                    .is_none()
                {
                    let mut f = OpenOptions::new()
                        .append(true)
                        .open(&env_path)
                        .at(&env_path)?;
                    let sep = if text.is_empty() || text.ends_with('\n') {
                        ""
                    } else {
                        "\n"
                    };
                    writeln!(f, "{sep}MAN8S_YGGDRASIL_ADDRESS={addr}").at(&env_path)?;
                }
            }
        }
    }
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

/// What [`ensure_machine`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A rootfs was (re)installed.
    Installed {
        /// Manifest digest now installed.
        digest: String,
    },
    /// The installed rootfs was kept.
    UpToDate,
}

/// Settings for [`ensure_machine`].
pub struct EnsureOptions<'a> {
    /// Pull policy (normally the declaration's `Pull=`).
    pub policy: crate::pull::Policy,
    /// Platform (normally the host's).
    pub platform: crate::Platform,
    /// Registry settings.
    pub registry: &'a crate::registry::RegistryConfig,
    /// Install settings (`protect_run_tmp` is forced on).
    pub install: InstallOptions,
    /// Progress sink.
    pub progress: &'a dyn Progress,
}

/// What `man8s-fetch NAME` does: make the machine's rootfs exist and match its declaration.
///
/// `Pull=missing`: nothing happens when a rootfs exists; otherwise the image comes from the
/// cache when complete there, else from the registry. `Pull=always`: the registry is asked
/// what the tag points to; a rootfs of that same manifest is kept. `Pull=never`: cache only.
/// Then config dir, man8env.env and volumes are prepared and the machinectl link made.
pub async fn ensure_machine(
    paths: &Paths,
    machine: &Machine,
    opts: &EnsureOptions<'_>,
) -> Result<Outcome> {
    let image = crate::ImageRef::parse(&machine.image)?;
    let cache = BlobCache::new(paths);
    let rootfs = paths.rootfs(&machine.name);
    let installed = read_source(&rootfs);
    let exists = fs::symlink_metadata(&rootfs).is_ok();
    let puller = crate::pull::Puller {
        cache: &cache,
        config: opts.registry,
        progress: opts.progress,
        platform: opts.platform.clone(),
    };
    let outcome = if exists && opts.policy != crate::pull::Policy::Always {
        if let Some(src) = installed
            .as_ref()
            .filter(|s| s.reference != image.to_string())
        {
            // Image= was edited after the machine was made: say so instead of silently running the old one.
            opts.progress.event(Event::UpToDate {
                reason: &format!(
                    "warning: {}: rootfs is from {}, but the declaration says {}; \
                     `mbctl machines update {}` (or Pull=always) switches it",
                    machine.name, src.reference, image, machine.name
                ),
            });
        }
        opts.progress.event(Event::UpToDate {
            reason: &format!(
                "{}: rootfs present (Pull={}), not pulling",
                machine.name,
                policy_name(opts.policy)
            ),
        });
        None
    } else {
        let keep_installed = |e: &Error| -> Result<Outcome> {
            opts.progress.event(Event::UpToDate {
                reason: &format!(
                    "warning: {e}; starting {} with the installed rootfs",
                    machine.name
                ),
            });
            link_for_machinectl(paths, &machine.name)?;
            Ok(Outcome::UpToDate)
        };
        let cached = if opts.policy == crate::pull::Policy::Always {
            None
        } else {
            puller.from_cache(&image)?
        };
        if cached.is_none() && opts.policy == crate::pull::Policy::Never {
            return Err(Error::NotCached {
                image: image.to_string(),
            });
        }
        let resolved = match cached {
            Some(r) => r,
            None => match puller.resolve_remote(&image).await {
                Ok(r) => r,
                // Pull=always at boot with the network not up yet: the machine still starts from what it has.
                Err(e @ Error::Network { .. }) if exists => return keep_installed(&e),
                Err(e) => return Err(e),
            },
        };
        if exists
            && installed
                .as_ref()
                .is_some_and(|s| s.manifest_digest == resolved.manifest_digest)
        {
            opts.progress.event(Event::UpToDate {
                reason: &format!("{}: already at {}", machine.name, resolved.manifest_digest),
            });
            Some((resolved, Outcome::UpToDate))
        } else {
            let install = InstallOptions {
                protect_run_tmp: true,
                ..opts.install.clone()
            };
            // Blocking work on scoped threads (progress is only borrowed): layers download on one
            // while the other unpacks those already cached.
            let result = std::thread::scope(|s| {
                s.spawn(|| pull_and_install(&puller, &rootfs, &resolved, &install))
                    .join()
            })
            .map_err(|_| Error::Other("unpack thread panicked".into()))?;
            match result {
                Ok(_) => {}
                Err(e @ Error::Network { .. }) if exists => return keep_installed(&e),
                Err(e) => return Err(e),
            }
            let digest = resolved.manifest_digest.clone();
            Some((resolved, Outcome::Installed { digest }))
        }
    };
    link_for_machinectl(paths, &machine.name)?;
    match outcome {
        Some((resolved, outcome)) => {
            prepare_machine(paths, machine, &resolved)?;
            Ok(outcome)
        }
        None => {
            // Rootfs present: still make sure config dir and env file exist (image config from the rootfs).
            if let Some(resolved) = resolved_from_rootfs(&rootfs, &image, installed) {
                prepare_machine(paths, machine, &resolved)?;
            }
            Ok(Outcome::UpToDate)
        }
    }
}

fn policy_name(p: crate::pull::Policy) -> &'static str {
    match p {
        crate::pull::Policy::Missing => "missing",
        crate::pull::Policy::Always => "always",
        crate::pull::Policy::Never => "never",
    }
}

/// Rebuild enough of a [`ResolvedImage`] from an installed rootfs for [`prepare_machine`].
///
/// A rootfs installed by the Python tool has no `/.man8s/`: then the image config is empty,
/// which still lets man8env.env get its missing Yggdrasil address and volumes get created.
fn resolved_from_rootfs(
    rootfs: &Path,
    image: &crate::ImageRef,
    source: Option<Source>,
) -> Option<ResolvedImage> {
    let config_json = fs::read(rootfs.join(META_DIR).join("image.json")).unwrap_or_default();
    let config: crate::manifest::ImageConfig =
        serde_json::from_slice(&config_json).unwrap_or_default();
    Some(ResolvedImage {
        reference: image.clone(),
        manifest_digest: source
            .as_ref()
            .map(|s| s.manifest_digest.clone())
            .unwrap_or_default(),
        index_digest: source.and_then(|s| s.index_digest),
        manifest: crate::manifest::ImageManifest {
            config: crate::manifest::Descriptor {
                media_type: String::new(),
                digest: String::new(),
                size: 0,
                platform: None,
            },
            layers: Vec::new(),
        },
        config_json,
        config,
        from_network: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_cleanup_touches_only_this_machines_temp_dirs() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            ".web.tmp-abc",
            ".web.tmp-",
            ".web2.tmp-abc",
            ".webtmp-x",
            "web",
            ".web.previous",
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
            vec![".web.previous", ".web2.tmp-abc", ".webtmp-x", "web"]
        );
    }

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

    #[test]
    fn quoting_matches_shlex() {
        assert_eq!(shell_quote("redis-server"), "redis-server");
        assert_eq!(shell_quote("--port=6379"), "--port=6379");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\"'\"'s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn rfc3339_known_dates() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

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

    #[test]
    fn initial_env_contents() {
        let name = MachineName::new("TestBWContainer3").unwrap();
        let src = man8s::machine::SourceFiles {
            main: "/etc/man8s/machines/TestBWContainer3.machine".into(),
            dropins: vec![],
        };
        let m = Machine::new(name, src, "redis:7".into());
        let cfg: crate::manifest::ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["PATH=/usr/bin","A=x y","HOME=/root","LANG=C"],"Entrypoint":["docker-entrypoint.sh"],"Cmd":["redis-server","--save",""]},"rootfs":{"diff_ids":[]}}"#,
        )
        .unwrap();
        let subnet: ipnet::Ipv6Net = "300:2e98:a4b0:1789::/64".parse().unwrap();
        let text = initial_env(&m, &cfg, Some(subnet)).unwrap();
        assert_eq!(
            text,
            "MAN8S_CONTAINER_NAME=TestBWContainer3\nMAN8S_CONTAINER_TEMPLATE=network_isolated\n\
             MAN8S_YGGDRASIL_ADDRESS=300:2e98:a4b0:1789:1d44:bc13:a177:c4d\nMAN8S_OCI_IMAGE_URL=redis:7\n\
             MAN8S_APPLICATION_ARGS=docker-entrypoint.sh redis-server --save ''\nA=x y\n"
        );
        let text = initial_env(&m, &cfg, None).unwrap();
        assert!(!text.contains("YGGDRASIL"));
    }
}
