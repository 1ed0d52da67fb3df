//! HA liveness follows the forwarding plane: when only the active unit's control
//! daemon dies, its dataplane keeps running but must stop answering for the VIPs by
//! the time the peer takes them over, or there are two active units (both sending
//! gratuitous ARP for the VIP, the client's traffic split between them).

use e2e::bed::stat;
use e2e::pair::Pair;
use e2e::sipp::{stickiness, Uac};
use std::time::{Duration, Instant};

#[test]
fn killing_only_the_active_daemon_leaves_one_active_unit() {
    e2e::require_root();
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm("dnat", "");
    let mut u0 = pair.start(0, &farm).unwrap();
    let u1 = pair.start(1, &farm).unwrap();
    e2e::wait_until("roles settle", Duration::from_secs(10), || {
        u0.ha_role().starts_with("active (peer alive")
            && u1.ha_role().starts_with("standby (peer alive")
    });
    let dataplane = u0.dataplane_pid().expect("unit 0's dataplane");
    let before = pair.vip_owners();
    assert_eq!(
        before.len(),
        1,
        "units answering ARP for the VIP: {before:?}"
    );

    // Only the control daemon dies; unit 0's dataplane keeps polling.
    let killed = Instant::now();
    u0.daemon.signal(libc::SIGKILL);
    let log_file = u0.dataplane_log.clone();
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    e2e::wait_until("the standby takes over", Duration::from_secs(10), || {
        u1.ha_role().starts_with("active")
    });
    println!(
        "unit 1 active {:?} after unit 0's daemon was killed",
        killed.elapsed()
    );
    // SAFETY: signal 0 only probes the PID read from unit 0's ready file.
    assert_eq!(
        unsafe { libc::kill(dataplane as i32, 0) },
        0,
        "unit 0's dataplane still runs"
    );

    let after = pair.vip_owners();
    println!("VIP owner before: {before:?}, after: {after:?}");
    assert_eq!(after.len(), 1, "units answering ARP for the VIP: {after:?}");
    assert_ne!(after, before, "the VIP moved to unit 1");

    // Calls after the takeover, for longer than unit 0's ARP refresh (5 s): a unit 0
    // still active would announce the VIP again and take part of them.
    let uas = pair.start_uas_backends(&[]).unwrap();
    let run = Uac::new(&pair.client, "calls", 120, 20)
        .hold_ms(1000)
        .timeout_s(60)
        .run(&pair.dir)
        .unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    println!(
        "{} calls successful, {} failed; calls per backend {:?}",
        run.successful, run.failed, s.calls_per_backend
    );
    assert_eq!((run.successful, run.failed), (120, 0), "{}", run.output);
    assert_eq!(s.calls_per_backend.iter().sum::<usize>(), 120);
    s.assert_every_call_has("dnat", &["INVITE", "ACK", "BYE", "200/BYE"]);
    let stood_down = log()
        .lines()
        .find(|l| l.contains("standing down"))
        .unwrap_or_default()
        .to_string();
    assert!(
        !stood_down.is_empty(),
        "unit 0's dataplane never stood down:\n{}",
        log()
    );
    println!("unit 0: {stood_down}");

    // The daemon comes back: it finds its dataplane stood down and stays standby
    // while the peer is active.
    u0.start_daemon(&pair.units[0]).unwrap();
    e2e::wait_until(
        "the restarted daemon is standby",
        Duration::from_secs(10),
        || u0.ha_role().starts_with("standby (peer alive"),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        u1.ha_role().starts_with("active"),
        "unit 1: {}",
        u1.ha_role()
    );

    // Unit 0's dataplane forwarded nothing to the backends: its final counters.
    // SAFETY: the PID of unit 0's dataplane (from its ready file); SIGTERM makes it
    // print its final counters and exit.
    unsafe { libc::kill(dataplane as i32, libc::SIGTERM) };
    let fin = u0.final_counters(Duration::from_secs(10));
    println!("unit 0: {fin}");
    let to_backends: u64 = fin
        .split(" | ")
        .skip(1)
        .filter(|p| p.contains(" to="))
        .map(|p| stat(p, "to"))
        .sum();
    assert_eq!(
        (stat(&fin, "dialogs"), to_backends),
        (0, 0),
        "unit 0 forwarded calls after its daemon died: {fin}"
    );
    drop(u1);
}
