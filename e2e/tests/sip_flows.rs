//! The SIP flows a PBX farm sees, through the VIP in both NAT modes with 2 workers:
//! REGISTER with a digest challenge, calls with re-INVITE, CANCEL of a ringing call, a
//! 3000-byte INVITE that crosses as IP fragments, and a call from a backend to a phone
//! that registered through the VIP. Every check is made at the backends' own logs:
//! each dialog (Call-ID) seen by one backend only, with all its messages.

use e2e::bed::{stat, Bed};
use e2e::sipp::{scenario, stickiness, Traced, Uac};
use e2e::topology::{backend_ip, CLIENT_IP};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const WORKERS: u16 = 2;

fn assert_ok(what: &str, run: &e2e::sipp::UacRun, calls: u32) {
    assert!(
        run.status.success() && run.failed == 0 && run.successful == u64::from(calls),
        "{what}: {} successful, {} failed of {calls} ({:?})\n{}",
        run.successful,
        run.failed,
        run.status,
        run.output
    );
}

/// Every Call-ID at exactly one backend, each with all of `want` (kinds as
/// `METHOD` for requests and `code/METHOD` for responses); returns calls per backend.
fn assert_sticky(what: &str, traces: &[Vec<Traced>], calls: usize, want: &[&str]) -> Vec<usize> {
    let s = stickiness(traces);
    assert!(
        s.split.is_empty(),
        "{what}: dialogs split across backends: {:?}",
        s.split
    );
    assert_eq!(
        s.calls_per_backend.iter().sum::<usize>(),
        calls,
        "{what}: calls seen by the backends"
    );
    s.assert_every_call_has(what, want);
    println!("{what}: calls per backend {:?}", s.calls_per_backend);
    s.calls_per_backend
}

/// AOR (To user of REGISTERs) → the backends that received its REGISTERs.
fn registrations(traces: &[Vec<Traced>]) -> BTreeMap<String, BTreeSet<usize>> {
    let mut m: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (b, t) in traces.iter().enumerate() {
        for msg in t.iter().filter(|m| !m.sent && m.kind == "REGISTER") {
            m.entry(msg.to_user.clone()).or_default().insert(b);
        }
    }
    m
}

fn register_users(bed: &Bed, tag: &str, users: &[String]) -> Vec<Vec<Traced>> {
    let uas = bed.backends(Some("register_uas"), tag, &[]).unwrap();
    let csv = bed.users(tag, users).unwrap();
    let n = users.len() as u32;
    let run = bed
        .client(tag, n, 20)
        .scenario("register_uac")
        .args(["-inf".to_string(), csv.display().to_string()])
        .run(&bed.topo.dir)
        .unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    assert_ok(tag, &run, n);
    traces
}

fn flows(nat: &str) {
    e2e::require_root();
    let mut bed = Bed::start(2, WORKERS, nat, "call-id", "").expect("bed");
    let users: Vec<String> = (0..40).map(|i| format!("user{i:03}")).collect();

    // REGISTER, 401 (digest), REGISTER with credentials, 200 — the challenged
    // REGISTER must meet the registrar that issued the nonce.
    let t = register_users(&bed, "register", &users);
    let per = assert_sticky(
        "register",
        &t,
        users.len(),
        &["REGISTER", "401/REGISTER", "REGISTER", "200/REGISTER"],
    );
    assert!(
        per.iter().all(|n| *n > 0),
        "registrations all on one backend: {per:?}"
    );
    let first = registrations(&t);
    // A refresh (new Call-ID) of every AOR lands where the AOR is registered.
    let t = register_users(&bed, "refresh", &users);
    let again = registrations(&t);
    for u in &users {
        assert_eq!(first[u].len(), 1, "{u} registered at several backends");
        assert_eq!(first[u], again[u], "{u}: refresh went to another backend");
    }

    // Calls with a re-INVITE.
    let uas = bed.backends(Some("call_uas"), "reinvite", &[]).unwrap();
    let run = bed
        .client("reinvite", 100, 50)
        .scenario("call_uac")
        .args(["-key", "sdp_pad", "a=x-pad:-", "-s", "service"])
        .run(&bed.topo.dir)
        .unwrap();
    let t: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    assert_ok("re-INVITE calls", &run, 100);
    assert_sticky(
        "re-INVITE calls",
        &t,
        100,
        &[
            "INVITE",
            "INVITE",
            "100/INVITE",
            "180/INVITE",
            "200/INVITE",
            "200/INVITE",
            "ACK",
            "ACK",
            "BYE",
            "200/BYE",
        ],
    );

    // CANCEL of a ringing call.
    let uas = bed.backends(Some("cancel_uas"), "cancel", &[]).unwrap();
    let run = bed
        .client("cancel", 40, 40)
        .scenario("cancel_uac")
        .args(["-s", "service"])
        .run(&bed.topo.dir)
        .unwrap();
    let t: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    assert_ok("CANCEL", &run, 40);
    assert_sticky(
        "CANCEL",
        &t,
        40,
        &[
            "INVITE",
            "180/INVITE",
            "CANCEL",
            "200/CANCEL",
            "487/INVITE",
            "ACK",
        ],
    );

    // A 3000-byte INVITE crosses the client link as fragments, is reassembled,
    // balanced and fragmented again toward the backend.
    let pad = format!("a=x-pad:{}", "x".repeat(2700));
    let uas = bed.backends(Some("call_uas"), "fragments", &[]).unwrap();
    let run = bed
        .client("fragments", 20, 20)
        .scenario("call_uac")
        .args(["-key", "sdp_pad", &pad, "-s", "service"])
        .run(&bed.topo.dir)
        .unwrap();
    let t: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    assert_ok("fragmented INVITE", &run, 20);
    assert_sticky(
        "fragmented INVITE",
        &t,
        20,
        &["INVITE", "200/INVITE", "ACK", "BYE", "200/BYE"],
    );
    let big = t
        .iter()
        .flatten()
        .filter(|m| !m.sent && m.kind == "INVITE" && m.size >= 2900)
        .count();
    assert_eq!(
        big, 20,
        "the backends received 20 INVITEs of 3000 bytes in one piece"
    );

    // A backend calls a phone that registered through the VIP; the phone's answers
    // go back to that backend.
    backend_calls_phone(&bed, nat);

    let fin = bed.stop();
    println!("{fin}");
    // af_packet's kernel side reassembles fragments before DPDK sees them
    // (PACKET_FANOUT_FLAG_DEFRAG), so here siplb re-fragments each 3000-byte INVITE into
    // three toward the 1500-byte back link; its own reassembly is covered by the
    // balancer's unit tests and by PMDs that deliver fragments as they are.
    assert!(stat(&fin, "out") >= 60, "fragments sent not counted: {fin}");
}

fn backend_calls_phone(bed: &Bed, nat: &str) {
    let uas = bed
        .backends(Some("register_uas"), "phone-reg", &[])
        .unwrap();
    let csv = bed.users("phone", &["alice".to_string()]).unwrap();
    // In snat mode the backend sees the phone at a balancer address and port: learn
    // them from a capture in each backend's namespace.
    let captures: Vec<_> = bed
        .topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let out = bed.topo.dir.join(format!("capture{i}.txt"));
            let mut cmd = ns.command("timeout");
            cmd.args([
                "20",
                "tcpdump",
                "-l",
                "-n",
                "-c",
                "1",
                "-i",
                "be0",
                "udp dst port 5060 and src host not",
            ])
            .arg(backend_ip(i).to_string());
            e2e::process::Proc::spawn("tcpdump", cmd, &out).unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let mut phone = bed
        .client("phone", 1, 1)
        .local(CLIENT_IP, 5062)
        .limit(1)
        .scenario("phone_register_and_wait")
        .args([
            "-inf".to_string(),
            csv.display().to_string(),
            "-oocsf".to_string(),
            scenario("phone_answer").display().to_string(),
        ])
        .timeout_s(30)
        .traced()
        .spawn(&bed.topo.dir)
        .unwrap();
    // Wait for the registration to reach a backend.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let registrar = loop {
        if let Some(i) = uas.iter().position(|u| {
            u.messages_so_far()
                .iter()
                .any(|m| m.sent && m.kind == "200")
        }) {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the phone did not register"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let reg_traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    assert!(reg_traces
        .iter()
        .enumerate()
        .all(|(i, t)| i == registrar || t.is_empty()));
    let mut captured = String::new();
    for (i, mut c) in captures.into_iter().enumerate() {
        c.wait_timeout(Duration::from_secs(2));
        c.stop(Duration::from_secs(1));
        if i == registrar {
            captured = c.output();
        }
    }
    // DNAT: the phone's own address. SNAT: where the backend saw the REGISTER from.
    let target = if nat == "dnat" {
        format!("{CLIENT_IP}:5062")
    } else {
        let src = captured
            .split_whitespace()
            .skip_while(|w| *w != "IP")
            .nth(1)
            .expect("captured REGISTER")
            .to_string();
        let (ip, port) = src.rsplit_once('.').unwrap();
        format!("{ip}:{port}")
    };
    // The PBX calls from its SIP port (the balancer knows backends by address and port).
    let other = 1 - registrar;
    let other_uas = bed.backends(None, "bystander", &[]).unwrap().remove(other);
    let pbx = Uac::new(&bed.topo.backends[registrar], "pbx", 1, 1)
        .local(backend_ip(registrar), 5060)
        .target(&target)
        .limit(1)
        .timeout_s(15)
        .traced()
        .run(&bed.topo.dir)
        .unwrap();
    let phone_run = phone.wait(Duration::from_secs(40)).unwrap();
    let bystander = other_uas.finish();
    assert_ok(
        &format!("backend {registrar} calls the phone at {target}"),
        &pbx,
        1,
    );
    assert_ok("phone registration", &phone_run, 1);
    let got: Vec<&str> = phone_run
        .messages
        .iter()
        .filter(|m| !m.sent)
        .map(|m| m.kind.as_str())
        .collect();
    for k in ["401", "200", "INVITE", "ACK", "BYE"] {
        assert!(got.contains(&k), "the phone never received {k}: {got:?}");
    }
    let call_ids: BTreeSet<&str> = pbx.messages.iter().map(|m| m.call_id.as_str()).collect();
    assert!(
        bystander
            .iter()
            .all(|m| !call_ids.contains(m.call_id.as_str())),
        "the other backend saw the PBX's call"
    );
    println!("backend {registrar} called the phone at {target}: answered, ACKed and hung up through the VIP");
}

#[test]
fn dnat_register_calls_reinvite_cancel_fragments_and_backend_to_phone() {
    flows("dnat");
}

#[test]
fn snat_register_calls_reinvite_cancel_fragments_and_backend_to_phone() {
    flows("snat");
}

/// `registrar` affinity: a user's calls go to the backend that holds its registration.
#[test]
fn registrar_affinity_sends_calls_to_the_users_registrar() {
    e2e::require_root();
    let bed = Bed::start(2, WORKERS, "dnat", "registrar", "").expect("bed");
    let users: Vec<String> = (0..30).map(|i| format!("u{i:02}")).collect();
    let t = register_users(&bed, "register", &users);
    let regs = registrations(&t);
    let uas = bed.backends(None, "calls", &[]).unwrap();
    let csv = bed.users("callers", &users).unwrap();
    let run = bed
        .client("calls", users.len() as u32, 30)
        .scenario("user_call_uac")
        .args([
            "-inf".to_string(),
            csv.display().to_string(),
            "-s".to_string(),
            "echo".to_string(),
        ])
        .run(&bed.topo.dir)
        .unwrap();
    let t: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    assert_ok("calls", &run, users.len() as u32);
    assert_sticky("calls", &t, users.len(), &["INVITE", "ACK", "BYE"]);
    for (b, msgs) in t.iter().enumerate() {
        for m in msgs.iter().filter(|m| !m.sent && m.kind == "INVITE") {
            assert_eq!(
                regs[&m.from_user],
                BTreeSet::from([b]),
                "{}'s call went to backend {b}, its registration is elsewhere",
                m.from_user
            );
        }
    }
}
