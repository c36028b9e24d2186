//! Root tier: volumes of a layered machine get the on-disk owners a full copy's get. The host
//! sees a layered root through its idmapped layers (owners shifted into the machine's range), so
//! a seed copied from it must be written through the root's own mapping; a `+` source made in the
//! root belongs to the machine's root. Real idmapped mounts (open_tree + mount_setattr).

use std::fs;
use std::os::unix::fs::{MetadataExt, lchown};

use man8s::machine::{Machine, SourceFiles, Volume, VolumeSource};
use man8s::{MachineName, Paths};
use man8s_oci::layers::LayerSet;
use man8s_provision::layered::{Root, Storage, UID_RANGE_FIRST};
use man8s_provision::volumes::ensure_volumes;
use man8s_testsupport::require_root;

fn machine(name: &MachineName) -> Machine {
    let mut m = Machine::new(
        name.clone(),
        SourceFiles {
            main: "/etc/man8s/machines/m.machine".into(),
            dropins: vec![],
        },
        "x".into(),
    );
    for (path, source) in [
        ("/data", VolumeSource::Data),
        ("/cache", VolumeSource::Root("/var/cache/new".into())),
    ] {
        m.volumes.push(Volume {
            container_path: path.into(),
            source,
            read_only: false,
        });
    }
    m
}

fn owner(p: &std::path::Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// A machine whose root the host sees shifted by UID_RANGE_FIRST when `layered`, its volumes
/// made by `ensure_volumes`.
fn seeded(layered: bool) -> (Paths, MachineName, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let paths = Paths::new(d.path().join("host"));
    let name = MachineName::new("m").unwrap();
    let shift = if layered { UID_RANGE_FIRST } else { 0 };
    fs::create_dir_all(paths.state_dir(&name)).unwrap();
    if layered {
        Root::new(&paths, &name)
            .record(&Storage::Layered {
                uid_base: UID_RANGE_FIRST,
                current: LayerSet {
                    manifest_digest: "sha256:00".into(),
                    chain_ids: vec![],
                },
                previous: None,
            })
            .unwrap();
    }
    // The root as the host sees it: the image's /data owned by root, a file by uid 1234.
    let rootfs = paths.rootfs(&name);
    fs::create_dir_all(rootfs.join("data")).unwrap();
    fs::write(rootfs.join("data/f"), b"seed").unwrap();
    lchown(rootfs.join("data"), Some(shift), Some(shift)).unwrap();
    lchown(
        rootfs.join("data/f"),
        Some(shift + 1234),
        Some(shift + 1234),
    )
    .unwrap();
    ensure_volumes(&paths, &machine(&name), &rootfs).unwrap();
    (paths, name, d)
}

#[test]
fn root_layered_volumes_have_a_full_copys_owners_on_disk() {
    require_root();
    for layered in [false, true] {
        let (paths, name, _d) = seeded(layered);
        let data = paths.storage_dir(&name).join("data");
        assert_eq!(fs::read(data.join("f")).unwrap(), b"seed");
        assert_eq!(owner(&data), (0, 0), "layered={layered}");
        assert_eq!(owner(&data.join("f")), (1234, 1234), "layered={layered}");
        // No temp name of the seed is left behind.
        assert_eq!(fs::read_dir(data.parent().unwrap()).unwrap().count(), 1);
        // The `+` source (and the parents made for it) belongs to the machine's root as the
        // host sees it (on disk 0 below a layered root's idmapped upper layer).
        let root_uid = if layered { UID_RANGE_FIRST } else { 0 };
        let rootfs = paths.rootfs(&name);
        for p in ["var", "var/cache", "var/cache/new"] {
            assert_eq!(
                owner(&rootfs.join(p)),
                (root_uid, root_uid),
                "{p}, layered={layered}"
            );
        }
    }
}
