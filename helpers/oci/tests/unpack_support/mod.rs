//! Shared by the `unpack_*` tests: a layer writer that can also write hostile entries (raw names the `tar`
//! crate's own setters would refuse), a scratch directory with canaries beside the root, and tree helpers.

// unsafe: llistxattr has no safe wrapper.
#![allow(unsafe_code)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use man8s_oci::unpack::{LayerStats, UnpackError, UnpackOptions, apply_layer};

/// Fixed mtime of test entries (2023-11-14), so mtime checks have a known value.
pub const MTIME: u64 = 1_700_000_000;

/// An in-memory layer tar.
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    /// Appends an entry with the path (and link target) written raw, through PAX records when long.
    pub fn raw(
        mut self,
        mut header: tar::Header,
        path: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
    ) -> Layer {
        let mut pax: Vec<(&str, &[u8])> = Vec::new();
        if path.len() > 99 || path.contains(&0) {
            pax.push(("path", path));
        } else {
            header.as_old_mut().name[..path.len()].copy_from_slice(path);
        }
        if let Some(link) = link {
            if link.len() > 99 || link.contains(&0) {
                pax.push(("linkpath", link));
            } else {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            }
        }
        if !pax.is_empty() {
            self = self.pax(&pax);
        }
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    /// Appends PAX records for the next entry (xattrs, uid, mtime …).
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Layer {
        let mut data = Vec::new();
        for (key, value) in records {
            // "LEN KEY=VALUE\n", where LEN counts itself.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest > len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_path("PaxHeader").unwrap();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data.as_slice()).unwrap();
        self
    }

    pub fn file(self, path: &str, data: &[u8]) -> Layer {
        self.file_mode(path, data, 0o644)
    }

    pub fn file_mode(self, path: &str, data: &[u8], mode: u32) -> Layer {
        self.raw(
            Self::header(tar::EntryType::Regular, mode, data.len() as u64),
            path.as_bytes(),
            None,
            data,
        )
    }

    pub fn file_owned(self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Layer {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        header.set_uid(uid);
        header.set_gid(gid);
        self.raw(header, path.as_bytes(), None, data)
    }

    pub fn dir(self, path: &str) -> Layer {
        self.dir_mode(path, 0o755)
    }

    pub fn dir_mode(self, path: &str, mode: u32) -> Layer {
        self.raw(
            Self::header(tar::EntryType::Directory, mode, 0),
            path.as_bytes(),
            None,
            b"",
        )
    }

    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.raw(
            Self::header(tar::EntryType::Symlink, 0o777, 0),
            path.as_bytes(),
            Some(target.as_bytes()),
            b"",
        )
    }

    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.raw(
            Self::header(tar::EntryType::Link, 0o644, 0),
            path.as_bytes(),
            Some(target.as_bytes()),
            b"",
        )
    }

    pub fn fifo(self, path: &str, mode: u32) -> Layer {
        self.raw(
            Self::header(tar::EntryType::Fifo, mode, 0),
            path.as_bytes(),
            None,
            b"",
        )
    }

    pub fn device(self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Layer {
        let mut header = Self::header(kind, 0o666, 0);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        self.raw(header, path.as_bytes(), None, b"")
    }

    /// A whiteout or opaque marker: an empty file of that name.
    pub fn whiteout(self, path: &str) -> Layer {
        self.file_mode(path, b"", 0o600)
    }

    pub fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// A scratch directory holding `root/` (the unpack target) and `outside/` canaries at two levels, so that an
/// escape by `..` or by a symlink to the scratch dir would be seen.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// The outside as made, to compare with after each test.
    before: BTreeMap<PathBuf, Outside>,
}

/// What must not change outside the root: contents, type, mode, owner, mtime.
#[derive(Debug, PartialEq, Eq)]
pub struct Outside {
    content: Vec<u8>,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("up/root")).unwrap();
        fs::create_dir_all(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/secret"), b"canary").unwrap();
        fs::write(dir.path().join("up/canary"), b"canary").unwrap();
        let mut scratch = Scratch {
            dir,
            before: BTreeMap::new(),
        };
        scratch.before = scratch.outside_snapshot();
        assert_eq!(
            scratch.before.len(),
            5,
            "scratch, up, canary, outside, secret"
        );
        scratch
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("up/root")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn apply(&self, layer: Vec<u8>) -> Result<LayerStats, UnpackError> {
        self.apply_with(layer, &UnpackOptions::default())
    }

    pub fn apply_with(
        &self,
        layer: Vec<u8>,
        opts: &UnpackOptions,
    ) -> Result<LayerStats, UnpackError> {
        apply_layer(&self.root(), &mut layer.as_slice(), opts)
    }

    /// Everything in the scratch dir outside `root/` (the root itself excluded: a `./` entry may set it).
    pub fn outside_snapshot(&self) -> BTreeMap<PathBuf, Outside> {
        let mut seen = BTreeMap::new();
        let root = self.root();
        walk(self.path(), &mut |path, meta| {
            if path.starts_with(&root) {
                return false;
            }
            let content = if meta.is_file() {
                fs::read(path).unwrap()
            } else {
                Vec::new()
            };
            let outside = Outside {
                content,
                mode: meta.mode(),
                owner: (meta.uid(), meta.gid()),
                mtime: (meta.mtime(), meta.mtime_nsec()),
            };
            seen.insert(path.to_owned(), outside);
            true
        });
        seen
    }

    /// Asserts nothing outside `root/` appeared or changed (contents, modes, owners, mtimes).
    pub fn assert_outside_untouched(&self) {
        assert_eq!(
            self.outside_snapshot(),
            self.before,
            "something appeared or changed outside the root"
        );
    }
}

impl Drop for Scratch {
    /// Unprivileged, read-only directories a layer made would stop the temp dir's removal: open them up first.
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        fn open_up(dir: &Path) {
            let Ok(meta) = fs::symlink_metadata(dir) else {
                return;
            };
            if !meta.is_dir() {
                return;
            }
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                open_up(&entry.path());
            }
        }
        open_up(&self.root());
    }
}

/// Depth-first walk with `lstat` metadata; `visit` returns false to not descend.
pub fn walk(path: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata) -> bool) {
    let meta = fs::symlink_metadata(path).unwrap();
    if !visit(path, &meta) || !meta.is_dir() {
        return;
    }
    let mut children: Vec<_> = fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    children.sort();
    for child in children {
        walk(&child, visit);
    }
}

/// The relative paths of everything under `root` (not `root` itself), sorted.
pub fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, &mut |path, _| {
        if path != root {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        true
    });
    out
}

/// The value of xattr `key` on `path` (not following a final symlink), if set.
pub fn get_xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let ckey = std::ffi::CString::new(key).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        nix::libc::lgetxattr(
            cpath.as_ptr(),
            ckey.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Mode bits (with setuid/setgid/sticky) of `path`, not following symlinks.
pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}
