//! N active units behind a router's ECMP (issue 16): each unit's BIRD announces the VIP
//! on the configuration its control daemon writes; the router spreads the VIP's flows
//! over the units by their 5-tuple. In `dnat` with `call-id` affinity no state is
//! shared: every unit places a Call-ID on the same backend. Checked at the backends.

use e2e::ecmp::{client_ip, Ecmp};
use e2e::sipp::{stickiness, Uac};
use std::time::{Duration, Instant};

const UNITS: usize = 2;
const CLIENTS: usize = 4;
const CALLS_PER_CLIENT: u32 = 50;

/// Packets each unit forwarded to the backends (its `siplb stats`).
fn to_backends(u: &e2e::ecmp::Unit) -> u64 {
    let s: serde_json::Value =
        serde_json::from_str(&u.siplb.ok(&["stats", "--json"]).unwrap()).unwrap();
    s["farms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["backends"].as_array().into_iter().flatten())
        .map(|b| b["to_packets"].as_u64().unwrap_or(0))
        .sum()
}

/// `CALLS_PER_CLIENT` calls from each client address, one socket (source port) per
/// call so that the router's L4 hash spreads them over the units; returns (successful,
/// failed).
fn calls(
    bed: &Ecmp,
    name: &str,
    per_client: u32,
    rate: u32,
    hold_ms: u32,
    during: impl FnOnce(),
) -> (u64, u64) {
    let mut runs: Vec<_> = (0..CLIENTS)
        .map(|c| {
            Uac::new(&bed.client, &format!("{name}{c}"), per_client, rate)
                .local(client_ip(c), 5060)
                .hold_ms(hold_ms)
                // A call the unit loss left hanging ends the run 10 s after the hold.
                .timeout_s(u64::from(hold_ms / 1000) + 10)
                .args(["-t", "un", "-max_socket", "200"])
                .spawn(&bed.dir)
                .unwrap()
        })
        .collect();
    during();
    let (mut ok, mut failed) = (0, 0);
    for r in &mut runs {
        let run = r.wait(Duration::from_secs(40)).unwrap();
        ok += run.successful;
        failed += run.failed;
    }
    (ok, failed)
}

/// Spread, then drain: calls spread over both units; then unit 1 is drained with calls
/// in progress on it, and their ACKs and BYEs, now routed to unit 0, must reach the
/// backends that unit 1 chose. Counted at the backends.
#[test]
fn calls_spread_over_the_units_and_each_dialog_reaches_one_backend() {
    e2e::require_root();
    let bed = Ecmp::up(UNITS, CLIENTS, 3).unwrap();
    let farm = bed.farm("dnat", "affinity = \"call-id\"");
    let units: Vec<_> = (0..UNITS).map(|i| bed.start(i, &farm).unwrap()).collect();
    bed.wait_next_hops(&[0, 1], Duration::from_secs(20));
    let uas = bed.start_uas_backends(&[]).unwrap();
    let total = u64::from(CALLS_PER_CLIENT) * CLIENTS as u64;

    let (ok, failed) = calls(&bed, "spread", CALLS_PER_CLIENT, 20, 1000, || {});
    // Counters are sampled every second.
    std::thread::sleep(Duration::from_millis(1200));
    let spread: Vec<u64> = units.iter().map(to_backends).collect();
    println!("ecmp spread: {ok} calls successful, {failed} failed; packets to the backends per unit {spread:?}");
    assert_eq!((ok, failed), (total, 0));
    let sum: u64 = spread.iter().sum();
    for (i, p) in spread.iter().enumerate() {
        assert!(
            *p * 5 >= sum,
            "unit {i} forwarded {p} of {sum} packets to the backends: ECMP did not spread \
             (want >= 20 % each)"
        );
    }

    // Calls of 3 s started over 2.5 s; unit 1 drains 2 s in, with about half of the
    // calls in progress and a share of them on it.
    let mut withdrawn = Duration::ZERO;
    let (ok, failed) = calls(&bed, "drain", CALLS_PER_CLIENT, 20, 3000, || {
        std::thread::sleep(Duration::from_secs(2));
        units[1].siplb.ok(&["drain-unit"]).unwrap();
        withdrawn = bed.wait_next_hops(&[0], Duration::from_secs(5));
    });
    std::thread::sleep(Duration::from_millis(1200));
    let drained: Vec<u64> = units.iter().map(to_backends).collect();
    let status = units[1].siplb.ok(&["status"]).unwrap();
    units[1].siplb.ok(&["undrain-unit"]).unwrap();
    let back = bed.wait_next_hops(&[0, 1], Duration::from_secs(5));
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    let after: Vec<u64> = drained.iter().zip(&spread).map(|(d, s)| d - s).collect();
    println!(
        "ecmp drain: {ok} calls successful, {failed} failed; packets to the backends per unit \
         during the drain run {after:?}; route withdrawn {withdrawn:?} after drain-unit, back \
         {back:?} after undrain-unit; calls per backend {:?}; {} dialogs split over backends",
        s.calls_per_backend,
        s.split.len()
    );
    assert!(status.contains("(unit drained)"), "{status}");
    assert_eq!((ok, failed), (total, 0));
    assert_eq!(
        s.calls_per_backend.iter().sum::<usize>() as u64,
        2 * total,
        "calls seen by the backends"
    );
    assert!(s.split.is_empty(), "dialogs split: {:?}", s.split);
    s.assert_every_call_has("ecmp", &["INVITE", "ACK", "BYE", "200/BYE"]);
    // Unit 1 forwarded the INVITEs and ACKs of its calls before the drain, unit 0
    // every BYE of the run (3 s later) and everything after it.
    assert!(
        after[1] > 0 && after[0] >= 2 * after[1],
        "the drain run's packets per unit: {after:?}"
    );
}

/// The Call-IDs the backends saw in `s`.
fn loss_ids(s: &e2e::sipp::Stickiness) -> std::collections::BTreeSet<String> {
    s.by_call.iter().flat_map(|m| m.keys().cloned()).collect()
}

/// Unit loss and return: unit 1's dataplane and daemon are killed with calls in
/// progress (its BIRD keeps running: only the silent path withdraws it). The router
/// drops it within the hold time (3 s); the calls it carried finish through unit 0 on
/// the backends unit 1 chose. Restarted, it is announced again and takes its share.
#[test]
fn a_killed_unit_is_withdrawn_its_calls_go_on_through_the_survivor_and_it_returns() {
    e2e::require_root();
    let bed = Ecmp::up(UNITS, CLIENTS, 3).unwrap();
    let farm = bed.farm("dnat", "affinity = \"call-id\"");
    let mut units: Vec<_> = (0..UNITS).map(|i| bed.start(i, &farm).unwrap()).collect();
    bed.wait_next_hops(&[0, 1], Duration::from_secs(20));
    let uas = bed.start_uas_backends(&[]).unwrap();
    let total = u64::from(CALLS_PER_CLIENT) * CLIENTS as u64;

    // Calls of 5 s started over 2.5 s; unit 1 dies 2 s in, with about 160 calls in
    // progress, half of them through it.
    let mut withdrawn = Duration::ZERO;
    let (ok, failed) = calls(&bed, "loss", CALLS_PER_CLIENT, 20, 5000, || {
        std::thread::sleep(Duration::from_secs(2));
        let killed = Instant::now();
        bed.kill(&units[1]);
        bed.wait_next_hops(&[0], Duration::from_secs(10));
        withdrawn = killed.elapsed();
    });
    let loss = stickiness(&uas.iter().map(|u| u.messages_so_far()).collect::<Vec<_>>());
    println!(
        "ecmp unit loss: {ok} calls successful, {failed} failed; the router withdrew the \
         killed unit {withdrawn:?} after the kill; calls per backend {:?}; {} dialogs split \
         over backends",
        loss.calls_per_backend,
        loss.split.len()
    );
    // What is lost is lost on the back side: an answer a backend sent toward the dead
    // unit (its static multipath default route keeps the unit until ARP fails), and
    // SIPp's UAS does not answer a retransmitted request again (14 of 200 calls in a
    // first run). No dialog moves backend.
    let lost = total - ok;
    println!("ecmp unit loss: {lost} of {total} calls did not complete");
    assert!(lost * 10 <= total, "{lost} of {total} calls lost");
    assert!(loss.split.is_empty(), "dialogs split: {:?}", loss.split);
    assert!(
        withdrawn < Duration::from_secs(5),
        "withdrawn after {withdrawn:?}: more than the 3 s hold time and a margin"
    );

    let restarted = Instant::now();
    bed.restart(1, &mut units[1]).unwrap();
    bed.wait_next_hops(&[0, 1], Duration::from_secs(20));
    let returned = restarted.elapsed();
    let before: Vec<u64> = vec![to_backends(&units[0]), 0];
    let (ok, failed) = calls(&bed, "return", CALLS_PER_CLIENT / 2, 20, 500, || {});
    std::thread::sleep(Duration::from_millis(1200));
    let share: Vec<u64> = units
        .iter()
        .map(to_backends)
        .zip(&before)
        .map(|(n, b)| n - b)
        .collect();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    println!(
        "ecmp return: announced again {returned:?} after the restart; {ok} calls successful, \
         {failed} failed; packets to the backends per unit {share:?}; {} dialogs split over \
         backends in both runs",
        s.split.len()
    );
    assert_eq!((ok, failed), (total / 2, 0));
    assert!(s.split.is_empty(), "dialogs split: {:?}", s.split);
    // The return run's calls (those the backends had not seen by the end of the loss
    // run) complete at their backends.
    let seen = loss_ids(&loss);
    let return_run = stickiness(
        &traces
            .iter()
            .map(|t| {
                t.iter()
                    .filter(|m| !seen.contains(&m.call_id))
                    .cloned()
                    .collect()
            })
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        return_run.calls_per_backend.iter().sum::<usize>() as u64,
        total / 2,
        "the return run's calls at the backends"
    );
    return_run.assert_every_call_has("ecmp return", &["INVITE", "ACK", "BYE", "200/BYE"]);
    let sum: u64 = share.iter().sum();
    assert!(
        share.iter().all(|p| p * 5 >= sum),
        "after its return each unit should carry >= 20 %: {share:?}"
    );
}
