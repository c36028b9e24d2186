//! The only file of the `noshell` test image: a static HTTP server on [::]:8080 (dual-stack) with no shell, no
//! libc and nothing else in the image. It answers every request with `noshell ok uid=UID gid=GID` and logs a
//! line to stderr on start and on SIGTERM, so the system tier can see that it ran and how it was stopped.
//! Built by tests/system/images.sh with rustc alone (no crates).

use std::io::{Read, Write};
use std::net::TcpListener;

unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn getuid() -> u32;
    fn getgid() -> u32;
    fn _exit(status: i32) -> !;
}

const SIGTERM: i32 = 15;

extern "C" fn on_sigterm(_: i32) {
    let msg = b"noshell: got SIGTERM, exiting\n";
    let _ = std::io::stderr().write_all(msg);
    // SAFETY: _exit is async-signal-safe.
    unsafe { _exit(0) }
}

fn main() {
    // SAFETY: installing a handler that only writes and calls _exit.
    unsafe { signal(SIGTERM, on_sigterm) };
    let (uid, gid) = unsafe { (getuid(), getgid()) };
    let listener = TcpListener::bind("[::]:8080").expect("bind [::]:8080");
    eprintln!("noshell: listening on [::]:8080 as uid={uid} gid={gid}");
    let body = format!("noshell ok uid={uid} gid={gid}\n");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 2048];
        let _ = stream.read(&mut buf);
        let _ = write!(
            stream,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}
