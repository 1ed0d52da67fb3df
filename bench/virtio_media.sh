#!/usr/bin/env bash
# Issue 12 item 6: RTP packets/s through ONE siplb worker on the in-memory virtio PMD,
# against dpdk-testpmd --forward-mode=io on the same PMD and the same core, in the same
# run (the set-up of bench/virtio.sh, media instead of SIP).
#
#   bench/virtio_media.sh              (needs root and hugepages; about 5 minutes)
#
#   siplb-gen --mode both --rtp-streams (GEN_CORE)   device under test (DUT_CORE)
#   client  net_vhost0  <== front.sock ==>  net_virtio_user0
#                                                    siplb-dataplane | dpdk-testpmd io
#   backends net_vhost1 <== back.sock  ==>  net_virtio_user1
#
# Each trial: the client places STREAMS calls (INVITE with SDP: its address, an even
# port per call; 200 with SDP: the backend's address and port; ACK) at SETUP_RATE
# requests/s, holds them, and both sides send RTP (12-byte header + RTP_PAYLOAD bytes
# of PCMU) where the SDP they *received* said, alternating directions, streams round
# robin, at the trial's total rate for TRIAL_S seconds; then 100 ms of drain and the
# BYEs. siplb (dnat, media relayed through the VIP, farm media_ports 40000-59999): the
# SDPs name the VIP's client and backend legs, every RTP packet is NATed by the worker.
# testpmd io (no NAT, no SIP): the client calls the backend 198.18.1.11 directly and
# the endpoints' SDPs name each other, so the generator does the same work per packet.
# Delivered: RTP packets of the right stream (SSRC) at the port the receiver announced,
# both directions, over the seconds RTP was sent; loss: 1 - delivered / sent. Rate
# search per DUT: a probe at --rtp-pps 0 (as fast as the generator goes), then
# bisection between 0 and max(1.3 x the probe, HI_FLOOR) (SEARCH_STEPS trials, a failed
# trial tried once more) for the highest rate with loss <= 0.1 %. REPEAT rounds, DUTs
# alternating, medians. Per siplb trial the dataplane's media packet counter (its final
# line: the sum over farms, one farm here) is compared with what the generator received.
#
# Adds a dated record to its section of bench/RESULTS.md (RECORD=0: not); raw JSON
# summaries (one per trial) in bench/data/virtio_media/, the table in
# bench/data/virtio_media.csv, the log in bench/data/virtio_media.log.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIAL_S="${TRIAL_S:-2}"
SEARCH_STEPS="${SEARCH_STEPS:-6}"
REPEAT="${REPEAT:-3}"
STREAMS="${STREAMS:-1000}"
RTP_PAYLOAD="${RTP_PAYLOAD:-160}"
SETUP_RATE="${SETUP_RATE:-20000}"
QUEUE_SIZE="${QUEUE_SIZE:-4096}"
# Upper bound of the rate search (RTP packets/s, both directions) when the probe found less.
HI_FLOOR="${HI_FLOOR:-500000}"
GEN_CORE="${GEN_CORE:-0}"
DUT_CORE="${DUT_CORE:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/release"
TESTPMD="${TESTPMD:-dpdk-testpmd}"
DATA=bench/data/virtio_media
TAG="vm$$"
[ "$(id -u)" = 0 ] || { echo "bench/virtio_media.sh needs root (DPDK, hugepages)" >&2; exit 1; }
command -v "$TESTPMD" >/dev/null || { echo "$TESTPMD not found: run ci/setup-host.sh (dpdk package)" >&2; exit 1; }

work="$(mktemp -d -t siplb-virtio-media.$$.XXXX)"
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
cargo build --release -q -p traffic-gen --example rtp_cost
mkdir -p "$DATA"
rm -f "$DATA"/*.json
exec > >(tee bench/data/virtio_media.log) 2>&1

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
dialogs = 65536
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
alg = true
media = true
media_ports = "40000-59999"
backends = [
  { address = "198.18.1.11", port = 5060, weight = 1 },
  { address = "198.18.1.12", port = 5060, weight = 2 },
  { address = "198.18.1.13", port = 5060, weight = 3 },
]

[farm.health]
check = "none"
EOF

n=0
# trial DUT RATE SECONDS NAME: one generator run through the DUT; leaves $DATA/NAME.json
# and sets PPS (delivered), SENT_PPS, SKIPPED (packets the generator's pacer dropped
# from its schedule: it was descheduled), LOSS, GEN_RX (delivered packets), DUT_MEDIA
# (siplb's media packet counter, "-" for testpmd), STREAMS_UP and DUT_DROPS.
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
    --mode both "${dst[@]}" --rate "$SETUP_RATE" --duration "$secs" \
    --rtp-streams "$STREAMS" --rtp-pps "$rate" --rtp-payload "$RTP_PAYLOAD" \
    --timeout-ms 5000 --mbufs 32767 --stats-interval 0 --link-timeout 30 \
    --json "$json" >"$work/gen-$name.log" 2>&1 &
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
  if [ "$dut" = testpmd ]; then
    DUT_DROPS="tx-dropped=$(grep -A2 'Accumulated forward statistics' "$work/dut-$name.log" | grep -o 'TX-dropped: *[0-9]*' | grep -o '[0-9]*$' || echo '?')"
    DUT_MEDIA=-
  else
    DUT_DROPS="$(grep 'siplb-dataplane: final' "$work/dut-$name.log" | grep -o 'drops .*' || echo 'drops none')"
    DUT_MEDIA="$(grep 'siplb-dataplane: final' "$work/dut-$name.log" | grep -o ' media flows=[0-9]* live=[^ ]* packets=[0-9]*' | grep -o 'packets=[0-9]*' | cut -d= -f2 || true)"
    DUT_MEDIA="${DUT_MEDIA:-0}"
  fi
  rm -f /dev/hugepages/"$gp"* /dev/hugepages/"$dp"*
  rm -rf /var/run/dpdk/"$gp" /var/run/dpdk/"$dp"
  if [ "$ok" != 1 ] || [ ! -s "$json" ]; then
    echo "trial $name failed; generator log:" >&2
    tail -20 "$work/gen-$name.log" >&2
    tail -20 "$work/dut-$name.log" >&2
    PPS=0 SENT_PPS=0 SKIPPED=0 LOSS=1 GEN_RX=0 STREAMS_UP=0
    return
  fi
  read -r PPS SENT_PPS SKIPPED LOSS GEN_RX STREAMS_UP < <(python3 - "$json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["media"]
rx = m["client_to_backend"]["received"] + m["backend_to_client"]["received"]
bad = m["client_to_backend"]["misdelivered"] + m["backend_to_client"]["misdelivered"]
# A misdelivered packet is a lost one: it reached the wrong port or stream.
loss = m["loss"] if bad == 0 else max(m["loss"], bad / max(rx + bad, 1))
print(f'{m["delivered_pps"]:.0f} {m["sent_pps"]:.0f} {m["pacer_skipped"]} {loss:.6f} {rx} {min(m["client_legs"], m["backend_legs"])}')
EOF
)
  # A trial whose calls did not all get their streams measured fewer streams than asked.
  [ "$STREAMS_UP" = "$STREAMS" ] || { echo "  $name: only $STREAMS_UP of $STREAMS streams up: counted as failed"; LOSS=1; }
}

passes() { python3 -c "import sys; sys.exit(0 if $1 <= 0.001 else 1)"; }

# search DUT REP: a probe at rate 0, then bisection; sets BEST_RATE, BEST_PPS and the
# counters of the best trial (BEST_SENT_PPS, BEST_SKIPPED, BEST_GEN_RX, BEST_DUT_MEDIA).
search() {
  local dut="$1" rep="$2"
  trial "$dut" 0 "$TRIAL_S" "$dut-r$rep-probe"
  echo "  $dut round $rep probe (rate 0): $PPS pps delivered, loss $LOSS, generator received $GEN_RX, DUT media packets $DUT_MEDIA; DUT $DUT_DROPS"
  local lo=0 hi
  BEST_PPS=0 BEST_SENT_PPS=0 BEST_SKIPPED=0 BEST_GEN_RX=0 BEST_DUT_MEDIA=-
  hi=$(python3 -c "print(max(int($PPS * 1.3), $HI_FLOOR))")
  if passes "$LOSS"; then
    lo=$PPS; BEST_PPS=$PPS BEST_SENT_PPS=$SENT_PPS BEST_SKIPPED=$SKIPPED BEST_GEN_RX=$GEN_RX BEST_DUT_MEDIA=$DUT_MEDIA
  fi
  for _ in $(seq "$SEARCH_STEPS"); do
    local mid=$(((lo + hi) / 2))
    trial "$dut" "$mid" "$TRIAL_S" "$dut-r$rep-rate$mid"
    if ! passes "$LOSS"; then
      # One retry: on a shared machine a trial can lose packets to a scheduling gap.
      echo "  $dut round $rep rate $mid: $PPS pps, loss $LOSS: retry; DUT $DUT_DROPS"
      trial "$dut" "$mid" "$TRIAL_S" "$dut-r$rep-rate$mid-retry"
    fi
    if passes "$LOSS"; then
      echo "  $dut round $rep rate $mid: $PPS pps (sent $SENT_PPS, pacer skipped $SKIPPED), loss $LOSS: pass; generator received $GEN_RX, DUT media packets $DUT_MEDIA; DUT $DUT_DROPS"
      lo=$mid; BEST_PPS=$PPS BEST_SENT_PPS=$SENT_PPS BEST_SKIPPED=$SKIPPED BEST_GEN_RX=$GEN_RX BEST_DUT_MEDIA=$DUT_MEDIA
    else
      echo "  $dut round $rep rate $mid: $PPS pps (sent $SENT_PPS, pacer skipped $SKIPPED), loss $LOSS: fail; DUT $DUT_DROPS"
      hi=$mid
    fi
  done
  BEST_RATE=$lo
}

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average at start: $load_start"
gen_cost="$(taskset -c "$GEN_CORE" "$BIN/examples/rtp_cost")"
echo "$gen_cost"
csv="bench/data/virtio_media.csv"
echo "rep,dut,max_rtp_rate,delivered_pps,sent_pps,pacer_skipped,generator_received,dut_media_packets" >"$csv"
for rep in $(seq "$REPEAT"); do
  for dut in siplb testpmd; do
    search "$dut" "$rep"
    echo "$rep,$dut,$BEST_RATE,$BEST_PPS,$BEST_SENT_PPS,$BEST_SKIPPED,$BEST_GEN_RX,$BEST_DUT_MEDIA" | tee -a "$csv"
  done
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average at end: $load_end"

summary="$(python3 - "$csv" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(dut, k):
    return statistics.median(float(r[k]) for r in rows if r["dut"] == dut)
keys = ["max_rtp_rate", "delivered_pps", "sent_pps", "pacer_skipped"]
s = {k: med("siplb", k) for k in keys}
t = {k: med("testpmd", k) for k in keys}
print("| DUT (1 core, virtio-user) | RTP packets/s asked (--rtp-pps) at <= 0.1% loss | sent by the generator | delivered (both directions) | pacer-skipped packets |")
print("|---|---:|---:|---:|---:|")
for name, d in [("siplb-dataplane, 1 worker (media NAT)", s), ("dpdk-testpmd io", t)]:
    print(f"| {name} | {d['max_rtp_rate']:.0f} | {d['sent_pps']:.0f} | {d['delivered_pps']:.0f} | {d['pacer_skipped']:.0f} |")
print()
print(f"**Ratio siplb / testpmd io-forward: {s['delivered_pps'] / max(t['delivered_pps'], 1e-9) * 100:.1f} %** (delivered, medians of {len(rows) // 2} rounds).")
eq = [r for r in rows if r["dut"] == "siplb"]
same = sum(1 for r in eq if r["generator_received"] == r["dut_media_packets"])
print(f"siplb's media packet counter = RTP the generator received, in the best trial of each round: {same} of {len(eq)} rounds equal ("
      + ", ".join(f"{r['dut_media_packets']} vs {r['generator_received']}" for r in eq) + ").")
EOF
)"
echo "$summary"

if [ "${RECORD:-1}" != 1 ]; then exit 0; fi  # RECORD=0: a try-out, nothing appended
cmd="bench/virtio_media.sh (TRIAL_S=$TRIAL_S SEARCH_STEPS=$SEARCH_STEPS REPEAT=$REPEAT STREAMS=$STREAMS RTP_PAYLOAD=$RTP_PAYLOAD SETUP_RATE=$SETUP_RATE QUEUE_SIZE=$QUEUE_SIZE HI_FLOOR=$HI_FLOOR GEN_CORE=$GEN_CORE DUT_CORE=$DUT_CORE)"
{
  echo
  echo "### Record: virtio media, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`$cmd\`, tree $(git describe --always --dirty), DPDK $(pkg-config --modversion libdpdk 2>/dev/null || echo '?'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))."
  echo "Load average (1/5/15 min) at start: $load_start; at end: $load_end."
  echo
  echo "$summary"
  echo
  echo "The generator alone (no DPDK, core $GEN_CORE): \`$gen_cost\`."
  echo
  echo "Per round (\`bench/data/virtio_media.csv\`):"
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
head = "## Media through the virtio-user set-up: siplb vs testpmd io"
if head not in s:
    s = s.rstrip("\n") + "\n\n" + head + " (issue 12, item 6)\n"
at = s.index(head)
end = s.find("\n## ", at + len(head))
end = len(s) if end < 0 else end + 1
s = s[:end].rstrip("\n") + "\n" + rec + ("\n" + s[end:] if end < len(s) else "")
open(path, "w").write(s)
EOF
echo "recorded in bench/RESULTS.md (section on media through virtio); JSON summaries in $DATA/"
