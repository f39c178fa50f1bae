#!/usr/bin/env bash
# Lay out the container image's files: OUT/rootfs (the latchkey binary, the shared
# libraries it is linked against as ldd resolves them here, the dynamic loader, the CA
# bundle, passwd/group entries for the numeric user, an empty /tmp) and OUT/data (the
# data directory, given to the user by the Containerfile's COPY --chown).
# Used by the Containerfile's builder stage and, with a locally built binary, by the
# tests (tests/python/test_deploy.py).
#   rootfs.sh BINARY OUT_DIR
set -euo pipefail
if [[ $# -ne 2 ]]; then echo "usage: rootfs.sh BINARY OUT_DIR" >&2; exit 2; fi
bin="$1" out="$2"
uid=65532
root="$out/rootfs"
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$out/data"
install -m 0755 "$bin" "$root/latchkey"
# The libraries at the paths the binary's loader finds them (none for a static binary).
libs="$(ldd "$bin" 2>/dev/null || true)"
interp="$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')"
for lib in $(awk '/=> \// { print $3 }' <<<"$libs") $interp; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nlatchkey:x:%d:%d:latchkey:/data:/sbin/nologin\n' "$uid" "$uid" >"$root/etc/passwd"
printf 'root:x:0:\nlatchkey:x:%d:\n' "$uid" >"$root/etc/group"
chmod 1777 "$root/tmp"
chmod 0700 "$out/data"
