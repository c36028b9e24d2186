//! Images from files instead of a registry, into `man8s_oci`'s blob cache: a `docker save`
//! tarball (legacy `manifest.json` or the OCI layout Docker ≥ 25 writes), an OCI image layout
//! (directory or tarball), or a root file system tarball from `docker export` (wrapped into a
//! one-layer image). Every blob is hashed while it is copied and checked against the name the
//! archive gives it; the reference is recorded only when everything is in.
//!
//! Archives are hostile input: only regular files are read (never unpacked to disk by path),
//! JSON files are size-limited, and a missing or mismatching blob is an error naming it. Files an
//! archive carries but no manifest uses end up as unreferenced blobs, which `images prune` removes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use man8s_oci::cache::BlobCache;
use man8s_oci::{ImageRef, Platform};
use serde_json::json;
use sha2::{Digest, Sha256};

/// JSON files in archives larger than this are refused.
pub const MAX_JSON: u64 = 4 * 1024 * 1024;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// What kind of file an import came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// OCI image layout (directory, or tarball of one; also `docker save` of Docker ≥ 25).
    OciLayout,
    /// `docker save` with `manifest.json` only.
    DockerSave,
    /// `docker export`: a root file system.
    Rootfs,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// What the source was.
    pub kind: SourceKind,
    /// The digest the reference now points to (manifest or index).
    pub digest: String,
}

/// Streams `reader` into the cache as one blob; returns `(digest, size)`. When `expected` is
/// given the content must hash to it.
fn put_stream(
    cache: &BlobCache,
    reader: &mut dyn Read,
    expected: Option<&str>,
) -> Result<(String, u64)> {
    let root = cache.root();
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(root)
        .with_context(|| format!("cannot write in {}", root.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read the archive"),
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .context("cannot write to the cache")?;
        size += n as u64;
    }
    let digest = format!("sha256:{}", hex(&hasher.finalize()));
    if let Some(e) = expected
        && e != digest
    {
        bail!("blob {e} hashes to {digest}: the archive is corrupt or was tampered with");
    }
    let dest = cache
        .blob_path(&digest)
        .expect("a sha256 digest we made is valid");
    if !dest.exists() {
        let dir = dest.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        tmp.persist(&dest).map_err(|e| {
            anyhow::Error::new(e.error).context(format!("cannot write {}", dest.display()))
        })?;
    }
    Ok((digest, size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn put_json(cache: &BlobCache, value: &serde_json::Value) -> Result<(String, u64)> {
    let bytes = serde_json::to_vec(value)?;
    let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    cache.put_verified(&digest, &bytes)?;
    Ok((digest, bytes.len() as u64))
}

/// The digest named by an OCI layout path `blobs/sha256/<hex>`.
fn layout_blob_digest(path: &str) -> Option<String> {
    let hex = path
        .trim_start_matches("./")
        .strip_prefix("blobs/sha256/")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| format!("sha256:{hex}"))
}

/// The single image of an OCI layout's `index.json`.
fn layout_top(index: &[u8]) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(index).context("index.json is not JSON")?;
    let manifests = v["manifests"]
        .as_array()
        .context("index.json has no manifests")?;
    match manifests.as_slice() {
        [one] => one["digest"]
            .as_str()
            .map(str::to_owned)
            .context("index.json: manifest without digest"),
        [] => bail!("index.json lists no image"),
        many => bail!(
            "the layout holds {} images; import needs exactly one",
            many.len()
        ),
    }
}

fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    let f = File::open(path)?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// Names of the entries of a tarball (to tell its kind before reading it for real).
fn tar_names(path: &Path) -> Result<Vec<String>> {
    let mut archive = tar::Archive::new(open_maybe_gzip(path)?);
    let mut names = Vec::new();
    for e in archive
        .entries()
        .with_context(|| format!("{} is not a tar archive", path.display()))?
    {
        let e = e.with_context(|| format!("{}: bad tar entry", path.display()))?;
        names.push(
            e.path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned(),
        );
        if names.len() > 1_000_000 {
            break;
        }
    }
    Ok(names)
}

/// Tell what `source` is.
pub fn detect(source: &Path) -> Result<SourceKind> {
    if source.is_dir() {
        if source.join("index.json").is_file() && source.join("oci-layout").is_file() {
            return Ok(SourceKind::OciLayout);
        }
        bail!(
            "{} is a directory but not an OCI image layout (no oci-layout and index.json)",
            source.display()
        );
    }
    let names = tar_names(source)?;
    let has = |n: &str| names.iter().any(|x| x == n);
    Ok(if has("oci-layout") && has("index.json") {
        SourceKind::OciLayout
    } else if has("manifest.json") {
        SourceKind::DockerSave
    } else {
        SourceKind::Rootfs
    })
}

/// Archive path → digest of the blob it held.
type PathDigests = BTreeMap<String, String>;
/// Archive path → content of a small (JSON) file.
type SmallFiles = BTreeMap<String, Vec<u8>>;

/// Read a tarball once: blobs (OCI paths, `*/layer.tar`, `*.json` configs) go to the cache,
/// small JSON files are kept. Returns `path → digest` and `path → JSON bytes`.
fn ingest_tar(cache: &BlobCache, path: &Path) -> Result<(PathDigests, SmallFiles)> {
    let mut archive = tar::Archive::new(open_maybe_gzip(path)?);
    let mut blobs = BTreeMap::new();
    let mut links = BTreeMap::new();
    let mut small = BTreeMap::new();
    for e in archive.entries()? {
        let mut e = e.with_context(|| format!("{}: bad tar entry", path.display()))?;
        let name = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let kind = e.header().entry_type();
        if kind.is_symlink() {
            // Docker ≥ 25 links legacy paths (`ID/layer.tar`) to `blobs/sha256/…`.
            if let Some(target) = e.link_name()? {
                let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                let resolved = normalise(&base.join(target));
                links.insert(name, resolved);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if let Some(d) = layout_blob_digest(&name) {
            let (digest, _) = put_stream(cache, &mut e, Some(&d))?;
            blobs.insert(name, digest);
        } else if !(name.ends_with(".json") || name == "oci-layout" || name == "repositories") {
            // A layer under whatever name the writer chose (`ID/layer.tar`, `HEX.tar`, …);
            // manifest.json says which ones are used.
            let (digest, _) = put_stream(cache, &mut e, None)?;
            blobs.insert(name, digest);
        } else {
            if e.header().size()? > MAX_JSON {
                bail!("{}: {name} is larger than {MAX_JSON} bytes", path.display());
            }
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes)?;
            small.insert(name, bytes);
        }
    }
    for (link, target) in links {
        if let Some(d) = blobs.get(&target).cloned() {
            blobs.insert(link, d);
        }
    }
    Ok((blobs, small))
}

/// `a/b/../c` → `a/c` (archive-internal paths only; never touches the file system).
fn normalise(p: &Path) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    out.join("/")
}

/// A one-layer image around a root file system tar (already in the cache as `layer`).
fn wrap_rootfs(cache: &BlobCache, layer: (String, u64)) -> Result<String> {
    let p = Platform::host();
    let mut config = json!({
        "architecture": p.architecture, "os": p.os, "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.0]},
    });
    if !p.variant.is_empty() {
        config["variant"] = p.variant.into();
    }
    let (cd, cs) = put_json(cache, &config)?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": cs},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer.0, "size": layer.1}],
    });
    Ok(put_json(cache, &manifest)?.0)
}

/// An OCI manifest for a legacy `docker save` image (its layers are uncompressed tars).
fn wrap_docker_save(
    cache: &BlobCache,
    blobs: &BTreeMap<String, String>,
    small: &BTreeMap<String, Vec<u8>>,
) -> Result<String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(small.get("manifest.json").context("no manifest.json")?)
            .context("manifest.json is not JSON")?;
    let entries = manifest.as_array().context("manifest.json is not a list")?;
    let [entry] = entries.as_slice() else {
        bail!(
            "the archive holds {} images; import needs exactly one",
            entries.len()
        );
    };
    let config_name = entry["Config"]
        .as_str()
        .context("manifest.json: no Config")?;
    let config = small
        .get(config_name)
        .with_context(|| format!("the archive has no {config_name}"))?;
    let (cd, cs) = {
        let digest = format!("sha256:{}", hex(&Sha256::digest(config)));
        cache.put_verified(&digest, config)?;
        (digest, config.len() as u64)
    };
    let mut layers = Vec::new();
    for l in entry["Layers"]
        .as_array()
        .context("manifest.json: no Layers")?
    {
        let name = l.as_str().context("manifest.json: bad layer name")?;
        let digest = blobs
            .get(name)
            .with_context(|| format!("the archive has no layer {name}"))?;
        let size = fs::metadata(cache.blob_path(digest).expect("valid digest"))?.len();
        layers.push(json!({"mediaType": OCI_LAYER_TAR, "digest": digest, "size": size}));
    }
    let m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": cs},
        "layers": layers,
    });
    Ok(put_json(cache, &m)?.0)
}

/// Copy the blobs of an OCI layout directory into the cache, checking each.
fn ingest_layout_dir(cache: &BlobCache, dir: &Path) -> Result<String> {
    let index = fs::read(dir.join("index.json"))
        .with_context(|| format!("cannot read {}/index.json", dir.display()))?;
    let blobs = dir.join("blobs/sha256");
    for e in fs::read_dir(&blobs).with_context(|| format!("cannot read {}", blobs.display()))? {
        let e = e?;
        let name = format!("blobs/sha256/{}", e.file_name().to_string_lossy());
        let Some(d) = layout_blob_digest(&name) else {
            continue;
        };
        if !e.file_type()?.is_file() {
            continue;
        }
        put_stream(cache, &mut File::open(e.path())?, Some(&d))
            .with_context(|| format!("{}", e.path().display()))?;
    }
    layout_top(&index)
}

/// Import `source` into `cache` under `reference`.
pub fn import(cache: &BlobCache, source: &Path, reference: &ImageRef) -> Result<Imported> {
    let kind = detect(source)?;
    let digest = match kind {
        SourceKind::OciLayout if source.is_dir() => ingest_layout_dir(cache, source)?,
        SourceKind::OciLayout => {
            let (_, small) = ingest_tar(cache, source)?;
            layout_top(small.get("index.json").context("no index.json")?)?
        }
        SourceKind::DockerSave => {
            let (blobs, small) = ingest_tar(cache, source)?;
            wrap_docker_save(cache, &blobs, &small)?
        }
        SourceKind::Rootfs => {
            let layer = put_stream(cache, &mut open_maybe_gzip(source)?, None)?;
            wrap_rootfs(cache, layer)?
        }
    };
    // The top object must be in the cache and be a manifest or index we can read.
    let top = cache
        .read_small(&digest, MAX_JSON)?
        .with_context(|| format!("the archive does not contain {digest}, which its index names"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&top).with_context(|| format!("{digest} is not JSON"))?;
    let mt = v["mediaType"].as_str().unwrap_or_default();
    if !(mt == OCI_MANIFEST
        || mt == OCI_INDEX
        || v["manifests"].is_array()
        || v["layers"].is_array())
    {
        bail!("{digest} is neither an image manifest nor an index");
    }
    cache.set_ref(reference, &digest)?;
    Ok(Imported { kind, digest })
}

/// Where a layout/archive path would land (for messages).
pub fn describe(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::OciLayout => "OCI image layout",
        SourceKind::DockerSave => "docker save archive",
        SourceKind::Rootfs => "root file system tarball (docker export)",
    }
}
