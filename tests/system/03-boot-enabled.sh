# shellcheck shell=bash
# [Install] WantedBy=machines.target (issue 3): a declaration present at boot makes the machine run after the host
# boots, with nobody calling start; a machine without [Install] stays stopped; a broken declaration that asks to
# start at boot stops neither the boot nor the others. Uses its own host (it reboots it).
HOST=boot
host_up_plain boot || fail "test host boot did not come up"

declare_machine atboot <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1

[Install]
WantedBy=machines.target
DECL
# A broken declaration that also asks to start at boot must neither stop the boot nor the good machine.
declare_machine badatboot <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
Prot=80:80

[Install]
WantedBy=machines.target
DECL
declare_machine notatboot <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
[ "$(in_host systemctl is-enabled machines.target 2>&1)" = enabled ] \
    || fail "machines.target is not enabled on the test host ($(in_host systemctl is-enabled machines.target 2>&1))"

host_reboot boot || fail "the host did not come back from a reboot (see its pending jobs above)"

# The unit may still be pulling right after boot: wait for it to settle.
settled() { [ "$(in_host systemctl is-active man8@atboot.service)" != activating ]; }
wait_for 120 settled || true
state=$(unit_state man8@atboot.service)
[ "$state" = active/success ] || fail "man8@atboot is $state after boot, expected active (WantedBy=machines.target)"
in_host systemctl list-dependencies --plain --no-legend machines.target | grep 'man8@atboot.service' >/dev/null \
    || fail "machines.target does not want man8@atboot.service"
ip=$(machine_ipv4 atboot) || fail "machine atboot got no IPv4 address"
[ "$(http_get "http://$ip/")" = "man8s web ok" ] || fail "atboot does not answer HTTP at $ip"
case "$(unit_state man8@badatboot.service)" in
    active/*) fail "man8@badatboot (a declaration with an unknown key) is active after boot" ;;
esac
state=$(unit_state man8@notatboot.service)
[ "$state" = inactive/success ] || fail "man8@notatboot is $state after boot, expected inactive (no [Install])"

stop_machine atboot
host_poweroff boot || fail "the host did not power off cleanly"
