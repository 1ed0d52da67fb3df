#!/usr/bin/env bash
# Issue 7 part 2a: per-packet cost of the balancer pipeline in process, no I/O, with
# 1,000,000 active dialogs; wall clock (best/median of rounds) and callgrind
# instruction counts (stable on a shared machine). Appends a dated record to
# bench/RESULTS.md and leaves the raw output in bench/data/pipeline.{txt,csv,callgrind.txt}.
#
#   bench/pipeline.sh [DIALOGS [ROUNDS]]      (defaults 1000000 11)
set -euo pipefail
cd "$(dirname "$0")/.."
DIALOGS="${1:-1000000}"
ROUNDS="${2:-11}"
# Callgrind is ~50x slower: fewer dialogs, at the same table load as DIALOGS
# (the table is sized like the dataplane's, twice the capacity rounded up to 2^k).
CG_DIALOGS="${CG_DIALOGS:-125000}"
CG_PACKETS="${CG_PACKETS:-20000}"
# The workspace's own target/ unless the caller chose another.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
DATA=bench/data
mkdir -p "$DATA"
work="$(mktemp -d -t siplb-pipeline.$$.XXXX)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p bench --bin pipeline
bin="$CARGO_TARGET_DIR/release/pipeline"

"$bin" "$DIALOGS" "$ROUNDS" | tee "$DATA/pipeline.txt"
{
  echo "kind,dialogs,pipeline_best_ns,pipeline_median_ns,copy_headers_best_ns,copy_headers_median_ns,copy_scan_best_ns,copy_scan_median_ns"
  grep '^csv,' "$DATA/pipeline.txt" | cut -d, -f2-
} >"$DATA/pipeline.csv"

cg=""
if command -v valgrind >/dev/null; then
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --collect-atstart=no \
    --toggle-collect='pipeline::count::count_*' "$bin" count "$CG_DIALOGS" "$CG_PACKETS" \
    >"$work/cg.log" 2>&1
  callgrind_annotate --inclusive=yes "$work/cg.out" >"$work/cg.txt"
  # Instructions per packet of each counted function.
  cg="$(awk -v n="$CG_PACKETS" '/pipeline\.rs:pipeline::count::count_/ && !/=>/ {
          gsub(",", "", $1); name=$0; sub(/.*count::count_/, "", name); sub(/[ (].*/, "", name);
          printf "| %s | %d |\n", name, $1 / n }' "$work/cg.txt")"
  printf '%s\n' "$cg" >"$DATA/pipeline.callgrind.txt"
  echo "$cg"
fi

cmd="bench/pipeline.sh $DIALOGS $ROUNDS"
{
  echo
  echo "#### Record: pipeline, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`$cmd\` (callgrind: \`pipeline count $CG_DIALOGS $CG_PACKETS\`), tree $(git describe --always --dirty), $(rustc --version | cut -d' ' -f1-2)."
  echo "Load average before/after: $(grep -o 'load average [0-9.]* at start' "$DATA/pipeline.txt" | awk '{print $3}') / $(grep -o 'load average [0-9.]* at end' "$DATA/pipeline.txt" | awk '{print $3}')."
  echo
  echo '```'
  grep -v '^csv,' "$DATA/pipeline.txt"
  echo '```'
  if [ -n "$cg" ]; then
    echo
    echo "| callgrind function | instructions per packet |"
    echo "|---|---:|"
    echo "$cg"
  fi
} >>bench/RESULTS.md
echo "appended to bench/RESULTS.md"
