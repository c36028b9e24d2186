//! Root tier: snapshots pick btrfs snapshots for subvolumes, reflinks for plain dirs on btrfs and
//! a plain copy on tmpfs by themselves, and a restore gives back the data byte for byte. A loop-mounted btrfs image and a tmpfs, both in a
//! private mount namespace (`unshare --mount`) inside this test's scratch dir.

use std::process::Command;

use man8s_testsupport::require_root;

/// Runs in the private mount namespace: `$FS` is `btrfs` or `tmpfs`, `$MBCTL` the binary.
const SCRIPT: &str = r#"
set -eu
mkdir -p "$S/mnt"
if [ "$FS" != tmpfs ]; then
    truncate -s 300M "$S/img"
    mkfs.btrfs -q "$S/img"
    mount -o loop "$S/img" "$S/mnt"
else
    mount -t tmpfs tmpfs "$S/mnt"
fi
R="$S/mnt/root"
if [ "$FS" = btrfs-subvolumes ]; then
    # As man8s-fetch makes a new machine's config and storage dirs on btrfs.
    mkdir -p "$R/var/lib/man8machine_storage" "$R/var/lib/man8machine_configs"
    btrfs -q subvolume create "$R/var/lib/man8machine_storage/db"
    btrfs -q subvolume create "$R/var/lib/man8machine_configs/db"
fi
mkdir -p "$R/etc/man8s/machines" "$R/var/lib/man8machine_storage/db/data" "$R/var/lib/man8machine_configs/db"
printf '[Machine]\nImage=localhost/db:1\nVolume=/data:data\n' > "$R/etc/man8s/machines/db.machine"
head -c 20000000 /dev/urandom > "$R/var/lib/man8machine_storage/db/data/big"
echo A=1 > "$R/var/lib/man8machine_configs/db/man8env.env"
cp "$R/var/lib/man8machine_storage/db/data/big" "$S/big.orig"
out=$(MAN8S_ROOT="$R" "$MBCTL" machines snapshot db)
echo "SNAPSHOT: $out"
id=$(echo "$out" | sed -n 's/^Snapshot \([0-9TZ-]*\):.*/\1/p')
head -c 1000 /dev/zero > "$R/var/lib/man8machine_storage/db/data/big"
MAN8S_ROOT="$R" "$MBCTL" machines restore db "$id" | sed 's/^/RESTORE: /'
cmp "$S/big.orig" "$R/var/lib/man8machine_storage/db/data/big" && echo SAME
umount "$S/mnt"
"#;

fn run(fs: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("S", dir.path())
        .env("FS", fs)
        .env("MBCTL", env!("CARGO_BIN_EXE_mbctl"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{fs}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn root_snapshot_uses_reflinks_on_btrfs() {
    require_root();
    let out = run("btrfs");
    assert!(
        out.contains("config, storage; 19.1 MiB in 2 files by reflink"),
        "{out}"
    );
    assert!(out.contains("RESTORE: Restored machine db"), "{out}");
    assert!(out.contains("SAME"), "{out}");
}

#[test]
fn root_snapshot_of_btrfs_subvolumes_is_a_btrfs_snapshot() {
    require_root();
    let out = run("btrfs-subvolumes");
    assert!(out.contains("config, storage; by btrfs-snapshot"), "{out}");
    assert!(out.contains("RESTORE: Restored machine db"), "{out}");
    assert!(out.contains("SAME"), "{out}");
}

#[test]
fn root_snapshot_copies_where_the_file_system_cannot_clone() {
    require_root();
    let out = run("tmpfs");
    assert!(out.contains("in 2 files by copy"), "{out}");
    assert!(out.contains("SAME"), "{out}");
}
