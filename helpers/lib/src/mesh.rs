//! Who may reach a machine from outside its host: the values of `Expose=` and `AllowFrom=`, and
//! the per-machine policy the generator hands to `man8s-bridge`.
//!
//! By default a machine is reachable from its own host and from the other machines on its bridge
//! only. `Expose=[tcp:|udp:]PORT` opens one port to everyone (the whole Yggdrasil mesh, the LAN);
//! `AllowFrom=ADDRESS|SUBNET|@HOST` lets those peers reach every port. `@HOST` names a host of
//! `[Hosts]` in man8s.conf (its subnet). The generator writes [`POLICY_FILE`] on every run;
//! `man8s-bridge` turns it into the nftables table `inet man8s`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::machine::Protocol;

/// Per-machine hosts(5) files by `man8s-bridge` (`NAME.hosts`); the generator binds the directory
/// read-only into every machine at [`NAMES_IN_MACHINE`], and man8s-init merges its file into
/// `/etc/hosts`.
pub const NAMES_DIR: &str = "/run/man8s/names";
/// Where [`NAMES_DIR`] appears inside machines.
pub const NAMES_IN_MACHINE: &str = "/run/host/man8s/names";

/// The policy file the generator writes and `man8s-bridge` reads (canonical path).
pub const POLICY_FILE: &str = "/run/man8s/policy.json";

/// Created by the generator whenever it changed [`POLICY_FILE`], removed by `man8s-bridge` when
/// it reads the policy. `man8s-bridge.path` triggers on its existence (`PathExists=`), which
/// systemd also checks after a daemon-reload: a change event during the reload would be lost.
pub const POLICY_CHANGED: &str = "/run/man8s/policy.changed";

/// What restores the openness of man8s before filtering (every Yggdrasil address, `200::/7`).
pub const WHOLE_MESH: &str = "200::/7";

/// `Expose=[tcp:|udp:]PORT`: a port open to everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Exposed {
    /// TCP unless `udp:` was given.
    pub protocol: Protocol,
    /// 1–65535.
    pub port: u16,
}

impl FromStr for Exposed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (protocol, port) = match s.split_once(':') {
            Some(("tcp", p)) => (Protocol::Tcp, p),
            Some(("udp", p)) => (Protocol::Udp, p),
            Some((other, _)) => {
                return Err(format!(
                    "{other:?} is not a protocol (use tcp: or udp:, e.g. Expose=udp:53)"
                ));
            }
            None => (Protocol::Tcp, s),
        };
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Self { protocol, port }),
            _ => Err(format!("{port:?} is not a port number (1-65535)")),
        }
    }
}

impl fmt::Display for Exposed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.port)
    }
}

impl TryFrom<String> for Exposed {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Exposed> for String {
    fn from(e: Exposed) -> String {
        e.to_string()
    }
}

/// One `AllowFrom=` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AllowSource {
    /// An address (a /32 or /128) or a subnet.
    Net(IpNet),
    /// `@HOST`: the subnet of `HOST` in `[Hosts]` of man8s.conf.
    Host(String),
}

/// A host name of `[Hosts]`: what a DNS label allows, so `NAME.HOST.man8s` is a name.
pub fn validate_host_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a host name (letters, digits and '-', at most 63)"
        ))
    }
}

impl FromStr for AllowSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(host) = s.strip_prefix('@') {
            validate_host_label(host)?;
            return Ok(Self::Host(host.to_owned()));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self::Net(net.trunc()));
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Self::Net(IpNet::from(addr)));
        }
        Err(format!(
            "{s:?} is not an address, a subnet (e.g. 300:1:2:3::/64) or @HOST"
        ))
    }
}

impl fmt::Display for AllowSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            Self::Net(n) => write!(f, "{n}"),
            Self::Host(h) => write!(f, "@{h}"),
        }
    }
}

impl TryFrom<String> for AllowSource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<AllowSource> for String {
    fn from(a: AllowSource) -> String {
        a.to_string()
    }
}

/// `Link=NAME[:ALIAS]`: the machine resolves `NAME` (a machine of this host, or `MACHINE.HOST` of
/// a host in `[Hosts]`), and `ALIAS` too, for apps that expect a fixed host name. Which of the two
/// a dotted name is gets decided where `[Hosts]` is known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Link {
    /// The machine (`redis`) or `MACHINE.HOST` (`db.nas`).
    pub target: crate::MachineName,
    /// The extra name.
    pub alias: Option<crate::MachineName>,
}

impl FromStr for Link {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (target, alias) = match s.split_once(':') {
            Some((t, a)) => (t, Some(a)),
            None => (s, None),
        };
        let target = crate::MachineName::new(target).map_err(|e| e.to_string())?;
        let alias = alias
            .map(|a| crate::MachineName::new(a).map_err(|e| format!("alias: {e}")))
            .transpose()?;
        Ok(Self { target, alias })
    }
}

impl TryFrom<String> for Link {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Link> for String {
    fn from(l: Link) -> String {
        l.to_string()
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target)?;
        if let Some(a) = &self.alias {
            write!(f, ":{a}")?;
        }
        Ok(())
    }
}

/// Where a machine's Yggdrasil address comes from, as far as the filter cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressPolicy {
    /// Derived from the host's subnet and the name.
    Auto,
    /// No Yggdrasil address.
    None,
    /// This address.
    Fixed(Ipv6Addr),
}

/// One machine's part of [`POLICY_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachinePolicy {
    /// The machine name.
    pub name: String,
    /// Its Yggdrasil address.
    pub address: AddressPolicy,
    /// `Expose=`.
    #[serde(default)]
    pub expose: Vec<Exposed>,
    /// `AllowFrom=`.
    #[serde(default)]
    pub allow_from: Vec<AllowSource>,
    /// `Link=` (for the names files).
    #[serde(default)]
    pub links: Vec<Link>,
}

impl MachinePolicy {
    /// The filter-relevant part of a declared machine. Machines not on the bridge
    /// (`Template=macvlan`) have no Yggdrasil address here and so no exceptions.
    pub fn of(m: &crate::machine::Machine) -> Self {
        use crate::machine::{Template, YggdrasilAddress};
        let address = match (m.template, m.network.yggdrasil) {
            (Template::Macvlan, _) | (_, YggdrasilAddress::No) => AddressPolicy::None,
            (_, YggdrasilAddress::Auto) => AddressPolicy::Auto,
            (_, YggdrasilAddress::Fixed(a)) => AddressPolicy::Fixed(a),
        };
        Self {
            name: m.name.to_string(),
            address,
            expose: m.network.expose.clone(),
            allow_from: m.network.allow_from.clone(),
            links: m.links.clone(),
        }
    }
}

/// The whole of [`POLICY_FILE`]: the machines whose declarations loaded, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// One entry a machine.
    pub machines: Vec<MachinePolicy>,
}

impl PolicyFile {
    /// The file's text (deterministic: callers sort the machines).
    pub fn render(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("plain data serializes");
        s.push('\n');
        s
    }

    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("{POLICY_FILE}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_values() {
        let e: Exposed = "80".parse().unwrap();
        assert_eq!((e.protocol, e.port), (Protocol::Tcp, 80));
        assert_eq!("udp:53".parse::<Exposed>().unwrap().to_string(), "udp:53");
        assert_eq!(
            "tcp:6379".parse::<Exposed>().unwrap().to_string(),
            "tcp:6379"
        );
        for (bad, why) in [
            ("0", "not a port number"),
            ("65536", "not a port number"),
            ("http", "not a port number"),
            ("sctp:9", "not a protocol"),
            ("tcp:", "not a port number"),
        ] {
            let e = bad.parse::<Exposed>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn allow_from_values() {
        let a: AllowSource = "300:1:2:3::/64".parse().unwrap();
        assert_eq!(a.to_string(), "300:1:2:3::/64");
        // Host bits of a subnet are dropped; a bare address is one host.
        assert_eq!(
            "300:1:2:3::9/64"
                .parse::<AllowSource>()
                .unwrap()
                .to_string(),
            "300:1:2:3::/64"
        );
        assert_eq!(
            "192.0.2.7".parse::<AllowSource>().unwrap(),
            AllowSource::Net("192.0.2.7/32".parse().unwrap())
        );
        assert_eq!(
            "@nas".parse::<AllowSource>().unwrap(),
            AllowSource::Host("nas".into())
        );
        assert!("@".parse::<AllowSource>().is_err());
        assert!("@a.b".parse::<AllowSource>().is_err());
        let e = "nas".parse::<AllowSource>().unwrap_err();
        assert!(e.contains("or @HOST"), "{e}");
    }

    #[test]
    fn policy_file_round_trips() {
        let p = PolicyFile {
            machines: vec![MachinePolicy {
                name: "web".into(),
                address: AddressPolicy::Fixed("300::5".parse().unwrap()),
                expose: vec!["443".parse().unwrap()],
                allow_from: vec!["@nas".parse().unwrap(), "200::/7".parse().unwrap()],
                links: vec!["db.nas:database".parse().unwrap()],
            }],
        };
        let text = p.render();
        assert!(text.contains("\"tcp:443\""), "{text}");
        assert!(text.contains("\"@nas\""), "{text}");
        assert_eq!(PolicyFile::parse(&text).unwrap(), p);
        let e = PolicyFile::parse(r#"{"machines":[{"name":"x","address":"auto","expose":["0"]}]}"#)
            .unwrap_err();
        assert!(e.starts_with("/run/man8s/policy.json: "), "{e}");
    }
}
