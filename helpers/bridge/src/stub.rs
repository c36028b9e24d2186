//! `man8s-dns`: the machines' name server on the bridge's IPv4 address, port 53 (UDP and TCP).
//!
//! The bridge's DHCP server hands this address out as the machines' only DNS server
//! (`DNS=_server_address`), as podman's aardvark-dns or Docker's embedded server do for their
//! containers: names of the zone ([`crate::dns`]) are answered here, everything else is relayed
//! to the host's own resolvers (`[Bridge] DNS=` of man8s.conf, else the `nameserver` lines of the
//! host's `/etc/resolv.conf`) and the answer relayed back unchanged. The host itself asks here
//! for the zone only, through systemd-resolved (`Domains=~DOMAIN` on the bridge).
//!
//! The zone is rebuilt whenever man8s.conf, the generator's policy or yggdrasil's state file
//! changes (checked on every query: three `stat` calls).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use man8s::Paths;
use man8s::hostconfig::HostConfig;

use crate::dns::{self, Zone};

/// The port, DNS's own.
pub const PORT: u16 = 53;
/// How long an upstream server gets to answer a relayed query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Relayed queries and TCP connections in flight at once; more are dropped (the client retries).
const MAX_IN_FLIGHT: usize = 64;
/// The host's resolver configuration, for the upstream servers (canonical path).
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The zone, rebuilt when one of its sources changed.
pub struct ZoneSource {
    paths: Paths,
    seen: Vec<Option<(SystemTime, u64)>>,
    zone: Zone,
    upstreams: Vec<SocketAddr>,
}

impl ZoneSource {
    /// Read the zone of the host at `paths` now.
    pub fn new(paths: Paths) -> Self {
        let mut me = Self {
            paths,
            seen: Vec::new(),
            zone: Zone::default(),
            upstreams: Vec::new(),
        };
        me.refresh(&mut |_| {});
        me
    }

    fn sources(&self) -> Vec<PathBuf> {
        [
            man8s::paths::MAN8S_CONF,
            man8s::mesh::POLICY_FILE,
            crate::state::STATE_FILE,
            HOST_RESOLV_CONF,
        ]
        .iter()
        .map(|p| self.paths.fs(p))
        .collect()
    }

    /// Rebuild the zone when a source changed; a broken source keeps the zone of before.
    pub fn refresh(&mut self, log: &mut dyn FnMut(String)) {
        let seen: Vec<_> = self
            .sources()
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect();
        if seen == self.seen {
            return;
        }
        self.seen = seen;
        let cfg = match HostConfig::load(&self.paths) {
            Ok(c) => c,
            Err(e) => return log(format!("{e}; names stay as they were")),
        };
        let policy = crate::firewall::read_policy(&self.paths).unwrap_or_else(|e| {
            log(format!("{e}; no local machines by name"));
            Default::default()
        });
        let subnet = crate::state::read(&self.paths)
            .ok()
            .flatten()
            .map(|s| s.subnet);
        self.zone = Zone::new(&policy, &cfg, subnet);
        let resolv = std::fs::read_to_string(self.paths.fs(HOST_RESOLV_CONF)).unwrap_or_default();
        self.upstreams = upstreams(&cfg.bridge.dns, &resolv, cfg.bridge.ipv4_address.addr());
    }
}

/// The servers relayed to: `[Bridge] DNS=`, else the host's `nameserver` lines; never ourselves.
pub fn upstreams(configured: &[IpAddr], resolv_conf: &str, ours: Ipv4Addr) -> Vec<SocketAddr> {
    let from_file = || {
        resolv_conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            // (a link-local server with a %scope is left out: a socket address cannot carry it here)
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>()
    };
    let list = if configured.is_empty() {
        from_file()
    } else {
        configured.to_vec()
    };
    list.into_iter()
        .filter(|a| *a != IpAddr::V4(ours) && !a.is_unspecified())
        .map(|a| SocketAddr::new(a, PORT))
        .collect()
}

/// A socket bound to `addr` even before the address is on the bridge (`IP_FREEBIND`): the stub
/// may start before networkd has configured it.
fn bind(addr: SocketAddrV4, kind: nix::sys::socket::SockType) -> io::Result<OwnedFd> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockaddrIn, sockopt};
    let fd = socket::socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )?;
    if kind == socket::SockType::Stream {
        socket::listen(&fd, socket::Backlog::new(64)?)?;
    }
    Ok(fd)
}

/// Bound sockets of the stub.
pub struct Stub {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Stub {
    /// Bind UDP and TCP on `address`, port 53.
    pub fn bind(address: Ipv4Addr) -> io::Result<Self> {
        let at = SocketAddrV4::new(address, PORT);
        Ok(Self {
            udp: bind(at, nix::sys::socket::SockType::Datagram)?.into(),
            tcp: bind(at, nix::sys::socket::SockType::Stream)?.into(),
        })
    }

    /// Serve until an I/O error on the listening sockets.
    pub fn serve(self, zone: ZoneSource, log: fn(String)) -> io::Result<()> {
        let zone = Arc::new(Mutex::new(zone));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let tcp = self.tcp;
        let (z, n) = (zone.clone(), in_flight.clone());
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                let Some(guard) = Slot::take(&n) else {
                    continue;
                };
                let z = z.clone();
                std::thread::spawn(move || {
                    let _guard = guard;
                    let _ = serve_tcp(conn, &z, log);
                });
            }
        });
        let mut buf = [0u8; 4096];
        loop {
            let (len, from) = match self.udp.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let query = &buf[..len];
            match resolve(&zone, query, log) {
                Resolved::Answer(a) => {
                    let _ = self.udp.send_to(&a, from);
                }
                Resolved::Relay { upstreams, failed } => {
                    let Some(guard) = Slot::take(&in_flight) else {
                        continue;
                    };
                    let (reply_to, query) = (self.udp.try_clone()?, query.to_vec());
                    std::thread::spawn(move || {
                        let _guard = guard;
                        let a = relay_udp(&query, &upstreams).unwrap_or(failed);
                        let _ = reply_to.send_to(&a, from);
                    });
                }
                Resolved::Drop => {}
            }
        }
    }
}

/// Our answer, or the upstreams to relay to (the query is outside the zone).
fn resolve(zone: &Mutex<ZoneSource>, query: &[u8], log: fn(String)) -> Resolved {
    let mut z = zone.lock().unwrap_or_else(|p| p.into_inner());
    z.refresh(&mut |m| log(m));
    match dns::answer(&z.zone, query) {
        Some(a) if dns::is_refused(&a) && !z.upstreams.is_empty() => Resolved::Relay {
            upstreams: z.upstreams.clone(),
            failed: dns::server_failure(&a),
        },
        Some(a) => Resolved::Answer(a),
        None => Resolved::Drop,
    }
}

/// What to do with a query.
enum Resolved {
    /// Send this.
    Answer(Vec<u8>),
    /// Relay to the upstreams; send `failed` when none answers (a client must not wait).
    Relay {
        upstreams: Vec<SocketAddr>,
        failed: Vec<u8>,
    },
    /// Not a query.
    Drop,
}

/// One of [`MAX_IN_FLIGHT`] places, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(n: &Arc<AtomicUsize>) -> Option<Self> {
        (n.fetch_add(1, Ordering::AcqRel) < MAX_IN_FLIGHT)
            .then(|| Self(n.clone()))
            .or_else(|| {
                n.fetch_sub(1, Ordering::AcqRel);
                None
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Ask the upstreams in turn; the first answer with the query's ID is relayed as it is.
fn relay_udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let local: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = UdpSocket::bind(local) else {
            continue;
        };
        if sock.connect(up).is_err() || sock.set_read_timeout(Some(UPSTREAM_TIMEOUT)).is_err() {
            continue;
        }
        if sock.send(query).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        while let Ok(n) = sock.recv(&mut buf) {
            if n >= 2 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

/// One TCP connection: length-prefixed queries, answered or relayed over TCP, until EOF.
fn serve_tcp(mut conn: TcpStream, zone: &Mutex<ZoneSource>, log: fn(String)) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    loop {
        let Some(query) = read_framed(&mut conn, dns::MAX_QUERY)? else {
            return Ok(());
        };
        let answer = match resolve(zone, &query, log) {
            Resolved::Answer(a) => a,
            Resolved::Relay { upstreams, failed } => upstreams
                .iter()
                .find_map(|up| relay_tcp(&query, up).ok())
                .unwrap_or(failed),
            Resolved::Drop => return Ok(()),
        };
        write_framed(&mut conn, &answer)?;
    }
}

fn relay_tcp(query: &[u8], up: &SocketAddr) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(up, UPSTREAM_TIMEOUT)?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    write_framed(&mut s, query)?;
    read_framed(&mut s, 65535)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
}

fn read_framed(s: &mut TcpStream, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u16::from_be_bytes(len) as usize;
    if len > max {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn write_framed(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    s.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_from_config_or_resolv_conf_never_ourselves() {
        let ours = Ipv4Addr::new(172, 17, 0, 1);
        let conf = "# from resolved\nnameserver 127.0.0.53\nnameserver 172.17.0.1\n nameserver fe80::1%eth0\noptions edns0\nsearch lan\n";
        assert_eq!(
            upstreams(&[], conf, ours),
            ["127.0.0.53:53".parse::<SocketAddr>().unwrap()]
        );
        let set: Vec<IpAddr> = vec!["192.0.2.53".parse().unwrap()];
        assert_eq!(
            upstreams(&set, conf, ours),
            ["192.0.2.53:53".parse::<SocketAddr>().unwrap()]
        );
        assert!(upstreams(&[], "", ours).is_empty());
    }
}
