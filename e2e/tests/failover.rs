//! Failover of new calls (issue 15 item 1) between real SIPp peers: of three
//! backends, one answers every INVITE with 503 (and waits for the ACK of it), one
//! never answers at all (a datagram sink), one works. With `[farm.failover] tries =
//! 3`, every call the client makes succeeds: the balancer acknowledges each 503 to
//! its backend, gives up on the silent one after `timeout_ms`, and sends the INVITE
//! on. A caller's CANCEL during failover reaches the backend that has the call now.
//! Counted at the backends (their message logs) and in `siplb stats`.

use e2e::siplb::Siplb;
use e2e::sipp::{Traced, Uac, Uas};
use e2e::topology::{backend_ip, Topology, VIP};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const CALLS: u32 = 90;
const RATE: u32 = 30;

/// The farm: `mode` is `dnat` without the ALG, or `snat` with it (the default ALG:
/// Via, Contact and SDP rewritten, the media relayed).
fn farm(tries: u32, mode: &str) -> String {
    let nat = match mode {
        "snat" => "nat = \"snat\"",
        _ => "alg = false",
    };
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\n{nat}\nbackends = [\n  {{ address = \"{}\" }},\n  {{ address = \"{}\" }},\n  {{ address = \"{}\" }},\n]\n[farm.failover]\ntries = {tries}\ntimeout_ms = 300\n",
        backend_ip(0),
        backend_ip(1),
        backend_ip(2)
    )
}

/// Backend `i` running `sc` (a scenario of `e2e/scenarios/`), or SIPp's `uas`.
fn uas(topo: &Topology, i: usize, sc: Option<&str>) -> Uas {
    topo.start_uas(i, &format!("be{i}"), sc, &[]).unwrap()
}

fn received(trace: &[Traced], kind: &str) -> BTreeSet<String> {
    trace
        .iter()
        .filter(|m| !m.sent && m.kind == kind)
        .map(|m| m.call_id.clone())
        .collect()
}

fn load(stats: &Value, i: usize, key: &str) -> u64 {
    stats["farms"][0]["backends"][i]["load"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no load.{key} in {}", stats["farms"]))
}

/// What one run saw.
struct Run {
    ok: u64,
    failed: u64,
    /// Distinct calls whose INVITE reached each backend.
    invited: [usize; 3],
    /// Distinct calls whose 503 the failing backend saw acknowledged.
    acked: usize,
    /// Distinct calls whose CANCEL reached the working backend.
    cancelled: usize,
    stats: Value,
}

/// The client runs `client` (a scenario, or SIPp's `uac`), the working backend
/// `good`.
fn run(tries: u32, mode: &str, client: Option<&str>, good: Option<&str>) -> Run {
    e2e::require_root();
    let topo = Topology::with_backends(3).unwrap();
    let failing = uas(&topo, 0, Some("fail_uas"));
    // A backend that takes every datagram and answers none (`sip-sink`).
    let mut sink_cmd = topo.backends[1].command(e2e::bins::path("sip-sink"));
    sink_cmd.args([&format!("{}:5060", backend_ip(1)), "--call-ids"]);
    let mut sink = e2e::process::Proc::spawn("sink", sink_cmd, &topo.dir.join("sink.out")).unwrap();
    sink.wait_for_output("listening", Duration::from_secs(5))
        .unwrap();
    let working = uas(&topo, 2, good);
    let siplb: Siplb = topo
        .start_siplb(&topo.siplb_config(&farm(tries, mode)))
        .unwrap();
    let mut uac = Uac::new(&topo.client, "uac", CALLS, RATE).timeout_s(30);
    if let Some(sc) = client {
        uac = uac.scenario(sc);
    }
    let uac = uac.run(&topo.dir).unwrap();
    // The control plane samples the counters once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let stats: Value = serde_json::from_str(&siplb.ok(&["stats", "--json"]).unwrap()).unwrap();
    println!("{}", siplb.ok(&["stats"]).unwrap());
    let fail_trace = failing.finish();
    let good_trace = working.finish();
    let silent: BTreeSet<String> = sink
        .output()
        .lines()
        .filter_map(|l| l.strip_prefix("call-id "))
        .map(str::to_string)
        .collect();
    Run {
        ok: uac.successful,
        failed: uac.failed,
        invited: [
            received(&fail_trace, "INVITE").len(),
            silent.len(),
            received(&good_trace, "INVITE").len(),
        ],
        acked: received(&fail_trace, "ACK").len(),
        cancelled: received(&good_trace, "CANCEL").len(),
        stats,
    }
}

#[test]
fn every_call_succeeds_past_a_failing_and_a_silent_backend() {
    let r = run(3, "dnat", None, None);
    let answers = load(&r.stats, 0, "failover_answers");
    let timeouts = load(&r.stats, 1, "failover_timeouts");
    let to: u64 = (0..3).map(|i| load(&r.stats, i, "failover_to")).sum();
    println!(
        "failover: {CALLS} calls at {RATE}/s, tries = 3, timeout_ms = 300\n\
         client: {} ok, {} failed\n\
         INVITEs (distinct calls) at the 503 backend {}, the silent one {}, the working one {}\n\
         503s acknowledged by the balancer {}; counted: 503s failed over {answers}, timeouts {timeouts}, re-sent {to}",
        r.ok, r.failed, r.invited[0], r.invited[1], r.invited[2], r.acked
    );
    assert_eq!(
        (r.ok, r.failed),
        (u64::from(CALLS), 0),
        "the caller sees every call succeed"
    );
    assert_eq!(
        r.invited[2], CALLS as usize,
        "every call ends at the working backend"
    );
    // Maglev spreads first choices over all three: each failure path was taken.
    assert!(r.invited[0] >= 10 && r.invited[1] >= 10, "{:?}", r.invited);
    assert_eq!(
        r.acked, r.invited[0],
        "each 503 acknowledged to its backend"
    );
    assert_eq!(answers, r.invited[0] as u64);
    assert_eq!(timeouts, r.invited[1] as u64);
    assert_eq!(to, answers + timeouts, "each failure sent the call on once");
    assert_eq!(
        r.stats["failover"]["held"], 0,
        "every hold ended with its call"
    );
}

#[test]
fn a_cancel_during_failover_reaches_the_backend_that_has_the_call() {
    let r = run(3, "dnat", Some("cancel_uac"), Some("cancel_uas"));
    println!(
        "cancel: {CALLS} calls rung then cancelled; client {} ok, {} failed; INVITEs at the backends {:?}; CANCELs at the working one {}",
        r.ok, r.failed, r.invited, r.cancelled
    );
    assert_eq!((r.ok, r.failed), (u64::from(CALLS), 0));
    assert_eq!(r.cancelled, CALLS as usize);
    assert!(r.invited[0] + r.invited[1] >= 20, "{:?}", r.invited);
}

#[test]
fn in_snat_with_the_alg_the_failover_is_acknowledged_from_the_flows_address() {
    // The INVITE reaches each backend from the client's SNAT flow, its Via and Contact
    // rewritten: the ACK of a 503 must come from that flow and repeat that Via, or
    // the failing backend's SIPp waits for it in vain.
    let r = run(3, "snat", None, None);
    println!(
        "snat + ALG: client {} ok, {} failed; INVITEs at the backends {:?}; 503s ACKed {}",
        r.ok, r.failed, r.invited, r.acked
    );
    assert_eq!((r.ok, r.failed), (u64::from(CALLS), 0));
    assert_eq!(r.invited[2], CALLS as usize);
    assert!(r.invited[0] >= 10 && r.invited[1] >= 10, "{:?}", r.invited);
    assert_eq!(
        r.acked, r.invited[0],
        "each 503 acknowledged to its backend"
    );
    assert_eq!(load(&r.stats, 0, "failover_answers"), r.invited[0] as u64);
    assert_eq!(load(&r.stats, 1, "failover_timeouts"), r.invited[1] as u64);
}
