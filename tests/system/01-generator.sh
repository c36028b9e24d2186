# shellcheck shell=bash
# Generator (issue 3): a declaration in /etc/man8s/machines + `systemctl daemon-reload` → the .nspawn file and
# the unit drop-in exist, run twice gives the same files, and `systemd-analyze verify` accepts the shipped
# units and the generated instance (--man=no: the test host has no man-db; the pages are checked elsewhere).
need_main_host

declare_machine gen <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host systemctl daemon-reload

nspawn=$(in_host cat /run/systemd/nspawn/gen.nspawn 2>/dev/null) \
    || fail "/run/systemd/nspawn/gen.nspawn missing after daemon-reload"
assert_contains "$nspawn" "ProcessTwo=yes" "gen.nspawn"
assert_contains "$nspawn" "PrivateUsers=pick" "gen.nspawn"
assert_contains "$nspawn" "man8s-init" "gen.nspawn"
assert_contains "$nspawn" "Bridge=srvgrp0" "gen.nspawn"

dropins=$(in_host systemctl show -p DropInPaths --value man8@gen.service)
case "$dropins" in
    */run/systemd/generator*) ;;
    *) fail "man8@gen.service has no drop-in from the generator (DropInPaths='$dropins')" ;;
esac
[ "$(in_host systemctl show -p LoadState --value man8@gen.service)" = loaded ] \
    || fail "man8@gen.service is not loaded"

# No [Install] in the declaration: nothing enabled.
if in_host test -e /run/systemd/generator/machines.target.wants/man8@gen.service; then
    fail "man8@gen.service enabled although its declaration has no [Install]"
fi

# Idempotent: a second reload writes exactly the same files.
before=$(in_host sh -c 'cat /run/systemd/nspawn/gen.nspawn; cat /run/systemd/generator*/man8@gen.service.d/*.conf')
in_host systemctl daemon-reload
after=$(in_host sh -c 'cat /run/systemd/nspawn/gen.nspawn; cat /run/systemd/generator*/man8@gen.service.d/*.conf')
[ "$before" = "$after" ] || fail "a second daemon-reload changed the generated files"

# systemd-analyze verify of the shipped units and of the generated instance (with its drop-ins).
out=$(in_host systemd-analyze verify --man=no /usr/lib/systemd/system/man8@.service 2>&1) \
    || fail "systemd-analyze verify man8@.service: $(printf '%s' "$out" | grep -v '^$' | head -n1)"
if in_host test -e /usr/lib/systemd/system/man8s-bridge.service; then
    out=$(in_host systemd-analyze verify --man=no /usr/lib/systemd/system/man8s-bridge.service 2>&1) \
        || fail "systemd-analyze verify man8s-bridge.service: $(printf '%s' "$out" | grep -v '^$' | head -n1)"
fi
out=$(in_host systemd-analyze verify --man=no --generators=yes man8@gen.service 2>&1) \
    || fail "systemd-analyze verify man8@gen.service: $(printf '%s' "$out" | grep -v '^$' | head -n1)"

# Removing the declaration removes the machine's files at the next reload.
in_host rm /etc/man8s/machines/gen.machine
in_host systemctl daemon-reload
if in_host test -e /run/systemd/nspawn/gen.nspawn; then
    fail "/run/systemd/nspawn/gen.nspawn still there after its declaration was removed and daemon-reload"
fi
