# shellcheck shell=bash
# Template=macvlan (issue 5): the machine sits on a macvlan of a host interface instead of the bridge. The host
# gets a parent interface (one end of a veth pair: this kernel has no dummy module) with a macvlan of its own
# (bridge mode, the way a LAN peer would see the machine); the machine's declared Yggdrasil-range address must be on its macvlan link and answer HTTP from that
# peer. Nobody serves DHCP on that parent: the init must say so in one line and carry on, not kill the machine.
need_main_host

in_host ip link add m8lan0 type veth peer name m8lan0b
in_host ip link set m8lan0b up
in_host ip link set m8lan0 up
in_host ip link add m8peer link m8lan0 type macvlan mode bridge
in_host ip -6 addr add 300:77::1/64 dev m8peer nodad
in_host ip link set m8peer up

declare_machine mvweb <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Template=macvlan

[Network]
MACVLAN=m8lan0
YggdrasilAddress=300:77::5
DECL
in_host systemctl daemon-reload
in_host grep -qx 'MACVLAN=m8lan0' /run/systemd/nspawn/mvweb.nspawn || fail "mvweb.nspawn has no MACVLAN=m8lan0"
start_machine mvweb

link=$(in_machine mvweb ip -o link show | awk -F': ' '$2 != "lo" {print $2}' | cut -d@ -f1 | head -n1)
case "$link" in mv-*) ;; *) fail "machine mvweb's link is '$link', not a macvlan (mv-…)" ;; esac
has_addr() { in_machine mvweb ip -6 -o addr show dev "$link" | grep ' 300:77::5/64 ' >/dev/null; }
wait_for 30 has_addr || fail "machine mvweb does not carry 300:77::5/64 on $link"
wait_journal man8@mvweb.service "DHCP" 30 || fail "no journal line about DHCP on a parent without a DHCP server"

body=$(http_get "http://[300:77::5]/") || fail "the LAN peer gets no HTTP answer from mvweb at [300:77::5]:80"
[ "$body" = "man8s web ok" ] || fail "mvweb answered '$body'"

stop_machine mvweb
in_host ip link del m8peer
in_host ip link del m8lan0
