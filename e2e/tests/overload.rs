//! Overload signals from real SIPp backends: a 503 with Retry-After takes its backend
//! out of new-call selection for that long, and an RFC 7339 `oc` value on the top Via
//! of a backend's responses sheds that share of its new calls to the other backend.
//! Calls are counted at the backends' own message logs.

use e2e::siplb::Siplb;
use e2e::sipp::{scenario, start_uas, Traced, Uac, Uas};
use e2e::topology::{backend_ip, Topology};
use serde_json::Value;
use std::collections::BTreeSet;

fn farm() -> String {
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{}\"\nalg = false\nbackends = [\n  {{ address = \"{}\" }},\n  {{ address = \"{}\" }},\n]\n",
        e2e::topology::VIP,
        backend_ip(0),
        backend_ip(1)
    )
}

/// Backend `i` running `sc` (a scenario of `e2e/scenarios/`), or SIPp's `uas`.
fn uas(topo: &Topology, i: usize, sc: Option<&str>) -> Uas {
    let path = sc.map(scenario);
    start_uas(
        &topo.backends[i],
        backend_ip(i),
        5060,
        &topo.dir,
        &format!("be{i}"),
        path.as_deref(),
        &[],
    )
    .unwrap()
}

/// Distinct Call-IDs of the INVITEs a backend received.
fn invites(trace: &[Traced]) -> BTreeSet<String> {
    trace
        .iter()
        .filter(|m| !m.sent && m.kind == "INVITE")
        .map(|m| m.call_id.clone())
        .collect()
}

fn backend_load(s: &Siplb, i: usize, key: &str) -> u64 {
    let st: Value = serde_json::from_str(&s.ok(&["stats", "--json"]).unwrap()).unwrap();
    st["farms"][0]["backends"][i]["load"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no load.{key} in {}", st["farms"]))
}

#[test]
fn a_503_with_retry_after_holds_its_backend_out_of_new_calls() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let busy = uas(&topo, 0, Some("busy_uas"));
    let ok = uas(&topo, 1, None);
    let siplb = topo.start_siplb(&topo.siplb_config(&farm())).unwrap();
    // 200 calls over 4 s: half would reach backend 0 without the hold.
    let (calls, rate) = (200u32, 50u32);
    let run = Uac::new(&topo.client, "uac", calls, rate)
        .timeout_s(30)
        .run(&topo.dir)
        .unwrap();
    let to_busy = invites(&busy.finish()).len();
    let to_ok = invites(&ok.finish()).len();
    let held = backend_load(&siplb, 0, "held");
    let holds = backend_load(&siplb, 0, "retry_after");
    println!(
        "Retry-After: {calls} calls at {rate}/s, backend 0 answers every INVITE 503 with Retry-After: 2\n\
         INVITEs at backend 0: {to_busy} (a hold every 2 s), backend 1: {to_ok}; client {} ok {} failed; \
         holds set {holds}, new calls turned from backend 0 while held {held}",
        run.successful, run.failed
    );
    // One 503 per 2 s hold over the 4 s run (and one more at a boundary).
    assert!(
        (1..=3).contains(&to_busy),
        "{to_busy} calls reached the held backend"
    );
    assert_eq!(to_busy + to_ok, calls as usize);
    assert_eq!(
        (run.successful, run.failed),
        (u64::from(calls) - to_busy as u64, to_busy as u64)
    );
    assert_eq!(holds, to_busy as u64);
    assert!(
        held >= 80,
        "about half the calls turned from backend 0: {held}"
    );
}

#[test]
fn an_oc_value_sheds_its_share_of_a_backends_new_calls() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let plain = uas(&topo, 0, None);
    let overloaded = uas(&topo, 1, Some("oc_uas"));
    let siplb = topo.start_siplb(&topo.siplb_config(&farm())).unwrap();
    let (calls, rate) = (600u32, 100u32);
    let run = Uac::new(&topo.client, "uac", calls, rate)
        .timeout_s(30)
        .run(&topo.dir)
        .unwrap();
    let to_plain = invites(&plain.finish()).len();
    let to_oc = invites(&overloaded.finish()).len();
    let shed = backend_load(&siplb, 1, "oc_shed");
    let share = to_oc as f64 / f64::from(calls);
    // Maglev gives it 1/2; oc=50 keeps half of that: 0.25. Binomial sd over 600 calls
    // is 0.018; the tolerance, 0.06, is over 3 sd.
    println!(
        "oc: {calls} calls at {rate}/s over 2 equal backends, backend 1 answers with oc=50 (valid 10 s)\n\
         backend 1 took {to_oc} calls ({share:.3} of them; 0.250 expected, 0.500 without oc), backend 0 {to_plain}; \
         {shed} new calls shed from backend 1; client {} ok {} failed",
        run.successful, run.failed
    );
    assert_eq!((run.successful, run.failed), (u64::from(calls), 0));
    assert_eq!(to_plain + to_oc, calls as usize);
    assert!(
        (share - 0.25).abs() <= 0.06,
        "backend 1's share {share:.3}, want 0.25 ± 0.06"
    );
    assert!(shed >= 100, "{shed} shed");
}
