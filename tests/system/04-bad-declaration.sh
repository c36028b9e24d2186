# shellcheck shell=bash
# A bad declaration (issue 3): `systemctl start man8@bad` fails and `systemctl status man8@bad` shows the file,
# line, key and why; a good machine declared next to it is generated and starts as usual.
need_main_host

declare_machine bad <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Imgae=127.0.0.1:5000/test/web:2
DECL
declare_machine noimage <<'DECL'
[Machine]
Exec=/bin/true
DECL
declare_machine good <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host systemctl daemon-reload

if in_host timeout 120 systemctl start man8@bad.service 2>/dev/null; then
    fail "systemctl start man8@bad succeeded although its declaration has an unknown key"
fi
status=$(in_host systemctl status --no-pager -l -n 20 man8@bad.service 2>&1) || true
assert_contains "$status" "/etc/man8s/machines/bad.machine" "systemctl status man8@bad"
assert_contains "$status" "bad.machine:3" "systemctl status man8@bad (file:line)"
assert_contains "$status" "Imgae" "systemctl status man8@bad (the key)"
assert_contains "$status" "Image" "systemctl status man8@bad (the did-you-mean hint)"
# With Restart=on-failure the unit may be waiting for its next try; it must never be active.
state=$(unit_state man8@bad.service)
case "$state" in active/*|*/success) fail "man8@bad is $state after the failed start, expected failed" ;; esac

if in_host timeout 120 systemctl start man8@noimage.service 2>/dev/null; then
    fail "systemctl start man8@noimage succeeded although its declaration has no Image="
fi
status=$(in_host systemctl status --no-pager -l -n 20 man8@noimage.service 2>&1) || true
assert_contains "$status" "noimage.machine" "systemctl status man8@noimage"
assert_contains "$status" "Image" "systemctl status man8@noimage (the missing key)"

in_host test -e /run/systemd/nspawn/good.nspawn || fail "good.nspawn missing: a bad declaration stopped the others"
start_machine good
ip=$(machine_ipv4 good) || fail "machine good got no IPv4 address"
[ "$(http_get "http://$ip/")" = "man8s web ok" ] || fail "good does not answer HTTP at $ip"
stop_machine good

in_host systemctl stop man8@bad.service man8@noimage.service 2>/dev/null || true
in_host systemctl reset-failed man8@bad.service man8@noimage.service 2>/dev/null || true
in_host rm /etc/man8s/machines/bad.machine /etc/man8s/machines/noimage.machine /etc/man8s/machines/good.machine
in_host systemctl daemon-reload
