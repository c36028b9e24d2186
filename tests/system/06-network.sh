# shellcheck shell=bash
# Network on one host (issue 5): yggdrasil + man8s-bridge → networkd bridge srvgrp0 with <subnet>::1/64, a DHCP
# server and RA; a machine gets a DHCP lease and its 300: address (computed here from SHA-256 of its name); the
# host reaches its web app on that address; two machines on the host reach each other on theirs.
HOST=ygg
ygg_host_up ygg "" || fail "the yggdrasil test host did not come up"
debug_units man8s-bridge.service yggdrasil.service systemd-networkd.service

subnet=$(ygg_subnet_on ygg) || fail "no Yggdrasil subnet from the host's admin socket"
case "$subnet" in 3*::/64) ;; *) fail "unexpected Yggdrasil subnet '$subnet'" ;; esac
[ "$(in_host systemctl is-active man8s-bridge.service)" != failed ] || fail "man8s-bridge.service failed"
bridge=$(bridge_address_of "$subnet")
wait_bridge_address_on ygg "$bridge" || fail "srvgrp0 does not carry $bridge/64 (man8s-bridge + networkd) within 60 s"

declare_machine yweb <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
declare_machine yweb2 <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host systemctl daemon-reload
start_machine yweb
start_machine yweb2

machine_ipv4 yweb >/dev/null || fail "machine yweb got no DHCPv4 lease on srvgrp0"
addr=$(expected_ygg_address yweb "$subnet")
addr2=$(expected_ygg_address yweb2 "$subnet")
has_addr() { in_machine yweb ip -6 -o addr show | grep " $addr/64 " >/dev/null; }
wait_for 30 has_addr || fail "machine yweb does not carry its Yggdrasil address $addr/64"

body=$(http_get "http://[$addr]/") || fail "the host gets no HTTP answer from yweb at [$addr]:80"
[ "$body" = "man8s web ok" ] || fail "yweb at [$addr] answered '$body'"

body=$(machine_http_get yweb "$addr2" 80 /) \
    || fail "machine yweb cannot fetch from yweb2 at [$addr2]: $body"
[ "$body" = "man8s web ok" ] || fail "yweb2 at [$addr2] answered '$body' to yweb"

stop_machine yweb
stop_machine yweb2
host_poweroff ygg || fail "the yggdrasil test host did not power off cleanly"
