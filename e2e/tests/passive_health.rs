//! Passive health under load, beside the active checks of `health_checks.rs`: 200
//! calls/s over three SIPp backends, one of them killed (its kernel answers ICMP port
//! unreachable) or frozen with SIGSTOP (silent: its calls go unanswered). The balancer
//! marks it down from the traffic itself; the time from the signal to the mark is the
//! detection time. OPTIONS checks every 500 ms (fall 2, rise 2) run as well and bring
//! the backend back once it answers again.

use e2e::siplb::Siplb;
use e2e::sipp::{unix_now, Uac};
use e2e::topology::{backend_ip, Topology, VIP};
use serde_json::Value;
use std::time::{Duration, Instant};

fn farm(passive: &str) -> String {
    let b: Vec<String> = (0..3)
        .map(|i| format!("  {{ address = \"{}\", port = 5060 }},", backend_ip(i)))
        .collect();
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nalg = false\n\
         health = {{ check = \"options\", interval_ms = 500, timeout_ms = 400, rise = 2, fall = 2 }}\n\
         passive = {passive}\nbackends = [\n{}\n]\n",
        b.join("\n")
    )
}

fn stats(s: &Siplb) -> Value {
    serde_json::from_str(&s.ok(&["stats", "--json"]).unwrap()).unwrap()
}

fn load(st: &Value, i: usize) -> &Value {
    &st["farms"][0]["backends"][i]["load"]
}

/// Polls `siplb stats --json` until `cond` holds; panics with the backends' load.
fn wait_for(s: &Siplb, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let st = stats(s);
        if cond(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; load:\n{}",
            serde_json::to_string_pretty(&st["farms"][0]["backends"]).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How the backend fails.
#[derive(Clone, Copy, PartialEq)]
enum Failure {
    /// SIGKILL: the port closes, its kernel answers ICMP port unreachable.
    Killed,
    /// SIGSTOP: the port stays open, nothing answers.
    Frozen,
}

/// Runs 200 calls/s for 8 s, fails backend 0 after 3 s; returns the detection time.
fn run(failure: Failure, passive: &str) -> f64 {
    e2e::require_root();
    let topo = Topology::with_backends(3).unwrap();
    let mut uas: Vec<_> = topo.start_uas_backends(&["-aa"]).unwrap();
    let siplb = topo
        .start_siplb(&topo.siplb_config(&farm(passive)))
        .unwrap();
    wait_for(&siplb, "checks up", Duration::from_secs(10), |st| {
        (0..3).all(|i| st["farms"][0]["backends"][i]["state"] == "up")
    });
    let (rate, calls, hold_ms) = (200u32, 1600u32, 500u32);
    let mut uac = Uac::new(&topo.client, "uac", calls, rate)
        .limit(400)
        .hold_ms(hold_ms)
        .args(["-recv_timeout", "8000"])
        .timeout_s(60)
        .spawn(&topo.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let sig = match failure {
        Failure::Killed => libc::SIGKILL,
        Failure::Frozen => libc::SIGSTOP,
    };
    uas[0].proc.signal(sig);
    let t_fail = unix_now();
    let st = wait_for(&siplb, "passive mark", Duration::from_secs(5), |st| {
        load(st, 0)["passive_marks"].as_u64() >= Some(1)
    });
    let marked_at = load(&st, 0)["passive_marked_at_ms"].as_u64().unwrap() as f64 / 1000.0;
    let detection_ms = (marked_at - t_fail) * 1000.0;
    // Back: a fresh UAS (killed) or the same one woken up (frozen); the OPTIONS checks
    // end the mark after 2 good ones.
    std::thread::sleep(Duration::from_secs(2));
    let t_back = unix_now();
    match failure {
        Failure::Killed => {
            let dead = uas.remove(0);
            drop(dead.finish());
            uas.insert(0, topo.start_uas(0, "be0-again", None, &["-aa"]).unwrap());
        }
        Failure::Frozen => uas[0].proc.signal(libc::SIGCONT),
    }
    let st = wait_for(&siplb, "mark ended", Duration::from_secs(6), |st| {
        load(st, 0)["passive_down"] == false
    });
    let back_ms = (unix_now() - t_back) * 1000.0;
    let run = uac.wait(Duration::from_secs(90)).unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let after_back = traces[0]
        .iter()
        .filter(|m| !m.sent && m.kind == "INVITE" && m.time > t_back + back_ms / 1000.0)
        .count();
    println!(
        "passive health ({}): {calls} calls at {rate}/s (hold {hold_ms} ms) over 3 backends, passive = {passive}\n\
         backend 0 marked down {detection_ms:.0} ms after the {}; {} marks\n\
         mark ended {back_ms:.0} ms after it answered again (OPTIONS every 500 ms, rise 2), then it took {after_back} INVITEs\n\
         calls: {} successful, {} failed; calls in progress per backend then {:?}",
        if failure == Failure::Killed { "ICMP" } else { "unanswered" },
        if failure == Failure::Killed { "SIGKILL" } else { "SIGSTOP" },
        load(&st, 0)["passive_marks"],
        run.successful,
        run.failed,
        (0..3).map(|i| load(&st, i)["dialogs"].as_u64()).collect::<Vec<_>>(),
    );
    assert_eq!(run.successful + run.failed, u64::from(calls));
    // Calls already answered by the failed backend lose their ACK/BYE; the ones it never
    // answered move when the caller resends the INVITE.
    assert!(
        run.failed <= 200,
        "{} calls failed for a backend marked down in {detection_ms:.0} ms",
        run.failed
    );
    assert!(after_back > 0, "the backend took calls again");
    detection_ms
}

#[test]
fn a_killed_backend_is_marked_down_by_its_icmp_port_unreachable() {
    let ms = run(Failure::Killed, "{ icmp = true }");
    // The OPTIONS checks alone need 2 failures 500 ms apart (about 1-1.4 s).
    assert!(ms < 500.0, "detected {ms:.0} ms after the kill");
}

#[test]
fn a_frozen_backend_is_marked_down_by_its_unanswered_calls() {
    let ms = run(Failure::Frozen, "{ unanswered = 5, window_ms = 200 }");
    assert!(ms < 700.0, "detected {ms:.0} ms after it froze");
}
