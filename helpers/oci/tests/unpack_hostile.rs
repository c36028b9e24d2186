//! The hostile corpus: each layer is refused with an error naming the entry, and nothing appears or changes
//! outside the root (the scratch dir holds canaries beside and above the root). Unit tier.

mod unpack_support;

use std::fs;

use man8s_oci::unpack::UnpackError;
use unpack_support::{Layer, Scratch, listing};

/// Applies `layers` in order; the last must be refused naming `entry` with a reason containing `why`.
fn assert_refused(layers: Vec<Vec<u8>>, entry: &str, why: &str) -> Scratch {
    let s = Scratch::new();
    let (last, lower) = layers.split_last().unwrap();
    for layer in lower {
        s.apply(layer.clone()).unwrap();
    }
    let err = s.apply(last.clone()).unwrap_err();
    match &err {
        UnpackError::Refused { path, reason } => {
            assert_eq!(path, entry, "{err}");
            assert!(reason.contains(why), "expected {why:?} in: {err}");
        }
        UnpackError::MissingLinkTarget { path, .. } => {
            assert_eq!(path, entry, "{err}");
            assert!(err.to_string().contains(why), "expected {why:?} in: {err}");
        }
        other => panic!("expected a refusal of {entry:?}, got: {other}"),
    }
    assert!(
        err.to_string().contains(&format!("{entry:?}")),
        "the message names the entry: {err}"
    );
    s.assert_outside_untouched();
    s
}

#[test]
fn dotdot_paths() {
    assert_refused(
        vec![Layer::new().file("../outside/evil", b"x").bytes()],
        "../outside/evil",
        "`..`",
    );
    assert_refused(
        vec![Layer::new().file("a/../../../outside/evil", b"x").bytes()],
        "a/../../../outside/evil",
        "`..`",
    );
    assert_refused(vec![Layer::new().dir("../../x").bytes()], "../../x", "`..`");
    assert_refused(vec![Layer::new().symlink("..", "/").bytes()], "..", "`..`");
}

#[test]
fn absolute_paths() {
    let s = Scratch::new();
    let target = format!("{}/outside/evil", s.path().display());
    let err = s
        .apply(Layer::new().file(&target, b"x").bytes())
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::Refused { path, reason } if *path == target && reason.contains("absolute"))
    );
    s.assert_outside_untouched();
    assert_refused(
        vec![Layer::new().file("/etc/evil-man8s-test", b"x").bytes()],
        "/etc/evil-man8s-test",
        "absolute",
    );
    assert!(!std::path::Path::new("/etc/evil-man8s-test").exists());
}

#[test]
fn long_pax_name_with_dotdot() {
    let name = format!("{}/../../../../outside/evil", "a".repeat(150));
    assert_refused(vec![Layer::new().file(&name, b"x").bytes()], &name, "`..`");
}

#[test]
fn nul_in_pax_path() {
    // A C-string truncation at the NUL would read "ok"; the bytes after it must not be dropped silently.
    let name = "ok\0/../../outside/evil";
    assert_refused(vec![Layer::new().file(name, b"x").bytes()], name, "NUL");
}

#[test]
fn entries_naming_the_root() {
    assert_refused(vec![Layer::new().file(".", b"x").bytes()], ".", "root");
    assert_refused(
        vec![Layer::new().symlink("./", "/etc").bytes()],
        "./",
        "root",
    );
    assert_refused(vec![Layer::new().hardlink(".", "a").bytes()], ".", "root");
}

#[test]
fn whiteouts_naming_dotdot_dot_or_absolute() {
    assert_refused(
        vec![Layer::new().whiteout(".wh...").bytes()],
        ".wh...",
        "`..`",
    );
    assert_refused(
        vec![Layer::new().whiteout("a/.wh..").bytes()],
        "a/.wh..",
        "`.`",
    );
    assert_refused(
        vec![Layer::new().whiteout("a/.wh.").bytes()],
        "a/.wh.",
        "nothing",
    );
    assert_refused(
        vec![Layer::new().whiteout("../.wh.outside").bytes()],
        "../.wh.outside",
        "`..`",
    );
    assert_refused(
        vec![Layer::new().whiteout("/.wh.tmp").bytes()],
        "/.wh.tmp",
        "absolute",
    );
    assert_refused(
        vec![Layer::new().whiteout("/.wh..wh..opq").bytes()],
        "/.wh..wh..opq",
        "absolute",
    );
}

#[test]
fn whiteout_through_symlink_to_outside_deletes_only_inside() {
    // `up -> ..` resolves to the root itself inside the root; whiting out up/canary must not touch ROOT/../canary.
    let s = Scratch::new();
    s.apply(
        Layer::new()
            .symlink("up", "..")
            .symlink("abs", "/..")
            .file("canary", b"inner")
            .bytes(),
    )
    .unwrap();
    s.apply(
        Layer::new()
            .whiteout("up/.wh.canary")
            .whiteout("abs/.wh.outside")
            .whiteout("up/.wh..wh..opq")
            .bytes(),
    )
    .unwrap();
    assert_eq!(
        listing(&s.root()),
        Vec::<String>::new(),
        "the opaque marker through `up` empties the root only"
    );
    s.assert_outside_untouched();
}

#[test]
fn symlink_then_write_stays_inside() {
    // Container semantics: the symlink is followed as if the root were `/`, so these land inside the root.
    let s = Scratch::new();
    let abs = format!("{}/outside", s.path().display());
    s.apply(
        Layer::new()
            .symlink("rel", "../../outside")
            .symlink("abs", &abs)
            .symlink("dot", "/../../..")
            .bytes(),
    )
    .unwrap();
    s.apply(
        Layer::new()
            .file("rel/secret", b"evil")
            .file("abs/secret", b"evil")
            .file("dot/outside/secret", b"evil")
            .bytes(),
    )
    .unwrap();
    s.assert_outside_untouched();
    assert_eq!(fs::read(s.root().join("outside/secret")).unwrap(), b"evil");
    assert_eq!(
        fs::read(s.root().join(abs.trim_start_matches('/')).join("secret")).unwrap(),
        b"evil"
    );
}

#[test]
fn symlink_replaced_by_file_is_not_followed() {
    // An existing symlink at the entry's own name is replaced, never written through.
    let s = Scratch::new();
    let abs = format!("{}/outside/secret", s.path().display());
    s.apply(
        Layer::new()
            .symlink("f", "../../outside/secret")
            .symlink("g", &abs)
            .bytes(),
    )
    .unwrap();
    s.apply(Layer::new().file("f", b"evil").file("g", b"evil").bytes())
        .unwrap();
    s.assert_outside_untouched();
    assert_eq!(fs::read(s.root().join("f")).unwrap(), b"evil");
    assert!(fs::symlink_metadata(s.root().join("g")).unwrap().is_file());
}

#[test]
fn hardlinks_to_outside() {
    assert_refused(
        vec![Layer::new().hardlink("h", "../outside/secret").bytes()],
        "h",
        "`..`",
    );
    let s = Scratch::new();
    let abs = format!("{}/outside/secret", s.path().display());
    assert_refused(
        vec![Layer::new().hardlink("h", &abs).bytes()],
        "h",
        "absolute",
    );
    // Through a symlink that points outside: resolved inside the root, where the target does not exist.
    assert_refused(
        vec![
            Layer::new()
                .symlink("esc", "../../outside")
                .hardlink("h", "esc/secret")
                .bytes(),
        ],
        "h",
        "does not exist inside the root",
    );
    assert_refused(
        vec![
            Layer::new()
                .symlink("esc", &format!("{}/outside", s.path().display()))
                .hardlink("h", "esc/secret")
                .bytes(),
        ],
        "h",
        "does not exist inside the root",
    );
}

#[test]
fn hardlink_to_a_symlink_that_points_outside() {
    assert_refused(
        vec![
            Layer::new()
                .symlink("bad", "../../outside/secret")
                .hardlink("h", "bad")
                .bytes(),
        ],
        "h",
        "symlink pointing outside",
    );
}

#[test]
fn hardlink_to_a_directory_or_missing_target() {
    assert_refused(
        vec![Layer::new().dir("d").hardlink("h", "d").bytes()],
        "h",
        "directory",
    );
    // Its own variant: the layer store falls back to a full copy on it (a link into a lower layer).
    let s = Scratch::new();
    let err = s
        .apply(Layer::new().hardlink("h", "nothing").bytes())
        .unwrap_err();
    match &err {
        UnpackError::MissingLinkTarget { path, target } => {
            assert_eq!((path.as_str(), target.as_str()), ("h", "nothing"))
        }
        other => panic!("expected a missing link target, got: {other}"),
    }
    assert_eq!(
        err.to_string(),
        "layer entry \"h\" refused: hard link target \"nothing\" does not exist inside the root"
    );
    s.assert_outside_untouched();
}

#[test]
fn huge_declared_size() {
    // A header claiming 1 PiB: refused before a byte is written, not a disk-filling attempt.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(1 << 50);
    header.as_old_mut().name[..3].copy_from_slice(b"big");
    header.set_cksum();
    let mut layer = header.as_bytes().to_vec();
    layer.extend_from_slice(&[0u8; 4096]);
    let s = assert_refused(vec![layer], "big", "exceeds the limit");
    assert!(!s.root().join("big").exists());
}

#[test]
fn garbage_is_a_tar_error() {
    let s = Scratch::new();
    let err = s.apply(vec![0x55; 2048]).unwrap_err();
    assert!(matches!(err, UnpackError::Tar { after: None, .. }), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn huge_long_name_is_refused_before_it_is_buffered() {
    // A GNU long-name entry declaring 1 TiB: the tar crate would read it whole into memory.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_mode(0o644);
    header.set_size(1 << 40);
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_cksum();
    let mut layer = Layer::new().file("first", b"ok").bytes();
    layer.truncate(layer.len() - 1024);
    layer.extend_from_slice(header.as_bytes());
    layer.extend(std::iter::repeat_n(b'n', 3 << 20));
    let s = Scratch::new();
    let err = s.apply(layer).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Tar { after: Some(p), .. } if p == "first"),
        "{err}"
    );
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn metadata_of_entries_replacing_symlinks_to_outside_stays_inside() {
    // A directory, fifo or file entry at the name of a symlink to outside replaces the symlink: the mode,
    // owner, xattrs and times of the entry must not land on the symlink's target.
    let s = Scratch::new();
    let outside = format!("{}/outside", s.path().display());
    let secret = format!("{outside}/secret");
    s.apply(
        Layer::new()
            .symlink("d", &outside)
            .symlink("rel", "../../outside")
            .symlink("f", &secret)
            .symlink("p", &secret)
            .bytes(),
    )
    .unwrap();
    let layer = Layer::new()
        .pax(&[("SCHILY.xattr.user.evil", b"1")])
        .dir_mode("d", 0o700)
        .dir_mode("rel", 0o777)
        .pax(&[("SCHILY.xattr.user.evil", b"1")])
        .file_mode("f", b"x", 0o777)
        .fifo("p", 0o777)
        .bytes();
    s.apply(layer).unwrap();
    s.assert_outside_untouched();
    assert_eq!(
        unpack_support::get_xattr(&s.path().join("outside"), "user.evil"),
        None
    );
    assert!(s.root().join("d").is_dir() && !s.root().join("d").is_symlink());
}

#[test]
fn error_messages_are_one_readable_line() {
    let s = Scratch::new();
    let err = s
        .apply(Layer::new().file("../x", b"x").bytes())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"layer entry "../x" refused: path has a `..` component"#
    );
    let mut layer = Layer::new()
        .file("ok", b"ok")
        .file("big", &[1; 2048])
        .bytes();
    layer.truncate(3 * 512 + 100);
    let err = s.apply(layer).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"reading layer tar stream after entry "big": file content ends after 100 of 2048 bytes"#
    );
    let err = s.apply(vec![0x55; 1024]).unwrap_err().to_string();
    assert!(err.starts_with("reading layer tar stream: "), "{err}");
    assert!(!err.contains('\n'), "{err}");
}
