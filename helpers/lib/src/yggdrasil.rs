//! `/run/man8s/yggdrasil.json`: the host's Yggdrasil address and subnet as `man8s-bridge` last
//! saw them (it writes the file), for the fetch helper and `mbctl` (which compute machine
//! addresses from it without asking yggdrasil again). Absent when yggdrasil was not reachable.
//! The one reader and writer of the file, used by all of them.
//!
//! ```json
//! {"address":"201:240a:2fab:1c47:50ad:b44:7941:cd13","subnet":"301:240a:2fab:1c47::/64"}
//! ```

use std::net::Ipv6Addr;
use std::path::PathBuf;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::Paths;

/// Canonical path of the state file.
pub const STATE_FILE: &str = "/run/man8s/yggdrasil.json";
/// A larger state file is not ours.
const MAX_SIZE: u64 = 4096;

/// What the host's yggdrasil says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfInfo {
    /// The node's own address (`200::/7`, in practice `2xx:…`).
    pub address: Ipv6Addr,
    /// The /64 it routes to this node (`3xx:…::/64`); machines get addresses in it.
    pub subnet: Ipv6Net,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    address: String,
    subnet: String,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Unreadable (other than absent).
    #[error("{path}: {source}")]
    Read {
        /// File-system path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not the format above.
    #[error("{STATE_FILE}: {0}")]
    Parse(String),
}

/// The file's text for `info` (one line, fixed key order).
pub fn render(info: &SelfInfo) -> String {
    let raw = Raw {
        address: info.address.to_string(),
        subnet: info.subnet.to_string(),
    };
    let mut s = serde_json::to_string(&raw).expect("two strings serialize");
    s.push('\n');
    s
}

/// Parse the file's text.
pub fn parse(text: &str) -> Result<SelfInfo, StateError> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| StateError::Parse(e.to_string()))?;
    let address: Ipv6Addr = raw
        .address
        .parse()
        .map_err(|_| StateError::Parse(format!("address {:?} is not IPv6", raw.address)))?;
    let subnet: Ipv6Net = raw
        .subnet
        .parse()
        .map_err(|_| StateError::Parse(format!("subnet {:?} is not an IPv6 prefix", raw.subnet)))?;
    Ok(SelfInfo { address, subnet })
}

/// Read the state file under `paths`; `Ok(None)` when it does not exist (yggdrasil unavailable,
/// or `man8s-bridge` has not run since boot).
pub fn read(paths: &Paths) -> Result<Option<SelfInfo>, StateError> {
    use std::io::Read;
    let path = paths.fs(STATE_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let mut text = String::new();
    file.take(MAX_SIZE)
        .read_to_string(&mut text)
        .map_err(|source| StateError::Read { path, source })?;
    parse(&text).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_golden() {
        let info = SelfInfo {
            address: "201:240a:2fab:1c47:50ad:b44:7941:cd13".parse().unwrap(),
            subnet: "301:240a:2fab:1c47::/64".parse().unwrap(),
        };
        let text = render(&info);
        assert_eq!(
            text,
            "{\"address\":\"201:240a:2fab:1c47:50ad:b44:7941:cd13\",\"subnet\":\"301:240a:2fab:1c47::/64\"}\n"
        );
        assert_eq!(parse(&text).unwrap(), info);
    }

    #[test]
    fn bad_state() {
        assert!(parse("{}").is_err());
        assert!(
            parse(r#"{"address":"x","subnet":"301::/64"}"#)
                .unwrap_err()
                .to_string()
                .contains("not IPv6")
        );
        assert!(parse(r#"{"address":"201::1","subnet":"301::/64","extra":1}"#).is_err());
    }

    #[test]
    fn absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&Paths::new(dir.path())).unwrap(), None);
    }
}
