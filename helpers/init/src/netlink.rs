//! A small synchronous rtnetlink wrapper: links, addresses, routes. No async runtime.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope, CacheInfo,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage, State};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

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

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = NLM_F_REQUEST | flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut replies = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0)?;
            let mut off = 0;
            while off + 16 <= n.min(buf.len()) {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..]).map_err(
                    |e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")),
                )?;
                let len = msg.header.length as usize;
                if len < 16 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink: short message",
                    ));
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(replies),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// All links.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
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
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
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
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
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
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Global-scope addresses of a link, as `(address, prefix length)`.
    pub fn global_addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a)
                    if a.header.index == index && a.header.scope == AddressScope::Universe =>
                {
                    let addr = a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })?;
                    Some((addr, a.header.prefix_len))
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
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }
}

fn link_of(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: Vec::new(),
        loopback: l.header.link_layer_type == LinkLayerType::Loopback
            || l.header.flags.contains(LinkFlags::Loopback),
        up: l.header.flags.contains(LinkFlags::Up),
        carrier: l.header.flags.contains(LinkFlags::LowerUp),
        oper_up: false,
    };
    for attr in &l.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = a.clone(),
            LinkAttribute::OperState(state) => link.oper_up = *state == State::Up,
            _ => {}
        }
    }
    link
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
