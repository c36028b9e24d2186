//! Root tier: volume snapshots on a real btrfs (a loop-mounted image in the test's scratch dir,
//! made with btrfs-progs' `mkfs.btrfs`). A directory made by `create_volume_dir` is a subvolume,
//! its snapshots are btrfs snapshots (and subvolumes themselves), restores bring the content back
//! as a subvolume, removal leaves no subvolume behind; a plain directory on the same btrfs is
//! reflinked, and a store on another file system gets a walked copy.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

use man8s_oci::snapshot::{Method, Store, create_volume_dir, is_subvolume};
use man8s_testsupport::{LoopFs, require_root};

mod snapshot_support;
use snapshot_support::tree;

fn open_dir(p: &Path) -> OwnedFd {
    std::fs::File::open(p).unwrap().into()
}

fn fill(dir: &Path, canary: &Path, tag: &str) {
    std::fs::create_dir_all(dir.join("db/sub")).unwrap();
    std::fs::write(dir.join("db/rows"), format!("rows of {tag}")).unwrap();
    std::fs::write(dir.join("db/sub/big"), vec![7u8; 3 << 20]).unwrap();
    symlink(canary, dir.join("escape")).unwrap();
    std::os::unix::fs::chown(dir.join("db/rows"), Some(1000), Some(1000)).unwrap();
}

#[test]
fn root_btrfs_volumes_snapshot_as_subvolumes() {
    require_root();
    let fs = LoopFs::new("btrfs");
    let canary = fs.mnt.join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("secret"), "host secret").unwrap();
    let canary_before = tree(&canary);

    // A new volume dir is a subvolume, 0700; an existing path is refused, not replaced.
    std::fs::create_dir(fs.mnt.join("configs")).unwrap();
    let live = fs.mnt.join("configs/m");
    assert!(create_volume_dir(&live).unwrap(), "a subvolume on btrfs");
    assert!(is_subvolume(&open_dir(&live)));
    assert_eq!(std::fs::metadata(&live).unwrap().mode() & 0o7777, 0o700);
    let err = create_volume_dir(&live).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    fill(&live, &canary, "v1");
    // A machine made before (a plain directory) on the same btrfs.
    let plain = fs.mnt.join("storage-m");
    std::fs::create_dir(&plain).unwrap();
    fill(&plain, &canary, "plain");
    assert!(!is_subvolume(&open_dir(&plain)));
    let live_v1 = tree(&live);
    let plain_v1 = tree(&plain);

    let store = Store::new(fs.mnt.join("snapshots/m"));
    let s = store.take(&[("config", &live)], "manual").unwrap();
    assert_eq!(s.method, Method::BtrfsSnapshot, "{:?}", s.stats);
    assert_eq!(s.stats.snapshots, 1);
    let part = store.dir().join(&s.id).join("config");
    assert!(
        is_subvolume(&open_dir(&part)),
        "the snapshot is a subvolume"
    );
    assert_eq!(tree(&part), live_v1);
    assert_eq!(store.get(&s.id).unwrap().method, Method::BtrfsSnapshot);

    let both = store
        .take(&[("config", &live), ("storage", &plain)], "manual")
        .unwrap();
    assert_eq!(both.stats.snapshots, 1, "{:?}", both.stats);
    assert_eq!(
        both.stats.copied, 0,
        "the plain dir is reflinked: {:?}",
        both.stats
    );
    assert!(both.stats.cloned >= 2, "{:?}", both.stats);
    assert_eq!(both.method, Method::Reflink);
    assert_eq!(tree(&store.dir().join(&both.id).join("storage")), plain_v1);

    // The app migrates its data; restore brings v1 back, still as a subvolume.
    std::fs::write(live.join("db/rows"), "migrated").unwrap();
    std::fs::write(live.join("new"), "new").unwrap();
    std::fs::write(plain.join("db/rows"), "migrated").unwrap();
    let restored = store
        .restore(&both.id, &[("config", &live), ("storage", &plain)])
        .unwrap();
    assert_eq!(restored.snapshots, 1, "the config part: {restored:?}");
    assert_eq!(tree(&live), live_v1);
    assert_eq!(tree(&plain), plain_v1);
    assert!(is_subvolume(&open_dir(&live)));
    assert!(!is_subvolume(&open_dir(&plain)));
    assert!(
        !fs.mnt.join("configs/.m.restore").exists(),
        "the replaced content is gone"
    );

    // Removing snapshots deletes their subvolumes.
    assert_eq!(store.prune(0).unwrap().len(), 2);
    let listed = Command::new("btrfs")
        .args(["subvolume", "list", "-o"])
        .arg(&fs.mnt)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(!listed.contains("snapshots/"), "left behind:\n{listed}");
    assert!(listed.contains("configs/m"), "{listed}");

    // A store on another file system cannot take a btrfs snapshot: the tree is walked.
    let elsewhere = tempfile::Builder::new()
        .prefix("man8s-snap-ext.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let other = Store::new(elsewhere.path().join("m"));
    let s = other.take(&[("config", &live)], "manual").unwrap();
    assert_eq!(s.stats.snapshots, 0, "{:?}", s.stats);
    assert_eq!(s.stats.cloned + s.stats.copied, 2, "{:?}", s.stats);
    assert_eq!(
        tree(&elsewhere.path().join("m").join(&s.id).join("config")),
        live_v1
    );
    // Restored from there, the live subvolume is a subvolume again.
    std::fs::write(live.join("db/rows"), "migrated").unwrap();
    other.restore(&s.id, &[("config", &live)]).unwrap();
    assert_eq!(tree(&live), live_v1);
    assert!(is_subvolume(&open_dir(&live)), "still a subvolume");

    assert_eq!(tree(&canary), canary_before, "the canary is untouched");
}
