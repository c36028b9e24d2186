# shellcheck shell=bash
# Two hosts, one mesh (issue 5): test hosts ya and yb linked by a veth pair made here, each running yggdrasil
# that peers over that link only, and man8s-bridge; the machine on yb fetches a page from the machine on ya by
# ya's machine's 300: address. Machines are filtered (issue 13): ya lists yb as its fleet in man8s.conf
# ([Mesh] AllowFrom=@yb, [Hosts] yb=SUBNET), which man8s-bridge.path picks up.
ygg_host_up ya '^ylink$' || fail "test host ya did not come up"
ygg_host_up yb '^ylink$' || fail "test host yb did not come up"
debug_units man8s-bridge.service yggdrasil.service

# The link between the two hosts: a veth pair, one end moved into each host's network namespace.
la=m8a$$ lb=m8b$$
ip link add "$la" type veth peer name "$lb"
if ! ip link set "$la" netns "$(host_pid ya)" || ! ip link set "$lb" netns "$(host_pid yb)"; then
    ip link del "$la" 2>/dev/null || ip link del "$lb" 2>/dev/null || true
    fail "could not move the veth ends into the hosts"
fi
in_host_on ya ip link set "$la" name ylink up
in_host_on yb ip link set "$lb" name ylink up

sa=$(ygg_subnet_on ya) || fail "no Yggdrasil subnet on ya"
sb=$(ygg_subnet_on yb) || fail "no Yggdrasil subnet on yb"
peered() { in_host_on yb yggdrasilctl -endpoint unix:///var/run/yggdrasil/yggdrasil.sock -json getpeers \
    | jq -e '(.peers // .) | length > 0' >/dev/null; }
wait_for 60 peered || fail "yggdrasil on ya and yb did not peer over the veth link within 60 s"

wait_bridge_address_on ya "$(bridge_address_of "$sa")" || fail "srvgrp0 on ya lacks its <subnet>::1/64"
wait_bridge_address_on yb "$(bridge_address_of "$sb")" || fail "srvgrp0 on yb lacks its <subnet>::1/64"

# yb is ya's fleet: its machines reach every port of ya's machines. man8s-bridge.path reloads the filter.
host_write_on ya /etc/man8s/man8s.conf <<CONF
[Mesh]
AllowFrom=@yb
[Hosts]
yb=$sb
CONF
fleet_applied() { in_host_on ya nft -j list table inet man8s | grep "\"addr\": *\"${sb%%::/64}::\"" >/dev/null; }
wait_for 30 fleet_applied || fail "ya's table inet man8s does not allow yb's subnet $sb within 30 s of writing man8s.conf"

HOST=ya declare_machine wa <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
HOST=yb declare_machine wb <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host_on ya systemctl daemon-reload
in_host_on yb systemctl daemon-reload
HOST=ya start_machine wa
HOST=yb start_machine wb

addr_a=$(expected_ygg_address wa "$sa")
fetch() { HOST=yb machine_http_get wb "$addr_a" 80 /; }
wait_for 60 fetch || fail "machine wb on yb cannot fetch from wa on ya at [$addr_a]"
[ "$(fetch)" = "man8s web ok" ] || fail "wa at [$addr_a] answered '$(fetch)' to wb"

HOST=ya stop_machine wa
HOST=yb stop_machine wb
host_poweroff ya || fail "ya did not power off cleanly"
host_poweroff yb || fail "yb did not power off cleanly"
