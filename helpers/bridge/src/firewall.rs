//! One run of the machines' filter: the generator's policy file + man8s.conf + the host's subnet
//! → the table `inet man8s` (through `nft`) → `/run/man8s/filter.json`, which `mbctl machines
//! status` reads to say whether machines are filtered.
//!
//! ```json
//! {"state":"filtered","fleet":["300:aaaa:bbbb:cccc::/64"],"warnings":[]}
//! ```

use std::io;
use std::path::PathBuf;

use ipnet::Ipv6Net;
use man8s::Paths;
use man8s::hostconfig::HostConfig;
use man8s::mesh::{POLICY_FILE, PolicyFile, WHOLE_MESH};
use serde::{Deserialize, Serialize};

use crate::apply::{ApplyError, write_if_changed};
use crate::filter::{self, FilterSpec};
use crate::nft::{self, NftError};

/// Canonical path of the filter's status file.
pub const STATUS_FILE: &str = "/run/man8s/filter.json";

/// Whether the table is in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterState {
    /// The table `inet man8s` is applied.
    Filtered,
    /// It could not be applied (nftables missing or refusing): every port is open.
    Unfiltered,
}

/// `/run/man8s/filter.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterStatus {
    /// Applied or not.
    pub state: FilterState,
    /// Why not, when unfiltered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The fleet (`[Mesh] AllowFrom=`), resolved; empty when man8s.conf names none.
    #[serde(default)]
    pub fleet: Vec<String>,
    /// Entries left out of the table.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl FilterStatus {
    /// Read the status file; `None` when absent or unreadable (no filter run yet).
    pub fn read(paths: &Paths) -> Option<Self> {
        let text = std::fs::read_to_string(paths.fs(STATUS_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The warning for a host whose man8s.conf names no fleet (upgrades from the open days).
pub fn no_fleet_warning() -> String {
    format!(
        "man8s.conf names no fleet ([Mesh] AllowFrom=): your other hosts reach only the ports machines Expose=; \
         to restore the old openness set AllowFrom={WHOLE_MESH} in [Mesh] of /etc/man8s/man8s.conf (or per machine in [Network])"
    )
}

/// Read the generator's policy file; a missing one means no machines (nothing is exposed).
pub fn read_policy(paths: &Paths) -> Result<PolicyFile, String> {
    match std::fs::read_to_string(paths.fs(POLICY_FILE)) {
        Ok(text) => PolicyFile::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PolicyFile::default()),
        Err(e) => Err(format!("{POLICY_FILE}: {e}")),
    }
}

/// The filter this host should have now.
pub fn current_spec(
    paths: &Paths,
    cfg: &HostConfig,
    subnet: Option<Ipv6Net>,
) -> (FilterSpec, Vec<String>) {
    let (policy, mut warnings) = match read_policy(paths) {
        Ok(p) => (p, Vec::new()),
        // A broken policy file closes every exception but the fleet: fail closed.
        Err(e) => (PolicyFile::default(), vec![e]),
    };
    let (spec, more) = filter::spec(&policy, cfg, subnet);
    warnings.extend(more);
    (spec, warnings)
}

/// Apply the filter and record the outcome in [`STATUS_FILE`].
pub fn apply(
    paths: &Paths,
    cfg: &HostConfig,
    subnet: Option<Ipv6Net>,
) -> Result<FilterStatus, ApplyError> {
    let (spec, warnings) = current_spec(paths, cfg, subnet);
    let (state, reason) = match nft::apply(&filter::ruleset(&spec)) {
        Ok(()) => (FilterState::Filtered, None),
        Err(e) => (FilterState::Unfiltered, Some(e.to_string())),
    };
    let status = FilterStatus {
        state,
        reason,
        fleet: spec.fleet.iter().map(ToString::to_string).collect(),
        warnings,
    };
    let mut text = serde_json::to_string(&status).expect("plain data serializes");
    text.push('\n');
    write_if_changed(&paths.fs(STATUS_FILE), &text)?;
    Ok(status)
}

/// Remove the table and the status file (`man8s-bridge --stop`).
pub fn remove(paths: &Paths) -> Result<(), RemoveError> {
    let path = paths.fs(STATUS_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(RemoveError::Status { path, source }),
    }
    match nft::apply(&filter::removal()) {
        Ok(()) | Err(NftError::Missing) => Ok(()),
        Err(e) => Err(RemoveError::Nft(e)),
    }
}

/// Why `--stop` failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// The status file could not be removed.
    #[error("{path}: {source}")]
    Status {
        /// File-system path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// `nft` refused to delete the table.
    #[error(transparent)]
    Nft(NftError),
}
