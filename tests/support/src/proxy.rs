//! A loopback HTTP/1.1 proxy in front of a registry that injects faults (429/500, resets,
//! truncation, stalls), optionally with token auth, and records what it saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a [`FaultProxy`] does to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After: secs` when given) instead of forwarding.
    Status {
        /// HTTP status.
        code: u16,
        /// `Retry-After` seconds.
        retry_after: Option<u32>,
    },
    /// Forward, but reset the connection (RST) after this many body bytes.
    ResetAfter(usize),
    /// Forward, but close the connection cleanly after this many body bytes.
    TruncateAfter(usize),
    /// Accept the request and say nothing for this long (to trigger read timeouts).
    Stall(Duration),
    /// Forward, but send the body one byte per this interval (never silent for long, never done).
    Drip(Duration),
}

/// A rule: requests whose path contains `path_contains` get `fault`, `times` times.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Substring of the request path.
    pub path_contains: String,
    /// What to do.
    pub fault: Fault,
    /// How many matching requests are affected.
    pub times: usize,
}

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Request line (`GET /v2/... HTTP/1.1`).
    pub line: String,
    /// `Range` header, if any.
    pub range: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A loopback HTTP/1.1 proxy in front of a registry that injects faults.
pub struct FaultProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Token auth in front of an anonymous registry, as Docker Hub and ghcr do it: `/v2/…` without
/// `Authorization: Bearer TOKEN` gets 401 with a Bearer challenge whose realm is this proxy's
/// `/token`, which hands out TOKEN (only with these basic credentials, when given).
#[derive(Clone, Debug)]
pub struct TokenAuth {
    /// The token handed out and required.
    pub token: String,
    /// `user:password` the token endpoint requires, if any.
    pub basic: Option<(String, String)>,
    /// Registry requests one token is good for (0: unlimited); then it "expires" and the next
    /// token handed out is a different one (`TOKEN-2`, `TOKEN-3`, …).
    pub uses: usize,
}

impl FaultProxy {
    /// Start forwarding to `upstream` with these rules.
    pub fn start(upstream: SocketAddr, rules: Vec<Rule>) -> Self {
        Self::start_with(upstream, rules, None)
    }

    /// Start forwarding with token auth in front (see [`TokenAuth`]).
    pub fn start_with(upstream: SocketAddr, rules: Vec<Rule>, token: Option<TokenAuth>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let rules = Arc::new(Mutex::new(rules));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (rules.clone(), seen.clone());
        // (generation of the current token, registry requests it has served)
        let token_state = Arc::new(Mutex::new((1u64, 0usize)));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, s, t, ts) = (r.clone(), s.clone(), token.clone(), token_state.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, addr, &r, &s, t.as_ref().map(|t| (t, &*ts)));
                });
            }
        });
        Self { addr, rules, seen }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Rules not yet used up.
    pub fn remaining(&self) -> usize {
        self.rules
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.times)
            .sum()
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, headers, body).
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut c = TcpStream::connect(addr).expect("connect registry");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).expect("send");
    c.write_all(body).expect("send body");
    let mut r = BufReader::new(c);
    let head = read_head(&mut r).expect("response head");
    let status = head
        .first()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = head
        .iter()
        .skip(1)
        .filter_map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut body = Vec::new();
    let _ = r.read_to_end(&mut body);
    (status, headers, body)
}

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = l.trim_end_matches(['\r', '\n']).to_owned();
        if l.is_empty() {
            return Ok(lines);
        }
        lines.push(l);
    }
}

/// One request per connection: the response is sent with `Connection: close`.
fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    me: SocketAddr,
    rules: &Mutex<Vec<Rule>>,
    seen: &Mutex<Vec<Seen>>,
    token: Option<(&TokenAuth, &Mutex<(u64, usize)>)>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut reader)?;
    let line = head.first().cloned().unwrap_or_default();
    let range = head
        .iter()
        .find(|h| h.to_ascii_lowercase().starts_with("range:"))
        .map(|h| h[6..].trim().to_owned());
    seen.lock().expect("lock").push(Seen {
        line: line.clone(),
        range,
        at: Instant::now(),
    });
    let path = line.split(' ').nth(1).unwrap_or("");
    let fault = {
        let mut rules = rules.lock().expect("lock");
        rules
            .iter_mut()
            .find(|r| r.times > 0 && path.contains(&r.path_contains))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    let mut client_w = client;
    if let Some((t, state)) = token {
        let current = |st: &(u64, usize)| {
            if st.0 == 1 {
                t.token.clone()
            } else {
                format!("{}-{}", t.token, st.0)
            }
        };
        let header = |name: &str| {
            head.iter()
                .skip(1)
                .find(|h| h.to_ascii_lowercase().starts_with(&format!("{name}:")))
                .map(|h| h[name.len() + 1..].trim().to_owned())
        };
        if path.starts_with("/token") {
            let authorized = match &t.basic {
                None => true,
                Some((u, p)) => header("authorization").is_some_and(|a| {
                    a.strip_prefix("Basic ")
                        .is_some_and(|b| decode_b64(b) == format!("{u}:{p}").into_bytes())
                }),
            };
            let ok = authorized
                && path.contains("scope=repository")
                && path.contains("service=test-registry");
            let body = if ok {
                let mut st = state.lock().expect("lock");
                if t.uses > 0 && st.1 >= t.uses {
                    *st = (st.0 + 1, 0);
                }
                format!(r#"{{"token":"{}"}}"#, current(&st))
            } else {
                "{}".to_owned()
            };
            let status = if ok { "200 OK" } else { "401 Unauthorized" };
            write!(
                client_w,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        let valid = {
            let mut st = state.lock().expect("lock");
            let ok = header("authorization").as_deref()
                == Some(&format!("Bearer {}", current(&st)))
                && (t.uses == 0 || st.1 < t.uses);
            if ok {
                st.1 += 1;
            }
            ok
        };
        if !valid {
            write!(
                client_w,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"test-registry\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
    }
    if let Some(Fault::Stall(d)) = fault {
        std::thread::sleep(d);
        return Ok(());
    }
    if let Some(Fault::Status { code, retry_after }) = fault {
        let mut resp =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n");
        if let Some(s) = retry_after {
            resp.push_str(&format!("Retry-After: {s}\r\n"));
        }
        resp.push_str("\r\n");
        client_w.write_all(resp.as_bytes())?;
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut req = String::new();
    for h in &head {
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("host:") {
            continue;
        }
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!("Host: {upstream}\r\nConnection: close\r\n\r\n"));
    up.write_all(req.as_bytes())?;
    let mut up_r = BufReader::new(up);
    let resp_head = read_head(&mut up_r)?;
    let mut out = String::new();
    for h in &resp_head {
        if h.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    client_w.write_all(out.as_bytes())?;
    let limit = match fault {
        Some(Fault::ResetAfter(n)) | Some(Fault::TruncateAfter(n)) => Some(n),
        _ => None,
    };
    let mut sent = 0usize;
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = up_r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let n = match limit {
            Some(l) if sent + n >= l => {
                client_w.write_all(&buf[..l - sent])?;
                client_w.flush()?;
                if matches!(fault, Some(Fault::ResetAfter(_))) {
                    // SO_LINGER 0 turns close() into a RST.
                    let _ = nix::sys::socket::setsockopt(
                        &client_w,
                        nix::sys::socket::sockopt::Linger,
                        &nix::libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        },
                    );
                    drop(client_w);
                } else {
                    client_w.shutdown(Shutdown::Both)?;
                }
                return Ok(());
            }
            _ => n,
        };
        if let Some(Fault::Drip(every)) = fault {
            for b in &buf[..n] {
                client_w.write_all(std::slice::from_ref(b))?;
                client_w.flush()?;
                std::thread::sleep(every);
            }
            sent += n;
            continue;
        }
        client_w.write_all(&buf[..n])?;
        sent += n;
    }
    Ok(())
}

fn decode_b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}
