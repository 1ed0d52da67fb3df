#!/usr/bin/env bash
# Figures of the HA pair (issue 13, item 6): sync bytes per new dialog, failover time
# (kill -> first message at a backend), and the share of dialogs in progress that
# survive the failover, at a stated call rate. Runs e2e/src/bin/ha-figures.rs in the
# test bed's namespaces.
#   bench/ha.sh                       snat, 100 calls/s of 5 s, 1500 calls
#   HA_RATE=50 HA_NAT=dnat bench/ha.sh
#   HA_FLOWS=1 bench/ha.sh             one client flow per call, hung up by the backends
# Needs root, hugepages and the packages of ci/setup-host.sh; takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
# The binaries as the tests build them (the workspace's optimised dev profile): the
# test bed finds siplb beside ha-figures.
cargo build -q --workspace --bins
flock /tmp/siplb-e2e.lock ./target/debug/ha-figures 2>&1 | grep -E '^FIGURES|panicked' || true
