//! The host-wide man8s configuration, `/etc/man8s/man8s.conf`.
//!
//! A small systemd-style INI file; every key is optional and a missing file means all defaults:
//!
//! ```ini
//! [Bridge]
//! # The networkd bridge machines are attached to.
//! Name=srvgrp0
//! # The bridge's IPv4 address; its subnet is the DHCP pool.
//! IPv4Address=172.17.0.1/16
//! # IPv6 prefix for SLAAC (default: derived from /etc/machine-id).
//! ULAPrefix=fd12:3456:789a::/64
//! # Handed out by DHCP; DNS= and NTP= repeat (default: the host's own).
//! DNS=192.0.2.53
//! NTP=ntp.example
//! Timezone=Europe/Berlin
//!
//! [Yggdrasil]
//! # Default: AdminListen= from ConfigFile=, else yggdrasil's own default.
//! AdminEndpoint=unix:///run/yggdrasil/yggdrasil.sock
//! ConfigFile=/etc/yggdrasil/yggdrasil.conf
//! # How long to wait for the admin socket of a yggdrasil that is configured.
//! WaitSec=10
//!
//! [Mesh]
//! # Peers allowed to reach every port of every machine (the user's fleet): ADDRESS, SUBNET or
//! # @HOST of [Hosts]; repeatable. Empty: only what declarations expose (man8s.machine(5)).
//! AllowFrom=@nas 300:1111:2222:3333::/64
//! # Machines are NAME.DOMAIN and other hosts' machines NAME.HOST.DOMAIN (default man8s).
//! Domain=man8s
//!
//! [Hosts]
//! # The user's other man8s hosts: NAME=their Yggdrasil subnet.
//! nas=300:aaaa:bbbb:cccc::/64
//!
//! [Pull]
//! # A transfer (manifest, config or layer) that moves fewer than LowSpeedLimit bytes per
//! # second, averaged over LowSpeedTimeSec seconds, is given up with an error.
//! LowSpeedLimit=1K
//! LowSpeedTimeSec=60
//! # Most bytes of file data one image may unpack to (GNU sparse files count by their full size).
//! MaxUnpackedSize=32G
//! # `yes`: new machines share their image's layers under a writable layer of their own
//! # (overlayfs) where the kernel and file system allow it; `no`: a full copy each.
//! SharedLayers=yes
//! ```
//!
//! Sizes take the suffixes K, M, G, T (powers of 1024), as systemd's do.
//!
//! `#` and `;` start comment lines. A repeatable key given an empty value (`DNS=`) clears the
//! list so far, as in unit files; single-valued keys take the last assignment. Unknown sections
//! and keys are errors naming the file and line (keys beginning `X-` are ignored).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::Paths;
use crate::mesh::{AllowSource, validate_host_label};
use crate::paths::MAN8S_CONF;

/// The default bridge name (same as the Python tool's).
pub const DEFAULT_BRIDGE: &str = "srvgrp0";
/// The default bridge IPv4 address and subnet (the Python tool's).
pub const DEFAULT_IPV4_ADDRESS: &str = "172.17.0.1/16";
/// Where yggdrasil's own configuration is, on Debian and Arch alike.
pub const DEFAULT_YGGDRASIL_CONFIG: &str = "/etc/yggdrasil/yggdrasil.conf";
/// The admin endpoint yggdrasil listens on when its configuration names none.
pub const DEFAULT_ADMIN_ENDPOINT: &str = "unix:///var/run/yggdrasil/yggdrasil.sock";
/// Default wait for a configured yggdrasil to open its admin socket.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// The default domain of machine names (`redis.man8s`, `db.nas.man8s`).
pub const DEFAULT_DOMAIN: &str = "man8s";

/// Why `man8s.conf` was refused: one line naming file, line and cause.
#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    /// The file exists but could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file (file-system view).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line that is not a section header, comment or `Key=Value`, or a bad value.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file as named to the user.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// `[Bridge]`: the networkd bridge written by `man8s-bridge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// `Name=`: the bridge interface name.
    pub name: String,
    /// `IPv4Address=`: the bridge's own address with the prefix length of the machines' subnet.
    pub ipv4_address: Ipv4Net,
    /// `ULAPrefix=`: the /64 advertised for SLAAC; `None` derives one from the machine ID.
    pub ula_prefix: Option<Ipv6Net>,
    /// `DNS=`: the servers man8s-dns relays machines' queries to (other than their names);
    /// empty: the host's own (`/etc/resolv.conf`).
    pub dns: Vec<IpAddr>,
    /// `NTP=`: servers handed out by DHCP; empty lets networkd pass on the host's.
    pub ntp: Vec<String>,
    /// `Timezone=`: handed out by DHCP; `None` lets networkd pass on the host's.
    pub timezone: Option<String>,
    /// `MTUBytes=`: the MTU of the bridge, the machines' veths and `host0` (given to machines by
    /// DHCP), as networkd's key of that name.
    pub mtu: u32,
}

/// The bridge's default MTU: Yggdrasil's own interface MTU. At Ethernet's 1500 a remote node's
/// segments to a machine shrink to ~1.4 kB and the machine gets a tenth of the mesh throughput
/// (docs/performance.md).
pub const DEFAULT_MTU: u32 = 65535;
/// The smallest MTU accepted: IPv6's minimum link MTU.
pub const MIN_MTU: u32 = 1280;

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_BRIDGE.to_owned(),
            ipv4_address: DEFAULT_IPV4_ADDRESS.parse().expect("valid default"),
            ula_prefix: None,
            dns: Vec::new(),
            ntp: Vec::new(),
            timezone: None,
            mtu: DEFAULT_MTU,
        }
    }
}

/// `[Yggdrasil]`: how to reach the host's yggdrasil.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YggdrasilConfig {
    /// `AdminEndpoint=`: `unix:///path` or `tcp://host:port`; `None` reads `AdminListen` from
    /// [`Self::config_file`].
    pub admin_endpoint: Option<String>,
    /// `ConfigFile=`: yggdrasil's configuration (canonical path).
    pub config_file: PathBuf,
    /// `WaitSec=`: how long to wait for the admin socket of a yggdrasil that is configured.
    pub wait: Duration,
}

impl Default for YggdrasilConfig {
    fn default() -> Self {
        Self {
            admin_endpoint: None,
            config_file: PathBuf::from(DEFAULT_YGGDRASIL_CONFIG),
            wait: DEFAULT_WAIT,
        }
    }
}

/// `[Mesh]`: who may reach machines from outside the host, and machine names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// `AllowFrom=`: the user's fleet, allowed to reach every port of every machine. Every
    /// `@HOST` in it names a host of [`HostConfig::hosts`] (checked when parsing).
    pub allow_from: Vec<AllowSource>,
    /// `Domain=`: machines are `NAME.DOMAIN`, other hosts' `NAME.HOST.DOMAIN`.
    pub domain: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            allow_from: Vec::new(),
            domain: DEFAULT_DOMAIN.to_owned(),
        }
    }
}

/// `[Pull]`: limits of a pull, against a slow or hostile registry and hostile images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullConfig {
    /// `LowSpeedLimit=`: bytes per second a transfer must at least move, on average over
    /// [`Self::low_speed_time`] (not just "not silent": a registry that drips a byte every few
    /// seconds is stopped too).
    pub low_speed_limit: u64,
    /// `LowSpeedTimeSec=`: the interval over which [`Self::low_speed_limit`] is measured.
    pub low_speed_time: Duration,
    /// `MaxUnpackedSize=`: bytes of file data one image may unpack to.
    pub max_unpacked_size: u64,
    /// `SharedLayers=`: new machines get a layered root (shared image layers + their own
    /// writable layer) where the kernel and file system allow it (see man8s-fetch(8), SHARED
    /// LAYERS); `no` gives full copies.
    pub shared_layers: bool,
}

/// Default `LowSpeedLimit=`: 1 KiB/s.
pub const DEFAULT_LOW_SPEED_LIMIT: u64 = 1024;
/// Default `LowSpeedTimeSec=`.
pub const DEFAULT_LOW_SPEED_TIME: Duration = Duration::from_secs(60);
/// Default `MaxUnpackedSize=`: 32 GiB.
pub const DEFAULT_MAX_UNPACKED_SIZE: u64 = 32 << 30;

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            low_speed_limit: DEFAULT_LOW_SPEED_LIMIT,
            low_speed_time: DEFAULT_LOW_SPEED_TIME,
            max_unpacked_size: DEFAULT_MAX_UNPACKED_SIZE,
            shared_layers: true,
        }
    }
}

/// A size like `1K`, `512M`, `32G` or `1000` (bytes); suffixes are powers of 1024.
pub fn parse_size(value: &str) -> Result<u64, &'static str> {
    let (digits, shift) = match value.strip_suffix(['K', 'M', 'G', 'T']) {
        Some(d) => (
            d,
            match value.as_bytes()[value.len() - 1] {
                b'K' => 10,
                b'M' => 20,
                b'G' => 30,
                _ => 40,
            },
        ),
        None => (value, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| "not a size (bytes, or a number with K, M, G or T)")?;
    n.checked_mul(1u64 << shift).ok_or("size too large")
}

/// The whole of `man8s.conf`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HostConfig {
    /// `[Bridge]`.
    pub bridge: BridgeConfig,
    /// `[Yggdrasil]`.
    pub yggdrasil: YggdrasilConfig,
    /// `[Mesh]`.
    pub mesh: MeshConfig,
    /// `[Hosts]`: the user's other hosts, name → Yggdrasil subnet.
    pub hosts: BTreeMap<String, Ipv6Net>,
    /// `[Pull]`.
    pub pull: PullConfig,
}

impl HostConfig {
    /// The networks an `AllowFrom=` entry stands for: an `@HOST` is its subnet (its machines)
    /// and the /64 of its node address (the host itself); empty for an `@HOST` not in `[Hosts]`.
    pub fn resolve(&self, source: &AllowSource) -> Vec<IpNet> {
        match source {
            AllowSource::Net(n) => vec![*n],
            AllowSource::Host(h) => self
                .hosts
                .get(h)
                .map(|n| vec![IpNet::V6(*n), IpNet::V6(crate::address::node_prefix(*n))])
                .unwrap_or_default(),
        }
    }
}

const SCHEMA: crate::ini::Schema = &[
    (
        "Bridge",
        &[
            "Name",
            "IPv4Address",
            "ULAPrefix",
            "DNS",
            "NTP",
            "Timezone",
            "MTUBytes",
        ],
    ),
    ("Yggdrasil", &["AdminEndpoint", "ConfigFile", "WaitSec"]),
    ("Mesh", &["AllowFrom", "Domain"]),
    ("Hosts", &[crate::ini::ANY_KEY]),
    (
        "Pull",
        &[
            "LowSpeedLimit",
            "LowSpeedTimeSec",
            "MaxUnpackedSize",
            "SharedLayers",
        ],
    ),
];

impl HostConfig {
    /// Read `/etc/man8s/man8s.conf` under `paths`; a missing file gives the defaults.
    pub fn load(paths: &Paths) -> Result<Self, HostConfigError> {
        let path = paths.fs(MAN8S_CONF);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, MAN8S_CONF),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(HostConfigError::Read { path, source }),
        }
    }

    /// Parse the text of `man8s.conf`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, HostConfigError> {
        let mut cfg = Self::default();
        // The line of each `[Mesh] AllowFrom=` entry, for errors about `@HOST`.
        let mut allow_lines: Vec<usize> = Vec::new();
        let mut assignments = Vec::new();
        let mut problems = Vec::new();
        crate::ini::lex(
            Path::new(origin),
            text,
            SCHEMA,
            "[Bridge]",
            &mut assignments,
            &mut problems,
        );
        if let Some(p) = problems.first() {
            return Err(HostConfigError::Syntax {
                path: origin.to_owned(),
                line: p.line,
                message: p.what(),
            });
        }
        for a in &assignments {
            let (key, value) = (a.key, a.value.as_str());
            let err = |message: String| HostConfigError::Syntax {
                path: origin.to_owned(),
                line: a.line,
                message,
            };
            let bad = |why: &str| err(format!("{key}={value}: {why}"));
            match (a.section, key) {
                ("Bridge", "Name") => {
                    crate::declaration::values::validate_ifname(value).map_err(|e| bad(&e))?;
                    cfg.bridge.name = value.to_owned();
                }
                ("Bridge", "IPv4Address") => {
                    let net: Ipv4Net = value
                        .parse()
                        .map_err(|_| bad("not an IPv4 address with prefix, like 172.17.0.1/16"))?;
                    validate_ipv4(net).map_err(&bad)?;
                    cfg.bridge.ipv4_address = net;
                }
                ("Bridge", "ULAPrefix") => {
                    if value.is_empty() {
                        cfg.bridge.ula_prefix = None;
                    } else {
                        let net: Ipv6Net = value
                            .parse()
                            .map_err(|_| bad("not an IPv6 prefix, like fd12:3456:789a::/64"))?;
                        if net.prefix_len() != 64 {
                            return Err(bad(
                                "must be a /64 (SLAAC needs 64-bit interface identifiers)",
                            ));
                        }
                        cfg.bridge.ula_prefix = Some(net.trunc());
                    }
                }
                ("Bridge", "DNS") => push_list(&mut cfg.bridge.dns, value, |v| {
                    v.parse::<IpAddr>().map_err(|_| "not an IP address")
                })
                .map_err(&bad)?,
                ("Bridge", "NTP") => push_list(&mut cfg.bridge.ntp, value, |v| {
                    if v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
                    {
                        Ok(v.to_owned())
                    } else {
                        Err("not a host name or address")
                    }
                })
                .map_err(&bad)?,
                ("Bridge", "Timezone") => {
                    if value.is_empty() {
                        cfg.bridge.timezone = None;
                    } else if value.starts_with('/')
                        || value.split('/').any(|p| p.is_empty() || p == "..")
                        || !value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
                    {
                        return Err(bad("not a time zone name, like Europe/Berlin"));
                    } else {
                        cfg.bridge.timezone = Some(value.to_owned());
                    }
                }
                ("Bridge", "MTUBytes") => {
                    cfg.bridge.mtu = if value.is_empty() {
                        DEFAULT_MTU
                    } else {
                        // As networkd's MTUBytes=: bytes, or with a 1024-based K suffix.
                        parse_size(value)
                            .ok()
                            .and_then(|m| u32::try_from(m).ok())
                            .filter(|m| (MIN_MTU..=65535).contains(m))
                            .ok_or_else(|| bad("not an MTU from 1280 to 65535 bytes"))?
                    };
                }
                ("Yggdrasil", "AdminEndpoint") => {
                    if value.is_empty() {
                        cfg.yggdrasil.admin_endpoint = None;
                    } else if value.starts_with("unix://") || value.starts_with("tcp://") {
                        cfg.yggdrasil.admin_endpoint = Some(value.to_owned());
                    } else {
                        return Err(bad("must start with unix:// or tcp://"));
                    }
                }
                ("Yggdrasil", "ConfigFile") => {
                    if !value.starts_with('/') {
                        return Err(bad("must be an absolute path"));
                    }
                    cfg.yggdrasil.config_file = PathBuf::from(value);
                }
                ("Yggdrasil", "WaitSec") => {
                    let secs: f64 = value.parse().map_err(|_| bad("not a number of seconds"))?;
                    if !(0.0..=600.0).contains(&secs) {
                        return Err(bad("must be between 0 and 600 seconds"));
                    }
                    cfg.yggdrasil.wait = Duration::from_secs_f64(secs);
                }
                ("Mesh", "AllowFrom") => {
                    push_list(&mut cfg.mesh.allow_from, value, str::parse::<AllowSource>)
                        .map_err(|e| bad(&e))?;
                    allow_lines.resize(cfg.mesh.allow_from.len(), a.line);
                }
                ("Mesh", "Domain") => {
                    let v = value.trim_end_matches('.');
                    if v.is_empty() || v.split('.').any(|l| validate_host_label(l).is_err()) {
                        return Err(bad("not a domain name, like man8s or home.arpa"));
                    }
                    cfg.mesh.domain = v.to_ascii_lowercase();
                }
                ("Hosts", _) => {
                    let name = a.name.as_str();
                    validate_host_label(name).map_err(|e| err(format!("{name}=: {e}")))?;
                    let net: Ipv6Net = value.parse().map_err(|_| {
                        err(format!(
                            "{name}={value}: not the host's Yggdrasil subnet, like 300:1:2:3::/64"
                        ))
                    })?;
                    if net.prefix_len() != 64 {
                        return Err(err(format!(
                            "{name}={value}: must be a /64 (a Yggdrasil node's subnet)"
                        )));
                    }
                    cfg.hosts.insert(name.to_ascii_lowercase(), net.trunc());
                }
                ("Pull", "LowSpeedLimit") => {
                    cfg.pull.low_speed_limit = parse_size(value).map_err(&bad)?;
                }
                ("Pull", "LowSpeedTimeSec") => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| bad("not a whole number of seconds"))?;
                    if !(1..=3600).contains(&secs) {
                        return Err(bad("must be between 1 and 3600 seconds"));
                    }
                    cfg.pull.low_speed_time = Duration::from_secs(secs);
                }
                ("Pull", "MaxUnpackedSize") => {
                    let size = parse_size(value).map_err(&bad)?;
                    if size == 0 {
                        return Err(bad("must be more than 0"));
                    }
                    cfg.pull.max_unpacked_size = size;
                }
                ("Pull", "SharedLayers") => {
                    cfg.pull.shared_layers = match value {
                        "yes" | "true" | "on" | "1" => true,
                        "no" | "false" | "off" | "0" => false,
                        _ => return Err(bad("not a boolean (yes or no)")),
                    };
                }
                _ => unreachable!("key lists and match arms agree"),
            }
        }
        // `@HOST` may come before `[Hosts]`: check once everything is read.
        for (source, line) in cfg.mesh.allow_from.iter().zip(&allow_lines) {
            if cfg.resolve(source).is_empty() {
                return Err(HostConfigError::Syntax {
                    path: origin.to_owned(),
                    line: *line,
                    message: format!("AllowFrom={source}: no such host in [Hosts]"),
                });
            }
        }
        Ok(cfg)
    }
}

/// Append `value` to a repeatable list; an empty value clears it (unit-file semantics).
/// Several space-separated values may be given on one line.
fn push_list<T, E>(
    list: &mut Vec<T>,
    value: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<(), E> {
    if value.is_empty() {
        list.clear();
        return Ok(());
    }
    for item in value.split_whitespace() {
        list.push(parse(item)?);
    }
    Ok(())
}

/// The bridge needs a host address inside a subnet big enough to hand out leases.
fn validate_ipv4(net: Ipv4Net) -> Result<(), &'static str> {
    if net.prefix_len() > 30 {
        return Err("the prefix must be /30 or shorter, to leave room for machines");
    }
    let addr = net.addr();
    if addr == net.network() || addr == net.broadcast() {
        return Err(
            "the bridge needs a host address, not the network or broadcast address (e.g. 172.17.0.1/16)",
        );
    }
    if addr.is_loopback()
        || addr.is_multicast()
        || addr.is_unspecified()
        || addr == Ipv4Addr::BROADCAST
    {
        return Err("not a unicast address");
    }
    Ok(())
}

/// The file-system view of yggdrasil's configuration file named in `cfg`.
pub fn yggdrasil_config_path(paths: &Paths, cfg: &YggdrasilConfig) -> PathBuf {
    paths.fs(Path::new(&cfg.config_file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, String> {
        HostConfig::parse(text, "/etc/man8s/man8s.conf").map_err(|e| e.to_string())
    }

    #[test]
    fn pull_limits() {
        let c = parse("[Pull]\nLowSpeedLimit=2K\nLowSpeedTimeSec=5\nMaxUnpackedSize=1G\n").unwrap();
        assert_eq!(c.pull.low_speed_limit, 2048);
        assert_eq!(c.pull.low_speed_time, Duration::from_secs(5));
        assert_eq!(c.pull.max_unpacked_size, 1 << 30);
        assert!(c.pull.shared_layers);
        assert!(
            !parse("[Pull]\nSharedLayers=no\n")
                .unwrap()
                .pull
                .shared_layers
        );
        assert!(parse("[Pull]\nSharedLayers=maybe\n").is_err());
        assert_eq!(parse("").unwrap().pull, PullConfig::default());
        for bad in [
            "[Pull]\nLowSpeedLimit=fast\n",
            "[Pull]\nLowSpeedTimeSec=0\n",
            "[Pull]\nMaxUnpackedSize=0\n",
            "[Pull]\nMaxUnpackedSize=99999999999T\n",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.starts_with("/etc/man8s/man8s.conf:2: ") && !e.contains('\n'),
                "{e}"
            );
        }
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("3M"), Ok(3 << 20));
    }

    #[test]
    fn empty_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, HostConfig::default());
        assert_eq!(c.bridge.name, "srvgrp0");
        assert_eq!(c.bridge.ipv4_address.to_string(), "172.17.0.1/16");
        assert_eq!(c.bridge.mtu, 65535);
        assert_eq!(
            c.yggdrasil.config_file,
            Path::new("/etc/yggdrasil/yggdrasil.conf")
        );
    }

    #[test]
    fn full_file() {
        let c = parse(
            "# host settings\n[Bridge]\nName=br-m8\nIPv4Address=10.77.0.1/24\nULAPrefix=fd00:1:2:3:4::/64\n\
             DNS=192.0.2.1 2001:db8::53\nDNS=192.0.2.2\nNTP=ntp.example\nTimezone=Europe/Berlin\n\
             MTUBytes=9K\n\
             X-Mine=whatever\n\n; comment\n[Yggdrasil]\nAdminEndpoint=tcp://127.0.0.1:9001\n\
             ConfigFile=/etc/yggdrasil.conf\nWaitSec=2.5\n",
        )
        .unwrap();
        assert_eq!(c.bridge.name, "br-m8");
        assert_eq!(c.bridge.ipv4_address.to_string(), "10.77.0.1/24");
        // Host bits of the ULA prefix are dropped.
        assert_eq!(c.bridge.ula_prefix.unwrap().to_string(), "fd00:1:2:3::/64");
        assert_eq!(c.bridge.dns.len(), 3);
        assert_eq!(c.bridge.ntp, vec!["ntp.example"]);
        assert_eq!(c.bridge.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(c.bridge.mtu, 9216);
        assert_eq!(
            c.yggdrasil.admin_endpoint.as_deref(),
            Some("tcp://127.0.0.1:9001")
        );
        assert_eq!(c.yggdrasil.config_file, Path::new("/etc/yggdrasil.conf"));
        assert_eq!(c.yggdrasil.wait, Duration::from_millis(2500));
    }

    #[test]
    fn mesh_and_hosts() {
        let c = parse(
            "[Mesh]\nAllowFrom=@nas 192.0.2.0/24\nAllowFrom=300:9::7\nDomain=Home.Arpa.\n\
             [Hosts]\nnas=300:aaaa:bbbb:cccc::5/64\nPi-2=300:1::/64\n",
        )
        .unwrap();
        assert_eq!(c.mesh.domain, "home.arpa");
        assert_eq!(c.hosts.len(), 2);
        assert_eq!(c.hosts["pi-2"].to_string(), "300:1::/64");
        let nets: Vec<String> = c
            .mesh
            .allow_from
            .iter()
            .flat_map(|s| c.resolve(s))
            .map(|n| n.to_string())
            .collect();
        // @nas: its machines' subnet and the /64 of its own node address.
        assert_eq!(
            nets,
            [
                "300:aaaa:bbbb:cccc::/64",
                "200:aaaa:bbbb:cccc::/64",
                "192.0.2.0/24",
                "300:9::7/128"
            ]
        );
        assert!(parse("").unwrap().mesh.allow_from.is_empty());
        assert_eq!(parse("").unwrap().mesh.domain, "man8s");
        // An empty AllowFrom= clears the list, and with it the check of earlier @HOSTs.
        let c = parse("[Mesh]\nAllowFrom=@gone\nAllowFrom=\nAllowFrom=200::/7\n").unwrap();
        assert_eq!(c.mesh.allow_from.len(), 1);
        for (text, want) in [
            (
                "[Mesh]\nAllowFrom=@nas\n",
                "man8s.conf:2: AllowFrom=@nas: no such host in [Hosts]",
            ),
            (
                "[Mesh]\nAllowFrom=nas\n",
                "AllowFrom=nas: \"nas\" is not an address",
            ),
            ("[Mesh]\nDomain=a..b\n", "not a domain name"),
            (
                "[Hosts]\nnas=300:1::/48\n",
                "man8s.conf:2: nas=300:1::/48: must be a /64",
            ),
            (
                "[Hosts]\nnas=10.0.0.0/8\n",
                "not the host's Yggdrasil subnet",
            ),
            (
                "[Hosts]\nn_a=300:1::/64\n",
                "n_a=: \"n_a\" is not a host name",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn empty_value_resets_list() {
        let c = parse("[Bridge]\nDNS=192.0.2.1\nDNS=\nDNS=192.0.2.9\n").unwrap();
        assert_eq!(c.bridge.dns, vec!["192.0.2.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("[Bridge]\n\nname=x\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/man8s/man8s.conf:3: name=: unknown key in [Bridge] (did you mean Name=?)"
        );
        let e = parse("[Bridge]\nIPv4Adress=10.0.0.1/8\n").unwrap_err();
        assert!(
            e.contains(":2: IPv4Adress=: unknown key in [Bridge] (did you mean IPv4Address=?)"),
            "{e}"
        );
        let e = parse("[Network]\n").unwrap_err();
        assert!(e.contains(":1: unknown section [Network]"), "{e}");
        let e = parse("Name=x\n").unwrap_err();
        assert!(
            e.contains(":1: Name=: assignment outside of any section (add [Bridge] above it)"),
            "{e}"
        );
        let e = parse("[Bridge]\njunk\n").unwrap_err();
        assert!(e.contains(":2: not a Key=Value assignment"), "{e}");
    }

    #[test]
    fn bad_values() {
        for (text, want) in [
            (
                "[Bridge]\nName=a/b\n",
                "Name=a/b: \"a/b\" is not a network interface name",
            ),
            ("[Bridge]\nName=waytoolongbridgename\n", "1-15 characters"),
            (
                "[Bridge]\nIPv4Address=172.17.0.0/16\n",
                "needs a host address",
            ),
            ("[Bridge]\nIPv4Address=172.17.0.1/31\n", "/30 or shorter"),
            (
                "[Bridge]\nIPv4Address=172.17.0.1\n",
                "not an IPv4 address with prefix",
            ),
            ("[Bridge]\nULAPrefix=fd00::/48\n", "must be a /64"),
            (
                "[Bridge]\nDNS=dns.example\n",
                "DNS=dns.example: not an IP address",
            ),
            (
                "[Bridge]\nTimezone=../../etc/shadow\n",
                "not a time zone name",
            ),
            (
                "[Yggdrasil]\nAdminEndpoint=/run/y.sock\n",
                "must start with unix:// or tcp://",
            ),
            (
                "[Bridge]\nMTUBytes=1000\n",
                "MTUBytes=1000: not an MTU from 1280",
            ),
            ("[Bridge]\nMTUBytes=64K\n", "not an MTU from 1280 to 65535"),
            ("[Bridge]\nMTUBytes=jumbo\n", "not an MTU"),
            ("[Yggdrasil]\nConfigFile=relative.conf\n", "absolute path"),
            ("[Yggdrasil]\nWaitSec=-1\n", "between 0 and 600"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn load_missing_file_gives_defaults_and_reads_relocated_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert_eq!(HostConfig::load(&paths).unwrap(), HostConfig::default());
        std::fs::create_dir_all(dir.path().join("etc/man8s")).unwrap();
        std::fs::write(
            dir.path().join("etc/man8s/man8s.conf"),
            "[Bridge]\nName=m8br\n",
        )
        .unwrap();
        assert_eq!(HostConfig::load(&paths).unwrap().bridge.name, "m8br");
        std::fs::write(dir.path().join("etc/man8s/man8s.conf"), "[Bridge]\nName=\n").unwrap();
        let e = HostConfig::load(&paths).unwrap_err().to_string();
        assert!(e.starts_with("/etc/man8s/man8s.conf:2: Name=: "), "{e}");
    }
}
