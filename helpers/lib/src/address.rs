//! Yggdrasil addresses of machines, bit-compatible with the Python `mbctl`.
//!
//! suffix = the low (128 − prefix length) bits of SHA-256(UTF-8 name), read big-endian;
//! address = (prefix with those bits cleared) | suffix.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use sha2::{Digest, Sha256};

/// The suffix of `name` for a prefix of `prefix_len` bits (0..=128).
pub fn suffix(name: &str, prefix_len: u8) -> u128 {
    let digest = Sha256::digest(name.as_bytes());
    // The low 128 bits of the 256-bit big-endian integer are its last 16 bytes.
    let low = u128::from_be_bytes(digest[16..32].try_into().expect("SHA-256 is 32 bytes"));
    low & host_mask(prefix_len)
}

/// The suffix of `name` in a /64, as an address (`::1d44:bc13:a177:c4d`).
pub fn suffix_address(name: &str, prefix_len: u8) -> Ipv6Addr {
    Ipv6Addr::from(suffix(name, prefix_len))
}

/// The address of machine `name` in `subnet`.
pub fn machine_address(subnet: Ipv6Net, name: &str) -> Ipv6Addr {
    let len = subnet.prefix_len();
    let net = u128::from(subnet.addr()) & !host_mask(len);
    Ipv6Addr::from(net | suffix(name, len))
}

/// The bridge's own address in `subnet` (`<subnet>::1`).
pub fn bridge_address(subnet: Ipv6Net) -> Ipv6Addr {
    let net = u128::from(subnet.addr()) & !host_mask(subnet.prefix_len());
    Ipv6Addr::from(net | 1)
}

/// The /64 in `200::/7` that holds the node address of the host whose subnet is `subnet`:
/// yggdrasil makes both from the same key bits, the subnet with first byte `0x03`, the node
/// address with `0x02` (so `AllowFrom=@HOST` covers the host itself, not only its machines).
pub fn node_prefix(subnet: Ipv6Net) -> Ipv6Net {
    let mut octets = subnet.trunc().addr().octets();
    octets[0] &= 0xfe;
    Ipv6Net::new(Ipv6Addr::from(octets), 64).expect("64 is a valid prefix length")
}

fn host_mask(prefix_len: u8) -> u128 {
    match prefix_len {
        0 => u128::MAX,
        128.. => 0,
        n => u128::MAX >> n,
    }
}

/// Machines whose addresses in `subnet` collide, as pairs of names (sorted).
pub fn collisions<'a>(
    subnet: Ipv6Net,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, String)> {
    let mut seen: std::collections::BTreeMap<Ipv6Addr, &str> = Default::default();
    let mut out = Vec::new();
    for name in names {
        let addr = machine_address(subnet, name);
        // The bridge owns ::1; a machine hashing to it collides with the bridge.
        if addr == bridge_address(subnet) {
            out.push(("(bridge)".to_owned(), name.to_owned()));
        }
        if let Some(prev) = seen.insert(addr, name) {
            let mut pair = [prev.to_owned(), name.to_owned()];
            pair.sort();
            let [a, b] = pair;
            out.push((a, b));
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn node_prefix_holds_the_node_address_of_its_subnet() {
        // The pair of the state file's documented example (address and subnet of one node).
        let subnet: Ipv6Net = "301:240a:2fab:1c47::/64".parse().unwrap();
        let node: Ipv6Addr = "201:240a:2fab:1c47:50ad:b44:7941:cd13".parse().unwrap();
        let p = node_prefix(subnet);
        assert_eq!(p.to_string(), "201:240a:2fab:1c47::/64");
        assert!(p.contains(&node));
        assert!(!p.contains(&machine_address(subnet, "web")));
    }

    use super::*;

    #[test]
    fn readme_example() {
        let subnet: Ipv6Net = "300:2e98:a4b0:1789::/64".parse().unwrap();
        assert_eq!(
            machine_address(subnet, "TestBWContainer3"),
            "300:2e98:a4b0:1789:1d44:bc13:a177:c4d"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(
            suffix_address("TestBWContainer3", 64).to_string(),
            "::1d44:bc13:a177:c4d"
        );
        assert_eq!(bridge_address(subnet).to_string(), "300:2e98:a4b0:1789::1");
    }

    #[test]
    fn prefix_bits_are_cleared() {
        // Host bits set in the given subnet address do not leak into the result.
        let messy: Ipv6Net = "300:2e98:a4b0:1789:ffff::/64".parse().unwrap();
        let clean: Ipv6Net = "300:2e98:a4b0:1789::/64".parse().unwrap();
        assert_eq!(machine_address(messy, "x"), machine_address(clean, "x"));
    }

    #[test]
    fn other_lengths() {
        let full = u128::from_be_bytes(
            Sha256::digest("ünïcode".as_bytes())[16..]
                .try_into()
                .unwrap(),
        );
        assert_eq!(suffix("ünïcode", 0), full);
        assert_eq!(suffix("ünïcode", 128), 0);
        assert_eq!(suffix("ünïcode", 48), full & (u128::MAX >> 48));
        let s48: Ipv6Net = "300:1:2::/48".parse().unwrap();
        let a = machine_address(s48, "ünïcode");
        assert_eq!(
            u128::from(a) >> 80,
            u128::from("300:1:2::".parse::<Ipv6Addr>().unwrap()) >> 80
        );
    }

    #[test]
    fn collisions_found_at_short_suffix() {
        // With a /126 only 4 addresses exist, so a handful of names must collide.
        let subnet: Ipv6Net = "300::/126".parse().unwrap();
        let names: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
        assert!(!collisions(subnet, names.iter().map(String::as_str)).is_empty());
        let s64: Ipv6Net = "300::/64".parse().unwrap();
        assert!(collisions(s64, names.iter().map(String::as_str)).is_empty());
    }
}
