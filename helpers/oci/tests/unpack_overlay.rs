//! Root tier (trusted.* xattrs need root): the unpacker's overlay mode, for the layer store.
//! Whiteouts become 0:0 character devices, opaque markers the opaque xattr, and a layer's own
//! overlayfs xattrs are dropped; nothing of a lower layer is needed.

mod unpack_support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use man8s_oci::unpack::{UnpackOptions, apply_layer};
use unpack_support::{Layer, get_xattr};

#[test]
fn root_overlay_mode_writes_whiteouts_for_overlayfs() {
    man8s_testsupport::require_root();
    let dir = tempfile::tempdir().unwrap();
    let layer = Layer::new()
        .dir("etc")
        .whiteout("etc/.wh.gone")
        .whiteout("deep/er/.wh.gone")
        .dir("opq")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/kept", b"k")
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
            ("SCHILY.xattr.trusted.overlay.metacopy", b""),
            ("SCHILY.xattr.user.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.fine", b"1"),
        ])
        .dir("steer")
        .bytes();
    let opts = UnpackOptions {
        overlay: true,
        ..Default::default()
    };
    let stats = apply_layer(dir.path(), &mut &layer[..], &opts).unwrap();
    let root = dir.path();
    for gone in ["etc/gone", "deep/er/gone"] {
        let m = std::fs::symlink_metadata(root.join(gone)).unwrap();
        assert!(
            m.file_type().is_char_device() && m.rdev() == 0,
            "{gone}: 0:0 whiteout"
        );
    }
    assert_eq!(
        get_xattr(&root.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        std::fs::read(root.join("opq/kept")).unwrap(),
        b"k",
        "the layer's own entry stays"
    );
    assert!(!root.join("opq/.wh..wh..opq").exists());
    for key in [
        "trusted.overlay.redirect",
        "trusted.overlay.metacopy",
        "user.overlay.opaque",
    ] {
        assert_eq!(get_xattr(&root.join("steer"), key), None, "{key} dropped");
    }
    assert_eq!(
        get_xattr(&root.join("steer"), "user.fine").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(stats.xattrs_skipped, 3);
    assert_eq!(stats.whiteouts, 3);
}
