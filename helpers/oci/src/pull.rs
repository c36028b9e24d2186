//! Resolving an image for one platform and getting all its blobs into the cache.

use crate::cache::BlobCache;
use crate::error::{Error, Result};
use crate::manifest::{self, ImageConfig, ImageManifest, Manifest};
use crate::platform::Platform;
use crate::progress::{Event, Progress};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryConfig};

/// When to ask the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Use the cache when it has the image (a tag as last resolved), else the registry.
    #[default]
    Missing,
    /// Always ask the registry what the tag points to now (blobs already cached are not fetched again).
    Always,
    /// Only the cache; fail when something is missing.
    Never,
}

impl From<man8s::machine::PullPolicy> for Policy {
    fn from(p: man8s::machine::PullPolicy) -> Self {
        match p {
            man8s::machine::PullPolicy::Missing => Policy::Missing,
            man8s::machine::PullPolicy::Always => Policy::Always,
            man8s::machine::PullPolicy::Never => Policy::Never,
        }
    }
}

/// An image whose manifest, config and layers are all in the cache.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// What was asked for.
    pub reference: ImageRef,
    /// Digest of the platform's image manifest.
    pub manifest_digest: String,
    /// Digest of the index it was chosen from, if any.
    pub index_digest: Option<String>,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config JSON, verbatim.
    pub config_json: Vec<u8>,
    /// The parsed config.
    pub config: ImageConfig,
    /// Whether the registry was contacted.
    pub from_network: bool,
}

impl ResolvedImage {
    /// The digest that pins this image: the index digest when there is one (so that it can be
    /// pulled again by digest for any platform), else the manifest digest.
    pub fn top_digest(&self) -> &str {
        self.index_digest
            .as_deref()
            .unwrap_or(&self.manifest_digest)
    }
}

/// Pulls images into a [`BlobCache`].
pub struct Puller<'a> {
    /// The cache.
    pub cache: &'a BlobCache,
    /// Registry settings.
    pub config: &'a RegistryConfig,
    /// Progress sink.
    pub progress: &'a dyn Progress,
    /// Platform to select.
    pub platform: Platform,
}

impl Puller<'_> {
    /// Resolve `image` and make sure every blob is cached, according to `policy`.
    pub async fn pull(&self, image: &ImageRef, policy: Policy) -> Result<ResolvedImage> {
        if policy != Policy::Always {
            if let Some(r) = self.from_cache(image)? {
                return Ok(r);
            }
            if policy == Policy::Never {
                return Err(Error::NotCached {
                    image: image.to_string(),
                });
            }
        }
        self.from_registry(image).await
    }

    fn manifest_err(image: &ImageRef, reason: impl Into<String>) -> Error {
        Error::Manifest {
            image: image.to_string(),
            reason: reason.into(),
        }
    }

    /// Everything from the cache, or `None` when anything is missing.
    pub fn from_cache(&self, image: &ImageRef) -> Result<Option<ResolvedImage>> {
        let Some(top) = self.cache.get_ref(image) else {
            return Ok(None);
        };
        let Some(body) = self.cache.read_small(&top, manifest::MAX_MANIFEST_BYTES)? else {
            return Ok(None);
        };
        let parsed = manifest::parse(&body, None).map_err(|r| Self::manifest_err(image, r))?;
        let (index_digest, manifest_digest, img) = match parsed {
            Manifest::Image(img) => (None, top, img),
            Manifest::Index(list) => {
                let entry =
                    manifest::select_from_index(&list, &self.platform).map_err(|available| {
                        Error::NoPlatform {
                            image: image.to_string(),
                            wanted: self.platform.to_string(),
                            available,
                        }
                    })?;
                let Some(b) = self
                    .cache
                    .read_small(&entry.digest, manifest::MAX_MANIFEST_BYTES)?
                else {
                    return Ok(None);
                };
                match manifest::parse(&b, None).map_err(|r| Self::manifest_err(image, r))? {
                    Manifest::Image(img) => (Some(top), entry.digest.clone(), img),
                    Manifest::Index(_) => {
                        return Err(Self::manifest_err(image, "index entry is another index"));
                    }
                }
            }
        };
        let Some(config_json) = self
            .cache
            .read_small(&img.config.digest, manifest::MAX_CONFIG_BYTES)?
        else {
            return Ok(None);
        };
        if !img
            .layers
            .iter()
            .all(|l| self.cache.has_blob(&l.digest, l.size))
        {
            return Ok(None);
        }
        let config = manifest::parse_config(&config_json, img.layers.len(), &self.platform)
            .map_err(|r| Self::manifest_err(image, r))?;
        Ok(Some(ResolvedImage {
            reference: image.clone(),
            manifest_digest,
            index_digest,
            manifest: img,
            config_json,
            config,
            from_network: false,
        }))
    }

    /// Ask the registry; fetch what the cache lacks.
    pub async fn from_registry(&self, image: &ImageRef) -> Result<ResolvedImage> {
        let resolved = self.resolve_remote(image).await?;
        self.fetch_layers(
            &resolved,
            &|_| {},
            &std::sync::atomic::AtomicBool::new(false),
        )
        .await?;
        Ok(resolved)
    }

    /// Ask the registry what `image` is now: manifest (chosen from an index for our platform)
    /// and config land in the cache; layers are left to [`Self::fetch_layers`].
    pub async fn resolve_remote(&self, image: &ImageRef) -> Result<ResolvedImage> {
        let progress = self.progress;
        progress.event(Event::Resolving {
            image: &image.to_string(),
        });
        let reg = Registry::new(image, self.config)?;
        let top = reg.manifest(image.manifest_reference(), progress).await?;
        let parsed = manifest::parse(&top.body, top.content_type.as_deref())
            .map_err(|r| Self::manifest_err(image, r))?;
        self.cache.put_verified(&top.digest, &top.body)?;
        let (index_digest, manifest_digest, img) = match parsed {
            Manifest::Image(img) => (None, top.digest.clone(), img),
            Manifest::Index(list) => {
                let entry =
                    manifest::select_from_index(&list, &self.platform).map_err(|available| {
                        Error::NoPlatform {
                            image: image.to_string(),
                            wanted: self.platform.to_string(),
                            available,
                        }
                    })?;
                let m = match self
                    .cache
                    .read_small(&entry.digest, manifest::MAX_MANIFEST_BYTES)?
                {
                    Some(body) => body,
                    None => {
                        let m = reg.manifest(&entry.digest, progress).await?;
                        self.cache.put_verified(&m.digest, &m.body)?;
                        m.body
                    }
                };
                match manifest::parse(&m, None).map_err(|r| Self::manifest_err(image, r))? {
                    Manifest::Image(img) => (Some(top.digest.clone()), entry.digest.clone(), img),
                    Manifest::Index(_) => {
                        return Err(Self::manifest_err(image, "index entry is another index"));
                    }
                }
            }
        };
        for l in &img.layers {
            manifest::layer_compression(&l.media_type).map_err(|r| Self::manifest_err(image, r))?;
        }
        reg.fetch_blob(&img.config, None, self.cache, progress)
            .await?;
        let config_json = self
            .cache
            .read_small(&img.config.digest, manifest::MAX_CONFIG_BYTES)?
            .ok_or_else(|| Self::manifest_err(image, "image config vanished from the cache"))?;
        let config = manifest::parse_config(&config_json, img.layers.len(), &self.platform)
            .map_err(|r| Self::manifest_err(image, r))?;
        Ok(ResolvedImage {
            reference: image.clone(),
            manifest_digest,
            index_digest,
            manifest: img,
            config_json,
            config,
            from_network: true,
        })
    }
}

impl Puller<'_> {
    /// Download the layers of a resolved image that the cache lacks, in order, calling
    /// `on_ready(i)` once layer `i` is in the cache (so that it can be unpacked while the next one
    /// downloads). Stops between layers when `cancel` is set (returns `Ok(false)`). When all are
    /// cached, the tag is pointed at the image.
    pub async fn fetch_layers(
        &self,
        resolved: &ResolvedImage,
        on_ready: &(dyn Fn(usize) + Sync),
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<bool> {
        let image = &resolved.reference;
        let layers = &resolved.manifest.layers;
        let missing: u64 = layers
            .iter()
            .filter(|l| !self.cache.has_blob(&l.digest, l.size))
            .map(|l| l.size)
            .sum();
        self.progress.event(Event::Resolved {
            image: &image.to_string(),
            digest: &resolved.manifest_digest,
            layers: layers.len(),
            download_bytes: missing,
        });
        // A fresh connection pool: this may run on another thread and runtime than the resolve.
        let reg = if missing > 0 {
            Some(Registry::new(image, self.config)?)
        } else {
            None
        };
        for (i, l) in layers.iter().enumerate() {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(false);
            }
            if let Some(reg) = &reg {
                reg.fetch_blob(l, Some(i), self.cache, self.progress)
                    .await?;
            }
            on_ready(i);
        }
        // Only now, with everything cached, does the tag point at the new content.
        self.cache.set_ref(image, resolved.top_digest())?;
        Ok(true)
    }
}

/// Run a future on a fresh current-thread runtime (the library's blocking entry points use this).
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start async runtime: {e}")))?;
    Ok(rt.block_on(f))
}
