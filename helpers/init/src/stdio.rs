//! `/dev/stdout` and `/dev/stderr` for apps whose fd 1/2 is a socket.
//!
//! Under systemd the machine's output goes to a journal *socket*, and `open("/dev/stdout")` (→
//! `/proc/self/fd/1`) fails with ENXIO on sockets; images that point log files at `/dev/stdout`
//! (nginx and many more) then die. When fd 1 or 2 is a socket, the init replaces the
//! `/dev/stdout`/`/dev/stderr` symlinks with FIFOs (mode 0666) and leaves a small detached relay
//! that copies whatever is written into them to the original fd. Writes to fd 1/2 themselves still
//! go straight to the journal; only opens by path take the FIFO.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// A FIFO and the descriptor its data goes to.
#[derive(Debug)]
pub struct Relay {
    /// Path of the FIFO (`/dev/stdout`).
    pub path: PathBuf,
    /// Read side of the FIFO (opened read-write, so it never sees EOF).
    pub fifo: fs::File,
    /// Duplicate of the original fd 1 or 2.
    pub target: OwnedFd,
}

/// Whether `fd` is a socket.
pub fn is_socket(fd: impl AsFd) -> bool {
    use nix::sys::stat::SFlag;
    nix::sys::stat::fstat(fd.as_fd())
        .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFSOCK)
        .unwrap_or(false)
}

/// Replace `dev_dir/stdout` and `dev_dir/stderr` by FIFOs where fd 1/2 are sockets.
pub fn prepare(dev_dir: &Path) -> io::Result<Vec<Relay>> {
    let mut relays = Vec::new();
    for (fd, name) in [
        (io::stdout().as_fd().try_clone_to_owned()?, "stdout"),
        (io::stderr().as_fd().try_clone_to_owned()?, "stderr"),
    ] {
        if !is_socket(&fd) {
            continue;
        }
        let path = dev_dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_fifo() => {}
            Ok(_) => {
                fs::remove_file(&path)?;
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o666))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o666))?;
            }
            Err(e) => return Err(e),
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))?;
        let fifo = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(&path)?;
        relays.push(Relay {
            path,
            fifo,
            target: fd,
        });
    }
    Ok(relays)
}

/// Copy from the FIFOs to their targets until the process is killed (with the machine).
pub fn relay_forever(relays: Vec<Relay>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pairs: Vec<(fs::File, fs::File)> = relays
        .into_iter()
        .map(|r| (r.fifo, fs::File::from(r.target)))
        .collect();
    while !pairs.is_empty() {
        let mut fds: Vec<PollFd> = pairs
            .iter()
            .map(|(fifo, _)| PollFd::new(fifo.as_fd(), PollFlags::POLLIN))
            .collect();
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut dead = Vec::new();
        for (i, (fifo, out)) in pairs.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            loop {
                match io::Read::read(fifo, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if write_all_retrying(out, &buf[..n]).is_err() {
                            dead.push(i);
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        dead.push(i);
                        break;
                    }
                }
            }
        }
        // A target that cannot be written to any more (the journal went away) ends its relay.
        for i in dead.into_iter().rev() {
            pairs.remove(i);
        }
    }
}

fn write_all_retrying(out: &mut fs::File, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match out.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(100u16));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
