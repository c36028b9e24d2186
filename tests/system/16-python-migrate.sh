# shellcheck shell=bash
# A machine exactly as the Python mbctl left it (issue 14): its rootfs (image `imguser`, whose config says
# User=appuser; /run and /tmp moved to *.man8sprotected, busybox scripts in /sbin, no .man8s), the
# /var/lib/machines link, its README-style .nspawn with Hostname=, LimitNOFILE=, TemporaryFileSystem= and a
# BindReadOnly= of a directory of its own root (nspawn's `+` source) on top, a man8env.env with
# user edits that only the old loader's reading gives their meaning ($VAR, \\, \$, export, a line without =),
# a config volume and a data volume. `mbctl migrate` + `systemctl start man8@pyapp`: the app's argv, env and
# uid equal what the old loader gives — computed by the test oracle (a busybox re-implementation of the old
# loader written from the issue's facts) run in a copy of the same rootfs, plus nspawn's container_host_* — and
# the nspawn-only settings, the tmpfs and the `+` bind still apply; after `mbctl machines update` (a fresh
# rootfs from the registry) the app still runs as root and the data volume is intact.
need_main_host
debug_units man8@pyapp.service

M=pyapp
ROOTFS=/var/lib/man8machines/$M
CONF=/var/lib/man8machine_configs/$M
DATA=/var/lib/man8machine_storage/$M
YGG=$(in_host mbctl address getsuffix "$M" --prefix 300:2e98:a4b0:1789::/64)

# The rootfs the way the Python tool unpacked and "man8lized" it.
in_host mbctl oci download 127.0.0.1:5000/test/imguser:1 "$ROOTFS" >/dev/null
in_host sh -euc "
    cd $ROOTFS
    rm -rf .man8s
    mv run run.man8sprotected; mkdir run
    mv tmp tmp.man8sprotected; mkdir -m 1777 tmp
    echo 'protected by the old tool' > run.man8sprotected/old.txt
    mkdir -p srv/shared; echo 'shared from the root' > srv/shared/hello.txt
    mkdir -p usr sbin
    for s in busybox-init busybox-execute busybox-copy-protected-dirs busybox-load-envs \
             busybox-autoconfig-networking yggdrasil-config-ipaddr application; do
        printf '#!/bin/sh\necho old %s script\n' \$s > sbin/\$s.sh; chmod 755 sbin/\$s.sh
    done
    mkdir -p /var/lib/machines /etc/systemd/nspawn $CONF/www $DATA/data
    ln -sfn $ROOTFS /var/lib/machines/$M
    echo 'pyapp config ok' > $CONF/www/index.html
    echo 'precious user data' > $DATA/data/precious.txt"
# The app lives in the config volume (so it survives a new rootfs); it reports what it was given.
host_write "$CONF/www/app.sh" <<'SH'
#!/bin/sh
{
    for a in "$@"; do printf 'ARG=%s\n' "$a"; done
    printf 'UID=%s\n' "$(id -u)"
    busybox env | busybox grep -v -e '^PWD=' -e '^SHLVL=' -e '^container_uuid=' \
        -e '^NOTIFY_SOCKET=' -e '^MAN8S_HOST_IFACE=' | busybox sort
} > /data/report.new
[ -e /oracle-only ] && { cat /data/report.new; exit 0; }
printf 'HOSTNAME_IS=%s\nNOFILE=%s\nIFACE=%s\n' "$(busybox hostname)" "$(ulimit -n)" "$MAN8S_HOST_IFACE" >> /data/report.new
printf 'CACHE_FS=%s\nSHARED=%s\n' "$(busybox awk '$2 == "/cache" { print $3 }' /proc/mounts)" \
    "$(cat /shared/hello.txt 2>&1)" >> /data/report.new
busybox mv /data/report.new /data/report.txt
echo pyapp-started
exec httpd -f -p 8080 -h /www
SH
in_host chmod 755 "$CONF/www/app.sh"
host_write "$CONF/man8env.env" <<ENV
MAN8S_CONTAINER_NAME=$M
MAN8S_CONTAINER_TEMPLATE=network_isolated
MAN8S_YGGDRASIL_ADDRESS=$YGG
MAN8S_OCI_IMAGE_URL=127.0.0.1:5000/test/imguser:1
# edited by the user
GREETING=hello world
MAN8S_APPLICATION_ARGS=/www/app.sh "first arg" \$GREETING '\\\$GREETING'
export EXPORTED=yes
DATA_DIR=\$HOME/data
QUOTED="kept quotes"
BACKSLASH=a\\\\b\\n
DOLLAR=\\\$NOT
ALONE
HOST_OS=\$container_host_id
ENV
host_write "/etc/systemd/nspawn/$M.nspawn" <<NSPAWN
[Exec]
Boot=no
ProcessTwo=yes
Parameters=/sbin/busybox-init.sh
ResolvConf=copy-stub
Timezone=copy
LinkJournal=no
PrivateUsers=pick
Environment="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Environment="TERM=xterm"
Environment="HOME=/root"
WorkingDirectory=/
Hostname=oldhost
LimitNOFILE=4096

[Network]
VirtualEthernet=yes
Bridge=srvgrp0

[Files]
PrivateUsersOwnership=map
Bind=$CONF/man8env.env:/man8env.env:idmap
Bind=$CONF/www:/www:idmap
Bind=$DATA/data:/data:idmap
TemporaryFileSystem=/cache:mode=0700
BindReadOnly=+/srv/shared:/shared
NSPAWN

# What the old loader would have given the app: the oracle in a copy of the rootfs, with nspawn's variables.
host_write /var/tmp/oracle.sh <"$REPO/helpers/init/tests/data/python-mbctl-loader.sh"
# nspawn's container_host_* (systemd's CONTAINER_INTERFACE): the host's os-release ID fields, lower-cased.
host_os=$(in_host sh -c '. /etc/os-release; for k in ID VERSION_ID BUILD_ID VARIANT_ID; do
    eval "v=\${$k:-}"; [ -z "$v" ] || printf "container_host_%s=%s " "$(echo "$k" | tr A-Z a-z)" "$v"; done')
want=$(in_host sh -euc "
    o=/var/tmp/oracle-root; rm -rf \${o:?}; cp -a $ROOTFS \$o
    mkdir -p \$o/www \$o/data; cp $CONF/www/app.sh \$o/www/; cp $CONF/man8env.env \$o/man8env.env
    cp /var/tmp/oracle.sh \$o/oracle.sh; touch \$o/oracle-only
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=xterm HOME=/root \
        container=systemd-nspawn $host_os chroot \$o /bin/sh /oracle.sh /man8env.env
    rm -rf \${o:?}")
assert_contains "$want" "ARG=first arg" "the oracle's report"

out=$(in_host mbctl migrate "$M" 2>&1) || fail "mbctl migrate failed: $out"
assert_contains "$out" "LimitNOFILE=4096: not a declaration key; kept as systemd-nspawn --rlimit=RLIMIT_NOFILE=4096" "migrate"
assert_contains "$out" "MAN8S_APPLICATION_ARGS=/www/app.sh" "migrate (the pinned command is pointed out)"
assert_contains "$out" "man8env.env:9: literal mode: DATA_DIR=\"\$HOME/data\"; python-mbctl mode: DATA_DIR=\"/root/data\"" \
    "migrate's report of lines the modes read differently"
assert_contains "$out" "BindReadOnly=+/srv/shared:/shared: carried as Volume=" "migrate"
decl=$(in_host cat "/etc/man8s/machines/$M.machine")
assert_contains "$decl" "Tmpfs=/cache:mode=0700" "the declaration (the old TemporaryFileSystem=)"
assert_contains "$decl" "Volume=/shared:+/srv/shared:ro" "the declaration (the old + bind)"
assert_contains "$decl" "EnvironmentCompat=python-mbctl" "the declaration"
assert_contains "$decl" "User=0" "the declaration"
assert_contains "$decl" "Hostname=oldhost" "the declaration"
assert_contains "$decl" "CAP_SYS_ADMIN" "the declaration (nspawn's default capabilities, which the old app had)"
in_host test -f "/etc/systemd/nspawn/$M.nspawn.python-mbctl" || fail "migrate did not keep the old settings file"

start_machine "$M"
wait_journal "man8@$M.service" pyapp-started 30 || fail "the migrated app did not start: $(unit_error "man8@$M.service")"
got=$(in_host cat "$DATA/data/report.txt")
# Everything the oracle saw, the app saw (the extra lines are checked below).
while IFS= read -r line; do
    grep -qxF -- "$line" <<<"$got" || fail "the app's report lacks '$line' that the old loader gives; report: $(tr '\n' '|' <<<"$got")"
done <<<"$want"
for line in "ARG=first arg" "ARG=hello" "ARG=world" 'ARG=$GREETING' "UID=0" "EXPORTED=yes" "DATA_DIR=/root/data" \
    'QUOTED="kept quotes"' 'BACKSLASH=a\b\n' 'DOLLAR=$NOT' "ALONE=ALONE" "TERM=xterm" "container=systemd-nspawn" \
    "container_host_id=debian" "HOST_OS=debian" \
    "HOSTNAME_IS=oldhost" "NOFILE=4096" "IFACE=host0" "CACHE_FS=tmpfs" "SHARED=shared from the root"; do
    grep -qxF -- "$line" <<<"$got" || fail "the app's report lacks '$line'; report: $(tr '\n' '|' <<<"$got")"
done
[ "$(wc -l <<<"$got")" = "$(($(wc -l <<<"$want") + 5))" ] \
    || fail "the app saw more than the old loader gives: $(diff <(echo "$want") <(echo "$got") | tr '\n' '|')"
leader=$(machine_leader "$M")
[ "$(in_host nsenter -t "$leader" -m cat /run/old.txt 2>&1)" = "protected by the old tool" ] \
    || fail "the old tool's /run.man8sprotected did not reach /run"

# A fresh rootfs from the registry: the image's User=appuser must not take over, the data stays.
in_host rm "$DATA/data/report.txt"
out=$(in_host timeout 240 mbctl machines update "$M" --force 2>&1) || fail "mbctl machines update failed: $out"
in_host test ! -e "$ROOTFS/sbin/busybox-init.sh" || fail "update did not install a new rootfs"
wait_for 60 in_host test -f "$DATA/data/report.txt" || fail "the app did not start again after update: $(unit_error "man8@$M.service")"
got=$(in_host cat "$DATA/data/report.txt")
assert_contains "$got" "UID=0" "the app's report after update"
assert_contains "$got" "DATA_DIR=/root/data" "the app's report after update"
[ "$(in_host cat "$DATA/data/precious.txt")" = "precious user data" ] || fail "update lost the data volume"
[ "$(in_host cat "$CONF/www/index.html")" = "pyapp config ok" ] || fail "update lost the config volume"

out=$(in_host mbctl machines remove "$M" --force 2>&1) || fail "remove failed: $out"
in_host test ! -e "/etc/systemd/nspawn/$M.nspawn.python-mbctl" || fail "remove left the kept .nspawn.python-mbctl"
in_host test ! -e "/etc/systemd/system/man8@$M.service.d/60-python-mbctl.conf" || fail "remove left migrate's drop-in"
in_host test -f "$DATA/data/precious.txt" || fail "remove without --purge deleted the data"
in_host rm -rf "${CONF:?}" "${DATA:?}"
