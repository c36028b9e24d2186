//! Declared ports of IPv4-only apps, reachable on the machine's Yggdrasil address.
//!
//! Many images' apps listen on `0.0.0.0` or `127.0.0.1` only; the mesh reaches a machine on its
//! Yggdrasil (IPv6) address. For each declared port, a detached helper process watches the
//! machine's listening sockets (`/proc/net/{tcp,tcp6,udp,udp6}`) and, once the app listens on
//! IPv4 but not on IPv6 (`[::]` or the Yggdrasil address) for [`Options::settle`], binds
//! `[ygg]:PORT` and relays to the app's IPv4 address. An app that listens on IPv6 is left alone:
//! it is reachable directly, and binding its port first would make its own `[::]` bind fail
//! (which is also why the helper waits for the listeners to settle instead of binding at once).
//!
//! TCP is relayed per connection by two threads copying in both directions (half-close kept).
//! UDP is relayed per client: one socket connected to the app for each client address, closed
//! after [`Options::udp_idle`] without traffic.
//!
//! The helper runs as the init's detached grandchild ([`crate::detach::spawn`]), so it survives
//! the exec of the app, is reaped by nspawn's stub PID 1, and ends with the machine.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener,
    TcpStream, UdpSocket,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use man8s::machine::Protocol as Proto;

/// Relay buffer per direction: large enough that a bulk transfer is not syscall-bound.
const BUF: usize = 128 * 1024;

/// Tuning of the watcher.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often the listening sockets are read.
    pub poll: Duration,
    /// How long a port must be IPv4-only before it is forwarded.
    pub settle: Duration,
    /// UDP client sessions without traffic for this long are dropped.
    pub udp_idle: Duration,
    /// Where `/proc/net` is (tests may point elsewhere).
    pub proc_net: std::path::PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            settle: Duration::from_secs(2),
            udp_idle: Duration::from_secs(60),
            proc_net: "/proc/net".into(),
        }
    }
}

/// Start the detached forwarder for `ports` on `ygg`; returns at once. Nothing to do → no process.
pub fn spawn(ports: &[(Proto, u16)], ygg: Ipv6Addr) -> io::Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let ports = ports.to_vec();
    crate::detach::spawn(move || {
        let stop = AtomicBool::new(false);
        if let Err(e) = run(&ports, ygg, &Options::default(), &stop) {
            eprintln!("man8s-init: forward: {e}");
        }
    })
    .map_err(io::Error::from)
}

/// Parse one forwarded port as given to the init: `tcp:80`, `udp:53`, or `80` (TCP).
pub fn parse_port_arg(s: &str) -> Result<(Proto, u16), String> {
    let (proto, port) = match s.split_once(':') {
        Some(("tcp", p)) => (Proto::Tcp, p),
        Some(("udp", p)) => (Proto::Udp, p),
        Some((other, _)) => return Err(format!("{s:?}: unknown protocol {other:?} (tcp or udp)")),
        None => (Proto::Tcp, s),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((proto, p)),
        _ => Err(format!("{s:?}: not a port number (1-65535)")),
    }
}

/// One socket seen listening (TCP) or bound (UDP) in `/proc/net`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Protocol.
    pub proto: Proto,
    /// Local address and port.
    pub addr: SocketAddr,
}

/// Parse one of `/proc/net/{tcp,tcp6,udp,udp6}`: the TCP sockets in LISTEN, the UDP sockets
/// that are bound and unconnected (the state the kernel shows as 07).
pub fn parse_proc_net(text: &str, proto: Proto) -> Vec<Bound> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(_), Some(local), Some(remote), Some(state)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let wanted = match proto {
            Proto::Tcp => state == "0A",
            Proto::Udp => state == "07" && remote.ends_with(":0000"),
        };
        if !wanted {
            continue;
        }
        if let Some(addr) = parse_hex_addr(local) {
            out.push(Bound { proto, addr });
        }
    }
    out
}

/// `0100007F:0050` (IPv4) or 32 hex digits `:port` (IPv6), as the kernel prints them: each
/// 32-bit word of the address (network byte order in memory) printed as a native integer, so
/// `to_ne_bytes` gives the memory bytes back on either endianness.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if ip.len() != 8 && ip.len() != 32 {
        return None;
    }
    let mut octets = Vec::with_capacity(16);
    for i in 0..ip.len() / 8 {
        let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        octets.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match <[u8; 4]>::try_from(octets.as_slice()) {
        Ok(a) => IpAddr::V4(Ipv4Addr::from(a)),
        Err(_) => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(octets.as_slice()).ok()?,
        )),
    };
    Some(SocketAddr::new(ip, port))
}

/// What to do with one declared port, given the sockets bound in the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody listens yet.
    Wait,
    /// The app listens on IPv6 (wildcard or the Yggdrasil address): reachable directly.
    Direct,
    /// The app listens on IPv4 only: relay to this address.
    Relay(SocketAddrV4),
}

/// Decide for `(proto, port)`.
pub fn decide(proto: Proto, port: u16, ygg: Ipv6Addr, bound: &[Bound]) -> Decision {
    let mut v4 = None;
    for b in bound
        .iter()
        .filter(|b| b.proto == proto && b.addr.port() == port)
    {
        match b.addr.ip() {
            IpAddr::V6(a) if a.is_unspecified() || a == ygg => return Decision::Direct,
            IpAddr::V6(_) => {}
            IpAddr::V4(a) => {
                // Prefer loopback: 0.0.0.0 listens there too.
                let target = if a.is_unspecified() {
                    Ipv4Addr::LOCALHOST
                } else {
                    a
                };
                if v4.is_none() || target.is_loopback() {
                    v4 = Some(SocketAddrV4::new(target, port));
                }
            }
        }
    }
    v4.map_or(Decision::Wait, Decision::Relay)
}

fn read_bound(opts: &Options) -> Vec<Bound> {
    let mut out = Vec::new();
    for (file, proto) in [
        ("tcp", Proto::Tcp),
        ("tcp6", Proto::Tcp),
        ("udp", Proto::Udp),
        ("udp6", Proto::Udp),
    ] {
        if let Ok(text) = std::fs::read_to_string(opts.proc_net.join(file)) {
            out.extend(parse_proc_net(&text, proto));
        }
    }
    out
}

/// Watch and relay until `stop` is set (never, in the machine). Returns an error only when a
/// relay socket cannot be bound.
pub fn run(
    ports: &[(Proto, u16)],
    ygg: Ipv6Addr,
    opts: &Options,
    stop: &AtomicBool,
) -> io::Result<()> {
    // Ports still undecided, with the time they were first seen IPv4-only.
    let mut pending: HashMap<(Proto, u16), Option<Instant>> =
        ports.iter().map(|p| (*p, None)).collect();
    let mut threads = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if !pending.is_empty() {
            let bound = read_bound(opts);
            let mut done = Vec::new();
            for (&(proto, port), since) in pending.iter_mut() {
                match decide(proto, port, ygg, &bound) {
                    Decision::Wait => *since = None,
                    Decision::Direct => done.push((proto, port)),
                    Decision::Relay(target) => {
                        let first = *since.get_or_insert_with(Instant::now);
                        if first.elapsed() >= opts.settle {
                            let listen = SocketAddrV6::new(ygg, port, 0, 0);
                            threads.push(start_relay(proto, listen, target, opts.udp_idle)?);
                            done.push((proto, port));
                        }
                    }
                }
            }
            for k in done {
                pending.remove(&k);
            }
        }
        std::thread::sleep(opts.poll);
    }
    drop(threads);
    Ok(())
}

/// Bind `listen` and relay to `target` in a background thread.
pub fn start_relay(
    proto: Proto,
    listen: SocketAddrV6,
    target: SocketAddrV4,
    udp_idle: Duration,
) -> io::Result<std::thread::JoinHandle<()>> {
    let what = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("{proto:?} [{}]:{}: {e}", listen.ip(), listen.port()),
        )
    };
    match proto {
        Proto::Tcp => {
            let l = TcpListener::bind(listen).map_err(what)?;
            Ok(std::thread::spawn(move || tcp_accept_loop(l, target)))
        }
        Proto::Udp => {
            let s = UdpSocket::bind(listen).map_err(what)?;
            Ok(std::thread::spawn(move || udp_loop(s, target, udp_idle)))
        }
    }
}

fn tcp_accept_loop(listener: TcpListener, target: SocketAddrV4) {
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        std::thread::spawn(move || {
            let Ok(app) = TcpStream::connect(target) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = app.set_nodelay(true);
            let (Ok(client2), Ok(app2)) = (client.try_clone(), app.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || pump(client2, app2));
            pump(app, client);
            let _ = up.join();
        });
    }
}

/// Copy until EOF, then pass the half-close on.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Read);
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// UDP client → (socket connected to the app, last activity).
type Sessions = HashMap<SocketAddr, (Arc<UdpSocket>, Instant)>;

fn udp_loop(socket: UdpSocket, target: SocketAddrV4, idle: Duration) {
    let socket = Arc::new(socket);
    let sessions: Arc<Mutex<Sessions>> = Default::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let upstream = {
            let mut map = sessions.lock().expect("no panics while locked");
            map.retain(|_, (_, last)| last.elapsed() < idle);
            if let Some((s, last)) = map.get_mut(&client) {
                *last = Instant::now();
                Some(s.clone())
            } else {
                let s = match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                    .and_then(|s| s.connect(target).map(|()| s))
                {
                    Ok(s) => Arc::new(s),
                    Err(_) => continue,
                };
                let _ = s.set_read_timeout(Some(idle));
                map.insert(client, (s.clone(), Instant::now()));
                let (down, back, sessions) = (s.clone(), socket.clone(), sessions.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = down.recv(&mut buf) {
                        if back.send_to(&buf[..n], client).is_err() {
                            break;
                        }
                        if let Some((_, last)) = sessions
                            .lock()
                            .expect("no panics while locked")
                            .get_mut(&client)
                        {
                            *last = Instant::now();
                        }
                    }
                    sessions
                        .lock()
                        .expect("no panics while locked")
                        .remove(&client);
                });
                Some(s)
            }
        };
        if let Some(s) = upstream {
            let _ = s.send(&buf[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_and_tcp6() {
        // Verbatim lines of a little-endian kernel: 127.0.0.1:80 and 0.0.0.0:8080 listening,
        // one established connection; [::]:22 and [::1]:631 listening.
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0100007F:0050 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0\n\
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0\n";
        if cfg!(target_endian = "little") {
            let v4 = parse_proc_net(tcp, Proto::Tcp);
            assert_eq!(
                v4.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
                ["127.0.0.1:80", "0.0.0.0:8080"]
            );
            let v6 = parse_proc_net(tcp6, Proto::Tcp);
            assert_eq!(
                v6.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
                ["[::]:22", "[::1]:631"]
            );
        }
    }

    #[test]
    fn proc_net_matches_real_sockets() {
        // Whatever the byte order, what this process binds must be read back as bound.
        let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = TcpListener::bind("[::1]:0").unwrap();
        let u4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let opts = Options::default();
        let bound = read_bound(&opts);
        for (proto, addr) in [
            (Proto::Tcp, l4.local_addr().unwrap()),
            (Proto::Tcp, l6.local_addr().unwrap()),
            (Proto::Udp, u4.local_addr().unwrap()),
        ] {
            assert!(
                bound.contains(&Bound { proto, addr }),
                "{proto:?} {addr} not in {bound:?}"
            );
        }
    }

    #[test]
    fn port_args() {
        assert_eq!(parse_port_arg("tcp:80"), Ok((Proto::Tcp, 80)));
        assert_eq!(parse_port_arg("udp:53"), Ok((Proto::Udp, 53)));
        assert_eq!(parse_port_arg("8080"), Ok((Proto::Tcp, 8080)));
        assert!(
            parse_port_arg("sctp:1")
                .unwrap_err()
                .contains("unknown protocol")
        );
        assert!(
            parse_port_arg("tcp:0")
                .unwrap_err()
                .contains("not a port number")
        );
        assert!(parse_port_arg("tcp:70000").is_err());
        assert!(parse_port_arg("").is_err());
    }

    #[test]
    fn waits_for_the_app_to_finish_binding() {
        // The app binds IPv4 first and its IPv6 address a moment later (as nginx with `listen 80;
        // listen [::]:80 ipv6only=on;` does). Inside the settle time the forwarder must not take the
        // IPv6 port, or the app's own bind would fail.
        let port = free_port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let opts = Options {
            poll: Duration::from_millis(10),
            settle: Duration::from_millis(500),
            ..Default::default()
        };
        let v4 = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let fw =
            std::thread::spawn(move || run(&[(Proto::Tcp, port)], Ipv6Addr::LOCALHOST, &opts, &st));
        std::thread::sleep(Duration::from_millis(150));
        let v6 = TcpListener::bind(("::1", port)).expect("the app's IPv6 bind must still succeed");
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        fw.join().unwrap().unwrap();
        drop((v4, v6));
    }

    #[test]
    fn decisions() {
        let ygg: Ipv6Addr = "300:2e98:a4b0:1789:1d44:bc13:a177:c4d".parse().unwrap();
        let b = |proto, s: &str| Bound {
            proto,
            addr: s.parse().unwrap(),
        };
        assert_eq!(decide(Proto::Tcp, 80, ygg, &[]), Decision::Wait);
        assert_eq!(
            decide(Proto::Tcp, 80, ygg, &[b(Proto::Tcp, "0.0.0.0:80")]),
            Decision::Relay("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            decide(Proto::Tcp, 80, ygg, &[b(Proto::Tcp, "172.17.5.9:80")]),
            Decision::Relay("172.17.5.9:80".parse().unwrap())
        );
        assert_eq!(
            decide(
                Proto::Tcp,
                80,
                ygg,
                &[
                    b(Proto::Tcp, "172.17.5.9:80"),
                    b(Proto::Tcp, "127.0.0.1:80")
                ]
            ),
            Decision::Relay("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            decide(
                Proto::Tcp,
                80,
                ygg,
                &[b(Proto::Tcp, "0.0.0.0:80"), b(Proto::Tcp, "[::]:80")]
            ),
            Decision::Direct
        );
        assert_eq!(
            decide(
                Proto::Tcp,
                80,
                ygg,
                &[b(Proto::Tcp, &format!("[{ygg}]:80"))]
            ),
            Decision::Direct
        );
        // Other ports, other protocols, other IPv6 addresses do not count.
        assert_eq!(
            decide(
                Proto::Tcp,
                80,
                ygg,
                &[
                    b(Proto::Udp, "0.0.0.0:80"),
                    b(Proto::Tcp, "0.0.0.0:81"),
                    b(Proto::Tcp, "[fd00::1]:80")
                ]
            ),
            Decision::Wait
        );
    }

    fn free_port() -> u16 {
        // A port free on both 127.0.0.1 and ::1.
        loop {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            if TcpListener::bind(("::1", port)).is_ok() && UdpSocket::bind(("::1", port)).is_ok() {
                return port;
            }
        }
    }

    fn fast() -> Options {
        Options {
            poll: Duration::from_millis(20),
            settle: Duration::from_millis(100),
            ..Default::default()
        }
    }

    #[test]
    fn relays_tcp_to_an_ipv4_only_app() {
        let port = free_port();
        // The app: IPv4 only, upper-cases what it gets, closes after EOF.
        let app = TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::thread::spawn(move || {
            for c in app.incoming() {
                let mut c = c.unwrap();
                let mut s = Vec::new();
                c.read_to_end(&mut s).unwrap();
                c.write_all(&s.to_ascii_uppercase()).unwrap();
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let fw = std::thread::spawn(move || {
            run(&[(Proto::Tcp, port)], Ipv6Addr::LOCALHOST, &fast(), &st)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = loop {
            match TcpStream::connect(("::1", port)) {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("forwarder never listened on [::1]:{port}: {e}"),
            }
        };
        // Big enough to need many buffers, with a half-close in the middle of the exchange.
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let p2 = payload.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&p2).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, payload.to_ascii_uppercase());
        stop.store(true, Ordering::Relaxed);
        fw.join().unwrap().unwrap();
    }

    #[test]
    fn relays_udp_per_client() {
        let port = free_port();
        let app = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = app.recv_from(&mut buf).unwrap();
                let mut reply = b"re:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                app.send_to(&reply, from).unwrap();
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let fw = std::thread::spawn(move || {
            run(&[(Proto::Udp, port)], Ipv6Addr::LOCALHOST, &fast(), &st)
        });
        let clients: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind("[::1]:0").unwrap())
            .collect();
        for c in &clients {
            c.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, c) in clients.iter().enumerate() {
            let msg = format!("hello {i}");
            let mut buf = [0u8; 64];
            loop {
                c.send_to(msg.as_bytes(), ("::1", port)).unwrap();
                match c.recv(&mut buf) {
                    Ok(n) => {
                        assert_eq!(&buf[..n], format!("re:{msg}").as_bytes());
                        break;
                    }
                    Err(_) => assert!(
                        Instant::now() < deadline,
                        "no UDP reply through the forwarder"
                    ),
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        fw.join().unwrap().unwrap();
    }

    #[test]
    fn leaves_dual_stack_apps_alone() {
        let port = free_port();
        let _v6 = TcpListener::bind(("::", port)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let fw = std::thread::spawn(move || {
            run(&[(Proto::Tcp, port)], Ipv6Addr::LOCALHOST, &fast(), &st)
        });
        std::thread::sleep(Duration::from_millis(400));
        stop.store(true, Ordering::Relaxed);
        // Had it tried to bind [::1]:port it would have failed (EADDRINUSE) and returned an error.
        fw.join().unwrap().unwrap();
    }
}
