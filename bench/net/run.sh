#!/usr/bin/env bash
# bench/net: throughput and latency of a machine's addresses, in namespaces made here.
#
#   host ns "H"    bridge br0 = 172.31.0.1/16 + <ygg subnet>::1/64, its own yggdrasil (TUN in H)
#   machine ns "M" veth on br0: 172.31.0.2/16 + <ygg subnet>::<suffix of "benchmachine">/64
#   remote ns "A"  another yggdrasil node, peered with H over a veth (the mesh path)
#
# Measured (iperf3 for throughput, bench's tcp-rr for round trips):
#   host -> machine over the bridge's IPv4            (what the Python tool's users had)
#   host -> machine over its Yggdrasil address        (plain IPv6 on the same bridge)
#   host -> IPv4-only app through the man8s forwarder (vs the same app on IPv6 directly)
#   remote Yggdrasil node -> the host itself, and -> the machine (through both yggdrasil daemons)
# Ratios are printed against the bridge's IPv4. Needs root, iperf3, yggdrasil. Traffic stays
# inside the namespaces. Usage: bench/net/run.sh [SECONDS_PER_RUN]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "bench/net: needs root (network namespaces)" >&2; exit 1; }
for t in iperf3 yggdrasil yggdrasilctl ip; do
    command -v "$t" >/dev/null || { echo "bench/net: $t not installed (apt-get install iperf3 yggdrasil iproute2)" >&2; exit 1; }
done
SECS=${1:-3}
# MTU of the bridge and the machine's veth (nspawn's default is 1500).
MTU=${MTU:-1500}
RR=${RR:-20000}
export RUST_BACKTRACE=0

cargo build -q --release -p man8s-bridge --examples
EX=target/release/examples
TMP=$(mktemp -d /tmp/m8bench-net.XXXXXX)
H=m8bn-h-$$ M=m8bn-m-$$ A=m8bn-a-$$
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "$H" "$M" "$A"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "${TMP:?}"
}
trap cleanup EXIT
bg() { "$@" >>"$TMP/bg.log" 2>&1 & PIDS+=($!); }
inh() { ip netns exec "$H" "$@"; }
inm() { ip netns exec "$M" "$@"; }
ina() { ip netns exec "$A" "$@"; }

for n in "$H" "$M" "$A"; do ip netns add "$n"; ip -n "$n" link set lo up; done

# yggdrasil on H and A, peering only over the H<->A veth (ULA link addresses), no multicast.
ip link add veth-a netns "$A" type veth peer name veth-h netns "$H"
ip -n "$H" addr add fd00:8b::1/64 dev veth-h nodad; ip -n "$H" link set veth-h up
ip -n "$A" addr add fd00:8b::2/64 dev veth-a nodad; ip -n "$A" link set veth-a up
ygg_conf() { # NAME LISTEN PEERS
    yggdrasil -genconf -json | python3 -c '
import json, sys
c = json.load(sys.stdin)
c.update(AdminListen="unix://'"$TMP"'/'"$1"'.sock", MulticastInterfaces=[], IfName="ygg0",
         Listen='"$2"', Peers='"$3"')
json.dump(c, sys.stdout)' >"$TMP/$1.json"
}
ygg_conf h '["tcp://[fd00:8b::1]:12345"]' '[]'
ygg_conf a '[]' '["tcp://[fd00:8b::1]:12345"]'
bg inh yggdrasil -useconffile "$TMP/h.json"
bg ina yggdrasil -useconffile "$TMP/a.json"
for s in h a; do
    for _ in $(seq 100); do [ -S "$TMP/$s.sock" ] && break; sleep 0.1; done
done
SUBNET=$(yggdrasilctl -endpoint "unix://$TMP/h.sock" -json getself | python3 -c 'import json,sys; print(json.load(sys.stdin)["subnet"])')
PREFIX=${SUBNET%::/64}
SUFFIX=$(python3 -c 'import hashlib; d=hashlib.sha256(b"benchmachine").digest()[-8:]; print(":".join(d[i:i+2].hex() for i in range(0,8,2)))')
YGG="$PREFIX:$SUFFIX"

# The bridge and the machine, as man8s-bridge and man8s-init set them up.
ip -n "$H" link add br0 type bridge
ip -n "$H" addr add 172.31.0.1/16 dev br0
ip -n "$H" addr add "$PREFIX::1/64" dev br0 nodad
ip -n "$H" link set br0 up
ip link add vb-m netns "$H" type veth peer name host0 netns "$M"
ip -n "$H" link set vb-m master br0 up
ip -n "$M" addr add 172.31.0.2/16 dev host0
ip -n "$M" addr add "$YGG/64" dev host0 nodad
ip -n "$M" link set host0 up
ip -n "$H" link set vb-m mtu "$MTU"; ip -n "$M" link set host0 mtu "$MTU"; ip -n "$H" link set br0 mtu "$MTU"
ip -n "$M" route add default via 172.31.0.1
ip -n "$M" -6 route add default via "$PREFIX::1"
inh sysctl -qw net.ipv6.conf.all.forwarding=1

# Servers in the machine: dual-stack (direct) and IPv4-only behind the forwarder.
bg inm iperf3 -s -p 5201
bg inm iperf3 -s -p 5202 -B 127.0.0.1
bg inm "$EX/tcp-rr" server "[::]:7000"
bg inm "$EX/tcp-rr" server "127.0.0.1:7001"
bg inm "$EX/forward-run" "$YGG" 5202 7001
# And on the host itself, as the mesh baseline (what yggdrasil gives without any bridge).
bg inh iperf3 -s -p 5301
bg inh "$EX/tcp-rr" server "[::]:7300"
HOSTYGG=$(yggdrasilctl -endpoint "unix://$TMP/h.sock" -json getself | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
sleep 1

wait_tcp() { # NS ADDR PORT
    for _ in $(seq 150); do
        ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench/net: nothing answers on $2:$3" >&2; return 1
}
wait_tcp "$H" "$YGG" 5202
wait_tcp "$H" "$YGG" 7001
wait_tcp "$A" "$YGG" 5201 # the mesh path is up (peering can take a moment)

gbps() { # NS ADDR PORT
    ip netns exec "$1" iperf3 -c "$2" -p "$3" -t "$SECS" -J |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
rr() { ip netns exec "$1" "$EX/tcp-rr" client "$2" "$RR"; }

printf '%-44s %10s %12s %10s\n' "path" "Gbit/s" "rtt med/p99" "vs IPv4"
row() { # LABEL GBPS RTT
    printf '%-44s %10s %12s %9sx\n' "$1" "$2" "$(echo "$3" | tr ' ' /)" \
        "$(python3 -c "print('%.2f' % ($2/$BASE))")"
}
BASE=$(gbps "$H" 172.31.0.2 5201); BASE_RR=$(rr "$H" 172.31.0.2:7000)
row "host -> machine, bridge IPv4" "$BASE" "$BASE_RR"
row "host -> machine, Yggdrasil address (direct)" "$(gbps "$H" "$YGG" 5201)" "$(rr "$H" "[$YGG]:7000")"
row "host -> IPv4-only app via forwarder" "$(gbps "$H" "$YGG" 5202)" "$(rr "$H" "[$YGG]:7001")"
row "remote ygg node -> host itself (mesh)" "$(gbps "$A" "$HOSTYGG" 5301)" "$(rr "$A" "[$HOSTYGG]:7300")"
row "remote ygg node -> machine (mesh + bridge)" "$(gbps "$A" "$YGG" 5201)" "$(rr "$A" "[$YGG]:7000")"
echo "(rtt in microseconds, $RR round trips of 1 byte; throughput: iperf3, ${SECS}s, 1 stream; bridge MTU $MTU)"
