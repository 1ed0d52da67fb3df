//! The SIP ALG on TCP, in process: a connection through the VIP, an INVITE whose
//! rewrite grows it, answers that shrink, and the sequence numbers, acknowledgments,
//! SACK edges and checksums of every segment after them, both ways, in dnat and snat;
//! retransmissions, messages the segment holds only in part, a segment that would
//! outgrow the MTU, several messages in one segment, SDP relayed onto the media path;
//! and nothing changed with the ALG off.

use crate::lb::counters::WorkerCounters;
use crate::lb::services::Services;
use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
use crate::lb::tests_media::media_of;
use crate::lb::{TcpAlgSkip, Verdict};
use crate::wire::checksum;
use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::{self, TcpSegment};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
/// Four digits, as the SNAT ports of the simulation: the snat rewrites change lengths
/// by less than the VIP's and backend's do.
const CPORT: u16 = 5070;
/// Initial sequence numbers of the client and the backend.
const C_ISN: u32 = 1000;
const B_ISN: u32 = 0xffff_ff00; // wraps during the test

fn config(nat: &str, alg: bool) -> String {
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
nat = "{nat}"
alg = {alg}
protocols = ["udp", "tcp"]
media_ports = "40000-40063"
backends = [ {{ address = "198.18.1.11" }} ]
"#
    )
}

/// An Ethernet + IPv4 + TCP frame, checksums correct; `sack` blocks go in the
/// options (after two NOPs).
#[allow(clippy::too_many_arguments)]
fn segment(
    to_mac: MacAddr,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    sack: &[(u32, u32)],
    payload: &[u8],
) -> Vec<u8> {
    let opts = if sack.is_empty() {
        0
    } else {
        4 + 8 * sack.len()
    };
    let hl = 20 + opts;
    let mut f = vec![0u8; 14 + 20 + hl + payload.len()];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst(to_mac);
        eth.set_src(host_mac(src.0));
        eth.set_ethertype(ETHERTYPE_IPV4);
    }
    ipv4::write_header(
        &mut f[14..34],
        (20 + hl + payload.len()) as u16,
        0x4244,
        false,
        0,
        64,
        ipv4::PROTO_TCP,
        src.0,
        dst.0,
    );
    tcp::write_header(&mut f[34..54], src.1, dst.1, seq, ack, flags);
    f[34 + 12] = ((hl / 4) as u8) << 4;
    if !sack.is_empty() {
        f[54..58].copy_from_slice(&[1, 1, 5, (2 + 8 * sack.len()) as u8]);
        for (i, (l, r)) in sack.iter().enumerate() {
            f[58 + 8 * i..62 + 8 * i].copy_from_slice(&l.to_be_bytes());
            f[62 + 8 * i..66 + 8 * i].copy_from_slice(&r.to_be_bytes());
        }
    }
    f[34 + hl..].copy_from_slice(payload);
    TcpSegment::new_unchecked(&mut f[34..]).fill_checksum(src.0, dst.0);
    f
}

/// A forwarded segment, its checksums verified by a full recompute.
#[derive(Debug)]
struct Out {
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    sack: Vec<u32>,
    payload: Vec<u8>,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

fn read(f: &[u8]) -> Out {
    let ip = Ipv4Packet::new_checked(&f[14..]).expect("IPv4 header");
    assert_eq!(checksum::checksum(ip.header()), 0, "IPv4 header checksum");
    assert_eq!(14 + ip.total_len(), f.len(), "IPv4 total length");
    let b = ip.payload();
    let t = TcpSegment::new_checked(b).expect("TCP header");
    assert!(
        t.verify(ip.src(), ip.dst()),
        "TCP checksum (full recompute)"
    );
    let hl = t.header_len();
    let mut sack = Vec::new();
    if hl > 20 {
        let n = (usize::from(b[23]) - 2) / 4;
        sack = (0..n)
            .map(|i| u32::from_be_bytes(b[24 + 4 * i..28 + 4 * i].try_into().unwrap()))
            .collect();
    }
    Out {
        src: (ip.src(), t.src_port()),
        dst: (ip.dst(), t.dst_port()),
        seq: t.seq(),
        ack: t.ack(),
        sack,
        payload: b[hl..].to_vec(),
    }
}

struct Bed {
    svc: Services,
    mem: SimMemory,
    counters: Box<WorkerCounters>,
}

impl Bed {
    fn new(nat: &str, alg: bool) -> Bed {
        let cfg = config(nat, alg);
        let bed = Bed {
            svc: sim::services(&cfg),
            mem: SimMemory::new(1 << 10).with_media(&cfg),
            counters: Box::default(),
        };
        let t = bed.mem.tables();
        t.neighbours.learn(BACKEND, host_mac(BACKEND), 1, 1);
        t.neighbours.learn(CLIENT, host_mac(CLIENT), 0, 1);
        bed
    }

    fn run(&self, mut f: Vec<u8>, port: u8) -> Out {
        let t = self.mem.tables();
        let mut w = sim::worker(&self.counters);
        let v = sim::run(&self.svc, &t, &mut w, &mut f, port, 100);
        assert_eq!(v, Verdict::Forward(1 - port), "{v:?}");
        read(&f)
    }

    /// A client segment to the VIP.
    fn client_sends(&self, seq: u32, ack: u32, sack: &[(u32, u32)], payload: &[u8]) -> Out {
        let flags = tcp::ACK | if payload.is_empty() { 0 } else { 0x08 };
        let f = segment(
            port_mac(0),
            (CLIENT, CPORT),
            (VIP, 5060),
            seq,
            ack,
            flags,
            sack,
            payload,
        );
        self.run(f, 0)
    }

    /// A backend segment to `to` (the client in dnat, its SNAT flow in snat).
    fn backend_sends(
        &self,
        to: (Ipv4Addr, u16),
        seq: u32,
        ack: u32,
        sack: &[(u32, u32)],
        payload: &[u8],
    ) -> Out {
        let flags = tcp::ACK | if payload.is_empty() { 0 } else { 0x08 };
        let f = segment(
            port_mac(1),
            (BACKEND, 5060),
            to,
            seq,
            ack,
            flags,
            sack,
            payload,
        );
        self.run(f, 1)
    }

    fn skipped(&self, why: TcpAlgSkip) -> u64 {
        self.counters.tcp_alg_skipped[why as usize].get()
    }

    fn skipped_total(&self) -> u64 {
        self.counters.tcp_alg_skipped.iter().map(|c| c.get()).sum()
    }

    /// Opens the connection; returns where the backend sees the client.
    fn handshake(&self) -> (Ipv4Addr, u16) {
        let syn = segment(
            port_mac(0),
            (CLIENT, CPORT),
            (VIP, 5060),
            C_ISN,
            0,
            tcp::SYN,
            &[],
            b"",
        );
        let out = self.run(syn, 0);
        assert_eq!(out.dst, (BACKEND, 5060));
        assert_eq!(out.seq, C_ISN);
        let client_seen = out.src;
        let syn_ack = segment(
            port_mac(1),
            (BACKEND, 5060),
            client_seen,
            B_ISN,
            C_ISN + 1,
            tcp::SYN | tcp::ACK,
            &[],
            b"",
        );
        let out = self.run(syn_ack, 1);
        assert_eq!(out.src, (VIP, 5060));
        assert_eq!(out.dst, (CLIENT, CPORT));
        assert_eq!((out.seq, out.ack), (B_ISN, C_ISN + 1));
        let out = self.client_sends(C_ISN + 1, B_ISN.wrapping_add(1), &[], b"");
        assert_eq!((out.seq, out.ack), (C_ISN + 1, B_ISN.wrapping_add(1)));
        client_seen
    }
}

/// A client's INVITE over TCP: the VIP in its Request-URI and two Routes becomes the
/// backend's address (one byte longer each), and in snat its Via and Contact name
/// the SNAT flow.
fn invite(cseq: u32) -> String {
    format!(
        "INVITE sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/TCP 198.18.0.10:{CPORT};branch=z9hG4bKt{cseq};rport\r\nRoute: <sip:198.18.0.2;transport=tcp;lr>\r\nRoute: <sip:198.18.0.2:5060;transport=tcp;lr>\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: tcp-alg@x\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@198.18.0.10:{CPORT};transport=tcp>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The backend's answer naming itself in two Record-Routes and Contact (one byte
/// shorter each as the VIP); `via` is the top Via's sent-by as the backend received it.
fn ok(via: &str, cseq: u32) -> String {
    format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP {via};branch=z9hG4bKt{cseq};rport\r\nRecord-Route: <sip:198.18.1.11;transport=tcp;lr>\r\nRecord-Route: <sip:198.18.1.11:5060;transport=tcp;lr>\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\nCall-ID: tcp-alg@x\r\nCSeq: {cseq} INVITE\r\nContact: <sip:bob@198.18.1.11:5060;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A message with no address of any rule: it moves, never changes.
const OPTIONS: &str = "OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TCP phone.test;branch=z9hG4bKo\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\nCall-ID: tcp-opt@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

/// Runs the whole exchange; returns the two directions' length changes (client's
/// INVITE, backend's 200).
fn exchange(nat: &str, alg: bool) -> (isize, isize) {
    let bed = Bed::new(nat, alg);
    let seen = bed.handshake();
    let b1 = B_ISN.wrapping_add(1);
    let mut c = C_ISN + 1;

    // A keep-alive ping, then the INVITE: rewritten (when the ALG is on), growing.
    let ping = bed.client_sends(c, b1, &[], b"\r\n\r\n");
    assert_eq!((ping.seq, ping.payload.as_slice()), (c, &b"\r\n\r\n"[..]));
    c += 4;
    let inv = invite(1);
    let out = bed.client_sends(c, b1, &[], inv.as_bytes());
    let d1 = out.payload.len() as isize - inv.len() as isize;
    assert_eq!(
        out.seq, c,
        "the rewritten segment keeps its sequence number"
    );
    assert_eq!(out.ack, b1);
    let text = out.text();
    if alg {
        assert!(d1 > 0, "the INVITE grows: {d1}");
        assert!(
            text.starts_with("INVITE sip:bob@198.18.1.11 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Route: <sip:198.18.1.11;transport=tcp;lr>\r\n"),
            "{text}"
        );
        if nat == "snat" {
            assert!(
                !text.contains("198.18.0.10"),
                "the client reached the backend:\n{text}"
            );
            let flow = format!("{}:{}", seen.0, seen.1);
            assert!(
                text.contains(&format!("Via: SIP/2.0/TCP {flow};")),
                "{text}"
            );
            assert!(
                text.contains(&format!("Contact: <sip:alice@{flow};")),
                "{text}"
            );
        } else {
            assert!(
                text.contains(&format!("Contact: <sip:alice@198.18.0.10:{CPORT};")),
                "{text}"
            );
        }
    } else {
        assert_eq!(text, inv, "the ALG is off");
    }
    let inv_at = c;
    c += inv.len() as u32;

    // The next client segment moves by d1; its bytes do not change.
    let out = bed.client_sends(c, b1, &[], OPTIONS.as_bytes());
    assert_eq!(out.seq as isize, c as isize + d1);
    assert_eq!(out.text(), OPTIONS);
    let opt_at = c;
    c += OPTIONS.len() as u32;

    // The backend acknowledges in its numbering (with a SACK block for the OPTIONS
    // as if the INVITE were lost); the client gets its own.
    let ack_b = (c as isize + d1) as u32;
    let sack_b = ((opt_at as isize + d1) as u32, ack_b);
    let out = bed.backend_sends(seen, b1, ack_b, &[sack_b], b"");
    assert_eq!(out.ack, c, "the backend's ack, in the client's numbering");
    assert_eq!(
        out.sack,
        [opt_at, c],
        "SACK edges, in the client's numbering"
    );
    assert_eq!(out.seq, b1);
    // An older ack (of the ping alone) is not moved: it lies before the rewrite.
    let out = bed.backend_sends(seen, b1, inv_at, &[], b"");
    assert_eq!(out.ack, inv_at);

    // The backend's 200 OK: its address becomes the VIP's, shrinking.
    let backend_via = if nat == "snat" {
        format!("{}:{}", seen.0, seen.1)
    } else {
        format!("198.18.0.10:{CPORT}")
    };
    let answer = ok(&backend_via, 1);
    let out = bed.backend_sends(seen, b1, ack_b, &[], answer.as_bytes());
    let d2 = out.payload.len() as isize - answer.len() as isize;
    assert_eq!(out.seq, b1);
    assert_eq!(out.ack, c);
    let text = out.text();
    if alg {
        assert!(d2 < 0, "the 200 shrinks: {d2}");
        assert_eq!(text.matches("198.18.0.2").count(), 3, "{text}");
        assert!(
            !text.contains("198.18.1."),
            "a back-side address leaked:\n{text}"
        );
        assert!(
            text.contains("Record-Route: <sip:198.18.0.2;transport=tcp;lr>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Contact: <sip:bob@198.18.0.2:5060;transport=tcp>\r\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("Via: SIP/2.0/TCP 198.18.0.10:{CPORT};")),
            "{text}"
        );
    } else {
        assert_eq!(text, answer);
    }
    let mut b = b1.wrapping_add(answer.len() as u32);

    // The backend's next segment moves by d2, across the wrap of sequence space.
    let out = bed.backend_sends(seen, b, ack_b, &[], OPTIONS.as_bytes());
    assert_eq!(out.seq, (b as i64 + d2 as i64) as u32);
    assert_eq!(out.text(), OPTIONS);
    b = b.wrapping_add(OPTIONS.len() as u32);

    // The client acknowledges everything in its numbering; the backend gets its own.
    let ack_c = (b as i64 + d2 as i64) as u32;
    let b_opt = b1.wrapping_add(answer.len() as u32);
    let sack_c = ((b_opt as i64 + d2 as i64) as u32, ack_c);
    let out = bed.client_sends(c, ack_c, &[sack_c], b"");
    assert_eq!(out.ack, b, "the client's ack, in the backend's numbering");
    assert_eq!(
        out.sack,
        [b_opt, b],
        "SACK edges, in the backend's numbering"
    );
    assert_eq!(out.seq as isize, c as isize + d1);

    // Retransmissions: the ping maps as before the rewrite, the INVITE is rewritten
    // again at the same place (and counted once in the correction), the OPTIONS
    // after it moves by d1 as the first time.
    let out = bed.client_sends(C_ISN + 1, ack_c, &[], b"\r\n\r\n");
    assert_eq!(out.seq, C_ISN + 1);
    let out = bed.client_sends(inv_at, ack_c, &[], inv.as_bytes());
    assert_eq!(out.seq, inv_at);
    assert_eq!(out.payload.len() as isize, inv.len() as isize + d1);
    let out = bed.client_sends(opt_at, ack_c, &[], OPTIONS.as_bytes());
    assert_eq!(out.seq as isize, opt_at as isize + d1);
    let out = bed.backend_sends(seen, b1, ack_b, &[], answer.as_bytes());
    assert_eq!(
        (out.seq, out.payload.len() as isize),
        (b1, answer.len() as isize + d2)
    );

    // A second INVITE rewritten later in the stream: data between the two rewrites
    // maps by the first's offset, data after the second by both.
    let inv2 = invite(2);
    let out = bed.client_sends(c, ack_c, &[], inv2.as_bytes());
    assert_eq!(out.seq as isize, c as isize + d1);
    let d3 = out.payload.len() as isize - inv2.len() as isize;
    let out = bed.client_sends(opt_at, ack_c, &[], OPTIONS.as_bytes());
    assert_eq!(
        out.seq as isize,
        opt_at as isize + d1,
        "between the rewrites"
    );
    let after = c + inv2.len() as u32;
    let out = bed.client_sends(after, ack_c, &[], b"\r\n");
    assert_eq!(out.seq as isize, after as isize + d1 + d3, "after both");
    let out = bed.backend_sends(seen, b, (after as isize + d1 + d3 + 2) as u32, &[], b"");
    assert_eq!(out.ack, after + 2);

    let c = &bed.counters;
    if alg {
        assert_eq!(d3, d1);
        // INVITE, 200, retransmitted INVITE and 200, second INVITE.
        assert_eq!(c.alg_rewritten.get(), 5);
        assert!(c.tcp_seq_mapped.get() >= 12, "{}", c.tcp_seq_mapped.get());
    } else {
        assert_eq!((d1, d2, d3), (0, 0, 0));
        assert_eq!(c.alg_rewritten.get(), 0);
        assert_eq!(c.tcp_seq_mapped.get(), 0);
    }
    assert_eq!(bed.skipped_total(), 0);
    assert_eq!(c.total_drops(), 0);
    (d1, d2)
}

#[test]
fn dnat_rewrites_sip_over_tcp_and_maps_every_segment_after_it() {
    let (d1, d2) = exchange("dnat", true);
    // Request-URI and two Routes: "198.18.0.2" becomes "198.18.1.11".
    assert_eq!(d1, 3);
    // Two Record-Routes and Contact: "198.18.1.11" becomes "198.18.0.2".
    assert_eq!(d2, -3);
}

#[test]
fn snat_rewrites_sip_over_tcp_and_maps_every_segment_after_it() {
    let (d1, d2) = exchange("snat", true);
    // "198.18.0.10:5070" becomes the SNAT flow "198.18.1.1:1024" in the INVITE's Via
    // and Contact, and back in the 200's Via.
    assert_eq!(d1, 3 - 2);
    assert_eq!(d2, -3 + 1);
}

#[test]
fn with_the_alg_off_tcp_passes_untouched() {
    for nat in ["dnat", "snat"] {
        assert_eq!(exchange(nat, false), (0, 0), "{nat}");
    }
}

#[test]
fn a_message_split_over_segments_passes_untouched_and_is_counted() {
    let bed = Bed::new("dnat", true);
    bed.handshake();
    let b1 = B_ISN.wrapping_add(1);
    let inv = invite(1);
    let (head, tail) = inv.as_bytes().split_at(120);
    let c = C_ISN + 1;
    let out = bed.client_sends(c, b1, &[], head);
    assert_eq!((out.seq, out.payload.as_slice()), (c, head));
    let out = bed.client_sends(c + 120, b1, &[], tail);
    assert_eq!((out.seq, out.payload.as_slice()), (c + 120, tail));
    // Both pieces name the VIP: each is a part of a message that needed a rewrite
    // (the second frames by its Content-Length, but does not parse).
    assert_eq!(bed.skipped(TcpAlgSkip::Partial), 2);
    // A whole message followed by the start of another: the first is rewritten, the
    // rest moves with it untouched.
    let two = format!("{inv}{}", &inv[..50]);
    let out = bed.client_sends(c + inv.len() as u32, b1, &[], two.as_bytes());
    let text = out.text();
    assert!(text.starts_with("INVITE sip:bob@198.18.1.11 "), "{text}");
    assert!(text.ends_with(&inv[..50]), "{text}");
    assert_eq!(bed.skipped(TcpAlgSkip::Partial), 3);
    assert_eq!(bed.counters.alg_rewritten.get(), 1);
}

#[test]
fn several_messages_in_one_segment_are_all_rewritten() {
    let bed = Bed::new("dnat", true);
    bed.handshake();
    let b1 = B_ISN.wrapping_add(1);
    let c = C_ISN + 1;
    let (a, b) = (invite(1), invite(2));
    let payload = format!("{a}\r\n\r\n{OPTIONS}{b}");
    let out = bed.client_sends(c, b1, &[], payload.as_bytes());
    let text = out.text();
    assert_eq!(out.payload.len(), payload.len() + 6, "{text}");
    assert_eq!(
        text,
        payload.replace("198.18.0.2", "198.18.1.11"),
        "both INVITEs, the keep-alive and the OPTIONS between them in place"
    );
    assert_eq!(bed.counters.alg_rewritten.get(), 2);
    let out = bed.client_sends(c + payload.len() as u32, b1, &[], b"\r\n");
    assert_eq!(out.seq, c + payload.len() as u32 + 6);
}

#[test]
fn a_segment_that_would_outgrow_the_mtu_passes_untouched_and_is_counted() {
    let bed = Bed::new("dnat", true);
    bed.handshake();
    let b1 = B_ISN.wrapping_add(1);
    let inv = invite(1);
    // Fill the segment to the 1500-byte MTU with keep-alive pings before the INVITE.
    let pad = 1500 - 40 - inv.len();
    let payload = format!(
        "{}{}{inv}",
        "\r\n\r\n".repeat(pad / 4),
        "\r\n".repeat(pad % 4 / 2)
    );
    assert_eq!(payload.len(), 1460);
    let out = bed.client_sends(C_ISN + 1, b1, &[], payload.as_bytes());
    assert_eq!(out.text(), payload);
    assert_eq!(bed.skipped(TcpAlgSkip::TooLarge), 1);
    assert_eq!(bed.counters.alg_rewritten.get(), 0);
    // Nothing was recorded: the next segment keeps its number.
    let out = bed.client_sends(C_ISN + 1 + 1460, b1, &[], b"\r\n");
    assert_eq!(out.seq, C_ISN + 1 + 1460);
}

#[test]
fn a_new_connection_on_the_same_ports_starts_without_corrections() {
    let bed = Bed::new("dnat", true);
    bed.handshake();
    let b1 = B_ISN.wrapping_add(1);
    let inv = invite(1);
    bed.client_sends(C_ISN + 1, b1, &[], inv.as_bytes());
    let out = bed.client_sends(C_ISN + 1 + inv.len() as u32, b1, &[], b"\r\n");
    assert_eq!(out.seq, C_ISN + 1 + inv.len() as u32 + 3);
    // The same 4-tuple again (after the old connection's TIME-WAIT): a fresh start.
    bed.handshake();
    let out = bed.client_sends(C_ISN + 1 + inv.len() as u32, b1, &[], b"\r\n");
    assert_eq!(out.seq, C_ISN + 1 + inv.len() as u32);
}

/// An SDP body naming `addr` and RTP port `port`.
fn sdp(addr: Ipv4Addr, port: u16) -> String {
    format!("v=0\r\no=- 7 7 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n")
}

/// `msg` (ending in `Content-Length: 0` and the empty line) with `body` as SDP.
fn with_body(msg: &str, body: &str) -> String {
    msg.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// SDP over TCP is relayed as on UDP: the offer and the answer name the legs, RTP
/// crosses them, the BYE ends the mapping; the streams' lengths change with the SDP
/// and the later segments are mapped.
fn sdp_over_tcp_is_relayed(nat: &str, backend_leg: (Ipv4Addr, u16)) {
    let bed = Bed::new(nat, true);
    let seen = bed.handshake();
    let (b1, mut c) = (B_ISN.wrapping_add(1), C_ISN + 1);
    let offer = with_body(&invite(1), &sdp(CLIENT, 6000));
    let out = bed.client_sends(c, b1, &[], offer.as_bytes());
    let text = out.text();
    assert_eq!(
        media_of(&text),
        backend_leg,
        "{nat}: SDP toward the backend\n{text}"
    );
    assert!(
        !text.contains("IN IP4 198.18.0.10"),
        "{nat}: the phone in SDP\n{text}"
    );
    let d1 = out.payload.len() as i64 - offer.len() as i64;
    c += offer.len() as u32;
    let answer = with_body(
        &ok(&format!("{}:{}", seen.0, seen.1), 1),
        &sdp(BACKEND, 7000),
    );
    let ack_b = (c as i64 + d1) as u32;
    let out = bed.backend_sends(seen, b1, ack_b, &[], answer.as_bytes());
    let text = out.text();
    assert_eq!(
        media_of(&text),
        (VIP, 40000),
        "{nat}: SDP toward the phone\n{text}"
    );
    assert!(
        !text.contains("198.18.1."),
        "{nat}: back network in\n{text}"
    );
    assert_eq!(out.ack, c);
    let d2 = out.payload.len() as i64 - answer.len() as i64;
    let media = &bed.counters.media[0];
    assert_eq!(media.flows.get(), 1, "{nat}: one stream mapped");

    // RTP from the phone to the VIP's client leg reaches the backend's endpoint.
    let rtp = [0x80u8, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad];
    let mut f = sim::udp_frame(port_mac(0), (CLIENT, 6000), (VIP, 40000), &rtp);
    let t = bed.mem.tables();
    let mut w = sim::worker(&bed.counters);
    assert_eq!(
        sim::run(&bed.svc, &t, &mut w, &mut f, 0, 100),
        Verdict::Forward(1)
    );
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (backend_leg.0, BACKEND), "{nat}: RTP");

    // The BYE ends the mapping; its segment is mapped by both rewrites before it.
    let bye = format!("BYE sip:bob@198.18.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 198.18.0.10:{CPORT};branch=z9hG4bKb;rport\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\nCall-ID: tcp-alg@x\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    let ack_c = (b1 as i64 + answer.len() as i64 + d2) as u32;
    let out = bed.client_sends(c, ack_c, &[], bye.as_bytes());
    assert_eq!(out.seq as i64, c as i64 + d1);
    assert_eq!(out.ack, b1.wrapping_add(answer.len() as u32));
    assert!(
        out.text().starts_with("BYE sip:bob@198.18.1.11:5060 "),
        "{}",
        out.text()
    );
    assert_eq!(media.ended.get(), 1, "{nat}: the BYE ends the stream");
    assert_eq!(bed.counters.alg_rewritten.get(), 3);
    assert_eq!(bed.skipped_total(), 0);
}

#[test]
fn dnat_sdp_over_tcp_is_relayed_through_the_vip() {
    // dnat: the lower half of media_ports faces phones, the upper half backends.
    sdp_over_tcp_is_relayed("dnat", (VIP, 40032));
}

#[test]
fn snat_sdp_over_tcp_is_relayed_through_the_vip_and_the_snat_address() {
    sdp_over_tcp_is_relayed("snat", (Ipv4Addr::new(198, 18, 1, 1), 40000));
}
