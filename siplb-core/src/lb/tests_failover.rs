//! Failover of new calls through the packet path, in process (`sim`): a backend's
//! 503 is acknowledged to it and the INVITE goes to the next backend; a silent
//! backend's INVITE goes on after `timeout_ms`; CANCEL stops the failover; late
//! answers of a backend the call left never reach the caller.

use crate::lb::counters::{DropReason, WorkerCounters};
use crate::lb::failover::resends_pending;
use crate::lb::services::Services;
use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
use crate::lb::{failover_poll, process_resend, Verdict, WorkerCtx};
use crate::wire::ipv4::Ipv4Packet;
use std::net::Ipv4Addr;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const B: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 1, 11),
    Ipv4Addr::new(198, 18, 1, 12),
    Ipv4Addr::new(198, 18, 1, 13),
];

fn config(tries: u32) -> String {
    format!(
        r#"
[[port]]
name = "front"
address = "198.18.0.1/24"
[[port]]
name = "back"
address = "198.18.1.1/24"
[[farm]]
name = "pbx"
vip = "198.18.0.2"
backends = [ {{ address = "198.18.1.11" }}, {{ address = "198.18.1.12" }}, {{ address = "198.18.1.13" }} ]
[farm.failover]
tries = {tries}
timeout_ms = 1000
"#
    )
}

fn request(method: &str, call_id: &str) -> Vec<u8> {
    format!(
        "{method} sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:alice@198.18.0.10>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn response(code: u16, call_id: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport=5060;received=198.18.0.10\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>;tag=b{code}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

struct Bed {
    svc: Services,
    mem: SimMemory,
}

impl Bed {
    fn new(tries: u32) -> Bed {
        let bed = Bed {
            svc: sim::services(&config(tries)),
            mem: SimMemory::new(1 << 12),
        };
        let t = bed.mem.tables();
        t.neighbours.learn(CLIENT, host_mac(CLIENT), 0, 1);
        for b in B {
            t.neighbours.learn(b, host_mac(b), 1, 1);
        }
        bed
    }

    fn run(&self, w: &mut WorkerCtx<'_>, port: u8, src: Ipv4Addr, dst: Ipv4Addr, p: &[u8]) -> Sent {
        let mut f = sim::udp_frame(port_mac(port), (src, 5060), (dst, 5060), p);
        let v = sim::run(&self.svc, &self.mem.tables(), w, &mut f, port, 100);
        Sent::of(v, &f)
    }

    fn client_sends(&self, w: &mut WorkerCtx<'_>, p: &[u8]) -> Sent {
        self.run(w, 0, CLIENT, VIP, p)
    }

    fn backend_sends(&self, w: &mut WorkerCtx<'_>, i: usize, p: &[u8]) -> Sent {
        self.run(w, 1, B[i], CLIENT, p)
    }

    /// The held requests queued for sending again, as they leave.
    fn resends(&self, w: &mut WorkerCtx<'_>) -> Vec<Sent> {
        let t = self.mem.tables();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        while let Some((v, _)) = process_resend(&self.svc, &t, w, &mut buf, 100) {
            out.push(Sent::of(v, &buf[..w.out_len]));
        }
        out
    }

    fn poll(&self, w: &mut WorkerCtx<'_>) {
        for _ in 0..4 {
            failover_poll(&self.svc, &self.mem.tables(), w, 100);
        }
    }
}

/// A frame that left: its verdict, source, destination and SIP text.
#[derive(Debug)]
struct Sent {
    verdict: Verdict,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sip: String,
}

impl Sent {
    fn of(verdict: Verdict, f: &[u8]) -> Sent {
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        Sent {
            verdict,
            src: ip.src(),
            dst: ip.dst(),
            sip: String::from_utf8_lossy(&f[42..]).into_owned(),
        }
    }

    fn backend(&self) -> usize {
        assert_eq!(self.verdict, Verdict::Forward(1), "{self:?}");
        B.iter().position(|b| *b == self.dst).expect("a backend")
    }
}

fn slot(bed: &Bed, i: usize) -> usize {
    usize::from(bed.svc.farms[0].backends[i].slot)
}

#[test]
fn a_503_is_acknowledged_to_its_backend_and_the_invite_goes_to_the_next() {
    let bed = Bed::new(3);
    let counters = Box::<WorkerCounters>::default();
    let mut w = sim::worker(&counters);
    let first = bed.client_sends(&mut w, &request("INVITE", "c1")).backend();
    // The failure: acknowledged to its backend, from the client, and not passed on.
    let ack = bed.backend_sends(&mut w, first, &response(503, "c1"));
    assert_eq!(ack.backend(), first);
    assert_eq!(ack.src, CLIENT);
    assert!(ack.sip.starts_with("ACK sip:bob@198.18.1.1"), "{}", ack.sip);
    assert!(
        ack.sip.contains("To: <sip:bob@siplb.test>;tag=b503\r\n"),
        "{}",
        ack.sip
    );
    assert!(ack.sip.contains("CSeq: 1 ACK\r\n"), "{}", ack.sip);
    // The INVITE, as the client sent it, goes to another backend.
    let again = bed.resends(&mut w);
    assert_eq!(again.len(), 1);
    let second = again[0].backend();
    assert_ne!(second, first);
    assert!(
        again[0].sip.starts_with("INVITE sip:bob@198.18.1.1"),
        "{}",
        again[0].sip
    );
    // Its answer reaches the caller; the client's ACK follows the call there.
    let ok = bed.backend_sends(&mut w, second, &response(200, "c1"));
    assert_eq!((ok.verdict, ok.dst), (Verdict::Forward(0), CLIENT));
    let mut ack2 = request("ACK", "c1");
    ack2.splice(
        ack2.windows(5).position(|x| x == b"To: <").unwrap()..,
        b"To: <sip:bob@siplb.test>;tag=b200\r\nCall-ID: c1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            .iter()
            .copied(),
    );
    assert_eq!(bed.client_sends(&mut w, &ack2).backend(), second);
    let c = &counters.backends;
    assert_eq!(c[slot(&bed, first)].failover_answers.get(), 1);
    assert_eq!(c[slot(&bed, second)].failover_to.get(), 1);
    assert_eq!(counters.failover_acks.get(), 1);
    assert_eq!(bed.mem.tables().held.held(), 0, "the 200 ends the hold");
}

#[test]
fn a_silent_backend_is_left_after_the_timeout_and_its_late_answers_dropped() {
    let bed = Bed::new(3);
    let counters = Box::<WorkerCounters>::default();
    let mut w = sim::worker(&counters);
    let first = bed.client_sends(&mut w, &request("INVITE", "c2")).backend();
    w.now_ms = 999;
    bed.poll(&mut w);
    assert!(!resends_pending(&w), "not due before timeout_ms");
    w.now_ms = 1000;
    bed.poll(&mut w);
    let again = bed.resends(&mut w);
    assert_eq!(again.len(), 1);
    let second = again[0].backend();
    assert_ne!(second, first);
    assert_eq!(
        counters.backends[slot(&bed, first)].failover_timeouts.get(),
        1
    );
    // The slow backend wakes up: its ringing and its failure stay away from the
    // caller (the failure is acknowledged to it).
    let late = bed.backend_sends(&mut w, first, &response(180, "c2"));
    assert_eq!(late.verdict, Verdict::Drop(DropReason::FailoverLate));
    assert_eq!(
        bed.backend_sends(&mut w, first, &response(486, "c2"))
            .backend(),
        first
    );
    // The new backend answers in time: no further failover.
    let ringing = bed.backend_sends(&mut w, second, &response(180, "c2"));
    assert_eq!(ringing.verdict, Verdict::Forward(0));
    w.now_ms = 5000;
    bed.poll(&mut w);
    assert!(!resends_pending(&w));
}

#[test]
fn cancel_tries_and_other_answers_end_the_failover() {
    let bed = Bed::new(2);
    let counters = Box::<WorkerCounters>::default();
    let mut w = sim::worker(&counters);
    // CANCEL first: the backend's failure goes to the caller.
    let b = bed.client_sends(&mut w, &request("INVITE", "c3")).backend();
    assert_eq!(
        bed.client_sends(&mut w, &request("CANCEL", "c3")).backend(),
        b
    );
    assert_eq!(
        bed.backend_sends(&mut w, b, &response(503, "c3")).verdict,
        Verdict::Forward(0)
    );
    assert!(!resends_pending(&w));
    // tries = 2: the second failure goes to the caller.
    let b = bed.client_sends(&mut w, &request("INVITE", "c4")).backend();
    bed.backend_sends(&mut w, b, &response(500, "c4"));
    let b2 = bed.resends(&mut w)[0].backend();
    let last = bed.backend_sends(&mut w, b2, &response(503, "c4"));
    assert_eq!((last.verdict, last.dst), (Verdict::Forward(0), CLIENT));
    assert_eq!(counters.failover_exhausted.get(), 1);
    // A failure not in `on` (486) is the caller's.
    let b = bed.client_sends(&mut w, &request("INVITE", "c5")).backend();
    assert_eq!(
        bed.backend_sends(&mut w, b, &response(486, "c5")).verdict,
        Verdict::Forward(0)
    );
    assert!(!resends_pending(&w));
    assert_eq!(bed.mem.tables().held.held(), 0);
}

#[test]
fn without_failover_nothing_is_held() {
    let bed = Bed::new(1);
    let counters = Box::<WorkerCounters>::default();
    let mut w = sim::worker(&counters);
    let b = bed.client_sends(&mut w, &request("INVITE", "c6")).backend();
    assert_eq!(bed.mem.tables().held.held(), 0);
    assert_eq!(
        bed.backend_sends(&mut w, b, &response(503, "c6")).verdict,
        Verdict::Forward(0)
    );
}

#[test]
fn a_call_goes_through_every_backend_in_turn() {
    let bed = Bed::new(3);
    let counters = Box::<WorkerCounters>::default();
    let mut w = sim::worker(&counters);
    for n in 0..30 {
        let id = format!("chain{n}");
        w.now_ms = 10_000 * n;
        let first = bed.client_sends(&mut w, &request("INVITE", &id)).backend();
        bed.backend_sends(&mut w, first, &response(503, &id));
        let second = bed.resends(&mut w)[0].backend();
        // The client's retransmission follows the call.
        assert_eq!(
            bed.client_sends(&mut w, &request("INVITE", &id)).backend(),
            second
        );
        w.now_ms += 1000;
        bed.poll(&mut w);
        let again = bed.resends(&mut w);
        assert_eq!(again.len(), 1, "{id}");
        let third = again[0].backend();
        assert!(third != first && third != second);
        assert_eq!(
            bed.client_sends(&mut w, &request("INVITE", &id)).backend(),
            third
        );
        let ok = bed.backend_sends(&mut w, third, &response(200, &id));
        assert_eq!(ok.verdict, Verdict::Forward(0));
        assert_eq!(bed.mem.tables().held.held(), 0, "{id}");
    }
}

fn register(seq: u32) -> Vec<u8> {
    format!(
        "REGISTER sip:siplb.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKr{seq};rport\r\nFrom: <sip:alice@siplb.test>;tag=r1\r\nTo: <sip:alice@siplb.test>\r\nCall-ID: reg1\r\nCSeq: {seq} REGISTER\r\nContact: <sip:alice@198.18.0.10>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn register_answer(code: u16, seq: u32) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKr{seq};rport=5060\r\nFrom: <sip:alice@siplb.test>;tag=r1\r\nTo: <sip:alice@siplb.test>;tag=reg\r\nCall-ID: reg1\r\nCSeq: {seq} REGISTER\r\nContact: <sip:alice@198.18.0.10>;expires=600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_register_a_registrar_refuses_goes_to_the_next_and_its_refreshes_follow() {
    let bed = Bed::new(3);
    let counters = Box::<WorkerCounters>::default();
    let mut w = sim::worker(&counters);
    let first = bed.client_sends(&mut w, &register(1)).backend();
    // A REGISTER's failure is absorbed: no ACK, nothing to the phone.
    let refused = bed.backend_sends(&mut w, first, &register_answer(503, 1));
    assert_eq!(refused.verdict, Verdict::Consumed);
    let again = bed.resends(&mut w);
    assert_eq!(again.len(), 1);
    let second = again[0].backend();
    assert_ne!(second, first);
    assert!(again[0].sip.starts_with("REGISTER "), "{}", again[0].sip);
    let ok = bed.backend_sends(&mut w, second, &register_answer(200, 1));
    assert_eq!((ok.verdict, ok.dst), (Verdict::Forward(0), CLIENT));
    // The binding is the second registrar's: the refresh goes there.
    assert_eq!(bed.client_sends(&mut w, &register(2)).backend(), second);
    assert_eq!(
        counters.backends[slot(&bed, first)].failover_answers.get(),
        1
    );
    assert_eq!(counters.failover_acks.get(), 0);
}
