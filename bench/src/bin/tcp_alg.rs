//! Per-segment cost of the SIP ALG on TCP in process, no I/O (issue 12 item 3).
//!
//!   cargo run --release -p bench --bin tcp_alg [-- ROUNDS]
//!
//! One connection through the VIP of a dnat farm with one backend, opened by a SYN and
//! a SYN-ACK, then an INVITE from the client that the ALG grows by 3 bytes (the VIP in
//! its Request-URI and two Routes becomes the backend's address) and a 200 from the
//! backend that it shrinks by 3: both directions carry a correction. Then `process_in`
//! is timed on frames copied from a prebuilt array (as the worker gets them in mbufs):
//!
//! - **data, mapped**: a client segment after the INVITE holding an OPTIONS with no
//!   address to rewrite (framed, parsed, searched; its seq and ack mapped);
//! - **ack, mapped**: the backend's pure ACK (no payload; its ack mapped);
//! - **INVITE, rewritten**: the INVITE's own segment again (a retransmission: framed,
//!   parsed, rewritten, the rest moved, correction recorded again, full checksum);
//!
//! each on the same farm with `alg = false` (per-connection NAT only) for reference.
//! Each round is 100,000 segments; the best and median round are printed.

use siplb_core::lb::sim::{self, host_mac, port_mac, SimMemory};
use siplb_core::lb::{process_in, Verdict};
use siplb_core::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4};
use siplb_core::wire::ipv4;
use siplb_core::wire::tcp::{self, TcpSegment};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const CPORT: u16 = 5070;
const PER_ROUND: usize = 100_000;
const NOW: u32 = 100;

fn config(alg: bool) -> String {
    format!(
        "[[port]]\nname='f'\naddress='198.18.0.1/24'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nnat='dnat'\nalg={alg}\nprotocols=['udp','tcp']\nmedia_ports='40000-40063'\nbackends=[{{address='198.18.1.11'}}]\n"
    )
}

/// An Ethernet + IPv4 + TCP frame with correct checksums.
fn segment(
    to_mac: u8,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 54 + payload.len()];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst(port_mac(to_mac));
        eth.set_src(host_mac(src.0));
        eth.set_ethertype(ETHERTYPE_IPV4);
    }
    let len = (40 + payload.len()) as u16;
    ipv4::write_header(
        &mut f[14..34],
        len,
        1,
        false,
        0,
        64,
        ipv4::PROTO_TCP,
        src.0,
        dst.0,
    );
    tcp::write_header(&mut f[34..54], src.1, dst.1, seq, ack, flags);
    f[54..].copy_from_slice(payload);
    TcpSegment::new_unchecked(&mut f[34..]).fill_checksum(src.0, dst.0);
    f
}

const INVITE: &str = "INVITE sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/TCP 198.18.0.10:5070;branch=z9hG4bKt1;rport\r\nRoute: <sip:198.18.0.2;transport=tcp;lr>\r\nRoute: <sip:198.18.0.2:5060;transport=tcp;lr>\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: tcp-alg@x\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.18.0.10:5070;transport=tcp>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 198.18.0.10:5070;branch=z9hG4bKt1;rport\r\nRecord-Route: <sip:198.18.1.11;transport=tcp;lr>\r\nRecord-Route: <sip:198.18.1.11:5060;transport=tcp;lr>\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\nCall-ID: tcp-alg@x\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@198.18.1.11:5060;transport=tcp>\r\nContent-Length: 0\r\n\r\n";
const OPTIONS: &str = "OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TCP phone.test;branch=z9hG4bKo\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\nCall-ID: tcp-opt@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

/// Best and median ns per segment of `frame` through `process_in` over `rounds`.
fn time(
    alg: bool,
    rounds: usize,
    frame: &[u8],
    in_port: u8,
    setup: &[(Vec<u8>, u8)],
) -> (f64, f64) {
    let cfg = config(alg);
    let svc = sim::services(&cfg);
    let mem = SimMemory::new(1 << 10).with_media(&cfg);
    let t = mem.tables();
    t.neighbours.learn(BACKEND, host_mac(BACKEND), 1, 1);
    t.neighbours.learn(CLIENT, host_mac(CLIENT), 0, 1);
    let counters: Box<siplb_core::lb::counters::WorkerCounters> = Box::default();
    let mut w = sim::worker(&counters);
    let mut mbuf = vec![0u8; 2048];
    for (f, port) in setup {
        mbuf[..f.len()].copy_from_slice(f);
        let v = process_in(&svc, &t, &mut w, &mut mbuf, f.len(), *port, NOW);
        assert!(matches!(v, Verdict::Forward(_)), "set-up: {v:?}");
    }
    let mut pass = || {
        let start = Instant::now();
        let mut sum = 0usize;
        for _ in 0..PER_ROUND {
            mbuf[..frame.len()].copy_from_slice(frame);
            let v = process_in(&svc, &t, &mut w, &mut mbuf, frame.len(), in_port, NOW);
            sum += usize::from(v == Verdict::Forward(1 - in_port)) + w.out_len;
        }
        black_box(sum);
        assert_eq!(sum, PER_ROUND * (1 + w.out_len), "every segment forwarded");
        start.elapsed().as_nanos() as f64 / PER_ROUND as f64
    };
    pass();
    let mut per: Vec<f64> = (0..rounds).map(|_| pass()).collect();
    per.sort_by(f64::total_cmp);
    (per[0], per[rounds / 2])
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(21, |a| a.parse().expect("ROUNDS: a number"));
    let c = (CLIENT, CPORT);
    let (v, b) = ((VIP, 5060), (BACKEND, 5060));
    let (c0, b0) = (1000u32, 5000u32);
    let inv_at = c0 + 1;
    let after = inv_at + INVITE.len() as u32;
    let setup = vec![
        (segment(0, c, v, c0, 0, tcp::SYN, b""), 0),
        (segment(1, b, c, b0, c0 + 1, tcp::SYN | tcp::ACK, b""), 1),
        (
            segment(0, c, v, inv_at, b0 + 1, tcp::ACK, INVITE.as_bytes()),
            0,
        ),
        (
            segment(1, b, c, b0 + 1, after + 3, tcp::ACK, OK.as_bytes()),
            1,
        ),
    ];
    let b_after = b0 + 1 + OK.len() as u32;
    let cases: [(&str, Vec<u8>, u8); 3] = [
        (
            "data, mapped",
            segment(0, c, v, after, b_after - 3, tcp::ACK, OPTIONS.as_bytes()),
            0,
        ),
        (
            "ack, mapped",
            segment(1, b, c, b_after, after + 3, tcp::ACK, b""),
            1,
        ),
        (
            "INVITE, rewritten",
            segment(0, c, v, inv_at, b0 + 1, tcp::ACK, INVITE.as_bytes()),
            0,
        ),
    ];
    println!("ns per segment, best / median of {rounds} rounds of {PER_ROUND}");
    println!(
        "{:<20} {:>17} {:>17}",
        "segment", "alg = true", "alg = false"
    );
    for (name, frame, port) in &cases {
        let on = time(true, rounds, frame, *port, &setup);
        let off = time(false, rounds, frame, *port, &setup);
        println!(
            "{name:<20} {:>7.0} / {:>7.0} {:>7.0} / {:>7.0}",
            on.0, on.1, off.0, off.1
        );
    }
}
