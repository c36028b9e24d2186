//! The host's Yggdrasil node: where its admin socket is, and what it says about itself.
//!
//! The admin API is one JSON request per connection: `{"request":"getself"}` in, an object
//! `{"status":"success","response":{…}}` out, after which yggdrasil closes the connection. The
//! `response` differs between versions:
//!
//! - 0.4 and 0.5: `{"address":"200:…","subnet":"300:…/64","key":…,…}` (checked against Debian's
//!   0.4.7 and 0.5.14);
//! - 0.3: `{"self":{"200:…":{"subnet":"300:…/64","coords":…}}}`, keyed by the address.
//!
//! Parsing ([`parse_admin_listen`], [`parse_getself`]) is pure; [`query_getself`] does the I/O.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use man8s::Paths;
use man8s::hostconfig::{DEFAULT_ADMIN_ENDPOINT, DEFAULT_YGGDRASIL_CONFIG, YggdrasilConfig};

/// Where yggdrasil's configuration was kept before `/etc/yggdrasil/` (older upstream units).
pub const LEGACY_YGGDRASIL_CONFIG: &str = "/etc/yggdrasil.conf";
use serde_json::Value;

/// The largest admin answer we read; `getself` answers are a few hundred bytes.
const MAX_ANSWER: u64 = 1 << 20;
/// Per-connection I/O timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminEndpoint {
    /// `unix:///path/to/socket` (path is canonical; resolve with [`Paths`] before connecting).
    Unix(PathBuf),
    /// `tcp://host:port`.
    Tcp(String),
}

impl std::fmt::Display for AdminEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            AdminEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

pub use man8s::yggdrasil::SelfInfo;

/// Why the host's Yggdrasil node could not be asked or understood.
#[derive(Debug, thiserror::Error)]
pub enum YggdrasilError {
    /// An endpoint string that is neither `unix://…` nor `tcp://host:port`.
    #[error("admin endpoint {0:?}: expected unix:///path or tcp://host:port")]
    BadEndpoint(String),
    /// `AdminListen: none` in yggdrasil's configuration.
    #[error(
        "{0}: AdminListen is \"none\": yggdrasil's admin API is disabled, so its subnet cannot be asked"
    )]
    AdminDisabled(String),
    /// Nothing listens at the endpoint (yggdrasil not running).
    #[error("yggdrasil admin socket {endpoint}: {source} (is yggdrasil running?)")]
    Connect {
        /// The endpoint.
        endpoint: AdminEndpoint,
        /// Why the connection failed.
        source: std::io::Error,
    },
    /// No yggdrasil configuration on this host and nothing at the default endpoint.
    #[error("yggdrasil is not set up on this host (no {}) and nothing answers on {endpoint}", config.display())]
    NotSetUp {
        /// The configuration file looked for (canonical).
        config: PathBuf,
        /// The endpoint tried.
        endpoint: AdminEndpoint,
    },
    /// The connection broke or timed out mid-exchange.
    #[error("yggdrasil admin socket {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: AdminEndpoint,
        /// The I/O error.
        source: std::io::Error,
    },
    /// yggdrasil answered something we cannot use.
    #[error("yggdrasil admin socket {endpoint}: bad getself answer: {why}")]
    BadAnswer {
        /// The endpoint (or `-` for parsing without I/O).
        endpoint: String,
        /// What was wrong.
        why: String,
    },
}

/// Parse an endpoint as yggdrasil writes it (`unix:///var/run/yggdrasil/yggdrasil.sock`,
/// `tcp://127.0.0.1:9001`, `tcp://localhost:9001`, `tcp://[::1]:9001`).
pub fn parse_endpoint(s: &str) -> Result<AdminEndpoint, YggdrasilError> {
    let bad = || YggdrasilError::BadEndpoint(s.to_owned());
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') || path.contains('\0') {
            return Err(bad());
        }
        return Ok(AdminEndpoint::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = s.strip_prefix("tcp://") {
        let addr = addr.trim_end_matches('/');
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() || addr.contains('/') {
            return Err(bad());
        }
        return Ok(AdminEndpoint::Tcp(addr.to_owned()));
    }
    Err(bad())
}

/// Find `AdminListen` in yggdrasil's configuration text: HJSON in 0.4 (`AdminListen: unix:///…`,
/// unquoted, `#` and `//` comments), JSON in 0.5 (and from `-genconf -json`). `Ok(None)` when the
/// key is absent, which makes yggdrasil use its default.
pub fn parse_admin_listen(config: &str) -> Option<String> {
    let mut found = None;
    let mut rest = config;
    while let Some(pos) = find_key(rest, "AdminListen") {
        let after = &rest[pos + "AdminListen".len()..];
        rest = after;
        // `"AdminListen"` (JSON) or `AdminListen` (HJSON), then `:`.
        let after = after
            .strip_prefix('"')
            .unwrap_or(after)
            .trim_start_matches([' ', '\t']);
        let Some(value) = after.strip_prefix(':') else {
            continue;
        };
        let value = value.trim_start_matches([' ', '\t']);
        let parsed = if let Some(quoted) = value.strip_prefix('"') {
            // JSON string: endpoints contain no escapes worth decoding.
            quoted.split('"').next().map(str::to_owned)
        } else {
            // HJSON quoteless string: to the end of the line.
            let line = value.lines().next().unwrap_or("").trim();
            let line = line.strip_suffix(',').unwrap_or(line).trim();
            (!line.is_empty()).then(|| line.to_owned())
        };
        if parsed.is_some() {
            found = parsed;
        }
    }
    found
}

/// The byte offset of `key` as a key (not inside a comment line, not part of a longer word).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if !(trimmed.starts_with('#') || trimmed.starts_with("//")) {
            let mut from = 0;
            while let Some(i) = line[from..].find(key) {
                let at = from + i;
                let before = line[..at].chars().next_back();
                let after = line[at + key.len()..].chars().next();
                let word =
                    |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                if !word(before) && !word(after) {
                    return Some(offset + at);
                }
                from = at + key.len();
            }
        }
        offset += line.len();
    }
    None
}

/// Parse a `getself` answer of yggdrasil 0.3, 0.4 or 0.5.
pub fn parse_getself(answer: &[u8]) -> Result<SelfInfo, String> {
    let v: Value = serde_json::from_slice(answer).map_err(|e| format!("not JSON: {e}"))?;
    let status = v.get("status").and_then(Value::as_str).unwrap_or("");
    if status != "success" {
        let err = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error message");
        return Err(format!("status {status:?}: {err}"));
    }
    let resp = v
        .get("response")
        .filter(|r| r.is_object())
        .ok_or("no response object")?;
    let (address, subnet) = if let Some(address) = resp.get("address") {
        // 0.4 / 0.5: flat.
        let address = address.as_str().ok_or("address is not a string")?;
        let subnet = resp
            .get("subnet")
            .and_then(Value::as_str)
            .ok_or("no subnet")?;
        (address.to_owned(), subnet)
    } else if let Some(me) = resp.get("self").and_then(Value::as_object) {
        // 0.3: {"self":{"<address>":{"subnet":…}}}.
        let mut entries = me.iter();
        let (address, info) = match (entries.next(), entries.next()) {
            (Some(one), None) => one,
            _ => return Err("\"self\" must hold exactly one node".to_owned()),
        };
        let subnet = info
            .get("subnet")
            .and_then(Value::as_str)
            .ok_or("no subnet")?;
        (address.clone(), subnet)
    } else {
        return Err("neither address/subnet (0.4, 0.5) nor self (0.3) in the response".to_owned());
    };
    let address: Ipv6Addr = address
        .parse()
        .map_err(|_| format!("address {address:?} is not an IPv6 address"))?;
    let subnet: Ipv6Net = subnet
        .parse()
        .map_err(|_| format!("subnet {subnet:?} is not an IPv6 prefix"))?;
    // Yggdrasil owns 200::/7: node addresses have the low bit of the first byte clear, subnets set.
    if address.octets()[0] != 0x02 {
        return Err(format!(
            "address {address} is not a Yggdrasil node address (200::/8)"
        ));
    }
    if subnet.addr().octets()[0] != 0x03 || subnet.prefix_len() != 64 {
        return Err(format!("subnet {subnet} is not a Yggdrasil /64 (300::/8)"));
    }
    Ok(SelfInfo {
        address,
        subnet: subnet.trunc(),
    })
}

/// Ask the node at `endpoint` (file-system view of a unix path) for `getself`.
pub fn query_getself(endpoint: &AdminEndpoint, paths: &Paths) -> Result<SelfInfo, YggdrasilError> {
    let io = |source| YggdrasilError::Io {
        endpoint: endpoint.clone(),
        source,
    };
    let connect = |source| YggdrasilError::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    let answer = match endpoint {
        AdminEndpoint::Unix(path) => {
            let stream = UnixStream::connect(paths.fs(path)).map_err(connect)?;
            stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
            stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
            exchange(stream).map_err(io)?
        }
        AdminEndpoint::Tcp(addr) => {
            let addrs: Vec<_> = addr.to_socket_addrs().map_err(connect)?.collect();
            // The admin API has no authentication; only ever talk to it on this host.
            if let Some(a) = addrs.iter().find(|a| !is_local(a.ip())) {
                return Err(connect(std::io::Error::other(format!(
                    "{} is not a loopback address; man8s only talks to a local admin API",
                    a.ip()
                ))));
            }
            let mut last = std::io::Error::other("no address");
            let mut stream = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            let stream = stream.ok_or_else(|| connect(last))?;
            stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
            stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
            exchange(stream).map_err(io)?
        }
    };
    parse_getself(&answer).map_err(|why| YggdrasilError::BadAnswer {
        endpoint: endpoint.to_string(),
        why,
    })
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// Send the request and read one JSON value back (yggdrasil then closes, but a newer one might
/// keep the connection open, so stop at the end of the first value rather than at EOF).
fn exchange<S: Read + Write>(mut stream: S) -> std::io::Result<Vec<u8>> {
    stream.write_all(br#"{"request":"getself","keepalive":false}"#)?;
    stream.flush()?;
    let mut limited = (&mut stream).take(MAX_ANSWER);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = limited.read(&mut chunk)?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if serde_json::from_slice::<serde::de::IgnoredAny>(&buf).is_ok() {
            return Ok(buf);
        }
    }
}

/// Where the host's yggdrasil listens, and whether it is configured at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The endpoint to ask.
    pub endpoint: AdminEndpoint,
    /// Whether yggdrasil looks configured on this host (its config file exists, or man8s.conf
    /// names an endpoint): only then is it worth waiting for its socket.
    pub configured: bool,
}

/// Find the admin endpoint: `AdminEndpoint=` from man8s.conf, else `AdminListen` from
/// yggdrasil's config file, else yggdrasil's default.
pub fn locate(paths: &Paths, cfg: &YggdrasilConfig) -> Result<Located, YggdrasilError> {
    if let Some(e) = &cfg.admin_endpoint {
        return Ok(Located {
            endpoint: parse_endpoint(e)?,
            configured: true,
        });
    }
    // The default location, else where older packages and upstream units kept it.
    let mut candidates = vec![cfg.config_file.as_path()];
    if cfg.config_file == Path::new(DEFAULT_YGGDRASIL_CONFIG) {
        candidates.push(Path::new(LEGACY_YGGDRASIL_CONFIG));
    }
    let found = candidates.into_iter().find_map(|c| {
        let bytes = std::fs::read(paths.fs(c)).ok()?;
        Some((c, String::from_utf8_lossy(&bytes).into_owned()))
    });
    let text = found.as_ref().map(|(_, t)| t.as_str());
    let listen = text.and_then(parse_admin_listen);
    let endpoint = match listen.as_deref() {
        Some("none") => {
            let file = found.as_ref().map_or(cfg.config_file.as_path(), |(c, _)| c);
            return Err(YggdrasilError::AdminDisabled(file.display().to_string()));
        }
        Some(l) => parse_endpoint(l)?,
        None => parse_endpoint(DEFAULT_ADMIN_ENDPOINT)?,
    };
    Ok(Located {
        endpoint,
        configured: text.is_some(),
    })
}

/// Ask the host's yggdrasil for its address and subnet, waiting up to `wait` for the socket of
/// a yggdrasil that is configured (it may still be starting, as at boot); no wait otherwise.
pub fn discover(paths: &Paths, cfg: &YggdrasilConfig) -> Result<SelfInfo, YggdrasilError> {
    let located = locate(paths, cfg)?;
    let deadline = Instant::now()
        + if located.configured {
            cfg.wait
        } else {
            Duration::ZERO
        };
    loop {
        match query_getself(&located.endpoint, paths) {
            Err(YggdrasilError::Connect { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(YggdrasilError::Connect { endpoint, .. }) if !located.configured => {
                return Err(YggdrasilError::NotSetUp {
                    config: cfg.config_file.clone(),
                    endpoint,
                });
            }
            other => return other,
        }
    }
}

/// The canonical path of a unix endpoint's socket, for messages.
pub fn socket_path(endpoint: &AdminEndpoint) -> Option<&Path> {
    match endpoint {
        AdminEndpoint::Unix(p) => Some(p),
        AdminEndpoint::Tcp(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim from Debian bookworm's yggdrasil 0.4.7 (`{"request":"getself"}`).
    const ANSWER_047: &str = r#"{
  "status": "success",
  "request": null,
  "response": {
    "build_name": "unknown",
    "build_version": "unknown",
    "key": "76fd741538ee2bd4bd2ee1af8cbb3d2018f169543ce08cf55a44bde31b96b051",
    "address": "201:240a:2fab:1c47:50ad:b44:7941:cd13",
    "coords": [],
    "subnet": "301:240a:2fab:1c47::/64"
  }
}
"#;
    /// Verbatim from Debian sid's yggdrasil 0.5.14.
    const ANSWER_0514: &str = r#"{
  "status": "success",
  "request": {
    "request": "getself",
    "arguments": {}
  },
  "response": {
    "build_name": "yggdrasil",
    "build_version": "0.5.14",
    "key": "39216b4ed1244dd179c887df94141910773b1c140f26ab18fcc8f3b92e40003d",
    "address": "202:36f4:a589:76dd:9174:31bb:c103:5f5f",
    "routing_entries": 1,
    "subnet": "302:36f4:a589:76dd::/64"
  }
}
"#;
    /// The older nested shape (0.3.x).
    const ANSWER_03: &str = r#"{"status":"success","request":{"request":"getself"},"response":{"self":{"200:1111:2222:3333:4444:5555:6666:7777":{"build_name":"yggdrasil","build_version":"0.3.16","coords":"[1 2]","key":"ab","subnet":"300:1111:2222:3333::/64"}}}}"#;

    #[test]
    fn getself_047() {
        let s = parse_getself(ANSWER_047.as_bytes()).unwrap();
        assert_eq!(
            s.address,
            "201:240a:2fab:1c47:50ad:b44:7941:cd13"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(s.subnet.to_string(), "301:240a:2fab:1c47::/64");
    }

    #[test]
    fn getself_0514() {
        let s = parse_getself(ANSWER_0514.as_bytes()).unwrap();
        assert_eq!(
            s.address.to_string(),
            "202:36f4:a589:76dd:9174:31bb:c103:5f5f"
        );
        assert_eq!(s.subnet.to_string(), "302:36f4:a589:76dd::/64");
    }

    #[test]
    fn getself_03_nested() {
        let s = parse_getself(ANSWER_03.as_bytes()).unwrap();
        assert_eq!(
            s.address.to_string(),
            "200:1111:2222:3333:4444:5555:6666:7777"
        );
        assert_eq!(s.subnet.to_string(), "300:1111:2222:3333::/64");
    }

    #[test]
    fn getself_errors() {
        for (answer, want) in [
            // Verbatim 0.5.14 answer to an unknown request.
            (
                r#"{"status":"error","error":"unknown action 'nosuch', try 'list' for help","request":{"request":"nosuch","arguments":{}},"response":null}"#,
                "status \"error\": unknown action 'nosuch'",
            ),
            ("", "not JSON"),
            ("[1,2]", "status \"\""),
            (
                r#"{"status":"success","response":null}"#,
                "no response object",
            ),
            (
                r#"{"status":"success","response":{"address":"201::1"}}"#,
                "no subnet",
            ),
            (
                r#"{"status":"success","response":{"address":7,"subnet":"301::/64"}}"#,
                "not a string",
            ),
            (
                r#"{"status":"success","response":{"address":"201::1","subnet":"301::"}}"#,
                "not an IPv6 prefix",
            ),
            (
                r#"{"status":"success","response":{"address":"fe80::1","subnet":"301::/64"}}"#,
                "not a Yggdrasil node address",
            ),
            (
                r#"{"status":"success","response":{"address":"201::1","subnet":"2001:db8::/64"}}"#,
                "not a Yggdrasil /64",
            ),
            (
                r#"{"status":"success","response":{"address":"201::1","subnet":"301::/48"}}"#,
                "not a Yggdrasil /64",
            ),
            (
                r#"{"status":"success","response":{"self":{}}}"#,
                "exactly one node",
            ),
            (
                r#"{"status":"success","response":{"peers":{}}}"#,
                "neither address/subnet",
            ),
        ] {
            let e = parse_getself(answer.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{answer}: {e}");
        }
    }

    #[test]
    fn admin_listen_hjson_047() {
        // As `yggdrasil -genconf` (0.4.7) writes it, comments included.
        let conf = "{\n  # Listen address for admin connections. Default is to listen for local\n  \
                    # connections either on TCP/9001 or a UNIX socket. AdminListen: tcp://wrong:1\n  \
                    AdminListen: unix:///var/run/yggdrasil/yggdrasil.sock\n\n  IfName: auto\n}\n";
        assert_eq!(
            parse_admin_listen(conf).as_deref(),
            Some("unix:///var/run/yggdrasil/yggdrasil.sock")
        );
        let conf = "{\n  // comment AdminListen: x\n  AdminListen: tcp://localhost:9001\n}";
        assert_eq!(
            parse_admin_listen(conf).as_deref(),
            Some("tcp://localhost:9001")
        );
    }

    #[test]
    fn admin_listen_json() {
        let conf = r#"{"Peers":[],"AdminListen":"unix:///tmp/x/admin.sock","IfName":"ygg0"}"#;
        assert_eq!(
            parse_admin_listen(conf).as_deref(),
            Some("unix:///tmp/x/admin.sock")
        );
        let conf = "{\n  \"AdminListen\": \"tcp://127.0.0.1:9001\",\n  \"IfName\": \"auto\"\n}";
        assert_eq!(
            parse_admin_listen(conf).as_deref(),
            Some("tcp://127.0.0.1:9001")
        );
        let conf = "{\n  \"AdminListen\": \"none\"\n}";
        assert_eq!(parse_admin_listen(conf).as_deref(), Some("none"));
    }

    #[test]
    fn admin_listen_absent() {
        // 0.5.14's `-genconf -json` has no AdminListen at all.
        let conf =
            r#"{"Peers":[],"MyAdminListener":"x","IfName":"auto","NodeInfo":{"AdminListenX":"y"}}"#;
        assert_eq!(parse_admin_listen(conf), None);
        assert_eq!(parse_admin_listen(""), None);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("unix:///var/run/yggdrasil/yggdrasil.sock").unwrap(),
            AdminEndpoint::Unix("/var/run/yggdrasil/yggdrasil.sock".into())
        );
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:9001").unwrap(),
            AdminEndpoint::Tcp("127.0.0.1:9001".into())
        );
        assert_eq!(
            parse_endpoint("tcp://[::1]:9001").unwrap(),
            AdminEndpoint::Tcp("[::1]:9001".into())
        );
        assert_eq!(
            parse_endpoint("tcp://localhost:9001").unwrap().to_string(),
            "tcp://localhost:9001"
        );
        for bad in [
            "unix://relative.sock",
            "tcp://127.0.0.1",
            "tcp://:9001",
            "tcp://h:99999",
            "http://x:1",
            "none",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locate_prefers_man8s_conf_then_yggdrasil_conf_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let mut cfg = YggdrasilConfig::default();
        let l = locate(&paths, &cfg).unwrap();
        assert_eq!(
            l.endpoint,
            AdminEndpoint::Unix("/var/run/yggdrasil/yggdrasil.sock".into())
        );
        assert!(!l.configured, "no yggdrasil.conf: nothing to wait for");

        std::fs::create_dir_all(dir.path().join("etc/yggdrasil")).unwrap();
        std::fs::write(
            dir.path().join("etc/yggdrasil/yggdrasil.conf"),
            "{\n  AdminListen: tcp://127.0.0.1:9001\n}\n",
        )
        .unwrap();
        let l = locate(&paths, &cfg).unwrap();
        assert_eq!(l.endpoint, AdminEndpoint::Tcp("127.0.0.1:9001".into()));
        assert!(l.configured);

        std::fs::write(
            dir.path().join("etc/yggdrasil/yggdrasil.conf"),
            "{\"AdminListen\":\"none\"}",
        )
        .unwrap();
        let e = locate(&paths, &cfg).unwrap_err().to_string();
        assert!(
            e.contains("/etc/yggdrasil/yggdrasil.conf: AdminListen is \"none\""),
            "{e}"
        );

        // The legacy location is used when the default one does not exist.
        std::fs::remove_file(dir.path().join("etc/yggdrasil/yggdrasil.conf")).unwrap();
        std::fs::write(
            dir.path().join("etc/yggdrasil.conf"),
            "AdminListen: unix:///run/old.sock\n",
        )
        .unwrap();
        let l = locate(&paths, &cfg).unwrap();
        assert_eq!(l.endpoint, AdminEndpoint::Unix("/run/old.sock".into()));
        assert!(l.configured);
        // But not when another file is configured explicitly.
        let other = YggdrasilConfig {
            config_file: "/etc/other.conf".into(),
            ..Default::default()
        };
        assert!(!locate(&paths, &other).unwrap().configured);

        cfg.admin_endpoint = Some("unix:///run/y.sock".into());
        assert_eq!(
            locate(&paths, &cfg).unwrap().endpoint,
            AdminEndpoint::Unix("/run/y.sock".into())
        );
    }

    #[test]
    fn not_running_is_a_clear_error_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let cfg = YggdrasilConfig {
            wait: Duration::from_secs(30),
            ..Default::default()
        };
        let t = Instant::now();
        let e = discover(&paths, &cfg).unwrap_err();
        // Not configured here, so no 30 s wait.
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, YggdrasilError::NotSetUp { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "yggdrasil is not set up on this host (no /etc/yggdrasil/yggdrasil.conf) and nothing answers on \
             unix:///var/run/yggdrasil/yggdrasil.sock"
        );
        // Configured but not running: the socket error, after the wait.
        std::fs::create_dir_all(dir.path().join("etc/yggdrasil")).unwrap();
        std::fs::write(dir.path().join("etc/yggdrasil/yggdrasil.conf"), "{}\n").unwrap();
        let cfg = YggdrasilConfig {
            wait: Duration::from_millis(300),
            ..Default::default()
        };
        let t = Instant::now();
        let e = discover(&paths, &cfg).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(matches!(e, YggdrasilError::Connect { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("yggdrasil admin socket unix:///var/run/yggdrasil/yggdrasil.sock: "),
            "{msg}"
        );
        assert!(msg.ends_with("(is yggdrasil running?)"), "{msg}");
    }

    #[test]
    fn refuses_non_loopback_tcp() {
        let paths = Paths::new("/nonexistent");
        // Documentation address: never contacted, refused before connecting.
        let e = query_getself(&AdminEndpoint::Tcp("192.0.2.1:9001".into()), &paths).unwrap_err();
        assert!(e.to_string().contains("not a loopback address"), "{e}");
    }

    #[test]
    fn exchange_reads_one_value_even_if_the_peer_keeps_the_connection() {
        // A local socket pair stands in for a server that does not close after answering.
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let server = std::thread::spawn(move || {
            let mut req = [0u8; 256];
            let n = b.read(&mut req).unwrap();
            let req: Value = serde_json::from_slice(&req[..n]).unwrap();
            assert_eq!(req["request"], "getself");
            b.write_all(&ANSWER_0514.as_bytes()[..100]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            b.write_all(&ANSWER_0514.as_bytes()[100..]).unwrap();
            b // keep it open until the client is done
        });
        let got = exchange(a).unwrap();
        assert_eq!(
            parse_getself(&got).unwrap().subnet.to_string(),
            "302:36f4:a589:76dd::/64"
        );
        drop(server.join().unwrap());
    }
}
