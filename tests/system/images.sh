# shellcheck shell=bash
# Test images of the system tier, built on this machine with umoci (no network), into one OCI layout
# $IMAGES_DIR/layout whose tags the driver pushes into each test host's registry as 127.0.0.1:5000/test/TAG:
#   web:1      busybox httpd on :80 serving /www (index.html = "man8s web ok"), logs "web-started" first;
#              /tmp/protected.txt and /run/protected.txt in the image (the init must carry them over nspawn's tmpfs)
#   noshell:1  one static binary /app and nothing else (no shell, no libc, no /etc, no /usr — a scratch image):
#              HTTP on :8080
#   imguser:1  busybox httpd on :8080 whose image config says User=appuser, a user that exists only in the
#              image's /etc/passwd (uid 1234, supplementary group extra 2345), WorkingDirectory=/home/app;
#              it writes `id`, $HOME and `pwd` to /www/id.txt before serving

#   journey:1  two layers (busybox, then the app) with a Volume /data holding seed.txt: on each start the app
#              appends to /data/boots, writes its sorted environment to /www/env.txt, copies /data/boots to
#              /www/boots.txt, logs "journey-started" and serves /www on :80; image Env JOURNEY_FROM_IMAGE=yes

#   hostile:1  busybox httpd on :80 plus an attack on the host (issue 10): /a/link -> /etc/systemd/system
#              (absolute), /a/up -> ../../../../../../../etc/systemd/system (climbing), /a/root -> /, a setuid-root
#              /a/suid, Volumes /a and /a/link/evil, and Env MAN8S_YGGDRASIL_ADDRESS=300:6666::1 MAN8S_CONTAINER_NAME=victim

#   redis:1    Debian sid's Redis server (redis-check-rdb of the base's redis-tools is the same binary as
#              redis-server) with exactly the libraries it links and the C.UTF-8 locale, no shell; User=redis (uid 999, only in the
#              image), listening on [::] and 0.0.0.0 :6379 with its data in /data

#   health:1   busybox httpd on :80 with a Docker HEALTHCHECK (GET /ok with busybox nc every 2 s, 2 retries); its start script
#              puts /www/ok in place, logs "health-app-started", and removes /www/ok after 6 s (turns unhealthy)
#   dayapp1..3 busybox httpd on :80 serving /www/version ("v1".."v3") and /www/ok, with a data volume /data:
#              v1 writes /data/schema=1 when missing, v2 migrates 1→2 once (idempotent), v3 migrates to 3, adds
#              /data/v3-only and serves no /www/ok (its health check fails). The scenario pushes them as
#              test/dayapp:latest in turn.

# umoci unpack + repack of one image: FILL is a function that populates the rootfs given as $1.
build_image() {
    local layout=${1:?} tag=${2:?} fill=${3:?} bundle
    bundle=${IMAGES_DIR:?}/bundle-$tag
    umoci new --image "$layout:empty-$tag" 2>/dev/null || true
    umoci unpack --image "$layout:empty-$tag" "$bundle" >/dev/null
    "$fill" "$bundle/rootfs"
    umoci repack --image "$layout:$tag" "$bundle" >/dev/null
    umoci rm --image "$layout:empty-$tag"
    rm -rf --one-file-system "${bundle:?}"
}

busybox_rootfs() {
    local r=${1:?} applet
    # Like Docker Hub's busybox image: an (empty) /usr beside /bin. The noshell image has none, as scratch images.
    mkdir -p "$r/bin" "$r/etc" "$r/www" "$r/tmp" "$r/run" "$r/usr/sbin" "$r/root" "$r/var"
    chmod 1777 "$r/tmp"
    install -m755 /bin/busybox "$r/bin/busybox"
    for applet in sh httpd echo id cat wget ip pwd sleep ls; do ln -sf busybox "$r/bin/$applet"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
    printf 'root:x:0:\n' >"$r/etc/group"
}

fill_web() {
    local r=${1:?}
    busybox_rootfs "$r"
    printf 'man8s web ok\n' >"$r/www/index.html"
    printf 'protected tmp ok\n' >"$r/tmp/protected.txt"
    printf 'protected run ok\n' >"$r/run/protected.txt"
}

fill_noshell() {
    local r=${1:?}
    install -m755 "${IMAGES_DIR:?}/noshell" "$r/app"
}

fill_imguser() {
    local r=${1:?}
    busybox_rootfs "$r"
    printf 'appuser:x:1234:1234:App User:/home/app:/bin/sh\n' >>"$r/etc/passwd"
    printf 'appgrp:x:1234:\nextra:x:2345:appuser\n' >>"$r/etc/group"
    mkdir -p "$r/home/app"
    printf 'imguser index\n' >"$r/www/index.html"
    chown -R 1234:1234 "$r/home/app" "$r/www"
}

fill_journey_app() {
    local r=${1:?}
    mkdir -p "$r/app" "$r/data"
    printf 'seeded by the image\n' >"$r/data/seed.txt"
    printf 'man8s journey ok\n' >"$r/www/index.html"
    cat >"$r/app/start.sh" <<'SH'
#!/bin/sh
date +%s >> /data/boots
env | sort > /www/env.txt
cp /data/boots /www/boots.txt
echo journey-started
exec httpd -f -v -p 80 -h /www
SH
    chmod 755 "$r/app/start.sh"
    ln -sf busybox "$r/bin/date"; ln -sf busybox "$r/bin/env"; ln -sf busybox "$r/bin/sort"; ln -sf busybox "$r/bin/cp"
}

fill_hostile() {
    local r=${1:?}
    busybox_rootfs "$r"
    printf 'man8s hostile contained\n' >"$r/www/index.html"
    mkdir -p "$r/a"
    ln -s /etc/systemd/system "$r/a/link"
    ln -s ../../../../../../../etc/systemd/system "$r/a/up"
    ln -s / "$r/a/root"
    install -m4755 /bin/busybox "$r/a/suid"
}

# Program PATH of the sid base ($BASE) as DEST in rootfs $1, with the libraries it links (as the base's own ldd
# resolves them).
install_from_base() {
    local r=${1:?} path=${2:?} dest=${3:?} base=${BASE:?} lib
    mkdir -p "$r$(dirname "$dest")" "$r/lib64"
    install -m755 "$base$path" "$r$dest"
    for lib in $(chroot "$base" ldd "$path" | grep -oE '/[^ ]+\.so[^ ]*'); do
        mkdir -p "$r$(dirname "$lib")"
        cp -L "$base$lib" "$r$lib"
    done
}

# The Redis server of the sid base and the libraries it links.
fill_redis() {
    local r=${1:?} base=${BASE:?}
    mkdir -p "$r/usr/bin" "$r/etc" "$r/data" "$r/tmp"
    chmod 1777 "$r/tmp"
    install_from_base "$r" /usr/bin/redis-check-rdb /usr/bin/redis-server
    # Debian-based images carry libc-bin's C.UTF-8 locale (Redis 8 exits when setlocale fails, and the machine's
    # environment has LANG=C.UTF-8 from systemd's default).
    if [ -d "$base/usr/lib/locale/C.utf8" ]; then
        mkdir -p "$r/usr/lib/locale"
        cp -a "$base/usr/lib/locale/C.utf8" "$r/usr/lib/locale/"
    fi
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nredis:x:999:999:Redis:/data:/usr/sbin/nologin\n' >"$r/etc/passwd"
    printf 'root:x:0:\nredis:x:999:\n' >"$r/etc/group"
    chown 999:999 "$r/data"
}

# A second layer on top of TAG: unpack, FILL, repack.
add_layer() {
    local layout=${1:?} tag=${2:?} fill=${3:?} bundle=${IMAGES_DIR:?}/bundle-$2-top
    umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
    "$fill" "$bundle/rootfs"
    umoci repack --image "$layout:$tag" "$bundle" >/dev/null
    rm -rf --one-file-system "${bundle:?}"
}

fill_health() {
    local r=${1:?}
    busybox_rootfs "$r"
    ln -sf busybox "$r/bin/rm"; ln -sf busybox "$r/bin/cp"
    printf 'ok\n' >"$r/ok"
    cat >"$r/start.sh" <<'SH'
#!/bin/sh
cp /ok /www/ok
echo health-app-started
( sleep 6; rm -f /www/ok; echo health-app-broke ) &
exec httpd -f -p 80 -h /www
SH
    chmod 755 "$r/start.sh"
}

# One version of the day-two app; $1 the rootfs, $2 the version (1, 2, 3).
fill_dayapp() {
    local r=${1:?} v=${2:?}
    busybox_rootfs "$r"
    for applet in cp rm test mkdir; do ln -sf busybox "$r/bin/$applet"; done
    mkdir -p "$r/data"
    printf 'v%s\n' "$v" >"$r/www/version"
    [ "$v" = 3 ] || printf 'ok\n' >"$r/www/ok"
    cat >"$r/start.sh" <<SH
#!/bin/sh
v=$v
SH
    cat >>"$r/start.sh" <<'SH'
schema=$(cat /data/schema 2>/dev/null)
case "$v:$schema" in
    1:) echo 1 > /data/schema ;;
    2:1) echo 2 > /data/schema ;;
    3:*) echo 3 > /data/schema; echo "made by v3" > /data/v3-only ;;
esac
echo "dayapp v$v started with schema $(cat /data/schema)"
exec httpd -f -p 80 -h /www
SH
    chmod 755 "$r/start.sh"
}
fill_dayapp1() { fill_dayapp "$1" 1; }
fill_dayapp2() { fill_dayapp "$1" 2; }
fill_dayapp3() { fill_dayapp "$1" 3; }

# Adds a Docker Healthcheck (JSON, durations in ns) to the config of LAYOUT:TAG (umoci cannot).
set_healthcheck() { python3 "${HERE:?}/images/oci_edit.py" healthcheck "${1:?}" "${2:?}" "${3:?}"; }

# Tags LAYOUT:TO as LAYOUT:FROM plus one layer of hard links, each "PATH=TARGET" (tar's own hard-link entries,
# which umoci cannot make: its repack stores a link to an unchanged file of a lower layer as a copy).
add_hardlink_layer() { python3 "${HERE:?}/images/oci_edit.py" hardlinks "${1:?}" "${2:?}" "${3:?}" "${@:4}"; }

# Builds every test image into $IMAGES_DIR/layout (a fresh layout per run; it takes about a second).
build_images() {
    local layout=${IMAGES_DIR:?}/layout
    mkdir -p "$IMAGES_DIR"
    [ -x /bin/busybox ] && /bin/busybox --list | grep -x httpd >/dev/null \
        || { say "images: /bin/busybox (busybox-static) with httpd is needed"; return 1; }
    rustc --edition 2024 -O -C panic=abort -C strip=symbols -C target-feature=+crt-static \
        -o "$IMAGES_DIR/noshell" "$HERE/images/noshell.rs" \
        || { say "images: building the static noshell binary failed"; return 1; }
    if readelf -l "$IMAGES_DIR/noshell" | grep 'program interpreter' >/dev/null; then
        say "images: noshell is not static (it has a program interpreter)"; return 1
    fi
    umoci init --layout "$layout"

    build_image "$layout" web fill_web
    umoci config --image "$layout:web" --config.env PATH=/bin \
        --config.cmd /bin/sh --config.cmd -c \
        --config.cmd 'echo web-started; exec httpd -f -v -p 80 -h /www' >/dev/null

    build_image "$layout" noshell fill_noshell
    umoci config --image "$layout:noshell" --config.cmd /app >/dev/null

    build_image "$layout" imguser fill_imguser
    umoci config --image "$layout:imguser" --config.env PATH=/bin --config.user appuser \
        --config.workingdir /home/app --config.cmd /bin/sh --config.cmd -c \
        --config.cmd 'id > /www/id.txt; echo "HOME=$HOME" >> /www/id.txt; echo "PWD=$(pwd)" >> /www/id.txt; echo imguser-started; exec httpd -f -v -p 8080 -h /www' \
        >/dev/null

    build_image "$layout" journey busybox_rootfs
    add_layer "$layout" journey fill_journey_app
    umoci config --image "$layout:journey" --config.env PATH=/bin --config.env JOURNEY_FROM_IMAGE=yes \
        --config.volume /data --config.cmd /bin/sh --config.cmd /app/start.sh >/dev/null

    build_image "$layout" hostile fill_hostile
    umoci config --image "$layout:hostile" --config.env PATH=/bin \
        --config.env MAN8S_YGGDRASIL_ADDRESS=300:6666::1 --config.env MAN8S_CONTAINER_NAME=victim \
        --config.volume /a --config.volume /a/link/evil \
        --config.cmd /bin/sh --config.cmd -c --config.cmd 'exec httpd -f -v -p 80 -h /www' >/dev/null

    build_image "$layout" redis fill_redis
    umoci config --image "$layout:redis" --config.user redis --config.workingdir /data --config.volume /data \
        --config.cmd /usr/bin/redis-server --config.cmd --bind --config.cmd '::' --config.cmd 0.0.0.0 \
        --config.cmd --protected-mode --config.cmd no --config.cmd --dir --config.cmd /data \
        --config.cmd --appendonly --config.cmd yes >/dev/null

    build_image "$layout" health fill_health
    umoci config --image "$layout:health" --config.env PATH=/bin --config.cmd /bin/sh --config.cmd /start.sh >/dev/null
    local check
    check=$(cat <<'JSON'
{"Test":["CMD-SHELL","/bin/busybox printf 'GET /ok HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 2 127.0.0.1 80 | /bin/busybox grep -q ' 200 '"],"Interval":2000000000,"Timeout":3000000000,"Retries":2}
JSON
)
    set_healthcheck "$layout" health "$check"
    local v
    for v in 1 2 3; do
        build_image "$layout" "dayapp$v" "fill_dayapp$v"
        umoci config --image "$layout:dayapp$v" --config.env PATH=/bin --config.volume /data \
            --config.cmd /bin/sh --config.cmd /start.sh >/dev/null
    done
    umoci gc --layout "$layout"
}
