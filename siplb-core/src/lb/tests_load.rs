//! Capacity, priority groups and overload signals through the packet path, in
//! process (`sim`): which backend each new call reaches, and what the client gets
//! when none takes it.

use crate::lb::counters::{DropReason, WorkerCounters};
use crate::lb::services::Services;
use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
use crate::lb::Verdict;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::udp::UdpPacket;
use std::net::Ipv4Addr;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const B: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 1, 11),
    Ipv4Addr::new(198, 18, 1, 12),
    Ipv4Addr::new(198, 18, 1, 13),
];

fn config(backends: &str, farm_extra: &str) -> String {
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
alg = false
{farm_extra}
backends = [ {backends} ]
"#
    )
}

fn invite(call_id: &str) -> Vec<u8> {
    format!(
        "INVITE sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.18.0.10>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn bye(call_id: &str) -> Vec<u8> {
    format!(
        "BYE sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK2;rport\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn response(code: u16, call_id: &str, via_params: &str, extra: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport{via_params}\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

struct Bed {
    svc: Services,
    mem: SimMemory,
    counters: Box<WorkerCounters>,
    /// The workers' millisecond clock.
    now_ms: std::cell::Cell<u64>,
}

impl Bed {
    fn new(cfg: &str) -> Bed {
        let bed = Bed {
            svc: sim::services(cfg),
            mem: SimMemory::new(1 << 12),
            counters: Box::default(),
            now_ms: Default::default(),
        };
        let t = bed.mem.tables();
        t.neighbours.learn(CLIENT, host_mac(CLIENT), 0, 1);
        for b in B {
            t.neighbours.learn(b, host_mac(b), 1, 1);
        }
        bed
    }

    fn send(
        &self,
        port: u8,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        p: &[u8],
    ) -> (Verdict, Vec<u8>) {
        let f = sim::udp_frame(port_mac(port), src, dst, p);
        self.run(port, f)
    }

    /// Runs a frame in at the bed's clock (`now_ms`).
    fn run(&self, port: u8, mut f: Vec<u8>) -> (Verdict, Vec<u8>) {
        let t = self.mem.tables();
        let mut w = sim::worker(&self.counters);
        w.now_ms = self.now_ms.get();
        let v = sim::run(&self.svc, &t, &mut w, &mut f, port, 100);
        (v, f)
    }

    /// Sends a new call's INVITE: the index of the backend it reached, or the frame
    /// that came back to the client.
    fn call(&self, call_id: &str) -> Result<usize, Vec<u8>> {
        let (v, f) = self.send(0, (CLIENT, 5060), (VIP, 5060), &invite(call_id));
        let dst = Ipv4Packet::new_checked(&f[14..]).unwrap().dst();
        match v {
            Verdict::Forward(1) => Ok(B.iter().position(|b| *b == dst).expect("a backend")),
            Verdict::Forward(0) => Err(f),
            v => panic!("{call_id}: {v:?}"),
        }
    }

    fn backend_says(&self, i: usize, msg: &[u8]) {
        let (v, _) = self.send(1, (B[i], 5060), (CLIENT, 5060), msg);
        assert_eq!(v, Verdict::Forward(0));
    }

    fn dialogs(&self, i: usize) -> u32 {
        self.mem
            .tables()
            .load
            .get(self.svc.farms[0].backends[i].slot)
            .view()
            .dialogs
    }
}

/// max_dialogs moves new calls to the next backend of the group, then to the backup
/// group; a BYE frees a place; with every backend full the client gets a 503 with
/// Retry-After, counted.
#[test]
fn full_backends_pass_new_calls_on_and_the_backup_group_takes_the_rest() {
    let bed = Bed::new(&config(
        r#"{ address = "198.18.1.11", max_dialogs = 3 }, { address = "198.18.1.12", max_dialogs = 3 },
           { address = "198.18.1.13", priority = 1, max_dialogs = 2 }"#,
        r#"when_full = "reject"
full_retry_after = 7"#,
    ));
    let mut placed = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..8 {
        let cid = format!("cap{i}@x");
        let b = bed.call(&cid).expect("placed");
        placed[b].push(cid);
    }
    let counts: Vec<usize> = placed.iter().map(Vec::len).collect();
    assert_eq!(counts, [3, 3, 2], "primaries first, the backup after them");
    assert_eq!((bed.dialogs(0), bed.dialogs(1), bed.dialogs(2)), (3, 3, 2));
    // Everything full: a stateless 503 back to the client, from the VIP.
    let reply = bed.call("cap8@x").expect_err("no backend takes it");
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (ip.src(), ip.dst(), u.src_port(), u.dst_port()),
        (VIP, CLIENT, 5060, 5060)
    );
    assert!(u.verify(ip.src(), ip.dst()), "UDP checksum");
    let text = String::from_utf8_lossy(u.payload()).into_owned();
    assert!(text.starts_with("SIP/2.0 503 "), "{text}");
    for want in [
        "\r\nRetry-After: 7\r\n",
        "\r\nCall-ID: cap8@x\r\n",
        "\r\nCSeq: 1 INVITE\r\n",
        ";branch=z9hG4bK1;rport\r\n",
        "\r\nTo: <sip:bob@siplb.test>;tag=slb",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    assert_eq!(bed.counters.farm_full_rejected.get(), 1);
    // The caller's ACK of that 503 goes no further.
    let tag = text
        .split("\r\n")
        .find_map(|l| l.strip_prefix("To: <sip:bob@siplb.test>;tag="))
        .unwrap();
    let ack = String::from_utf8(bye("cap8@x"))
        .unwrap()
        .replace("BYE", "ACK")
        .replace("CSeq: 2", "CSeq: 1")
        .replace(";tag=2", &format!(";tag={tag}"));
    let (v, _) = bed.send(0, (CLIENT, 5060), (VIP, 5060), ack.as_bytes());
    assert_eq!(v, Verdict::Drop(DropReason::FullReplyAck));
    // A primary's BYE answered: its place goes to the next call, a primary again.
    let gone = placed[0][0].clone();
    bed.backend_says(0, &response(200, &gone, "", ""));
    bed.send(0, (CLIENT, 5060), (VIP, 5060), &bye(&gone));
    assert_eq!(bed.dialogs(0), 2);
    assert_eq!(bed.call("cap9@x"), Ok(0));
    let full: u64 = (0..3)
        .map(|i| {
            bed.counters.backends[usize::from(bed.svc.farms[0].backends[i].slot)]
                .full
                .get()
        })
        .sum();
    assert!(full >= 3, "turned away by a full hash choice: {full}");
}

/// A final error and a CANCEL give their units back too; `drop` answers nothing.
#[test]
fn final_errors_and_cancel_end_the_count_and_drop_mode_sends_nothing() {
    let bed = Bed::new(&config(
        r#"{ address = "198.18.1.11", max_dialogs = 1 }"#,
        r#"when_full = "drop""#,
    ));
    assert_eq!(bed.call("e1@x"), Ok(0));
    let (v, _) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("e2@x"));
    assert_eq!(v, Verdict::Drop(DropReason::FarmFull));
    bed.backend_says(0, &response(486, "e1@x", "", ""));
    assert_eq!(bed.dialogs(0), 0);
    assert_eq!(bed.call("e3@x"), Ok(0));
    let cancel = String::from_utf8(invite("e3@x"))
        .unwrap()
        .replace("INVITE", "CANCEL");
    bed.send(0, (CLIENT, 5060), (VIP, 5060), cancel.as_bytes());
    assert_eq!(bed.dialogs(0), 0);
    assert_eq!(bed.counters.farm_full_rejected.get(), 0);
}

/// A 503 with Retry-After takes a backend out of new-call selection; an `oc` value
/// on a response's top Via sheds that share of its new calls to the other.
#[test]
fn retry_after_holds_a_backend_and_oc_sheds_its_share() {
    let bed = Bed::new(&config(
        r#"{ address = "198.18.1.11" }, { address = "198.18.1.12" }"#,
        "",
    ));
    let first: Vec<usize> = (0..400)
        .map(|i| bed.call(&format!("a{i}@x")).unwrap())
        .collect();
    let to_b1 = first.iter().filter(|b| **b == 1).count();
    assert!((160..240).contains(&to_b1), "about half before: {to_b1}");
    // Backend 0 answers one of its calls 503 with Retry-After: no new call for it.
    let c = (0..400).find(|i| first[*i] == 0).unwrap();
    bed.backend_says(
        0,
        &response(503, &format!("a{c}@x"), "", "Retry-After: 30\r\n"),
    );
    let held: Vec<usize> = (0..200)
        .map(|i| bed.call(&format!("h{i}@x")).unwrap())
        .collect();
    assert!(held.iter().all(|b| *b == 1), "held: {held:?}");
    assert!(
        bed.counters.backends[usize::from(bed.svc.farms[0].backends[0].slot)]
            .held
            .get()
            > 50
    );

    // Another bed: backend 1 says oc=60 (valid 10 s): it keeps 40 % of its half.
    let bed = Bed::new(&config(
        r#"{ address = "198.18.1.11" }, { address = "198.18.1.12" }"#,
        "",
    ));
    let c = (0..64)
        .map(|i| format!("o{i}@x"))
        .find(|c| bed.call(c) == Ok(1))
        .unwrap();
    bed.backend_says(
        1,
        &response(180, &c, ";oc=60;oc-validity=10000;oc-seq=1.0", ""),
    );
    let n = 2000;
    let to_b1 = (0..n)
        .filter(|i| bed.call(&format!("s{i}@x")) == Ok(1))
        .count();
    let share = to_b1 as f64 / n as f64;
    println!(
        "oc=60 on backend 1 of 2: {to_b1} of {n} new calls reached it ({share:.3}; 0.200 expected)"
    );
    assert!(
        (0.17..0.23).contains(&share),
        "backend 1's share with oc=60: {share}"
    );
}

/// The ICMP port unreachable backend `i`'s kernel sends when `invite` (the frame the
/// balancer sent it) finds its port closed: to the sender, quoting the datagram.
fn port_unreachable(i: usize, invite: &[u8]) -> Vec<u8> {
    let quoted = &invite[14..14 + 28];
    let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let c = crate::wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 14 + 20];
    {
        let mut eth = crate::wire::ethernet::EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst(port_mac(1));
        eth.set_src(host_mac(B[i]));
        eth.set_ethertype(crate::wire::ethernet::ETHERTYPE_IPV4);
    }
    let client = Ipv4Packet::new_checked(&invite[14..]).unwrap().src();
    crate::wire::ipv4::write_header(
        &mut f[14..34],
        (20 + icmp.len()) as u16,
        1,
        false,
        0,
        64,
        crate::wire::ipv4::PROTO_ICMP,
        B[i],
        client,
    );
    f.extend_from_slice(&icmp);
    f
}

/// Backend index the farm's Maglev table gives a Call-ID.
fn maglev_choice(bed: &Bed, call_id: &str) -> usize {
    bed.svc.farms[0]
        .pick(crate::hash::hash64(call_id.as_bytes()))
        .unwrap()
}

/// Passive health: a backend's ICMP port unreachable marks it down at once (with
/// `passive.icmp`), and so do unanswered calls past the window; without active checks
/// a mark lapses after `down_ms`.
#[test]
fn port_unreachable_and_unanswered_calls_mark_a_backend_down() {
    let two = r#"{ address = "198.18.1.11" }, { address = "198.18.1.12" }"#;
    let bed = Bed::new(&config(two, "passive = { icmp = true, down_ms = 5000 }"));
    let (c, sent) = (0..64)
        .map(|i| format!("i{i}@x"))
        .find_map(|c| {
            let (v, f) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite(&c));
            let dst = Ipv4Packet::new_checked(&f[14..]).unwrap().dst();
            (v == Verdict::Forward(1) && dst == B[0]).then_some((c, f))
        })
        .unwrap();
    bed.run(1, port_unreachable(0, &sent));
    let load = |bed: &Bed| {
        bed.mem
            .tables()
            .load
            .get(bed.svc.farms[0].backends[0].slot)
            .view()
    };
    assert_eq!(
        (load(&bed).passive_down_ms, load(&bed).passive_marks),
        (Some(0), 1)
    );
    assert!((0..100).all(|i| bed.call(&format!("after{i}@x")) == Ok(1)));
    // The INVITE it never answered moves when the caller resends it.
    assert_eq!(bed.call(&c), Ok(1));
    // Without active checks the mark lapses after down_ms.
    bed.now_ms.set(5000);
    assert!((0..100).any(|i| bed.call(&format!("later{i}@x")) == Ok(0)));

    // Unanswered: 3 calls for backend 0, none answered; after the 100 ms window the
    // next one for it marks it down and goes to backend 1.
    let bed = Bed::new(&config(
        two,
        "passive = { unanswered = 3, window_ms = 100, down_ms = 5000 }",
    ));
    let for_b0: Vec<String> = (0..200)
        .map(|i| format!("u{i}@x"))
        .filter(|c| maglev_choice(&bed, c) == 0)
        .take(5)
        .collect();
    for (k, c) in for_b0[..3].iter().enumerate() {
        bed.now_ms.set(10 * k as u64);
        assert_eq!(bed.call(c), Ok(0));
    }
    bed.now_ms.set(99);
    assert_eq!(bed.call(&for_b0[3]), Ok(0), "within the window");
    assert_eq!(load(&bed).passive_marks, 0);
    bed.now_ms.set(120);
    assert_eq!(
        bed.call(&for_b0[4]),
        Ok(1),
        "past it: marked down, moved on"
    );
    assert_eq!(
        (load(&bed).passive_down_ms, load(&bed).passive_marks),
        (Some(120), 1)
    );
    // Any message from it ends the unanswered run; the mark stays until down_ms.
    bed.backend_says(0, &response(180, &for_b0[0], "", ""));
    bed.now_ms.set(130);
    let c = (0..200)
        .map(|i| format!("w{i}@x"))
        .find(|c| maglev_choice(&bed, c) == 0)
        .unwrap();
    assert_eq!(bed.call(&c), Ok(1));
}
