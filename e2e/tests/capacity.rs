//! Capacity and priority groups with real SIPp calls: `max_dialogs` moves new calls
//! to the next backend, the backup group takes calls only while the primaries are
//! full, a full farm answers 503 with Retry-After, and the per-backend counts follow
//! the calls: down on BYE, and, when BYEs are lost, down at the dialogs' expiry.
//! Counted at the backends' own message logs and in `siplb stats --json`.

use e2e::siplb::Siplb;
use e2e::sipp::{scenario, start_uas, Traced, Uac};
use e2e::topology::{backend_ip, Topology, CLIENT_IP};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn farm(backends: &str, extra: &str) -> String {
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{}\"\nalg = false\n{extra}\nbackends = [\n{backends}\n]\n",
        e2e::topology::VIP
    )
}

fn stats(s: &Siplb) -> Value {
    serde_json::from_str(&s.ok(&["stats", "--json"]).unwrap()).unwrap()
}

/// Each backend's live dialog count (`load.dialogs`); none before the daemon's
/// first sample.
fn dialogs(st: &Value) -> Vec<u64> {
    let Some(backends) = st["farms"][0]["backends"].as_array() else {
        return Vec::new();
    };
    backends
        .iter()
        .map(|b| {
            b["load"]["dialogs"]
                .as_u64()
                .unwrap_or_else(|| panic!("no load.dialogs in {b}"))
        })
        .collect()
}

fn load_sum(st: &Value, key: &str) -> u64 {
    st["farms"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["load"][key].as_u64().unwrap())
        .sum()
}

/// Distinct Call-IDs of the INVITEs a backend received.
fn invites(trace: &[Traced]) -> BTreeSet<String> {
    trace
        .iter()
        .filter(|m| !m.sent && m.kind == "INVITE")
        .map(|m| m.call_id.clone())
        .collect()
}

/// Polls `siplb stats --json` until `cond` holds; panics with the last counts.
fn wait_for(s: &Siplb, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let st = stats(s);
        if cond(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; dialogs per backend {:?}",
            dialogs(&st)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn full_primaries_pass_new_calls_to_the_backup_group_then_the_farm_answers_503() {
    e2e::require_root();
    let topo = Topology::with_backends(3).unwrap();
    let uas = topo.start_uas_backends(&[]).unwrap();
    let backends = format!(
        "  {{ address = \"{}\", max_dialogs = 10 }},\n  {{ address = \"{}\", max_dialogs = 10 }},\n  {{ address = \"{}\", priority = 1, max_dialogs = 10 }},",
        backend_ip(0),
        backend_ip(1),
        backend_ip(2)
    );
    let siplb = topo
        .start_siplb(&topo.siplb_config(&farm(
            &backends,
            "when_full = \"reject\"\nfull_retry_after = 9",
        )))
        .unwrap();
    // 15 calls held 8 s: the primaries have room for all of them.
    let mut first = Uac::new(&topo.client, "uac1", 15, 30)
        .hold_ms(8000)
        .timeout_s(40)
        .spawn(&topo.dir)
        .unwrap();
    let st = wait_for(&siplb, "15 calls placed", Duration::from_secs(10), |st| {
        dialogs(st).iter().sum::<u64>() == 15
    });
    let before = dialogs(&st);
    // 20 more while those are up: 5 fill the primaries, 10 the backup, 5 get a 503.
    let mut second = Uac::new(&topo.client, "uac2", 20, 40)
        .local(CLIENT_IP, 5070)
        .hold_ms(3000)
        .timeout_s(40)
        .spawn(&topo.dir)
        .unwrap();
    let st = wait_for(&siplb, "30 calls placed", Duration::from_secs(10), |st| {
        dialogs(st).iter().sum::<u64>() == 30
    });
    let peak = dialogs(&st);
    println!(
        "siplb stats at the peak:\n{}",
        siplb.ok(&["stats"]).unwrap_or_default()
    );
    let second = second.wait(Duration::from_secs(60)).unwrap();
    let first = first.wait(Duration::from_secs(60)).unwrap();
    let st = wait_for(&siplb, "every BYE counted", Duration::from_secs(10), |st| {
        dialogs(st).iter().all(|n| *n == 0)
    });
    let rejected = st["farm_full_rejected"].as_u64().unwrap();
    // The callers' ACKs of those 503s stop at the balancer.
    let acks = st["drops"]["full_reply_ack"].as_u64().unwrap_or(0);
    let full = load_sum(&st, "full");
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let per_backend: Vec<usize> = traces.iter().map(|t| invites(t).len()).collect();
    println!(
        "capacity: max_dialogs 10 on two primaries and a backup (priority 1); 15 calls held 8 s, then 20 more\n\
         dialogs per backend after the first 15: {before:?}; at the peak: {peak:?}; after the BYEs: {:?}\n\
         calls per backend (their INVITE logs): {per_backend:?}; first run {} ok {} failed, second {} ok {} failed; \
         503s from the balancer {rejected} (their ACKs absorbed: {acks}); new calls turned from a full hash choice {full}",
        dialogs(&st),
        first.successful,
        first.failed,
        second.successful,
        second.failed,
    );
    assert_eq!(before.iter().sum::<u64>(), 15);
    assert_eq!(
        before[2], 0,
        "the backup took a call while the primaries had room"
    );
    assert_eq!(peak, [10, 10, 10]);
    assert_eq!(per_backend, [10, 10, 10]);
    assert_eq!((first.successful, first.failed), (15, 0));
    assert_eq!((second.successful, second.failed), (15, 5));
    assert_eq!((rejected, acks), (5, 5));
    assert!(full >= 5, "a full hash choice counted: {full}");
}

#[test]
fn lost_byes_hold_a_backend_full_until_the_dialogs_expire() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let uas: Vec<_> = (0..2)
        .map(|i| {
            start_uas(
                &topo.backends[i],
                backend_ip(i),
                5060,
                &topo.dir,
                &format!("be{i}"),
                Some(&scenario("nobye_uas")),
                &[],
            )
            .unwrap()
        })
        .collect();
    let backends = format!(
        "  {{ address = \"{}\", max_dialogs = 3 }},\n  {{ address = \"{}\" }},",
        backend_ip(0),
        backend_ip(1)
    );
    // Confirmed dialogs forgotten after 3 idle seconds.
    let siplb = topo
        .start_siplb(&topo.siplb_config(&farm(&backends, "timers = { confirmed_idle = 3 }")))
        .unwrap();
    let wave = |name: &str, port: u16| {
        // 30 calls: the cap binds unless fewer than 3 hash to backend 0 (p < 1e-6).
        let run = Uac::new(&topo.client, name, 30, 60)
            .local(CLIENT_IP, port)
            .scenario("nobye_uac")
            .timeout_s(20)
            .run(&topo.dir)
            .unwrap();
        assert_eq!((run.successful, run.failed), (30, 0), "{}", run.output);
        let t = Instant::now();
        // The daemon samples the counters about once a second.
        let st = wait_for(&siplb, "30 calls counted", Duration::from_secs(3), |st| {
            dialogs(st).iter().sum::<u64>() == 30
        });
        (dialogs(&st), t)
    };
    let (held, t_end) = wave("uac1", 5070);
    // No BYE: the counts stay; backend 0 is full, the rest went to backend 1.
    assert_eq!(held, [3, 27], "counts right after the calls");
    let st = wait_for(&siplb, "counts back to 0", Duration::from_secs(8), |st| {
        dialogs(st).iter().all(|n| *n == 0)
    });
    let converged = t_end.elapsed();
    let expired = st["dialogs_expired"].as_u64().unwrap();
    // Backend 0 takes calls again: exactly its three.
    let (again, _) = wave("uac2", 5072);
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let per_backend: Vec<usize> = traces.iter().map(|t| invites(t).len()).collect();
    println!(
        "lost BYEs: 30 calls without BYE over max_dialogs 3 + unlimited, confirmed_idle 3 s\n\
         counts right after: {held:?}; back to 0 after {:.1} s ({expired} dialogs expired); the backends' own \
         calls ended at the ACK (0 open); a second wave: {again:?}; INVITEs per backend {per_backend:?}",
        converged.as_secs_f64()
    );
    assert!(
        converged >= Duration::from_secs(2),
        "the counts fell before the dialogs could expire: {converged:?}"
    );
    assert_eq!(again, [3, 27], "backend 0 full again with the second wave");
    assert_eq!(per_backend, [6, 54]);
}
