# shellcheck shell=bash
# Library of the system tier: the cached Debian sid base, test hosts booted with systemd-nspawn, commands run in
# them, and the assertions scenarios use. Sourced by tests/system/run (and, through it, by every scenario).
#
# Every path this file deletes lives under $RUN_DIR (a mktemp dir made by the driver) or under the cache dir, and
# every deletion goes through ${VAR:?} so an unset variable stops the script instead of widening the target.

# Packages of the test host. Changing this list changes the cache key, so a new base is built.
# (sid ships networkd inside the `systemd` package; there is no `systemd-networkd` package there.)
HOST_PACKAGES=(
    systemd systemd-sysv dbus iproute2 systemd-container libnss-myhostname
    docker-registry busybox-static yggdrasil redis-tools ca-certificates
    nftables btrfs-progs curl
)
HOST_SUITE=sid
# Packages apt installs into the base after debootstrap (debootstrap's own resolver is too weak for podman's
# alternatives); the benchmarks add podman here. Part of the cache key. The mirror may serve a snapshot whose
# Release file is past its Valid-Until (debootstrap does not check it; apt does).
HOST_EXTRA_APT=(${HOST_EXTRA_APT[@]+"${HOST_EXTRA_APT[@]}"})
# Bumped when the way the base is prepared (below) changes, so old caches are not reused.
BASE_RECIPE=3

# The Debian mirror apt on this machine uses (deb822 or one-line sources), Debian's own as the fallback.
debian_mirror() {
    local url
    url=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ')
    echo "${url:-http://deb.debian.org/debian}"
}

say() { printf '%s\n' "$*" >&2; }

# Waits until CMD… succeeds, trying every 0.2 s for at most SECONDS. Returns non-zero on timeout.
wait_for() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------------------------
# The cached base root: debootstrap once per machine and package list, reused across runs, never modified.

base_key() {
    printf '%s\n' "$HOST_SUITE" "$BASE_RECIPE" "$(debian_mirror)" "${HOST_PACKAGES[@]}" \
        ${HOST_EXTRA_APT[@]+"+" "${HOST_EXTRA_APT[@]}"} | sha256sum | cut -c1-16
}

# Prints the path of the cached base, building it first when it is missing.
ensure_base() {
    local cache=${CACHE_DIR:?} key base tmp
    key=$(base_key)
    base=$cache/base-$key
    if [ -f "$base/.man8s-base-complete" ]; then
        touch "$base/.man8s-base-complete"
        echo "$base"
        return 0
    fi
    mkdir -p "$cache"
    # Half-built bases of runs that were killed.
    local stale
    for stale in "$cache"/building-*.*; do
        [ -d "$stale" ] || continue
        kill -0 "${stale##*.}" 2>/dev/null || rm -rf --one-file-system "${stale:?}"
    done
    tmp=$cache/building-$key.$$
    rm -rf --one-file-system "${tmp:?}"
    say "system: building the test host base (debootstrap $HOST_SUITE, key $key) …"
    local packages
    packages=$(IFS=,; echo "${HOST_PACKAGES[*]}")
    if ! debootstrap --variant=minbase --include="$packages" "$HOST_SUITE" "$tmp" "$(debian_mirror)" \
            >"$cache/debootstrap-$key.log" 2>&1; then
        say "system: debootstrap failed; last lines of $cache/debootstrap-$key.log:"
        tail -n 15 "$cache/debootstrap-$key.log" >&2
        rm -rf --one-file-system "${tmp:?}"
        return 1
    fi
    if [ "${#HOST_EXTRA_APT[@]}" -gt 0 ] && ! chroot "$tmp" sh -c 'apt-get -o Acquire::Check-Valid-Until=false update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"' \
            sh "${HOST_EXTRA_APT[@]}" >>"$cache/debootstrap-$key.log" 2>&1; then
        say "system: apt-get install ${HOST_EXTRA_APT[*]} in the base failed; see $cache/debootstrap-$key.log"
        rm -rf --one-file-system "${tmp:?}"
        return 1
    fi
    prepare_base "$tmp"
    touch "$tmp/.man8s-base-complete"
    # Bases of other package lists that no run used for a week are dead weight.
    local old
    for old in "$cache"/base-*; do
        [ -d "$old" ] && [ "$old" != "$base" ] || continue
        [ -n "$(find "$old/.man8s-base-complete" -mtime -7 2>/dev/null)" ] || rm -rf --one-file-system "${old:?}"
    done
    if ! mv -T "$tmp" "$base" 2>/dev/null; then
        # Another run built the same base at the same time: use theirs.
        rm -rf --one-file-system "${tmp:?}"
        [ -f "$base/.man8s-base-complete" ] || { say "system: could not install the base at $base"; return 1; }
    fi
    echo "$base"
}

# One-time settings of the base that every test host shares.
prepare_base() {
    local root=${1:?}
    chroot "$root" apt-get clean
    rm -rf "${root:?}"/var/lib/apt/lists/*
    # A root shell on the console would only wait for input that never comes.
    chroot "$root" systemctl mask console-getty.service getty@.service serial-getty@.service >/dev/null 2>&1 || true
    # Nothing in the test host reaches out: no time sync, no apt timers.
    chroot "$root" systemctl mask systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
        >/dev/null 2>&1 || true
    chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
    # A test host has no uplink (--private-network): network-online.target (wanted by yggdrasil.service) would
    # wait two minutes for a link that never comes.
    chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
    # The registry: loopback only, its own storage, no auth (Debian's default listens everywhere).
    mkdir -p "$root/etc/docker/registry"
    cat >"$root/etc/docker/registry/config.yml" <<'EOF'
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
EOF
    chroot "$root" systemctl enable docker-registry.service >/dev/null 2>&1
    # yggdrasil is enabled per host by the scenarios that need it (with its own config), not by default.
    chroot "$root" systemctl disable yggdrasil.service >/dev/null 2>&1 || true
    # In an nspawn-booted host /dev/net/tun is 0600 root and yggdrasil runs as its own user.
    mkdir -p "$root/etc/systemd/system/yggdrasil.service.d"
    printf '[Service]\nExecStartPre=+/bin/chmod 0666 /dev/net/tun\n' \
        >"$root/etc/systemd/system/yggdrasil.service.d/10-test-tun.conf"
}

# ---------------------------------------------------------------------------------------------------------------
# Test hosts. Each host NAME lives in $RUN_DIR/hosts/NAME: root/ (a private copy of the base + the package),
# console.log, nspawn.pid, init.pid.

host_dir() { echo "${RUN_DIR:?}/hosts/${1:?host name}"; }
host_root() { echo "$(host_dir "$1")/root"; }
host_pid() {
    local f
    f=$(host_dir "$1")/init.pid
    [ -s "$f" ] || { say "host $1 is not booted"; return 1; }
    cat "$f"
}

# Makes a fresh host root: a copy of the cached base plus the package built for this run.
host_create() {
    local name=${1:?} dir root
    dir=$(host_dir "$name")
    root=$dir/root
    [ ! -e "$dir" ] || { say "host $name exists already"; return 1; }
    mkdir -p "$dir" || return 1
    cp -a --reflink=auto "${BASE:?}" "$root" || return 1
    rm -f "$root/.man8s-base-complete"
    cp -a "${PKG_DIR:?}/." "$root/" || return 1
    echo "$name" >"$root/etc/hostname"
}

# The host's network: a plain networkd bridge srvgrp0 made by the test (IPv4 DHCP server, IPv6 RA with a ULA
# prefix), for hosts that run machines without Yggdrasil and man8s-bridge.
host_add_test_bridge() {
    local root
    root=$(host_root "${1:?}")
    mkdir -p "$root/etc/systemd/network"
    printf '[NetDev]\nName=srvgrp0\nKind=bridge\n' >"$root/etc/systemd/network/05-test-srvgrp0.netdev"
    cat >"$root/etc/systemd/network/05-test-srvgrp0.network" <<'EOF'
[Match]
Name=srvgrp0

[Link]
RequiredForOnline=no

[Network]
Address=10.231.0.1/24
Address=fd42:8a5e:1::1/64
DHCPServer=yes
IPv6SendRA=yes
ConfigureWithoutCarrier=yes

[DHCPServer]
PoolOffset=10
PoolSize=100

[IPv6Prefix]
Prefix=fd42:8a5e:1::/64
EOF
}

# Yggdrasil in the host: a fresh key, no public peers, multicast only on interfaces matching REGEX (none when
# empty), admin socket at the usual place.
host_add_yggdrasil() {
    local name=${1:?} regex=${2:-} root conf
    root=$(host_root "$name")
    conf=$(yggdrasil -genconf -json) || return 1
    conf=$(jq --arg re "$regex" '.Peers = [] | .Listen = [] | .AdminListen = "unix:///var/run/yggdrasil/yggdrasil.sock"
        | .IfName = "ygg0"
        | .MulticastInterfaces = (if $re == "" then [] else [{Regex: $re, Beacon: true, Listen: true, Port: 0}] end)' \
        <<<"$conf") || return 1
    mkdir -p "$root/etc/yggdrasil"
    printf '%s\n' "$conf" >"$root/etc/yggdrasil/yggdrasil.conf"
    chroot "$root" systemctl enable yggdrasil.service >/dev/null 2>&1 || return 1
}

# Boots host NAME in the background and waits until its systemd has finished starting up. HOST_NSPAWN_EXTRA
# (an array) adds nspawn options (the startup benchmark lets podman's crun use bpf() and keyctl()).
host_boot() {
    local name=${1:?} dir root nspawn_pid init_pid state
    dir=$(host_dir "$name")
    root=$dir/root
    rm -f "$dir/init.pid" "$dir/nspawn.pid"
    # Why each flag (see the shared notes): systemd >= 256 needs the unified hierarchy on this cgroup-v1 machine;
    # --register=no --keep-unit because there is no system bus outside; --console=pipe because nobody reads a tty.
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn -D "$root" -b --register=no --keep-unit \
        --private-network --capability=all --console=pipe -M "$(machine_of "$name")" \
        ${HOST_NSPAWN_EXTRA[@]+"${HOST_NSPAWN_EXTRA[@]}"} \
        </dev/null >>"$dir/console.log" 2>&1 &
    nspawn_pid=$!
    echo "$nspawn_pid" >"$dir/nspawn.pid"
    # The host's PID 1 is the descendant of nspawn whose innermost pid is 1.
    local deadline=$((SECONDS + 30))
    init_pid=
    while [ -z "$init_pid" ]; do
        init_pid=$(find_container_init "$nspawn_pid") || true
        if [ -z "$init_pid" ]; then
            kill -0 "$nspawn_pid" 2>/dev/null || { say "host $name: systemd-nspawn exited during boot"; tail -n 20 "$dir/console.log" >&2; return 1; }
            [ "$SECONDS" -lt "$deadline" ] || { say "host $name: no init process after 30 s"; return 1; }
            sleep 0.1
        fi
    done
    echo "$init_pid" >"$dir/init.pid"
    # Until nspawn has set up the namespaces and exec'd systemd, nsenter/systemctl fail: retry, bounded.
    deadline=$((SECONDS + 120))
    state=
    while :; do
        state=$(timeout 120 nsenter -t "$init_pid" -a systemctl is-system-running --wait 2>/dev/null) || true
        case "$state" in running|degraded|maintenance|stopping) break ;; esac
        kill -0 "$nspawn_pid" 2>/dev/null || break
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.2
    done
    case "$state" in
        running) ;;
        degraded)
            say "host $name booted degraded; failed units:"
            in_host_on "$name" systemctl --failed --no-legend >&2 || true ;;
        *)
            say "host $name: console (last lines):"
            grep -v 'Attempted to remove disk file system' "$dir/console.log" | tail -n 20 >&2
            local jobs
            jobs=$(nsenter -t "$init_pid" -a systemctl list-jobs --no-legend 2>/dev/null | awk '{print $2 " " $3 " " $4}' \
                | head -n 5 | paste -sd, -) || jobs=
            host_poweroff "$name" || true
            say "host $name did not finish booting within 120 s (state '${state:-none}'; jobs still pending: ${jobs:-none})"
            return 1 ;;
    esac
}

machine_of() { echo "m8t-$$-${1:?}"; }

# PID 1 of its namespace, and already systemd (not nspawn's child before its exec).
is_container_init() {
    [ "$(awk '/^NSpid:/ {print $NF}' "/proc/${1:?}/status" 2>/dev/null)" = 1 ] \
        && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = systemd ]
}

find_container_init() {
    local parent=${1:?} child grandchild
    for child in $(pgrep -P "$parent"); do
        is_container_init "$child" && { echo "$child"; return 0; }
        for grandchild in $(pgrep -P "$child"); do
            is_container_init "$grandchild" && { echo "$grandchild"; return 0; }
        done
    done
    return 1
}

# Clean poweroff (SIGRTMIN+4 to the host's systemd), bounded; killed when it does not finish in time.
host_poweroff() {
    local name=${1:?} dir nspawn_pid init_pid
    dir=$(host_dir "$name")
    nspawn_pid=$(cat "$dir/nspawn.pid" 2>/dev/null) || return 0
    init_pid=$(cat "$dir/init.pid" 2>/dev/null) || init_pid=
    rm -f "$dir/init.pid"
    kill -0 "$nspawn_pid" 2>/dev/null || { rm -f "$dir/nspawn.pid"; return 0; }
    [ -n "$init_pid" ] && kill -s RTMIN+4 "$init_pid" 2>/dev/null
    local deadline=$((SECONDS + 60)) clean=0
    while kill -0 "$nspawn_pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "host $name: no clean poweroff within 60 s, killing it"
            [ -n "$init_pid" ] && kill -KILL "$init_pid" 2>/dev/null
            kill -KILL "$nspawn_pid" 2>/dev/null
            clean=1
            sleep 1
            break
        fi
        sleep 0.2
    done
    wait "$nspawn_pid" 2>/dev/null || true
    rm -f "$dir/nspawn.pid"
    return "$clean"
}

host_reboot() {
    host_poweroff "${1:?}" && host_boot "$1"
}

# Runs CMD… inside host NAME (all its namespaces), with a plain environment.
in_host_on() {
    local name=${1:?} pid
    shift
    pid=$(host_pid "$name") || return 1
    nsenter -t "$pid" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM=dumb "$@"
}
# Runs CMD… of THIS machine inside host NAME's network namespace only (curl, skopeo, ip from outside).
in_host_net_on() {
    local name=${1:?} pid
    shift
    pid=$(host_pid "$name") || return 1
    nsenter -t "$pid" -n "$@"
}
# The scenarios' default host is $HOST.
in_host() { in_host_on "${HOST:?}" "$@"; }
in_host_net() { in_host_net_on "${HOST:?}" "$@"; }

# Writes stdin to PATH inside host NAME's root (through the host's own view, so /run works too).
host_write_on() {
    local name=${1:?} path=${2:?}
    in_host_on "$name" sh -c 'mkdir -p "$(dirname "$1")" && cat >"$1"' sh "$path"
}
host_write() { host_write_on "${HOST:?}" "$@"; }

# Pushes every image of the run's OCI layout (or of LAYOUT) into host NAME's registry as 127.0.0.1:5000/test/TAG:1.
host_push_images() {
    local name=${1:?} layout=${2:-${IMAGES_DIR:?}/layout} tag
    wait_for 30 in_host_net_on "$name" curl -fsS --max-time 2 http://127.0.0.1:5000/v2/ \
        || { say "host $name: registry not answering on 127.0.0.1:5000"; return 1; }
    for tag in $(jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"]' "$layout/index.json"); do
        HOST=$name push_image "$tag" "test/$tag:1" "$layout" || { say "host $name: pushing test/$tag failed"; return 1; }
    done
}

# Pushes TAG of the run's OCI layout (or of LAYOUT) into $HOST's registry as 127.0.0.1:5000/REPO (e.g. test/x:latest).
push_image() {
    in_host_net skopeo --insecure-policy copy -q --dest-tls-verify=false \
        "oci:${3:-${IMAGES_DIR:?}/layout}:${1:?}" "docker://127.0.0.1:5000/${2:?}" >&2
}

# ---------------------------------------------------------------------------------------------------------------
# Machines inside a host.

# Writes a declaration /etc/man8s/machines/NAME.machine (stdin) into $HOST.
declare_machine() {
    local name=${1:?}
    host_write "/etc/man8s/machines/$name.machine"
    debug_units "man8@$name.service"
}

# PID of the machine's leader (its PID 1 as seen by the host), empty when not running.
machine_leader() {
    in_host machinectl show -p Leader --value "${1:?}" 2>/dev/null
}

# First global IPv4 address of the machine's host0 (waits up to 30 s for the DHCP lease).
machine_ipv4() {
    local name=${1:?} leader addr deadline=$((SECONDS + 30))
    while :; do
        leader=$(machine_leader "$name") || leader=
        if [ -n "$leader" ]; then
            addr=$(in_host nsenter -t "$leader" -n ip -4 -o addr show scope global 2>/dev/null \
                | awk '{print $4}' | cut -d/ -f1 | head -n1)
            [ -n "$addr" ] && { echo "$addr"; return 0; }
        fi
        [ "$SECONDS" -lt "$deadline" ] || { say "machine $name: no IPv4 address within 30 s"; return 1; }
        sleep 0.3
    done
}

# The machine's Yggdrasil address computed here, independently of man8s: the low 64 bits of SHA-256(name)
# under the /64 PREFIX (given as "a:b:c:d::/64" or "a:b:c:d::").
expected_ygg_address() {
    local name=${1:?} prefix=${2:?} hex
    hex=$(printf '%s' "$name" | sha256sum | cut -c49-64)
    python3 - "$prefix" "$hex" <<'EOF'
import ipaddress, sys
net = ipaddress.IPv6Network(sys.argv[1] if "/" in sys.argv[1] else sys.argv[1] + "/64", strict=False)
assert net.prefixlen == 64, net
print(ipaddress.IPv6Address(int(net.network_address) | int(sys.argv[2], 16)))
EOF
}

# ---------------------------------------------------------------------------------------------------------------
# Assertions. A scenario fails with one line saying why (fail), or at the first failing command (the driver's
# ERR trap records which).

fail() {
    printf '%s\n' "$*" >"${REASON_FILE:?}"
    say "FAIL: $*"
    exit 1
}

# Units whose journal the driver shows when the scenario fails.
debug_units() {
    printf '%s\n' "$@" >>"${DEBUG_UNITS_FILE:?}"
}

assert_contains() {
    local haystack=$1 needle=$2 what=${3:-output}
    case "$haystack" in
        *"$needle"*) ;;
        *)
            say "--- $what was:"; printf '%s\n' "$haystack" | head -n 30 >&2
            fail "$what does not contain '$needle'" ;;
    esac
}

# unit_state UNIT → "ActiveState/Result", e.g. active/success, inactive/success, failed/exit-code.
unit_state() {
    local out
    out=$(in_host systemctl show -p ActiveState -p Result "${1:?}") || return 1
    printf '%s/%s\n' "$(sed -n 's/^ActiveState=//p' <<<"$out")" "$(sed -n 's/^Result=//p' <<<"$out")"
}

# Starts man8@NAME (bounded) and asserts it is active.
start_machine() {
    local name=${1:?} out
    if ! out=$(in_host timeout 240 systemctl start "man8@$name.service" 2>&1); then
        fail "systemctl start man8@$name failed [$(unit_state "man8@$name.service")]: $(unit_error "man8@$name.service")"
    fi
    [ "$(unit_state "man8@$name.service")" = active/success ] \
        || fail "man8@$name is $(unit_state "man8@$name.service") right after a successful start"
}

# The last line of UNIT's journal that says something of its own (not systemd's generic start/fail lines).
unit_error() {
    in_host journalctl -b -u "${1:?}" -o cat --no-pager 2>/dev/null \
        | grep -v -e "^${1%.service}" -e '^Failed to start' -e '^Starting ' -e '^Stopped ' -e '^Stopping ' \
            -e 'pids.max' -e 'Note: in a future version' -e '^Scheduled restart job' \
        | tail -n1
}

# Stops man8@NAME and asserts it ended inactive with Result=success (not failed, not killed).
stop_machine() {
    local name=${1:?} out state
    out=$(in_host timeout 120 systemctl stop "man8@$name.service" 2>&1) \
        || fail "systemctl stop man8@$name failed: $(printf '%s' "$out" | tail -n1)"
    state=$(unit_state "man8@$name.service")
    [ "$state" = inactive/success ] || fail "man8@$name stopped as $state, expected inactive/success"
    if in_host machinectl list --no-legend | awk '{print $1}' | grep -x "$name" >/dev/null; then
        fail "machinectl still lists $name after stop"
    fi
}

# Waits up to SECONDS for TEXT in the journal of UNIT (this boot).
wait_journal() {
    local unit=${1:?} text=${2:?} seconds=${3:-20}
    wait_for "$seconds" journal_has "$unit" "$text"
}
journal_has() {
    in_host journalctl -b -u "${1:?}" --no-pager -o cat | grep -F -- "${2:?}" >/dev/null
}

# HTTP GET from the host's network namespace (curl of this machine), bounded, body on stdout.
http_get() {
    in_host_net curl -fsS --max-time 5 --retry 10 --retry-delay 1 --retry-all-errors --retry-max-time 30 "${1:?}"
}

# ---------------------------------------------------------------------------------------------------------------
# Yggdrasil hosts: yggdrasil + man8s-bridge enabled as a user would, no test bridge.

# Creates and boots host NAME with yggdrasil (multicast on interfaces matching REGEX, none when empty) and
# man8s-bridge.service enabled, and pushes the test images into its registry.
ygg_host_up() {
    local name=${1:?} regex=${2:-}
    # (errexit does not apply inside a function called from `… || fail`: every step checks itself)
    host_create "$name" || return 1
    host_add_yggdrasil "$name" "$regex" || return 1
    chroot "$(host_root "$name")" systemctl enable man8s-bridge.service >/dev/null 2>&1 \
        || { say "host $name: systemctl enable man8s-bridge.service failed (is the unit installed, with [Install]?)"; return 1; }
    host_boot "$name" || return 1
    host_push_images "$name" || return 1
}

# Prints the host's Yggdrasil subnet (e.g. 300:1:2:3::/64) from its admin socket.
ygg_subnet_on() {
    local name=${1:?} out deadline=$((SECONDS + 30))
    until out=$(in_host_on "$name" yggdrasilctl -endpoint unix:///var/run/yggdrasil/yggdrasil.sock -json getself 2>/dev/null) \
            && jq -er .subnet <<<"$out"; do
        [ "$SECONDS" -lt "$deadline" ] || { say "host $name: yggdrasil admin socket did not answer getself"; return 1; }
        sleep 0.5
    done
}

# Waits until srvgrp0 on host NAME carries ADDRESS (man8s-bridge's work, through networkd).
wait_bridge_address_on() {
    local name=${1:?} addr=${2:?}
    bridge_has() { in_host_on "$name" ip -6 -o addr show dev srvgrp0 | grep " $addr/64 " >/dev/null; }
    wait_for 60 bridge_has
}

# The first address of a /64 ("300:a:b:c::/64" → "300:a:b:c::1").
bridge_address_of() {
    python3 -c 'import ipaddress,sys; print(ipaddress.IPv6Network(sys.argv[1]).network_address + 1)' "${1:?}"
}

# HTTP GET from inside machine NAME (busybox nc of the image: the static busybox's wget crashes in glibc's NSS
# inside images without a libc). Prints the body; fails without an HTTP 200.
machine_http_get() {
    local name=${1:?} host=${2:?} port=${3:?} path=${4:-/} out
    out=$(printf 'GET %s HTTP/1.0\r\nHost: x\r\n\r\n' "$path" | in_machine "$name" /bin/busybox nc -w 5 "$host" "$port") \
        || return 1
    head -n1 <<<"$out" | grep ' 200 ' >/dev/null || { say "machine $name: $host:$port$path answered: $(head -n1 <<<"$out")"; return 1; }
    sed '1,/^\r\{0,1\}$/d' <<<"$out"
}

# Runs CMD… inside machine NAME of $HOST (all its namespaces).
in_machine() {
    local name=${1:?} leader
    shift
    leader=$(machine_leader "$name") || leader=
    [ -n "$leader" ] || { say "machine $name is not running"; return 1; }
    in_host nsenter -t "$leader" -a "$@"
}

# ---------------------------------------------------------------------------------------------------------------
# Hosts scenarios ask for.

# A host with the test bridge (no yggdrasil), booted, images pushed. Shared by scenarios that call need_main_host.
host_up_plain() {
    local name=${1:?}
    if [ ! -d "$(host_dir "$name")" ]; then
        host_create "$name" || return 1
        host_add_test_bridge "$name" || return 1
    fi
    host_boot "$name" || return 1
    host_push_images "$name" || return 1
}

# Makes sure the shared main host is up (booting it the first time); fails the scenario when it cannot.
need_main_host() {
    [ -s "$(host_dir main)/init.pid" ] && return 0
    local log
    log=$(host_up_plain main 2>&1) || { printf '%s\n' "$log" >&2; fail "the main test host did not boot: $(tail -n1 <<<"$log")"; }
}

# Leaves the main host as the next scenario expects it: no machine running, no declaration, nothing failed.
reset_main_host() {
    [ -s "$(host_dir main)/init.pid" ] || return 0
    in_host_on main timeout 120 systemctl stop 'man8@*.service' >/dev/null 2>&1 || true
    in_host_on main sh -c 'rm -f /etc/man8s/machines/*.machine; systemctl daemon-reload; systemctl reset-failed' \
        >/dev/null 2>&1 || true
}
