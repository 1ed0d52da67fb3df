#!/usr/bin/env bash
# Prepares a Debian 12 host for building and running siplb: packages, hugepages,
# hugetlbfs. Idempotent: run it as often as you like. Needs root.
set -euo pipefail

HUGEPAGES="${SIPLB_HUGEPAGES:-1024}"   # 2 MiB pages: 2 GiB by default
PACKAGES=(
  libdpdk-dev dpdk dpdk-dev   # DPDK 22.11: headers, libraries, PMDs; dpdk-testpmd, dpdk-dumpcap, dpdk-telemetry.py
  clang libclang-dev pkg-config build-essential   # bindgen and the C shim
  sip-tester                  # SIPp: real SIP clients and servers for the tests
  iproute2 ethtool iputils-ping procps psmisc     # namespaces, veth, offloads
  libnet-sip-perl             # check_sip-style dummy calls for health-check tests
  kamailio                    # the reference dispatcher for benchmarks; the softphone test's
                              # backends (registrar, rr, tm, usrloc, dmq_usrloc and rtpengine
                              # modules are all in this package in Debian 12)
  baresip-core                # headless softphones (ctrl_tcp, ausine) for e2e/tests/softphones.rs
  rtpengine-daemon            # media relay behind the farm (userspace, --table=-1: no kernel module)
  tcpdump
  iptables                    # per-namespace packet counters (RTP in e2e/tests/sipp_media.rs)
  fonts-dejavu-core           # the font of the benchmark plots (bench/src/bin/plot.rs)
  valgrind                    # instruction counts of the benchmarks (bench/pipeline.sh)
  dnsmasq-base                # the DNS server of e2e/tests/dnsbl.rs (the binary only: no
                              # system service to disable)
  bird2                       # BGP/BFD speaker of [bgp] (scale-out behind ECMP): `bird -p`
                              # checks the generated config in the unit tests
  python3                     # http.server serving blocklist feeds (e2e/tests/feeds.rs) and
                              # the small UDP senders of several e2e tests
)

say() { printf 'setup-host: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  say "must run as root (packages, hugepages and network namespaces need it): sudo $0" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Kamailio must not run as a system service on a test machine: the benchmark and the
  # softphone test start their own instances on their own ports.
  # Neither must rtpengine: the softphone test starts one per backend namespace.
  # Nor BIRD: the ECMP test starts one per unit and one in the router namespace.
  for unit in kamailio rtpengine-daemon bird; do
    if systemctl list-unit-files "$unit.service" >/dev/null 2>&1; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo is not on PATH: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null 2>&1
fi

current=$(cat /proc/sys/vm/nr_hugepages)
if [ "$current" -lt "$HUGEPAGES" ]; then
  echo "$HUGEPAGES" > /proc/sys/vm/nr_hugepages
  got=$(cat /proc/sys/vm/nr_hugepages)
  if [ "$got" -lt "$HUGEPAGES" ]; then
    say "asked for $HUGEPAGES hugepages, the kernel gave $got (memory fragmented?)" >&2
    [ "$got" -ge 256 ] || exit 1
  fi
fi
if ! grep -q '^[^ ]* /dev/hugepages hugetlbfs' /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages
fi
say "ready: $(cat /proc/sys/vm/nr_hugepages) hugepages of 2 MiB, hugetlbfs on /dev/hugepages, DPDK $(pkg-config --modversion libdpdk)"
