//! A small synchronous rtnetlink wrapper: links, addresses, routes. No async runtime.
//!
//! Requests are built with `netlink-packet-route`'s typed messages. Replies are parsed here, by
//! hand and only for the few attributes the init reads: the crate's generic reply parser pulls
//! ~300 KB of parsers (traffic control, every link kind) into the static binary.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_OPERSTATE: u16 = 16;
const IF_OPER_UP: u8 = 6;
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_LOWER_UP: u32 = 0x1_0000;
const ARPHRD_LOOPBACK: u16 = 772;
const IFA_ADDRESS: u16 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;

/// One network link as the init sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// Loopback?
    pub loopback: bool,
    /// Administratively up?
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`)?
    pub carrier: bool,
    /// Operational state is up (the kernel's link watcher has activated the queue; packets
    /// sent before that are dropped).
    pub oper_up: bool,
}

/// One address of a link, from an address dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAddress {
    /// Interface index.
    pub index: u32,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Global scope?
    pub global: bool,
}

/// A parsed reply message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `RTM_NEWLINK`.
    Link(Link),
    /// `RTM_NEWADDR`.
    Address(LinkAddress),
    /// `NLMSG_ERROR` with code 0.
    Ack,
    /// `NLMSG_ERROR` with a negative errno.
    Error(i32),
    /// `NLMSG_DONE`.
    Done,
    /// Anything else (ignored).
    Other,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Route attributes (`struct rtattr` list) as `(type, payload)`; stops at the first malformed one.
fn attributes(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let (Some(len), Some(kind)) = (u16_at(b, 0), u16_at(b, 2)) else {
            break;
        };
        let len = len as usize;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind & 0x3fff, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn parse_link(payload: &[u8]) -> Link {
    let flags = u32_at(payload, 8).unwrap_or(0);
    let mut link = Link {
        index: u32_at(payload, 4).unwrap_or(0),
        name: String::new(),
        mac: Vec::new(),
        loopback: flags & IFF_LOOPBACK != 0 || u16_at(payload, 2) == Some(ARPHRD_LOOPBACK),
        up: flags & IFF_UP != 0,
        carrier: flags & IFF_LOWER_UP != 0,
        oper_up: false,
    };
    for (kind, value) in attributes(&payload[16..]) {
        match kind {
            IFLA_IFNAME => {
                let name = value.split(|b| *b == 0).next().unwrap_or_default();
                link.name = String::from_utf8_lossy(name).into_owned();
            }
            IFLA_ADDRESS => link.mac = value.to_vec(),
            IFLA_OPERSTATE => link.oper_up = value.first() == Some(&IF_OPER_UP),
            _ => {}
        }
    }
    link
}

/// Split a datagram into `(sequence number, reply)` messages. Malformed input ends the list.
pub fn parse_replies(buf: &[u8]) -> Vec<(u32, Reply)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let (Some(len), Some(kind), Some(seq)) =
            (u32_at(buf, off), u16_at(buf, off + 4), u32_at(buf, off + 8))
        else {
            break;
        };
        let len = len as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let payload = &buf[off + 16..off + len];
        let reply = match kind {
            NLMSG_DONE => Reply::Done,
            NLMSG_ERROR => match u32_at(payload, 0).map(|c| c as i32) {
                Some(0) => Reply::Ack,
                Some(code) => Reply::Error(code),
                None => Reply::Other,
            },
            RTM_NEWLINK if payload.len() >= 16 => Reply::Link(parse_link(payload)),
            RTM_NEWADDR if payload.len() >= 8 => {
                let address = attributes(&payload[8..])
                    .into_iter()
                    .find(|(k, _)| *k == IFA_ADDRESS)
                    .and_then(|(_, v)| ip_of(v));
                match address {
                    Some(address) => Reply::Address(LinkAddress {
                        index: u32_at(payload, 4).unwrap_or(0),
                        address,
                        prefix_len: payload[1],
                        global: payload[3] == RT_SCOPE_UNIVERSE,
                    }),
                    None => Reply::Other,
                }
            }
            _ => Reply::Other,
        };
        out.push((seq, reply));
        off += (len + 3) & !3;
    }
    out
}

/// An open rtnetlink socket.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Open and bind a `NETLINK_ROUTE` socket.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0 })
    }

    fn request(&mut self, kind: u16, flags: u16, body: &dyn Emitable) -> io::Result<Vec<Reply>> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + body.buffer_len();
        let mut out = vec![0u8; len];
        out[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        out[4..6].copy_from_slice(&kind.to_ne_bytes());
        out[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        out[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        body.emit(&mut out[16..]);
        self.socket.send(&out, 0)?;

        let mut replies = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            self.socket.recv(&mut buf, 0)?;
            for (seq, reply) in parse_replies(&buf) {
                if seq != self.seq {
                    continue;
                }
                match reply {
                    Reply::Done | Reply::Ack => return Ok(replies),
                    Reply::Error(code) => return Err(io::Error::from_raw_os_error(-code)),
                    Reply::Other => {}
                    r => replies.push(r),
                }
            }
        }
    }

    /// All links.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.request(RTM_GETLINK, NLM_F_DUMP, &LinkMessage::default())?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                Reply::Link(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// Set a link administratively up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RTM_SETLINK, NLM_F_ACK, &msg).map(drop)
    }

    /// Set a link's MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RTM_SETLINK, NLM_F_ACK, &msg).map(drop)
    }

    /// Add (or update) an IPv4 address; `lifetime_secs` bounds it when the lease is finite.
    pub fn add_ipv4(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
        lifetime_secs: Option<u32>,
    ) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.into()));
        msg.attributes.push(AddressAttribute::Address(addr.into()));
        if prefix_len < 31 {
            let brd = u32::from(addr) | (u32::MAX >> prefix_len);
            msg.attributes.push(AddressAttribute::Broadcast(brd.into()));
        }
        if let Some(secs) = lifetime_secs {
            let mut info = CacheInfo::default();
            info.ifa_preferred = secs;
            info.ifa_valid = secs;
            msg.attributes.push(AddressAttribute::CacheInfo(info));
        }
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, &msg)
            .map(drop)
    }

    /// Add (or keep) an IPv6 address without duplicate address detection.
    pub fn add_ipv6_nodad(&mut self, index: u32, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Address(addr.into()));
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, &msg)
            .map(drop)
    }

    /// Global-scope addresses of a link, as `(address, prefix length)`.
    pub fn global_addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let replies = self.request(RTM_GETADDR, NLM_F_DUMP, &AddressMessage::default())?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                Reply::Address(a) if a.index == index && a.global => {
                    Some((a.address, a.prefix_len))
                }
                _ => None,
            })
            .collect())
    }

    /// Add (or replace) the IPv4 default route via `gateway` on link `index`.
    pub fn add_default_route_v4(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Dhcp;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, &msg)
            .map(drop)
    }
}

/// The link the machine talks through: `host0` when present, else the first non-loopback link
/// by index.
pub fn pick_uplink(links: &[Link]) -> Option<&Link> {
    links
        .iter()
        .find(|l| l.name == "host0")
        .or_else(|| links.iter().filter(|l| !l.loopback).min_by_key(|l| l.index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, loopback: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac: vec![],
            loopback,
            up: false,
            carrier: false,
            oper_up: false,
        }
    }

    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn rtattr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn parses_link_address_error_and_done() {
        let mut ifinfo = vec![0u8, 0];
        ifinfo.extend_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
        ifinfo.extend_from_slice(&7i32.to_ne_bytes());
        ifinfo.extend_from_slice(&(IFF_UP | IFF_LOWER_UP).to_ne_bytes());
        ifinfo.extend_from_slice(&0u32.to_ne_bytes());
        ifinfo.extend(rtattr(IFLA_IFNAME, b"host0\0"));
        ifinfo.extend(rtattr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]));
        ifinfo.extend(rtattr(IFLA_OPERSTATE, &[IF_OPER_UP]));
        ifinfo.extend(rtattr(999, &[1, 2, 3]));
        let mut ifaddr = vec![10u8, 64, 0, 0];
        ifaddr.extend_from_slice(&7u32.to_ne_bytes());
        ifaddr.extend(rtattr(
            IFA_ADDRESS,
            &"fd00::5".parse::<Ipv6Addr>().unwrap().octets(),
        ));
        let mut buf = nlmsg(RTM_NEWLINK, 5, &ifinfo);
        buf.extend(nlmsg(RTM_NEWADDR, 5, &ifaddr));
        buf.extend(nlmsg(NLMSG_ERROR, 5, &(-17i32).to_ne_bytes()));
        buf.extend(nlmsg(NLMSG_ERROR, 6, &0i32.to_ne_bytes()));
        buf.extend(nlmsg(NLMSG_DONE, 6, &[0; 4]));
        let replies = parse_replies(&buf);
        let want_link = Link {
            index: 7,
            name: "host0".into(),
            mac: vec![2, 0, 0, 0, 0, 1],
            loopback: false,
            up: true,
            carrier: true,
            oper_up: true,
        };
        assert_eq!(replies[0], (5, Reply::Link(want_link)));
        let want_addr = LinkAddress {
            index: 7,
            address: "fd00::5".parse().unwrap(),
            prefix_len: 64,
            global: true,
        };
        assert_eq!(replies[1], (5, Reply::Address(want_addr)));
        assert_eq!(replies[2], (5, Reply::Error(-17)));
        assert_eq!(replies[3], (6, Reply::Ack));
        assert_eq!(replies[4], (6, Reply::Done));
    }

    #[test]
    fn hostile_replies_end_parsing_without_panic() {
        let good = nlmsg(NLMSG_DONE, 1, &[0; 4]);
        assert_eq!(parse_replies(&good[..10]), vec![]);
        let mut bad_len = good.clone();
        bad_len[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(parse_replies(&bad_len), vec![]);
        let mut tiny = good.clone();
        tiny[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(parse_replies(&tiny), vec![]);
        // A link message whose attribute claims more bytes than there are.
        let mut ifinfo = vec![0u8; 16];
        ifinfo.extend_from_slice(&200u16.to_ne_bytes());
        ifinfo.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        let replies = parse_replies(&nlmsg(RTM_NEWLINK, 1, &ifinfo));
        assert!(matches!(&replies[0].1, Reply::Link(l) if l.name.is_empty()));
        assert!(attributes(&[0, 0, 1, 0]).is_empty());
    }

    #[test]
    fn picks_host0_then_first_non_loopback() {
        let links = [
            link(1, "lo", true),
            link(3, "eth1", false),
            link(2, "eth0", false),
        ];
        assert_eq!(pick_uplink(&links).unwrap().name, "eth0");
        let links = [
            link(1, "lo", true),
            link(2, "eth0", false),
            link(5, "host0", false),
        ];
        assert_eq!(pick_uplink(&links).unwrap().name, "host0");
        assert!(pick_uplink(&[link(1, "lo", true)]).is_none());
    }
}
