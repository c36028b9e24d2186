//! Images: references, registry access, the blob cache, secure unpacking and atomic rootfs install.
//!
//! The flow of a pull: [`reference::ImageRef`] names the image; [`registry::Registry`] talks to the
//! registry (auth, retries, resumable blob downloads); [`cache::BlobCache`] keeps every verified blob
//! once by digest; [`pull::Puller`] resolves the manifest for one [`platform::Platform`] and makes sure
//! every blob is in the cache; [`install`] decompresses the layers (checking their diff_ids), hands
//! them to [`unpack::apply_layer`] and renames the finished rootfs into place atomically.
#![deny(missing_docs)]

pub mod auth;
pub mod cache;
pub mod decompress;
pub mod error;
pub mod install;
pub mod layers;
pub mod manifest;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod registry;
pub mod snapshot;
pub mod unpack;

pub use error::{Error, Result};
pub use platform::Platform;
pub use reference::ImageRef;
