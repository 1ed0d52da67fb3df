#!/usr/bin/env bash
# Issue 7 parts 2b and 2d: siplb with ONE worker on the in-memory virtio PMD, against
# dpdk-testpmd --forward-mode=io on the same PMD and the same core, in the same run.
#
#   bench/virtio.sh                    (needs root and hugepages; about 10 minutes)
#
#   siplb-gen --mode both (GEN_CORE)                 device under test (DUT_CORE)
#   client  net_vhost0  <== front.sock ==>  net_virtio_user0
#                                                    siplb-dataplane | dpdk-testpmd io
#   backends net_vhost1 <== back.sock  ==>  net_virtio_user1
#
# siplb: one worker lcore on DUT_CORE busy-polling (idle_sleep_us = 0), its main lcore
# (housekeeping) on GEN_CORE; VIP 198.18.0.2, dnat, Call-ID affinity, 3 backends with
# weights 1:2:3 (the responder answers as 198.18.1.11-13), no exception path, no health
# checks. testpmd: its forwarding lcore on DUT_CORE, main lcore on GEN_CORE, io
# forwarding port 0 <-> port 1, 1024 descriptors like siplb's; the client calls the
# backend 198.18.1.11 directly (testpmd touches no header), so the generator does the
# same work per packet in both cases.
#
# Traffic: calls INVITE -> 100, 180, 200 -> ACK -> BYE -> 200 (3 requests, 4 responses,
# 7 packets through the DUT per call; INVITE frames PAYLOAD bytes). Counted "through the
# DUT": requests the responder received + responses the client received, over the
# seconds the client was sending (both directions, every packet forwarded once).
# Loss: 1 - delivered / sent over both directions. Rate search per DUT: a probe at
# --rate 0 (as fast as the generator goes), then bisection of the request rate
# between 0 and max(1.3 x the probe, HI_FLOOR) (SEARCH_STEPS trials of TRIAL_S s, a
# failed trial tried once more) for the highest rate with loss <= 0.1%; then the
# latency (request -> final response, measured by the generator with the TSC it put in
# the Via branch) at LAT_FRACTION of that rate. Everything REPEAT times, DUTs
# alternating; the median is reported. Added latency = siplb - testpmd at the same rate.
#
# Adds a dated record to its section of bench/RESULTS.md; raw JSON summaries (one per trial) in
# bench/data/virtio/, the table in bench/data/virtio.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIAL_S="${TRIAL_S:-3}"
SEARCH_STEPS="${SEARCH_STEPS:-6}"
REPEAT="${REPEAT:-3}"
LAT_FRACTION="${LAT_FRACTION:-0.5}"
PAYLOAD="${PAYLOAD:-600}"
CALLS="${CALLS:-8192}"
# Descriptors per virtio ring: room for the scheduling gaps of a shared machine.
QUEUE_SIZE="${QUEUE_SIZE:-4096}"
# Upper bound of the rate search (requests/s) when the probe found less.
HI_FLOOR="${HI_FLOOR:-700000}"
GEN_CORE="${GEN_CORE:-0}"
DUT_CORE="${DUT_CORE:-1}"
# The workspace's own target/ unless the caller chose another.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/release"
TESTPMD="${TESTPMD:-dpdk-testpmd}"
DATA=bench/data/virtio
TAG="vb$$"
[ "$(id -u)" = 0 ] || { echo "bench/virtio.sh needs root (DPDK, hugepages)" >&2; exit 1; }
command -v "$TESTPMD" >/dev/null || { echo "$TESTPMD not found: run ci/setup-host.sh (dpdk package)" >&2; exit 1; }

work="$(mktemp -d -t siplb-virtio.$$.XXXX)"
# PIDs of the processes of the trial in progress (emptied once they are reaped, so a
# recycled PID is never signalled).
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ "${#pids[@]}" = 0 ] || sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -f /dev/hugepages/"$TAG"*
  rm -rf /var/run/dpdk/"$TAG"*
  if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

cargo build --release -q -p traffic-gen -p dataplane --bins
cargo build --release -q -p traffic-gen --example generator_cost
mkdir -p "$DATA"
rm -f "$DATA"/*.json
exec > >(tee bench/data/virtio.log) 2>&1

cat >"$work/siplb.toml.in" <<EOF
[dataplane]
eal_args = ["--lcores", "0@$GEN_CORE,1@$DUT_CORE", "--no-pci", "--file-prefix", "@PREFIX@",
            "--single-file-segments", "-m", "1024",
            "--vdev", "net_virtio_user0,path=$work/front.sock,queues=1,queue_size=$QUEUE_SIZE",
            "--vdev", "net_virtio_user1,path=$work/back.sock,queues=1,queue_size=$QUEUE_SIZE"]
workers = 1
idle_sleep_us = 0
mbufs = 16383
exception_path = false

[tables]
dialogs = 1048576
registrations = 1024
snat_sessions = 1024
tcp_connections = 1024
rate_sources = 1024

[control]
http = ""
run_dir = "$work/run"

[[port]]
name = "front"
address = "198.18.0.1/24"

[[port]]
name = "back"
address = "198.18.1.1/24"

[[farm]]
name = "pbx"
vip = "198.18.0.2"
port = 5060
nat = "dnat"
affinity = "call-id"
backends = [
  { address = "198.18.1.11", port = 5060, weight = 1 },
  { address = "198.18.1.12", port = 5060, weight = 2 },
  { address = "198.18.1.13", port = 5060, weight = 3 },
]

[farm.health]
check = "none"
EOF

n=0
# trial DUT RATE SECONDS NAME: one generator run through the DUT; leaves
# $DATA/NAME.json and sets MPPS (delivered), LOSS and RPS (requests delivered per s).
trial() {
  local dut="$1" rate="$2" secs="$3" name="$4"
  n=$((n + 1))
  local gp="${TAG}g$n" dp="${TAG}d$n" json="$DATA/$name.json"
  rm -f "$work"/*.sock
  local dst=(--dst-ip 198.18.0.2 --backends 3)
  [ "$dut" = testpmd ] && dst=(--dst-ip 198.18.1.11 --backends 1)
  "$BIN/siplb-gen" -l "$GEN_CORE" --no-pci --file-prefix "$gp" --single-file-segments -m 512 \
    --vdev "net_vhost0,iface=$work/front.sock,queues=1" \
    --vdev "net_vhost1,iface=$work/back.sock,queues=1" -- \
    --mode both "${dst[@]}" --rate "$rate" --duration "$secs" --calls "$CALLS" \
    --mix invite=1,ack=1,bye=1 --payload "$PAYLOAD" --timeout-ms 500 --mbufs 32767 \
    --stats-interval 0 --link-timeout 30 --json "$json" >"$work/gen-$name.log" 2>&1 &
  local gen=$!
  pids=("$gen")
  for _ in $(seq 100); do [ -S "$work/back.sock" ] && break; sleep 0.1; done
  local dutpid
  if [ "$dut" = siplb ]; then
    sed "s/@PREFIX@/$dp/" "$work/siplb.toml.in" >"$work/siplb.toml"
    "$BIN/siplb-dataplane" -c "$work/siplb.toml" >"$work/dut-$name.log" 2>&1 &
    dutpid=$!
  else
    # testpmd forwards until told to quit; stdin is a FIFO nobody writes to.
    [ -p "$work/stdin" ] || mkfifo "$work/stdin"
    exec 7<>"$work/stdin"
    "$TESTPMD" --lcores "0@$GEN_CORE,1@$DUT_CORE" --no-pci --file-prefix "$dp" \
      --single-file-segments -m 512 \
      --vdev "net_virtio_user0,path=$work/front.sock,queues=1,queue_size=$QUEUE_SIZE" \
      --vdev "net_virtio_user1,path=$work/back.sock,queues=1,queue_size=$QUEUE_SIZE" -- \
      --forward-mode=io --nb-cores=1 --rxd=1024 --txd=1024 --burst=32 \
      --total-num-mbufs=16384 <"$work/stdin" >"$work/dut-$name.log" 2>&1 &
    dutpid=$!
  fi
  pids+=("$dutpid")
  local ok=1
  timeout $((secs + 60)) tail --pid="$gen" -f /dev/null || ok=0
  wait "$gen" || ok=0
  kill -TERM "$dutpid" 2>/dev/null || true
  wait "$dutpid" 2>/dev/null || true
  [ "$dut" = testpmd ] && exec 7>&-
  pids=()
  # What the DUT itself dropped: testpmd's accumulated TX-dropped, siplb's drop list.
  if [ "$dut" = testpmd ]; then
    DUT_DROPS="tx-dropped=$(grep -A2 'Accumulated forward statistics' "$work/dut-$name.log" | grep -o 'TX-dropped: *[0-9]*' | grep -o '[0-9]*$' || echo '?')"
  else
    DUT_DROPS="$(grep 'siplb-dataplane: final' "$work/dut-$name.log" | grep -o 'drops .*' || echo 'drops none')"
  fi
  rm -f /dev/hugepages/"$gp"* /dev/hugepages/"$dp"*
  rm -rf /var/run/dpdk/"$gp" /var/run/dpdk/"$dp"
  if [ "$ok" != 1 ] || [ ! -s "$json" ]; then
    echo "trial $name failed; generator log:" >&2
    tail -20 "$work/gen-$name.log" >&2
    tail -20 "$work/dut-$name.log" >&2
    MPPS=0 LOSS=1 RPS=0
    return
  fi
  read -r MPPS LOSS RPS < <(python3 - "$json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
c, r = s["client"], s["responder"]
to_backends = sum(r["received"].values())
delivered = to_backends + c["responses"]
sent = c["requests"] + r["responses"]
print(f'{delivered / max(c["sending_s"], 1e-9) / 1e6:.4f} {1 - delivered / max(sent, 1):.6f} {to_backends / max(c["sending_s"], 1e-9):.0f}')
EOF
)
}

passes() { python3 -c "import sys; sys.exit(0 if $1 <= 0.001 else 1)"; }

# search DUT REP: a probe at rate 0, then bisection; sets BEST_RATE and BEST_MPPS.
search() {
  local dut="$1" rep="$2"
  trial "$dut" 0 "$TRIAL_S" "$dut-r$rep-probe"
  echo "  $dut round $rep probe (rate 0): $MPPS Mpps, loss $LOSS, $RPS requests/s delivered; DUT $DUT_DROPS"
  local lo=0 hi
  BEST_MPPS=0
  hi=$(python3 -c "print(max(int($RPS * 1.3), $HI_FLOOR))")
  if passes "$LOSS"; then lo=$RPS; BEST_MPPS=$MPPS; fi
  for _ in $(seq "$SEARCH_STEPS"); do
    local mid=$(((lo + hi) / 2))
    trial "$dut" "$mid" "$TRIAL_S" "$dut-r$rep-rate$mid"
    if ! passes "$LOSS"; then
      # One retry: on a shared machine a trial can lose packets to a scheduling gap.
      echo "  $dut round $rep rate $mid: $MPPS Mpps, loss $LOSS: retry; DUT $DUT_DROPS"
      trial "$dut" "$mid" "$TRIAL_S" "$dut-r$rep-rate$mid-retry"
    fi
    if passes "$LOSS"; then
      echo "  $dut round $rep rate $mid: $MPPS Mpps, loss $LOSS: pass; DUT $DUT_DROPS"
      lo=$mid; BEST_MPPS=$MPPS
    else
      echo "  $dut round $rep rate $mid: $MPPS Mpps, loss $LOSS: fail; DUT $DUT_DROPS"
      hi=$mid
    fi
  done
  BEST_RATE=$lo
}

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average at start: $load_start"
gen_cost="$(taskset -c "$GEN_CORE" "$BIN/examples/generator_cost")"
echo "$gen_cost"
csv="bench/data/virtio.csv"
echo "rep,dut,max_request_rate,max_mpps,lat_rate,p50_us,p99_us,p999_us,max_us" >"$csv"
lat_rate_of_rep=()
for rep in $(seq "$REPEAT"); do
  for dut in siplb testpmd; do
    search "$dut" "$rep"
    rate=$BEST_RATE mpps=$BEST_MPPS
    # Latency of both DUTs at the same rate: a fraction of siplb's best of this round.
    if [ "$dut" = siplb ]; then
      lat_rate=$(python3 -c "print(max(1000, int($rate * $LAT_FRACTION)))")
      lat_rate_of_rep[$rep]=$lat_rate
    fi
    lat_rate=${lat_rate_of_rep[$rep]}
    trial "$dut" "$lat_rate" "$TRIAL_S" "$dut-r$rep-latency"
    lat=$(python3 -c "
import json; l = json.load(open('$DATA/$dut-r$rep-latency.json'))['client']['latency']
print(f\"{l['p50_us']:.1f},{l['p99_us']:.1f},{l['p999_us']:.1f},{l['max_us']:.1f}\")")
    echo "$rep,$dut,$rate,$mpps,$lat_rate,$lat" | tee -a "$csv"
  done
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average at end: $load_end"

summary="$(python3 - "$csv" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(dut, k):
    return statistics.median(float(r[k]) for r in rows if r["dut"] == dut)
s, t = {}, {}
for k in ["max_request_rate", "max_mpps", "lat_rate", "p50_us", "p99_us", "p999_us", "max_us"]:
    s[k], t[k] = med("siplb", k), med("testpmd", k)
print("| DUT (1 core, virtio-user) | requests/s at <= 0.1% loss | Mpps through the DUT (both directions) | latency rate (req/s) | p50 us | p99 us | p99.9 us | max us |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, d in [("siplb-dataplane, 1 worker", s), ("dpdk-testpmd io", t)]:
    print(f"| {name} | {d['max_request_rate']:.0f} | {d['max_mpps']:.3f} | {d['lat_rate']:.0f} | {d['p50_us']:.1f} | {d['p99_us']:.1f} | {d['p999_us']:.1f} | {d['max_us']:.1f} |")
print()
print(f"**Ratio siplb / testpmd io-forward: {s['max_mpps'] / max(t['max_mpps'], 1e-9) * 100:.1f} %** (medians of {len(rows) // 2} rounds; aim >= 60 %).")
print(f"Added latency of siplb over testpmd at the same rate: p50 {s['p50_us'] - t['p50_us']:+.1f} us, p99 {s['p99_us'] - t['p99_us']:+.1f} us, p99.9 {s['p999_us'] - t['p999_us']:+.1f} us.")
EOF
)"
echo "$summary"

if [ "${RECORD:-1}" != 1 ]; then exit 0; fi  # RECORD=0: a try-out, nothing appended
cmd="bench/virtio.sh (TRIAL_S=$TRIAL_S SEARCH_STEPS=$SEARCH_STEPS REPEAT=$REPEAT PAYLOAD=$PAYLOAD CALLS=$CALLS QUEUE_SIZE=$QUEUE_SIZE HI_FLOOR=$HI_FLOOR GEN_CORE=$GEN_CORE DUT_CORE=$DUT_CORE)"
{
  echo
  echo "### Record: virtio, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`$cmd\`, tree $(git describe --always --dirty), DPDK $(pkg-config --modversion libdpdk 2>/dev/null || echo '?'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))."
  echo "Load average (1/5/15 min) at start: $load_start; at end: $load_end."
  echo
  echo "$summary"
  echo
  echo "The generator alone (no DPDK, core $GEN_CORE): \`$gen_cost\`."
  echo
  echo "Per round (\`bench/data/virtio.csv\`):"
  echo
  echo '```'
  cat "$csv"
  echo '```'
} >"$work/record.md"
# The record goes at the end of this benchmark's section of RESULTS.md.
python3 - "$work/record.md" <<'EOF'
import sys
path = "bench/RESULTS.md"
s, rec = open(path).read(), open(sys.argv[1]).read()
head = "## siplb on the virtio PMD vs testpmd io-forward"
if head not in s:
    s = s.rstrip("\n") + "\n\n" + head + " (issue 7, 2b and 2d)\n"
at = s.index(head)
end = s.find("\n## ", at + len(head))
end = len(s) if end < 0 else end + 1
s = s[:end].rstrip("\n") + "\n" + rec + ("\n" + s[end:] if end < len(s) else "")
open(path, "w").write(s)
EOF
echo "recorded in bench/RESULTS.md (section on virtio); JSON summaries in $DATA/"
