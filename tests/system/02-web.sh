# shellcheck shell=bash
# A busybox httpd image (issue 3): `systemctl start man8@web` pulls from the host's registry and runs the app
# inside nspawn; machinectl lists it; its output is in `journalctl -u man8@web`; it answers HTTP over the bridge;
# and over IPv6 (SLAAC); `systemctl stop` stops it cleanly (inactive, not failed).
need_main_host

declare_machine web <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host systemctl daemon-reload
start_machine web

in_host machinectl list --no-legend | awk '{print $1}' | grep -x web >/dev/null || fail "machinectl list does not show web"
wait_journal man8@web.service web-started 20 || fail "the app's output 'web-started' is not in journalctl -u man8@web"

ip=$(machine_ipv4 web) || fail "machine web got no IPv4 address on the bridge"
body=$(http_get "http://$ip/") || fail "no HTTP answer from web at $ip:80"
[ "$body" = "man8s web ok" ] || fail "web at $ip answered '$body', expected 'man8s web ok'"
wait_journal man8@web.service "response:200" 10 || fail "httpd's request log is not in the journal of man8@web"

# IPv6 SLAAC from the bridge's router advertisements (the test bridge announces fd42:8a5e:1::/64).
slaac() { in_machine web ip -6 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | grep -m1 '^fd42:8a5e:1:'; }
wait_for 30 slaac || fail "machine web got no SLAAC address in fd42:8a5e:1::/64"
body=$(http_get "http://[$(slaac)]/") || fail "no HTTP answer from web at [$(slaac)]:80"
[ "$body" = "man8s web ok" ] || fail "web at [$(slaac)] answered '$body'"

# The rootfs is where the contract says, and machinectl sees it as an image.
in_host test -x /var/lib/man8machines/web/bin/busybox || fail "/var/lib/man8machines/web has no rootfs"

stop_machine web
