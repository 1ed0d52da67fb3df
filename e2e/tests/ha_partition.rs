//! Partition and return (issue 13, item 5): the heartbeat path between the units is cut
//! (each unit's kernel drops the peer's HA datagrams), so the standby takes the VIP
//! too and both units are active. When the path comes back, exactly one steps down
//! (the lower priority, unit 1), the winner announces the VIP again, and the loser is
//! resynced from it. Calls placed before the cut run across it.

use e2e::pair::{Pair, BACK};
use e2e::sipp::Uac;
use std::time::{Duration, Instant};

/// Drops (`-I`) or lets through again (`-D`) the peer's HA datagrams in unit `i`'s
/// kernel, where the exception path delivers them.
fn cut(pair: &Pair, i: usize, op: &str) {
    let peer = BACK[1 - i].split('/').next().unwrap();
    pair.units[i]
        .run(
            "iptables",
            &[
                op, "INPUT", "-s", peer, "-p", "udp", "--dport", "5999", "-j", "DROP",
            ],
        )
        .unwrap();
}

#[test]
fn after_a_partition_one_unit_steps_down_and_the_winner_owns_the_vip() {
    e2e::require_root();
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm("dnat", "");
    let u0 = pair.start(0, &farm).unwrap();
    let u1 = pair.start(1, &farm).unwrap();
    e2e::wait_until("roles", Duration::from_secs(10), || {
        u0.ha_role().starts_with("active (peer alive")
            && u1.ha_role().starts_with("standby (peer alive")
    });
    let winner = pair.vip_owners();
    assert_eq!(winner.len(), 1, "before: {winner:?}");

    let _uas = pair.start_uas_backends(&[]).unwrap();
    // 100 calls placed in 2 s, each held 8 s: all in progress across the partition.
    let mut calls = Uac::new(&pair.client, "calls", 100, 50)
        .hold_ms(8000)
        .timeout_s(60)
        .spawn(&pair.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));

    for i in 0..2 {
        cut(&pair, i, "-I");
    }
    e2e::wait_until("both units active", Duration::from_secs(10), || {
        u0.ha_role().starts_with("active") && u1.ha_role().starts_with("active")
    });
    let split = pair.vip_owners();
    println!("units answering ARP for the VIP while partitioned: {split:?}");
    std::thread::sleep(Duration::from_secs(1));

    for i in 0..2 {
        cut(&pair, i, "-D");
    }
    let healed = Instant::now();
    e2e::wait_until("one unit steps down", Duration::from_secs(10), || {
        u1.ha_role().starts_with("standby (peer alive")
    });
    assert!(
        u0.ha_role().starts_with("active"),
        "unit 0: {}",
        u0.ha_role()
    );
    // The loser is resynced from the winner.
    e2e::wait_until("unit 1 resynced", Duration::from_secs(10), || {
        let h = u1.status_json()["ha_detail"].clone();
        h["resyncing"] == false
            && h["last_resync"]["direction"] == "received"
            && h["last_resync"]["at_ms"].as_u64().unwrap_or(0) as f64 / 1e3
                > e2e::sipp::unix_now() - healed.elapsed().as_secs_f64()
    });
    let resync = u1.status_json()["ha_detail"]["last_resync"].clone();
    // Gratuitous ARP and answers: only the winner owns the VIP again.
    let after = pair.vip_owners();
    println!("VIP owners: before {winner:?}, partitioned {split:?}, after {after:?}; unit 1's resync {resync}");
    assert_eq!(after, winner, "the winner owns the VIP again, alone");

    let run = calls.wait(Duration::from_secs(60)).unwrap();
    println!(
        "calls across the partition: {} successful, {} failed",
        run.successful, run.failed
    );
    assert_eq!((run.successful, run.failed), (100, 0), "{}", run.output);
    assert!(
        resync["entries"].as_u64().unwrap_or(0) >= 100,
        "unit 1's resync holds the 100 dialogs: {resync}"
    );
}
