#!/usr/bin/env bash
# Installs what Tessera's tests need on a fresh Debian machine with Rust (rustup):
# the toolchain pinned in rust-toolchain.toml, cargo-nextest, and Debian's libnfs-utils
# (nfs-cp / nfs-ls / nfs-cat, the real NFS client the end-to-end tests use) and haproxy
# (the TCP load balancer in front of the gateways in the cluster and chaos tests).
# Idempotent: installs only what is missing. Needs root or sudo for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[install-test-deps] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root (or sudo) to run: $*"; exit 1; fi
}

# Debian packages: command -> package.
missing=()
for pair in nfs-cp:libnfs-utils nfs-cat:libnfs-utils nfs-ls:libnfs-utils haproxy:haproxy; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  say "installing Debian packages: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y --no-install-recommends $pkgs; then
    as_root apt-get update
    as_root apt-get install -y --no-install-recommends $pkgs
  fi
fi

# The pinned toolchain (rustup reads rust-toolchain.toml).
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$toolchain"; then
  say "installing Rust $toolchain"
  rustup toolchain install "$toolchain" --profile minimal
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
say "ok"
