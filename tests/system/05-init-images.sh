# shellcheck shell=bash
# The init with awkward images (issue 4): an image with no shell at all (one static binary) and an image whose
# User exists only in its own /etc/passwd both start under `systemctl start man8@…` and stop cleanly with SIGTERM;
# the init carried the image's /run and /tmp over nspawn's tmpfs.
need_main_host

declare_machine noshell <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/noshell:1
DECL
declare_machine imguser <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/imguser:1
DECL
declare_machine protect <<'DECL'
[Machine]
Image=127.0.0.1:5000/test/web:1
DECL
in_host systemctl daemon-reload

start_machine imguser
ip=$(machine_ipv4 imguser) || fail "machine imguser got no IPv4 address"
id=$(http_get "http://$ip:8080/id.txt") || fail "no HTTP answer from imguser at $ip:8080"
assert_contains "$id" "uid=1234(appuser)" "imguser's id"
assert_contains "$id" "gid=1234(appgrp)" "imguser's id"
assert_contains "$id" "2345(extra)" "imguser's supplementary groups"
assert_contains "$id" "HOME=/home/app" "imguser's environment"
assert_contains "$id" "PWD=/home/app" "imguser's working directory"
stop_machine imguser

start_machine protect
leader=$(machine_leader protect)
[ -n "$leader" ] || fail "no leader for machine protect"
[ "$(in_host nsenter -t "$leader" -m cat /tmp/protected.txt 2>&1)" = "protected tmp ok" ] \
    || fail "the image's /tmp/protected.txt is not in the running machine's /tmp"
[ "$(in_host nsenter -t "$leader" -m cat /run/protected.txt 2>&1)" = "protected run ok" ] \
    || fail "the image's /run/protected.txt is not in the running machine's /run"
stop_machine protect

# Last: a bare scratch image (no /usr either) is the most likely to trip something.
start_machine noshell
ip=$(machine_ipv4 noshell) || fail "machine noshell got no IPv4 address"
body=$(http_get "http://$ip:8080/") || fail "no HTTP answer from noshell at $ip:8080"
assert_contains "$body" "noshell ok" "noshell's answer"
wait_journal man8@noshell.service "noshell: listening" 10 || fail "noshell's start line is not in its journal"
stop_machine noshell
journal_has man8@noshell.service "noshell: got SIGTERM" || fail "noshell was not stopped with SIGTERM"

in_host rm /etc/man8s/machines/noshell.machine /etc/man8s/machines/imguser.machine /etc/man8s/machines/protect.machine
in_host systemctl daemon-reload
