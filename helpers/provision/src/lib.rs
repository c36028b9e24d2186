//! Machine provisioning: what a machine needs on the host besides its rootfs.
//!
//! `man8s-oci` turns an image into a rootfs (atomic swap, `.previous` rollback); this crate makes a
//! *machine* of it on first start and on every start after: the machinectl link, the config dir
//! with man8env.env, and the volumes (created and seeded from the image on first creation).
//! [`ensure::ensure_machine`] is what `man8s-fetch NAME` does; `mbctl machines pull/update` use the
//! same pieces, so a machine made by either is the same.
#![deny(missing_docs)]

pub mod ensure;
pub mod env;
pub mod layered;
pub mod link;
pub mod private;
pub mod quota;
pub mod state;
pub mod volumes;

pub use ensure::{EnsureOptions, Outcome, ensure_machine, fetch_image, prepare_machine};
pub use man8s_oci::{Error, Result};

/// Install options with this host's limits (`[Pull] MaxUnpackedSize=` of man8s.conf).
pub fn install_options(
    paths: &man8s::Paths,
    keep_previous: bool,
    protect_run_tmp: bool,
) -> Result<man8s_oci::install::InstallOptions> {
    let host =
        man8s::hostconfig::HostConfig::load(paths).map_err(|e| Error::Other(e.to_string()))?;
    Ok(man8s_oci::install::InstallOptions {
        keep_previous,
        protect_run_tmp,
        unpack: man8s_oci::unpack::UnpackOptions {
            max_total_size: host.pull.max_unpacked_size,
            ..Default::default()
        },
    })
}

/// `io::Result` → [`Error`] naming the path.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<std::path::PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<std::path::PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
