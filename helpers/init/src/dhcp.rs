//! DHCPv4: message building and parsing (pure), and a small synchronous client over a UDP socket
//! bound to the link (`SO_BINDTODEVICE`), with the broadcast flag set so that servers answer by
//! broadcast while the link has no address yet.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

/// DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// DHCP server port.
pub const SERVER_PORT: u16 = 67;

/// What a server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub address: Ipv4Addr,
    /// Prefix length from the subnet mask (option 1); class default when absent.
    pub prefix_len: u8,
    /// First router (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// Server identifier (option 54).
    pub server: Ipv4Addr,
    /// Lease time in seconds (option 51); `None` = infinite.
    pub lease_secs: Option<u32>,
    /// Renewal time T1 (option 58, default lease/2).
    pub renew_secs: Option<u32>,
    /// Rebinding time T2 (option 59, default lease*7/8).
    pub rebind_secs: Option<u32>,
    /// Interface MTU (option 26): man8s-bridge's bridge runs above Ethernet's 1500 so that a
    /// machine gets the mesh's full throughput; `None` when absent or below IPv6's 1280.
    pub mtu: Option<u16>,
}

impl Lease {
    /// Seconds until renewal (T1).
    pub fn t1(&self) -> Option<u32> {
        self.renew_secs.or(self.lease_secs.map(|l| l / 2))
    }
    /// Seconds until rebinding (T2).
    pub fn t2(&self) -> Option<u32> {
        self.rebind_secs
            .or(self.lease_secs.map(|l| (l as u64 * 7 / 8) as u32))
    }
}

/// A server's answer to one of our messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// DHCPOFFER.
    Offer(Lease),
    /// DHCPACK.
    Ack(Lease),
    /// DHCPNAK.
    Nak,
}

fn base(xid: u32, mac: &[u8], ciaddr: Ipv4Addr, msg_type: MessageType, broadcast: bool) -> Message {
    let mut m = Message::new_with_id(
        xid,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        mac,
    );
    m.set_opcode(Opcode::BootRequest);
    if broadcast {
        m.set_flags(Flags::default().set_broadcast());
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(msg_type));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(mac);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
        OptionCode::InterfaceMtu,
    ]));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    m
}

/// DHCPDISCOVER.
pub fn discover(xid: u32, mac: &[u8]) -> Vec<u8> {
    encode(&base(
        xid,
        mac,
        Ipv4Addr::UNSPECIFIED,
        MessageType::Discover,
        true,
    ))
}

/// DHCPREQUEST answering an offer (SELECTING state).
pub fn request(xid: u32, mac: &[u8], offer: &Lease) -> Vec<u8> {
    let mut m = base(xid, mac, Ipv4Addr::UNSPECIFIED, MessageType::Request, true);
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.address));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&m)
}

/// DHCPREQUEST extending a lease we hold (RENEWING: unicast, or REBINDING: broadcast), with
/// `ciaddr` set and no server identifier, as RFC 2131 §4.3.2 asks.
pub fn renew(xid: u32, mac: &[u8], address: Ipv4Addr) -> Vec<u8> {
    encode(&base(xid, mac, address, MessageType::Request, false))
}

fn encode(m: &Message) -> Vec<u8> {
    m.to_vec()
        .expect("a DHCP message built from valid parts encodes")
}

/// The prefix length of a contiguous netmask; `None` when not contiguous.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// Length of the fixed BOOTP header before the magic cookie.
const BOOTP_HEADER: usize = 236;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Rebuild a datagram keeping only the options the init reads, each with a valid length.
///
/// Anyone on the bridge can broadcast a "reply", and a general option decoder is a large
/// surface (dhcproto asserts on some malformed options); only well-formed options 1, 3, 6, 15,
/// 26, 51, 53, 54, 58 and 59 get through. `None` when the header or cookie is missing.
pub fn sanitize(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < BOOTP_HEADER + 4 || bytes[BOOTP_HEADER..BOOTP_HEADER + 4] != MAGIC_COOKIE {
        return None;
    }
    let mut out = bytes[..BOOTP_HEADER + 4].to_vec();
    let mut at = BOOTP_HEADER + 4;
    while at < bytes.len() {
        let code = bytes[at];
        match code {
            0 => {
                at += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = bytes.get(at + 1) else { break };
        let Some(value) = bytes.get(at + 2..at + 2 + len as usize) else {
            break;
        };
        let valid = match code {
            53 => len == 1,
            26 => len == 2,
            1 | 54 | 51 | 58 | 59 => len == 4,
            3 | 6 => len >= 4 && len % 4 == 0,
            15 => len >= 1,
            _ => false,
        };
        if valid {
            out.extend_from_slice(&[code, len]);
            out.extend_from_slice(value);
        }
        at += 2 + len as usize;
    }
    out.push(255);
    Some(out)
}

/// The smallest MTU taken from a lease: IPv6's minimum, below which the link would lose IPv6.
pub const MIN_MTU: u16 = 1280;

/// Parse a datagram; `None` unless it is a BOOTREPLY for `xid` and `mac` with a usable type.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8]) -> Option<Reply> {
    let m = Message::from_bytes(&sanitize(bytes)?).ok()?;
    if m.opcode() != Opcode::BootReply || m.xid() != xid || m.chaddr().get(..mac.len())? != mac {
        return None;
    }
    let opts = m.opts();
    let kind = opts.msg_type()?;
    if kind == MessageType::Nak {
        return Some(Reply::Nak);
    }
    let address = m.yiaddr();
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return None;
    }
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => mask_to_prefix(*mask)?,
        _ => match address.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(list)) => list.iter().copied().find(|r| !r.is_unspecified()),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(list)) => list.clone(),
        _ => Vec::new(),
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) if is_plain_domain(d) => Some(d.clone()),
        _ => None,
    };
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => return None,
    };
    let secs = |code| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
        ) => Some(*s),
        _ => None,
    };
    let lease = Lease {
        address,
        prefix_len,
        router,
        dns,
        domain,
        server,
        lease_secs: secs(OptionCode::AddressLeaseTime).filter(|s| *s != u32::MAX),
        renew_secs: secs(OptionCode::Renewal),
        rebind_secs: secs(OptionCode::Rebinding),
        mtu: match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) if *m >= MIN_MTU => Some(*m),
            _ => None,
        },
    };
    match kind {
        MessageType::Offer => Some(Reply::Offer(lease)),
        MessageType::Ack => Some(Reply::Ack(lease)),
        _ => None,
    }
}

/// A domain name safe to write into resolv.conf (no blanks, no control characters).
fn is_plain_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `/etc/resolv.conf` contents for a lease; `None` when the lease names no DNS server.
pub fn resolv_conf(lease: &Lease) -> Option<String> {
    if lease.dns.is_empty() {
        return None;
    }
    let mut out = String::from("# Generated by man8s-init from the DHCP lease\n");
    for ns in lease.dns.iter().take(3) {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if let Some(d) = &lease.domain {
        out.push_str(&format!("search {d}\n"));
    }
    Some(out)
}

/// Why no lease was obtained.
#[derive(Debug)]
pub enum DhcpError {
    /// Socket trouble.
    Io(io::Error),
    /// Nobody answered before the deadline.
    NoAnswer {
        /// DISCOVERs sent.
        discovers: u32,
        /// How long we tried.
        waited: Duration,
    },
}

impl fmt::Display for DhcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::NoAnswer { discovers, waited } => {
                write!(
                    f,
                    "no DHCP server answered {discovers} DISCOVERs within {:.1} s",
                    waited.as_secs_f64()
                )
            }
        }
    }
}

impl std::error::Error for DhcpError {}

impl From<io::Error> for DhcpError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A UDP socket on port 68 bound to one link, able to broadcast.
pub fn client_socket(ifname: &str, local: Ipv4Addr) -> io::Result<UdpSocket> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
    socket::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(local, CLIENT_PORT)),
    )?;
    Ok(UdpSocket::from(fd))
}

/// A fresh transaction id.
pub fn new_xid() -> u32 {
    let mut b = [0u8; 4];
    if getrandom(&mut b).is_err() {
        // Only uniqueness between our own retries matters; time is good enough then.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Send `packet` to `to` and wait until `deadline` for a reply accepted by `accept`.
fn exchange<T>(
    sock: &UdpSocket,
    packet: &[u8],
    to: SocketAddrV4,
    wait: Duration,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> io::Result<Option<T>> {
    sock.send_to(packet, to)?;
    let until = Instant::now() + wait;
    let mut buf = [0u8; 1536];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Some(v) = accept(&buf[..n]) {
                    return Ok(Some(v));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn broadcast() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT)
}

/// Retransmission waits: 40 ms doubling up to 2 s (RFC 2131 asks for ~4 s doubling; a local
/// bridge answers in milliseconds, and the first answer is often lost while the host side of a
/// fresh veth is not yet forwarding, so the first retries come soon). Retransmissions keep their
/// xid, so a slow server's answer to an earlier one still counts.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(40u64.saturating_mul(1 << attempt.min(6)).min(2000))
}

/// DISCOVER → OFFER → REQUEST → ACK, retrying with backoff, until `timeout` has passed.
pub fn acquire(sock: &UdpSocket, mac: &[u8], timeout: Duration) -> Result<Lease, DhcpError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut discovers = 0;
    let mut attempt = 0;
    let mut xid = new_xid();
    while Instant::now() < deadline {
        let wait = backoff(attempt).min(deadline.saturating_duration_since(Instant::now()));
        attempt += 1;
        discovers += 1;
        let offer = exchange(
            sock,
            &discover(xid, mac),
            broadcast(),
            wait,
            |b| match parse_reply(b, xid, mac) {
                Some(Reply::Offer(l)) => Some(l),
                _ => None,
            },
        )?;
        let Some(offer) = offer else { continue };
        for req_attempt in 0..5 {
            let wait = backoff(req_attempt).min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            let reply =
                exchange(
                    sock,
                    &request(xid, mac, &offer),
                    broadcast(),
                    wait,
                    |b| match parse_reply(b, xid, mac) {
                        Some(r @ (Reply::Ack(_) | Reply::Nak)) => Some(r),
                        _ => None,
                    },
                )?;
            match reply {
                Some(Reply::Ack(lease)) => return Ok(lease),
                Some(_) => {
                    // NAK: start over with a DISCOVER of a new transaction.
                    xid = new_xid();
                    break;
                }
                None => {}
            }
        }
    }
    Err(DhcpError::NoAnswer {
        discovers,
        waited: start.elapsed(),
    })
}

/// One renewal exchange (`to` = the server for RENEWING, broadcast for REBINDING).
pub fn renew_once(
    sock: &UdpSocket,
    mac: &[u8],
    address: Ipv4Addr,
    to: Ipv4Addr,
    wait: Duration,
) -> io::Result<Option<Reply>> {
    let xid = new_xid();
    exchange(
        sock,
        &renew(xid, mac, address),
        SocketAddrV4::new(to, SERVER_PORT),
        wait,
        |b| match parse_reply(b, xid, mac) {
            Some(r @ (Reply::Ack(_) | Reply::Nak)) => Some(r),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Message;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn server_reply(xid: u32, kind: MessageType, extra: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            [10, 0, 0, 7].into(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier([10, 0, 0, 1].into()));
        extra(&mut m);
        m.to_vec().unwrap()
    }

    #[test]
    fn discover_is_a_broadcast_request_with_our_mac() {
        let m = Message::from_bytes(&discover(0xdead_beef, &MAC)).unwrap();
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 0xdead_beef);
        assert_eq!(&m.chaddr()[..6], &MAC);
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        match m.opts().get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(id)) => {
                assert_eq!(id[..], [1, 2, 0x11, 0x22, 0x33, 0x44, 0x55])
            }
            other => panic!("no client id: {other:?}"),
        }
    }

    #[test]
    fn request_names_offer_and_server() {
        let offer = Lease {
            address: [10, 0, 0, 7].into(),
            prefix_len: 24,
            router: None,
            dns: vec![],
            domain: None,
            server: [10, 0, 0, 1].into(),
            lease_secs: Some(3600),
            renew_secs: None,
            rebind_secs: None,
            mtu: None,
        };
        let m = Message::from_bytes(&request(7, &MAC, &offer)).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(offer.address))
        );
        assert_eq!(
            m.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(offer.server))
        );
        let r = Message::from_bytes(&renew(8, &MAC, offer.address)).unwrap();
        assert_eq!(r.ciaddr(), offer.address);
        assert!(r.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(!r.flags().broadcast());
    }

    #[test]
    fn parses_a_full_ack() {
        let bytes = server_reply(42, MessageType::Ack, |m| {
            let o = m.opts_mut();
            o.insert(DhcpOption::SubnetMask([255, 255, 255, 0].into()));
            o.insert(DhcpOption::Router(vec![[10, 0, 0, 1].into()]));
            o.insert(DhcpOption::DomainNameServer(vec![
                [10, 0, 0, 1].into(),
                [10, 0, 0, 2].into(),
            ]));
            o.insert(DhcpOption::DomainName("lan".into()));
            o.insert(DhcpOption::AddressLeaseTime(3600));
            o.insert(DhcpOption::InterfaceMtu(65535));
        });
        let Some(Reply::Ack(l)) = parse_reply(&bytes, 42, &MAC) else {
            panic!("not an ack")
        };
        assert_eq!(l.mtu, Some(65535));
        assert_eq!(l.address, Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(l.prefix_len, 24);
        assert_eq!(l.router, Some([10, 0, 0, 1].into()));
        assert_eq!(l.dns.len(), 2);
        assert_eq!((l.t1(), l.t2()), (Some(1800), Some(3150)));
        assert_eq!(
            resolv_conf(&l).unwrap(),
            "# Generated by man8s-init from the DHCP lease\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch lan\n"
        );
    }

    #[test]
    fn an_mtu_below_ipv6_minimum_is_ignored() {
        let tiny = server_reply(42, MessageType::Ack, |m| {
            m.opts_mut().insert(DhcpOption::InterfaceMtu(576));
        });
        let Some(Reply::Ack(l)) = parse_reply(&tiny, 42, &MAC) else {
            panic!("not an ack")
        };
        assert_eq!(l.mtu, None);
        let plain = server_reply(42, MessageType::Ack, |_| {});
        let Some(Reply::Ack(l)) = parse_reply(&plain, 42, &MAC) else {
            panic!("not an ack")
        };
        assert_eq!(l.mtu, None);
    }

    #[test]
    fn ignores_foreign_and_hostile_replies() {
        let ack = server_reply(42, MessageType::Ack, |_| {});
        assert!(parse_reply(&ack, 43, &MAC).is_none(), "other xid");
        assert!(
            parse_reply(&ack, 42, &[9, 9, 9, 9, 9, 9]).is_none(),
            "other mac"
        );
        assert!(parse_reply(&ack[..100], 42, &MAC).is_none(), "truncated");
        assert!(parse_reply(&[], 42, &MAC).is_none());
        let no_server = {
            let mut m = Message::from_bytes(&ack).unwrap();
            m.opts_mut().remove(OptionCode::ServerIdentifier);
            m.to_vec().unwrap()
        };
        assert!(parse_reply(&no_server, 42, &MAC).is_none(), "no server id");
        let bad_mask = server_reply(42, MessageType::Offer, |m| {
            m.opts_mut()
                .insert(DhcpOption::SubnetMask([255, 0, 255, 0].into()));
        });
        assert!(
            parse_reply(&bad_mask, 42, &MAC).is_none(),
            "non-contiguous mask"
        );
        let evil_domain = server_reply(42, MessageType::Ack, |m| {
            m.opts_mut()
                .insert(DhcpOption::DomainName("x\nnameserver 6.6.6.6".into()));
        });
        let Some(Reply::Ack(l)) = parse_reply(&evil_domain, 42, &MAC) else {
            panic!()
        };
        assert_eq!(l.domain, None);
        assert_eq!(
            parse_reply(&server_reply(42, MessageType::Nak, |_| {}), 42, &MAC),
            Some(Reply::Nak)
        );
        // Our own broadcast request echoed back is not a reply.
        assert!(parse_reply(&discover(42, &MAC), 42, &MAC).is_none());
    }

    #[test]
    fn sanitize_keeps_only_wellformed_known_options() {
        let mut m = Message::new_with_id(
            9,
            Ipv4Addr::UNSPECIFIED,
            [10, 0, 0, 7].into(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        m.set_opcode(Opcode::BootReply);
        let mut bytes = m.to_vec().unwrap();
        bytes.truncate(BOOTP_HEADER + 4);
        // Rapid commit with a length (dhcproto asserts on it), a truncated router list, then
        // the options we need, then garbage after the end option.
        bytes.extend_from_slice(&[80, 2, 1, 1]);
        bytes.extend_from_slice(&[3, 3, 10, 0, 0]);
        bytes.extend_from_slice(&[
            0, 53, 1, 5, 54, 4, 10, 0, 0, 1, 1, 4, 255, 255, 255, 0, 255, 80, 9,
        ]);
        let clean = sanitize(&bytes).unwrap();
        assert_eq!(
            &clean[BOOTP_HEADER + 4..],
            &[53, 1, 5, 54, 4, 10, 0, 0, 1, 1, 4, 255, 255, 255, 0, 255]
        );
        let Some(Reply::Ack(l)) = parse_reply(&bytes, 9, &MAC) else {
            panic!("not an ack")
        };
        assert_eq!((l.prefix_len, l.router), (24, None));
        // An option running past the end is dropped, not read out of bounds.
        let mut cut = bytes[..BOOTP_HEADER + 4].to_vec();
        cut.extend_from_slice(&[53, 1, 5, 6, 200, 1, 2]);
        assert_eq!(
            &sanitize(&cut).unwrap()[BOOTP_HEADER + 4..],
            &[53, 1, 5, 255]
        );
        assert!(sanitize(&bytes[..100]).is_none());
        let mut no_cookie = bytes.clone();
        no_cookie[BOOTP_HEADER] = 0;
        assert!(sanitize(&no_cookie).is_none());
    }

    #[test]
    fn masks_and_defaults() {
        assert_eq!(mask_to_prefix([255, 255, 255, 0].into()), Some(24));
        assert_eq!(mask_to_prefix([255, 255, 255, 255].into()), Some(32));
        assert_eq!(mask_to_prefix([0, 0, 0, 0].into()), Some(0));
        assert_eq!(mask_to_prefix([255, 255, 0, 255].into()), None);
        let offer = server_reply(1, MessageType::Offer, |_| {});
        let Some(Reply::Offer(l)) = parse_reply(&offer, 1, &MAC) else {
            panic!()
        };
        assert_eq!((l.prefix_len, l.lease_secs, l.t1()), (8, None, None));
        assert!(resolv_conf(&l).is_none());
        assert_eq!(backoff(0), Duration::from_millis(40));
        assert_eq!(backoff(1), Duration::from_millis(80));
        assert_eq!(backoff(5), Duration::from_millis(1280));
        assert_eq!(backoff(10), Duration::from_secs(2));
    }
}
