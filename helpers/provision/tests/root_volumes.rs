//! Root tier: volumes of a layered machine get the on-disk owners a full copy's get. The host
//! sees a layered root through its idmapped layers (owners shifted into the machine's range), so
//! a seed copied from it must be written through the root's own mapping; a `+` source made in the
//! root belongs to the machine's root. Real idmapped mounts (open_tree + mount_setattr).
//! A hostile layered root's seeds and `+` sources never write through its symlinks: a canary
//! tree outside it is the same before and after.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};

use man8s::machine::{Machine, SourceFiles, Volume, VolumeSource};
use man8s::{MachineName, Paths};
use man8s_oci::layers::LayerSet;
use man8s_provision::layered::{Root, Storage, UID_RANGE_FIRST};
use man8s_provision::volumes::ensure_volumes;
use man8s_testsupport::{Canary, require_root};

fn machine(name: &MachineName) -> Machine {
    machine_with(
        name,
        &[
            ("/data", VolumeSource::Data),
            ("/cache", VolumeSource::Root("/var/cache/new".into())),
        ],
    )
}

fn machine_with(name: &MachineName, volumes: &[(&str, VolumeSource)]) -> Machine {
    let mut m = Machine::new(
        name.clone(),
        SourceFiles {
            main: "/etc/man8s/machines/m.machine".into(),
            dropins: vec![],
        },
        "x".into(),
    );
    for (path, source) in volumes {
        m.volumes.push(Volume {
            container_path: (*path).into(),
            source: source.clone(),
            read_only: false,
        });
    }
    m
}

fn owner(p: &std::path::Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// Machine `m` in a new tree, recorded as layered (its root shifted by UID_RANGE_FIRST) or not.
fn recorded(layered: bool) -> (Paths, MachineName, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let paths = Paths::new(d.path().join("host"));
    let name = MachineName::new("m").unwrap();
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
    (paths, name, d)
}

/// A machine whose root the host sees shifted by UID_RANGE_FIRST when `layered`, its volumes
/// made by `ensure_volumes`.
fn seeded(layered: bool) -> (Paths, MachineName, tempfile::TempDir) {
    let (paths, name, d) = recorded(layered);
    let shift = if layered { UID_RANGE_FIRST } else { 0 };
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

/// A layered root whose image volume carries symlinks out (absolute, and climbing) to a canary
/// tree: the seed copies them as symlinks, a nested volume or a `+` source through them is
/// refused with one line, and the canary is unchanged, owners and modes included. The seed is
/// written through the idmapped clone, so a followed link would also have been chowned.
#[test]
fn root_layered_seeds_never_write_through_the_images_symlinks() {
    require_root();
    let canary = Canary::new();
    let before = canary.snapshot();
    let target = canary.path().join("etc/systemd/system");
    let climb = format!(
        "{}{}",
        "../".repeat(40),
        target.to_str().unwrap().trim_start_matches('/')
    );
    let (paths, name, _d) = recorded(true);
    let rootfs = paths.rootfs(&name);
    let shift = UID_RANGE_FIRST;
    fs::create_dir_all(rootfs.join("data/sub")).unwrap();
    fs::create_dir_all(rootfs.join("var")).unwrap();
    fs::write(rootfs.join("data/sub/suid"), b"x").unwrap();
    symlink(&target, rootfs.join("data/out")).unwrap();
    symlink(&climb, rootfs.join("data/up")).unwrap();
    symlink(&target, rootfs.join("var/link")).unwrap();
    for p in ["data", "data/sub", "var", "data/out", "data/up", "var/link"] {
        lchown(rootfs.join(p), Some(shift), Some(shift)).unwrap();
    }
    lchown(
        rootfs.join("data/sub/suid"),
        Some(shift + 1234),
        Some(shift + 1234),
    )
    .unwrap();
    // After the chown, which clears setuid.
    fs::set_permissions(
        rootfs.join("data/sub/suid"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();

    for (volumes, why) in [
        (
            &[
                ("/data", VolumeSource::Data),
                ("/data/out/x", VolumeSource::Data),
            ][..],
            "is a symlink",
        ),
        (
            &[
                ("/data", VolumeSource::Data),
                ("/data/up/x", VolumeSource::Data),
            ][..],
            "is a symlink",
        ),
        (
            &[("/cache", VolumeSource::Root("/var/link/new".into()))][..],
            "is a symlink",
        ),
    ] {
        let err = ensure_volumes(&paths, &machine_with(&name, volumes), &rootfs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(why) && !err.contains('\n'),
            "{volumes:?}: {err}"
        );
        assert_eq!(canary.snapshot(), before, "{volumes:?}: the canary changed");
    }

    // The outer volume alone is seeded: links kept as links, owners back to on-disk 0…65535.
    let data = paths.storage_dir(&name).join("data");
    assert!(
        data.is_dir(),
        "the outer volume was seeded before the refusal"
    );
    assert_eq!(fs::read_link(data.join("out")).unwrap(), target);
    assert_eq!(
        fs::read_link(data.join("up")).unwrap().to_str(),
        Some(climb.as_str())
    );
    assert_eq!(owner(&data.join("out")), (0, 0));
    assert_eq!(owner(&data.join("sub/suid")), (1234, 1234));
    let mode = fs::symlink_metadata(data.join("sub/suid")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o4755);
    assert_eq!(canary.snapshot(), before);
}
