//! Figures of the HA pair (issue 13, item 6), printed for `bench/ha.sh` and recorded
//! in `bench/RESULTS.md`: a measurement, not a test. Settings through the environment: `HA_RATE` (new calls
//! per second, default 100), `HA_HOLD_MS` (call length, default 5000), `HA_NAT`
//! (default snat), `HA_FLOWS=1` (one client flow per call, hung up by the backends:
//! in snat, only the replicated mappings carry those calls over).
//!
//! One run: the active unit carries SIPp calls; after a quiet window (heartbeats only)
//! and half the calls, the active unit's processes are killed. Printed:
//! - sync bytes per new dialog: the HA port's bytes the standby's kernel received while
//!   calls were placed, less the heartbeats' rate of the quiet window, over the dialogs
//!   the active unit created meanwhile;
//! - failover time: from the kill to the end of the silence it causes at the backends
//!   (SIPp message logs, same clock): the first message the new active unit forwarded;
//! - dialogs in progress at the kill (INVITE before, BYE after), and how many of them
//!   failed or moved backend: the share that survived.

use e2e::pair::Pair;
use e2e::sipp::{stickiness, Uac};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Bytes the unit's kernel received on the HA port (an iptables counter).
fn ha_bytes(pair: &Pair, unit: usize) -> u64 {
    let out = pair.units[unit]
        .run("iptables", &["-nvxL", "INPUT"])
        .unwrap_or_default();
    out.lines()
        .find(|l| l.contains("dpt:5999"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|b| b.parse().ok())
        .unwrap_or(0)
}

fn dialogs_created(s: &e2e::siplb::Siplb) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["stats", "--json"]).unwrap_or_default()).unwrap_or_default();
    v["totals"]["dialogs_created"].as_u64().unwrap_or(0)
}

fn main() {
    e2e::require_root();
    let rate = env("HA_RATE", 100);
    let hold = env("HA_HOLD_MS", 5000);
    let nat = std::env::var("HA_NAT").unwrap_or_else(|_| "snat".into());
    let extra = if nat == "snat" {
        "snat_address = \"198.18.1.254\""
    } else {
        ""
    };
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm(&nat, extra);
    let u0 = pair.start(0, &farm).unwrap();
    let u1 = pair.start(1, &farm).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(u0.ha_role().starts_with("active (peer alive")
        && u1.ha_role().starts_with("standby (peer alive"))
    {
        assert!(Instant::now() < deadline, "roles never settled");
        std::thread::sleep(Duration::from_millis(200));
    }
    pair.units[1]
        .run(
            "iptables",
            &[
                "-I", "INPUT", "-p", "udp", "--dport", "5999", "-j", "ACCEPT",
            ],
        )
        .expect("an iptables counter on the standby");

    // Quiet window: heartbeats only.
    let quiet = Duration::from_secs(3);
    let b0 = ha_bytes(&pair, 1);
    std::thread::sleep(quiet);
    let heartbeat_bps = (ha_bytes(&pair, 1) - b0) as f64 / quiet.as_secs_f64();

    // HA_FLOWS=1: one client flow per call (`-t un`), hung up by the backends, whose
    // BYEs reach the SNAT ports the dead unit gave out: in snat only the replicated
    // mappings carry such a call over (otherwise the placement is deterministic and
    // a failover keeps calls even without replication).
    let flows = env("HA_FLOWS", 0) == 1;
    let hold_arg = hold.to_string();
    let uas = if flows {
        e2e::sipp::start_backend_uases(
            &pair.backends,
            &pair.dir,
            "hangup",
            Some("hangup_uas"),
            &["-d", &hold_arg],
        )
        .unwrap()
    } else {
        pair.start_uas_backends(&[]).unwrap()
    };
    let total = rate * 15;
    let uac = Uac::new(&pair.client, "calls", total, rate)
        .limit(rate * hold / 1000 * 2)
        .timeout_s(120);
    let uac = if flows {
        uac.scenario("hangup_uac")
            .args(["-t", "un", "-max_socket", "4000"])
    } else {
        uac.hold_ms(hold)
    };
    let mut calls = uac.spawn(&pair.dir).unwrap();
    let slots_read = || {
        u0.status_json()["ha_detail"]["sync_slots_read"]
            .as_u64()
            .unwrap_or(0)
    };
    let (b1, d1, t1, r1) = (
        ha_bytes(&pair, 1),
        dialogs_created(&u0),
        Instant::now(),
        slots_read(),
    );
    std::thread::sleep(Duration::from_millis(7500));
    let (b2, d2, t2, r2) = (
        ha_bytes(&pair, 1),
        dialogs_created(&u0),
        Instant::now(),
        slots_read(),
    );
    let sync = (b2 - b1) as f64 - heartbeat_bps * (t2 - t1).as_secs_f64();
    let per_dialog = sync / (d2 - d1).max(1) as f64;

    // What the active unit's HA thread measured of its replication stream.
    let detail: serde_json::Value =
        serde_json::from_str(&u0.ok(&["status", "--json"]).unwrap_or_default()).unwrap_or_default();
    let h = &detail["ha_detail"];
    println!(
        "FIGURES replication: changes acknowledged within {} ms p50 / {} ms p99 (from the sync pass before the one that found them, sync_ms = 20); sync datagrams acknowledged in {} ms p50 / {} ms p99 (send to ack); oldest unacknowledged {} ms; {} sent, {} resent; {} table slots read to find the changes of {} new dialogs ({:.0} per dialog)",
        h["change_lag_p50_ms"],
        h["change_lag_p99_ms"],
        h["ack_p50_ms"],
        h["ack_p99_ms"],
        h["lag_ms"],
        h["sent"],
        h["resent"],
        r2 - r1,
        d2 - d1,
        (r2 - r1) as f64 / (d2 - d1).max(1) as f64
    );

    let dataplane = u0.dataplane_pid().expect("unit 0's dataplane");
    let killed = unix_now();
    u0.daemon.signal(libc::SIGKILL);
    // SAFETY: the PID unit 0's dataplane wrote to its ready file.
    unsafe { libc::kill(dataplane as i32, libc::SIGKILL) };
    // The new active unit's role, polled every 20 ms.
    let mut took_over = None;
    while took_over.is_none() && unix_now() - killed < 10.0 {
        if u1.ha_role().starts_with("active") {
            took_over = Some(unix_now() - killed);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = calls
        .wait(Duration::from_secs(150))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);

    // What the backends received, in time order.
    let mut received: Vec<f64> = traces
        .iter()
        .flatten()
        .filter(|m| !m.sent)
        .map(|m| m.time)
        .collect();
    received.sort_by(f64::total_cmp);
    // Messages reach the backends about every 3 ms at 100 calls/s: the failover is
    // the first silence longer than 50 ms that starts at the kill, and ends with the
    // first message the new active unit forwarded.
    let gap = received
        .windows(2)
        .find(|w| w[1] > killed && w[1] - w[0] > 0.05)
        .map(|w| (w[0], w[1]));
    let silence = received
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0f64, f64::max);

    // Dialogs in progress at the kill: INVITE received by a backend before it, the
    // call's end expected after it: the client's BYE at the backend, or (HA_FLOWS)
    // the client's 200 to the backend's BYE.
    let mut invite: HashMap<&str, f64> = HashMap::new();
    let mut bye: HashMap<&str, f64> = HashMap::new();
    for m in traces.iter().flatten().filter(|m| !m.sent) {
        let map = match (m.kind.as_str(), m.cseq_method.as_str()) {
            ("INVITE", _) => &mut invite,
            ("BYE", _) if !flows => &mut bye,
            ("200", "BYE") if flows => &mut bye,
            _ => continue,
        };
        map.entry(m.call_id.as_str()).or_insert(m.time);
    }
    let in_progress: HashSet<&str> = invite
        .iter()
        .filter(|(id, &t)| t < killed && bye.get(*id).is_none_or(|&b| b > killed))
        .map(|(id, _)| *id)
        .collect();
    let lost: HashSet<&str> = in_progress
        .iter()
        .filter(|id| !bye.contains_key(*id) || s.split.iter().any(|x| x == *id))
        .copied()
        .collect();
    let survived = in_progress.len() - lost.len();
    println!(
        "FIGURES nat={nat} rate={rate}/s hold={hold}ms calls={total} {}",
        if flows {
            "one client flow per call, hung up by the backends"
        } else {
            "one client flow, hung up by the client"
        }
    );
    println!(
        "FIGURES sync: {:.0} B/s of heartbeats idle; {:.0} B of sync for {} new dialogs = {per_dialog:.1} B per new dialog",
        heartbeat_bps,
        sync,
        d2 - d1
    );
    match gap {
        Some((last, first)) => println!(
            "FIGURES failover: {:.0} ms from the kill to the first message the new active unit forwarded (the backends' last message before the silence at {:+.0} ms; the new active's role seen at {:.0} ms); longest silence at the backends {:.0} ms",
            (first - killed) * 1e3,
            (last - killed) * 1e3,
            took_over.unwrap_or(f64::NAN) * 1e3,
            silence * 1e3
        ),
        None => println!("FIGURES failover: no silence at the backends after the kill"),
    }
    println!(
        "FIGURES survival: {} dialogs in progress at the kill, {survived} survived ({:.2} %), {} lost; calls {} ok / {} failed; {} dialogs moved backend",
        in_progress.len(),
        100.0 * survived as f64 / in_progress.len().max(1) as f64,
        lost.len(),
        run.successful,
        run.failed,
        s.split.len()
    );
    assert!(
        !in_progress.is_empty(),
        "no dialog was in progress at the kill"
    );
    drop(u1);
}
