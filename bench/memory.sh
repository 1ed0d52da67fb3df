#!/usr/bin/env bash
# Issue 7 part 2e: memory per dialog and process memory at 1 and 10 million dialogs.
#
#   bench/memory.sh [DIALOGS...]          (default: 1000000 10000000)
#
# For each size:
#  1. in process (bench/src/bin/memory.rs): the dialog table sized as the dataplane
#     sizes it, that many dialogs placed through balancer::process (INVITE + 200 OK),
#     all checked live: table bytes per dialog and the process's RSS;
#  2. the real dataplane (siplb-dataplane, as root, hugepages): started with
#     `[tables] dialogs = N` on two empty net_ring ports (no traffic: its tables are
#     reserved and zeroed at start, so the memory is what N dialogs will use; it is not
#     filled), measured from /proc/meminfo HugePages_Free before and after it is
#     ready, and its /proc/PID/status VmRSS, VmHWM and HugetlbPages.
# Appends a dated record to bench/RESULTS.md; raw output in bench/data/memory.*.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ "${#SIZES[@]}" -gt 0 ] || SIZES=(1000000 10000000)
# The workspace's own target/ unless the caller chose another.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
DATA=bench/data
mkdir -p "$DATA"
PREFIX="siplb-bench-mem-$$"
work="$(mktemp -d -t siplb-memory.$$.XXXX)"
dp_pid=""

cleanup() {
  if [ -n "$dp_pid" ] && kill -0 "$dp_pid" 2>/dev/null; then
    kill -TERM "$dp_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$dp_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dp_pid" 2>/dev/null || true
  fi
  # Hugepage files and the runtime directory of this prefix only.
  rm -f /dev/hugepages/"$PREFIX"map_* 2>/dev/null || true
  rm -rf "/var/run/dpdk/$PREFIX" "$work"
}
trap cleanup EXIT

meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

cargo build --release -q -p bench --bin memory
cargo build --release -q -p dataplane --bin siplb-dataplane
mem_bin="$CARGO_TARGET_DIR/release/memory"
dp_bin="$CARGO_TARGET_DIR/release/siplb-dataplane"
page_kb="$(meminfo Hugepagesize)"

: >"$DATA/memory.txt"
echo "dialogs,slots,table_bytes,bytes_per_dialog,rss_start_kb,rss_tables_kb,rss_full_kb" >"$DATA/memory.csv"
echo "dialogs,dialog_slots,hugepages_used,hugepage_mib,vm_rss_kb,vm_hwm_kb,hugetlb_kb" >"$DATA/memory-dataplane.csv"
rows=()
for n in "${SIZES[@]}"; do
  echo "== in process, $n dialogs" | tee -a "$DATA/memory.txt"
  "$mem_bin" "$n" | tee "$work/mem.out"
  grep -v '^csv,' "$work/mem.out" >>"$DATA/memory.txt"
  grep '^csv,' "$work/mem.out" | cut -d, -f2- >>"$DATA/memory.csv"
  IFS=, read -r _ _ slots tbytes bpd rss0 rss1 rss2 < <(grep '^csv,' "$work/mem.out")

  echo "== siplb-dataplane, [tables] dialogs = $n" | tee -a "$DATA/memory.txt"
  cat >"$work/dp.toml" <<EOF
[dataplane]
eal_args = ["-l", "0-1", "--file-prefix", "$PREFIX", "--vdev", "net_ring0", "--vdev", "net_ring1"]
workers = 1
idle_sleep_us = 1000
exception_path = false
[tables]
dialogs = $n
[control]
http = ""
run_dir = "$work"
[[port]]
name = "front"
address = "198.18.0.1/24"
[[port]]
name = "back"
address = "198.18.1.1/24"
[[farm]]
name = "pbx"
vip = "198.18.0.2"
[farm.health]
check = "none"
[[farm.backends]]
address = "198.18.1.11"
EOF
  free0="$(meminfo HugePages_Free)"
  "$dp_bin" -c "$work/dp.toml" --duration 60 >"$work/dp.log" 2>&1 &
  dp_pid=$!
  ready="/var/run/dpdk/$PREFIX/siplb-dataplane.ready"
  for _ in $(seq 600); do
    [ -f "$ready" ] && break
    kill -0 "$dp_pid" 2>/dev/null || { cat "$work/dp.log"; echo "siplb-dataplane exited" >&2; exit 1; }
    sleep 0.1
  done
  [ -f "$ready" ] || { cat "$work/dp.log"; echo "siplb-dataplane not ready in 60 s" >&2; exit 1; }
  sleep 1
  free1="$(meminfo HugePages_Free)"
  rss="$(status_kb "$dp_pid" VmRSS)"
  hwm="$(status_kb "$dp_pid" VmHWM)"
  htlb="$(status_kb "$dp_pid" HugetlbPages)"
  used=$((free0 - free1))
  dslots=1; while [ "$dslots" -lt $((2 * n)) ]; do dslots=$((dslots * 2)); done
  kill -TERM "$dp_pid"; wait "$dp_pid" 2>/dev/null || true; dp_pid=""
  rm -f /dev/hugepages/"$PREFIX"map_* 2>/dev/null || true
  line="hugepages used $used x ${page_kb} kB = $((used * page_kb / 1024)) MiB (dialog table $((dslots * 16 >> 20)) MiB), VmRSS $((rss / 1024)) MiB, VmHWM $((hwm / 1024)) MiB, HugetlbPages $((${htlb:-0} / 1024)) MiB"
  echo "$line" | tee -a "$DATA/memory.txt"
  echo "$n,$dslots,$used,$((used * page_kb / 1024)),$rss,$hwm,${htlb:-0}" >>"$DATA/memory-dataplane.csv"
  rows+=("| $n | $slots | $((tbytes >> 20)) | **$bpd** | $((rss0 >> 10)) → $((rss2 >> 10)) | $used ($((used * page_kb / 1024)) MiB) | $((rss / 1024)) | $((${htlb:-0} / 1024)) |")
done

{
  echo
  echo "#### Record: memory, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`bench/memory.sh ${SIZES[*]}\`, tree $(git describe --always --dirty)."
  echo
  echo "| dialogs | table slots | table MiB | bytes/dialog | in-process RSS MiB (start → filled) | dataplane hugepages (2 MiB) | dataplane VmRSS MiB | dataplane HugetlbPages MiB |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo '```'
  cat "$DATA/memory.txt"
  echo '```'
} >>bench/RESULTS.md
echo "appended to bench/RESULTS.md"
