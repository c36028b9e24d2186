# shellcheck shell=bash
# Shared image layers (issue 16) on a booted systemd 262:
# 1. two machines of one image run from the same unpacked layers (one copy in /var/cache/man8s/layers), each on
#    its own overlayfs, and neither sees what the other writes; mbctl machines status says "layered";
# 2. mbctl machines diff lists what a machine added and deleted; reset is refused while it runs, and after a stop
#    drops its changes (config and volume data stay);
# 3. update to an image that shares all but its top layer unpacks only that layer and keeps the machine's own
#    writes; an update to a broken image is rolled back to the previous layer set; `mbctl machines rollback`
#    after a good update goes back to the image before it (layered and full copy), volumes untouched;
# 4. with SharedLayers=no a new machine gets a full copy (status says why), works, and reset --convert turns it
#    into a layered one; images prune keeps every layer a machine uses;
# 5. volumes under a layered root (the default): seeded from the image with its owners as on disk of a full copy
#    (root's /data of journey, uid 1234's /www of imguser, written by the apps), config and `+` volumes
#    writable by the machine's root, data kept across update and rollback (3.), and a conversion
#    layered -> full copy -> layered keeps the volumes readable and writable;
# 6. the automatic fallback: with the layer store on a file system without idmapped mounts (a ramfs mounted over
#    it), a new machine gets a full copy by itself, runs, and mbctl machines status says why; and the other one:
# 7. an image whose top layer hard-links to a file of a lower layer (a layer that cannot stand alone in the store)
#    makes a full copy by itself, which serves the linked file; status says why. A layered machine's update to
#    such an image is refused with one line saying what to do, the machine keeps running its old image, and
#    reset --convert then makes it a full copy of the new one.
need_main_host
mbctl() { in_host /usr/bin/mbctl "$@"; }
# Layers in the store (0 before the first; the scenario may run alone, before any other stored one).
layer_count() { in_host sh -c 'ls /var/cache/man8s/layers/sha256 2>/dev/null | grep -vc "^\." || true'; }
is_overlay() { [ "$(in_host stat -f -c %T "/var/lib/man8machines/$1")" = overlayfs ]; }
storage_owner() { in_host stat -c %u:%g "/var/lib/man8machine_storage/$1"; }
# started NAME IMAGE: declares NAME with only Image=127.0.0.1:5000/test/IMAGE and starts it.
started() {
    printf '[Machine]\nImage=127.0.0.1:5000/test/%s\n' "${2:?}" | declare_machine "${1:?}"
    in_host systemctl daemon-reload
    start_machine "$1"
}
# Layered roots are the default (man8s-fetch(8), SHARED LAYERS): no man8s.conf.
in_host rm -f /etc/man8s/man8s.conf

# --- 1. two machines, one set of layers --------------------------------------------------------------------------
for m in la lb; do
    declare_machine "$m" <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Volume=/data:data
DECL
done
in_host systemctl daemon-reload
# Scenarios before this one on the shared host may have stored web:1's layer already.
before=$(layer_count)
start_machine la
after_la=$(layer_count)
[ $((after_la - before)) -le 1 ] || fail "web:1 has one layer, but la added $((after_la - before)) to the store"
start_machine lb
[ "$(layer_count)" = "$after_la" ] || fail "lb added $(( $(layer_count) - after_la )) layers to the store, expected none (shared with la)"
is_overlay la || fail "la's root is not an overlayfs mount"
is_overlay lb || fail "lb's root is not an overlayfs mount"
assert_contains "$(mbctl machines status la)" "Storage: layered (1 shared layers" "mbctl machines status la"
in_machine la /bin/sh -c 'echo mine > /etc/mine; /bin/busybox rm /www/index.html; echo kept > /data/kept'
if in_machine lb /bin/busybox test -e /etc/mine; then fail "lb sees la's /etc/mine"; fi
[ "$(in_machine lb /bin/cat /www/index.html)" = "man8s web ok" ] || fail "lb lost /www/index.html that la deleted"
# Owners inside are the image's (root), though the layers are shared and idmapped per machine.
[ "$(in_machine lb /bin/busybox stat -c %u /www)" = 0 ] || fail "/www in lb is not owned by root inside"

# --- 2. diff and reset -----------------------------------------------------------------------------------------------
d=$(mbctl machines diff la)
assert_contains "$d" "A /etc/mine" "mbctl machines diff la"
assert_contains "$d" "D /www/index.html" "mbctl machines diff la"
if out=$(mbctl machines reset la 2>&1); then fail "reset of a running machine was not refused"; fi
assert_contains "$out" "is running" "mbctl machines reset la (running)"
stop_machine la
is_overlay la && fail "la's overlay is still mounted after the stop"
mbctl machines reset la
start_machine la
if in_machine la /bin/busybox test -e /etc/mine; then fail "reset kept /etc/mine"; fi
[ "$(in_machine la /bin/cat /www/index.html)" = "man8s web ok" ] || fail "reset did not bring back /www/index.html"
[ "$(in_machine la /bin/cat /data/kept)" = kept ] || fail "reset touched the data volume"
stop_machine lb

# --- 3. update keeps the writable layer; a broken image rolls back -----------------------------------------------
layout=${IMAGES_DIR:?}/layout
# upd TAG FILE [break]: web + a layer adding /www/FILE (and with `break`, a whiteout of /bin/sh: the app's
# command, which man8env.env fixed at creation, then cannot run).
upd() {
    local tag=${1:?} file=${2:?} broken=${3:-} bundle=${IMAGES_DIR:?}/bundle-lay-$1
    umoci unpack --image "$layout:web" "$bundle" >/dev/null
    printf '%s\n' "$tag" >"$bundle/rootfs/www/$file"
    [ -z "$broken" ] || rm "$bundle/rootfs/bin/sh"
    umoci repack --image "$layout:lay-$tag" "$bundle" >/dev/null
    rm -rf --one-file-system "${bundle:?}"
    push_image "lay-$tag" test/lay:latest
}
push_image web test/lay:latest
declare_machine lc <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/lay:latest
Volume=/data:data
DECL
in_host systemctl daemon-reload
start_machine lc
in_machine lc /bin/sh -c 'echo own > /etc/own; echo vol > /data/vol'
before=$(layer_count)
upd v2 v2.txt
mbctl machines update lc
[ "$(layer_count)" = $((before + 1)) ] || fail "update unpacked $(( $(layer_count) - before )) layers, expected 1 (the new top)"
[ "$(in_machine lc /bin/cat /www/v2.txt)" = v2 ] || fail "lc does not run the new image after update"
[ "$(in_machine lc /bin/cat /etc/own)" = own ] || fail "update dropped the machine's own /etc/own"
[ "$(in_machine lc /bin/cat /data/vol)" = vol ] || fail "update lost the data volume's /data/vol"
in_machine lc /bin/sh -c 'echo v2 >> /data/vol' || fail "lc cannot write its data volume after the update"
upd v3 v3.txt break
if mbctl machines update lc; then fail "update to a broken image succeeded"; fi
[ "$(unit_state man8@lc.service)" = active/success ] || fail "lc is $(unit_state man8@lc.service) after the rollback"
[ "$(in_machine lc /bin/cat /www/v2.txt)" = v2 ] || fail "lc does not run v2 again after the rollback"
if in_machine lc /bin/busybox test -e /www/v3.txt; then fail "lc still has v3's file after the rollback"; fi
assert_contains "$(mbctl machines status lc)" "rolled back" "mbctl machines status lc"
[ "$(in_machine lc /bin/cat /data/vol)" = "$(printf 'vol\nv2')" ] || fail "the rollback lost the data volume's writes"
in_machine lc /bin/sh -c 'echo back >> /data/vol' || fail "lc cannot write its data volume after the rollback"
# A rollback by hand, after a good update: back to the image before it; volumes as they are.
if mbctl machines rollback lc; then fail "mbctl machines rollback succeeded after an update that was rolled back already"; fi
upd v4 v4.txt
mbctl machines update lc
[ "$(in_machine lc /bin/cat /www/v4.txt)" = v4 ] || fail "lc does not run v4 after its update"
in_machine lc /bin/sh -c 'echo v4 >> /data/vol'
mbctl machines rollback lc
[ "$(unit_state man8@lc.service)" = active/success ] || fail "lc is $(unit_state man8@lc.service) after mbctl machines rollback"
[ "$(in_machine lc /bin/cat /www/v2.txt)" = v2 ] || fail "lc does not run v2 after mbctl machines rollback"
if in_machine lc /bin/busybox test -e /www/v4.txt; then fail "lc still has v4's file after mbctl machines rollback"; fi
[ "$(in_machine lc /bin/cat /data/vol)" = "$(printf 'vol\nv2\nback\nv4')" ] || fail "mbctl machines rollback changed lc's data volume"
[ "$(in_machine lc /bin/cat /etc/own)" = own ] || fail "mbctl machines rollback dropped lc's own /etc/own"
if mbctl machines rollback lc; then fail "a second mbctl machines rollback succeeded"; fi
stop_machine lc

# --- 4. the full-copy fallback, its conversion, and prune --------------------------------------------------------
host_write /etc/man8s/man8s.conf <<'CONF'
[Pull]
SharedLayers=no
CONF
started lf web:1
is_overlay lf && fail "lf is layered though SharedLayers=no"
[ "$(in_machine lf /bin/cat /www/index.html)" = "man8s web ok" ] || fail "lf (full copy) does not serve its image"
assert_contains "$(mbctl machines status lf)" "Storage: full copy (SharedLayers=no" "mbctl machines status lf"
stop_machine lf
# A full copy's rollback by hand: the update kept .lg.previous.
started lg lay:latest
upd v5 v5.txt
mbctl machines update lg
[ "$(in_machine lg /bin/cat /www/v5.txt)" = v5 ] || fail "lg (full copy) does not run v5 after its update"
mbctl machines rollback lg
[ "$(in_machine lg /bin/cat /www/v4.txt)" = v4 ] || fail "lg (full copy) does not run v4 after mbctl machines rollback"
if in_machine lg /bin/busybox test -e /www/v5.txt; then fail "lg (full copy) still has v5's file after mbctl machines rollback"; fi
stop_machine lg
host_write /etc/man8s/man8s.conf <<'CONF'
[Pull]
SharedLayers=yes
CONF
mbctl machines reset --convert lf
assert_contains "$(mbctl machines status lf)" "Storage: layered" "mbctl machines status lf after --convert"
mbctl images prune
start_machine lf
is_overlay lf || fail "lf is not layered after reset --convert"
[ "$(in_machine lf /bin/cat /www/index.html)" = "man8s web ok" ] || fail "lf after --convert does not serve its image"
start_machine lb
[ "$(in_machine lb /bin/cat /www/index.html)" = "man8s web ok" ] || fail "lb lost a layer to images prune"
stop_machine lb
stop_machine lf
stop_machine la

# --- 5. volumes under a layered root, and conversions either way ---------------------------------------------
in_host rm -f /etc/man8s/man8s.conf
declare_machine lv <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/journey:1
Volume=/data:data
Volume=/cfg:config
Volume=/cache:+/var/cache/lv
DECL
declare_machine lu <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/imguser:1
Volume=/www:data
DECL
in_host systemctl daemon-reload
start_machine lv
start_machine lu
is_overlay lv || fail "lv (the default) is not layered"
# journey's start.sh appends to /data/boots, a volume seeded from the image (owned by root there).
[ "$(in_machine lv /bin/cat /data/seed.txt)" = "seeded by the image" ] || fail "lv's /data is not seeded from the image"
boots() { in_machine lv /bin/busybox grep -c . /data/boots; }
[ "$(boots)" -ge 1 ] || fail "journey did not write /data/boots in its volume"
[ "$(storage_owner lv/data)" = 0:0 ] || fail "lv's seeded /data is $(storage_owner lv/data) on disk, expected 0:0 (as a full copy)"
[ "$(storage_owner lv/data/seed.txt)" = 0:0 ] || fail "lv's /data/seed.txt is $(storage_owner lv/data/seed.txt) on disk, expected 0:0"
for d in /data /cfg /cache; do
    [ "$(in_machine lv /bin/busybox stat -c %u:%g "$d")" = 0:0 ] \
        || fail "$d in lv is $(in_machine lv /bin/busybox stat -c %u:%g "$d") inside, expected root's"
done
in_machine lv /bin/sh -c 'echo d > /data/w; echo c > /cfg/w; echo x > /cache/w' || fail "lv's root cannot write its volumes"
# imguser runs as uid 1234 and writes /www/id.txt into its volume, seeded with the image's owner.
wait_for 30 in_machine lu /bin/busybox test -s /www/id.txt || fail "imguser (uid 1234) did not write /www/id.txt into its volume"
assert_contains "$(in_machine lu /bin/cat /www/id.txt)" "uid=1234" "lu's /www/id.txt"
[ "$(storage_owner lu/www)" = 1234:1234 ] || fail "lu's seeded /www is $(storage_owner lu/www) on disk, expected 1234:1234"
stop_machine lu
stop_machine lv
# Layered -> full copy: same volumes, same owners.
host_write /etc/man8s/man8s.conf <<'CONF'
[Pull]
SharedLayers=no
CONF
mbctl machines reset --convert lv
assert_contains "$(mbctl machines status lv)" "Storage: full copy (SharedLayers=no" "mbctl machines status lv after --convert"
start_machine lv
is_overlay lv && fail "lv is still layered after reset --convert with SharedLayers=no"
[ "$(in_machine lv /bin/sh -c 'cat /data/w /cfg/w')" = "$(printf 'd\nc')" ] || fail "lv (full copy) lost its volume data"
[ "$(boots)" -ge 2 ] || fail "journey (full copy) did not append to /data/boots"
in_machine lv /bin/sh -c 'echo d2 >> /data/w; echo c2 >> /cfg/w; echo x2 > /cache/w' || fail "lv (full copy) cannot write its volumes"
stop_machine lv
# And back to layered.
in_host rm -f /etc/man8s/man8s.conf
mbctl machines reset --convert lv
assert_contains "$(mbctl machines status lv)" "Storage: layered" "mbctl machines status lv after converting back"
start_machine lv
is_overlay lv || fail "lv is not layered after converting back"
[ "$(in_machine lv /bin/sh -c 'cat /data/w /cfg/w')" = "$(printf 'd\nd2\nc\nc2')" ] || fail "lv (layered again) lost its volume data"
in_machine lv /bin/sh -c 'echo d3 >> /data/w; echo c3 >> /cfg/w; echo x3 > /cache/w' || fail "lv (layered again) cannot write its volumes"
[ "$(storage_owner lv/data/w)" = 0:0 ] || fail "lv's /data/w is $(storage_owner lv/data/w) on disk, expected 0:0"
stop_machine lv

# --- 6. the automatic fallback -------------------------------------------------------------------------------------
# ramfs has no idmapped mounts (tmpfs, ext4 and btrfs have). Mounted over the store, it hides the stored layers
# from new machines only; the running ones hold their overlays' lower dirs already, and none runs now.
in_host mount -t ramfs -o mode=0700 man8s-no-idmap /var/cache/man8s/layers
trap 'in_host umount /var/cache/man8s/layers >/dev/null 2>&1 || true' EXIT
started lr web:1
is_overlay lr && fail "lr is layered though the layer store has no idmapped mounts"
[ "$(in_machine lr /bin/cat /www/index.html)" = "man8s web ok" ] || fail "lr (the automatic full copy) does not serve its image"
assert_contains "$(mbctl machines status lr)" "Storage: full copy (no idmapped mounts on the layer store's file system" \
    "mbctl machines status lr"
stop_machine lr
in_host umount /var/cache/man8s/layers
trap - EXIT
in_host rm /etc/man8s/machines/lr.machine
in_host systemctl daemon-reload

# --- 7. a layer hard-linking into a lower one --------------------------------------------------------------------
add_hardlink_layer "$layout" web hardlinked www/linked.html=www/index.html
push_image hardlinked test/hardlinked:1
started lh hardlinked:1
is_overlay lh && fail "lh is layered though its top layer hard-links into a lower one"
[ "$(in_machine lh /bin/cat /www/linked.html)" = "man8s web ok" ] || fail "lh's /www/linked.html is not the linked index.html"
[ "$(in_machine lh /bin/busybox stat -c %h /www/index.html)" = 2 ] || fail "lh's /www/index.html is not hard-linked (link count)"
status=$(mbctl machines status lh)
assert_contains "$status" "Storage: full copy (layer " "mbctl machines status lh"
assert_contains "$status" "hard-links into a lower layer" "mbctl machines status lh"
stop_machine lh
in_host rm /etc/man8s/machines/lh.machine
in_host systemctl daemon-reload
push_image web test/hl:latest
started lk hl:latest
is_overlay lk || fail "lk (web) is not layered"
push_image hardlinked test/hl:latest
if out=$(mbctl machines update lk 2>&1); then fail "lk's update to an image that hard-links across layers succeeded layered"; fi
assert_contains "$out" "hard-links into a lower layer" "mbctl machines update lk"
assert_contains "$out" "mbctl machines reset --convert lk" "mbctl machines update lk"
wait_for 30 in_host systemctl is-active -q man8@lk.service || fail "lk is $(unit_state man8@lk.service) after the refused update"
[ "$(in_machine lk /bin/cat /www/index.html)" = "man8s web ok" ] || fail "lk does not serve its old image after the refused update"
stop_machine lk
mbctl machines reset --convert lk
start_machine lk
is_overlay lk && fail "lk is still layered after reset --convert to an image that hard-links across layers"
[ "$(in_machine lk /bin/cat /www/linked.html)" = "man8s web ok" ] || fail "lk (converted) does not serve /www/linked.html"
assert_contains "$(mbctl machines status lk)" "hard-links into a lower layer" "mbctl machines status lk"
stop_machine lk
in_host rm /etc/man8s/machines/lk.machine
in_host systemctl daemon-reload
