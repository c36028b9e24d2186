# shellcheck shell=bash
# What the generated files do in systemd-nspawn 262 (issue 3), independent of the fetch helper and the real init:
# the init bound at /run/host/man8s/man8s-init runs as PID 2 with Parameters= arriving exactly as quoted,
# credentials reach $CREDENTIALS_DIRECTORY, man8env.env and an EnvironmentFile= (0600) are readable through
# idmapped binds, a data volume is writable, MemoryMax= applies, machinectl lists the machine, systemd-analyze
# verify accepts the unit with its drop-in, nspawn warns about nothing. The checks live next to the generator
# (generator/tests/nspawn-262.sh) and boot a host of their own.
log=$RUN_DIR/nspawn-settings.log
if ! PKG_DIR=$PKG_DIR "$REPO/generator/tests/nspawn-262.sh" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "nspawn settings: $(grep -m1 -e '^FAIL' -e '^not ok' "$log" || tail -n1 "$log")"
fi
tail -n 1 "$log"
