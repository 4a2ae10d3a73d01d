#!/bin/sh
# pjdfstest through the Linux kernel's NFSv3 client against `tessera dev` (issue 6).
#
# Builds Tessera (release), starts `tessera dev` on a temporary data directory, runs
# ../shared/tools/vm-client/pjdfstest.sh (a small VM whose kernel mounts 127.0.0.1:$PORT
# with vers=3), compares the failures with conformance/pjdfstest-nfs3-known-failures.txt
# and stops the server. Exit status: 0 when every failure is a known one.
# Usage: scripts/pjdfstest.sh [pjdfstest filters...]   (PORT=12049 by default)
set -eu
cd "$(dirname "$0")/.."
. scripts/lib/dev-server.sh
out="$data/pjdfstest.log"
set +e
"$VMC/pjdfstest.sh" --proto nfs3 --port "$PORT" --mount-port "$PORT" --export /export -- "$@" | tee "$out"
set -e
grep '^Summary:' "$out" || { echo "pjdfstest did not finish"; exit 1; }
known=conformance/pjdfstest-nfs3-known-failures.txt
unknown=$(grep -E '[[:space:]]FAILED$' "$out" | awk '{print $1}' | while read -r t; do
    grep -q "^$t " "$known" || echo "$t"
done)
if [ -n "$unknown" ]; then
    echo "failures not in $known:"; echo "$unknown"; exit 1
fi
echo "every failure is a known one ($known)"
