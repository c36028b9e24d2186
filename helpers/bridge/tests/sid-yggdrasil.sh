#!/usr/bin/env bash
# Fetch Debian sid's yggdrasil (0.5.x) into a cache dir and print the path of its binary.
# The host runs bookworm's 0.4.7; the admin API answer changed shape in 0.5, and both are tested
# against the real programs. Only Debian's archive is contacted (apt-get with a scratch config).
set -euo pipefail
CACHE=${1:?usage: sid-yggdrasil.sh CACHE_DIR}
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9
BIN="$CACHE/root/usr/sbin/yggdrasil"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/etc"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
    > "$APT/etc/sources.list"
O=(-o "Dir::Etc::SourceList=$APT/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT" -o "Dir::Cache::Archives=$APT/archives"
   -o APT::Sandbox::User=root)
apt-get "${O[@]}" -qq update >&2
(cd "$APT" && apt-get "${O[@]}" -qq download yggdrasil >&2)
dpkg-deb -x "$APT"/yggdrasil_*.deb "$CACHE/root"
rm -rf "${APT:?}"
echo "$BIN"
