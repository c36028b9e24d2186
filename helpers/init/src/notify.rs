//! `sd_notify(READY=1)` without libsystemd: one datagram to `$NOTIFY_SOCKET`.
//!
//! nspawn accepts notifications only from the payload's PID 1, which under `ProcessTwo=yes` is
//! its stub, not us (PID 2): it checks the sender's `SCM_CREDENTIALS`. Like `sd_pid_notify()`,
//! the init therefore sends on behalf of its parent: root of the machine's user namespace may put
//! another pid of its own PID namespace into the credentials. When the kernel refuses that, the
//! message goes out with our own credentials.

use std::io;
use std::io::IoSlice;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, UnixCredentials,
    sendmsg, socket,
};

/// Send `message` to the notify socket at `path` (`@name` = abstract namespace), claiming to be
/// `on_behalf_of` when given.
pub fn notify(path: &str, message: &str, on_behalf_of: Option<i32>) -> io::Result<()> {
    let addr = match path.strip_prefix('@') {
        Some(name) => UnixAddr::new_abstract(name.as_bytes())?,
        None if path.starts_with('/') => UnixAddr::new(path)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {path:?} is not a path"),
            ));
        }
    };
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let iov = [IoSlice::new(message.as_bytes())];
    if let Some(pid) = on_behalf_of {
        let creds = UnixCredentials::from(nix::libc::ucred {
            pid,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        });
        let cmsg = [ControlMessage::ScmCredentials(&creds)];
        if sendmsg(
            sock.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            Some(&addr),
        )
        .is_ok()
        {
            return Ok(());
        }
    }
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        &[],
        MsgFlags::MSG_NOSIGNAL,
        Some(&addr),
    )?;
    Ok(())
}

/// Whose pid to claim: our parent when it is PID 1 and we are not (nspawn's stub and us).
pub fn stand_in_pid() -> Option<i32> {
    let me = nix::unistd::getpid().as_raw();
    (me != 1 && nix::unistd::getppid().as_raw() == 1).then_some(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn sends_ready_to_path_socket() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        notify(path.to_str().unwrap(), "READY=1\n", None).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        // Claiming another pid falls back to our own credentials when not allowed (or succeeds
        // as root): either way the message arrives.
        notify(path.to_str().unwrap(), "READY=1\n", Some(1)).unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        assert!(notify("relative", "READY=1", None).is_err());
        assert!(notify(t.path().join("absent").to_str().unwrap(), "READY=1", None).is_err());
    }
}
