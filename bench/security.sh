#!/usr/bin/env bash
# Issue 14 item 8: per-packet cost of the security checks, in process, same run:
# the pipeline with [security] off, with its defaults, and with every check on
# (bench/src/bin/security.rs), wall clock (medians of alternating rounds) and
# callgrind instruction counts (stable on a shared machine). Appends a dated record
# to bench/RESULTS.md and leaves the raw output in bench/data/security.{txt,callgrind.txt}.
#
#   bench/security.sh [DIALOGS [ROUNDS]]      (defaults 200000 11)
set -euo pipefail
cd "$(dirname "$0")/.."
DIALOGS="${1:-200000}"
ROUNDS="${2:-11}"
CG_PACKETS="${CG_PACKETS:-20000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
DATA=bench/data
mkdir -p "$DATA"
work="$(mktemp -d -t siplb-security.$$.XXXX)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p bench --bin security
bin="$CARGO_TARGET_DIR/release/security"
"$bin" "$DIALOGS" "$ROUNDS" | tee "$DATA/security.txt"

cg=""
if command -v valgrind >/dev/null; then
  for side in off default on; do
    valgrind --tool=callgrind --callgrind-out-file="$work/$side.out" --collect-atstart=no \
      --toggle-collect='security::count::count_*' "$bin" count "$side" "$CG_PACKETS" \
      >"$work/$side.log" 2>&1
    callgrind_annotate --inclusive=yes "$work/$side.out" >"$work/$side.txt"
  done
  # Instructions per packet of each kind, off / default / on.
  cg="$(for kind in ack ok invite; do
          for side in off default on; do
            awk -v n="$CG_PACKETS" -v k="count::count_$kind" '$0 ~ k && !/=>/ { gsub(",", "", $1); printf "%d ", $1 / n; exit }' "$work/$side.txt"
          done | awk -v k="$kind" '{ printf "| %s | %d | %d | %d | %+d | %.3f |\n", k, $1, $2, $3, $3 - $1, $3 / $1 }'
        done)"
  printf '%s\n' "$cg" >"$DATA/security.callgrind.txt"
  echo "$cg"
fi

{
  echo
  echo "#### Record: security checks, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`bench/security.sh $DIALOGS $ROUNDS\` (callgrind: \`security count off|default|on $CG_PACKETS\`), tree $(git describe --always --dirty), $(rustc --version | cut -d' ' -f1-2)."
  echo
  echo '```'
  grep -v '^csv,' "$DATA/security.txt"
  echo '```'
  if [ -n "$cg" ]; then
    echo
    echo "| packet | instructions off | default | all on | on - off | on/off |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "$cg"
  fi
} >>bench/RESULTS.md
echo "appended to bench/RESULTS.md"
