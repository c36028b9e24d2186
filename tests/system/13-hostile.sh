# shellcheck shell=bash
# Hostile images (issue 10) on a booted host, started the way users start machines (`systemctl start man8@NAME`):
# - nested volumes /a and /a/link/evil whose outer volume carries /a/link -> /etc/systemd/system: the start is
#   refused with one line naming the symlink, and the host's /etc/systemd/system is byte for byte unchanged;
# - the same image with a bind source /a/root -> /: refused ("bind source"), the host's / never bound;
# - contained: with only /a as a volume the machine runs, its setuid file sits below 0700 parents, and the image's
#   MAN8S_YGGDRASIL_ADDRESS / MAN8S_CONTAINER_NAME are ignored (man8env.env has man8s's values, fetch warned).
need_main_host

snapshot_host() {
    in_host sh -c 'find / -xdev -mindepth 1 -maxdepth 1 -printf "%p %m %u\n" | sort; \
        find /etc/systemd/system -printf "%p %m %u %s %l\n" | sort | sha256sum'
}
before=$(snapshot_host)

declare_machine evil <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/hostile:1
Volume=/a:data
Volume=/a/link/evil:data
DECL
declare_machine evilbind <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/hostile:1
Volume=/a:data
Volume=/a/root:data
DECL
declare_machine contained <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/hostile:1
Volume=/a:data
DECL
in_host systemctl daemon-reload

if in_host timeout 240 systemctl start man8@evil.service 2>/dev/null; then
    fail "man8@evil started although its nested volume goes through the image's symlink /a/link"
fi
status=$(in_host journalctl --no-pager -u man8@evil.service -n 50 2>&1) || true
assert_contains "$status" "volume /a/link/evil: /var/lib/man8machine_storage/evil/a/link is a symlink" "journal of man8@evil"
in_host test ! -e /etc/systemd/system/evil || fail "/etc/systemd/system/evil exists: the volume was created through the symlink"

if in_host timeout 240 systemctl start man8@evilbind.service 2>/dev/null; then
    fail "man8@evilbind started although its bind source /a/root is a symlink to the host's /"
fi
status=$(in_host journalctl --no-pager -u man8@evilbind.service -n 50 2>&1) || true
assert_contains "$status" "bind source /var/lib/man8machine_storage/evilbind/a/root is a symlink" "journal of man8@evilbind"
if in_host machinectl list --no-legend | awk '{print $1}' | grep -x evilbind >/dev/null; then
    fail "machine evilbind runs"
fi

start_machine contained
ip=$(machine_ipv4 contained) || fail "machine contained got no IPv4 address"
[ "$(http_get "http://$ip/")" = "man8s hostile contained" ] || fail "contained does not answer HTTP at $ip"
for d in /var/lib/man8machines /var/lib/man8machine_storage /var/lib/man8machine_configs /var/lib/man8s/machines; do
    mode=$(in_host stat -c %a "$d")
    [ "$mode" = 700 ] || fail "$d is mode $mode, expected 700 (setuid files below it must be out of other users' reach)"
done
in_host test -u /var/lib/man8machine_storage/contained/a/suid || fail "the image's setuid file was not kept inside the volume"
in_host test -L /var/lib/man8machine_storage/contained/a/link || fail "the volume lost the image's symlink"
env=$(in_host cat /var/lib/man8machine_configs/contained/man8env.env)
assert_contains "$env" "MAN8S_CONTAINER_NAME=contained" "man8env.env"
case "$env" in *victim*|*6666*) fail "man8env.env took MAN8S_* values from the image: $env" ;; esac
journal=$(in_host journalctl --no-pager -u man8@contained.service -n 80 2>&1) || true
assert_contains "$journal" "image Env sets MAN8S_YGGDRASIL_ADDRESS, MAN8S_CONTAINER_NAME; ignored" "journal of man8@contained"
# The init of the machine reads the image config from the host's read-only copy.
# (busybox of the image has cat and sh, no test)
in_machine contained cat /run/host/man8s/image/image.json | grep '"Volumes"' >/dev/null \
    || fail "/run/host/man8s/image/image.json is not bound into the machine"
if in_machine contained sh -c 'echo x > /run/host/man8s/image/image.json' 2>/dev/null; then
    fail "the machine could write the host's copy of its image config"
fi
stop_machine contained

after=$(snapshot_host)
[ "$before" = "$after" ] || fail "the host changed: before/after snapshots of / and /etc/systemd/system differ"

in_host systemctl stop man8@evil.service man8@evilbind.service 2>/dev/null || true
in_host systemctl reset-failed man8@evil.service man8@evilbind.service 2>/dev/null || true
in_host rm /etc/man8s/machines/evil.machine /etc/man8s/machines/evilbind.machine /etc/man8s/machines/contained.machine
in_host systemctl daemon-reload
