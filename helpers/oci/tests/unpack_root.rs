//! Root tier (`root_*`): ownership, setuid after chown, `security.capability`, device nodes, and the
//! differential test against `umoci unpack` (Debian's umoci) on benign multi-layer images. These FAIL when not
//! run as root.

// unsafe: llistxattr and pre_exec (unshare, mount) for the root tests.
#![allow(unsafe_code)]

mod unpack_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use unpack_support::{Layer, Scratch, get_xattr, mode, walk};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root tier test: run as root (make test-root)"
    );
}

/// A `security.capability` v2 value granting cap_net_raw (bit 13), effective.
const CAP_NET_RAW_V2: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[test]
fn root_ownership_is_numeric_and_setuid_survives_chown() {
    require_root();
    let s = Scratch::new();
    let layer = Layer::new()
        .file_owned("bin/su", b"su", 0o4755, 1234, 5678)
        .file_owned("bin/wall", b"wall", 0o2755, 0, 5)
        .pax(&[("uid", b"100000000"), ("gid", b"100000001")])
        .file("big-ids", b"x")
        .bytes();
    s.apply(layer).unwrap();
    let meta = |p: &str| fs::symlink_metadata(s.root().join(p)).unwrap();
    assert_eq!((meta("bin/su").uid(), meta("bin/su").gid()), (1234, 5678));
    assert_eq!(
        mode(&s.root().join("bin/su")),
        0o4755,
        "chmod after chown keeps setuid"
    );
    assert_eq!(mode(&s.root().join("bin/wall")), 0o2755);
    assert_eq!(
        (meta("big-ids").uid(), meta("big-ids").gid()),
        (100_000_000, 100_000_001),
        "PAX uid/gid win"
    );
}

#[test]
fn root_owner_of_symlinks_dirs_and_fifos() {
    require_root();
    let s = Scratch::new();
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o2770);
    dir.set_uid(7);
    dir.set_gid(8);
    dir.set_mtime(0);
    dir.set_size(0);
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_mode(0o777);
    link.set_uid(42);
    link.set_gid(43);
    link.set_mtime(0);
    link.set_size(0);
    let layer = Layer::new()
        .raw(dir, b"srv", None, b"")
        .raw(link, b"srv/link", Some(b"/etc/passwd"), b"")
        .bytes();
    s.apply(layer).unwrap();
    let meta = |p: &str| fs::symlink_metadata(s.root().join(p)).unwrap();
    assert_eq!(
        (
            meta("srv").uid(),
            meta("srv").gid(),
            mode(&s.root().join("srv"))
        ),
        (7, 8, 0o2770)
    );
    assert_eq!(
        (meta("srv/link").uid(), meta("srv/link").gid()),
        (42, 43),
        "lchown, not the target"
    );
}

#[test]
fn root_security_capability_xattr() {
    require_root();
    let s = Scratch::new();
    let layer = Layer::new()
        .pax(&[
            ("SCHILY.xattr.security.capability", &CAP_NET_RAW_V2),
            ("SCHILY.xattr.user.note", b"ping"),
        ])
        .file_mode("bin/ping", b"ping", 0o755)
        .bytes();
    s.apply(layer).unwrap();
    let ping = s.root().join("bin/ping");
    assert_eq!(
        get_xattr(&ping, "security.capability").as_deref(),
        Some(&CAP_NET_RAW_V2[..])
    );
    assert_eq!(get_xattr(&ping, "user.note").as_deref(), Some(&b"ping"[..]));
}

#[test]
fn root_device_nodes() {
    require_root();
    let s = Scratch::new();
    let layer = Layer::new()
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/loop0", tar::EntryType::Block, 7, 0)
        .bytes();
    s.apply(layer).unwrap();
    let null = fs::symlink_metadata(s.root().join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let loop0 = fs::symlink_metadata(s.root().join("dev/loop0")).unwrap();
    assert!(loop0.file_type().is_block_device());
    assert_eq!(loop0.rdev(), nix::sys::stat::makedev(7, 0));
    assert_eq!(mode(&s.root().join("dev/null")), 0o666);
}

// ---- differential against umoci ------------------------------------------------------------------------------

/// Writes an OCI image layout at `dir` with gzip layers, tagged `tag` (what `umoci unpack --image dir:tag` reads).
fn write_oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(data));
        fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let mut diff_ids = Vec::new();
    let mut layer_descs = Vec::new();
    for layer in layers {
        diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(layer))));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(layer).unwrap();
        let (digest, size) = put(&gz.finish().unwrap());
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids }, "history": []
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": layer_descs
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": tag }
        }]
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// What is compared of each path: everything, directory mtimes included (both restore the times of
/// directories a layer changes without declaring them), except the root directory's own mtime and the
/// unpack-time mtimes of directories no layer declares (see `differential`).
#[derive(Debug, PartialEq, Eq)]
struct Record {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    sha256: String,
    link: String,
    rdev: u64,
    mtime: Option<(i64, i64)>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn list_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated path and a buffer of the given length.
    let n = unsafe { nix::libc::llistxattr(cpath.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let key = String::from_utf8_lossy(k).into_owned();
            let value = get_xattr(path, &key).unwrap();
            (key, value)
        })
        .collect()
}

/// Every path under `root` with its record, and the hard link groups (paths sharing an inode).
fn snapshot(root: &Path) -> (BTreeMap<String, Record>, BTreeSet<Vec<String>>) {
    let mut records = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    walk(root, &mut |path, meta| {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "other"
        };
        let sha256 = if ft.is_file() {
            hex::encode(Sha256::digest(fs::read(path).unwrap()))
        } else {
            String::new()
        };
        let link = if ft.is_symlink() {
            fs::read_link(path).unwrap().to_string_lossy().into_owned()
        } else {
            String::new()
        };
        if !ft.is_dir() {
            inodes.entry(meta.ino()).or_default().push(rel.clone());
        }
        let record = Record {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: if ft.is_file() { meta.size() } else { 0 },
            sha256,
            link,
            rdev: meta.rdev(),
            // The root's own mtime is when each tool created it (unless a `./` entry sets it).
            mtime: (!rel.is_empty()).then(|| (meta.mtime(), meta.mtime_nsec())),
            xattrs: list_xattrs(path),
        };
        records.insert(rel, record);
        true
    });
    let groups = inodes
        .into_values()
        .filter(|paths| paths.len() > 1)
        .collect();
    (records, groups)
}

/// Unpacks `layers` with umoci and with us, and compares the two trees.
fn differential(name: &str, layers: Vec<Vec<u8>>) {
    require_root();
    let scratch = tempfile::tempdir().unwrap();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 1;
    let layout = scratch.path().join("layout");
    write_oci_layout(&layout, "test", &layers);
    let bundle = scratch.path().join("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci must be installed (apt-get install umoci)");
    assert!(
        out.status.success(),
        "umoci unpack {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ours = scratch.path().join("ours");
    fs::create_dir(&ours).unwrap();
    let opts = man8s_oci::unpack::UnpackOptions::default();
    for layer in &layers {
        man8s_oci::unpack::apply_layer(&ours, &mut layer.as_slice(), &opts).unwrap();
    }

    let (mut theirs, their_groups) = snapshot(&bundle.join("rootfs"));
    let (mut mine, my_groups) = snapshot(&ours);
    // Directories created implicitly (no entry in any layer) get the time of the unpack from both tools:
    // those must both be recent; every other time comes from the layers and must match exactly.
    for (path, their) in theirs.iter_mut() {
        let recent =
            |r: &Record| r.kind == "dir" && r.mtime.is_some_and(|(secs, _)| secs >= started);
        if let Some(my) = mine.get_mut(path)
            && recent(their)
            && recent(my)
        {
            (their.mtime, my.mtime) = (None, None);
        }
    }
    let their_paths: Vec<_> = theirs.keys().collect();
    let my_paths: Vec<_> = mine.keys().collect();
    assert_eq!(my_paths, their_paths, "{name}: the same paths");
    // The root directory is compared too: both apply a `./` entry's mode and owner to it.
    for (path, their) in &theirs {
        assert_eq!(
            &mine[path], their,
            "{name}: {path:?} differs (left: ours, right: umoci)"
        );
    }
    assert_eq!(my_groups, their_groups, "{name}: hard link groups");
    assert!(!my_paths.is_empty());
}

/// A Debian-like base layer: directories with their modes, var/run -> /run, setuid, hardlinks, a fifo,
/// devices, owners, xattrs, long names.
fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("bin")
        .dir("etc")
        .dir_mode("tmp", 0o1777)
        .dir("run")
        .dir("var")
        .dir("var/lib")
        .dir("var/lib/apt")
        .file("var/lib/apt/lists", b"lists")
        .dir("var/cache")
        .file("var/cache/a", b"a")
        .symlink("var/run", "/run")
        .symlink("var/lock", "/run/lock")
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .file_mode("etc/shadow", b"root:*:1::::::\n", 0o640)
        .file("etc/removed-later", b"bye")
        .file_owned("bin/su", b"ELF su", 0o4755, 0, 0)
        .file_owned("bin/crontab", b"ELF crontab", 0o2755, 0, 102)
        .file_mode("bin/busybox", &vec![0x7f; 100_000], 0o755)
        .hardlink("bin/ls", "bin/busybox")
        .hardlink("bin/cat", "bin/busybox")
        .symlink("bin/sh", "busybox")
        .file_owned("home-file", b"user", 0o600, 1000, 1000)
        .fifo("run/initctl", 0o600)
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .pax(&[
            ("SCHILY.xattr.security.capability", &CAP_NET_RAW_V2),
            ("SCHILY.xattr.user.a", b"1"),
        ])
        .file_mode("bin/ping", b"ELF ping", 0o755)
        .file(
            &format!(
                "usr/share/doc/{}/{}",
                "long-package-name".repeat(6),
                "changelog".repeat(20)
            ),
            b"log",
        )
        .symlink("sbin", "bin")
        .symlink("lib", "/usr/lib")
        .file("replaced-by-dir", b"file")
        .file("dir-to-file/child", b"c")
        .bytes()
}

#[test]
fn root_differential_single_layer() {
    differential("single", vec![base_layer()]);
}

#[test]
fn root_differential_whiteouts_opaque_replacement_symlink_writes() {
    let second = Layer::new()
        .whiteout("etc/.wh.removed-later")
        .whiteout("var/lib/.wh..wh..opq")
        .file("var/lib/new", b"new")
        .file("var/run/app.pid", b"42") // written through var/run -> /run
        .file("var/lock/app.lock", b"") // through a dangling absolute symlink
        .dir("replaced-by-dir")
        .file("replaced-by-dir/x", b"x")
        .file("dir-to-file", b"now a file")
        .dir("sbin") // a directory entry replaces a symlink
        .file("sbin/init", b"init")
        .file("lib/libc.so.6", b"libc") // written through lib -> /usr/lib (created)
        .hardlink("bin/sh-copy", "bin/busybox") // hardlink to a lower-layer file
        .file_mode("etc/shadow", b"changed\n", 0o600)
        .bytes();
    let third = Layer::new()
        .file("var/cache/b", b"b")
        .whiteout("var/cache/.wh..wh..opq") // after a same-layer entry: b stays, a goes
        .whiteout("bin/.wh.cat")
        .whiteout(".wh.tmp")
        .symlink("tmp", "var/tmp")
        .file("tmp/through-relative-symlink", b"t")
        .pax(&[
            ("SCHILY.xattr.user.dir", b"d"),
            ("mtime", b"1600000000.123456789"),
        ])
        .dir("xattr-dir")
        .pax(&[
            ("mtime", b"1600000000.5"),
            ("uid", b"3000000"),
            ("gid", b"3000001"),
        ])
        .file("xattr-dir/pax-times", b"p")
        .hardlink("replaced-by-dir/hard", "bin/busybox")
        .file_mode("bin/busybox", b"new busybox", 0o755) // the old links keep the old content
        .bytes();
    differential("three-layers", vec![base_layer(), second, third]);
}

/// A tar of real host directories as GNU tar writes it (PAX with xattrs, then GNU format), as a second opinion
/// on what test code cannot think of. The host content varies by machine; both unpackers see the same bytes.
#[test]
fn root_differential_gnu_tar_of_host_directories() {
    let gnu_tar = |format: &str, dirs: &[&str]| -> Vec<u8> {
        let out = Command::new("tar")
            .args(["--create", "--numeric-owner", "--sort=name"])
            .args(if format == "pax" {
                &["--format=pax", "--xattrs", "--xattrs-include=*"][..]
            } else {
                &["--format=gnu"]
            })
            .args(["--directory", "/"])
            .args(dirs)
            .output()
            .expect("GNU tar");
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let first = gnu_tar(
        "pax",
        &[
            "usr/share/zoneinfo",
            "usr/share/doc/tar",
            "usr/share/doc/umoci",
            "usr/bin/umoci",
        ],
    );
    let second = gnu_tar(
        "gnu",
        &["usr/share/zoneinfo/Europe", "usr/share/common-licenses"],
    );
    differential("host-dirs", vec![first, second]);
}

// ---- magic links ---------------------------------------------------------------------------------------------

/// Env var telling the helper test it runs inside the private mount namespace with procfs at ROOT/proc.
const MAGIC_ROOT_ENV: &str = "MAN8S_TEST_MAGIC_ROOT";

/// An image's rootfs may have a real procfs mounted on it (a running machine); `/proc/self/root` and friends
/// are magic links to the *host* root and must never be followed. The layer is applied in a child process in
/// a private mount namespace with procfs mounted at ROOT/proc.
#[test]
fn root_magic_links_are_not_followed() {
    use std::os::unix::process::CommandExt;
    require_root();
    let s = Scratch::new();
    let root = s.root();
    fs::create_dir(root.join("proc")).unwrap();
    let proc_dir = root.join("proc");
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "magic_link_helper",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    child.env(MAGIC_ROOT_ENV, &root);
    // SAFETY: between fork and exec only async-signal-safe syscalls (unshare, mount) run.
    unsafe {
        child.pre_exec(move || {
            use nix::mount::{MsFlags, mount};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            mount(
                Some("proc"),
                &proc_dir,
                Some("proc"),
                MsFlags::empty(),
                None::<&str>,
            )?;
            Ok(())
        });
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helper failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "the helper ran:\n{stdout}");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "helper of root_magic_links_are_not_followed, run by it inside a private mount namespace"]
fn magic_link_helper() {
    let root = std::path::PathBuf::from(
        std::env::var_os(MAGIC_ROOT_ENV).expect("run by root_magic_links_are_not_followed"),
    );
    assert!(
        root.join("proc/self/root").exists(),
        "procfs is mounted in the root"
    );
    let marker = format!("man8s-magic-{}", std::process::id());
    let apply = |layer: Vec<u8>| {
        man8s_oci::unpack::apply_layer(&root, &mut layer.as_slice(), &Default::default())
    };
    for path in [
        format!("proc/self/root/tmp/{marker}"),
        format!("proc/1/root/tmp/{marker}"),
        format!("proc/self/cwd/{marker}"),
    ] {
        let err = apply(Layer::new().file(&path, b"evil").bytes()).unwrap_err();
        assert!(err.to_string().contains(&path), "{err}");
    }
    apply(Layer::new().symlink("escape", "/proc/self/root").bytes()).unwrap();
    let err = apply(
        Layer::new()
            .file(&format!("escape/tmp/{marker}"), b"evil")
            .bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("escape/tmp"), "{err}");
    let err = apply(
        Layer::new()
            .hardlink("h", "proc/self/root/etc/passwd")
            .bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"h\""), "{err}");
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "written through a magic link to the host"
    );
    assert!(!std::env::current_dir().unwrap().join(&marker).exists());
}

#[test]
fn root_differential_dot_prefixed_names_and_root_entry() {
    // What `tar -C rootfs .` writes: a `./` entry for the root itself and `./`-prefixed names.
    let first = Layer::new()
        .dir_mode("./", 0o750)
        .dir("./etc")
        .file("./etc/os-release", b"ID=test\n")
        .symlink("./etc/localtime", "/usr/share/zoneinfo/UTC")
        .bytes();
    let second = Layer::new()
        .dir_mode("./", 0o711)
        .whiteout("./etc/.wh.os-release")
        .file("./etc/hostname", b"h\n")
        .bytes();
    differential("dot-prefixed", vec![first, second]);
}

// ---- unprivileged ----------------------------------------------------------------------------------------------

/// Env var telling `unprivileged_helper` it runs as nobody.
const UNPRIVILEGED_ENV: &str = "MAN8S_TEST_UNPRIVILEGED";

/// The tiers run as root in CI, so the unprivileged paths (no chown, devices refused, read-only lower
/// directories opened up, privileged xattrs skipped) are exercised here in a child dropped to nobody.
#[test]
fn root_unprivileged_unpack() {
    use std::os::unix::process::CommandExt;
    require_root();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "unprivileged_helper",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    child.env(UNPRIVILEGED_ENV, "1").env("TMPDIR", "/tmp");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        child.pre_exec(|| {
            nix::unistd::setgroups(&[])?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(65534))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))?;
            Ok(())
        });
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helper failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "the helper ran:\n{stdout}");
}

#[test]
#[ignore = "helper of root_unprivileged_unpack, run by it as nobody"]
fn unprivileged_helper() {
    assert!(
        std::env::var_os(UNPRIVILEGED_ENV).is_some(),
        "run by root_unprivileged_unpack"
    );
    assert!(!nix::unistd::geteuid().is_root());
    let opts = man8s_oci::unpack::UnpackOptions::default();
    assert!(
        !opts.preserve_ownership && !opts.create_devices,
        "defaults follow the euid"
    );
    let s = Scratch::new();
    let lower = Layer::new()
        .file_owned("owned", b"o", 0o4755, 1234, 5678)
        .dir_mode("ro", 0o555)
        .file("ro/old", b"o")
        .dir_mode("ro/locked", 0o500)
        .file("ro/locked/f", b"f")
        .dir_mode("ro/gone", 0o500)
        .dir_mode("ro/gone/deeper", 0o500)
        .file("ro/gone/deeper/f", b"f")
        .bytes();
    s.apply(lower).unwrap();
    let meta = fs::metadata(s.root().join("owned")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "owned by the caller"
    );
    assert_eq!(
        mode(&s.root().join("owned")),
        0o4755,
        "setuid kept on our own file"
    );
    let upper = Layer::new()
        .whiteout("ro/.wh.old")
        .file("ro/new", b"n")
        .file("ro/locked/g", b"g")
        .whiteout("ro/.wh.gone") // read-only directories inside a read-only directory
        .pax(&[
            ("SCHILY.xattr.security.capability", &CAP_NET_RAW_V2),
            ("SCHILY.xattr.user.ok", b"1"),
        ])
        .file("cap", b"c")
        .bytes();
    let stats = s.apply(upper).unwrap();
    assert_eq!(
        stats.xattrs_skipped, 1,
        "security.capability needs privilege"
    );
    assert_eq!(
        get_xattr(&s.root().join("cap"), "user.ok").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        unpack_support::listing(&s.root()),
        [
            "cap",
            "owned",
            "ro",
            "ro/locked",
            "ro/locked/f",
            "ro/locked/g",
            "ro/new"
        ]
    );
    assert_eq!(mode(&s.root().join("ro")), 0o555);
    assert_eq!(mode(&s.root().join("ro/locked")), 0o500);
    let err = s
        .apply(
            Layer::new()
                .device("dev/null", tar::EntryType::Char, 1, 3)
                .bytes(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("device"), "{err}");
    s.assert_outside_untouched();
}
