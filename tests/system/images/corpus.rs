//! The servers of the image corpus (tests/system/14-image-corpus.sh): one static binary, no crates, that behaves
//! like the server its name (argv[0]) says where the system tier looks: how it answers, where it keeps data and
//! what each signal does. Built by tests/system/images.sh with rustc alone.
//!
//! - `postgres`: a line protocol on [::]:5432 (`PING`, `SET K V`, `GET K`), data in $PGDATA, shared memory of
//!   $POSTGRES_SHM_MB MiB in /dev/shm (as a real postgres, it fails to start when /dev/shm is too small).
//!   SIGTERM is a smart shutdown (waits for every client to leave), SIGINT a fast one (drops clients, shuts
//!   down cleanly), SIGQUIT an immediate one (no clean shutdown: the next start runs "crash recovery").
//! - `nginx`: HTTP on [::]:80: `/` says `nginx-like ok GREETING` (GREETING from /etc/nginx/greeting, read
//!   again on SIGHUP), `/big` streams 64 MiB. SIGQUIT is a graceful shutdown (no new connections, transfers
//!   in flight complete), SIGTERM and SIGINT a fast one (transfers are cut).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn getuid() -> u32;
}

const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGQUIT: i32 = 3;
const SIGTERM: i32 = 15;
const BIG: usize = 64 << 20;

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    PENDING.store(sig, Ordering::SeqCst);
}

fn take_signal() -> i32 {
    PENDING.swap(0, Ordering::SeqCst)
}

fn log(who: &str, msg: &str) {
    let _ = writeln!(std::io::stderr(), "{who}: {msg}");
}

fn main() {
    for sig in [SIGHUP, SIGINT, SIGQUIT, SIGTERM] {
        // SAFETY: the handler only stores into an atomic.
        unsafe { signal(sig, on_signal) };
    }
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = Path::new(&argv0).file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
    match name.as_str() {
        "postgres" => postgres(),
        "nginx" => nginx(),
        other => {
            log("corpus", &format!("unknown personality {other:?}"));
            std::process::exit(2);
        }
    }
}

/// Accept connections until a signal arrives; returns it (SIGHUP is handed to `on_hup`).
fn serve(listener: &TcpListener, active: &Arc<AtomicUsize>, handle: fn(TcpStream), on_hup: &dyn Fn()) -> i32 {
    listener.set_nonblocking(true).expect("non-blocking listener");
    loop {
        match take_signal() {
            0 => {}
            SIGHUP => on_hup(),
            sig => return sig,
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let active = Arc::clone(active);
                active.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    handle(stream);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn wait_idle(active: &AtomicUsize) {
    while active.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------------------------

fn pgdata() -> PathBuf {
    PathBuf::from(std::env::var("PGDATA").unwrap_or_else(|_| "/var/lib/postgresql/data".into()))
}

fn postgres() {
    let who = "postgres";
    let data = pgdata();
    let pid_file = data.join("postmaster.pid");
    // SAFETY: getuid cannot fail.
    let uid = unsafe { getuid() };
    if uid == 0 {
        log(who, "\"root\" execution of the PostgreSQL server is not permitted.");
        std::process::exit(1);
    }
    if !data.join("PG_VERSION").exists() {
        if let Err(e) = std::fs::create_dir_all(data.join("base")).and_then(|_| std::fs::write(data.join("PG_VERSION"), "17\n")) {
            log(who, &format!("could not initialize {}: {e}", data.display()));
            std::process::exit(1);
        }
        log(who, "database system initialized");
    } else if pid_file.exists() {
        log(who, "database system was interrupted; performing crash recovery");
    } else {
        log(who, "database system was shut down cleanly");
    }
    let shm_mb: usize = std::env::var("POSTGRES_SHM_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let shm = PathBuf::from("/dev/shm/PostgreSQL.corpus");
    if shm_mb > 0 {
        let chunk = vec![0u8; 1 << 20];
        let filled = std::fs::File::create(&shm).and_then(|mut f| {
            for _ in 0..shm_mb {
                f.write_all(&chunk)?;
            }
            f.sync_all()
        });
        if let Err(e) = filled {
            let _ = std::fs::remove_file(&shm);
            log(who, &format!("could not resize shared memory segment to {shm_mb} MiB: {e}"));
            std::process::exit(1);
        }
    }
    let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));
    let listener = TcpListener::bind("[::]:5432").expect("bind [::]:5432");
    log(who, &format!("database system is ready to accept connections (uid={uid}, shared memory {shm_mb} MiB)"));
    let active = Arc::new(AtomicUsize::new(0));
    let sig = serve(&listener, &active, pg_client, &|| log(who, "received SIGHUP, reloading configuration files"));
    drop(listener);
    match sig {
        SIGTERM => {
            log(who, "received smart shutdown request");
            wait_idle(&active);
        }
        SIGINT => log(who, "received fast shutdown request"),
        _ => {
            log(who, "received immediate shutdown request");
            std::process::exit(2);
        }
    }
    let _ = std::fs::remove_file(&shm);
    let _ = std::fs::remove_file(&pid_file);
    log(who, "database system is shut down");
    std::process::exit(0);
}

fn pg_client(stream: TcpStream) {
    let Ok(mut out) = stream.try_clone() else { return };
    let data = pgdata().join("base");
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["PING"] => "PONG".to_owned(),
            ["SET", k, v] if k.bytes().all(|b| b.is_ascii_alphanumeric()) => match std::fs::write(data.join(k), v) {
                Ok(()) => "OK".to_owned(),
                Err(e) => format!("ERROR {e}"),
            },
            ["GET", k] if k.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                std::fs::read_to_string(data.join(k)).unwrap_or_else(|_| "NULL".into())
            }
            _ => "ERROR syntax".to_owned(),
        };
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------

fn greeting() -> String {
    std::fs::read_to_string("/etc/nginx/greeting").unwrap_or_default().trim().to_owned()
}

fn nginx() {
    let who = "nginx";
    let listener = TcpListener::bind("[::]:80").expect("bind [::]:80");
    log(who, &format!("start worker processes (greeting {:?})", greeting()));
    let active = Arc::new(AtomicUsize::new(0));
    let sig = serve(&listener, &active, web_client, &|| {
        log(who, &format!("signal 1 (SIGHUP) received, reconfiguring (greeting {:?})", greeting()))
    });
    drop(listener);
    if sig == SIGQUIT {
        log(who, &format!("signal 3 (SIGQUIT) received, gracefully shutting down ({} in flight)", active.load(Ordering::SeqCst)));
        wait_idle(&active);
    } else {
        log(who, &format!("signal {sig} received, exiting"));
    }
    log(who, "exit");
    std::process::exit(0);
}

fn web_client(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&head).split_whitespace().nth(1).unwrap_or("/").to_owned();
    if path == "/big" {
        let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BIG}\r\n\r\n");
        // A pattern the client can check: byte i is i % 251.
        let block: Vec<u8> = (0..251 * 1024).map(|i| (i % 251) as u8).collect();
        let mut left = BIG;
        while left > 0 {
            let n = left.min(block.len());
            if stream.write_all(&block[..n]).is_err() {
                return;
            }
            left -= n;
        }
        // A lingering close, as nginx's: the transfer is done when the client has it all and
        // closes, not when the last byte is in the kernel's send buffer.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        return;
    }
    let body = format!("nginx-like ok {}\n", greeting());
    let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len());
}
