# shellcheck shell=bash
# IPv4 beyond a 1500-byte link from a machine at MTU 65535 (issue 13): the bridge, the veth and host0 run at
# 65535, and the machine still moves bulk TCP both ways with a server past the host's 1500-byte "LAN" link,
# through the host's masquerade (networkd's IPMasquerade= on srvgrp0), because man8s-bridge clamps the TCP MSS
# of connections through the bridge (table inet man8s).
# The path is made so that only the clamp can carry it: the server ("far") sits at MTU 9000 behind a router
# ("lan") whose link to the host is 1500 and which sends no ICMP "fragmentation needed" (a PMTUD black hole,
# as on much of the internet). Without the clamp, far's 8960-byte segments die at that router unreported.
# Checked: host0 is at 65535 in the machine; 32 MiB down and 32 MiB up arrive whole (sha256) within 120 s each;
# the machine learned no path MTU exception (the clamp, not PMTUD, kept segments small). Throughput is printed.
HOST=lm
ygg_host_up lm "" || fail "the test host lm did not come up"
debug_units man8s-bridge.service systemd-networkd.service man8@lweb.service

clamped() { in_host nft -j list table inet man8s | grep '"maxseg"' >/dev/null; }
wait_for 60 clamped || fail "man8s-bridge installed no MSS clamp in table inet man8s within 60 s"

# host lm --lan0 (1500)-- netns lan (router, drops frag-needed) --(9000)-- netns far (the server)
# (Each step checks itself: a scenario's errexit does not apply inside the driver's `if run_scenario`.)
lan() { in_host ip netns exec lan "$@"; }
far() { in_host ip netns exec far "$@"; }
must() { "$@" || fail "setting up the LAN failed at: $*"; }
must in_host ip netns add lan
must in_host ip netns add far
must in_host ip link add lan0 mtu 1500 type veth peer name uplink mtu 1500 netns lan
must in_host ip addr add 192.168.77.1/24 dev lan0
must in_host ip link set lan0 up
must lan ip link add down0 mtu 9000 type veth peer name eth0 mtu 9000 netns far
must lan ip addr add 192.168.77.2/24 dev uplink
must lan ip addr add 192.168.78.1/24 dev down0
must lan ip link set uplink up
must lan ip link set down0 up
must lan sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
lan nft -f - <<'NFT' || fail "could not make the lan router drop ICMP frag-needed"
table ip blackhole {
    chain sent { type filter hook output priority 0; icmp type destination-unreachable icmp code frag-needed drop; }
    chain forwarded { type filter hook forward priority 0; icmp type destination-unreachable icmp code frag-needed drop; }
}
NFT
must far ip link set lo up
must far ip addr add 192.168.78.2/24 dev eth0
must far ip link set eth0 up
must far ip route add default via 192.168.78.1
must in_host ip route add 192.168.78.0/24 via 192.168.77.2
FAR=192.168.78.2
far ping -c1 -W5 192.168.77.1 >/dev/null 2>&1 || far busybox ping -c1 -W5 192.168.77.1 >/dev/null \
    || fail "far (192.168.78.2) does not reach the host across the lan router"

declare_machine lweb <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host systemctl daemon-reload
start_machine lweb
machine_ipv4 lweb >/dev/null || fail "machine lweb got no IPv4 address on srvgrp0"
leader=$(machine_leader lweb) && [ -n "$leader" ] || fail "no leader PID for the running machine lweb"
mtu=$(in_host nsenter -t "$leader" -n ip -o link show host0 | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
[ "$mtu" = 65535 ] || fail "host0 in lweb has MTU '$mtu', expected 65535 (the test would not cross 65535 → 1500)"
[ "$(in_host cat /sys/class/net/srvgrp0/mtu)" = 65535 ] \
    || fail "srvgrp0 has MTU $(in_host cat /sys/class/net/srvgrp0/mtu), expected 65535"

SIZE=$((32 * 1024 * 1024))
must in_host sh -c "head -c $SIZE /dev/urandom >/tmp/lan-blob && rm -f /tmp/lan-up /tmp/lan-down /tmp/lan-hold \
    && mkfifo /tmp/lan-hold"
want=$(in_host sha256sum /tmp/lan-blob | cut -d' ' -f1) && [ -n "$want" ] || fail "no sha256 of the test blob"
listening() { [ -n "$(far ss -Hltn "sport = :$1")" ]; }
# Runs CMD… in the host's shell; prints the milliseconds it took.
timed() { in_host sh -c 's=$(date +%s%N); '"$1"' || exit 1; echo $((($(date +%s%N) - s) / 1000000))'; }
rate() { awk -v b="$SIZE" -v ms="$1" 'BEGIN { printf "%.0f Mbit/s", b * 8 / (ms > 0 ? ms : 1) / 1000 }'; }

# (a) download: far sends the blob, the machine's busybox nc reads it (its stdin stays open: the fifo is never
# written; nc ends when far closes), the host stores what came out of the machine.
in_host timeout 150 ip netns exec far busybox nc -l -p 9001 -e busybox cat /tmp/lan-blob &
server_down=$!
wait_for 10 listening 9001 || fail "the download server in far does not listen on :9001"
ms_down=$(timed "timeout 120 nsenter -t $leader -a /bin/busybox nc $FAR 9001 0<>/tmp/lan-hold >/tmp/lan-down") \
    || fail "download of $SIZE bytes from $FAR:9001 into lweb failed or stalled (120 s): got $(in_host stat -c %s /tmp/lan-down) bytes"
got=$(in_host sha256sum /tmp/lan-down | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "lweb downloaded $(in_host stat -c %s /tmp/lan-down) bytes from $FAR, not the $SIZE sent (sha256 differs)"

# (b) upload: the machine sends the blob, far stores it.
in_host timeout 150 ip netns exec far busybox nc -l -p 9000 -e busybox sh -c 'cat >/tmp/lan-up' &
server_up=$!
wait_for 10 listening 9000 || fail "the upload server in far does not listen on :9000"
ms_up=$(timed "timeout 120 nsenter -t $leader -a /bin/busybox nc $FAR 9000 </tmp/lan-blob") \
    || fail "upload of $SIZE bytes from lweb to $FAR:9000 failed or stalled (120 s)"
stored() { [ "$(in_host sha256sum /tmp/lan-up | cut -d' ' -f1)" = "$want" ]; }
wait_for 20 stored || fail "$FAR stored $(in_host stat -c %s /tmp/lan-up) bytes from lweb, not the $SIZE sent (sha256 differs)"
wait "$server_down" "$server_up" || true

# Segments stayed within 1460 bytes because of the clamp: the machine never needed a PMTU exception.
route=$(in_host nsenter -t "$leader" -n ip -4 route get "$FAR") || fail "lweb has no route to $FAR"
case "$route" in *" mtu "*) fail "lweb learned a path MTU to $FAR (PMTUD, not the MSS clamp, did the work): $route" ;; esac
echo "lan-mtu: 65535 → 1500 → 9000, $SIZE bytes: far → machine $ms_down ms ($(rate "$ms_down")), machine → far $ms_up ms ($(rate "$ms_up"))"

stop_machine lweb
host_poweroff lm || fail "the test host lm did not power off cleanly"
