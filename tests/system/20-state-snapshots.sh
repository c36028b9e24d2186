# shellcheck shell=bash
# State snapshots and DiskMax= (issue 16) on a booted systemd 262:
# 1. a layered machine writes into its root (a file, a deleted image file: a whiteout) and a volume; a snapshot
#    (taken while it runs, frozen) holds config, storage and its writable layer (rw); it writes more; restore is
#    refused while it runs; after stop + restore + start its root and volume are as at the snapshot, the deleted
#    image file still deleted;
# 2. after an update a snapshot's writable layer is refused onto the new image (one line, exit 1); --only
#    config,storage restores the rest, --keep-image puts the layer on anyway;
# 3. DiskMax= where the state dir is on ext4 (this host's root): the start is refused with one line saying where
#    and why;
# 4. DiskMax=8M with the machine's state dir on a btrfs (a loop device from outside, mounted in the host): the
#    machine starts, and writing 32 MiB into its root fails with "Disk quota exceeded" near 8 MiB.
need_main_host
mbctl() { in_host /usr/bin/mbctl "$@"; }
last_snapshot() { mbctl machines snapshots --json "$1" | jq -er '.[-1].id'; }
conf_before=$(in_host cat /etc/man8s/man8s.conf 2>/dev/null || true)
host_write /etc/man8s/man8s.conf <<'CONF'
[Pull]
SharedLayers=yes
CONF
loopdev= img=
cleanup_snaps() {
    in_host systemctl stop man8@sb.service >/dev/null 2>&1 || true
    in_host umount /var/lib/man8s/machines/sb >/dev/null 2>&1 || true
    [ -z "$loopdev" ] || losetup -d "$loopdev" || true
    [ -z "$img" ] || rm -f "$img"
    printf '%s\n' "$conf_before" | host_write /etc/man8s/man8s.conf
}
trap cleanup_snaps EXIT

# --- 1. snapshot, write more, restore ------------------------------------------------------------------------------
declare_machine sa <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Volume=/data:data
DECL
in_host systemctl daemon-reload
start_machine sa
in_machine sa /bin/sh -c 'echo v1 > /etc/state; /bin/busybox rm /www/index.html; echo d1 > /data/d'
out=$(mbctl machines snapshot sa)
assert_contains "$out" "config, storage, rw" "mbctl machines snapshot sa"
assert_contains "$out" "(frozen while copying)" "mbctl machines snapshot sa"
snap=$(last_snapshot sa)
assert_contains "$(mbctl machines snapshots sa)" "config,storage,rw" "mbctl machines snapshots sa"
in_machine sa /bin/sh -c 'echo v2 > /etc/state; echo later > /etc/later; echo back > /www/index.html; echo d2 > /data/d'
rc=0
out=$(mbctl machines restore sa "$snap" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "restore of running sa: exit $rc, expected 1 (output: $out)"
assert_contains "$out" "machine sa is running" "mbctl machines restore sa (running)"
stop_machine sa
mbctl machines restore sa "$snap"
start_machine sa
[ "$(in_machine sa /bin/cat /etc/state)" = v1 ] || fail "sa's /etc/state is '$(in_machine sa /bin/cat /etc/state)' after the restore, expected v1"
if in_machine sa /bin/busybox test -e /etc/later; then fail "sa kept /etc/later, written after the snapshot"; fi
if in_machine sa /bin/busybox test -e /www/index.html; then fail "sa has /www/index.html again: the whiteout was lost"; fi
[ "$(in_machine sa /bin/cat /data/d)" = d1 ] || fail "sa's volume file is '$(in_machine sa /bin/cat /data/d)', expected d1"
assert_contains "$(mbctl machines diff sa)" "D /www/index.html" "mbctl machines diff sa after the restore"
stop_machine sa

# --- 2. a writable layer does not go back onto another image -----------------------------------------------------
layout=${IMAGES_DIR:?}/layout
bundle=${IMAGES_DIR:?}/bundle-snap-v2
umoci unpack --image "$layout:web" "$bundle" >/dev/null
echo v2 >"$bundle/rootfs/www/v2.txt"
umoci repack --image "$layout:snap-v2" "$bundle" >/dev/null
rm -rf --one-file-system "${bundle:?}"
push_image web test/snap:latest
declare_machine su <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/snap:latest
Volume=/data:data
DECL
in_host systemctl daemon-reload
start_machine su
in_machine su /bin/sh -c 'echo old > /etc/own; echo d1 > /data/d'
mbctl machines snapshot --stop su >/dev/null
snap=$(last_snapshot su)
push_image snap-v2 test/snap:latest
mbctl machines update su
in_machine su /bin/sh -c 'echo new > /etc/own; echo d2 > /data/d'
stop_machine su
rc=0
out=$(mbctl machines restore su "$snap" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "restore of a layer taken on the old image: exit $rc, expected 1 (output: $out)"
assert_contains "$out" "holds a writable layer taken on image sha256:" "mbctl machines restore su (other image)"
[ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || fail "the refusal is not one line: $out"
mbctl machines restore --only config,storage su "$snap" >/dev/null
start_machine su
[ "$(in_machine su /bin/cat /data/d)" = d1 ] || fail "--only config,storage did not bring back su's volume"
[ "$(in_machine su /bin/cat /etc/own)" = new ] || fail "--only config,storage changed su's root"
[ "$(in_machine su /bin/cat /www/v2.txt)" = v2 ] || fail "su does not run the new image"
stop_machine su
mbctl machines restore --keep-image su "$snap" >/dev/null
start_machine su
[ "$(in_machine su /bin/cat /etc/own)" = old ] || fail "--keep-image did not bring back su's writable layer"
[ "$(in_machine su /bin/cat /www/v2.txt)" = v2 ] || fail "--keep-image changed su's image"
stop_machine su

# --- 3. DiskMax= on ext4: refused, one line -------------------------------------------------------------------------
declare_machine sq <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
[Resources]
DiskMax=8M
DECL
in_host systemctl daemon-reload
if in_host timeout 240 systemctl start man8@sq.service 2>/dev/null; then fail "sq started with DiskMax= on ext4"; fi
wait_journal man8@sq.service "machine sq: DiskMax=8.0 MiB: /var/lib/man8s/machines/sq/rw is on ext4: DiskMax= needs btrfs"

# --- 4. DiskMax= on btrfs: enforced --------------------------------------------------------------------------------
img=$(mktemp /var/tmp/man8s-snaps-btrfs.XXXXXX)
truncate -s 512M "$img"
mkfs.btrfs -q "$img" >/dev/null
loopdev=$(losetup -f --show "$img")
# The host's /dev is nspawn's: give it the node, then mount from inside (its mount namespace).
in_host mknod "$loopdev" b "$((0x$(stat -c %t "$loopdev")))" "$((0x$(stat -c %T "$loopdev")))" 2>/dev/null || true
in_host mkdir -p /var/lib/man8s/machines/sb
in_host mount "$loopdev" /var/lib/man8s/machines/sb
declare_machine sb <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
[Resources]
DiskMax=8M
DECL
in_host systemctl daemon-reload
start_machine sb
wait_journal man8@sb.service "sb: writable layer limited to 8.0 MiB"
out=$(in_machine sb /bin/busybox dd if=/dev/zero of=/root/big bs=1048576 count=32 2>&1) && fail "sb wrote 32 MiB with DiskMax=8M"
assert_contains "$out" "Disk quota exceeded" "dd of 32 MiB in sb"
size=$(in_machine sb /bin/busybox stat -c %s /root/big)
[ "$size" -le $((9 << 20)) ] || fail "sb's /root/big is $size bytes with DiskMax=8M"
in_machine sb /bin/busybox rm /root/big
# Its snapshot goes to ext4 (/var/lib/man8s/snapshots): a walked copy of the subvolume, restorable.
in_machine sb /bin/sh -c 'echo q1 > /etc/q'
mbctl machines snapshot sb >/dev/null
snap=$(last_snapshot sb)
in_machine sb /bin/sh -c 'echo q2 > /etc/q'
stop_machine sb
mbctl machines restore sb "$snap" >/dev/null
start_machine sb
[ "$(in_machine sb /bin/cat /etc/q)" = q1 ] || fail "sb's /etc/q after the restore is not q1"
# The restored layer is a new subvolume: the limit was set again at this start.
out=$(in_machine sb /bin/busybox dd if=/dev/zero of=/root/big bs=1048576 count=32 2>&1) && fail "sb wrote 32 MiB after the restore"
assert_contains "$out" "Disk quota exceeded" "dd of 32 MiB in sb after the restore"
stop_machine sb
