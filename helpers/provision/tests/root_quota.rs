//! Root tier: `DiskMax=` on real file systems. On a loop btrfs a layered machine's writable
//! layer gets a qgroup limit (quotas switched on by the first one) and writes beyond it fail
//! with EDQUOT; an empty `DiskMax=` takes the limit away; a plain layer made before becomes a
//! subvolume keeping its whiteouts. On ext4, and for a full copy, the start is refused with one
//! line naming machine, directory and file system.

use std::io::Write as _;
use std::path::Path;

use man8s::{MachineName, Paths};
use man8s_oci::layers::LayerSet;
use man8s_oci::snapshot::is_subvolume;
use man8s_provision::layered::{Root, Storage};
use man8s_provision::quota::{Applied, apply};
use man8s_testsupport::LoopFs;

fn machine(name: &str, disk_max: &str) -> man8s::machine::Machine {
    let name = MachineName::new(name).unwrap();
    let text =
        format!("[Machine]\nImage=docker.io/library/redis:7\n[Resources]\nDiskMax={disk_max}\n");
    man8s::declaration::parse(
        &name,
        &[(format!("/etc/man8s/machines/{name}.machine").into(), text)],
    )
    .unwrap()
}

/// A machine recorded as layered (or a full copy) under `root`, with its writable layer made.
fn recorded(root: &Path, name: &str, layered: bool) -> Root {
    let paths = Paths::new(root);
    let name = MachineName::new(name).unwrap();
    std::fs::create_dir_all(paths.state_dir(&name)).unwrap();
    let r = Root::new(&paths, &name);
    let storage = if layered {
        Storage::Layered {
            uid_base: 0x7000_0000,
            current: LayerSet {
                manifest_digest: "sha256:aa".into(),
                chain_ids: vec!["sha256:bb".into()],
            },
            previous: None,
        }
    } else {
        Storage::Copy {
            reason: "test".into(),
        }
    };
    r.record(&storage).unwrap();
    if layered {
        r.ensure_rw().unwrap();
    }
    r
}

/// Write up to `mib` MiB into `file`, syncing; the error that stopped it, if any.
fn fill(file: &Path, mib: usize) -> Option<std::io::Error> {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
            return Some(e);
        }
    }
    None
}

#[test]
fn root_disk_max_is_a_btrfs_qgroup_limit_on_the_writable_layer() {
    let fs = LoopFs::new("btrfs");
    let paths = Paths::new(&fs.mnt);
    let root = recorded(&fs.mnt, "web", true);
    assert!(
        is_subvolume(&std::fs::File::open(root.rw()).unwrap()),
        "a new writable layer on btrfs is a subvolume"
    );
    let applied = apply(&paths, &machine("web", "8M")).unwrap();
    assert_eq!(
        applied,
        Applied::Limited {
            bytes: 8 << 20,
            enabled_quotas: true,
            converted: false
        }
    );
    let err = fill(&root.rw().join("data/big"), 32).expect("the limit stops the writes");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EDQUOT), "{err}");
    std::fs::remove_file(root.rw().join("data/big")).unwrap();

    // Quotas are on now; the next start sets the limit again without enabling anything.
    let again = apply(&paths, &machine("web", "8M")).unwrap();
    assert!(
        matches!(
            again,
            Applied::Limited {
                enabled_quotas: false,
                ..
            }
        ),
        "{again:?}"
    );

    // DiskMax= removed: no limit at the next start.
    assert_eq!(
        apply(&paths, &machine("web", "")).unwrap(),
        Applied::Nothing
    );
    assert!(fill(&root.rw().join("data/big"), 32).is_none());
    std::fs::remove_file(root.rw().join("data/big")).unwrap();

    // A writable layer made before (a plain dir) becomes a subvolume, whiteouts and all.
    let old = recorded(&fs.mnt, "old", true);
    std::fs::remove_dir_all(old.rw()).unwrap();
    std::fs::create_dir_all(old.rw().join("data")).unwrap();
    std::fs::create_dir_all(old.rw().join("work")).unwrap();
    nix::sys::stat::mknod(
        &old.rw().join("data/gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let applied = apply(&paths, &machine("old", "8M")).unwrap();
    assert!(
        matches!(
            applied,
            Applied::Limited {
                converted: true,
                ..
            }
        ),
        "{applied:?}"
    );
    assert!(is_subvolume(&std::fs::File::open(old.rw()).unwrap()));
    let m = std::fs::symlink_metadata(old.rw().join("data/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &m.file_type()
    ));
    let err = fill(&old.rw().join("data/big"), 32).expect("limited too");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EDQUOT), "{err}");
}

#[test]
fn root_disk_max_is_refused_where_it_cannot_be_enforced() {
    let fs = LoopFs::new("ext4");
    let paths = Paths::new(&fs.mnt);
    let root = recorded(&fs.mnt, "web", true);
    let err = apply(&paths, &machine("web", "1G"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "machine web: DiskMax=1.0 GiB: {} is on ext4: DiskMax= needs btrfs (a qgroup limit); \
             ext4 and XFS project quotas are not supported",
            root.rw().display()
        )
    );
    // Without DiskMax= nothing happens on ext4.
    assert_eq!(
        apply(&paths, &machine("web", "")).unwrap(),
        Applied::Nothing
    );

    recorded(&fs.mnt, "copy", false);
    let err = apply(&paths, &machine("copy", "1G"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("machine copy: DiskMax=1.0 GiB: its root is a full copy")
            && err.contains("mbctl machines reset --convert copy"),
        "{err}"
    );
}
