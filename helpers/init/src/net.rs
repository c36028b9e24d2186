//! Step 4: lo and the uplink up, DHCPv4, SLAAC, the Yggdrasil address, resolv.conf, and the lease
//! keeper that renews the DHCP lease after the exec.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::dhcp::{self, Lease, Reply};
use crate::netlink::{Link, Netlink, pick_uplink};

/// What the network step needs.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Overall DHCPv4 bound.
    pub dhcp_timeout: Duration,
    /// Carrier bound.
    pub carrier_timeout: Duration,
    /// SLAAC wait bound.
    pub slaac_timeout: Duration,
    /// `MAN8S_YGGDRASIL_ADDRESS`, parsed.
    pub yggdrasil: Option<Ipv6Addr>,
}

/// What the network step did.
#[derive(Debug, Clone)]
pub struct NetOutcome {
    /// The uplink, if the machine has one.
    pub link: Option<Link>,
    /// The DHCPv4 lease, if any, and when it was obtained.
    pub lease: Option<(Lease, Instant)>,
    /// Global IPv6 addresses other than the Yggdrasil one seen before the SLAAC bound.
    pub slaac: Vec<Ipv6Addr>,
}

/// Parse `MAN8S_YGGDRASIL_ADDRESS`: empty/absent → none; otherwise must be an IPv6 address
/// (a `/64` suffix is accepted and ignored: the address is always added as /64).
pub fn parse_yggdrasil(value: Option<&str>) -> Result<Option<Ipv6Addr>, String> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let addr = v.strip_suffix("/64").unwrap_or(v);
    addr.parse::<Ipv6Addr>()
        .map(Some)
        .map_err(|_| format!("MAN8S_YGGDRASIL_ADDRESS={v:?} is not an IPv6 address"))
}

fn sysctl(ifname: &str, key: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/{key}"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Make the kernel accept router advertisements and autoconfigure (SLAAC) on `ifname`.
fn enable_slaac(ifname: &str, log: &mut dyn FnMut(String)) {
    let forwarding = sysctl(ifname, "forwarding").as_deref() == Some("1");
    let want_ra = if forwarding { "2" } else { "1" };
    // DAD off: the MAC nspawn derives from the machine name is unique on the bridge, and DAD
    // (link-local, then the SLAAC address) would hold the start back by 1–2 s.
    for (key, want) in [
        ("accept_ra", want_ra),
        ("autoconf", "1"),
        ("accept_dad", "0"),
    ] {
        match sysctl(ifname, key) {
            None => return, // no IPv6 on this kernel/link
            Some(v) if v == want || (key == "accept_ra" && v == "2") => {}
            Some(_) => {
                if let Err(e) = fs::write(format!("/proc/sys/net/ipv6/conf/{ifname}/{key}"), want) {
                    log(format!(
                        "warning: could not set {key}={want} on {ifname} ({e}); SLAAC may not happen"
                    ));
                }
            }
        }
    }
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Wait until `pred` holds for the link, polling every 5 ms, at most `bound`.
fn wait_link(
    nl: &mut Netlink,
    index: u32,
    bound: Duration,
    pred: impl Fn(&Link) -> bool,
) -> io::Result<bool> {
    let until = Instant::now() + bound;
    loop {
        if nl.links()?.iter().any(|l| l.index == index && pred(l)) {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Write `/etc/resolv.conf` atomically (replacing a file or symlink that nspawn may have put there).
pub fn write_resolv_conf(etc: &Path, contents: &str) -> io::Result<()> {
    let tmp = etc.join(".resolv.conf.man8s-init");
    fs::write(&tmp, contents)?;
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    fs::rename(&tmp, etc.join("resolv.conf")).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Configure the network. Hard errors are netlink failures on lo/the uplink and a bad Yggdrasil
/// address; no carrier, no DHCP answer and no SLAAC address are warnings.
pub fn configure(cfg: &NetConfig, log: &mut dyn FnMut(String)) -> Result<NetOutcome, String> {
    let mut nl = Netlink::open().map_err(io_err("netlink"))?;
    let links = nl.links().map_err(io_err("listing links"))?;
    for lo in links.iter().filter(|l| l.loopback) {
        nl.set_up(lo.index)
            .map_err(io_err(&format!("{} up", lo.name)))?;
    }
    let Some(link) = pick_uplink(&links).cloned() else {
        if cfg.yggdrasil.is_some() {
            return Err("no network link besides loopback for MAN8S_YGGDRASIL_ADDRESS".into());
        }
        log("no network link besides loopback; nothing to configure".into());
        return Ok(NetOutcome {
            link: None,
            lease: None,
            slaac: Vec::new(),
        });
    };
    enable_slaac(&link.name, log);
    nl.set_up(link.index)
        .map_err(io_err(&format!("{} up", link.name)))?;
    // The SLAAC bound counts from here: DHCP runs while the router advertisement is on its way.
    let slaac_until = Instant::now() + cfg.slaac_timeout;
    if let Some(ygg) = cfg.yggdrasil {
        nl.add_ipv6_nodad(link.index, ygg, 64)
            .map_err(io_err(&format!("adding {ygg}/64 to {}", link.name)))?;
    }
    // Carrier (IFF_LOWER_UP) only: the operational state follows when the kernel's link watcher
    // gets to it, up to ~1 s later, and packets sent before are dropped; waiting for it costs more
    // than the quick first retransmissions of DHCP and router solicitations that cover a loss.
    let carrier = wait_link(&mut nl, link.index, cfg.carrier_timeout, |l| l.carrier)
        .map_err(io_err("link state"))?;
    if !carrier {
        log(format!(
            "warning: {} has no carrier after {:.1} s; trying DHCP anyway",
            link.name,
            cfg.carrier_timeout.as_secs_f64()
        ));
    }

    // The kernel's own solicitation goes out when the link comes up, before the link watcher has
    // activated the queue, and is dropped; the next one is 4 s later. Ask once more now.
    if cfg.slaac_timeout > Duration::ZERO
        && let Err(e) = send_router_solicitation(&link.name)
    {
        log(format!(
            "warning: router solicitation on {}: {e}",
            link.name
        ));
    }

    let mut lease = None;
    let started = Instant::now();
    let acquired = dhcp::client_socket(&link.name, Ipv4Addr::UNSPECIFIED)
        .map_err(dhcp::DhcpError::from)
        .and_then(|sock| dhcp::acquire(&sock, &link.mac, cfg.dhcp_timeout));
    // A lease whose address the kernel refuses is a dead IPv4 as much as no answer is: one
    // warning, and the machine goes on with IPv6.
    let applied = acquired.and_then(|l| {
        apply_lease(&mut nl, &link, &l)
            .map(|warnings| (l, warnings))
            .map_err(|e| dhcp::DhcpError::Io(io::Error::other(format!("applying the lease: {e}"))))
    });
    match applied {
        Ok((l, warnings)) => {
            warnings.into_iter().for_each(&mut *log);
            log(format!(
                "{}: {}/{}{} from {} (lease {}, DHCP {:.1} ms){}{}",
                link.name,
                l.address,
                l.prefix_len,
                l.router.map(|r| format!(" via {r}")).unwrap_or_default(),
                l.server,
                l.lease_secs
                    .map(|s| format!("{s} s"))
                    .unwrap_or_else(|| "infinite".into()),
                started.elapsed().as_secs_f64() * 1000.0,
                if l.dns.is_empty() {
                    String::new()
                } else {
                    format!(", DNS {:?}", l.dns)
                },
                l.mtu.map(|m| format!(", MTU {m}")).unwrap_or_default(),
            ));
            if let Some(Err(e)) =
                dhcp::resolv_conf(&l).map(|text| write_resolv_conf(Path::new("/etc"), &text))
            {
                log(format!(
                    "warning: could not write /etc/resolv.conf ({e}); keeping what nspawn put there"
                ));
            }
            lease = Some((l, Instant::now()));
        }
        Err(e) => log(format!(
            "warning: no IPv4 on {}: {e}; continuing with IPv6{}",
            link.name,
            if cfg.yggdrasil.is_some() {
                " and the Yggdrasil address"
            } else {
                ""
            }
        )),
    }

    let slaac = wait_slaac(&mut nl, &link, cfg.yggdrasil, slaac_until)
        .map_err(io_err("listing addresses"))?;
    if !slaac.is_empty() {
        log(format!("{}: SLAAC {}", link.name, join(&slaac)));
    } else if !cfg.slaac_timeout.is_zero() {
        log(format!(
            "{}: no SLAAC address yet after {:.1} s (the kernel keeps listening for router advertisements)",
            link.name,
            cfg.slaac_timeout.as_secs_f64()
        ));
    }
    if let Some(ygg) = cfg.yggdrasil {
        log(format!("{}: Yggdrasil {ygg}/64", link.name));
    }
    Ok(NetOutcome {
        link: Some(link),
        lease,
        slaac,
    })
}

/// An ICMPv6 Router Solicitation (RFC 4861 §4.1) to all routers, from the link-local address.
/// The kernel fills in the checksum of raw ICMPv6 sockets.
fn send_router_solicitation(ifname: &str) -> io::Result<()> {
    use nix::sys::socket::{
        self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6, sockopt,
    };
    let fd = socket::socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::IcmpV6,
    )?;
    socket::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    socket::setsockopt(&fd, sockopt::Ipv6MulticastHops, &255)?;
    let all_routers = SockaddrIn6::from(std::net::SocketAddrV6::new(
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
        0,
        0,
        0,
    ));
    let rs = [133u8, 0, 0, 0, 0, 0, 0, 0];
    socket::sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &rs,
        &all_routers,
        MsgFlags::empty(),
    )?;
    Ok(())
}

fn join(list: &[Ipv6Addr]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn wait_slaac(
    nl: &mut Netlink,
    link: &Link,
    ygg: Option<Ipv6Addr>,
    until: Instant,
) -> io::Result<Vec<Ipv6Addr>> {
    // Solicit again after 40 ms, doubling up to 500 ms: an advertisement answering the first
    // solicitation can be lost while the host side of the veth is not yet forwarding.
    let mut interval = Duration::from_millis(40);
    let mut next_solicitation = Instant::now() + interval;
    loop {
        if Instant::now() >= next_solicitation {
            let _ = send_router_solicitation(&link.name);
            interval = (interval * 2).min(Duration::from_millis(500));
            next_solicitation += interval;
        }
        let found: Vec<Ipv6Addr> = nl
            .global_addresses(link.index)?
            .into_iter()
            .filter_map(|(a, _)| match a {
                IpAddr::V6(v6) if Some(v6) != ygg => Some(v6),
                _ => None,
            })
            .collect();
        if !found.is_empty() || Instant::now() >= until {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Put a lease on the link. The address failing is an error; the MTU or the default route failing
/// (a router the kernel cannot reach, …) only costs speed or the way out: warnings.
fn apply_lease(nl: &mut Netlink, link: &Link, l: &Lease) -> Result<Vec<String>, String> {
    // The lease's MTU first: the bridge's side already runs at it, and a host0 left at 1500 would
    // drop the larger frames the host sends (both ends of a veth must agree). A refusal keeps
    // 1500, which still works, only slower across the mesh.
    let mtu_warning = l.mtu.and_then(|mtu| {
        nl.set_mtu(link.index, mtu.into()).err().map(|e| {
            format!(
                "warning: could not set the MTU of {} to {mtu} from the lease ({e}); it stays as it was",
                link.name
            )
        })
    });
    nl.add_ipv4(link.index, l.address, l.prefix_len, l.lease_secs)
        .map_err(io_err(&format!(
            "adding {}/{} to {}",
            l.address, l.prefix_len, link.name
        )))?;
    let route_warning = l.router.and_then(|router| {
        nl.add_default_route_v4(link.index, router).err().map(|e| {
            format!(
                "warning: no default route via {router} on {} ({e}); IPv4 reaches only {}/{}",
                link.name, l.address, l.prefix_len
            )
        })
    });
    Ok(mtu_warning.into_iter().chain(route_warning).collect())
}

/// The lease keeper: renews at T1 (unicast), rebinds at T2 (broadcast), starts over after expiry.
/// Runs in a detached process until the machine stops. Prints one line per event.
pub fn keep_lease(link: Link, mut lease: Lease, mut obtained: Instant) {
    let log = |m: String| eprintln!("man8s-init: lease keeper: {m}");
    loop {
        let Some(total) = lease.lease_secs else {
            return;
        };
        let t1 = obtained + Duration::from_secs(lease.t1().unwrap_or(total / 2).into());
        let t2 = obtained + Duration::from_secs(lease.t2().unwrap_or(total / 8 * 7).into());
        let end = obtained + Duration::from_secs(total.into());
        sleep_until(t1);
        let mut renewed = None;
        while renewed.is_none() && Instant::now() < end {
            let now = Instant::now();
            let (to, phase_end) = if now < t2 {
                (lease.server, t2)
            } else {
                (Ipv4Addr::BROADCAST, end)
            };
            // RFC 2131: wait half the remaining time, at least 60 s (bounded by the phase end).
            let wait = (phase_end.saturating_duration_since(now) / 2).max(Duration::from_secs(60));
            let attempt = dhcp::client_socket(&link.name, Ipv4Addr::UNSPECIFIED).and_then(|s| {
                dhcp::renew_once(&s, &link.mac, lease.address, to, Duration::from_secs(5))
            });
            match attempt {
                Ok(Some(Reply::Ack(l))) => renewed = Some(l),
                Ok(Some(_)) => break, // NAK
                Ok(None) => sleep_until((Instant::now() + wait).min(phase_end)),
                Err(e) => {
                    log(format!("renewal failed: {e}"));
                    sleep_until((Instant::now() + wait).min(phase_end));
                }
            }
        }
        let fresh = match renewed {
            Some(l) => l,
            None => loop {
                let got = dhcp::client_socket(&link.name, Ipv4Addr::UNSPECIFIED)
                    .map_err(dhcp::DhcpError::from)
                    .and_then(|s| dhcp::acquire(&s, &link.mac, Duration::from_secs(30)));
                match got {
                    Ok(l) => break l,
                    Err(e) => {
                        log(format!("lease of {} lost: {e}; retrying", lease.address));
                        std::thread::sleep(Duration::from_secs(30));
                    }
                }
            },
        };
        obtained = Instant::now();
        match Netlink::open()
            .map_err(|e| e.to_string())
            .and_then(|mut nl| apply_lease(&mut nl, &link, &fresh))
            .map(|warnings| warnings.into_iter().for_each(log))
        {
            Ok(()) => {
                if fresh.address != lease.address {
                    log(format!(
                        "address changed from {} to {}",
                        lease.address, fresh.address
                    ));
                }
            }
            Err(e) => log(format!("applying renewed lease: {e}")),
        }
        lease = fresh;
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yggdrasil_address_parsing() {
        assert_eq!(parse_yggdrasil(None), Ok(None));
        assert_eq!(parse_yggdrasil(Some("")), Ok(None));
        assert_eq!(parse_yggdrasil(Some("  ")), Ok(None));
        assert_eq!(
            parse_yggdrasil(Some("300:2e98:a4b0:1789:1d44:bc13:a177:c4d")),
            Ok(Some(
                "300:2e98:a4b0:1789:1d44:bc13:a177:c4d".parse().unwrap()
            ))
        );
        assert_eq!(
            parse_yggdrasil(Some("300::5/64")),
            Ok(Some("300::5".parse().unwrap()))
        );
        assert!(
            parse_yggdrasil(Some("10.0.0.1"))
                .unwrap_err()
                .contains("MAN8S_YGGDRASIL_ADDRESS")
        );
    }

    #[test]
    fn resolv_conf_replaces_symlink() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            "../run/systemd/resolve/stub-resolv.conf",
            t.path().join("resolv.conf"),
        )
        .unwrap();
        write_resolv_conf(t.path(), "nameserver 10.0.0.1\n").unwrap();
        let m = fs::symlink_metadata(t.path().join("resolv.conf")).unwrap();
        assert!(m.is_file());
        assert_eq!(
            fs::read_to_string(t.path().join("resolv.conf")).unwrap(),
            "nameserver 10.0.0.1\n"
        );
        assert!(!t.path().join(".resolv.conf.man8s-init").exists());
    }
}
