# shellcheck shell=bash
# Shared vs own disk in `mbctl machines list`/`status` (issue 16) on a booted systemd 262: the numbers are real.
# 1. two layered machines of one image: writing 10 MiB in one grows its own size by ~10 MiB and nothing else;
#    5 MiB into the other's data volume grows that one's own (volumes) size; both show the same shared layers,
#    used by both (and by machines of earlier scenarios on the shared host);
# 2. a full copy (SharedLayers=no) shows its copy as its own size, as du(1) measures it, and no shared size.
need_main_host
mbctl() { in_host /usr/bin/mbctl "$@"; }
disk() { mbctl machines status --json "$1" | jq -er ".disk.$2"; }
mib_between() { # mib_between BYTES LO HI
    [ "$1" -ge $(($2 << 20)) ] && [ "$1" -lt $(($3 << 20)) ]
}
conf_before=$(in_host cat /etc/man8s/man8s.conf 2>/dev/null || true)
host_write /etc/man8s/man8s.conf <<'CONF'
[Pull]
SharedLayers=yes
CONF

# --- 1. layered: own follows writes, shared is shared ------------------------------------------------------------
for m in da db; do
    declare_machine "$m" <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Volume=/data:data
DECL
done
in_host systemctl daemon-reload
start_machine da
start_machine db
[ "$(disk da kind)" = layered ] || fail "da is $(disk da kind), expected layered"
a0=$(disk da own.bytes) b0=$(disk db own.bytes) s0=$(disk da shared.bytes)
[ "$s0" -gt 0 ] || fail "da's shared size is $s0"
[ "$(disk db shared.bytes)" = "$s0" ] || fail "da and db run the same layers, but db's shared size is $(disk db shared.bytes), da's $s0"
# Machines of earlier scenarios on the shared host may run web:1's layers too (their state stays): at least db.
others=$(disk da shared_with)
[ "$others" -ge 1 ] || fail "da's layers are used by $others other machines, expected at least 1 (db)"
[ "$(disk db shared_with)" = "$others" ] || fail "db's layers are used by $(disk db shared_with) other machines, da's by $others"
in_machine da /bin/busybox dd if=/dev/urandom of=/root/ten bs=1048576 count=10 2>/dev/null
in_machine da /bin/busybox sync
a1=$(disk da own.bytes)
mib_between $((a1 - a0)) 10 11 || fail "da wrote 10 MiB, its own size grew by $((a1 - a0)) bytes ($a0 → $a1)"
mib_between "$(disk da root.bytes)" 10 11 || fail "da's writable layer is $(disk da root.bytes) bytes after writing 10 MiB"
[ "$(disk da shared.bytes)" = "$s0" ] || fail "da's write changed the shared size ($s0 → $(disk da shared.bytes))"
b1=$(disk db own.bytes)
[ $((b1 - b0)) -lt 65536 ] || fail "da's write grew db's own size by $((b1 - b0)) bytes"
in_machine db /bin/busybox dd if=/dev/urandom of=/data/five bs=1048576 count=5 2>/dev/null
in_machine db /bin/busybox sync
b2=$(disk db own.bytes)
mib_between $((b2 - b1)) 5 6 || fail "db wrote 5 MiB into /data, its own size grew by $((b2 - b1)) bytes"
mib_between $(( $(disk db volumes.bytes) )) 5 6 || fail "db's volumes are $(disk db volumes.bytes) bytes after 5 MiB into /data"
list=$(mbctl machines list)
assert_contains "$(grep '^da ' <<<"$list")" "×$((others + 1))" "mbctl machines list, row da"
assert_contains "$(mbctl machines status da)" "also used by $others other machine" "mbctl machines status da"
stop_machine da
stop_machine db

# --- 2. a full copy: its copy is its own ----------------------------------------------------------------------------
host_write /etc/man8s/man8s.conf <<'CONF'
[Pull]
SharedLayers=no
CONF
declare_machine dc <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host systemctl daemon-reload
start_machine dc
[ "$(disk dc kind)" = copy ] || fail "dc is $(disk dc kind), expected copy"
root=$(disk dc root.bytes)
du=$(( $(in_host du -sx -B1 /var/lib/man8machines/dc | cut -f1) ))
[ "$root" -gt $((1 << 20)) ] || fail "dc's copy is $root bytes, less than the busybox in it"
# du(1) and mbctl count the same blocks; allow a little for files the running machine writes in between.
[ $((root > du ? root - du : du - root)) -lt 131072 ] || fail "dc's copy: mbctl says $root bytes, du $du"
if mbctl machines status --json dc | jq -e '.disk.shared' >/dev/null; then fail "a full copy shows a shared size"; fi
assert_contains "$(mbctl machines status dc)" "Disk: own" "mbctl machines status dc"
stop_machine dc
if [ -n "$conf_before" ]; then
    printf '%s\n' "$conf_before" | host_write /etc/man8s/man8s.conf
else
    in_host rm -f /etc/man8s/man8s.conf
fi
