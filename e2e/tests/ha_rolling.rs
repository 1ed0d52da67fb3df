//! A rolling restart of the HA pair under load (issue 13, item 4), the planned way
//! (`e2e::high_availability`'s rolling restart lets the second restart fail over
//! instead): restart the standby with a resized table set, wait until it holds the active unit's tables, switch
//! roles with `siplb ha takeover`, restart the other unit, wait until it is synced.
//! SIPp calls and rounds of registrations span the whole procedure: no call may fail
//! and no registration may be lost or move registrar. The replicated state decides:
//! - calls are `snat`, one client flow each (`-t un`), and the backends hang up: their
//!   BYEs reach the SNAT ports an earlier active unit gave out;
//! - the registrar farm (`registrar` affinity, same VIP, port 5070) grows a third
//!   registrar after the first round, so Maglev would place a third of the phones
//!   elsewhere; only the replicated registrations keep them where they are.

use e2e::pair::Pair;
use e2e::siplb::Siplb;
use e2e::sipp::{self, scenario, start_uas, stickiness, Traced, Uac};
use e2e::topology::{backend_ip, CLIENT_IP, VIP};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const USERS: u32 = 30;

/// Waits until `standby` is a standby that holds the tables of `active`, which says
/// its peer is synced.
fn wait_synced(what: &str, standby: &Siplb, active: &Siplb) {
    e2e::wait_until(what, Duration::from_secs(30), || {
        let s = standby.status_json();
        let a = active.status_json();
        s["ha"]
            .as_str()
            .unwrap_or("")
            .starts_with("standby (peer alive")
            && s["ha_detail"]["resyncing"] == false
            && a["ha_detail"]["peer_synced"] == true
    });
}

/// Starts unit `i` with `farms`, its tables resized by `dialogs` entries.
fn start_unit(pair: &Pair, i: usize, farms: &str, dialogs: u32) -> Siplb {
    let config = pair
        .config(i, farms)
        .replace("dialogs = 65536", &format!("dialogs = {dialogs}"));
    Siplb::launch(
        &pair.units[i],
        &pair.dir,
        &format!("u{i}"),
        &config,
        &format!("{}u{i}", pair.tag),
    )
    .unwrap()
}

#[test]
fn takeover_between_restarts_with_resized_tables_loses_no_call_and_no_registration() {
    e2e::require_root();
    let pair = Pair::up(3).unwrap();
    let calls_farm = pair.farm("snat", "snat_address = \"198.18.1.254\"");
    let farms_with = |registrars: usize| {
        let b: Vec<String> = (0..registrars)
            .map(|i| format!("{{ address = \"{}\", port = 5070 }}", backend_ip(i)))
            .collect();
        format!(
            "{calls_farm}\n[[farm]]\nname = \"reg\"\nvip = \"{VIP}\"\nport = 5070\nnat = \"snat\"\naffinity = \"registrar\"\nsnat_address = \"198.18.1.254\"\nbackends = [ {} ]\n",
            b.join(", ")
        )
    };
    let farms = farms_with(2);
    let mut u0 = start_unit(&pair, 0, &farms, 65536);
    let mut u1 = start_unit(&pair, 1, &farms, 65536);
    wait_synced("roles settle, unit 1 synced", &u1, &u0);

    // Each backend hangs its calls up 2 s after the ACK.
    let call_uas = sipp::start_backend_uases(
        &pair.backends,
        &pair.dir,
        "hangup",
        Some("hangup_uas"),
        &["-d", "2000"],
    )
    .unwrap();
    let reg_uas: Vec<_> = (0..3)
        .map(|i| {
            start_uas(
                &pair.backends[i],
                backend_ip(i),
                5070,
                &pair.dir,
                &format!("reg{i}"),
                Some(&scenario("register_uas")),
                &[],
            )
            .unwrap()
        })
        .collect();
    let users: Vec<String> = (0..USERS).map(|i| format!("phone{i:03}")).collect();
    let csv = pair.dir.join("users.csv");
    std::fs::write(&csv, format!("SEQUENTIAL\n{}\n", users.join("\n"))).unwrap();
    let csv = csv.display().to_string();
    let register = |round: &str| {
        let run = Uac::new(&pair.client, round, USERS, 30)
            .local(CLIENT_IP, 5062)
            .target(&format!("{VIP}:5070"))
            .scenario("register_uac")
            .args(["-inf".to_string(), csv.clone()])
            .timeout_s(20)
            .run(&pair.dir)
            .unwrap();
        println!(
            "registrations {round}: {} ok, {} failed",
            run.successful, run.failed
        );
        assert_eq!(
            (run.successful, run.failed),
            (u64::from(USERS), 0),
            "{round}: {}",
            run.output
        );
    };

    // Calls of 2 s at 20/s for 45 s, one client flow each: about 40 in progress at
    // every step.
    let total = 20 * 45;
    let mut calls = Uac::new(&pair.client, "calls", total, 20)
        .scenario("hangup_uac")
        .limit(400)
        .timeout_s(120)
        .args(["-t", "un", "-max_socket", "1000"])
        .spawn(&pair.dir)
        .unwrap();
    register("before");
    // The registrar farm grows (on both units, as an operator does); the units'
    // configuration files say so too, for their restarts.
    let third = format!("{}:5070", backend_ip(2));
    for u in [&u0, &u1] {
        u.ok(&["backend", "add", "reg", &third]).unwrap();
    }
    let farms = farms_with(3);
    register("grown");

    // 1. Restart the standby with twice the dialog table.
    drop(u1);
    u1 = start_unit(&pair, 1, &farms, 131072);
    wait_synced("unit 1 restarted and synced", &u1, &u0);
    register("standby_restarted");

    // 2. Switch roles by hand (the active unit refuses: there is nothing to take).
    let refused = u0.cli(&["ha", "takeover"]);
    assert!(
        !refused.ok && refused.stderr.contains("already active"),
        "{} {}",
        refused.stdout,
        refused.stderr
    );
    let out = u1.ok(&["ha", "takeover"]).unwrap();
    println!("siplb ha takeover: {}", out.trim());
    e2e::wait_until("unit 0 standby", Duration::from_secs(10), || {
        u0.ha_role().starts_with("standby")
    });
    register("after_takeover");

    // 3. Restart the other unit (same resized tables); it comes back as standby.
    drop(u0);
    u0 = start_unit(&pair, 0, &farms, 131072);
    wait_synced("unit 0 restarted and synced", &u0, &u1);
    assert!(
        u1.ha_role().starts_with("active"),
        "unit 1: {}",
        u1.ha_role()
    );
    register("after_second_restart");

    // Every phone's REGISTERs, all five rounds, reached one registrar.
    let reg: Vec<Vec<Traced>> = reg_uas.into_iter().map(|u| u.finish()).collect();
    let mut at: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    let mut count = 0;
    for (b, t) in reg.iter().enumerate() {
        for m in t.iter().filter(|m| !m.sent && m.kind == "REGISTER") {
            at.entry(m.to_user.as_str()).or_default().insert(b);
            count += 1;
        }
    }
    println!(
        "registrations: {count} REGISTERs from {} phones at the registrars",
        at.len()
    );
    assert_eq!(at.len(), USERS as usize, "phones seen by the registrars");
    assert_eq!(
        count,
        5 * 2 * USERS as usize,
        "REGISTERs (5 rounds, 2 each)"
    );
    let moved: Vec<_> = at.iter().filter(|(_, b)| b.len() > 1).collect();
    assert!(moved.is_empty(), "registrations moved registrar: {moved:?}");
    let run = calls.wait(Duration::from_secs(150)).unwrap();
    let traces: Vec<_> = call_uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    println!(
        "calls: {} successful, {} failed; per backend {:?}; moved {:?}",
        run.successful, run.failed, s.calls_per_backend, s.split
    );
    assert_eq!(
        (run.successful, run.failed),
        (u64::from(total), 0),
        "{}",
        run.output
    );
    assert!(s.split.is_empty(), "dialogs moved backend: {:?}", s.split);
    s.assert_every_call_has("calls", &["INVITE", "ACK", "BYE", "200/BYE"]);

    drop(u0);
    drop(u1);
}
