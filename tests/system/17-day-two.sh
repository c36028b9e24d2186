# shellcheck shell=bash
# Day two (issue 15) on a booted systemd 262:
# 1. an image with a Docker HEALTHCHECK that turns unhealthy: the monitor (man8@'s ExecStartPost=) reports
#    healthy, then unhealthy in the journal and STATUS=, and HealthOnFailure=restart restarts the machine;
#    mbctl machines status shows the health;
# 2. a no-shell image with HealthCmd=http://127.0.0.1:8080/ and Notify=healthy: systemctl start returns with the
#    unit healthy, and a machine ordered after it gets an answer at its very first request; a check that never
#    passes fails the start, and the unit's journal and systemctl status say why;
# 3. AutoUpdate=registry: mbctl auto-update --dry-run lists digests; an update :1 → :2 succeeds; one to an image
#    whose app migrates the data volume and then fails its health check is rolled back: the machine runs :2 again
#    with its data byte for byte as before, and mbctl machines status says what happened. A machine without
#    AutoUpdate= is not touched.
need_main_host
mbctl() { in_host /usr/bin/mbctl "$@"; }

# --- 1. Docker HEALTHCHECK, HealthOnFailure=restart ---------------------------------------------------------------
declare_machine hc <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/health:1
HealthOnFailure=restart
DECL
in_host systemctl daemon-reload
start_machine hc
wait_journal man8@hc.service "hc: healthy" 20 || fail "the image's HEALTHCHECK never reported healthy"
status_is() { [ "$(in_host systemctl show -p StatusText --value "man8@$1.service")" = "$2" ]; }
wait_for 5 status_is hc healthy \
    || fail "STATUS= of man8@hc is '$(in_host systemctl show -p StatusText --value man8@hc.service)', expected 'healthy'"
assert_contains "$(mbctl machines status hc)" "Health: healthy" "mbctl machines status hc"
wait_journal man8@hc.service "hc: unhealthy: exit 1" 30 || fail "the broken app was not reported unhealthy"
wait_journal man8@hc.service "HealthOnFailure=restart" 5 || fail "no HealthOnFailure=restart line"
starts() { in_host journalctl -b -u man8@hc.service -o cat --no-pager | grep -c health-app-started; }
restarted() { [ "$(starts)" -ge 2 ]; }
wait_for 40 restarted || fail "man8@hc was not restarted after turning unhealthy (app started $(starts) times)"
stop_machine hc

# --- 2. Notify=healthy, a distroless app, a dependent machine --------------------------------------------------------
declare_machine api <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/noshell:1
HealthCmd=http://127.0.0.1:8080/
HealthInterval=5s
Notify=healthy
DECL
in_host systemctl daemon-reload
# Learn the address it gets (the DHCP lease stays with the machine across restarts).
start_machine api
api_ip=$(machine_ipv4 api)
stop_machine api
declare_machine client <<DECL
[Machine]
Image=127.0.0.1:5000/test/web:1
Exec=/bin/sh -c "/bin/busybox printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 5 $api_ip 8080 > /www/first.txt; exec httpd -f -p 80 -h /www"
DECL
host_write /etc/systemd/system/man8@client.service.d/after-api.conf <<'UNIT'
[Unit]
Requires=man8@api.service
After=man8@api.service
UNIT
in_host systemctl daemon-reload
start_machine client
[ "$(unit_state man8@api.service)" = active/success ] || fail "man8@api is $(unit_state man8@api.service)"
status=$(in_host systemctl show -p StatusText --value man8@api.service)
[ "$status" = healthy ] || fail "man8@api became active with STATUS='$status', not healthy"
first=$(http_get "http://$(machine_ipv4 client)/first.txt")
assert_contains "$first" "noshell ok" "the client's first request to api"
stop_machine client
in_host rm -f /etc/systemd/system/man8@client.service.d/after-api.conf
stop_machine api

declare_machine never <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/noshell:1
HealthCmd=tcp:9999
HealthStartPeriod=2s
HealthRetries=1
Notify=healthy
DECL
in_host systemctl daemon-reload
if in_host timeout 120 systemctl start man8@never.service 2>/dev/null; then
    fail "systemctl start man8@never succeeded although its check never passes"
fi
# The unit's journal has the check's output, and so has systemctl status (STATUS=, said again by ExecStopPost=
# after nspawn's "Terminating..."), until Restart=on-failure begins the next run, whose own failure says it again.
assert_contains "$(in_host journalctl -b -u man8@never.service -o cat --no-pager)" \
    "did not become healthy: connect to 127.0.0.1:9999" "journal of man8@never"
never_status() { in_host systemctl status --no-pager --lines=0 man8@never.service 2>&1 || true; }
status_says_why() { grep -qF 'Status: "unhealthy: connect to 127.0.0.1:9999' <<<"$(never_status)"; }
wait_for 30 status_says_why || fail "systemctl status man8@never does not say why the start failed: $(never_status)"
in_host systemctl stop man8@never.service 2>/dev/null || true
in_host systemctl reset-failed man8@never.service 2>/dev/null || true

# --- 3. AutoUpdate=registry with health-gated rollback of image and data -----------------------------------------
push_as_latest() { push_image "dayapp$1" test/dayapp:latest; }
push_as_latest 1
declare_machine app <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/dayapp:latest
Volume=/data:data
AutoUpdate=registry
HealthCmd=http://127.0.0.1/ok
HealthInterval=2s
HealthRetries=2
DECL
in_host systemctl daemon-reload
start_machine app
version() { http_get "http://$(machine_ipv4 app)/version"; }
[ "$(version)" = v1 ] || fail "app does not run v1 at first: $(version)"
assert_contains "$(mbctl auto-update --dry-run)" "up to date" "auto-update --dry-run with nothing new"

push_as_latest 2
dry=$(mbctl auto-update --dry-run)
assert_contains "$dry" "sha256:" "auto-update --dry-run after pushing :2"
[ "$(version)" = v1 ] || fail "--dry-run changed the machine"
out=$(mbctl auto-update 2>&1) || fail "auto-update to :2 failed: $(tail -n1 <<<"$out")"
assert_contains "$out" "updated to" "auto-update to :2"
[ "$(version)" = v2 ] || fail "app runs $(version) after the update to :2"
data_hash() { in_host sh -c 'cd /var/lib/man8machine_storage/app && find . -printf "%p %m %s\n" | sort && find . -type f | sort | xargs sha256sum'; }
before=$(data_hash)
assert_contains "$before" "./data/schema" "the data volume after :2"

push_as_latest 3
if out=$(mbctl auto-update 2>&1); then
    fail "auto-update to the broken :3 exited 0: $(tail -n3 <<<"$out")"
fi
assert_contains "$out" "rolled back" "auto-update to :3"
[ "$(version)" = v2 ] || fail "app runs $(version) after the rollback, expected v2"
after=$(data_hash)
[ "$before" = "$after" ] || { say "before: $before"; say "after: $after"; fail "the data volume differs after the rollback"; }
st=$(mbctl machines status app)
assert_contains "$st" "failed at" "mbctl machines status app"
assert_contains "$st" "rolled back: unhealthy" "mbctl machines status app"
assert_contains "$(mbctl machines snapshots app)" "before update to" "mbctl machines snapshots app"
in_host test ! -e /var/lib/man8s/updates/hc.json || fail "auto-update touched hc, which has no AutoUpdate="
stop_machine app
