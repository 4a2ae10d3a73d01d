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
: "${CARGO_TARGET_DIR:=$HOME/.cache/tessera-target}"
export CARGO_TARGET_DIR
PORT="${PORT:-12049}"
VMC=../shared/tools/vm-client
cargo build --release --locked --bin tessera
data=$(mktemp -d)
out="$data/pjdfstest.log"
mkfifo "$data/ready"
"$CARGO_TARGET_DIR/release/tessera" dev --data-dir "$data/d" --nfs-port "$PORT" \
    --control-port 0 --metrics-port 0 >"$data/ready" 2>"$data/tessera.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
# Wait (bounded by the server's own start) for its ready line.
grep -m1 TESSERA_READY "$data/ready" >/dev/null
cat "$data/ready" >/dev/null &
"$VMC/build.sh" >/dev/null
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
