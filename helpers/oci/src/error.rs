//! One error type for the whole fetch path; every message is one line naming what, where and why.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a reference and an installed rootfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference {
        /// What the user wrote.
        reference: String,
        /// Why it is refused.
        reason: String,
    },
    /// A platform string such as `linux/arm/v7` cannot be parsed.
    #[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8")]
    Platform(String),
    /// A configuration file (auth.json, registries.conf) is unreadable or malformed.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The registry refused our credentials (401) or access (403).
    #[error("{image}: access denied by registry {registry} (HTTP {status}){hint}")]
    Denied {
        /// The image.
        image: String,
        /// The registry host.
        registry: String,
        /// 401 or 403.
        status: u16,
        /// Extra advice.
        hint: String,
    },
    /// The image, tag or one of its blobs does not exist (404).
    #[error("{image}: {what} not found in registry {registry}")]
    NotFound {
        /// The image.
        image: String,
        /// The registry host.
        registry: String,
        /// "manifest", "blob sha256:…".
        what: String,
    },
    /// The registry answered something we cannot use (other status codes, bad headers, …).
    #[error("{image}: registry {registry}: {reason}")]
    Registry {
        /// The image.
        image: String,
        /// The registry host.
        registry: String,
        /// Why.
        reason: String,
    },
    /// Connection-level failure after all retries.
    #[error("{image}: cannot reach registry {registry}: {reason}")]
    Network {
        /// The image.
        image: String,
        /// The registry host.
        registry: String,
        /// Why (last error).
        reason: String,
    },
    /// A manifest or config is malformed or unsupported.
    #[error("{image}: {reason}")]
    Manifest {
        /// The image.
        image: String,
        /// Why.
        reason: String,
    },
    /// The image exists, but not for the wanted platform.
    #[error("{image}: no image for platform {wanted} (available: {available})")]
    NoPlatform {
        /// The image.
        image: String,
        /// The platform asked for.
        wanted: String,
        /// What the index or config offers.
        available: String,
    },
    /// A blob's content does not match its digest or size.
    #[error("{image}: blob {digest} from registry {registry} is corrupt: {reason}")]
    Corrupt {
        /// The image.
        image: String,
        /// The registry (or "cache").
        registry: String,
        /// The expected digest.
        digest: String,
        /// What differed.
        reason: String,
    },
    /// A layer's uncompressed content does not match the diff_id in the image config.
    #[error("{image}: layer {} ({digest}) unpacks to {actual}, but the image config says {expected}", .index + 1)]
    DiffId {
        /// The image.
        image: String,
        /// Layer number (0-based; messages count from 1, like the progress lines).
        index: usize,
        /// Compressed digest.
        digest: String,
        /// diff_id from the config.
        expected: String,
        /// What we computed.
        actual: String,
    },
    /// Pull=never, and the image is not in the cache.
    #[error("{image}: not in the local cache and pulling is disabled (Pull=never)")]
    NotCached {
        /// The image.
        image: String,
    },
    /// Unpacking a layer failed.
    #[error("{image}: layer {} of the image ({digest}): {reason}", .index + 1)]
    Unpack {
        /// The image.
        image: String,
        /// Layer number (0-based; messages count from 1, like the progress lines).
        index: usize,
        /// Compressed digest.
        digest: String,
        /// Why.
        reason: String,
    },
    /// A layer hard-links to a file it does not hold: hostile, or, unpacked alone into the layer
    /// store, a link into a lower layer (the machine then gets a full copy).
    #[error("{image}: layer {} of the image ({digest}): {source}", .index + 1)]
    MissingLinkTarget {
        /// The image.
        image: String,
        /// Layer number (0-based; messages count from 1).
        index: usize,
        /// Compressed digest.
        digest: String,
        /// The unpacker's error ([`crate::unpack::UnpackError::MissingLinkTarget`]).
        source: crate::unpack::UnpackError,
    },
    /// The disk is full.
    #[error("{image}: no space left on device while writing {path}")]
    DiskFull {
        /// The image.
        image: String,
        /// Where.
        path: PathBuf,
    },
    /// Any other I/O error on a local path.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else during install (bad machine name, env file that cannot be written, …).
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An I/O error at `path` while pulling `image`: disk-full becomes its own clear message.
    pub fn io_for(image: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            Error::DiskFull {
                image: image.to_owned(),
                path,
            }
        } else {
            Error::Io { path, source }
        }
    }
}

/// Attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    /// Map the error to [`Error::Io`] at `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
