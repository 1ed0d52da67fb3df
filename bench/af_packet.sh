#!/usr/bin/env bash
# Issue 7 parts 2c and 2d: siplb against Kamailio's dispatcher on the veth/af_packet
# topology: messages/s at <= 0.1% loss, and the latency each adds.
#
#   bench/af_packet.sh                 (needs root; about 10 minutes)
#
#   [client ns]                 [lb ns]                       [backend ns]
#   cli0 198.18.0.10/24 ── lbf  forwarder  lbb ── be0 198.18.1.11/24, 198.18.1.12/24
#
# The forwarder, one core (LB_CORE), in turn:
#   kernel   - plain IPv4 routing in the lb ns (ip_forward); the client calls one
#              backend directly. The baseline: what the generator and the topology
#              carry and cost without a SIP forwarder (its softirq work runs on
#              whichever core sends, not only LB_CORE).
#   kamailio - Kamailio 5.6, bench/kamailio/dispatcher.cfg: one UDP worker
#              (children=1), every Kamailio process pinned to LB_CORE with taskset;
#              listens on the VIP 198.18.0.2 (lbf 198.18.0.1, lbb 198.18.1.1);
#              ds_select_dst algorithm 0 (Call-ID hash), stateless forward().
#   siplb    - siplb-dataplane with af_packet ports on lbf and lbb (no kernel IPs),
#              one worker lcore on LB_CORE busy-polling, its main lcore
#              (housekeeping) on the same core (SIPLB_MAIN_CORE; on GEN_CORE it
#              delayed ~1% of requests by ~10 ms), VIP 198.18.0.2, dnat, Call-ID
#              affinity, no exception path, no health checks.
#
# Driver (DRIVER=sipp, the only one until siplb-gen lands): SIPp's built-in uac in
# the client ns and one built-in uas per backend address, all on GEN_CORE, no
# retransmissions (-nr) so a lost message is a failed call (-recv_timeout 2 s). One
# call is 6 messages through the forwarder (INVITE, 180, 200, ACK, BYE, 200); SIPp's
# uac sends ACK and BYE to the VIP, so stickiness is the forwarder's. Rate search:
# trials of TRIAL_S seconds, the call rate doubled from START_RATE while a trial
# passes (failed calls <= 0.1% and SIPp reached >= 95% of the asked rate), then
# bisected. A trial SIPp itself cannot keep up with is reported as the driver's limit,
# not the forwarder's. Latency (2d): at LAT_RATE calls/s for every forwarder, tcpdump
# on cli0 and be0 (nanosecond timestamps), each message matched by Call-ID, CSeq and
# method/status (bench/src/bin/pcap_latency.rs); added latency = forwarder - kernel.
#
# Appends a dated record to bench/RESULTS.md; raw results in bench/data/af_packet*.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DRIVER="${DRIVER:-gen}"
TARGETS="${TARGETS:-kernel kamailio siplb}"
TRIAL_S="${TRIAL_S:-10}"
if [ "$DRIVER" = gen ]; then
  # siplb-gen: requests/s (INVITE, ACK, BYE); SIPp: calls/s.
  START_RATE="${START_RATE:-1000}" MAX_RATE="${MAX_RATE:-2000000}" LAT_RATE="${LAT_RATE:-3000}"
else
  START_RATE="${START_RATE:-500}" MAX_RATE="${MAX_RATE:-64000}" LAT_RATE="${LAT_RATE:-500}"
fi
BISECT="${BISECT:-3}"
LB_CORE="${LB_CORE:-1}"
GEN_CORE="${GEN_CORE:-0}"
# The machine is shared with other work (compilers): the forwarder and the driver run
# at this nice level, the same for every forwarder, so they lose less time to it.
NICE="${NICE:--10}"
SIPLB_IDLE_SLEEP_US="${SIPLB_IDLE_SLEEP_US:-0}"
# Core of siplb's main lcore (housekeeping: commands, ARP refresh, the table sweeps
# that count expired dialogs, stats).
SIPLB_MAIN_CORE="${SIPLB_MAIN_CORE:-$LB_CORE}"
# The workspace's own target/ unless the caller chose another.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
DATA=bench/data
mkdir -p "$DATA"

TAG="sb$$"
if [ "$DRIVER" = gen ]; then
  # One siplb-gen process owns both outer veth ends (client and backends).
  NS_CLI="$TAG-gen" NS_LB="$TAG-lb" NS_BE="$TAG-gen"
else
  NS_CLI="$TAG-cli" NS_LB="$TAG-lb" NS_BE="$TAG-be"
fi
PREFIX="siplb-bench-afp-$$"
VIP=198.18.0.2
CLIENT=198.18.0.10
BACKENDS=(198.18.1.11 198.18.1.12)
work="$(mktemp -d -t siplb-afp.$$.XXXX)"
pids=()
made_ns=()

stop_pid() {
  local p="$1"
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  set +e
  for p in "${pids[@]}"; do stop_pid "$p"; done
  for ns in "${made_ns[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -f /dev/hugepages/"$PREFIX"map_* 2>/dev/null
  rm -rf "/var/run/dpdk/$PREFIX"
  if [ -n "${KEEP_WORK:-}" ]; then echo "work files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
say() { printf 'af_packet: %s\n' "$*" >&2; }
in_ns() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }

cargo build --release -q -p bench --bin pcap_latency
cargo build --release -q -p dataplane --bin siplb-dataplane
[ "$DRIVER" = gen ] && cargo build --release -q -p traffic-gen --bin siplb-gen
GEN="$CARGO_TARGET_DIR/release/siplb-gen"
PCAP_LATENCY="$CARGO_TARGET_DIR/release/pcap_latency"
DATAPLANE="$CARGO_TARGET_DIR/release/siplb-dataplane"

# --- topology ---------------------------------------------------------------
for ns in $(printf '%s\n' "$NS_CLI" "$NS_LB" "$NS_BE" | sort -u); do
  ip netns add "$ns"
  made_ns+=("$ns")
  in_ns "$ns" ip link set lo up
done
ip link add cli0 netns "$NS_CLI" type veth peer name lbf netns "$NS_LB"
ip link add lbb netns "$NS_LB" type veth peer name be0 netns "$NS_BE"
in_ns "$NS_CLI" ip link set cli0 up
in_ns "$NS_BE" ip link set be0 up
if [ "$DRIVER" = sipp ]; then
  in_ns "$NS_CLI" ip addr add "$CLIENT/24" dev cli0
  in_ns "$NS_CLI" ip route add default via 198.18.0.1
  for b in "${BACKENDS[@]}"; do in_ns "$NS_BE" ip addr add "$b/24" dev be0; done
  in_ns "$NS_BE" ip route add default via 198.18.1.1
fi
for x in "$NS_CLI cli0" "$NS_BE be0" "$NS_LB lbf" "$NS_LB lbb"; do
  # Kernel-sent UDP on veth leaves with unfinished checksums unless TX offload is off.
  set -- $x
  in_ns "$1" ethtool -K "$2" tx off >/dev/null
done
in_ns "$NS_LB" ip link set lbf up
in_ns "$NS_LB" ip link set lbb up

lb_addresses() { # on|off
  in_ns "$NS_LB" ip addr flush dev lbf
  in_ns "$NS_LB" ip addr flush dev lbb
  if [ "$1" = on ]; then
    in_ns "$NS_LB" ip addr add 198.18.0.1/24 dev lbf
    in_ns "$NS_LB" ip addr add 198.18.1.1/24 dev lbb
  fi
  for ns in $(printf '%s\n' "$NS_CLI" "$NS_LB" "$NS_BE" | sort -u); do in_ns "$ns" ip neigh flush all 2>/dev/null || true; done
}

# --- forwarders -------------------------------------------------------------
lb_pid=""
start_kernel() {
  lb_addresses on
  in_ns "$NS_LB" sysctl -q -w net.ipv4.ip_forward=1
  DEST="${BACKENDS[0]}"
  # siplb-gen resolves only on-link addresses: give it the router's MAC.
  DEST_MAC="$(in_ns "$NS_LB" cat /sys/class/net/lbf/address)"
}
start_kamailio() {
  lb_addresses on
  in_ns "$NS_LB" sysctl -q -w net.ipv4.ip_forward=0
  in_ns "$NS_LB" ip addr add "$VIP/32" dev lbf
  mkdir -p "$work/kamailio"
  : >"$work/kamailio/dispatcher.list"
  for b in "${BACKENDS[@]}"; do echo "1 sip:$b:5060" >>"$work/kamailio/dispatcher.list"; done
  ip netns exec "$NS_LB" nice -n "$NICE" taskset -c "$LB_CORE" kamailio -f "$ROOT/bench/kamailio/dispatcher.cfg" -DD -E \
    -A "LISTEN=udp:$VIP:5060" -A "DSLIST=\"$work/kamailio/dispatcher.list\"" -A WORKERS=1 \
    -Y "$work/kamailio" -w "$work/kamailio" -m 128 -M 8 >"$work/kamailio.log" 2>&1 &
  lb_pid=$!
  pids+=("$lb_pid")
  for _ in $(seq 100); do
    in_ns "$NS_LB" ss -Hlun "sport = :5060" | grep -q . && break
    kill -0 "$lb_pid" 2>/dev/null || { cat "$work/kamailio.log" >&2; return 1; }
    sleep 0.1
  done
  sleep 0.5
  DEST="$VIP" DEST_MAC=""
}
start_siplb() {
  lb_addresses off
  in_ns "$NS_LB" sysctl -q -w net.ipv4.ip_forward=0
  cat >"$work/siplb.toml" <<EOF
[dataplane]
eal_args = ["--lcores", "0@$SIPLB_MAIN_CORE,1@$LB_CORE", "--no-pci", "--file-prefix", "$PREFIX",
            "--vdev", "net_af_packet0,iface=lbf,framecnt=8192",
            "--vdev", "net_af_packet1,iface=lbb,framecnt=8192"]
workers = 1
idle_sleep_us = $SIPLB_IDLE_SLEEP_US
exception_path = false
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
vip = "$VIP"
port = 5060
nat = "dnat"
affinity = "call-id"
backends = [ { address = "${BACKENDS[0]}" }, { address = "${BACKENDS[1]}" } ]
[farm.health]
check = "none"
EOF
  ip netns exec "$NS_LB" nice -n "$NICE" "$DATAPLANE" -c "$work/siplb.toml" --duration 3600 --stats-interval 5 \
    >"$work/siplb.log" 2>&1 &
  lb_pid=$!
  pids+=("$lb_pid")
  local ready="/var/run/dpdk/$PREFIX/siplb-dataplane.ready"
  for _ in $(seq 300); do
    [ -f "$ready" ] && break
    kill -0 "$lb_pid" 2>/dev/null || { cat "$work/siplb.log" >&2; return 1; }
    sleep 0.1
  done
  [ -f "$ready" ] || { cat "$work/siplb.log" >&2; say "siplb-dataplane not ready"; return 1; }
  sleep 1
  DEST="$VIP" DEST_MAC=""
}
stop_forwarder() {
  if [ -n "$lb_pid" ]; then stop_pid "$lb_pid"; fi
  lb_pid=""
  rm -f /dev/hugepages/"$PREFIX"map_* 2>/dev/null || true
}

# --- SIPp driver ------------------------------------------------------------
uas_pids=()
start_uas() {
  uas_pids=()
  local i=0
  for b in "${BACKENDS[@]}"; do
    (cd "$work" && exec ip netns exec "$NS_BE" nice -n "$NICE" taskset -c "$GEN_CORE" sipp -sn uas -i "$b" -p 5060 -nr \
      -trace_stat -stf "$work/uas$i.csv" -fd 1 </dev/null >"$work/uas$i.log" 2>&1) &
    uas_pids+=("$!")
    pids+=("$!")
    i=$((i + 1))
  done
  sleep 0.5
}
stop_uas() {
  sleep 1.5 # one more stats line
  for p in "${uas_pids[@]}"; do stop_pid "$p"; done
}
# Column $2 of the last line of SIPp stat file $1.
stat_col() {
  awk -F';' -v want="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i; next }
                         { v = $c } END { print v + 0 }' "$1"
}

# One trial: RATE calls/s for TRIAL_S seconds. Sets T_OK T_FAIL T_CALLS T_RATE T_PASS,
# T_BE (per-backend incoming calls / dead-call messages).
trial() {
  local rate="$1" secs="${2:-$TRIAL_S}"
  local calls=$((rate * secs))
  rm -f "$work"/uac.csv "$work"/uas*.csv
  start_uas
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$work" && exec ip netns exec "$NS_CLI" nice -n "$NICE" taskset -c "$GEN_CORE" timeout $((secs * 3 + 30)) \
    sipp -sn uac "$DEST:5060" -i "$CLIENT" -p 5060 -r "$rate" -rp 1000 -m "$calls" -nr \
    -recv_timeout 2000 -l $((rate * 3)) -trace_stat -stf "$work/uac.csv" -fd 1 \
    </dev/null >"$work/uac.log" 2>&1) || true
  t1=$(date +%s.%N)
  stop_uas
  T_OK=$(stat_col "$work/uac.csv" "SuccessfulCall(C)")
  T_FAIL=$(stat_col "$work/uac.csv" "FailedCall(C)")
  T_CALLS=$((T_OK + T_FAIL))
  # SIPp's own sending time: calls started over the time it took, less the 2 s the
  # last failed calls may wait.
  local elapsed
  elapsed=$(echo "$t0 $t1 $T_FAIL" | awk '{ e = $2 - $1; if ($3 > 0) e -= 2; print (e > 0.1 ? e : 0.1) }')
  T_RATE=$(echo "$T_CALLS $elapsed" | awk '{ printf "%d", $1 / $2 }')
  T_BE=""
  local i=0
  for _ in "${BACKENDS[@]}"; do
    T_BE+=" be$i=$(stat_col "$work/uas$i.csv" "IncomingCall(C)")/dead$(stat_col "$work/uas$i.csv" "DeadCallMsgs(C)")"
    i=$((i + 1))
  done
  T_PASS=fail
  T_WHY=""
  if [ "$T_CALLS" -lt "$calls" ]; then T_WHY="only $T_CALLS of $calls calls ended"; fi
  if [ "$T_CALLS" -gt 0 ] && [ $((T_FAIL * 1000)) -le "$T_CALLS" ] && [ "$T_CALLS" -ge "$calls" ]; then
    if [ $((T_RATE * 100)) -ge $((rate * 95)) ]; then T_PASS=pass; else T_PASS=driver; T_WHY="SIPp reached $T_RATE/s"; fi
  fi
  [ "$T_FAIL" -gt 0 ] && T_WHY="$T_WHY failed $T_FAIL"
  say "$TARGET rate $rate: ok $T_OK failed $T_FAIL achieved ${T_RATE}/s backends:$T_BE -> $T_PASS $T_WHY"
  echo "$TARGET,$rate,$T_OK,$T_FAIL,$T_RATE,$T_PASS,$(echo $T_BE | tr ' ' '|')" >>"$DATA/af_packet-trials.csv"
}


# --- siplb-gen driver -------------------------------------------------------
# Sets T_PASS T_WHY T_RATE (requests/s reached) T_MSGS (messages/s through the
# forwarder, both ways) T_LOSS T_BE T_LAT (p50,p99,p99.9,max in us, request to final
# response: two passes through the forwarder).
gen_trial() {
  local rate="$1" secs="${2:-$TRIAL_S}"
  rm -f "$work/gen.json"
  local mac=()
  [ -n "${DEST_MAC:-}" ] && mac=(--dst-mac "$DEST_MAC")
  in_ns "$NS_CLI" nice -n "$NICE" timeout $((secs + 60)) "$GEN" -l "$GEN_CORE" --no-pci --no-huge \
    -m 1024 --no-shconf --file-prefix "gen$$" \
    --vdev "net_af_packet0,iface=cli0,framecnt=8192${GEN_VDEV_EXTRA:-}" \
    --vdev "net_af_packet1,iface=be0,framecnt=8192${GEN_VDEV_EXTRA:-}" -- \
    --mode both --client-port 0 --backend-port 1 --src-ip "$CLIENT" --dst-ip "$DEST" "${mac[@]}" \
    --backend-ip "${BACKENDS[0]}" --backends "${#BACKENDS[@]}" --rate "$rate" --duration "$secs" \
    --calls "${GEN_CALLS:-20000}" --users 100000 --mix register=0,invite=1,ack=1,bye=1,options=0 \
    --timeout-ms 1000 --stats-interval 0 --json "$work/gen.json" >"$work/gen.log" 2>&1 || true
  if [ ! -s "$work/gen.json" ]; then
    tail -20 "$work/gen.log" >&2
    T_PASS=error T_WHY="siplb-gen wrote no summary" T_RATE=0 T_MSGS=0 T_LOSS=1 T_BE="" T_LAT="0,0,0,0"
  else
    eval "$(python3 - "$work/gen.json" "$rate" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); asked = int(sys.argv[2])
c, r = s["client"], s["responder"]
sent = c["requests"] + r["responses"]
got = sum(r["received"].values()) + c["responses"]
loss = 1 - got / sent if sent else 1
secs = c.get("sending_s") or c["elapsed_s"]
msgs = (c["requests"] + c["responses"]) / secs if secs else 0
rate = c["requests_per_s"]
be = "|".join(f'{b["address"]}={b["requests"]}' for b in r["per_backend"])
be += f'|split={r["split_dialogs"]}'
lat = c["latency"]
ok = loss <= 0.001 and rate >= 0.95 * asked
why = "" if ok else (f"loss {loss:.4%}" if loss > 0.001 else f"generator reached {rate:.0f}/s")
verdict = "pass" if ok else ("fail" if loss > 0.001 else "driver")
print(f'T_PASS={verdict} T_WHY="{why}" T_RATE={rate:.0f} T_MSGS={msgs:.0f} T_LOSS={loss:.6f} '
      f'T_BE="{be}" T_LAT="{lat["p50_us"]:.1f},{lat["p99_us"]:.1f},{lat["p999_us"]:.1f},{lat["max_us"]:.1f}"')
PY
)"
  fi
  say "$TARGET rate $rate req/s: reached $T_RATE req/s, $T_MSGS msg/s, loss $T_LOSS, latency $T_LAT, backends $T_BE -> $T_PASS $T_WHY"
  echo "$TARGET,$rate,$T_RATE,$T_MSGS,$T_LOSS,$T_PASS,\"$T_LAT\",$T_BE" >>"$DATA/af_packet-trials.csv"
  [ -f "$work/gen.json" ] && cp "$work/gen.json" "$work/gen-$TARGET-$rate.json"
  return 0
}

# One trial with the chosen driver; sets T_PASS, T_WHY, T_MSGS (messages/s through
# the forwarder) and T_LAT (siplb-gen only: its request → final response latency).
# The machine is shared: a trial that fails is run once more (RETRIES) before the rate
# counts as failed, for every forwarder alike.
run_trial() {
  local try
  for try in $(seq 0 "${RETRIES:-1}"); do
    if [ "$DRIVER" = gen ]; then
      gen_trial "$@"
    else
      trial "$@"
      T_MSGS=$((T_RATE * 6)) T_LAT=""
    fi
    [ "$T_PASS" = pass ] && return 0
    [ "${2:-}" = "" ] || return 0 # warm-up and latency trials are not retried
  done
}

# Rate search: sets BEST (highest passing rate), BEST_MSGS, BEST_LAT and LIMIT.
search() {
  local lo=0 hi=0 r="$START_RATE"
  BEST_MSGS=0 BEST_LAT=""
  LIMIT="max rate $MAX_RATE reached"
  while [ "$r" -le "$MAX_RATE" ]; do
    run_trial "$r"
    if [ "$T_PASS" = pass ]; then
      lo=$r BEST_MSGS=$T_MSGS BEST_LAT=$T_LAT; r=$((r * 2))
    else
      hi=$r; LIMIT="$T_PASS at $r $UNIT: $T_WHY"; break
    fi
  done
  if [ "$hi" -gt 0 ]; then
    for _ in $(seq "$BISECT"); do
      local mid=$(((lo + hi) / 2))
      [ "$mid" -le "$lo" ] && break
      run_trial "$mid"
      if [ "$T_PASS" = pass ]; then
        lo=$mid BEST_MSGS=$T_MSGS BEST_LAT=$T_LAT
      else
        hi=$mid; LIMIT="$T_PASS at $mid $UNIT: $T_WHY"
      fi
    done
  fi
  BEST=$lo
}

# One trial at LAT_RATE with tcpdump on both outer veths: per-message one-way latency
# through the forwarder (pcap_latency). Sets LAT (n,p50,p99,p99.9,max), LAT_PASS and
# LAT_GEN (the generator's own round trip figures).
latency() {
  ip netns exec "$NS_CLI" taskset -c "$GEN_CORE" tcpdump -q -n -i cli0 -B 65536 --time-stamp-precision=nano \
    -w "$work/cli.pcap" udp port 5060 >"$work/tcpdump-cli.log" 2>&1 &
  local c=$!
  pids+=("$c")
  ip netns exec "$NS_BE" taskset -c "$GEN_CORE" tcpdump -q -n -i be0 -B 65536 --time-stamp-precision=nano \
    -w "$work/be.pcap" udp port 5060 >"$work/tcpdump-be.log" 2>&1 &
  local b=$!
  pids+=("$b")
  sleep 1
  # The af_packet PMD bypasses the qdisc layer, and with it the capture taps, unless
  # told not to: only for this trial, so the captures see what siplb-gen sends.
  GEN_VDEV_EXTRA=",qdisc_bypass=0" run_trial "$LAT_RATE"
  sleep 0.5
  stop_pid "$c"
  stop_pid "$b"
  "$PCAP_LATENCY" "$work/cli.pcap" "$work/be.pcap" "$DATA/af_packet-latency-$TARGET.csv" \
    | tee "$work/lat-$TARGET.txt" >&2
  grep -h 'dropped by kernel' "$work"/tcpdump-*.log >&2 || true
  LAT="$(grep '^csv,' "$work/lat-$TARGET.txt" | cut -d, -f2-)"
  LAT_PASS="$T_PASS" LAT_GEN="$T_LAT"
}

# --- run --------------------------------------------------------------------
case "$DRIVER" in
  gen) UNIT="requests/s" ;;
  sipp) UNIT="calls/s" ;;
  *) say "DRIVER must be gen or sipp"; exit 2 ;;
esac
if [ "$DRIVER" = gen ]; then
  echo "target,rate,reached,msgs_s,loss,verdict,latency_us,backends" >"$DATA/af_packet-trials.csv"
else
  echo "target,rate,ok,failed,achieved,verdict,backends" >"$DATA/af_packet-trials.csv"
fi
echo "target,driver,unit,best_rate,best_msgs_s,limit,lat_rate,lat_n,p50_us,p99_us,p999_us,max_us,gen_rtt_at_lat_rate,gen_rtt_at_best" >"$DATA/af_packet.csv"
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -A RES
for TARGET in $TARGETS; do
  say "== $TARGET"
  "start_$TARGET"
  run_trial "$((START_RATE / 10))" 2 # warm-up: ARP, caches; not counted
  latency
  # Kernel routing's own search shows what the generator and the veth topology
  # carry on this machine: the ceiling of every forwarder's figure.
  search
  # Where frames were lost: the veth counters on both sides of the forwarder.
  for ns in $(printf '%s\n' "$NS_LB" "$NS_CLI" "$NS_BE" | sort -u); do
    echo "== $ns" >>"$work/links-$TARGET.txt"
    in_ns "$ns" ip -s link show >>"$work/links-$TARGET.txt" 2>&1
  done
  cp "$work/links-$TARGET.txt" "$DATA/af_packet-links-$TARGET.txt"
  stop_forwarder
  echo "$TARGET,$DRIVER,$UNIT,$BEST,$BEST_MSGS,\"$LIMIT\",$LAT_RATE,$LAT,\"$LAT_GEN\",\"$BEST_LAT\"" >>"$DATA/af_packet.csv"
  RES[$TARGET]="$BEST|$BEST_MSGS|$LIMIT|$LAT|$LAT_PASS|$LAT_GEN|$BEST_LAT"
done
load1="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- record -----------------------------------------------------------------
if [ "${RECORD:-1}" != 1 ]; then say "RECORD=${RECORD:-}: not appended to bench/RESULTS.md"; exit 0; fi
row() { # target
  local v="${RES[$1]:-}"
  [ -n "$v" ] || return 0
  IFS='|' read -r best msgs limit lat latpass latgen bestlat <<<"$v"
  IFS=, read -r n p50 p99 p999 max <<<"$lat"
  local name="$1"
  [ "$1" = kernel ] && name="kernel IPv4 routing (ceiling of the test bed)"
  echo "| $name | $best | **$msgs** | $n | $p50 | $p99 | $p999 | $max | ${latgen:--} | ${bestlat:--} | $limit |"
}
ratio="-"
if [ -n "${RES[siplb]:-}" ] && [ -n "${RES[kamailio]:-}" ]; then
  s_msgs="$(echo "${RES[siplb]}" | cut -d'|' -f2)"
  k_msgs="$(echo "${RES[kamailio]}" | cut -d'|' -f2)"
  ratio="$(awk -v s="$s_msgs" -v k="$k_msgs" 'BEGIN { if (k > 0) printf "%.1f", s / k; else print "-" }')"
fi
{
  echo
  echo "#### Record: af_packet (siplb vs Kamailio dispatcher), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`bench/af_packet.sh\` (DRIVER=$DRIVER TRIAL_S=$TRIAL_S START_RATE=$START_RATE LAT_RATE=$LAT_RATE LB_CORE=$LB_CORE GEN_CORE=$GEN_CORE NICE=$NICE SIPLB_IDLE_SLEEP_US=$SIPLB_IDLE_SLEEP_US SIPLB_MAIN_CORE=$SIPLB_MAIN_CORE), tree $(git describe --always --dirty), $(kamailio -v | head -1 | cut -d' ' -f1-3). Load average before $load0, after $load1."
  echo
  echo "Throughput ratio siplb / Kamailio (messages/s, one core each): **$ratio×**."
  echo
  echo "| forwarder | $UNIT (≤ 0.1% loss) | messages/s | latency samples at $LAT_RATE $UNIT | one-way p50 µs | p99 µs | p99.9 µs | max µs | generator RTT p50,p99,p99.9,max µs at $LAT_RATE | at the best rate | search stopped by |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
  for t in kernel kamailio siplb; do row "$t"; done
  echo
  echo "Trials:"
  echo
  echo '```'
  cat "$DATA/af_packet-trials.csv"
  echo '```'
} >>bench/RESULTS.md
say "appended to bench/RESULTS.md (ratio $ratio)"
