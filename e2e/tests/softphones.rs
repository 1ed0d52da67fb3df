//! Real softphones call each other through siplb (issue 12, item 4), in `dnat` and
//! `snat`.
//!
//! Topology (`e2e::phone_bed`): phones A (alice, 198.18.0.10) and B (bob, 198.18.0.11)
//! in their own namespaces on one LAN with the balancer's front port; siplb-dataplane
//! (af_packet, one worker, `idle_sleep_us = 200`) serving VIP 198.18.0.2:5060 with a
//! farm of two backends, `call-id` affinity; each backend runs Kamailio on
//! 198.18.1.(11+i):5060 and rtpengine on the same address.
//!
//! Peers (Debian 12 packages, installed by `ci/setup-host.sh`): baresip 1.0.0
//! (`baresip-core`: headless, ctrl_tcp, `ausine` tone, PCMU), Kamailio 5.6.3
//! (`kamailio`: registrar + record-routing proxy, `rtpengine` module, `dmq_usrloc`
//! sharing registrations), rtpengine 10.5 (`rtpengine-daemon`, userspace only).
//! The backends are configured the plain way: own address, no `advertise` of the VIP,
//! no NAT helper. Only a real UA follows the addresses written in SIP and SDP: ACK, BYE
//! and re-INVITEs go to the Record-Route/Contact of the 200, RTP to `c=`/`m=`.
//!
//! The call: A and B register at the VIP; A calls `sip:bob@VIP`; B rings (180) and
//! answers; media flows; A holds and resumes (two re-INVITEs); A hangs up (BYE). The
//! report records, from the phones' events, the Kamailios' logs, a capture on each
//! phone's link and the dataplane's drop counters per phase: registrations, ringing,
//! answer, whether the ACK reached the backend and the callee, the re-INVITEs answered,
//! BYE at the callee and its 200 at the caller, RTP sent/received per direction, and
//! every backend-network address (198.18.1.0/24: backends and the balancer's back
//! address) in any packet a phone received — IP header, SIP header, SDP line.
//!
//! With `alg = false` the tests assert that the capture checker finds the backends'
//! addresses in what the phones receive (and counts what it decoded), that
//! registration works, and that no media crosses. With the ALG (headers, SDP and media
//! relayed through the VIP on the farm's `media_ports`) the `full_call` tests expect
//! the whole call, >= 99 % of RTP per direction and no backend-network address (the
//! balancer's SNAT address included: in snat the other phone's Via and Contact reach
//! a phone as the VIP with a flow token) in any header or SDP line.

use e2e::capture::{analyse, Capture, CaptureReport};
use e2e::phone_bed::{delta, PhoneBed, BACKEND_NET, LIFE, PHONE_IFACE, PHONE_IPS};
use e2e::softphone::Softphone;
use e2e::topology::VIP;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Whether siplb's farm configuration knows `alg` (issue 12). Until it does, no `alg`
/// line is written and only `alg = false` (today's behaviour) can run.
const ALG_IN_CONFIG: bool = true;

const USERS: [&str; 2] = ["alice", "bob"];

/// The balancer's back-port address, the SNAT source in snat.
const SNAT_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 1, 1);

fn farm_alg(alg: bool) -> String {
    if ALG_IN_CONFIG {
        format!("alg = {alg}")
    } else {
        assert!(
            !alg,
            "siplb has no `alg` setting yet: set ALG_IN_CONFIG first"
        );
        String::new()
    }
}

/// RTP of one direction: what the sender's link carried out, what the receiver's link
/// carried in.
#[derive(Debug, Default, Clone, Copy)]
struct Flow {
    sent: u64,
    received: u64,
}

impl Flow {
    fn delivered(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.received as f64 / self.sent as f64
        }
    }
}

#[derive(Debug, Default)]
struct CallReport {
    nat: String,
    alg: bool,
    /// Per phone: a 200 to its REGISTER; baresip's last registration line.
    registered: [bool; 2],
    registration: [String; 2],
    /// Per phone: the backends its REGISTERs reached.
    registrar: [Vec<usize>; 2],
    callee_rang: bool,
    caller_heard_ringing: bool,
    answered: bool,
    callee_established: bool,
    /// The backends A's first INVITE reached.
    invite_backends: Vec<usize>,
    /// The ACK of the 2xx at a backend (Kamailio logged it), at the callee (capture).
    ack_at_backend: bool,
    ack_at_callee: bool,
    /// Re-INVITEs (hold, resume) answered with SDP at A, and received by B.
    reinvites_ok: usize,
    reinvites_at_callee: usize,
    bye_at_callee: bool,
    bye_answered: bool,
    /// A→B and B→A.
    rtp: [Flow; 2],
    /// The call's SIP as each phone's link saw it, and as each backend logged it.
    phone_flow: [Vec<String>; 2],
    backend_flow: Vec<Vec<String>>,
    /// Dataplane drops by reason, per phase.
    phases: Vec<(&'static str, BTreeMap<String, u64>)>,
    captures: [CaptureReport; 2],
}

impl CallReport {
    fn leaks(&self) -> usize {
        self.captures.iter().map(|c| c.leaks.len()).sum()
    }
}

/// Collapses runs of equal lines: `INVITE from x ×3`.
fn runs(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for i in items {
        match out.last_mut() {
            Some((last, n)) if *last == i => *n += 1,
            _ => out.push((i, 1)),
        }
    }
    out.into_iter()
        .map(|(s, n)| if n > 1 { format!("{s} ×{n}") } else { s })
        .collect()
}

fn run_call(nat: &str, alg: bool) -> CallReport {
    e2e::require_root();
    let bed = PhoneBed::start(nat, &farm_alg(alg)).expect("softphone bed");
    let dir = &bed.topo.dir;
    let captures: Vec<Capture> = bed
        .phones
        .iter()
        .zip(USERS)
        .map(|(ns, u)| {
            Capture::start(ns, PHONE_IFACE, &dir.join(format!("{u}.pcap")), LIFE).unwrap()
        })
        .collect();
    let mut r = CallReport {
        nat: nat.into(),
        alg,
        ..Default::default()
    };
    let mut last = bed.drops();
    let mut phase = |r: &mut CallReport, name: &'static str| {
        let now = bed.drops();
        r.phases.push((name, delta(&last, &now)));
        last = now;
    };
    let mut phones: Vec<Softphone> = bed
        .phones
        .iter()
        .zip(USERS)
        .zip(PHONE_IPS)
        .map(|((ns, u), ip)| Softphone::start(ns, PHONE_IFACE, dir, u, ip, VIP, LIFE).unwrap())
        .collect();
    for (i, p) in phones.iter_mut().enumerate() {
        r.registered[i] = p.wait_registered(Duration::from_secs(10));
        r.registration[i] = p.registration().unwrap_or_else(|| "no answer".into());
    }
    phase(&mut r, "register");

    let [a, b] = &mut phones[..] else {
        unreachable!()
    };
    let (ea, eb) = (a.events.len(), b.events.len());
    let bob = format!("sip:bob@{VIP}");
    a.dial(&bob).expect("dial");
    r.callee_rang = b
        .wait_event("CALL_INCOMING", eb, Duration::from_secs(8))
        .is_some();
    if r.callee_rang {
        // Let the 180 reach the caller before the 200.
        b.pump(Duration::from_millis(500));
        b.accept().expect("accept");
    }
    r.answered = a
        .wait_event("CALL_ESTABLISHED", ea, Duration::from_secs(8))
        .is_some();
    r.caller_heard_ringing = a.count("CALL_RINGING", ea) > 0;
    r.callee_established = b
        .wait_event("CALL_ESTABLISHED", eb, Duration::from_secs(2))
        .is_some();
    phase(&mut r, "call");

    // Media, then hold and resume: each a re-INVITE whose 200 carries SDP.
    pump_both(a, b, Duration::from_secs(3));
    phase(&mut r, "media");
    for what in ["hold", "resume"] {
        let from = a.events.len();
        let sent = if what == "hold" { a.hold() } else { a.resume() };
        let ok = sent.map(|x| x.ok).unwrap_or(false)
            && a.wait_event("CALL_REMOTE_SDP", from, Duration::from_secs(5))
                .is_some_and(|e| e.param == "answer");
        r.reinvites_ok += usize::from(ok);
        pump_both(a, b, Duration::from_secs(2));
        println!("{what}: answered {ok}");
    }
    phase(&mut r, "hold/resume");

    let eb = b.events.len();
    a.hangup().expect("hangup");
    b.wait_event("CALL_CLOSED", eb, Duration::from_secs(5));
    pump_both(a, b, Duration::from_secs(1));
    phase(&mut r, "hang-up");

    for p in &mut phones {
        p.stop();
    }
    let frames: Vec<_> = captures
        .into_iter()
        .map(|c| c.finish().expect("capture"))
        .collect();
    for i in 0..2 {
        r.captures[i] = analyse(&frames[i], PHONE_IPS[i], BACKEND_NET);
    }
    let [ca, cb] = &r.captures;
    r.rtp = [
        Flow {
            sent: ca.rtp_out(),
            received: cb.rtp_in(),
        },
        Flow {
            sent: cb.rtp_out(),
            received: ca.rtp_in(),
        },
    ];

    // The call, as each side saw it.
    let invite = ca
        .sip_sent
        .iter()
        .find(|m| m.kind == "INVITE")
        .expect("A sent no INVITE")
        .clone();
    let cid = invite.call_id.as_str();
    for (i, c) in r.captures.iter().enumerate() {
        let mut all: Vec<_> = c
            .sip_received
            .iter()
            .map(|m| (m.frame, format!("rx {} from {}", m.label(), m.src)))
            .chain(
                c.sip_sent
                    .iter()
                    .map(|m| (m.frame, format!("tx {} to {}", m.label(), m.dst))),
            )
            .collect();
        all.sort();
        let in_call: std::collections::BTreeSet<usize> = c
            .sip_received
            .iter()
            .chain(&c.sip_sent)
            .filter(|m| m.call_id == cid)
            .map(|m| m.frame)
            .collect();
        r.phone_flow[i] = runs(
            all.into_iter()
                .filter(|(f, _)| in_call.contains(f))
                .map(|(_, s)| s),
        );
    }
    let got = |m: &&e2e::capture::SipSeen, kind: &str| m.call_id == cid && m.label() == kind;
    r.ack_at_callee = cb
        .sip_received
        .iter()
        .any(|m| got(&m, "ACK") && m.cseq == invite.cseq);
    r.reinvites_at_callee = cb
        .sip_received
        .iter()
        .filter(|m| got(m, "INVITE") && m.cseq > invite.cseq)
        .count();
    r.bye_at_callee = cb.sip_received.iter().any(|m| got(&m, "BYE"));
    r.bye_answered = ca.sip_received.iter().any(|m| got(&m, "200/BYE"));
    for (k, kam) in bed.kamailios.iter().enumerate() {
        let msgs = kam.messages();
        for (i, u) in USERS.iter().enumerate() {
            if msgs
                .iter()
                .any(|m| m.rx && m.kind == "REGISTER" && m.to_user == *u)
            {
                r.registrar[i].push(k);
            }
        }
        let call: Vec<_> = msgs.iter().filter(|m| m.call_id == cid).collect();
        if call
            .iter()
            .any(|m| m.rx && m.kind == "INVITE" && m.cseq == invite.cseq)
        {
            r.invite_backends.push(k);
        }
        // Only the ACK of a 2xx comes from A after A saw the call answered; the ACK of
        // a failure response would have the same CSeq, so both must hold.
        r.ack_at_backend |= r.answered
            && call
                .iter()
                .any(|m| m.rx && m.kind == "ACK" && m.cseq == invite.cseq);
        r.backend_flow.push(runs(call.iter().map(|m| {
            let dir = if m.rx { "rx" } else { "tx" };
            let prep = if m.rx { "from" } else { "to" };
            format!("{dir} {} {prep} {}", m.kind, m.peer)
        })));
    }
    println!("{r}");
    r
}

fn pump_both(a: &mut Softphone, b: &mut Softphone, d: Duration) {
    let half = d / 2;
    for _ in 0..2 {
        a.pump(half / 2);
        b.pump(half / 2);
    }
}

impl fmt::Display for CallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "==== {} alg={} ====", self.nat, self.alg)?;
        for (i, u) in USERS.iter().enumerate() {
            writeln!(
                f,
                "{u}: registered {} ({}) at backend(s) {:?}",
                self.registered[i], self.registration[i], self.registrar[i]
            )?;
        }
        writeln!(
            f,
            "call: INVITE at backend(s) {:?}; callee rang {}; caller heard ringing {}; \
             answered {}; callee established {}",
            self.invite_backends,
            self.callee_rang,
            self.caller_heard_ringing,
            self.answered,
            self.callee_established
        )?;
        writeln!(
            f,
            "ACK at backend {}, at callee {}; re-INVITEs answered {}/2, at callee {}; \
             BYE at callee {}, 200/BYE at caller {}",
            self.ack_at_backend,
            self.ack_at_callee,
            self.reinvites_ok,
            self.reinvites_at_callee,
            self.bye_at_callee,
            self.bye_answered
        )?;
        for (name, fl) in ["A→B", "B→A"].iter().zip(&self.rtp) {
            writeln!(
                f,
                "RTP {name}: sent {} received {} ({:.1} %)",
                fl.sent,
                fl.received,
                100.0 * fl.delivered()
            )?;
        }
        for (i, u) in USERS.iter().enumerate() {
            writeln!(f, "{u}'s link, the call: {}", self.phone_flow[i].join(", "))?;
        }
        for (k, flow) in self.backend_flow.iter().enumerate() {
            writeln!(f, "backend {k} (Kamailio), the call: {}", flow.join(", "))?;
        }
        let mut total: BTreeMap<&str, u64> = BTreeMap::new();
        for (name, d) in &self.phases {
            writeln!(f, "siplb drops during {name}: {d:?}")?;
            for (k, v) in d {
                *total.entry(k.as_str()).or_insert(0) += v;
            }
        }
        let to_backends: usize = self
            .captures
            .iter()
            .flat_map(|c| c.sent_to_hidden.values())
            .sum();
        writeln!(
            f,
            "siplb drops over the run: {total:?}; the phones sent {to_backends} packets to \
             backend-network addresses"
        )?;
        for (i, u) in USERS.iter().enumerate() {
            let c = &self.captures[i];
            writeln!(
                f,
                "{u}'s capture: {} frames, {} IPv4 packets received, {} sent; decoded \
                 {} SIP messages received ({} with SDP), {} sent; RTP in {} out {}; \
                 sent to the backend network {:?}",
                c.frames,
                c.received,
                c.sent,
                c.sip_received.len(),
                c.sdp_received,
                c.sip_sent.len(),
                c.rtp_in(),
                c.rtp_out(),
                c.sent_to_hidden
            )?;
            writeln!(
                f,
                "{u}: {} backend-network addresses received, by place {:?}",
                c.leaks.len(),
                c.leaks_by_place()
            )?;
            for l in c.leaks.iter().take(12) {
                writeln!(
                    f,
                    "  frame {} {} [{}]: {}",
                    l.frame, l.addr, l.place, l.text
                )?;
            }
        }
        write!(f, "leaks in total: {}", self.leaks())
    }
}

/// Without the ALG (today): registration works, the checker decodes the phones' SIP and
/// finds the backend network in it, and no media crosses the balancer.
fn expect_leak_shown(r: &CallReport) {
    assert_eq!(r.registered, [true, true], "registration through the VIP");
    for (i, u) in USERS.iter().enumerate() {
        let c = &r.captures[i];
        // At least the 200 to its REGISTER (in snat the callee receives nothing else).
        assert!(
            !c.sip_received.is_empty(),
            "{u}: no SIP message decoded in {} frames",
            c.frames
        );
        assert!(
            !c.leaks.is_empty(),
            "{u}: the checker found no backend address in {} SIP messages ({} SDP)",
            c.sip_received.len(),
            c.sdp_received
        );
    }
    for (name, fl) in ["A→B", "B→A"].iter().zip(&r.rtp) {
        assert!(
            fl.delivered() < 0.99,
            "RTP {name} crossed without the ALG: {fl:?}"
        );
    }
}

/// Registration, ringing, answer, the ACK at the callee, hold and resume, BYE.
fn expect_call_signalled(r: &CallReport) {
    assert_eq!(r.registered, [true, true], "registration through the VIP");
    assert!(r.callee_rang && r.caller_heard_ringing, "ringing");
    assert!(r.answered && r.callee_established, "answer");
    assert!(r.ack_at_backend && r.ack_at_callee, "ACK of the 200");
    assert_eq!(
        (r.reinvites_ok, r.reinvites_at_callee),
        (2, 2),
        "hold/resume"
    );
    assert!(r.bye_at_callee && r.bye_answered, "BYE");
}

/// With the ALG: the whole call, media both ways, and no backend address at a phone.
fn expect_full_call(r: &CallReport) {
    expect_call_signalled(r);
    for (name, fl) in ["A→B", "B→A"].iter().zip(&r.rtp) {
        assert!(
            fl.sent >= 200 && fl.delivered() >= 0.99,
            "RTP {name}: {fl:?}"
        );
    }
    for (i, u) in USERS.iter().enumerate() {
        let c = &r.captures[i];
        assert!(
            c.sip_received.len() >= 4 && c.sdp_received >= 1,
            "{u}: the checker decoded only {} SIP messages ({} SDP)",
            c.sip_received.len(),
            c.sdp_received
        );
    }
    let snat: usize = r
        .captures
        .iter()
        .map(|c| c.leaks.iter().filter(|l| l.addr == SNAT_ADDRESS).count())
        .sum();
    assert_eq!(
        r.leaks(),
        0,
        "backend-network addresses reached the phones ({snat} of them the balancer's SNAT address)"
    );
}

#[test]
fn dnat_alg_off_phones_receive_backend_addresses() {
    expect_leak_shown(&run_call("dnat", false));
}

#[test]
fn snat_alg_off_phones_receive_backend_addresses() {
    expect_leak_shown(&run_call("snat", false));
}

#[test]
fn dnat_alg_on_full_call_without_leaks() {
    expect_full_call(&run_call("dnat", true));
}

#[test]
fn snat_alg_on_full_call_without_leaks() {
    expect_full_call(&run_call("snat", true));
}
