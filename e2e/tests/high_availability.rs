//! Two units share the VIP: the active one dies (its processes killed by PID) in the
//! middle of calls; the standby, which received the active unit's tables, takes the
//! VIP over and no dialog is lost or moved.

use e2e::pair::Pair;
use e2e::sipp::{stickiness, Uac};
use std::time::{Duration, Instant};

fn role(s: &e2e::siplb::Siplb) -> String {
    let o = s.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
    v["ha"].as_str().unwrap_or("").to_string()
}

fn takeover(nat: &str, extra: &str) {
    e2e::require_root();
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm(nat, extra);
    let u0 = pair.start(0, &farm).unwrap();
    let u1 = pair.start(1, &farm).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(role(&u0).starts_with("active (peer alive")
        && role(&u1).starts_with("standby (peer alive"))
    {
        assert!(
            Instant::now() < deadline,
            "roles: {} / {}",
            role(&u0),
            role(&u1)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let uas = pair.start_uas_backends(&[]).unwrap();
    // 20 calls/s of 4 s: about 80 dialogs in progress when the active unit dies.
    let mut calls = Uac::new(&pair.client, "calls", 300, 20)
        .hold_ms(4000)
        .timeout_s(90)
        .spawn(&pair.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    let dataplane = u0.dataplane_pid().expect("unit 0's dataplane");
    let killed = Instant::now();
    u0.daemon.signal(libc::SIGKILL);
    // SAFETY: the PID of the dataplane unit 0 runs (from its ready file).
    unsafe { libc::kill(dataplane as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !role(&u1).starts_with("active") {
        assert!(
            Instant::now() < deadline,
            "the standby never took over: {}",
            role(&u1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{nat}: the standby took over {:?} after the active unit was killed",
        killed.elapsed()
    );
    let run = calls.wait(Duration::from_secs(120)).unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    println!(
        "{nat}: {} calls successful, {} failed; calls per backend {:?}",
        run.successful, run.failed, s.calls_per_backend
    );
    assert_eq!((run.successful, run.failed), (300, 0), "{}", run.output);
    assert!(
        s.split.is_empty(),
        "dialogs moved backend at the takeover: {:?}",
        s.split
    );
    s.assert_every_call_has(nat, &["INVITE", "ACK", "BYE", "200/BYE"]);
    drop(u1);
}

#[test]
fn dnat_standby_takes_over_without_losing_a_dialog() {
    takeover("dnat", "");
}

#[test]
fn snat_standby_takes_over_with_the_replicated_sessions() {
    takeover("snat", "snat_address = \"198.18.1.254\"");
}
