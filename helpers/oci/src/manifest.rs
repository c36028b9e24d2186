//! Manifests, indexes and image configs: pure parsing of untrusted registry JSON.

use serde::Deserialize;

use crate::platform::{Candidate, Platform};
use crate::reference::digest_hex;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (legacy; refused).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema 1, signed (legacy; refused).
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What we send in `Accept:` for manifests (schema 1 deliberately absent).
pub const ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Largest manifest or config we read (registries cap manifests at 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config we read.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    /// Media type (may be empty in sloppy manifests).
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

/// The platform object of an index entry or config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PlatformJson {
    /// OS.
    #[serde(default)]
    pub os: String,
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// Variant.
    #[serde(default)]
    pub variant: String,
}

/// A single-platform image manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageManifest {
    /// The config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// A parsed manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    /// An index / manifest list.
    Index(Vec<Descriptor>),
    /// One image.
    Image(ImageManifest),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Parse a manifest body. `content_type` is the HTTP `Content-Type` (may be absent or generic).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, String> {
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .unwrap_or("");
    if ct == DOCKER_SCHEMA1 || ct == DOCKER_SCHEMA1_SIGNED {
        return Err(schema1());
    }
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    match raw.schema_version {
        Some(1) => return Err(schema1()),
        Some(2) => {}
        Some(v) => return Err(format!("unsupported manifest schemaVersion {v}")),
        None => return Err("manifest has no schemaVersion".into()),
    }
    let mt = if raw.media_type.is_empty() {
        ct
    } else {
        raw.media_type.as_str()
    };
    let is_index = match mt {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => return Err(schema1()),
        // OCI allows omitting mediaType; decide by shape.
        _ if raw.manifests.is_some() && raw.config.is_none() => true,
        _ if raw.config.is_some() => false,
        other => return Err(format!("unsupported manifest media type {other:?}")),
    };
    let check = |d: &Descriptor| -> Result<(), String> {
        if digest_hex(&d.digest).is_none() {
            return Err(format!(
                "manifest names an invalid or non-sha256 digest {:?}",
                d.digest
            ));
        }
        Ok(())
    };
    if is_index {
        let list = raw.manifests.ok_or("image index without \"manifests\"")?;
        list.iter().try_for_each(check)?;
        Ok(Manifest::Index(list))
    } else {
        let config = raw.config.ok_or("image manifest without \"config\"")?;
        let layers = raw.layers.unwrap_or_default();
        check(&config)?;
        layers.iter().try_for_each(check)?;
        if layers.is_empty() {
            return Err("image manifest has no layers".into());
        }
        if config.size > MAX_CONFIG_BYTES {
            return Err(format!(
                "image config of {} bytes is implausibly large",
                config.size
            ));
        }
        Ok(Manifest::Image(ImageManifest { config, layers }))
    }
}

fn schema1() -> String {
    "legacy Docker schema 1 manifest, unsupported (re-push the image with a current docker or skopeo)".into()
}

/// Pick the entry of an index for `want`; `Err` lists what the index offers.
pub fn select_from_index<'a>(
    entries: &'a [Descriptor],
    want: &Platform,
) -> Result<&'a Descriptor, String> {
    // Attestation manifests (buildkit) carry platform unknown/unknown; they never match a real platform.
    let candidates: Vec<Candidate<'_>> = entries
        .iter()
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            Some(Candidate {
                digest: &d.digest,
                os: &p.os,
                architecture: &p.architecture,
                variant: &p.variant,
            })
        })
        .collect();
    let chosen = crate::platform::select(want, &candidates);
    match chosen.and_then(|dig| entries.iter().find(|d| d.digest == dig)) {
        Some(d) => Ok(d),
        None => {
            let mut avail: Vec<String> = candidates
                .iter()
                .filter(|c| c.os != "unknown")
                .map(|c| {
                    Platform {
                        os: c.os.into(),
                        architecture: c.architecture.into(),
                        variant: c.variant.into(),
                    }
                    .to_string()
                })
                .collect();
            avail.dedup();
            Err(if avail.is_empty() {
                "none".into()
            } else {
                avail.join(", ")
            })
        }
    }
}

/// The image config type is the shared one (`man8s::image_config`): fetch, the init and `mbctl`
/// read the same keys the same way.
pub use man8s::image_config::{ImageConfig, RootFs, RuntimeConfig};

/// Parse an image config and check it against the manifest and the wanted platform.
pub fn parse_config(body: &[u8], layers: usize, want: &Platform) -> Result<ImageConfig, String> {
    let cfg: ImageConfig =
        serde_json::from_slice(body).map_err(|e| format!("image config is not valid: {e}"))?;
    if cfg.rootfs.diff_ids.len() != layers {
        return Err(format!(
            "image config lists {} layer diff_ids but the manifest has {} layers",
            cfg.rootfs.diff_ids.len(),
            layers
        ));
    }
    if let Some(bad) = cfg.rootfs.diff_ids.iter().find(|d| digest_hex(d).is_none()) {
        return Err(format!("image config has an invalid diff_id {bad:?}"));
    }
    let os = if cfg.os.is_empty() { "linux" } else { &cfg.os };
    if !want.matches(os, &cfg.architecture, &cfg.variant) {
        let got = Platform {
            os: os.into(),
            architecture: cfg.architecture.clone(),
            variant: cfg.variant.clone(),
        };
        return Err(format!(
            "image is for {got}, not for {want} (wrong architecture)"
        ));
    }
    Ok(cfg)
}

/// How a layer blob is compressed, by media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// Unknown media type: decided by magic bytes.
    Sniff,
}

/// Compression from a layer media type. Encrypted layers are refused.
pub fn layer_compression(media_type: &str) -> Result<Compression, String> {
    if media_type.contains("encrypted") {
        return Err(format!("encrypted layer ({media_type}) is not supported"));
    }
    Ok(match media_type {
        t if t.ends_with("+gzip") || t.ends_with(".tar.gzip") => Compression::Gzip,
        t if t.ends_with("+zstd") => Compression::Zstd,
        t if t.ends_with(".tar") || t.ends_with(".tar.v1") => Compression::None,
        _ => Compression::Sniff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: char) -> String {
        format!("sha256:{}", n.to_string().repeat(64))
    }

    #[test]
    fn schema1_is_refused_clearly() {
        let e = parse(br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#, None).unwrap_err();
        assert!(e.contains("legacy"), "{e}");
        let e = parse(b"{}", Some(DOCKER_SCHEMA1_SIGNED)).unwrap_err();
        assert!(e.contains("schema 1"), "{e}");
    }

    #[test]
    fn image_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{}","size":3}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":9}}]}}"#,
            d('a'),
            d('b')
        );
        let Manifest::Image(img) = parse(m.as_bytes(), None).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(img.layers[0].size, 9);
        assert_eq!(
            layer_compression(&img.layers[0].media_type).unwrap(),
            Compression::Gzip
        );
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
            d('c')
        );
        let Manifest::Index(list) = parse(i.as_bytes(), Some(OCI_INDEX)).unwrap() else {
            panic!("not an index")
        };
        let want: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(select_from_index(&list, &want).unwrap().digest, d('c'));
        let e = select_from_index(&list, &"linux/amd64".parse().unwrap()).unwrap_err();
        assert_eq!(e, "linux/arm/v7");
    }

    #[test]
    fn hostile_digests_refused() {
        let m =
            r#"{"schemaVersion":2,"config":{"digest":"sha256:../../etc","size":3},"layers":[]}"#;
        assert!(parse(m.as_bytes(), None).unwrap_err().contains("invalid"));
    }

    #[test]
    fn config_checks_arch_and_layers() {
        let cfg = format!(
            r#"{{"architecture":"arm64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            d('e')
        );
        let e = parse_config(cfg.as_bytes(), 1, &"linux/amd64".parse().unwrap()).unwrap_err();
        assert!(e.contains("wrong architecture"), "{e}");
        assert!(parse_config(cfg.as_bytes(), 1, &"linux/arm64/v8".parse().unwrap()).is_ok());
        assert!(parse_config(cfg.as_bytes(), 2, &"linux/arm64".parse().unwrap()).is_err());
        let cfg = r#"{"architecture":"amd64","config":{"Env":null,"Cmd":["sh"],"Entrypoint":null},"rootfs":{"diff_ids":[]}}"#;
        let c = parse_config(cfg.as_bytes(), 0, &"linux/amd64".parse().unwrap()).unwrap();
        assert_eq!(c.config.unwrap().cmd, vec!["sh"]);
    }

    #[test]
    fn compression_by_media_type() {
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar").unwrap(),
            Compression::None
        );
        assert_eq!(
            layer_compression("application/octet-stream").unwrap(),
            Compression::Sniff
        );
        assert!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").is_err()
        );
    }
}
