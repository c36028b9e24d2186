//! The man8s bridge helper: the host's Yggdrasil subnet → a systemd-networkd bridge for machines.
//!
//! - [`yggdrasil`]: find yggdrasil's admin socket and ask it `getself` (0.3, 0.4, 0.5 answers);
//! - [`networkd`]: render the bridge's `.netdev`/`.network` (pure);
//! - [`state`]: `/run/man8s/yggdrasil.json`, read by the fetch helper and `mbctl`;
//! - [`apply`]: one run of `man8s-bridge` (write what changed, report collisions);
//! - [`dns`]: answers for machines' names (`NAME.man8s`, `MACHINE.HOST.man8s`), for the stub;
//! - [`stub`]: `man8s-dns`, the machines' name server on the bridge (the zone, else relayed);
//! - [`reload`]: `org.freedesktop.network1.Manager.Reload` over D-Bus.
//!
//! Other crates that need the host's subnet call [`host_yggdrasil`].
#![deny(missing_docs)]

pub mod apply;
pub mod dns;
pub mod filter;
pub mod firewall;
pub mod names;
pub mod networkd;
pub mod nft;
pub mod reload;
pub mod state;
pub mod stub;
pub mod yggdrasil;

use man8s::Paths;
use man8s::hostconfig::{HostConfig, HostConfigError};

pub use yggdrasil::SelfInfo;

/// Why the host's Yggdrasil node is not known.
#[derive(Debug, thiserror::Error)]
pub enum HostYggdrasilError {
    /// The state file exists but is broken.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// `man8s.conf` is broken.
    #[error(transparent)]
    Config(#[from] HostConfigError),
    /// No state file and yggdrasil did not answer.
    #[error(transparent)]
    Unavailable(#[from] yggdrasil::YggdrasilError),
}

/// The host's Yggdrasil address and subnet: from the state file `man8s-bridge` wrote, or, when
/// there is none, straight from yggdrasil's admin socket (without waiting for it).
pub fn host_yggdrasil(paths: &Paths) -> Result<SelfInfo, HostYggdrasilError> {
    if let Some(info) = state::read(paths)? {
        return Ok(info);
    }
    let mut cfg = HostConfig::load(paths)?.yggdrasil;
    cfg.wait = std::time::Duration::ZERO;
    Ok(yggdrasil::discover(paths, &cfg)?)
}
