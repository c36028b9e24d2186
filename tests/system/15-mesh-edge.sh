# shellcheck shell=bash
# The mesh edge (issue 13): hosts ma and mb are one user's fleet, ms is a stranger on the same Yggdrasil mesh
# (ms peers with ma only; its traffic to mb is routed by yggdrasil through ma). On mb, man8s.conf lists ma as
# the fleet ([Mesh] AllowFrom=@ma, [Hosts] ma=SUBNET). Checked on mb's machines:
# - the stranger cannot reach an unexposed port (db:80), and can reach an exposed one (pub:80, Expose=80);
# - the fleet reaches everything: machine web on ma and the host ma itself fetch from db;
# - Requires=db starts db first when only app is started; a dependency cycle is that machine's error in
#   systemctl status; mbctl machines status shows the filter and who may reach the machine;
# - stopping man8s-bridge removes the table inet man8s, and only it; starting it again puts it back;
# - the bridge, db's veth and its host0 run at the full MTU, and 20000-byte packets cross the mesh to db whole;
# - names over DNS: a remote machine no Link= names and a machine declared after the asker started;
# - names on the host: ma runs systemd-resolved with nss-resolve and nss-mymachines (Arch's default hosts line),
#   and resolves web.man8s and db.mb.man8s through resolved (Domains=~man8s) to the computed addresses.
# ma boots from a base of its own with those packages (cached like the shared one; the others keep theirs).
resolved_base() { local HOST_EXTRA_APT=(systemd-resolved libnss-resolve libnss-mymachines); ensure_base; }
base_ma=$(resolved_base) || fail "could not build the base with systemd-resolved for ma"
BASE=$base_ma ygg_host_up ma '^ylink' || fail "test host ma did not come up"
ygg_host_up mb '^ylink$' || fail "test host mb did not come up"
ygg_host_up ms '^ylink$' || fail "test host ms (the stranger) did not come up"
debug_units man8s-bridge.service man8s-bridge-reload.service yggdrasil.service

# Links: ma–mb and ma–ms, veth pairs made here, one end moved into each host's network namespace.
link() { # NAME_ON_MA OTHER_HOST
    local a=m8x$$$1 b=m8y$$$1
    ip link add "$a" type veth peer name "$b" || return 1
    if ! ip link set "$a" netns "$(host_pid ma)" || ! ip link set "$b" netns "$(host_pid "$2")"; then
        ip link del "$a" 2>/dev/null || ip link del "$b" 2>/dev/null || true
        return 1
    fi
    in_host_on ma ip link set "$a" name "ylink$1" up && in_host_on "$2" ip link set "$b" name ylink up
}
link 0 mb || fail "could not link ma and mb"
link 1 ms || fail "could not link ma and ms"

sa=$(ygg_subnet_on ma) || fail "no Yggdrasil subnet on ma"
sb=$(ygg_subnet_on mb) || fail "no Yggdrasil subnet on mb"
ss=$(ygg_subnet_on ms) || fail "no Yggdrasil subnet on ms"
wait_bridge_address_on mb "$(bridge_address_of "$sb")" || fail "srvgrp0 on mb lacks its <subnet>::1/64"
wait_bridge_address_on ma "$(bridge_address_of "$sa")" || fail "srvgrp0 on ma lacks its <subnet>::1/64"

# Before man8s.conf names a fleet, man8s-bridge says so in its status.
assert_contains "$(in_host_on mb systemctl show -p StatusText --value man8s-bridge.service)" \
    "man8s.conf names no fleet" "man8s-bridge's status on mb without a fleet"

host_write_on mb /etc/man8s/man8s.conf <<CONF
[Mesh]
AllowFrom=@ma
[Hosts]
ma=$sa
CONF
HOST=mb declare_machine db <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
HOST=mb declare_machine pub <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
[Network]
Expose=80
DECL
HOST=mb declare_machine app <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Requires=db
DECL
HOST=mb declare_machine ping <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
After=pong
DECL
HOST=mb declare_machine pong <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
After=ping
DECL
# ma knows mb by name: machine web links db on mb (Link=db.mb) and finds it in its /etc/hosts.
host_write_on ma /etc/man8s/man8s.conf <<CONF
[Hosts]
mb=$sb
CONF
HOST=ma declare_machine web <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Link=db.mb:database
DECL
in_host_on mb systemctl daemon-reload
in_host_on ma systemctl daemon-reload

# The generator's policy reaches the table through man8s-bridge.path.
addr_db=$(expected_ygg_address db "$sb")
addr_pub=$(expected_ygg_address pub "$sb")
exposed() { in_host_on mb nft -j list table inet man8s | jq -e --arg a "$addr_pub" \
    '[.nftables[].rule? // empty | select(.comment == "pub: Expose=tcp:…")] | length == 1' >/dev/null; }
wait_for 30 exposed || fail "mb's table inet man8s has no Expose= rule for pub within 30 s of daemon-reload"

# Requires=: starting app alone starts db, and db is up before app starts.
HOST=mb start_machine app
[ "$(HOST=mb unit_state man8@db.service)" = active/success ] || fail "starting app (Requires=db) did not start db"
t_db=$(in_host_on mb systemctl show -p ActiveEnterTimestampMonotonic --value man8@db.service)
t_app=$(in_host_on mb systemctl show -p ExecMainStartTimestampMonotonic --value man8@app.service)
[ "$t_db" -gt 0 ] && [ "$t_db" -le "$t_app" ] \
    || fail "db became active at $t_db, after app's nspawn started at $t_app (Requires= must order)"
HOST=mb start_machine pub

# A cycle is the machine's declaration error.
in_host_on mb systemctl start man8@ping.service 2>/dev/null && fail "man8@ping started despite a dependency cycle"
assert_contains "$(in_host_on mb systemctl status man8@ping.service 2>&1)" "dependency cycle" \
    "systemctl status man8@ping"

# The stranger: the exposed port answers, the other is refused (a TCP reset from mb's filter).
stranger_get() { in_host_net_on ms curl -fsS --max-time 5 "http://[$1]/"; }
wait_for 60 stranger_get "$addr_pub" >/dev/null || fail "the stranger ms cannot reach pub's exposed port 80 at [$addr_pub]"
[ "$(stranger_get "$addr_pub")" = "man8s web ok" ] || fail "pub answered the stranger '$(stranger_get "$addr_pub")'"
if out=$(in_host_net_on ms curl -sS --max-time 5 "http://[$addr_db]/" 2>&1); then
    fail "the stranger ms reached db's unexposed port 80 at [$addr_db]: $out"
fi
# Refused at once by the filter's reset (curl 8 on sid says "Couldn't connect to server"), not a timeout.
assert_contains "$out" "Failed to connect" "the stranger's connection to db (should be reset by the filter)"
case "$out" in *"timed out"* | *Timeout*) fail "the stranger's connection to db timed out instead of being refused: $out" ;; esac

# The fleet: machine web on ma and host ma itself reach db's unexposed port.
HOST=ma start_machine web
fetch() { HOST=ma machine_http_get web "$addr_db" 80 /; }
wait_for 60 fetch >/dev/null || fail "machine web on ma (the fleet) cannot fetch from db on mb at [$addr_db]"
[ "$(in_host_net_on ma curl -fsS --max-time 5 "http://[$addr_db]/")" = "man8s web ok" ] \
    || fail "host ma (the fleet, its own 200: address) cannot fetch from db at [$addr_db]"

# Full MTU: the bridge, db's veth port and db's host0 all run at MTUBytes= (default 65535, Yggdrasil's own), and
# one 20000-byte ping from host ma reaches db and comes back unfragmented: IPv6 routers never fragment, and a
# veth end below 20000 drops the frame.
mtu_db=$(HOST=mb in_machine db /bin/busybox cat /sys/class/net/host0/mtu)
mtus="srvgrp0 $(in_host_on mb cat /sys/class/net/srvgrp0/mtu), vb-db $(in_host_on mb cat /sys/class/net/vb-db/mtu), host0 $mtu_db"
[ "$mtus" = "srvgrp0 65535, vb-db 65535, host0 65535" ] || fail "MTUs on mb are $mtus, expected 65535 for all three"
in_host_on ma busybox ping -6 -c 1 -W 5 -s 20000 "$addr_db" >/dev/null \
    || fail "a 20000-byte ping from host ma does not reach db at [$addr_db] in one piece (MTUs on mb: $mtus)"

# Names: web's /etc/hosts (merged by man8s-init from man8s-bridge's file) has db.mb, db.mb.man8s and the alias,
# all at db's computed address; the image's own localhost line stays.
hosts=$(HOST=ma in_machine web cat /etc/hosts)
assert_contains "$hosts" "$addr_db	db.mb db.mb.man8s" "web's /etc/hosts"
assert_contains "$hosts" "$addr_db	database" "web's /etc/hosts"
assert_contains "$hosts" "$(expected_ygg_address web "$sa")	web web.man8s" "web's /etc/hosts"

# Names over DNS (man8s-dns on the bridge, the machines' DHCP name server): web resolves a machine on mb that no
# Link= names (pub.mb.man8s) and one declared on ma after web started (late.man8s), which its /etc/hosts lacks.
HOST=ma declare_machine late <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host_on ma systemctl daemon-reload
assert_contains "$(HOST=ma in_machine web /bin/busybox cat /etc/resolv.conf)" "nameserver 172.17.0.1
search man8s" "web's /etc/resolv.conf (from its DHCP lease)"
lookup_in_web() { HOST=ma in_machine web /bin/busybox nslookup "$1" 2>&1; }
addr_late=$(expected_ygg_address late "$sa")
web_knows_late() { lookup_in_web late.man8s | grep -F "$addr_late" >/dev/null; }
wait_for 15 web_knows_late || fail "web cannot resolve late.man8s to $addr_late: $(lookup_in_web late.man8s)"
assert_contains "$(lookup_in_web pub.mb.man8s)" "$addr_pub" "nslookup pub.mb.man8s in web"
assert_contains "$(lookup_in_web nobody.man8s)" "NXDOMAIN" "nslookup nobody.man8s in web"
# The host asks the same server (networkd gives systemd-resolved the bridge's DNS= with Domains=~man8s).
assert_contains "$(in_host_on mb busybox nslookup db.man8s 172.17.0.1 2>&1)" "$addr_db" "nslookup db.man8s on host mb"

# Names on host ma, end to end: networkd gives resolved the bridge's DNS= with Domains=~man8s, so resolved asks
# man8s-dns for names under the domain (and only those), and NSS (nss-resolve) gets the same answers.
addr_web=$(expected_ygg_address web "$sa")
resolved_knows() { in_host_on ma resolvectl query "$1" 2>&1 | grep -F "$2" >/dev/null; }
wait_for 30 resolved_knows web.man8s "$addr_web" \
    || fail "resolvectl query web.man8s on ma: '$(in_host_on ma resolvectl query web.man8s 2>&1)', expected $addr_web"
assert_contains "$(in_host_on ma resolvectl query db.mb.man8s 2>&1)" "$addr_db" "resolvectl query db.mb.man8s on ma"
assert_contains "$(in_host_on ma getent hosts web.man8s)" "$addr_web" "getent hosts web.man8s on ma"
assert_contains "$(in_host_on ma getent hosts db.mb.man8s)" "$addr_db" "getent hosts db.mb.man8s on ma"
assert_contains "$(in_host_on ma resolvectl domain srvgrp0)" "~man8s" "resolvectl domain srvgrp0 on ma"
# nss-mymachines (and resolved's machined hook) answer the bare name of a running machine with every address
# machined sees in it: the 300: one man8s-dns computes, and also the IPv4 lease, the ULA and the link-local one.
# A machine that is not running (late) or runs on another host has no bare name there; NAME.man8s always has.
mymachines=$(in_host_on ma getent ahosts web)
assert_contains "$mymachines" "$addr_web" "getent ahosts web on ma (nss-mymachines)"
assert_contains "$mymachines" "172.17." "getent ahosts web on ma (nss-mymachines)"
assert_contains "$(in_host_on ma resolvectl query web 2>&1)" "$addr_web" "resolvectl query web on ma (machined)"
in_host_on ma getent ahosts late >/dev/null \
    && fail "getent ahosts late (declared, not running) answered on ma, but nss-mymachines knows running machines only"
assert_contains "$(in_host_on ma getent ahosts late.man8s)" "$addr_late" "getent ahosts late.man8s on ma (not running)"

# mbctl shows it.
st=$(in_host_on mb mbctl machines status db)
assert_contains "$st" "Filter: filtered" "mbctl machines status db"
assert_contains "$st" "from the fleet (${sa}" "mbctl machines status db"
assert_contains "$st" "from everyone else: nothing (no Expose=)" "mbctl machines status db"
assert_contains "$(in_host_on mb mbctl machines status pub)" "from everyone: tcp:80" "mbctl machines status pub"
assert_contains "$(in_host_on mb mbctl machines list --tree)" "└─ requires db" "mbctl machines list --tree"

# Stop removes our table and nothing else; start puts it back.
others() { in_host_on mb nft -j list tables | jq -c '[.nftables[].table? // empty | "\(.family) \(.name)"] - ["inet man8s"]'; }
before=$(others)
in_host_on mb systemctl stop man8s-bridge.service
in_host_on mb nft list table inet man8s >/dev/null 2>&1 && fail "the table inet man8s is still there after systemctl stop man8s-bridge"
[ "$(others)" = "$before" ] || fail "stopping man8s-bridge changed other tables: $before → $(others)"
in_host_on mb systemctl start man8s-bridge.service
in_host_on mb nft list table inet man8s >/dev/null || fail "systemctl start man8s-bridge did not put the table back"
if in_host_net_on ms curl -sS --max-time 5 "http://[$addr_db]/" >/dev/null 2>&1; then
    fail "after a restart of man8s-bridge the stranger reaches db again"
fi

HOST=ma stop_machine web
for m in app db pub; do HOST=mb stop_machine "$m"; done
host_poweroff ms || fail "ms did not power off cleanly"
host_poweroff mb || fail "mb did not power off cleanly"
host_poweroff ma || fail "ma did not power off cleanly"
