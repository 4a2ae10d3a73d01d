#!/bin/sh
# fio and untar + diff through the Linux kernel's NFSv3 client against `tessera dev`
# (issue 6, must-show 2). Builds Tessera (release), starts `tessera dev`, boots the
# vm-client VM whose kernel mounts it with vers=3, runs scripts/kernel-workloads-guest.sh
# on the mount and stops the server. Exit status: 0 when every workload passed.
# Usage: scripts/kernel-workloads.sh   (PORT=12049 by default; takes ~15 min under TCG)
set -eu
cd "$(dirname "$0")/.."
. scripts/lib/dev-server.sh
"$VMC/run.sh" --proto nfs3 --port "$PORT" --mount-port "$PORT" --export /export \
    --mem 2048 --timeout 3600 -- "sh $PWD/scripts/kernel-workloads-guest.sh"
