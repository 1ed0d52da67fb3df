#!/usr/bin/env bash
# The demo: builds siplb, brings up a topology of network namespaces (a SIPp client, the
# balancer on two af_packet ports, two SIPp backends), places SIP calls with RTP both
# ways through the VIP for a bounded time with live stats, prints what each backend
# received, the RTP every side counted and the dataplane's counters, and removes
# everything it made. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup-host.sh
cargo build --release --workspace --bins --locked
exec ./target/release/siplb-demo "$@"
