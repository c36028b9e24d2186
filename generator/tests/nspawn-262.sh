#!/usr/bin/env bash
# generator/tests/nspawn-262.sh — what the generated files do in a real systemd-nspawn (Debian sid, systemd 262),
# independent of the fetch helper and the real init: on a booted test host of the system tier, a declaration with
# Exec=, Environment=, EnvironmentFile=, a data volume, a port, two credentials and MemoryMax= is started as
# man8@vt.service (ExecStartPre= emptied: no fetch) over a busybox rootfs, with a stand-in init script bound where
# the real one goes. Checks: the init runs as PID 2 from /run/host/man8s/man8s-init with the arguments nspawn
# parsed from Parameters= exactly as meant; credentials arrive in $CREDENTIALS_DIRECTORY; man8env.env and the
# environment file (0600, host root) are readable through their idmapped binds; the data volume is writable and
# files made inside are owned by the host's root; MemoryMax= applies; machinectl lists the machine;
# systemd-analyze verify accepts the unit with the drop-in; nspawn prints no warning about the settings file.
#   PKG_DIR=DIR (a `make install DESTDIR=DIR PREFIX=/usr` tree) to skip building the package. Needs root.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/tests/system
CACHE_DIR=$HERE/.cache
. "$HERE/lib.sh"
[ "$(id -u)" = 0 ] || { echo "nspawn-262: needs root (boots a systemd test host)" >&2; exit 1; }
RUN_DIR=$(mktemp -d /var/tmp/man8s-v262.XXXXXX)
case "$RUN_DIR" in /var/tmp/man8s-v262.?*) ;; *) exit 1 ;; esac
GIVEN_PKG=${PKG_DIR:-}
PKG_DIR=$RUN_DIR/pkg HOST=v
cleanup() { host_poweroff v || true; [ "${KEEP:-0}" = 1 ] || rm -rf --one-file-system "${RUN_DIR:?}"; }
trap cleanup EXIT
BASE=$(ensure_base)
mkdir -p "$PKG_DIR"
if [ -n "$GIVEN_PKG" ]; then
    cp -a "$GIVEN_PKG/." "$PKG_DIR/"
else
    make -C "$REPO" install DESTDIR="$PKG_DIR" PREFIX=/usr >"$RUN_DIR/make.log" 2>&1 \
        || { tail -n 20 "$RUN_DIR/make.log" >&2; exit 1; }
fi
# This check is about the generator and the unit: always the ones of this tree.
cargo build --release --locked -p man8s-generator --manifest-path "$REPO/Cargo.toml" >&2
install -m755 "$REPO/target/release/man8s-generator" "$PKG_DIR/usr/lib/systemd/system-generators/man8s-generator"
mkdir -p "$PKG_DIR/usr/lib/systemd/system" "$PKG_DIR/usr/lib/man8s"
sed 's|@LIBEXECDIR@|/usr/lib/man8s|g; s|@BINDIR@|/usr/bin|g' "$REPO/units/man8@.service" > "$PKG_DIR/usr/lib/systemd/system/man8@.service"
host_create v
host_add_test_bridge v
root=$(host_root v)
# A stand-in init (a busybox script) that shows what nspawn gave it.
cat > "$root/usr/lib/man8s/man8s-init" <<'SH'
#!/bin/sh
echo "INIT-ARGS: $*"
echo "INIT-SELF: $0"
ls -l /run/host/man8s/ | sed 's/^/INIT-LS: /'
echo "INIT-CREDDIR: $CREDENTIALS_DIRECTORY"
ls -ln "$CREDENTIALS_DIRECTORY" | sed 's/^/INIT-CREDLS: /'
for f in "$CREDENTIALS_DIRECTORY"/*; do echo "INIT-CRED $(basename "$f")=$(cat "$f")"; done
echo "INIT-ENVFILE: $(cat /man8env.env)"; ls -ln /man8env.env | sed 's/^/INIT-ENVLS: /'
echo "INIT-ENVFILE0: $(cat /run/host/man8s/env/0)"
echo "INIT-DATA: $(ls -ln /data)"; touch /data/made-inside && echo INIT-DATA-WRITE-OK
echo "INIT-PID: $$"; echo "INIT-UID: $(id -u)"
echo "INIT-RESOLV: $(ls -l /etc/resolv.conf 2>&1)"
echo "INIT-PATH: $PATH"
trap '' HUP
trap 'echo INIT-GOT-SIGTERM; exit 0' TERM
sleep 600 &
wait
SH
chmod 755 "$root/usr/lib/man8s/man8s-init"
m=$root/var/lib/man8machines/vt
mkdir -p "$m/bin" "$m/etc" "$m/data" "$m/usr/bin"
cp "$root/bin/busybox" "$m/bin/busybox"
for t in sh ls cat sed sleep id touch basename; do ln -s busybox "$m/bin/$t"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$m/etc/passwd"
touch "$m/etc/os-release"
mkdir -p "$root/var/lib/man8machine_configs/vt" "$root/var/lib/man8machine_storage/vt/data"
# What man8s-fetch (emptied above) would make: the host-owned state dir whose image config nspawn binds.
mkdir -p "$root/var/lib/man8s/machines/vt/image"
printf 'MAN8S_CONTAINER_NAME=vt\n' > "$root/var/lib/man8machine_configs/vt/man8env.env"
chmod 600 "$root/var/lib/man8machine_configs/vt/man8env.env"
printf 'FROMFILE=1\n' > "$root/etc/vt.env"; chmod 600 "$root/etc/vt.env"
printf 'file-secret' > "$root/etc/vt-secret"; chmod 600 "$root/etc/vt-secret"
mkdir -p "$root/etc/man8s/machines" "$root/etc/systemd/system/man8@vt.service.d"
cat > "$root/etc/man8s/machines/vt.machine" <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Exec=/bin/app "quoted arg" 100%
Environment="GREETING=held out"
EnvironmentFile=/etc/vt.env
Volume=/data:data
Port=8080:80
SetCredential=pw:set-secret
LoadCredential=file:/etc/vt-secret
[Resources]
MemoryMax=256M
DECL
# The fetch helper is not what is checked here.
printf '[Service]\nExecStartPre=\n' > "$root/etc/systemd/system/man8@vt.service.d/90-no-fetch.conf"
host_boot v
failures=0
check() { # DESCRIPTION FIXED-STRING TEXT
    if printf '%s\n' "$3" | grep -qF -- "$2"; then echo "ok   $1"; else echo "FAIL $1: no '$2' in:"; printf '%s\n' "$3" | sed 's/^/    | /'; failures=$((failures + 1)); fi
}
in_host systemctl daemon-reload
in_host test -s /run/systemd/nspawn/vt.nspawn || { echo "FAIL: no /run/systemd/nspawn/vt.nspawn"; exit 1; }
verify=$(in_host systemd-analyze verify --man=no man8@vt.service 2>&1 && echo VERIFY-OK) || true
check "systemd-analyze verify" VERIFY-OK "$verify"
in_host systemctl start --no-block man8@vt.service
for _ in $(seq 1 60); do
    journal=$(in_host journalctl --no-pager -u man8@vt.service -o cat)
    case "$journal" in *INIT-PATH:*) break ;; esac
    sleep 0.5
done
check "init is PID 2" "INIT-PID: 2" "$journal"
check "init bound at /run/host/man8s" "INIT-SELF: /run/host/man8s/man8s-init" "$journal"
check "Parameters= quoting" 'INIT-ARGS: --exec=/bin/app "quoted arg" 100% --env-file=/run/host/man8s/env/0 --env=GREETING=held out' "$journal"
check "credentials directory" "INIT-CREDDIR: /run/host/credentials" "$journal"
check "SetCredential passed on" "INIT-CRED pw=set-secret" "$journal"
check "LoadCredential passed on" "INIT-CRED file=file-secret" "$journal"
check "man8env.env readable (idmap)" "INIT-ENVFILE: MAN8S_CONTAINER_NAME=vt" "$journal"
check "EnvironmentFile readable (idmap)" "INIT-ENVFILE0: FROMFILE=1" "$journal"
check "data volume writable" "INIT-DATA-WRITE-OK" "$journal"
check "PATH default" "INIT-PATH: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "$journal"
case "$journal" in *"Note: in a future version"*|*"Unknown key"*|*"Unknown section"*) echo "FAIL nspawn complained about the settings:"; printf '%s\n' "$journal" | grep -E "Note:|Unknown" | sed 's/^/    | /'; failures=$((failures + 1)) ;; *) echo "ok   no nspawn warnings" ;; esac
owner=$(stat -c %u "$root/var/lib/man8machine_storage/vt/data/made-inside" 2>/dev/null || echo missing)
if [ "$owner" = 0 ]; then echo "ok   file made inside is host root's"; else echo "FAIL file made inside is owned by '$owner', not 0"; failures=$((failures + 1)); fi
check "MemoryMax applied" "MemoryMax=268435456" "$(in_host systemctl show -p MemoryMax man8@vt.service)"
check "machinectl lists it" "vt" "$(in_host machinectl list --no-legend --no-pager 2>&1)"
in_host systemctl stop man8@vt.service
journal=$(in_host journalctl --no-pager -u man8@vt.service -o cat)
check "systemctl stop delivers SIGTERM to the payload" "INIT-GOT-SIGTERM" "$journal"
check "a stopped machine is not failed" "ActiveState=inactive" "$(in_host systemctl show -p ActiveState man8@vt.service)"
check "a stopped machine's result is success" "Result=success" "$(in_host systemctl show -p Result man8@vt.service)"
[ "$failures" = 0 ] && echo "nspawn-262: all checks passed" || { echo "nspawn-262: $failures checks failed"; exit 1; }
