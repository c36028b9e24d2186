//! `sd_notify(READY=1)` without libsystemd: one datagram to `$NOTIFY_SOCKET`.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send `message` to the notify socket at `path` (`@name` = abstract namespace).
pub fn notify(path: &str, message: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {path:?} is not a path"),
            ));
        }
    };
    sock.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_to_path_socket() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        notify(path.to_str().unwrap(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        assert!(notify("relative", "READY=1").is_err());
        assert!(notify(t.path().join("absent").to_str().unwrap(), "READY=1").is_err());
    }
}
