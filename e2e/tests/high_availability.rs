//! Two units share the VIP: the active one dies (its processes killed by PID) in the
//! middle of calls; the standby, which received the active unit's tables, takes the
//! VIP over and no dialog is lost or moved.
//!
//! The first two tests pass on a standby that knows nothing (both units' Maglev tables
//! agree, and a single client flow gets the same SNAT port on both). The others are
//! built so that only the replicated state gives the right outcome: hundreds of SNAT
//! flows whose backend hangs up after the takeover, dialogs placed by `source`
//! affinity before the backend set changed, and phones registered through the active
//! unit that a backend calls after it died. A rolling restart under load (each unit
//! restarted with a fresh dataplane, brought back by a full resync) loses no call and
//! no registration. One more shows that a role change does not depend on an unrelated
//! part of the configuration: a broken blocklist file.

use e2e::pair::Pair;
use e2e::siplb::Siplb;
use e2e::sipp::{self, stickiness, unix_now, RunningUac, Traced, Uac};
use e2e::topology::{backend_ip, CLIENT_IP};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Starts both units with `farm` and waits until unit 0 is active and unit 1 standby,
/// each seeing the other.
fn start_pair(pair: &Pair, farm: &str) -> (Siplb, Siplb) {
    start_pair_with(pair, [farm, farm])
}

/// `start_pair` with each unit's own farms (and other sections).
fn start_pair_with(pair: &Pair, farms: [&str; 2]) -> (Siplb, Siplb) {
    let u0 = pair.start(0, farms[0]).unwrap();
    let u1 = pair.start(1, farms[1]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(u0.ha_role().starts_with("active (peer alive")
        && u1.ha_role().starts_with("standby (peer alive"))
    {
        assert!(
            Instant::now() < deadline,
            "roles: {} / {}",
            u0.ha_role(),
            u1.ha_role()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (u0, u1)
}

/// Kills unit 0's control daemon and dataplane (SIGKILL, by PID) and waits for unit 1
/// to become active; returns the time of the kill (Unix seconds, SIPp's clock).
fn kill_active(what: &str, u0: &Siplb, u1: &Siplb) -> f64 {
    let dataplane = u0.dataplane_pid().expect("unit 0's dataplane");
    let killed = Instant::now();
    let at = unix_now();
    u0.daemon.signal(libc::SIGKILL);
    // SAFETY: the PID of the dataplane unit 0 runs (from its ready file).
    unsafe { libc::kill(dataplane as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !u1.ha_role().starts_with("active") {
        assert!(
            Instant::now() < deadline,
            "{what}: the standby never took over: {}",
            u1.ha_role()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{what}: the standby took over {:?} after the active unit was killed",
        killed.elapsed()
    );
    at
}

/// Call-IDs of the dialogs a backend saw start (INVITE received) before `t` and
/// still exchange a message after it: those the takeover happened in.
fn spanning(traces: &[Vec<Traced>], t: f64) -> BTreeMap<String, &Traced> {
    let mut first: BTreeMap<&str, &Traced> = BTreeMap::new();
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    for m in traces.iter().flatten() {
        if !m.sent && m.kind == "INVITE" {
            first.entry(&m.call_id).or_insert(m);
        }
        let l = last.entry(&m.call_id).or_insert(m.time);
        *l = l.max(m.time);
    }
    first
        .into_iter()
        .filter(|(c, m)| m.time < t && last[c] > t)
        .map(|(c, m)| (c.to_string(), m))
        .collect()
}

fn takeover(nat: &str, extra: &str) {
    e2e::require_root();
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm(nat, extra);
    let (u0, u1) = start_pair(&pair, &farm);
    let uas = pair.start_uas_backends(&[]).unwrap();
    // 20 calls/s of 4 s: about 80 dialogs in progress when the active unit dies.
    let mut calls = Uac::new(&pair.client, "calls", 300, 20)
        .hold_ms(4000)
        .timeout_s(90)
        .spawn(&pair.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    kill_active(nat, &u0, &u1);
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

/// Calls are placed only before the kill, the last one a second (fifty `sync_ms`)
/// earlier: the replication is asynchronous, and a dialog created in the last
/// `sync_ms` before the active unit dies is not yet known to the standby.
const QUIET_BEFORE_KILL: Duration = Duration::from_secs(1);

/// `snat`, one UDP socket per call (`-t un`): every call is its own client flow with
/// its own SNAT port. The backends hang up after the takeover: their BYEs reach the
/// SNAT ports the dead unit gave out, which only a standby holding the replicated
/// mappings can take back to the client flows.
#[test]
fn snat_hundreds_of_client_flows_survive_a_takeover() {
    e2e::require_root();
    const CALLS: u32 = 300;
    const RATE: u32 = 75;
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm("snat", "snat_address = \"198.18.1.254\"");
    let (u0, u1) = start_pair(&pair, &farm);
    // Each backend holds a call 6 s after its ACK, then sends the BYE: every call is
    // in progress at the kill, 1 s after the last one started.
    let uas = sipp::start_backend_uases(
        &pair.backends,
        &pair.dir,
        "hangup",
        Some("hangup_uas"),
        &["-d", "6000"],
    )
    .unwrap();
    let mut calls = Uac::new(&pair.client, "flows", CALLS, RATE)
        .scenario("hangup_uac")
        .limit(CALLS)
        .timeout_s(40)
        .args(["-t", "un", "-max_socket", "1000"])
        .spawn(&pair.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(u64::from(CALLS / RATE)) + QUIET_BEFORE_KILL);
    let killed = kill_active("snat flows", &u0, &u1);
    let run = calls.wait(Duration::from_secs(60)).unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    let span = spanning(&traces, killed);
    // The backends see each flow as its SNAT address:port in the INVITE's top Via.
    let flows: BTreeSet<&str> = span.values().map(|m| m.via.as_str()).collect();
    println!(
        "snat flows: {} calls successful, {} failed; calls per backend {:?}; {} calls in \
         progress at the kill over {} distinct SNAT flows",
        run.successful,
        run.failed,
        s.calls_per_backend,
        span.len(),
        flows.len()
    );
    assert_eq!(
        (run.successful, run.failed),
        (u64::from(CALLS), 0),
        "{}",
        run.output
    );
    assert_eq!(
        s.calls_per_backend.iter().sum::<usize>(),
        CALLS as usize,
        "calls seen by the backends"
    );
    assert!(
        span.len() >= 250 && flows.len() == span.len(),
        "the takeover must happen in >= 250 calls, each its own SNAT flow: {} calls, {} flows",
        span.len(),
        flows.len()
    );
    assert!(
        s.split.is_empty(),
        "dialogs moved backend at the takeover: {:?}",
        s.split
    );
    s.assert_every_call_has("snat flows", &["INVITE", "ACK", "BYE", "200/BYE"]);
    drop(u1);
}

/// A `source` affinity farm of two backends gets a third one (`siplb backend add` on
/// both units) while calls are placed; the active unit then dies. Every dialog in
/// progress stays on the backend it started on: the standby finds it in the replicated
/// dialog table. Without it, the standby places an in-dialog request by its Call-ID
/// over the three backends, which moves about two dialogs in three.
#[test]
fn source_affinity_dialogs_keep_their_backend_after_the_farm_grew() {
    e2e::require_root();
    const CALLS: u32 = 150;
    const RATE: u32 = 50;
    let pair = Pair::up(3).unwrap();
    let farm = pair.farm_of("dnat", "affinity = \"source\"", 2);
    let (u0, u1) = start_pair(&pair, &farm);
    let uas = pair.start_uas_backends(&[]).unwrap();
    let placing = Duration::from_secs(u64::from(CALLS / RATE));
    let mut calls = Uac::new(&pair.client, "source", CALLS, RATE)
        .hold_ms(7000)
        .timeout_s(40)
        .spawn(&pair.dir)
        .unwrap();
    std::thread::sleep(placing / 2);
    let added = unix_now();
    let third = backend_ip(2).to_string();
    for u in [&u0, &u1] {
        u.ok(&["backend", "add", "pbx", &third]).unwrap();
    }
    std::thread::sleep(placing / 2 + QUIET_BEFORE_KILL);
    let killed = kill_active("source affinity", &u0, &u1);
    let run = calls.wait(Duration::from_secs(60)).unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    let span = spanning(&traces, killed);
    let before_add = span.values().filter(|m| m.time < added).count();
    println!(
        "source affinity: {} calls successful, {} failed; calls per backend {:?}; {} calls \
         in progress at the kill, {} of them placed before the third backend came",
        run.successful,
        run.failed,
        s.calls_per_backend,
        span.len(),
        before_add
    );
    assert_eq!(
        (run.successful, run.failed),
        (u64::from(CALLS), 0),
        "{}",
        run.output
    );
    assert!(
        s.split.is_empty(),
        "{} of {} dialogs in progress moved backend at the takeover: {:?}",
        s.split.len(),
        span.len(),
        s.split
    );
    assert_eq!(
        s.calls_per_backend.iter().sum::<usize>(),
        CALLS as usize,
        "calls seen by the backends"
    );
    assert!(
        span.len() == CALLS as usize && before_add >= 50,
        "the takeover must happen in all {CALLS} calls, >= 50 placed before the farm grew: {} and {}",
        span.len(),
        before_add
    );
    s.assert_every_call_has("source affinity", &["INVITE", "ACK", "BYE", "200/BYE"]);
    drop(u1);
}

/// Phones registered through the VIP, each from its own socket (`-t un`), so each is
/// its own SNAT flow: what their registrars saw.
struct Phones {
    proc: RunningUac,
    /// Per backend: user → the Contact its REGISTER carried (`host:port`).
    registered: Vec<BTreeMap<String, String>>,
}

/// Registers `n` phones (digest) through the VIP; each stays up `hold_ms` for calls,
/// answered by the out-of-call scenario on the phone's own socket. Returns when every
/// registrar has answered, with the registrars stopped (port 5060 is free again).
fn register_phones(pair: &Pair, n: u32, hold_ms: u32) -> Phones {
    let registrars = sipp::start_backend_uases(
        &pair.backends,
        &pair.dir,
        "registrar",
        Some("register_uas"),
        &[],
    )
    .unwrap();
    let users: Vec<String> = (0..n).map(|i| format!("phone{i:03}")).collect();
    let csv = pair.dir.join("phones.csv");
    std::fs::write(&csv, format!("SEQUENTIAL\n{}\n", users.join("\n"))).unwrap();
    let proc = Uac::new(&pair.client, "phones", n, 50)
        .scenario("phone_register_hold")
        .hold_ms(hold_ms)
        .limit(n)
        .timeout_s(u64::from(hold_ms / 1000) + 25)
        .args(["-t", "un", "-max_socket", "1000", "-inf"])
        .args([csv.display().to_string()])
        .args([
            "-oocsf".to_string(),
            sipp::scenario("phone_answer").display().to_string(),
        ])
        .traced()
        .spawn(&pair.dir)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let answered = |r: &[sipp::Uas]| {
        r.iter()
            .flat_map(|u| u.messages_so_far())
            .filter(|m| m.sent && m.kind == "200")
            .count()
    };
    while answered(&registrars) < n as usize {
        assert!(
            Instant::now() < deadline,
            "{} of {n} phones registered",
            answered(&registrars)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let registered = registrars
        .into_iter()
        .map(|u| {
            u.finish()
                .into_iter()
                .filter(|m| !m.sent && m.kind == "REGISTER")
                .map(|m| (m.to_user, m.contact))
                .collect()
        })
        .collect();
    Phones { proc, registered }
}

impl Phones {
    /// Each backend calls the phones registered with it, at the Contacts it learnt
    /// (`pbx_call_uac.xml`), from its SIP port; then the phones' run ends. Panics
    /// unless every phone registered once at its own Contact, every call succeeded
    /// and every phone answered its call whole (INVITE, ACK, BYE).
    fn call_them(self, pair: &Pair, what: &str) {
        let registrations: usize = self.registered.iter().map(|b| b.len()).sum();
        let contacts: BTreeSet<&str> = self
            .registered
            .iter()
            .flat_map(|b| b.values())
            .map(|c| c.as_str())
            .collect();
        let pbxs: Vec<_> = self
            .registered
            .iter()
            .enumerate()
            .filter(|(_, phones)| !phones.is_empty())
            .map(|(i, phones)| {
                let lines: Vec<String> = phones
                    .iter()
                    .map(|(user, contact)| {
                        let (host, port) = contact.rsplit_once(':').expect("host:port");
                        format!("{user};{host};{port}")
                    })
                    .collect();
                let inf = pair.dir.join(format!("pbx{i}.csv"));
                std::fs::write(&inf, format!("SEQUENTIAL\n{}\n", lines.join("\n"))).unwrap();
                let first = phones.values().next().unwrap().clone();
                Uac::new(
                    &pair.backends[i],
                    &format!("pbx{i}"),
                    phones.len() as u32,
                    25,
                )
                .local(backend_ip(i), 5060)
                .target(&first)
                .scenario("pbx_call_uac")
                .limit(phones.len() as u32)
                .timeout_s(20)
                .args(["-inf".to_string(), inf.display().to_string()])
                .spawn(&pair.dir)
                .unwrap()
            })
            .collect();
        let calls: Vec<_> = pbxs
            .into_iter()
            .map(|mut p| p.wait(Duration::from_secs(30)).unwrap())
            .collect();
        let mut proc = self.proc;
        let phones = proc.wait(Duration::from_secs(60)).unwrap();
        let mut kinds: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for m in phones.messages.iter().filter(|m| !m.sent) {
            kinds.entry(&m.call_id).or_default().insert(&m.kind);
        }
        let whole = kinds
            .values()
            .filter(|k| ["INVITE", "ACK", "BYE"].iter().all(|w| k.contains(w)))
            .count();
        let (ok, failed) = calls
            .iter()
            .fold((0, 0), |(o, f), r| (o + r.successful, f + r.failed));
        println!(
            "{what}: {registrations} registrations at the backends {:?} over {} distinct \
             contacts; the backends' calls to them: {ok} successful, {failed} failed; {whole} \
             answered whole by the phones",
            self.registered.iter().map(|b| b.len()).collect::<Vec<_>>(),
            contacts.len()
        );
        let n = phones.successful + phones.failed;
        assert_eq!(phones.failed, 0, "{what}: phones: {}", phones.output);
        assert_eq!(
            (registrations, contacts.len()),
            (n as usize, n as usize),
            "{what}: every phone registered once, each at its own SNAT address:port"
        );
        assert_eq!(
            (ok, failed),
            (n, 0),
            "{what}: the backends' calls to the phones:\n{}",
            calls
                .iter()
                .map(|c| c.output.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(whole as u64, n, "{what}: calls the phones answered whole");
    }
}

/// `snat`: phones register through the active unit, each its own SNAT flow; the
/// registrars learn them at the SNAT address:port the ALG wrote into their Contact.
/// The active unit dies; then each backend calls the phones registered with it at
/// those Contacts. Only a standby that holds the replicated SNAT mappings can take the
/// INVITEs to the phones.
#[test]
fn phones_registered_before_a_takeover_are_called_after_it() {
    e2e::require_root();
    const PHONES: u32 = 100;
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm("snat", "snat_address = \"198.18.1.254\"");
    let (u0, u1) = start_pair(&pair, &farm);
    let phones = register_phones(&pair, PHONES, 15_000);
    std::thread::sleep(QUIET_BEFORE_KILL);
    kill_active("registered phones", &u0, &u1);
    assert_eq!(
        phones.registered.iter().map(|b| b.len()).sum::<usize>(),
        PHONES as usize
    );
    phones.call_them(&pair, "registered phones");
    drop(u1);
}

/// The standby's `[security] deny_file` turns malformed; the active unit dies. The
/// standby still takes over and forwards: the control plane reads the file (at start
/// and on `siplb reload`) and keeps its last good prefixes, so no apply, the role
/// change included, depends on it. The reload after it reports the broken line.
#[test]
fn a_broken_deny_file_does_not_stop_the_standby_taking_over() {
    e2e::require_root();
    const CALLS: u32 = 60;
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm("dnat", "");
    let deny: Vec<_> = (0..2)
        .map(|i| pair.dir.join(format!("deny-u{i}.txt")))
        .collect();
    let units: Vec<String> = deny
        .iter()
        .map(|d| {
            std::fs::write(d, "198.19.0.0/16 # a feed\n").unwrap();
            format!("[security]\ndeny_file = \"{}\"\n\n{farm}", d.display())
        })
        .collect();
    let (u0, u1) = start_pair_with(&pair, [&units[0], &units[1]]);
    std::fs::write(&deny[1], "198.19.0.0/16\nnot-a-prefix\n").unwrap();
    kill_active("deny_file", &u0, &u1);
    let uas = pair.start_uas_backends(&[]).unwrap();
    let run = Uac::new(&pair.client, "after", CALLS, 30)
        .timeout_s(30)
        .run(&pair.dir)
        .unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    println!(
        "deny_file: after the takeover {} calls successful, {} failed; calls per backend {:?}",
        run.successful, run.failed, s.calls_per_backend
    );
    assert_eq!(
        (run.successful, run.failed),
        (u64::from(CALLS), 0),
        "{}",
        run.output
    );
    assert_eq!(
        s.calls_per_backend.iter().sum::<usize>(),
        CALLS as usize,
        "calls seen by the backends"
    );
    let reload = u1.ok(&["reload"]).unwrap();
    println!("deny_file: siplb reload: {}", reload.trim());
    assert!(
        reload.contains("deny-u1.txt:2") && reload.contains("last good list (1 prefixes)"),
        "{reload}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&u1.ok(&["status", "--json"]).unwrap()).unwrap();
    let d = &status["deny_file"];
    assert_eq!(
        (d["prefixes"].as_u64(), d["errors"].as_u64()),
        (Some(1), Some(1)),
        "{d}"
    );
    drop(u1);
}

/// Stops unit `i` (`siplb shutdown`: its dataplane, then its daemon) and starts it
/// again with a fresh dataplane: empty tables, what an upgrade or a resize does.
fn restart(pair: &Pair, i: usize, u: &mut Siplb) {
    let pid = u.dataplane_pid().expect("the unit's dataplane");
    u.ok(&["shutdown"]).unwrap();
    u.daemon
        .wait_timeout(Duration::from_secs(10))
        .expect("the control daemon exits after shutdown");
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: signal 0 only probes the PID read from the dataplane's ready file.
    while unsafe { libc::kill(pid as i32, 0) } == 0 {
        assert!(
            Instant::now() < deadline,
            "unit {i}'s dataplane did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    u.start_daemon(&pair.units[i]).unwrap();
}

fn unix_ms() -> u64 {
    (unix_now() * 1000.0) as u64
}

/// Waits until `u` is standby beside a live peer, with a full resync received that
/// ended after `since_ms`; returns that resync (`ha_detail.last_resync`).
fn wait_resynced(what: &str, u: &Siplb, since_ms: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = u.cli(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
        let r = &v["ha_detail"]["last_resync"];
        if v["ha"]
            .as_str()
            .unwrap_or("")
            .starts_with("standby (peer alive")
            && v["ha_detail"]["resyncing"] == false
            && r["direction"] == "received"
            && r["at_ms"].as_u64().unwrap_or(0) >= since_ms
        {
            println!("{what}: resynced: {r}");
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no full resync received: {}",
            v["ha_detail"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A rolling restart under load, in `snat`: the standby restarts with a fresh
/// dataplane and receives a full resync; the active unit restarts (the standby takes
/// over when it stops: no `siplb ha takeover` yet) and receives a full resync in turn.
/// Calls run through it all (each its own SNAT flow, hung up by the backends), and
/// phones registered before it are called by their backends after it, through the
/// unit that holds only what the resyncs gave it: 0 failed calls, 0 lost registrations.
#[test]
fn rolling_restart_under_load_loses_no_call_and_no_registration() {
    e2e::require_root();
    const PHONES: u32 = 40;
    const CALLS: u32 = 300;
    const RATE: u32 = 15;
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm("snat", "snat_address = \"198.18.1.254\"");
    let (mut u0, mut u1) = start_pair(&pair, &farm);
    let phones = register_phones(&pair, PHONES, 40_000);
    let uas = sipp::start_backend_uases(
        &pair.backends,
        &pair.dir,
        "hangup",
        Some("hangup_uas"),
        &["-d", "4000"],
    )
    .unwrap();
    // The phones hold the client's port 5060.
    let mut calls = Uac::new(&pair.client, "rolling", CALLS, RATE)
        .local(CLIENT_IP, 5070)
        .scenario("hangup_uac")
        .limit(CALLS)
        .timeout_s(50)
        .args(["-t", "un", "-max_socket", "1000"])
        .spawn(&pair.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let t = unix_ms();
    restart(&pair, 1, &mut u1);
    wait_resynced("rolling restart: unit 1 (standby) restarted", &u1, t);
    let t = unix_ms();
    let stopped = Instant::now();
    restart(&pair, 0, &mut u0);
    assert!(
        u1.ha_role().starts_with("active"),
        "unit 1 took over: {}",
        u1.ha_role()
    );
    println!(
        "rolling restart: unit 0 (active) stopped and started again in {:?}",
        stopped.elapsed()
    );
    wait_resynced("rolling restart: unit 0 restarted", &u0, t);
    let run = calls.wait(Duration::from_secs(70)).unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    println!(
        "rolling restart: {} calls successful, {} failed; calls per backend {:?}",
        run.successful, run.failed, s.calls_per_backend
    );
    assert_eq!(
        (run.successful, run.failed),
        (u64::from(CALLS), 0),
        "{}",
        run.output
    );
    assert_eq!(
        s.calls_per_backend.iter().sum::<usize>(),
        CALLS as usize,
        "calls seen by the backends"
    );
    assert!(s.split.is_empty(), "dialogs moved backend: {:?}", s.split);
    s.assert_every_call_has("rolling restart", &["INVITE", "ACK", "BYE", "200/BYE"]);
    phones.call_them(&pair, "rolling restart");
    drop(u0);
    drop(u1);
}

/// `dnat` calls with RTP through the VIP (the media relay maps each stream onto the
/// balancer's legs): the active unit dies while every call plays its audio. The RTP
/// after the takeover flows both ways only through the replicated media mappings;
/// a standby without them drops it (the VIP's media ports are nobody's). Counted in
/// the kernel of every endpoint, before and after the kill.
#[test]
fn rtp_through_the_vip_flows_on_after_a_takeover() {
    use e2e::rtp::{
        count_udp, echo_args, media_uac_scenario, stop_echo, udp_counts, PTIME_MS, UAC_RTP_PORTS,
        UAS_RTP_PORT,
    };
    e2e::require_root();
    const CALLS: u32 = 60;
    const RATE: u32 = 20;
    // 5 s of audio per call; the last call starts 3 s in, the kill comes 1 s later.
    const RTP_PER_CALL: u16 = 250;
    let pair = Pair::up(2).unwrap();
    let farm = pair.farm("dnat", "");
    let (u0, u1) = start_pair(&pair, &farm);
    let scenario = media_uac_scenario(&pair.dir, RTP_PER_CALL).unwrap();
    count_udp(&pair.client, UAC_RTP_PORTS, true).unwrap();
    for b in &pair.backends {
        count_udp(b, (UAS_RTP_PORT, UAS_RTP_PORT), false).unwrap();
    }
    let screens: Vec<_> = (0..pair.backends.len())
        .map(|i| pair.dir.join(format!("media{i}.screens")))
        .collect();
    let mut uases: Vec<_> = screens
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let args = echo_args(UAS_RTP_PORT, sc);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sipp::start_backend_uas(
                &pair.backends[i],
                i,
                &pair.dir,
                &format!("media{i}"),
                Some("media_uas"),
                &args,
            )
            .unwrap()
        })
        .collect();
    let mut calls = Uac::new(&pair.client, "media", CALLS, RATE)
        .scenario_file(&scenario)
        .hold_ms(u32::from(RTP_PER_CALL) * PTIME_MS + 500)
        .timeout_s(40)
        .spawn(&pair.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(u64::from(CALLS / RATE)) + QUIET_BEFORE_KILL);
    let counts = || {
        let c = udp_counts(&pair.client).unwrap();
        let b = pair
            .backends
            .iter()
            .map(|b| udp_counts(b).unwrap())
            .fold((0, 0), |(r, s), x| (r + x.received, s + x.sent));
        (c.sent, b.0, b.1, c.received)
    };
    let at_kill = counts();
    kill_active("rtp", &u0, &u1);
    let run = calls.wait(Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let end = counts();
    let echoed: u64 = uases
        .iter_mut()
        .zip(&screens)
        .map(|(u, sc)| stop_echo(u, sc).unwrap())
        .sum();
    // (client sent, backends received, backends sent, client received) after the kill.
    let after = (
        end.0 - at_kill.0,
        end.1 - at_kill.1,
        end.2 - at_kill.2,
        end.3 - at_kill.3,
    );
    println!(
        "rtp: {} calls successful, {} failed; RTP after the kill: client sent {}, backends \
         received {} and sent {} (SIPp echoed {echoed} in all), client received {}; in all: \
         client sent {} received {}",
        run.successful, run.failed, after.0, after.1, after.2, after.3, end.0, end.3
    );
    assert_eq!(
        (run.successful, run.failed),
        (u64::from(CALLS), 0),
        "{}",
        run.output
    );
    assert_eq!(
        end.0,
        u64::from(CALLS) * u64::from(RTP_PER_CALL),
        "RTP the client sent"
    );
    // Every call was still playing: a third of the audio or more comes after the kill.
    assert!(after.0 * 3 >= end.0, "RTP after the kill: {after:?}");
    // The takeover (0.3 s of the 2.5 s of audio left per call on average) loses about
    // a tenth, a slow one (0.8 s) a third; a standby without the mappings loses it all.
    assert!(
        after.1 * 3 >= after.0 * 2 && after.3 * 3 >= after.2 * 2,
        "RTP after the kill (client sent, backends received, backends sent, client \
         received): {after:?}"
    );
    drop(u1);
}
