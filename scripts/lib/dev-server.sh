# Sourced by the scripts that run a kernel client against `tessera dev`
# (pjdfstest.sh, kernel-workloads.sh): builds Tessera (release), starts `tessera dev`
# on a temporary data directory with NFS on $PORT, waits for its ready line and stops
# it (by PID) and removes the directory on exit. Sets $data (the temporary directory)
# and $VMC (the vm-client tool).
: "${CARGO_TARGET_DIR:=$HOME/.cache/tessera-target}"
export CARGO_TARGET_DIR
PORT="${PORT:-12049}"
VMC=../shared/tools/vm-client
cargo build --release --locked --bin tessera
data=$(mktemp -d)
mkfifo "$data/ready"
"$CARGO_TARGET_DIR/release/tessera" dev --data-dir "$data/d" --nfs-port "$PORT" \
    --control-port 0 --metrics-port 0 >"$data/ready" 2>"$data/tessera.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
# Wait (bounded by the server's own start) for its ready line.
grep -m1 TESSERA_READY "$data/ready" >/dev/null ||
    { echo "tessera dev did not start:" >&2; tail -n 20 "$data/tessera.log" >&2; exit 1; }
cat "$data/ready" >/dev/null &
"$VMC/build.sh" >/dev/null
