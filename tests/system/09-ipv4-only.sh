# shellcheck shell=bash
# An app that listens on IPv4 only (issue 5): its declared port is still reachable on the machine's Yggdrasil
# address (the init relays [ygg]:PORT to the IPv4 listener once it sees one).
HOST=v4
ygg_host_up v4 "" || fail "the yggdrasil test host did not come up"
debug_units man8@v4web.service man8s-bridge.service
subnet=$(ygg_subnet_on v4) || fail "no Yggdrasil subnet from the host's admin socket"
wait_bridge_address_on v4 "$(bridge_address_of "$subnet")" || fail "srvgrp0 lacks <subnet>::1/64"

# The web image, but httpd bound to 0.0.0.0:8081 only (busybox httpd takes IP:PORT).
declare_machine v4web <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Exec=/bin/httpd -f -v -p 0.0.0.0:8081 -h /www
Port=tcp:8081:8081
DECL
in_host systemctl daemon-reload
start_machine v4web
ip=$(machine_ipv4 v4web) || fail "machine v4web got no IPv4 address"
[ "$(http_get "http://$ip:8081/")" = "man8s web ok" ] || fail "v4web does not answer on its IPv4 address $ip:8081"
addr=$(expected_ygg_address v4web "$subnet")
# The relay starts once the init sees the app listening on IPv4 only: http_get retries for up to 30 s.
body=$(http_get "http://[$addr]:8081/") \
    || fail "the declared port 8081 of an IPv4-only app is not reachable on its Yggdrasil address [$addr]"
[ "$body" = "man8s web ok" ] || fail "[$addr]:8081 answered '$body'"
stop_machine v4web
host_poweroff v4 || fail "the host did not power off cleanly"
