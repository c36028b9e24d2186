# shellcheck shell=bash
# The image corpus of tests/system/14-image-corpus.sh: look-alikes of popular official images, with their image
# configs (User, WorkingDir, Entrypoint + Cmd, Env, Volume, StopSignal, Healthcheck) and entrypoint scripts
# shaped like the originals, built with umoci into their own layout $IMAGES_DIR/corpus (pushed only by the
# scenario that uses them). Servers are busybox, Debian's own binaries (docker-registry), or images/corpus.rs
# (postgres and nginx, whose signal semantics the scenario checks).
#   pglike     postgres: docker-entrypoint.sh as root chowns $PGDATA (a Volume) and steps down to postgres (999)
#              with su; StopSignal SIGINT; POSTGRES_SHM_MB=96 of /dev/shm (more than Docker's default 64 MiB)
#   nginxlike  nginx: /docker-entrypoint.sh runs /docker-entrypoint.d/*.sh, then `nginx -g 'daemon off;'` on :80;
#              StopSignal SIGQUIT (graceful: transfers in flight finish), SIGHUP re-reads /etc/nginx/greeting
#   registry   distribution: Debian's docker-registry as /bin/registry, /entrypoint.sh + Cmd
#              /etc/docker/registry/config.yml, :5000, Volume /var/lib/registry
#   nodeapp    a Node-style app: User node (1000), WorkingDir /home/node/app, Entrypoint docker-entrypoint.sh,
#              Cmd app-server --port 3000, Env NODE_ENV=production, Volume /home/node/app/data owned by node
#   kuma       a monitoring app with a HEALTHCHECK (busybox nc against its own :3001/healthz every second)
#   distroless a Go-style static binary as nonroot 65532:65532 with no /etc at all (the noshell server, :8080)
#   vaultlike  a multi-process image (Bitwarden/Vaultwarden self-host style): the entrypoint creates user
#              bitwarden from APP_UID/APP_GID at run time, then a supervisor runs two httpd services (:8080
#              serving the Volume /etc/bitwarden, :8081) as that user and stops both on SIGTERM
#   searchlike Elasticsearch-style: refuses to start (exit 78) unless `ulimit -n` is at least 65535 (or
#              $ES_MIN_NOFILE); :9200 as uid 1000

corpus_busybox() {
    local r=${1:?} applet
    busybox_rootfs "$r"
    for applet in mkdir chown chmod su rm cp date env sort grep tr printf cut wc test touch kill df; do
        ln -sf busybox "$r/bin/$applet"
    done
}

corpus_server() {
    install -m755 "${IMAGES_DIR:?}/corpus-server" "${1:?}${2:?}"
}

fill_pglike() {
    local r=${1:?}
    corpus_busybox "$r"
    mkdir -p "$r/usr/local/bin" "$r/var/lib/postgresql/data" "$r/var/run/postgresql"
    corpus_server "$r" /usr/local/bin/postgres
    printf 'postgres:x:999:999::/var/lib/postgresql:/bin/sh\n' >>"$r/etc/passwd"
    printf 'postgres:x:999:\n' >>"$r/etc/group"
    cat >"$r/usr/local/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
set -e
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    echo "docker-entrypoint.sh: stepping down to postgres"
    exec su postgres -s /bin/sh -c 'exec "$0" "$@"' -- "$0" "$@"
fi
echo "docker-entrypoint.sh: running $* as $(id -un)"
exec "$@"
SH
    chmod 755 "$r/usr/local/bin/docker-entrypoint.sh"
}

fill_nginxlike() {
    local r=${1:?}
    corpus_busybox "$r"
    mkdir -p "$r/usr/sbin" "$r/etc/nginx" "$r/docker-entrypoint.d"
    corpus_server "$r" /usr/sbin/nginx
    cat >"$r/docker-entrypoint.sh" <<'SH'
#!/bin/sh
set -e
if [ "$1" = nginx ]; then
    for f in /docker-entrypoint.d/*.sh; do
        echo "$0: Launching $f"
        "$f"
    done
    echo "$0: Configuration complete; ready for start up"
fi
exec "$@"
SH
    cat >"$r/docker-entrypoint.d/20-greeting.sh" <<'SH'
#!/bin/sh
echo "${NGINX_GREETING:-welcome}" > /etc/nginx/greeting
SH
    chmod 755 "$r/docker-entrypoint.sh" "$r/docker-entrypoint.d/20-greeting.sh"
}

fill_registry() {
    local r=${1:?}
    corpus_busybox "$r"
    install_from_base "$r" /usr/bin/docker-registry /bin/registry
    mkdir -p "$r/etc/docker/registry" "$r/var/lib/registry"
    cat >"$r/etc/docker/registry/config.yml" <<'YML'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
YML
    cat >"$r/entrypoint.sh" <<'SH'
#!/bin/sh
set -e
case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac
exec "$@"
SH
    chmod 755 "$r/entrypoint.sh"
}

fill_nodeapp() {
    local r=${1:?}
    corpus_busybox "$r"
    mkdir -p "$r/usr/local/bin" "$r/home/node/app/public" "$r/home/node/app/data"
    printf 'node:x:1000:1000::/home/node:/bin/sh\n' >>"$r/etc/passwd"
    printf 'node:x:1000:\n' >>"$r/etc/group"
    cat >"$r/usr/local/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
set -e
# As node's: a first argument that is an option (or no command at all) runs it with node.
if [ "${1#-}" != "$1" ] || [ -z "$(command -v "$1" 2>/dev/null)" ]; then
    set -- node "$@"
fi
echo "docker-entrypoint.sh: exec $*" > /home/node/app/public/entrypoint.txt
exec "$@"
SH
    cat >"$r/usr/local/bin/app-server" <<'SH'
#!/bin/sh
[ "$1" = --port ] || { echo "usage: app-server --port N" >&2; exit 2; }
port=$2
{ id; echo "PWD=$(pwd)"; echo "ARGS=$*"; env | sort; } > public/info.txt
date +%s >> data/visits
cp data/visits public/visits.txt
echo "app-server: listening on $port"
exec httpd -f -p "$port" -h public
SH
    chmod 755 "$r/usr/local/bin/docker-entrypoint.sh" "$r/usr/local/bin/app-server"
    chown -R 1000:1000 "$r/home/node"
}

fill_kuma() {
    local r=${1:?}
    corpus_busybox "$r"
    mkdir -p "$r/app/www"
    printf 'up\n' >"$r/app/www/healthz"
    printf 'kuma ok\n' >"$r/app/www/index.html"
}

fill_distroless() {
    local r=${1:?}
    mkdir -p "$r/app"
    install -m755 "${IMAGES_DIR:?}/noshell" "$r/app/server"
}

fill_vaultlike() {
    local r=${1:?}
    corpus_busybox "$r"
    mkdir -p "$r/etc/bitwarden" "$r/www/web" "$r/usr/local/bin"
    printf 'vault web ok\n' >"$r/www/web/index.html"
    cat >"$r/entrypoint.sh" <<'SH'
#!/bin/sh
set -e
# As Bitwarden's self-host images: the user is made at run time from APP_UID/APP_GID.
uid=${APP_UID:-1000} gid=${APP_GID:-1000}
grep -q '^bitwarden:' /etc/group || echo "bitwarden:x:$gid:" >> /etc/group
grep -q '^bitwarden:' /etc/passwd || echo "bitwarden:x:$uid:$gid::/etc/bitwarden:/bin/sh" >> /etc/passwd
chown -R bitwarden:bitwarden /etc/bitwarden
exec su bitwarden -s /bin/sh -c 'exec "$0" "$@"' -- /usr/local/bin/supervisord
SH
    cat >"$r/usr/local/bin/supervisord" <<'SH'
#!/bin/sh
id > /etc/bitwarden/id.txt
date +%s >> /etc/bitwarden/starts
httpd -f -p 8080 -h /etc/bitwarden & api=$!
httpd -f -p 8081 -h /www/web & web=$!
echo "supervisord: started api ($api) and web ($web) as $(id -un)"
trap 'echo "supervisord: SIGTERM, stopping api and web"; kill $api $web; wait; echo "supervisord: stopped"; exit 0' TERM
wait
SH
    chmod 755 "$r/entrypoint.sh" "$r/usr/local/bin/supervisord"
}

fill_searchlike() {
    local r=${1:?}
    corpus_busybox "$r"
    mkdir -p "$r/usr/share/elasticsearch/www"
    printf '{"tagline" : "You Know, for Search"}\n' >"$r/usr/share/elasticsearch/www/index.html"
    printf 'elasticsearch:x:1000:1000::/usr/share/elasticsearch:/bin/sh\n' >>"$r/etc/passwd"
    printf 'elasticsearch:x:1000:\n' >>"$r/etc/group"
    cat >"$r/usr/share/elasticsearch/start.sh" <<'SH'
#!/bin/sh
n=$(ulimit -n) min=${ES_MIN_NOFILE:-65535}
if [ "$n" != unlimited ] && [ "$n" -lt "$min" ]; then
    echo "bootstrap check failure: max file descriptors [$n] for elasticsearch process is too low, increase to at least [$min]"
    exit 78
fi
echo "elasticsearch: started with max file descriptors [$n]"
exec httpd -f -p 9200 -h /usr/share/elasticsearch/www
SH
    chmod 755 "$r/usr/share/elasticsearch/start.sh"
}

# Builds the corpus into $IMAGES_DIR/corpus (needs $IMAGES_DIR/noshell from build_images).
build_corpus_images() {
    local layout=${IMAGES_DIR:?}/corpus
    rustc --edition 2024 -O -C panic=abort -C strip=symbols -C target-feature=+crt-static \
        -o "$IMAGES_DIR/corpus-server" "$HERE/images/corpus.rs" \
        || { say "images: building the static corpus server failed"; return 1; }
    umoci init --layout "$layout"

    build_image "$layout" pglike fill_pglike
    umoci config --image "$layout:pglike" --config.env PATH=/usr/local/bin:/bin \
        --config.env PGDATA=/var/lib/postgresql/data --config.env POSTGRES_SHM_MB=96 \
        --config.volume /var/lib/postgresql/data --config.exposedports 5432/tcp --config.stopsignal SIGINT \
        --config.entrypoint docker-entrypoint.sh --config.cmd postgres >/dev/null

    build_image "$layout" nginxlike fill_nginxlike
    umoci config --image "$layout:nginxlike" --config.env PATH=/usr/sbin:/bin \
        --config.exposedports 80/tcp --config.stopsignal SIGQUIT --config.entrypoint /docker-entrypoint.sh \
        --config.cmd nginx --config.cmd -g --config.cmd 'daemon off;' >/dev/null

    build_image "$layout" registry fill_registry
    umoci config --image "$layout:registry" --config.env PATH=/bin --config.volume /var/lib/registry \
        --config.exposedports 5000/tcp --config.entrypoint /entrypoint.sh \
        --config.cmd /etc/docker/registry/config.yml >/dev/null

    build_image "$layout" nodeapp fill_nodeapp
    umoci config --image "$layout:nodeapp" --config.env PATH=/usr/local/bin:/bin --config.env NODE_ENV=production \
        --config.user node --config.workingdir /home/node/app --config.volume /home/node/app/data \
        --config.entrypoint docker-entrypoint.sh --config.cmd app-server --config.cmd --port --config.cmd 3000 \
        >/dev/null

    build_image "$layout" kuma fill_kuma
    umoci config --image "$layout:kuma" --config.env PATH=/bin --config.entrypoint /bin/sh \
        --config.cmd -c --config.cmd 'echo kuma-started; exec httpd -f -p 3001 -h /app/www' >/dev/null
    local check
    check=$(cat <<'JSON'
{"Test":["CMD-SHELL","printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 127.0.0.1 3001 | grep -q ' 200 '"],"Interval":1000000000,"Timeout":3000000000,"Retries":3}
JSON
)
    set_healthcheck "$layout" kuma "$check"

    build_image "$layout" distroless fill_distroless
    umoci config --image "$layout:distroless" --config.user 65532:65532 --config.entrypoint /app/server >/dev/null

    build_image "$layout" vaultlike fill_vaultlike
    umoci config --image "$layout:vaultlike" --config.env PATH=/usr/local/bin:/bin --config.volume /etc/bitwarden \
        --config.entrypoint /entrypoint.sh >/dev/null

    build_image "$layout" searchlike fill_searchlike
    umoci config --image "$layout:searchlike" --config.env PATH=/bin --config.user 1000:1000 \
        --config.workingdir /usr/share/elasticsearch --config.cmd /usr/share/elasticsearch/start.sh >/dev/null
    umoci gc --layout "$layout"
}
