//! Test-only helpers shared by the root-tier tests of several crates.
//!
//! - [`Registry`]: Debian's `docker-registry` on `127.0.0.1:<free port>` with its own storage dir,
//!   optionally behind htpasswd basic auth; killed on drop.
//! - [`Image`] / [`Index`] / [`LayerBuilder`]: write OCI images (layers built with the `tar`
//!   crate, gzip/zstd/none) into an OCI layout dir; [`Registry::push`] copies them in with `skopeo`
//!   (OCI or Docker v2s2 media types; `--all` for an index).
//! - [`FaultProxy`]: a loopback HTTP proxy in front of a registry that answers chosen requests
//!   with 429/500, or resets/truncates a response mid-body, and records what it saw.
//! - [`Root`]: a relocated root (`MAN8S_ROOT`) to run man8s binaries in, with [`sh`],
//!   [`stdout_of_success`] and [`stderr`] for checking runs.
//!
//! - [`Canary`]: a tree outside the root a hostile input aims at, snapshotted before and after.
//!
//! All network traffic stays on 127.0.0.1.

mod canary;
mod image;
mod proxy;
mod registry;
mod root;

pub use canary::Canary;
pub use image::{Compression, Image, LayerBuilder, Written, compress, tag, write_index};
pub use proxy::{Fault, FaultProxy, Rule, Seen, TokenAuth};
pub use registry::{Format, Registry};
pub use root::{LoopFs, Root, sh, stderr, stdout_of_success};

use sha2::{Digest, Sha256};

/// Fail (not skip) a root-tier test when not run as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root-tier test: run as root (make test-root)"
    );
}

/// `sha256:<hex>` of some bytes.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A deterministic pseudo-random payload (incompressible enough to make real layers).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
