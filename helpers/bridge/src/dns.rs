//! Machines by name over DNS (pure; no I/O): answers for the machines' domain (`man8s` unless
//! `[Mesh] Domain=` says otherwise), computed, never looked up.
//!
//! - `NAME.DOMAIN`: a machine declared on this host, at its Yggdrasil address;
//! - `MACHINE.HOST.DOMAIN`: a machine on another host of `[Hosts]` in man8s.conf, at the address
//!   its name derives in that host's subnet, whether or not any machine here links it;
//! - another name under the domain: NXDOMAIN; a name outside it: REFUSED, so that a client's
//!   resolver asks its next server (the stub is listed first in machines' resolv.conf).
//!
//! Queries come from machines, which are not trusted: the parser reads one question, refuses
//! compression and over-long names, and an answer is never much larger than its query.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use man8s::hostconfig::HostConfig;
use man8s::mesh::PolicyFile;

/// What the names resolve to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// The domain, lower case, without the final dot (`man8s`).
    pub domain: String,
    /// This host's machines with an address.
    pub local: BTreeMap<String, Ipv6Addr>,
    /// `[Hosts]`: other hosts' subnets.
    pub hosts: BTreeMap<String, Ipv6Net>,
}

/// Seconds answers may be cached: addresses derive from names, but local machines come and go.
pub const TTL: u32 = 30;

/// What a name is in the zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not under the domain.
    Outside,
    /// Under the domain, but no such machine.
    NoSuchName,
    /// A name that exists, with its address when it has one (the domain and `HOST.DOMAIN` have none).
    Exists(Option<Ipv6Addr>),
}

impl Zone {
    /// The zone of this host: its declared machines (the generator's policy), its subnet and
    /// man8s.conf's domain and hosts.
    pub fn new(policy: &PolicyFile, cfg: &HostConfig, subnet: Option<Ipv6Net>) -> Self {
        Self {
            domain: cfg.mesh.domain.clone(),
            // DNS names are case-insensitive; machine names are lower case in practice.
            local: crate::names::local_addresses(policy, subnet)
                .into_iter()
                .map(|(n, a)| (n.to_ascii_lowercase(), a))
                .collect(),
            hosts: cfg.hosts.clone(),
        }
    }

    /// Look a name up (any case, with or without the final dot).
    pub fn lookup(&self, name: &str) -> Lookup {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let rest = if name == self.domain {
            ""
        } else if let Some(r) = name.strip_suffix(&format!(".{}", self.domain)) {
            r
        } else {
            return Lookup::Outside;
        };
        if rest.is_empty() {
            return Lookup::Exists(None);
        }
        if let Some(a) = self.local.get(rest) {
            return Lookup::Exists(Some(*a));
        }
        if self.hosts.contains_key(rest) {
            return Lookup::Exists(None);
        }
        // Machine names may hold dots themselves: the host is the last label.
        rest.rsplit_once('.')
            .and_then(|(machine, host)| crate::names::remote_address(&self.hosts, machine, host))
            .map_or(Lookup::NoSuchName, |a| Lookup::Exists(Some(a)))
    }
}

const HEADER: usize = 12;
/// The longest query taken: a plain UDP DNS message.
pub const MAX_QUERY: usize = 512;
const TYPE_AAAA: u16 = 28;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const FORMERR: u16 = 1;
const SERVFAIL: u16 = 2;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// One question: the name (labels joined by dots), its type and class, and where it ends.
fn question(q: &[u8]) -> Option<(String, u16, u16, usize)> {
    let mut at = HEADER;
    let mut name = String::new();
    loop {
        let len = *q.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // 0xC0: a compression pointer, 0x40/0x80: reserved label types; none belong in a question.
        if len > 63 {
            return None;
        }
        let label = q.get(at..at + len)?;
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            // Not a host name; answered as a name that does not exist (or is not ours).
            name.push('\u{fffd}');
        } else {
            name.push_str(std::str::from_utf8(label).ok()?);
        }
        name.push('.');
        at += len;
        if name.len() > 255 {
            return None;
        }
    }
    Some((name, be16(q, at)?, be16(q, at + 2)?, at + 4))
}

/// The answer to one datagram, or `None` when it is no query at all (dropped without a word).
pub fn answer(zone: &Zone, q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < HEADER || q.len() > MAX_QUERY {
        return None;
    }
    let flags = be16(q, 2)?;
    if flags & 0x8000 != 0 {
        return None; // a response: never answer one (no loops between responders)
    }
    let opcode = (flags >> 11) & 0xf;
    let rd = flags & 0x0100;
    let mut out = Vec::with_capacity(q.len() + 28);
    let header = |out: &mut Vec<u8>, aa: bool, rcode: u16, qd: u16, an: u16| {
        out.extend_from_slice(&q[..2]);
        let f = 0x8000 | (opcode << 11) | (if aa { 0x0400 } else { 0 }) | rd | rcode;
        for v in [f, qd, an, 0, 0] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    };
    if opcode != 0 {
        header(&mut out, false, NOTIMP, 0, 0);
        return Some(out);
    }
    let parsed = (be16(q, 4)? == 1).then(|| question(q)).flatten();
    let Some((name, qtype, qclass, end)) = parsed else {
        header(&mut out, false, FORMERR, 0, 0);
        return Some(out);
    };
    let found = if qclass == CLASS_IN || qclass == CLASS_ANY {
        zone.lookup(&name)
    } else {
        Lookup::Outside
    };
    let (aa, rcode, address) = match found {
        Lookup::Outside => (false, REFUSED, None),
        Lookup::NoSuchName => (true, NXDOMAIN, None),
        Lookup::Exists(a) => (
            true,
            0,
            a.filter(|_| qtype == TYPE_AAAA || qtype == TYPE_ANY),
        ),
    };
    header(&mut out, aa, rcode, 1, u16::from(address.is_some()));
    out.extend_from_slice(&q[HEADER..end]);
    if let Some(a) = address {
        // The name as a pointer to the question's (offset 12), type, class, TTL, the address.
        out.extend_from_slice(&[0xc0, HEADER as u8]);
        out.extend_from_slice(&TYPE_AAAA.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&16u16.to_be_bytes());
        out.extend_from_slice(&a.octets());
    }
    Some(out)
}

/// Whether an [`answer`] is a refusal: the name is not ours (or the class is not Internet).
pub fn is_refused(answer: &[u8]) -> bool {
    be16(answer, 2).is_some_and(|f| f & 0xf == REFUSED)
}

/// The refusal `refused` (an [`answer`]) turned into SERVFAIL: what a client gets when no
/// upstream server answered a relayed query, so that it need not wait for its own timeout.
pub fn server_failure(refused: &[u8]) -> Vec<u8> {
    let mut out = refused.to_vec();
    if let Some(b) = out.get_mut(3) {
        *b = (*b & 0xf0) | SERVFAIL as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        let mut z = Zone {
            domain: "man8s".into(),
            ..Zone::default()
        };
        z.local
            .insert("db".into(), "300:1:2:3::db".parse().unwrap());
        z.hosts
            .insert("nas".into(), "300:aaaa:bbbb:cccc::/64".parse().unwrap());
        z
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn rcode(a: &[u8]) -> u16 {
        be16(a, 2).unwrap() & 0xf
    }

    fn address(a: &[u8]) -> Option<Ipv6Addr> {
        (be16(a, 6).unwrap() == 1).then(|| <[u8; 16]>::try_from(&a[a.len() - 16..]).unwrap().into())
    }

    #[test]
    fn lookups() {
        let z = zone();
        let files = man8s::address::machine_address(z.hosts["nas"], "files");
        assert_eq!(
            z.lookup("DB.man8s."),
            Lookup::Exists(Some("300:1:2:3::db".parse().unwrap()))
        );
        assert_eq!(z.lookup("files.nas.man8s"), Lookup::Exists(Some(files)));
        assert_eq!(z.lookup("nas.man8s"), Lookup::Exists(None));
        assert_eq!(z.lookup("man8s"), Lookup::Exists(None));
        assert_eq!(z.lookup("gone.man8s"), Lookup::NoSuchName);
        assert_eq!(z.lookup("files.elsewhere.man8s"), Lookup::NoSuchName);
        // Machine names may have dots: the last label before the domain is the host.
        assert_eq!(
            z.lookup("a.b.nas.man8s"),
            Lookup::Exists(Some(man8s::address::machine_address(z.hosts["nas"], "a.b")))
        );
        // Not a machine name (MachineName refuses it): no address is made up for it.
        assert_eq!(z.lookup("-x.nas.man8s"), Lookup::NoSuchName);
        assert_eq!(z.lookup("example.org"), Lookup::Outside);
        assert_eq!(z.lookup("xman8s"), Lookup::Outside);
    }

    #[test]
    fn answers_aaaa_nodata_nxdomain_refused() {
        let z = zone();
        let a = answer(&z, &query("db.man8s", TYPE_AAAA)).unwrap();
        assert_eq!(&a[..2], &[0xab, 0xcd]);
        assert_eq!(be16(&a, 2).unwrap(), 0x8000 | 0x0400 | 0x0100);
        assert_eq!(address(&a), Some("300:1:2:3::db".parse().unwrap()));
        // The question is echoed, the answer points at it.
        let q = query("db.man8s", TYPE_AAAA);
        assert_eq!(&a[HEADER..q.len()], &q[HEADER..]);
        assert_eq!(&a[q.len()..q.len() + 2], &[0xc0, 12]);
        assert_eq!(a.len(), q.len() + 28);

        // A: the name exists, without an IPv4 address (NODATA, so the client asks for AAAA too).
        let a4 = answer(&z, &query("db.man8s", 1)).unwrap();
        assert_eq!((rcode(&a4), address(&a4)), (0, None));
        let nx = answer(&z, &query("gone.man8s", TYPE_AAAA)).unwrap();
        assert_eq!(rcode(&nx), NXDOMAIN);
        let out = answer(&z, &query("example.org", TYPE_AAAA)).unwrap();
        assert_eq!(rcode(&out), REFUSED);
        assert!(is_refused(&out) && !is_refused(&nx) && !is_refused(&a));
        let failed = server_failure(&out);
        assert_eq!((rcode(&failed), failed.len()), (SERVFAIL, out.len()));
        assert_eq!(
            be16(&failed, 2).unwrap() & 0xfff0,
            be16(&out, 2).unwrap() & 0xfff0
        );
        assert_eq!(be16(&out, 2).unwrap() & 0x0400, 0, "not authoritative");
    }

    #[test]
    fn hostile_queries() {
        let z = zone();
        assert_eq!(answer(&z, &[0; 5]), None, "shorter than a header");
        assert_eq!(answer(&z, &[0; 600]), None, "longer than a UDP query");
        let mut response = query("db.man8s", TYPE_AAAA);
        response[2] |= 0x80;
        assert_eq!(answer(&z, &response), None, "a response is not answered");
        // A compression pointer, a truncated name, two questions: FORMERR with no question.
        let mut pointer = query("db.man8s", TYPE_AAAA);
        pointer[HEADER] = 0xc0;
        let mut truncated = query("db.man8s", TYPE_AAAA);
        truncated.truncate(HEADER + 4);
        let mut two = query("db.man8s", TYPE_AAAA);
        two[5] = 2;
        for bad in [pointer, truncated, two] {
            let a = answer(&z, &bad).unwrap();
            assert_eq!(
                (rcode(&a), be16(&a, 4).unwrap(), a.len()),
                (FORMERR, 0, HEADER)
            );
        }
        // Over-long names are refused as malformed, odd bytes never match a machine.
        let long = query(&["a"; 130].join("."), TYPE_AAAA);
        assert_eq!(rcode(&answer(&z, &long).unwrap()), FORMERR);
        let odd = query("d\u{1}b.man8s", TYPE_AAAA);
        assert_eq!(rcode(&answer(&z, &odd).unwrap()), NXDOMAIN);
        // Other opcodes (NOTIFY, UPDATE, …) are not implemented.
        let mut update = query("db.man8s", TYPE_AAAA);
        update[2] = 5 << 3;
        assert_eq!(rcode(&answer(&z, &update).unwrap()), NOTIMP);
    }
}
