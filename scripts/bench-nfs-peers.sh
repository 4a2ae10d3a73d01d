#!/bin/sh
# NFSv3 side by side (issue 6, must-show 7): the shared tool's userspace client
# (../shared/tools/bench, nfsbench) against `tessera dev` (RF=1) and nfs-ganesha 4.3 in
# one run, with 1 and with 16 requests in flight, each twice; prints one Markdown table
# with the ratios Tessera / ganesha. Tessera gets a fresh data directory for every run
# (nfsbench writes the same pseudo-random bytes each time, which Tessera would otherwise
# deduplicate). Installs ganesha and nfsbench through the shared tool on first use.
# Usage: scripts/bench-nfs-peers.sh   (RUNS=2, CONCS="1 16", NFSBENCH_EXTRA="--size-mib 1024 --files 5000")
set -eu
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/tessera-target}"
export CARGO_TARGET_DIR
PORT="${PORT:-12049}"
RUNS="${RUNS:-2}"
CONCS="${CONCS:-1 16}"
NFSBENCH_EXTRA="${NFSBENCH_EXTRA:---size-mib 1024 --files 5000}"
BENCH=../shared/tools/bench
cargo build --release --locked --bin tessera
"$BENCH/peers.sh" install ganesha nfsbench >&2
started_ganesha=
if ! "$BENCH/peers.sh" status 2>/dev/null | grep -q '^ganesha running'; then
    "$BENCH/peers.sh" start ganesha >&2
    started_ganesha=1
fi
work=$(mktemp -d)
pid=
stop_tessera() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi
}
cleanup() {
    stop_tessera
    [ -z "$started_ganesha" ] || "$BENCH/peers.sh" stop ganesha >&2 || true
    rm -rf "$work"
}
trap cleanup EXIT
results="$work/results.jsonl"
for conc in $CONCS; do
    for run in $(seq "$RUNS"); do
        rm -rf "$work/d"
        mkfifo "$work/ready.$conc.$run"
        "$CARGO_TARGET_DIR/release/tessera" dev --data-dir "$work/d" --nfs-port "$PORT" \
            --control-port 0 --metrics-port 0 >"$work/ready.$conc.$run" 2>"$work/tessera.log" &
        pid=$!
        grep -m1 TESSERA_READY "$work/ready.$conc.$run" >/dev/null ||
            { echo "tessera dev did not start:" >&2; tail -n 20 "$work/tessera.log" >&2; exit 1; }
        cat "$work/ready.$conc.$run" >/dev/null &
        NFSBENCH_ARGS="--conc $conc $NFSBENCH_EXTRA" RESULTS="$results" \
            "$BENCH/bench.sh" ganesha "nfs:tessera=127.0.0.1:$PORT/export" >&2
        stop_tessera
    done
done
python3 scripts/lib/nfs_ratios.py "$results"
