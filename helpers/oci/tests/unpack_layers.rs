//! Benign layers applied onto a temp root: whiteouts, opaque dirs, replacement, symlinks written through,
//! hard links, long names, xattrs, modes and mtimes. Unit tier: runs unprivileged (ownership is a root test).

// unsafe: umask in pre_exec.
#![allow(unsafe_code)]

mod unpack_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use man8s_oci::unpack::{UnpackError, UnpackOptions};
use unpack_support::{Layer, MTIME, Scratch, get_xattr, listing, mode};

#[test]
fn files_dirs_and_stats() {
    let s = Scratch::new();
    let stats = s
        .apply(
            Layer::new()
                .dir("etc")
                .file("etc/hostname", b"box\n")
                .file("./usr/bin/tool", b"#!/bin/sh\n")
                .bytes(),
        )
        .unwrap();
    assert_eq!(fs::read(s.root().join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(
        fs::read(s.root().join("usr/bin/tool")).unwrap(),
        b"#!/bin/sh\n",
        "missing parents are created"
    );
    assert_eq!(mode(&s.root().join("usr/bin")), 0o755);
    assert_eq!((stats.entries, stats.bytes, stats.whiteouts), (3, 14, 0));
    s.assert_outside_untouched();
}

#[test]
fn whiteouts_delete_lower_layer_content() {
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .file("a/x", b"x")
            .file("a/y", b"y")
            .file("b/z", b"z")
            .file("keep", b"k")
            .bytes(),
    )
    .unwrap();
    let stats = s.apply(
        Layer::new()
            .whiteout("a/.wh.x")
            .whiteout(".wh.b")
            .whiteout("a/.wh.never-existed")
            .bytes(),
    );
    assert_eq!(stats.unwrap().whiteouts, 3);
    assert_eq!(listing(&s.root()), ["a", "a/y", "keep"]);
}

#[test]
fn whiteout_does_not_delete_entries_of_its_own_layer() {
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .file("x", b"lower")
            .file("d/old", b"lower")
            .bytes(),
    )
    .unwrap();
    // Same-layer entries survive whatever the order of the whiteout.
    s.apply(
        Layer::new()
            .file("x", b"upper")
            .whiteout(".wh.x")
            .dir("d")
            .file("d/new", b"n")
            .whiteout(".wh.d")
            .bytes(),
    )
    .unwrap();
    assert_eq!(fs::read(s.root().join("x")).unwrap(), b"upper");
    assert_eq!(listing(&s.root()), ["d", "d/new", "d/old", "x"]);
}

#[test]
fn opaque_directory_hides_lower_content_but_keeps_its_own_layer() {
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .file("d/old", b"o")
            .file("d/sub/old2", b"o")
            .file("d/keepdir/old3", b"o")
            .file("e/f", b"f")
            .bytes(),
    )
    .unwrap();
    let layer = Layer::new()
        .file("d/before", b"b") // before the marker: stays
        .dir("d/sub") // a lower dir re-declared by this layer: kept, but emptied of lower content
        .whiteout("d/.wh..wh..opq")
        .file("d/after", b"a")
        .bytes();
    s.apply(layer).unwrap();
    assert_eq!(
        listing(&s.root()),
        ["d", "d/after", "d/before", "d/sub", "e", "e/f"]
    );
}

#[test]
fn opaque_marker_in_root_and_for_missing_dir() {
    let s = Scratch::new();
    s.apply(Layer::new().file("a", b"a").file("b/c", b"c").bytes())
        .unwrap();
    s.apply(
        Layer::new()
            .file("b/new", b"n")
            .whiteout(".wh..wh..opq")
            .whiteout("nodir/.wh..wh..opq")
            .bytes(),
    )
    .unwrap();
    assert_eq!(listing(&s.root()), ["b", "b/new"]);
}

#[test]
fn file_replaces_dir_and_dir_replaces_file() {
    let s = Scratch::new();
    s.apply(Layer::new().file("p/child", b"c").file("q", b"q").bytes())
        .unwrap();
    s.apply(
        Layer::new()
            .file("p", b"now a file")
            .dir("q")
            .file("q/inside", b"i")
            .bytes(),
    )
    .unwrap();
    assert_eq!(fs::read(s.root().join("p")).unwrap(), b"now a file");
    assert!(s.root().join("q").is_dir());
    assert_eq!(listing(&s.root()), ["p", "q", "q/inside"]);
    // And back, in one layer, with a symlink replacing a directory too.
    s.apply(Layer::new().dir("p").symlink("q", "p").bytes())
        .unwrap();
    assert!(s.root().join("p").is_dir());
    assert_eq!(
        fs::read_link(s.root().join("q")).unwrap(),
        std::path::Path::new("p")
    );
}

#[test]
fn absolute_symlinks_are_written_through_inside_the_root() {
    let s = Scratch::new();
    // Debian: var/run -> /run. Writing var/run/x must land in ROOT/run/x, not the host's /run.
    s.apply(
        Layer::new()
            .dir("run")
            .dir("var")
            .symlink("var/run", "/run")
            .bytes(),
    )
    .unwrap();
    s.apply(Layer::new().file("var/run/x.pid", b"1").bytes())
        .unwrap();
    assert_eq!(fs::read(s.root().join("run/x.pid")).unwrap(), b"1");
    assert!(
        fs::symlink_metadata(s.root().join("var/run"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!std::path::Path::new("/run/x.pid").exists());
}

#[test]
fn dangling_absolute_symlink_gets_its_target_created_inside_the_root() {
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .symlink("var/lock", "/run/lock")
            .symlink("lib", "usr/lib")
            .bytes(),
    )
    .unwrap();
    s.apply(
        Layer::new()
            .file("var/lock/l", b"l")
            .file("lib/libz.so", b"z")
            .bytes(),
    )
    .unwrap();
    assert_eq!(fs::read(s.root().join("run/lock/l")).unwrap(), b"l");
    assert_eq!(fs::read(s.root().join("usr/lib/libz.so")).unwrap(), b"z");
    s.assert_outside_untouched();
}

#[test]
fn hardlinks_share_the_inode_within_and_across_layers() {
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .file_mode("bin/a", b"binary", 0o755)
            .hardlink("bin/b", "bin/a")
            .bytes(),
    )
    .unwrap();
    s.apply(Layer::new().hardlink("bin/c", "./bin/a").bytes())
        .unwrap();
    let ino = |p: &str| fs::metadata(s.root().join(p)).unwrap().ino();
    assert_eq!(ino("bin/a"), ino("bin/b"));
    assert_eq!(ino("bin/a"), ino("bin/c"));
    assert_eq!(fs::metadata(s.root().join("bin/a")).unwrap().nlink(), 3);
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .symlink("sh", "/bin/bash")
            .hardlink("sh2", "sh")
            .bytes(),
    )
    .unwrap();
    assert_eq!(
        fs::read_link(s.root().join("sh2")).unwrap(),
        std::path::Path::new("/bin/bash")
    );
}

#[test]
fn long_names_and_long_link_targets() {
    let s = Scratch::new();
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(200));
    let long_target = format!("/{}", "t".repeat(300));
    let mut gnu = tar::Builder::new(Vec::new());
    // The tar crate writes GNU long-name entries for these.
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    gnu.append_data(
        &mut header,
        format!("gnu/{}", "g".repeat(150)),
        &b"gnu!"[..],
    )
    .unwrap();
    let mut layer = gnu.into_inner().unwrap();
    layer.truncate(layer.len() - 1024); // drop the end-of-archive blocks, append the PAX-named entries
    layer.extend(
        Layer::new()
            .file(&long_file, b"long")
            .symlink(&format!("{long_dir}/link"), &long_target)
            .hardlink("hl", &long_file)
            .bytes(),
    );
    s.apply(layer).unwrap();
    assert_eq!(fs::read(s.root().join(&long_file)).unwrap(), b"long");
    assert_eq!(
        fs::read(s.root().join(format!("gnu/{}", "g".repeat(150)))).unwrap(),
        b"gnu!"
    );
    assert_eq!(
        fs::read_link(s.root().join(format!("{long_dir}/link")))
            .unwrap()
            .to_str()
            .unwrap(),
        long_target
    );
    assert_eq!(fs::read(s.root().join("hl")).unwrap(), b"long");
}

#[test]
fn user_xattrs_on_files_and_dirs() {
    let s = Scratch::new();
    let layer = Layer::new()
        .pax(&[("SCHILY.xattr.user.dir", b"d1")])
        .dir("d")
        .pax(&[
            ("SCHILY.xattr.user.one", b"1"),
            ("SCHILY.xattr.user.bin", b"\x00\xff\x00"),
        ])
        .file("d/f", b"data")
        .bytes();
    s.apply(layer).unwrap();
    assert_eq!(
        get_xattr(&s.root().join("d"), "user.dir").as_deref(),
        Some(&b"d1"[..])
    );
    assert_eq!(
        get_xattr(&s.root().join("d/f"), "user.one").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        get_xattr(&s.root().join("d/f"), "user.bin").as_deref(),
        Some(&b"\x00\xff\x00"[..])
    );
    assert_eq!(get_xattr(&s.root().join("d/f"), "user.missing"), None);
}

#[test]
fn modes_with_setuid_setgid_sticky() {
    let s = Scratch::new();
    let layer = Layer::new()
        .file_mode("bin/su", b"su", 0o4755)
        .dir_mode("srv", 0o2775)
        .dir_mode("tmp", 0o1777)
        .file_mode("secret", b"s", 0o000)
        .dir_mode("ro", 0o555)
        .file("ro/inside", b"written before the dir turned read-only")
        .fifo("fifo", 0o620)
        .bytes();
    s.apply(layer).unwrap();
    assert_eq!(mode(&s.root().join("bin/su")), 0o4755);
    assert_eq!(mode(&s.root().join("srv")), 0o2775);
    assert_eq!(mode(&s.root().join("tmp")), 0o1777);
    assert_eq!(mode(&s.root().join("secret")), 0o000);
    assert_eq!(mode(&s.root().join("ro")), 0o555);
    assert_eq!(mode(&s.root().join("fifo")), 0o620);
    assert!(
        fs::symlink_metadata(s.root().join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn mtimes_of_files_symlinks_and_dirs() {
    let s = Scratch::new();
    let layer = Layer::new()
        .dir("d")
        .file("d/f", b"f") // creating this would bump d's mtime: dir times are set at the end
        .symlink("d/l", "f")
        .pax(&[("mtime", b"1600000000.25")])
        .file("nanos", b"n")
        .bytes();
    s.apply(layer).unwrap();
    let meta = |p: &str| fs::symlink_metadata(s.root().join(p)).unwrap();
    assert_eq!(meta("d").mtime() as u64, MTIME);
    assert_eq!(meta("d/f").mtime() as u64, MTIME);
    assert_eq!(meta("d/l").mtime() as u64, MTIME);
    assert_eq!(
        (meta("nanos").mtime(), meta("nanos").mtime_nsec()),
        (1_600_000_000, 250_000_000)
    );
}

#[test]
fn root_entry_sets_the_roots_own_mode() {
    let s = Scratch::new();
    s.apply(Layer::new().dir_mode("./", 0o751).file("./a", b"a").bytes())
        .unwrap();
    assert_eq!(mode(&s.root()), 0o751);
    assert_eq!(listing(&s.root()), ["a"]);
}

#[test]
fn devices_are_refused_when_device_creation_is_off() {
    let s = Scratch::new();
    let opts = UnpackOptions {
        create_devices: false,
        ..UnpackOptions::default()
    };
    let err = s
        .apply_with(
            Layer::new()
                .device("dev/null", tar::EntryType::Char, 1, 3)
                .bytes(),
            &opts,
        )
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::Refused { path, .. } if path == "dev/null"),
        "{err}"
    );
    assert!(err.to_string().contains("device"), "{err}");
    assert!(!s.root().join("dev/null").exists());
}

#[test]
fn truncated_stream_is_an_error_naming_the_entry() {
    let s = Scratch::new();
    let mut layer = Layer::new().file("big", &[7u8; 10_000]).bytes();
    layer.truncate(512 + 4096);
    let err = s.apply(layer).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Tar { after: Some(p), .. } if p == "big"),
        "{err}"
    );
}

#[test]
fn files_bigger_than_the_limit_are_refused_before_writing() {
    let s = Scratch::new();
    let opts = UnpackOptions {
        max_file_size: 100,
        ..UnpackOptions::default()
    };
    let err = s
        .apply_with(Layer::new().file("f", &[1u8; 101]).bytes(), &opts)
        .unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    assert!(!s.root().join("f").exists());
}

#[test]
fn missing_root_is_a_clear_error() {
    let s = Scratch::new();
    let err = man8s_oci::unpack::apply_layer(
        &s.path().join("nope"),
        &mut Layer::new().bytes().as_slice(),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Root { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn the_stream_is_read_to_its_end() {
    // A digest computed around the reader (the diff_id check) must see the padding after the archive too.
    let s = Scratch::new();
    let mut layer = Layer::new().file("a", b"a").bytes();
    layer.extend_from_slice(&[0; 8192]);
    let mut reader = layer.as_slice();
    man8s_oci::unpack::apply_layer(&s.root(), &mut reader, &UnpackOptions::default()).unwrap();
    assert!(reader.is_empty(), "{} bytes left unread", reader.len());
}

#[test]
fn deep_paths_without_directory_entries() {
    // node_modules trees get deep; missing parents are created whatever the depth.
    let s = Scratch::new();
    let deep = vec!["n"; 100].join("/") + "/leaf";
    s.apply(Layer::new().file(&deep, b"leaf").bytes()).unwrap();
    assert_eq!(fs::read(s.root().join(&deep)).unwrap(), b"leaf");
}

#[test]
fn symlink_loops_are_an_error_not_a_hang() {
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .symlink("a", "b")
            .symlink("b", "a")
            .symlink("c", "/c/x")
            .bytes(),
    )
    .unwrap();
    let err = s.apply(Layer::new().file("a/f", b"x").bytes()).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Io { path, .. } if path == "a/f"),
        "{err}"
    );
    let err = s.apply(Layer::new().file("c/f", b"x").bytes()).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Io { path, .. } if path == "c/f"),
        "{err}"
    );
    s.assert_outside_untouched();
}

/// A sparse file (data, a 8 MiB hole, data) archived by GNU tar in the given format.
fn sparse_tar(format: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    let file = fs::File::create(src.join("sparse")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"head", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"tail", 8 << 20).unwrap();
    let out = std::process::Command::new("tar")
        .args(["--create", "--sparse", "--numeric-owner"])
        .arg(format!("--format={format}"))
        .arg("--directory")
        .arg(src)
        .arg("sparse")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn gnu_sparse_files_are_expanded() {
    let s = Scratch::new();
    let layer = sparse_tar("gnu");
    assert!(layer.len() < 1 << 20, "GNU tar wrote it sparse");
    s.apply(layer).unwrap();
    let content = fs::read(s.root().join("sparse")).unwrap();
    assert_eq!(content.len(), (8 << 20) + 4);
    assert_eq!(
        (&content[..4], &content[8 << 20..]),
        (&b"head"[..], &b"tail"[..])
    );
    assert!(content[4..8 << 20].iter().all(|&b| b == 0));
}

/// Issue 10 case 7: a tiny layer whose GNU sparse entry expands to megabytes counts by its full
/// size against the image's unpacked-size budget, and is refused before anything is written.
#[test]
fn sparse_files_count_by_their_real_size_against_the_unpacked_limit() {
    let s = Scratch::new();
    let layer = sparse_tar("gnu");
    assert!(layer.len() < 1 << 20);
    let opts = UnpackOptions {
        max_total_size: 1 << 20,
        ..UnpackOptions::default()
    };
    let err = s.apply_with(layer.clone(), &opts).unwrap_err().to_string();
    assert!(
        err.contains("unpacked size limit")
            && err.contains("MaxUnpackedSize=")
            && !err.contains('\n'),
        "{err}"
    );
    assert!(!s.root().join("sparse").exists());
    s.assert_outside_untouched();
    // With room for it, the same layer unpacks.
    let opts = UnpackOptions {
        max_total_size: 9 << 20,
        ..UnpackOptions::default()
    };
    assert_eq!(s.apply_with(layer, &opts).unwrap().bytes, (8 << 20) + 4);
}

#[test]
fn pax_sparse_files_are_refused_not_written_wrong() {
    let s = Scratch::new();
    let err = s.apply(sparse_tar("pax")).unwrap_err();
    assert!(err.to_string().contains("PAX sparse"), "{err}");
    assert_eq!(listing(&s.root()), Vec::<String>::new());
    s.assert_outside_untouched();
}

#[test]
fn read_only_lower_directories_can_be_changed_and_keep_their_mode() {
    // Root ignores permissions; unprivileged, the unpacker opens the directory up for the layer and restores it.
    let s = Scratch::new();
    let lower = Layer::new()
        .dir_mode("ro", 0o555)
        .file("ro/old", b"o")
        .dir_mode("ro/sub", 0o500)
        .file("ro/sub/deep", b"d")
        .dir_mode("gone", 0o555)
        .dir_mode("gone/inner", 0o500)
        .file("gone/inner/f", b"f")
        .dir_mode("opq", 0o555)
        .file("opq/old", b"o")
        .bytes();
    s.apply(lower).unwrap();
    let upper = Layer::new()
        .file("ro/new", b"n")
        .whiteout("ro/.wh.old")
        .whiteout(".wh.gone")
        .whiteout("opq/.wh..wh..opq")
        .file("ro/sub/more", b"m")
        .bytes();
    s.apply(upper).unwrap();
    assert_eq!(
        listing(&s.root()),
        [
            "opq",
            "ro",
            "ro/new",
            "ro/sub",
            "ro/sub/deep",
            "ro/sub/more"
        ]
    );
    assert_eq!(mode(&s.root().join("ro")), 0o555);
    assert_eq!(mode(&s.root().join("ro/sub")), 0o500);
    assert_eq!(mode(&s.root().join("opq")), 0o555);
}

#[test]
fn xattrs_linux_cannot_set_are_skipped_and_counted() {
    // user.* on a symlink or fifo is never allowed by Linux; the layer still applies.
    let s = Scratch::new();
    let layer = Layer::new()
        .pax(&[("SCHILY.xattr.user.on-link", b"x")])
        .symlink("link", "target")
        .pax(&[("SCHILY.xattr.user.on-fifo", b"x")])
        .fifo("fifo", 0o644)
        .pax(&[("SCHILY.xattr.user.kept", b"k")])
        .file("f", b"f")
        .bytes();
    let stats = s.apply(layer).unwrap();
    assert_eq!(stats.xattrs_skipped, 2);
    assert_eq!(
        get_xattr(&s.root().join("f"), "user.kept").as_deref(),
        Some(&b"k"[..])
    );
}

#[test]
fn privileged_xattrs_are_set_as_root_and_skipped_otherwise() {
    let s = Scratch::new();
    let layer = Layer::new()
        .pax(&[("SCHILY.xattr.trusted.overlay.x", b"t")])
        .file("f", b"f")
        .bytes();
    let stats = s.apply(layer).unwrap();
    let value = get_xattr(&s.root().join("f"), "trusted.overlay.x");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            (stats.xattrs_skipped, value.as_deref()),
            (0, Some(&b"t"[..]))
        );
    } else {
        assert_eq!((stats.xattrs_skipped, value), (1, None));
    }
}

#[test]
fn lower_directories_changed_without_an_entry_keep_their_mtime() {
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .dir("etc")
            .file("etc/a", b"a")
            .dir("var")
            .file("var/b", b"b")
            .bytes(),
    )
    .unwrap();
    s.apply(
        Layer::new()
            .file("etc/new", b"n")
            .whiteout("var/.wh.b")
            .bytes(),
    )
    .unwrap();
    let mtime = |p: &str| fs::metadata(s.root().join(p)).unwrap().mtime() as u64;
    assert_eq!((mtime("etc"), mtime("var")), (MTIME, MTIME));
}

#[test]
fn replacing_a_directory_mid_layer_redirects_later_entries() {
    // Consecutive entries share a cached parent directory; replacing that directory must not leave later
    // entries in the removed one.
    let s = Scratch::new();
    let layer = Layer::new()
        .file("d/f1", b"1")
        .symlink("d", "e") // replaces the directory d (and f1) by a symlink
        .file("d/f2", b"2") // so this goes to e/f2
        .file("g/h/x", b"x")
        .file("g", b"now a file")
        .dir("g")
        .file("g/y", b"y")
        .bytes();
    s.apply(layer).unwrap();
    assert_eq!(listing(&s.root()), ["d", "e", "e/f2", "g", "g/y"]);

    // The same through a symlink: the cached `sym` is `real`, which a whiteout then deletes.
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .dir("real")
            .file("real/old", b"o")
            .symlink("sym", "real")
            .bytes(),
    )
    .unwrap();
    s.apply(
        Layer::new()
            .file("sym/f1", b"1")
            .whiteout(".wh.real")
            .file("sym/f2", b"2")
            .bytes(),
    )
    .unwrap();
    assert_eq!(listing(&s.root()), ["real", "real/f2", "sym"]);
}

/// Env var telling `umask_helper` it runs in a child with umask 077.
const UMASK_ENV: &str = "MAN8S_TEST_UMASK_077";

#[test]
fn implicit_directories_are_0755_whatever_the_umask() {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "umask_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(UMASK_ENV, "1");
    // SAFETY: umask is async-signal-safe.
    unsafe {
        child.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
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
#[ignore = "helper of implicit_directories_are_0755_whatever_the_umask, run by it with umask 077"]
fn umask_helper() {
    assert!(
        std::env::var_os(UMASK_ENV).is_some(),
        "run by implicit_directories_are_0755_whatever_the_umask"
    );
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .file("usr/lib/x/file", b"f")
            .symlink("var/run", "/run")
            .bytes(),
    )
    .unwrap();
    s.apply(Layer::new().file("var/run/pid", b"1").bytes())
        .unwrap();
    for dir in ["usr", "usr/lib", "usr/lib/x", "var", "run"] {
        assert_eq!(mode(&s.root().join(dir)), 0o755, "{dir}");
    }
    assert_eq!(mode(&s.root().join("usr/lib/x/file")), 0o644);
}
