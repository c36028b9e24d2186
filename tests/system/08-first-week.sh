# shellcheck shell=bash
# A user's first week (issue 7), end to end on a host with yggdrasil + man8s-bridge: `mbctl machines pull` of a
# two-layer image with a data volume; `systemctl enable --now man8@jour`; the app answers on its 300: address with
# the environment it expects (MAN8S_* and the image's); the image's volume content was copied in; data survives
# restart, `mbctl machines update`, a reboot of the host (which brings the enabled machine back) and
# `mbctl machines remove` without --purge; a bare scratch image; Redis (Debian's, no shell) over redis-cli; a broken declaration is reported by
# `mbctl verify` and does not disturb the others; `systemctl stop` is clean.
HOST=week
ygg_host_up week "" || fail "the test host did not come up"
debug_units man8@jour.service man8@nosh.service man8s-bridge.service
subnet=$(ygg_subnet_on week) || fail "no Yggdrasil subnet on the host"
wait_bridge_address_on week "$(bridge_address_of "$subnet")" || fail "srvgrp0 lacks <subnet>::1/64"
addr=$(expected_ygg_address jour "$subnet")

out=$(in_host timeout 300 mbctl machines pull 127.0.0.1:5000/test/journey:1 jour --volume /data=data --yes 2>&1) \
    || fail "mbctl machines pull journey jour failed: $(tail -n1 <<<"$out")"
in_host test -f /etc/man8s/machines/jour.machine || fail "mbctl machines pull wrote no /etc/man8s/machines/jour.machine"
in_host test -f /var/lib/man8machine_configs/jour/man8env.env || fail "no man8env.env in the machine's config dir"
in_host systemctl daemon-reload
out=$(in_host timeout 240 systemctl enable --now man8@jour.service 2>&1) \
    || fail "systemctl enable --now man8@jour failed: $(unit_error man8@jour.service)"

boots() { http_get "http://[$addr]/boots.txt" | wc -l; }
env=$(http_get "http://[$addr]/env.txt") || fail "no HTTP answer from jour on its Yggdrasil address [$addr]"
assert_contains "$env" "MAN8S_CONTAINER_NAME=jour" "the app's environment"
assert_contains "$env" "MAN8S_YGGDRASIL_ADDRESS=$addr" "the app's environment"
assert_contains "$env" "MAN8S_OCI_IMAGE_URL=" "the app's environment"
assert_contains "$env" "JOURNEY_FROM_IMAGE=yes" "the app's environment (the image's Env)"
[ "$(boots)" = 1 ] || fail "expected 1 line in /data/boots after the first start, got $(boots)"
[ "$(in_host cat /var/lib/man8machine_storage/jour/data/seed.txt 2>&1)" = "seeded by the image" ] \
    || fail "the image's /data content was not copied into /var/lib/man8machine_storage/jour/data"

# A broken declaration is reported and disturbs nobody.
host_write /etc/man8s/machines/broken.machine <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Port=notaport
DECL
if out=$(in_host mbctl verify 2>&1); then fail "mbctl verify accepted a broken declaration"; fi
assert_contains "$out" "broken.machine:3" "mbctl verify's report"
in_host systemctl daemon-reload
[ "$(unit_state man8@jour.service)" = active/success ] || fail "a daemon-reload with a broken declaration disturbed jour"
in_host rm /etc/man8s/machines/broken.machine
in_host systemctl daemon-reload

in_host timeout 120 systemctl restart man8@jour.service || fail "systemctl restart man8@jour failed"
[ "$(boots)" = 2 ] || fail "expected 2 boots after a restart, got $(boots) (data volume lost?)"

# Nothing newer in the registry: update is a no-op; --force reinstalls the rootfs and restarts, data kept.
out=$(in_host timeout 300 mbctl machines update jour 2>&1) || fail "mbctl machines update jour failed: $(tail -n1 <<<"$out")"
[ "$(boots)" = 2 ] || fail "mbctl machines update with nothing new restarted jour ($(boots) boots)"
out=$(in_host timeout 300 mbctl machines update --force jour 2>&1) \
    || fail "mbctl machines update --force jour failed: $(tail -n1 <<<"$out")"
[ "$(unit_state man8@jour.service)" = active/success ] || fail "jour is $(unit_state man8@jour.service) after update"
[ "$(boots)" = 3 ] || fail "expected 3 boots after mbctl machines update --force, got $(boots)"

host_reboot week || fail "the host did not come back from a reboot"
settled() { [ "$(in_host systemctl is-active man8@jour.service)" != activating ]; }
wait_for 120 settled || true
[ "$(unit_state man8@jour.service)" = active/success ] || fail "enabled machine jour is $(unit_state man8@jour.service) after reboot"
[ "$(boots)" = 4 ] || fail "expected 4 boots after the host's reboot, got $(boots)"

stop_machine jour
in_host systemctl disable man8@jour.service >/dev/null 2>&1
out=$(in_host mbctl machines remove jour 2>&1) || fail "mbctl machines remove jour failed: $(tail -n1 <<<"$out")"
in_host test ! -e /etc/man8s/machines/jour.machine || fail "the declaration is still there after machines remove"
in_host test ! -e /var/lib/man8machines/jour || fail "the rootfs is still there after machines remove"
[ "$(in_host sh -c 'wc -l < /var/lib/man8machine_storage/jour/data/boots' 2>&1)" = 4 ] \
    || fail "machines remove without --purge lost the data volume"
in_host test -f /var/lib/man8machine_configs/jour/man8env.env || fail "machines remove without --purge lost the config dir"

# A machine from an image without a shell (a bare scratch image), enabled and started the same way.
out=$(in_host timeout 300 mbctl machines pull 127.0.0.1:5000/test/noshell:1 nosh --yes 2>&1) \
    || fail "mbctl machines pull noshell nosh failed: $(tail -n1 <<<"$out")"
in_host systemctl daemon-reload
in_host timeout 240 systemctl enable --now man8@nosh.service >/dev/null 2>&1 \
    || fail "systemctl enable --now man8@nosh failed: $(unit_error man8@nosh.service)"
assert_contains "$(http_get "http://[$(expected_ygg_address nosh "$subnet")]:8080/")" "noshell ok" "nosh's answer"

stop_machine nosh

# Redis from Debian's package (no shell, a user only in the image), spoken to with redis-cli over its 300: address;
# its append-only file on the data volume keeps a key across a restart.
out=$(in_host timeout 300 mbctl machines pull 127.0.0.1:5000/test/redis:1 red --volume /data=data --yes 2>&1) \
    || fail "mbctl machines pull redis red failed: $(tail -n1 <<<"$out")"
in_host systemctl daemon-reload
in_host timeout 240 systemctl enable --now man8@red.service >/dev/null 2>&1 \
    || fail "systemctl enable --now man8@red failed: $(unit_error man8@red.service)"
debug_units man8@red.service
raddr=$(expected_ygg_address red "$subnet")
redis() { in_host redis-cli -h "$raddr" -p 6379 "$@"; }
pong() { [ "$(redis PING 2>/dev/null)" = PONG ]; }
wait_for 30 pong || fail "redis in machine red does not answer PING on [$raddr]:6379 ($(unit_error man8@red.service))"
[ "$(redis SET greeting 'held out')" = OK ] || fail "redis SET failed"
in_host timeout 120 systemctl restart man8@red.service || fail "systemctl restart man8@red failed"
wait_for 30 pong || fail "redis does not answer after a restart"
[ "$(redis GET greeting)" = "held out" ] || fail "redis lost its key across a restart (data volume?): '$(redis GET greeting)'"
stop_machine red

host_poweroff week || fail "the host did not power off cleanly"
