# shellcheck shell=bash
# mbctl over a booted systemd 262 (issue 6): pull with daemon-reload over D-Bus, start/stop/restart, list/status
# with machined's addresses, shell running a command inside (exit codes, the no-shell message), logs,
# enable/disable --now, remove refusing a running machine and --force on a hand-started one, update rolling back
# from a broken image, and migrate of a machine laid out exactly as the Python mbctl did. The checks live next to
# mbctl (helpers/mbctl/tests/system-smoke.sh) and boot a host of their own from this run's package.
log=$RUN_DIR/mbctl-lifecycle.log
if ! "$REPO/helpers/mbctl/tests/system-smoke.sh" "$PKG_DIR" "$PKG_DIR/usr/bin/mbctl" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "mbctl lifecycle: $(grep -m1 -e '^FAIL' "$log" || tail -n1 "$log")"
fi
grep -c '^ok ' "$log" | sed 's/^/mbctl lifecycle checks passed: /'
