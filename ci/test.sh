#!/usr/bin/env bash
# The test command: prepares the host (packages, hugepages), builds everything and runs
# every test — unit, property, corpus/oracle and end-to-end with real SIPp peers in
# network namespaces. Needs root. Exit status 0 only if all of it passed.
set -euo pipefail
cd "$(dirname "$0")/.."

./ci/setup-host.sh

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "build (binaries used by the end-to-end tests)"
start=$(date +%s)
cargo build --workspace --bins --locked
echo "build took $(( $(date +%s) - start )) s"

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo nextest run --workspace --locked --no-fail-fast
