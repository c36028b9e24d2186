//! `images list|prune`, `cache clear`, `oci download IMAGE DIR`: over `man8s_oci`'s blob cache
//! and installer.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use man8s::{Paths, declaration};
use man8s_oci::cache::BlobCache;
use man8s_oci::install;
use man8s_oci::pull::Policy;
use serde::Serialize;

use crate::EXIT_OK;
use man8s_provision::fetch_image;

use crate::cmd::image_ref;
use crate::output::table;

/// One cached image.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImageInfo {
    /// Reference as pulled.
    pub reference: String,
    /// Digest the reference resolved to.
    pub digest: String,
    /// Machines whose rootfs came from it.
    pub used_by: Vec<String>,
}

/// `(machine, manifest digest, index digest)` of every installed rootfs of a declared machine.
fn installed(paths: &Paths) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for name in declaration::discover(paths).into_iter().flatten() {
        let state = man8s_provision::state::MachineState::new(paths, &name);
        if let Some(s) = state.source() {
            out.push((name.to_string(), s.manifest_digest, s.index_digest));
        }
        if let Some(s) = state.previous_source() {
            out.push((
                format!("{name} (previous)"),
                s.manifest_digest,
                s.index_digest,
            ));
        }
    }
    out
}

/// Cached images and who uses them.
pub fn collect(paths: &Paths) -> Result<Vec<ImageInfo>> {
    let cache = BlobCache::new(paths);
    let listing = cache.list()?;
    let machines = installed(paths);
    Ok(listing
        .refs
        .into_iter()
        .map(|r| {
            let used_by = machines
                .iter()
                .filter(|(_, m, i)| *m == r.digest || i.as_deref() == Some(&r.digest))
                .map(|(n, _, _)| n.clone())
                .collect();
            ImageInfo {
                reference: r.reference,
                digest: r.digest,
                used_by,
            }
        })
        .collect())
}

/// `images list [--json]`
pub fn list(json: bool) -> Result<u8> {
    let images = collect(&Paths::from_env())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(EXIT_OK);
    }
    let mut rows = vec![
        ["REFERENCE", "DIGEST", "USED BY"]
            .map(String::from)
            .to_vec(),
    ];
    for i in &images {
        rows.push(vec![
            i.reference.clone(),
            i.digest.clone(),
            if i.used_by.is_empty() {
                "-".into()
            } else {
                i.used_by.join(",")
            },
        ]);
    }
    print!("{}", table(&rows, |_, c| c.to_owned()));
    Ok(EXIT_OK)
}

/// `images prune`: keep what installed machines (and their kept previous rootfs or layer set)
/// came from.
pub fn prune() -> Result<u8> {
    let paths = Paths::from_env();
    let keep: Vec<String> = installed(&paths)
        .into_iter()
        .flat_map(|(_, m, i)| std::iter::once(m).chain(i))
        .collect();
    let keep_refs: Vec<&str> = keep.iter().map(String::as_str).collect();
    let report = BlobCache::new(&paths).gc(&keep_refs)?;
    println!("Removed {} blobs ({} bytes).", report.removed, report.bytes);
    // Layers of every machine's current and previous (rollback) image stay.
    let in_use = man8s_provision::layered::sets_in_use(&paths);
    let layers = man8s_oci::layers::LayerStore::new(&paths).gc(&in_use)?;
    println!("Removed {} unpacked layers.", layers.removed);
    Ok(EXIT_OK)
}

/// `cache clear`
pub fn clear() -> Result<u8> {
    let paths = Paths::from_env();
    let cache = BlobCache::new(&paths);
    cache.clear()?;
    println!(
        "Cleared {} (machines keep their rootfs).",
        cache.root().display()
    );
    // The Python mbctl downloaded and unpacked images here; nothing of man8s uses it.
    let scratch = paths.python_scratch_dir();
    match fs::symlink_metadata(&scratch) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(&scratch)
                .with_context(|| format!("cannot remove {}", scratch.display()))?;
            println!(
                "Removed {} (the Python mbctl's scratch).",
                scratch.display()
            );
        }
        Ok(_) => bail!("{} is not a directory; not touching it", scratch.display()),
        Err(_) => {}
    }
    Ok(EXIT_OK)
}

/// `./NAME` for an image `…/NAME:TAG`.
pub fn default_download_dir(image: &man8s_oci::ImageRef) -> std::path::PathBuf {
    let name = image.repository().rsplit('/').next().unwrap_or("image");
    std::path::PathBuf::from(name)
}

/// `oci download IMAGE DIR`: the image's rootfs in DIR, its config in DIR/.man8s/image.json.
///
/// Setuid/setgid files and device nodes from the image would be a root shell or a raw disk for
/// any local user in a world-readable DIR: they are defused unless `keep_special`, which makes
/// DIR 0700 instead.
pub fn download(image: &str, dir: Option<&Path>, keep_special: bool) -> Result<u8> {
    let image = image_ref(image)?;
    let default_dir;
    let dir = match dir {
        Some(d) => d,
        None => {
            default_dir = default_download_dir(&image);
            &default_dir
        }
    };
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty; give a new or empty directory",
                    dir.display()
                );
            }
            // install_tree renames a finished tree into place; an empty dir is just a placeholder.
            fs::remove_dir(dir)
                .with_context(|| format!("cannot replace empty {}", dir.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot use {}", dir.display())),
    }
    let target =
        std::path::absolute(dir).with_context(|| format!("bad directory {}", dir.display()))?;
    let paths = Paths::from_env();
    let resolved = fetch_image(&paths, &image, Policy::Always)?;
    let progress = man8s_oci::progress::auto();
    let opts = man8s_provision::install_options(&paths, false, false)?;
    install::install_tree(
        &target,
        &resolved,
        &BlobCache::new(&paths),
        &opts,
        progress.as_ref(),
    )?;
    let special = install::defuse_special(&target, keep_special)?;
    if special.setid_files + special.devices > 0 {
        if keep_special {
            eprintln!(
                "mbctl: {} holds {} setuid/setgid files and {} device nodes (--keep-special): \
                 it is mode 0700, so only root reaches them",
                target.display(),
                special.setid_files,
                special.devices
            );
        } else {
            eprintln!(
                "mbctl: {}: removed the setuid/setgid bits of {} files and others' access to {} \
                 device nodes from the image (--keep-special keeps them, in a mode 0700 DIR)",
                target.display(),
                special.setid_files,
                special.devices
            );
        }
    }
    println!(
        "{} ({}) → {}",
        resolved.reference,
        resolved.manifest_digest,
        target.display()
    );
    Ok(EXIT_OK)
}
