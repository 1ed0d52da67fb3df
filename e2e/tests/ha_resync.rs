//! A restarted standby (new dataplane, empty tables) receives every live entry of the
//! active unit in a full resync before anything else, and says so in `siplb status`.

use e2e::pair::Pair;
use e2e::siplb::Siplb;
use e2e::sipp::Uac;
use std::time::Duration;

/// Dialogs alive in the unit's own tables.
fn dialogs(s: &Siplb) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["stats", "--json"]).unwrap_or_default()).unwrap_or_default();
    v["farms"][0]["dialogs_active"].as_u64().unwrap_or(0)
}

#[test]
fn a_restarted_standby_gets_every_live_dialog_in_a_full_resync() {
    e2e::require_root();
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm("dnat", "");
    let u0 = pair.start(0, &farm).unwrap();
    let u1 = pair.start(1, &farm).unwrap();
    let roles = |u0: &Siplb, u1: &Siplb| {
        u0.status_json()["ha"]
            .as_str()
            .unwrap_or("")
            .starts_with("active (peer alive")
            && u1.status_json()["ha"]
                .as_str()
                .unwrap_or("")
                .starts_with("standby (peer alive")
    };
    e2e::wait_until("roles", Duration::from_secs(10), || roles(&u0, &u1));
    let _uas = pair.start_uas_backends(&[]).unwrap();
    // 200 calls placed in 4 s, each held 14 s: all in progress across the restart.
    let mut calls = Uac::new(&pair.client, "calls", 200, 50)
        .hold_ms(14000)
        .timeout_s(60)
        .spawn(&pair.dir)
        .unwrap();
    e2e::wait_until(
        "200 dialogs on the active unit",
        Duration::from_secs(10),
        || dialogs(&u0) == 200,
    );
    drop(u1);
    let u1 = pair.start(1, &farm).unwrap();
    e2e::wait_until("the restarted standby", Duration::from_secs(10), || {
        roles(&u0, &u1)
    });
    e2e::wait_until("a finished resync", Duration::from_secs(5), || {
        !u1.status_json()["ha_detail"]["last_resync"].is_null()
    });
    let (d0, d1) = (dialogs(&u0), dialogs(&u1));
    let ha = u1.status_json()["ha_detail"].clone();
    let resync = &ha["last_resync"];
    println!(
        "restarted standby: {d1} dialogs in its tables, the active unit {d0}; last resync: {resync}; {} entries imported",
        ha["imported"]
    );
    assert_eq!(
        (d0, d1),
        (200, 200),
        "dialogs on the active and the restarted standby"
    );
    assert_eq!(resync["direction"], "received");
    assert!(resync["entries"].as_u64().unwrap_or(0) >= 200, "{resync}");
    assert_eq!(ha["resyncing"], false);
    let text = u1.cli(&["status"]).stdout;
    assert!(text.contains("last resync received: "), "{text}");
    let run = calls.wait(Duration::from_secs(60)).unwrap();
    assert_eq!((run.successful, run.failed), (200, 0), "{}", run.output);
}
