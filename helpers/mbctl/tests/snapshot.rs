//! `machines snapshot|snapshots|restore` on a relocated tree (MAN8S_ROOT): the real binary, the
//! real file system. A hostile data volume points symlinks at a canary tree outside it; neither
//! snapshot nor restore may read or write through them.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use man8s_testsupport::stdout_of_success as ok;

fn mbctl(args: &[&str], root: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mbctl"))
        .args(args)
        .env("MAN8S_ROOT", root)
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .output()
        .expect("run mbctl")
}

fn listing(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let key = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    key,
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if m.is_dir() {
                out.insert(key, b"dir".to_vec());
                stack.push(p);
            } else {
                out.insert(key, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn snapshot_restore_prune_round_trip_without_escaping_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let canary = dir.path().join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("secret"), "host").unwrap();
    let decl = root.join("etc/man8s/machines");
    std::fs::create_dir_all(&decl).unwrap();
    std::fs::write(
        decl.join("db.machine"),
        "[Machine]\nImage=localhost/db:1\nVolume=/data:data\n",
    )
    .unwrap();
    let config = root.join("var/lib/man8machine_configs/db");
    let data = root.join("var/lib/man8machine_storage/db/data");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(config.join("man8env.env"), "A=1\n").unwrap();
    std::fs::write(data.join("rows"), "1 2 3").unwrap();
    symlink(&canary, data.join("out")).unwrap();
    symlink("../../../../../../canary/secret", data.join("climb")).unwrap();
    let canary_before = listing(&canary);
    let data_before = listing(&data);

    let out = ok(&mbctl(&["machines", "snapshot", "db"], &root));
    assert!(out.starts_with("Snapshot "), "{out}");
    assert!(out.contains("config, storage"), "{out}");
    assert!(
        out.contains(" by reflink") || out.contains(" by copy"),
        "{out}"
    );
    let json = ok(&mbctl(&["machines", "snapshots", "db", "--json"], &root));
    let snaps: serde_json::Value = serde_json::from_str(&json).unwrap();
    let id = snaps[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(snaps[0]["reason"], "manual");
    assert!(
        root.join("var/lib/man8s/snapshots/db")
            .join(&id)
            .join("storage/data/rows")
            .is_file()
    );

    // The app rewrites its data and points a link at the host's canary file.
    std::fs::write(data.join("rows"), "migrated").unwrap();
    std::fs::remove_file(data.join("out")).unwrap();
    symlink(canary.join("secret"), data.join("out")).unwrap();
    std::fs::write(config.join("man8env.env"), "A=2\n").unwrap();

    let out = ok(&mbctl(&["machines", "restore", "db", &id], &root));
    assert!(out.contains("before the restore is snapshot"), "{out}");
    assert_eq!(listing(&data), data_before);
    assert_eq!(std::fs::read(config.join("man8env.env")).unwrap(), b"A=1\n");
    assert_eq!(
        listing(&canary),
        canary_before,
        "nothing outside the volume changed"
    );

    // The replaced state is kept as a snapshot: nothing was lost.
    let json = ok(&mbctl(&["machines", "snapshots", "db", "--json"], &root));
    let snaps: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let kept = snaps[1]["id"].as_str().unwrap();
    assert_eq!(snaps[1]["reason"], format!("before restore of {id}"));
    let kept_rows = root
        .join("var/lib/man8s/snapshots/db")
        .join(kept)
        .join("storage/data/rows");
    assert_eq!(std::fs::read(kept_rows).unwrap(), b"migrated");

    let out = ok(&mbctl(&["machines", "snapshot", "db", "--prune=1"], &root));
    assert!(out.contains(&format!("Removed snapshot {id}.")), "{out}");
    let table = ok(&mbctl(&["machines", "snapshots", "db"], &root));
    let first_words: Vec<&str> = table.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(first_words, ["ID", kept], "{table}");
}

#[test]
fn restore_of_an_unknown_snapshot_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("var/lib/man8machine_storage/db");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("x"), "keep").unwrap();
    for (id, why) in [
        ("20000101T000000Z", "no snapshot"),
        ("../../etc", "not a snapshot ID"),
    ] {
        let o = mbctl(&["machines", "restore", "db", id], root);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why), "{err}");
    }
    assert_eq!(std::fs::read(data.join("x")).unwrap(), b"keep");
    assert!(
        !root.join("var/lib/man8s/snapshots/db").exists(),
        "no snapshot was taken"
    );
}
