//! OCI images written into an OCI layout dir: layers built with the `tar` crate (gzip, zstd or
//! none), single-platform images, indexes and tags.

use std::io::Write;
use std::path::Path;

use crate::digest;

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Builds one layer tar.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Self { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// A directory.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, path, &[][..])
            .expect("tar dir");
        self
    }

    /// A regular file.
    pub fn file(mut self, path: &str, mode: u32, content: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, content.len() as u64);
        self.tar
            .append_data(&mut h, path, content)
            .expect("tar file");
        self
    }

    /// A regular file owned by uid/gid.
    pub fn file_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64, content: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, content.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar
            .append_data(&mut h, path, content)
            .expect("tar file");
        self
    }

    /// A symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    /// A character device node `major:minor`.
    pub fn char_device(mut self, path: &str, mode: u32, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, mode, 0);
        h.set_device_major(major).expect("gnu header");
        h.set_device_minor(minor).expect("gnu header");
        self.tar
            .append_data(&mut h, path, &[][..])
            .expect("tar device");
        self
    }

    /// A whiteout of `path` (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, 0o644, b"")
    }

    /// The finished, uncompressed tar.
    pub fn tar(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish tar")
    }
}

/// Compress a tar.
pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
    }
}

/// A single-platform image to write.
#[derive(Clone)]
pub struct Image {
    /// Layers: uncompressed tar and compression.
    pub layers: Vec<(Vec<u8>, Compression)>,
    /// `architecture`.
    pub architecture: String,
    /// `variant` (empty: none).
    pub variant: String,
    /// Extra keys of the config's `config` object (`Env`, `Cmd`, `Volumes`, …).
    pub runtime: serde_json::Value,
    /// Media types that lie about a layer's compression: `(layer index, media type)`.
    pub mislabelled: Vec<(usize, String)>,
    /// Layers whose diff_id in the config is wrong (to test the diff_id check).
    pub wrong_diff_ids: Vec<usize>,
}

/// Where a written image or index is.
#[derive(Clone, Debug)]
pub struct Written {
    /// Manifest (or index) digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Config digest (images only).
    pub config_digest: String,
    /// Compressed layer digests (images only).
    pub layer_digests: Vec<String>,
}

impl Image {
    /// An amd64 image with these layers and no runtime config.
    pub fn new(layers: Vec<(Vec<u8>, Compression)>) -> Self {
        Self {
            layers,
            architecture: "amd64".into(),
            variant: String::new(),
            runtime: serde_json::json!({}),
            mislabelled: Vec::new(),
            wrong_diff_ids: Vec::new(),
        }
    }

    /// Make the config's diff_id of layer `index` wrong.
    pub fn wrong_diff_id(mut self, index: usize) -> Self {
        self.wrong_diff_ids.push(index);
        self
    }

    /// Give layer `index` this media type whatever its real compression (as broken tools do).
    pub fn mislabel(mut self, index: usize, media_type: &str) -> Self {
        self.mislabelled.push((index, media_type.to_owned()));
        self
    }

    /// Set the architecture (and variant).
    pub fn arch(mut self, arch: &str, variant: &str) -> Self {
        self.architecture = arch.into();
        self.variant = variant.into();
        self
    }

    /// Set the runtime config object (`{"Env": [...], "Cmd": [...]}`).
    pub fn runtime(mut self, v: serde_json::Value) -> Self {
        self.runtime = v;
        self
    }

    /// Write blobs, config and manifest into the OCI layout at `layout` (created when missing);
    /// the manifest is not tagged (see [`tag`]).
    pub fn write(&self, layout: &Path) -> Written {
        init_layout(layout);
        let mut diff_ids = Vec::new();
        let mut layers = Vec::new();
        let mut layer_digests = Vec::new();
        for (i, (tar, c)) in self.layers.iter().enumerate() {
            diff_ids.push(if self.wrong_diff_ids.contains(&i) {
                digest(b"not this layer")
            } else {
                digest(tar)
            });
            let blob = compress(tar, *c);
            let d = put_blob(layout, &blob);
            layer_digests.push(d.clone());
            let mt = match c {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            let mt = self
                .mislabelled
                .iter()
                .find(|(j, _)| *j == i)
                .map_or(mt, |(_, m)| m.as_str());
            layers.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        }
        let mut config = serde_json::json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": self.runtime,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if !self.variant.is_empty() {
            config["variant"] = self.variant.clone().into();
        }
        let config = serde_json::to_vec(&config).expect("json");
        let config_digest = put_blob(layout, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers,
        }))
        .expect("json");
        let d = put_blob(layout, &manifest);
        Written {
            digest: d,
            size: manifest.len() as u64,
            config_digest,
            layer_digests,
        }
    }
}

/// Write an image index of already written images (`(written, arch, variant)`).
pub fn write_index(layout: &Path, images: &[(&Written, &str, &str)]) -> Written {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(w, arch, variant)| {
            let mut p = serde_json::json!({"os": "linux", "architecture": arch});
            if !variant.is_empty() {
                p["variant"] = (*variant).into();
            }
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": w.digest, "size": w.size, "platform": p,
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("json");
    let d = put_blob(layout, &index);
    Written {
        digest: d,
        size: index.len() as u64,
        config_digest: String::new(),
        layer_digests: Vec::new(),
    }
}

/// Point `tag` of the layout's `index.json` at a written manifest or index.
pub fn tag(layout: &Path, written: &Written, tag: &str, is_index: bool) {
    let path = layout.join("index.json");
    let mut idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read index.json"))
            .expect("index.json");
    let mt = if is_index {
        "application/vnd.oci.image.index.v1+json"
    } else {
        "application/vnd.oci.image.manifest.v1+json"
    };
    let list = idx["manifests"].as_array_mut().expect("manifests array");
    list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    list.push(serde_json::json!({
        "mediaType": mt, "digest": written.digest, "size": written.size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    std::fs::write(&path, serde_json::to_vec(&idx).expect("json")).expect("write index.json");
}

fn init_layout(layout: &Path) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout dir");
    let lay = layout.join("oci-layout");
    if !lay.exists() {
        std::fs::write(lay, br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        std::fs::write(
            layout.join("index.json"),
            br#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .expect("index.json");
    }
}

fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = digest(data);
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), data).expect("write blob");
    d
}
