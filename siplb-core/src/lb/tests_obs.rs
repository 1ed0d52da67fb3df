//! What the packet path tells operators: each backend's answers by class and their
//! times (`lb::timing`), and which farm a dropped packet was for.

use crate::lb::counters::{Counter, DropReason, WorkerCounters, NO_FARM};
use crate::lb::services::Services;
use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
use crate::lb::timing::LatencyCounters;
use crate::lb::Verdict;
use crate::wire::ipv4::Ipv4Packet;
use std::net::Ipv4Addr;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);

const CONFIG: &str = r#"
[[port]]
name = "front"
address = "198.18.0.1/24"
[[port]]
name = "back"
address = "198.18.1.1/24"
[[farm]]
name = "pbx"
vip = "198.18.0.2"
nat = "dnat"
backends = [ { address = "198.18.1.11" }, { address = "198.18.1.12" } ]
"#;

struct Bed {
    svc: Services,
    mem: SimMemory,
    counters: Box<WorkerCounters>,
}

impl Bed {
    fn new() -> Bed {
        let bed = Bed {
            svc: sim::services(CONFIG),
            mem: SimMemory::new(1 << 12),
            counters: Box::default(),
        };
        let t = bed.mem.tables();
        for (ip, port) in [(CLIENT, 0), (B1, 1), (B2, 1)] {
            t.neighbours.learn(ip, host_mac(ip), port, 1);
        }
        bed
    }

    /// Sends `payload` into `port` at `now_us`; returns the verdict, the frame that
    /// leaves and the farm the worker attributed it to.
    fn send(
        &self,
        port: u8,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        payload: &[u8],
        now_us: u32,
    ) -> (Verdict, Vec<u8>, u8) {
        let mut f = sim::udp_frame(port_mac(port), src, dst, payload);
        let t = self.mem.tables();
        let mut w = sim::worker(&self.counters);
        w.now_us = now_us;
        let v = sim::run(&self.svc, &t, &mut w, &mut f, port, 100);
        (v, f, w.farm)
    }
}

fn request(method: &str, call_id: &str, cseq: u32) -> Vec<u8> {
    format!(
        "{method} sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{cseq};rport\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@198.18.0.10>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn response(code: u16, call_id: &str, cseq: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn count(l: &LatencyCounters) -> u64 {
    l.buckets.iter().map(Counter::get).sum()
}

/// The backend a forwarded frame went to.
fn destination(f: &[u8]) -> Ipv4Addr {
    Ipv4Packet::new_checked(&f[14..]).unwrap().dst()
}

#[test]
fn backends_answers_are_counted_by_class_and_timed() {
    let bed = Bed::new();
    let (v, f, farm) = bed.send(
        0,
        (CLIENT, 5060),
        (VIP, 5060),
        &request("INVITE", "c1", 1),
        1_000,
    );
    assert_eq!((v, farm), (Verdict::Forward(1), 0));
    let b = destination(&f);
    // A retransmission: times count from the first send.
    bed.send(
        0,
        (CLIENT, 5060),
        (VIP, 5060),
        &request("INVITE", "c1", 1),
        500_000,
    );
    for (code, at) in [(100, 3_000), (180, 5_000), (503, 1_201_000)] {
        let (v, _, farm) = bed.send(
            1,
            (b, 5060),
            (CLIENT, 5060),
            &response(code, "c1", "1 INVITE"),
            at,
        );
        assert_eq!((v, farm), (Verdict::Forward(0), 0), "{code}");
    }
    // An OPTIONS answered at once, and an answer nobody asked for (not timed).
    bed.send(
        0,
        (CLIENT, 5060),
        (VIP, 5060),
        &request("OPTIONS", "o1", 7),
        2_000_000,
    );
    let (_, f, _) = bed.send(
        0,
        (CLIENT, 5060),
        (VIP, 5060),
        &request("OPTIONS", "o1", 7),
        2_000_000,
    );
    let ob = destination(&f);
    bed.send(
        1,
        (ob, 5060),
        (CLIENT, 5060),
        &response(200, "o1", "7 OPTIONS"),
        2_000_400,
    );
    bed.send(
        1,
        (ob, 5060),
        (CLIENT, 5060),
        &response(200, "o1", "8 OPTIONS"),
        2_000_400,
    );

    let slot = |ip: Ipv4Addr| {
        let (farm, i) = bed.svc.backend_at(ip, 5060).unwrap();
        usize::from(farm.backends[i].slot)
    };
    let r = &bed.counters.responses[slot(b)];
    let mut classes = [0u64; 6];
    for ip in [B1, B2] {
        for (k, c) in bed.counters.responses[slot(ip)].classes.iter().enumerate() {
            classes[k] += c.get();
        }
    }
    assert_eq!(classes, [2, 2, 0, 0, 1, 0]);
    assert_eq!(r.service_unavailable.get(), 1);
    let o = &bed.counters.responses[slot(ob)];
    let (first, fin) = (
        count(&r.first_response) + if ob == b { 0 } else { count(&o.first_response) },
        count(&r.invite_final),
    );
    assert_eq!(
        (first, fin),
        (2, 1),
        "the INVITE's 100 and the first OPTIONS' 200"
    );
    // 100 Trying after 2 ms (bucket ≤ 2 ms), the 503 after 1.2 s (≤ 2.048 s).
    assert_eq!(
        r.first_response.buckets[LatencyCounters::bucket(2_000)].get(),
        1
    );
    assert_eq!(
        r.invite_final.buckets[LatencyCounters::bucket(1_200_000)].get(),
        1
    );
    assert_eq!(r.invite_final.sum_us.get(), 1_200_000);
    assert_eq!(bed.counters.request_times_full.get(), 0);
}

#[test]
fn drops_are_attributed_to_the_farm_they_were_for() {
    let bed = Bed::new();
    let (v, _, farm) = bed.send(
        0,
        (CLIENT, 5060),
        (VIP, 5999),
        &request("INVITE", "c2", 1),
        0,
    );
    assert_eq!((v, farm), (Verdict::Drop(DropReason::VipPortClosed), 0));
    let (v, _, farm) = bed.send(
        0,
        (CLIENT, 5060),
        (Ipv4Addr::new(198, 18, 0, 99), 5060),
        &request("INVITE", "c3", 1),
        0,
    );
    assert_eq!((v, farm), (Verdict::Drop(DropReason::NotBalanced), NO_FARM));
    let (v, _, farm) = bed.send(1, (B1, 5060), (CLIENT, 5060), b"not SIP at all\r\n\r\n", 0);
    assert_eq!((v, farm), (Verdict::Drop(DropReason::SipMalformed), 0));
}
