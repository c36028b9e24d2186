//! The content-addressed blob cache under `/var/cache/man8s/`.
//!
//! Layout (all below the cache dir):
//!
//! | path | what |
//! |---|---|
//! | `blobs/sha256/<hex>` | a verified blob: manifest, index, config or (compressed) layer, stored once by digest |
//! | `partial/sha256/<hex>` | a download in progress; resumed with a `Range` request, locked with `flock` |
//! | `refs/<registry>/<repository>/_tags/<tag>` | the digest (`sha256:…`) the tag pointed to when last pulled |
//!
//! A blob lands in `blobs/` only by rename after its digest and size were checked, so anything
//! there is complete. Several machines (and several concurrent `man8s-fetch` runs) share the cache.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Manifest};
use crate::reference::{ImageRef, digest_hex};

/// A blob cache rooted at one directory.
#[derive(Clone, Debug)]
pub struct BlobCache {
    root: PathBuf,
}

/// One cached tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedRef {
    /// `registry/repository:tag`.
    pub reference: String,
    /// The manifest (or index) digest it points to.
    pub digest: String,
}

/// What is in the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Cached tags.
    pub refs: Vec<CachedRef>,
    /// Blobs: digest and size.
    pub blobs: Vec<(String, u64)>,
}

/// What [`BlobCache::gc`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub removed: usize,
    /// Bytes freed.
    pub bytes: u64,
}

impl BlobCache {
    /// The cache of a system (`/var/cache/man8s`, relocated by `MAN8S_ROOT`).
    pub fn new(paths: &man8s::Paths) -> Self {
        Self::at(paths.cache_dir())
    }

    /// A cache at an explicit directory.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Create `dir` (inside the cache). The cache dir itself is made 0700 when created: it may
    /// hold layers of private images.
    fn create_dir(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if !self.root.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .at(&self.root)?;
        }
        fs::create_dir_all(dir).at(dir)
    }

    /// Path of a verified blob (whether or not it exists). `None` for a malformed digest.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        digest_hex(digest).map(|hex| self.root.join("blobs/sha256").join(hex))
    }

    /// Path of the partial download of a blob.
    pub fn partial_path(&self, digest: &str) -> Option<PathBuf> {
        digest_hex(digest).map(|hex| self.root.join("partial/sha256").join(hex))
    }

    /// Is the blob present with the expected size?
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        self.blob_path(digest)
            .and_then(|p| fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }

    /// Store a small blob (manifest, config) after checking its digest.
    pub fn put_verified(&self, digest: &str, data: &[u8]) -> Result<PathBuf> {
        let path = self
            .blob_path(digest)
            .ok_or_else(|| Error::Other(format!("invalid digest {digest:?}")))?;
        let actual = sha256_digest(data);
        if actual != digest {
            return Err(Error::Other(format!(
                "refusing to cache {digest}: content hashes to {actual}"
            )));
        }
        if path.exists() {
            return Ok(path);
        }
        let dir = path.parent().expect("blob path has a parent");
        self.create_dir(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
        tmp.write_all(data).at(&path)?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(path)
    }

    /// Read a small blob (at most `limit` bytes), checking its digest again (cheap, and guards
    /// against a cache damaged on disk).
    pub fn read_small(&self, digest: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(path) = self.blob_path(digest) else {
            return Ok(None);
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut data = Vec::new();
        file.take(limit + 1).read_to_end(&mut data).at(&path)?;
        if data.len() as u64 > limit || sha256_digest(&data) != digest {
            // Damaged: drop it so that the next pull fetches it again.
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(data))
    }

    /// Forget a blob (after it proved damaged).
    pub fn remove_blob(&self, digest: &str) {
        if let Some(p) = self.blob_path(digest) {
            let _ = fs::remove_file(p);
        }
    }

    fn ref_path(&self, image: &ImageRef) -> Option<PathBuf> {
        // Components were validated by ImageRef (no `..`, no empty parts).
        let tag = image.tag()?;
        Some(
            self.root
                .join("refs")
                .join(image.registry())
                .join(image.repository())
                .join("_tags")
                .join(tag),
        )
    }

    /// Remember which digest a tag resolved to.
    pub fn set_ref(&self, image: &ImageRef, digest: &str) -> Result<()> {
        let Some(path) = self.ref_path(image) else {
            return Ok(());
        };
        let dir = path.parent().expect("ref path has a parent");
        self.create_dir(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
        writeln!(tmp, "{digest}").at(&path)?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }

    /// The digest a tag resolved to when last pulled. A digest reference resolves to itself.
    pub fn get_ref(&self, image: &ImageRef) -> Option<String> {
        if let Some(d) = image.digest() {
            return Some(d.to_owned());
        }
        let text = fs::read_to_string(self.ref_path(image)?).ok()?;
        let d = text.trim();
        digest_hex(d).map(|_| d.to_owned())
    }

    /// Everything in the cache.
    pub fn list(&self) -> Result<Listing> {
        let mut out = Listing::default();
        let blobs = self.root.join("blobs/sha256");
        if let Some(entries) = read_dir_opt(&blobs)? {
            for e in entries {
                let e = e.at(&blobs)?;
                let name = e.file_name().to_string_lossy().into_owned();
                let digest = format!("sha256:{name}");
                if digest_hex(&digest).is_some() {
                    out.blobs.push((digest, e.metadata().at(e.path())?.len()));
                }
            }
        }
        out.blobs.sort();
        let refs = self.root.join("refs");
        walk_refs(&refs, &refs, &mut out.refs)?;
        out.refs.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Remove every cached blob, partial download and ref (the cache dir itself stays).
    pub fn clear(&self) -> Result<()> {
        for sub in ["blobs", "partial", "refs"] {
            let p = self.root.join(sub);
            match fs::remove_dir_all(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p, e)),
            }
        }
        Ok(())
    }

    /// Remove blobs not reachable from `keep` (manifest or index digests, e.g. from the
    /// installed machines' `source.json`), stale partial downloads, and refs whose target is gone.
    /// Tags that point into `keep` keep their referents.
    pub fn gc(&self, keep: &[&str]) -> Result<GcReport> {
        let mut live = BTreeSet::new();
        let mut todo: Vec<String> = keep.iter().map(|s| (*s).to_owned()).collect();
        while let Some(d) = todo.pop() {
            if !live.insert(d.clone()) {
                continue;
            }
            let Some(body) = self.read_small(&d, manifest::MAX_MANIFEST_BYTES)? else {
                continue;
            };
            match manifest::parse(&body, None) {
                Ok(Manifest::Index(list)) => todo.extend(list.into_iter().map(|e| e.digest)),
                Ok(Manifest::Image(img)) => {
                    live.insert(img.config.digest);
                    live.extend(img.layers.into_iter().map(|l| l.digest));
                }
                Err(_) => {} // a config or layer: nothing to follow
            }
        }
        let mut report = GcReport::default();
        for (digest, size) in self.list()?.blobs {
            if !live.contains(&digest)
                && let Some(p) = self.blob_path(&digest)
            {
                fs::remove_file(&p).at(&p)?;
                report.removed += 1;
                report.bytes += size;
            }
        }
        // Partial downloads: only those no running pull holds (a non-blocking lock succeeds).
        let partial = self.root.join("partial/sha256");
        if let Some(entries) = read_dir_opt(&partial)? {
            for e in entries.flatten() {
                let Ok(f) = File::open(e.path()) else {
                    continue;
                };
                if let Ok(locked) =
                    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
                {
                    let _ = fs::remove_file(e.path());
                    drop(locked);
                }
            }
        }
        for r in self.list()?.refs {
            if self.blob_path(&r.digest).is_none_or(|p| !p.exists())
                && let Ok(img) = ImageRef::parse(&r.reference)
                && let Some(p) = self.ref_path(&img)
            {
                let _ = fs::remove_file(p);
            }
        }
        Ok(report)
    }

    /// Open (creating) the partial file of a blob, exclusively locked against other processes.
    pub(crate) fn lock_partial(&self, digest: &str) -> Result<nix::fcntl::Flock<File>> {
        let path = self
            .partial_path(digest)
            .ok_or_else(|| Error::Other(format!("invalid digest {digest:?}")))?;
        let dir = path.parent().expect("partial path has a parent");
        self.create_dir(dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(&path, io::Error::from(e)))
    }

    /// Move a completed, verified partial download into `blobs/`.
    pub(crate) fn commit_partial(&self, digest: &str) -> Result<PathBuf> {
        let from = self
            .partial_path(digest)
            .expect("digest checked by lock_partial");
        let to = self
            .blob_path(digest)
            .expect("digest checked by lock_partial");
        let dir = to.parent().expect("blob path has a parent");
        self.create_dir(dir)?;
        fs::rename(&from, &to).at(&to)?;
        Ok(to)
    }
}

fn read_dir_opt(p: &Path) -> Result<Option<fs::ReadDir>> {
    match fs::read_dir(p) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    }
}

fn walk_refs(base: &Path, dir: &Path, out: &mut Vec<CachedRef>) -> Result<()> {
    let Some(entries) = read_dir_opt(dir)? else {
        return Ok(());
    };
    for e in entries {
        let e = e.at(dir)?;
        let path = e.path();
        let ft = e.file_type().at(&path)?;
        if ft.is_dir() {
            walk_refs(base, &path, out)?;
        } else if ft.is_file() && dir.file_name().is_some_and(|n| n == "_tags") {
            let repo = dir.parent().and_then(|p| p.strip_prefix(base).ok());
            let (Some(repo), Ok(text)) = (repo, fs::read_to_string(&path)) else {
                continue;
            };
            out.push(CachedRef {
                reference: format!("{}:{}", repo.display(), e.file_name().to_string_lossy()),
                digest: text.trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_ref_list_gc_clear() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::at(dir.path().join("cache"));
        let layer = b"layer-bytes".to_vec();
        let ld = sha256_digest(&layer);
        let cfg = b"{}".to_vec();
        let cd = sha256_digest(&cfg);
        let man = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{cd}","size":2}},"layers":[{{"digest":"{ld}","size":11}}]}}"#,
            manifest::OCI_MANIFEST
        );
        let md = sha256_digest(man.as_bytes());
        let orphan = sha256_digest(b"orphan");
        for (d, b) in [
            (&ld, &layer[..]),
            (&cd, &cfg[..]),
            (&md, man.as_bytes()),
            (&orphan, b"orphan"),
        ] {
            cache.put_verified(d, b).unwrap();
        }
        assert!(cache.put_verified(&ld, b"other").is_err());
        assert!(cache.has_blob(&ld, 11));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(cache.root()).unwrap().permissions().mode() & 0o777,
            0o700,
            "private cache dir"
        );
        let img = ImageRef::parse("127.0.0.1:5000/a/b:v1").unwrap();
        cache.set_ref(&img, &md).unwrap();
        assert_eq!(cache.get_ref(&img).as_deref(), Some(md.as_str()));
        let l = cache.list().unwrap();
        assert_eq!(l.blobs.len(), 4);
        assert_eq!(
            l.refs,
            vec![CachedRef {
                reference: "127.0.0.1:5000/a/b:v1".into(),
                digest: md.clone()
            }]
        );
        let r = cache.gc(&[&md]).unwrap();
        assert_eq!(
            r,
            GcReport {
                removed: 1,
                bytes: 6
            }
        );
        assert!(!cache.has_blob(&orphan, 6));
        assert!(cache.has_blob(&ld, 11));
        let r = cache.gc(&[]).unwrap();
        assert_eq!(r.removed, 3);
        assert!(
            cache.list().unwrap().refs.is_empty(),
            "dangling ref must go"
        );
        cache.put_verified(&ld, &layer).unwrap();
        cache.clear().unwrap();
        assert_eq!(cache.list().unwrap(), Listing::default());
    }

    #[test]
    fn gc_spares_partial_downloads_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::at(dir.path());
        let busy = sha256_digest(b"busy");
        let stale = sha256_digest(b"stale");
        let held = cache.lock_partial(&busy).unwrap();
        drop(cache.lock_partial(&stale).unwrap());
        cache.gc(&[]).unwrap();
        assert!(
            cache.partial_path(&busy).unwrap().exists(),
            "a running download keeps its file"
        );
        assert!(!cache.partial_path(&stale).unwrap().exists());
        drop(held);
    }

    #[test]
    fn damaged_small_blob_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::at(dir.path());
        let d = sha256_digest(b"abc");
        let p = cache.put_verified(&d, b"abc").unwrap();
        fs::write(&p, b"abd").unwrap();
        assert!(cache.read_small(&d, 100).unwrap().is_none());
        assert!(!p.exists());
    }
}
