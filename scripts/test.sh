#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs the default suite.
# Long suites (soak, chaos, conformance, fuzzing, benchmarks) have their own commands.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --locked --profile ci "$@"
