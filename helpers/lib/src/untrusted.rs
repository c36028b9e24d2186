//! Reading files that something untrusted could have touched (a machine's root, an image).
//!
//! A machine's root can replace any file it can reach with a FIFO (the reader blocks forever),
//! a symlink to `/dev/zero` (the reader eats memory) or a huge file. Every host-side read of such
//! a file goes through [`read_regular`]: it never follows a symlink in the last component, never
//! blocks on open, refuses anything but a regular file and stops at a size limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Limit for small state and config files (JSON records, man8env.env).
pub const SMALL_FILE_LIMIT: u64 = 4 << 20;

/// Open `path` for reading without following a symlink in its last component and without
/// blocking (`O_NONBLOCK`: a FIFO opens at once); refuse anything but a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => io::Error::other("is a symlink, not a regular file"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::other(format!(
            "is {}, not a regular file",
            describe_type(&meta.file_type())
        )));
    }
    Ok(file)
}

/// The contents of regular file `path`, at most `limit` bytes (more is an error, not a
/// truncation). See the module docs.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut out = Vec::new();
    file.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(out)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// "a FIFO", "a directory", … for messages.
pub fn describe_type(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_symlinks_devices_and_big_files_are_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_regular(&fifo, 10).unwrap_err().to_string();
        assert!(err.contains("a FIFO"), "{err}");
        let link = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read_regular(&link, 10).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        let err = read_regular(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("character device"), "{err}");
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; 11]).unwrap();
        assert!(
            read_regular(&big, 10)
                .unwrap_err()
                .to_string()
                .contains("larger than 10 bytes")
        );
        assert_eq!(read_regular(&big, 11).unwrap().len(), 11);
    }
}
