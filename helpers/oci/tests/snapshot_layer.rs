//! Root tier: snapshots of a layered machine's writable layer (the `rw` part: overlayfs upper
//! and work dirs) keep what overlayfs reads there: whiteouts (character devices 0/0), the
//! `trusted.overlay.opaque` xattr, owners, modes (setuid too), other xattrs and hard links, on a
//! loop btrfs
//! (the layer a subvolume: btrfs snapshot; a plain dir: reflinks) and on ext4 (a copy). The
//! restored layer, mounted under a real overlayfs, hides what it hid when it was taken.

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

use man8s_oci::layers::LayerSet;
use man8s_oci::snapshot::{
    LAYER_PART, Method, Store, create_volume_dir, into_subvolume, is_subvolume,
};
use man8s_oci::unpack::rootdir::lsetxattr_at;
use man8s_testsupport::{LoopFs, require_root};
use nix::sys::stat::{Mode, SFlag, mknod};

mod snapshot_support;
use snapshot_support::tree;

fn setx(path: &Path, key: &str, value: &str) {
    let parent = std::fs::File::open(path.parent().unwrap()).unwrap();
    lsetxattr_at(
        &parent,
        path.file_name().unwrap().as_encoded_bytes(),
        key.as_bytes(),
        value.as_bytes(),
    )
    .unwrap();
}

/// The image's layer: three files and a directory the machine makes opaque.
fn lower(dir: &Path) {
    std::fs::create_dir_all(dir.join("opaq")).unwrap();
    std::fs::write(dir.join("gone"), "deleted by the machine").unwrap();
    std::fs::write(dir.join("keep"), "image file").unwrap();
    std::fs::write(dir.join("opaq/old"), "hidden by the opaque dir").unwrap();
}

/// What overlayfs leaves in the upper dir when the machine deletes `gone`, replaces `opaq`,
/// and writes a setuid file of its own user with an xattr.
fn upper(rw: &Path) {
    let data = rw.join("data");
    std::fs::create_dir_all(data.join("opaq")).unwrap();
    std::fs::create_dir_all(rw.join("work")).unwrap();
    mknod(
        &data.join("gone"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    setx(&data.join("opaq"), "trusted.overlay.opaque", "y");
    std::fs::write(data.join("opaq/new"), "the machine's own").unwrap();
    let owned = data.join("owned");
    std::fs::write(&owned, "setuid").unwrap();
    std::os::unix::fs::chown(&owned, Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(&owned, std::os::unix::fs::PermissionsExt::from_mode(0o4750)).unwrap();
    setx(&owned, "user.man8s-test", "kept");
    std::fs::hard_link(&owned, data.join("owned-link")).unwrap();
    symlink("/etc/passwd", data.join("link")).unwrap();
    std::os::unix::fs::lchown(data.join("link"), Some(1000), Some(1000)).unwrap();
    setx(&data.join("link"), "trusted.man8s-test", "on a symlink");
}

/// The machine goes on changing its root after the snapshot.
fn change(rw: &Path) {
    let data = rw.join("data");
    std::fs::remove_file(data.join("gone")).unwrap();
    std::fs::remove_dir_all(data.join("opaq")).unwrap();
    std::fs::create_dir(data.join("opaq")).unwrap();
    std::fs::write(data.join("owned"), "rewritten").unwrap();
    std::fs::write(data.join("later"), "written after the snapshot").unwrap();
}

/// Mount `lower` + `rw` as overlayfs at `at` and list what the machine sees.
fn merged(lower: &Path, rw: &Path, at: &Path) -> Vec<String> {
    std::fs::create_dir_all(at).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        rw.join("data").display(),
        rw.join("work").display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(at)
        .status()
        .unwrap();
    assert!(st.success(), "overlay mount of {}", rw.display());
    let mut seen = Vec::new();
    for p in ["gone", "keep", "opaq/old", "opaq/new", "owned", "later"] {
        if std::fs::symlink_metadata(at.join(p)).is_ok() {
            seen.push(p.to_owned());
        }
    }
    let _ = Command::new("umount").arg(at).status();
    seen
}

fn layers() -> LayerSet {
    LayerSet {
        manifest_digest: "sha256:aa".into(),
        chain_ids: vec!["sha256:bb".into()],
    }
}

/// Snapshot, change, restore and mount the writable layer `rw` (made by the caller) under `base`.
fn round_trip(base: &Path, rw: &Path, want: Method) {
    lower(&base.join("lower"));
    upper(rw);
    let sees = ["keep", "opaq/new", "owned"];
    assert_eq!(merged(&base.join("lower"), rw, &base.join("m")), sees);
    // After a mount, as a stopped machine leaves it (overlayfs adds its uuid and work/work).
    let before = tree(rw);
    assert!(before["data/gone"].contains("rdev 0"), "{before:?}");

    let store = Store::new(base.join("snapshots/m"));
    let s = store
        .take_on(&[(LAYER_PART, rw)], "manual", Some(&layers()))
        .unwrap();
    assert_eq!(s.method, want, "{:?}", s.stats);
    assert_eq!(s.stats.skipped, 0, "the whiteout is kept: {:?}", s.stats);
    assert_eq!(store.get(&s.id).unwrap().layers, Some(layers()));
    assert_eq!(tree(&store.dir().join(&s.id).join(LAYER_PART)), before);

    change(rw);
    assert_ne!(tree(rw), before);
    assert_eq!(
        merged(&base.join("lower"), rw, &base.join("m")),
        ["gone", "keep", "opaq/old", "owned", "later"]
    );
    store.restore(&s.id, &[(LAYER_PART, rw)]).unwrap();
    assert_eq!(
        tree(rw),
        before,
        "owners, modes, whiteouts and xattrs are back"
    );
    let (a, b) = (
        std::fs::metadata(rw.join("data/owned")).unwrap(),
        std::fs::metadata(rw.join("data/owned-link")).unwrap(),
    );
    assert_eq!(
        (a.ino(), a.nlink()),
        (b.ino(), 2),
        "the hard link is a link again"
    );
    assert_eq!(merged(&base.join("lower"), rw, &base.join("m")), sees);

    // A volume part is no writable layer: its device nodes are left out, as before.
    let vol = base.join("vol");
    std::fs::create_dir(&vol).unwrap();
    mknod(
        &vol.join("dev"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let v = store.take(&[("storage", &vol)], "manual").unwrap();
    assert_eq!(v.stats.skipped, 1, "{:?}", v.stats);
    assert_eq!(v.layers, None);
}

#[test]
fn root_writable_layer_snapshots_keep_whiteouts_xattrs_and_owners_on_btrfs() {
    require_root();
    let fs = LoopFs::new("btrfs");
    std::fs::create_dir(fs.mnt.join("a")).unwrap();
    let rw = fs.mnt.join("a/rw");
    assert!(create_volume_dir(&rw).unwrap());
    round_trip(&fs.mnt.join("a"), &rw, Method::BtrfsSnapshot);
    assert!(is_subvolume(&std::fs::File::open(&rw).unwrap()));

    // A plain dir on btrfs (a layer made before): reflinked, and turned into a subvolume with
    // nothing lost.
    std::fs::create_dir(fs.mnt.join("b")).unwrap();
    let plain = fs.mnt.join("b/rw");
    std::fs::create_dir(&plain).unwrap();
    round_trip(&fs.mnt.join("b"), &plain, Method::Reflink);
    let before = tree(&plain);
    assert!(into_subvolume(&plain).unwrap());
    assert!(is_subvolume(&std::fs::File::open(&plain).unwrap()));
    assert_eq!(tree(&plain), before);
    assert!(!into_subvolume(&plain).unwrap(), "once");
    assert!(!fs.mnt.join("b/.rw.subvolume").exists());
}

#[test]
fn root_writable_layer_snapshots_keep_whiteouts_xattrs_and_owners_on_ext4() {
    require_root();
    let fs = LoopFs::new("ext4");
    let rw = fs.mnt.join("rw");
    assert!(!create_volume_dir(&rw).unwrap(), "no subvolume on ext4");
    round_trip(&fs.mnt, &rw, Method::Copy);
    let err = into_subvolume(&rw).unwrap_err().to_string();
    assert!(err.contains("not on btrfs"), "{err}");
}
