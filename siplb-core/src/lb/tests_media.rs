//! Media through the VIP, in process: the SDP of an INVITE and its 200 rewritten onto
//! the relay's legs, RTP and RTCP forwarded both ways as L4 NAT, the mapping ended by
//! BYE, and what is dropped and counted on the way.

use crate::lb::counters::{DropReason, WorkerCounters};
use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
use crate::lb::Verdict;
use crate::sip::{Limits, SipMessage};
use crate::table::media::MediaDrop;
use crate::wire::checksum;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::udp::UdpPacket;
use std::net::Ipv4Addr;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const T: u32 = 100;

fn config(nat: &str, extra: &str) -> String {
    let extra = if extra.contains("media_ports") {
        extra.to_string()
    } else {
        format!("media_ports='40000-40063'\n{extra}")
    };
    format!(
        "[[port]]\nname='f'\naddress='198.18.0.1/24'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nnat='{nat}'\n{extra}\nbackends=[{{address='198.18.1.11'}}]\n"
    )
}

/// Addresses, UDP payload, after checking lengths and checksums.
fn parts(f: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16), Vec<u8>) {
    let ip = Ipv4Packet::new_checked(&f[14..]).expect("valid IPv4");
    assert_eq!(checksum::checksum(ip.header()), 0, "IPv4 checksum");
    assert_eq!(14 + ip.total_len(), f.len(), "IPv4 total length");
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(u.len(), ip.payload().len(), "UDP length");
    assert!(u.verify(ip.src(), ip.dst()), "UDP checksum");
    (
        (ip.src(), u.src_port()),
        (ip.dst(), u.dst_port()),
        u.payload().to_vec(),
    )
}

fn sip_text(f: &[u8]) -> String {
    let (_, _, p) = parts(f);
    let m = SipMessage::parse(&p, &Limits::default()).expect("parses");
    assert_eq!(m.content_length(), Some(m.body().len()));
    String::from_utf8(p).unwrap()
}

/// The `c=` address and the `m=audio` port of an SDP body.
pub(super) fn media_of(sip: &str) -> (Ipv4Addr, u16) {
    let c = sip
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line");
    let m = sip
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .expect("m= line");
    (
        c.trim().parse().unwrap(),
        m.split(' ').next().unwrap().parse().unwrap(),
    )
}

fn with_sdp(head: &str, addr: Ipv4Addr, port: u16) -> String {
    let sdp = format!(
        "v=0\r\no=- 7 7 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=sendrecv\r\n"
    );
    format!(
        "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn invite() -> String {
    with_sdp("INVITE sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKm1;rport\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: media1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.18.0.10:5060>\r\nMax-Forwards: 70\r\n", CLIENT, 6000)
}

fn ok(via: &str) -> String {
    with_sdp(&format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKm1\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\nCall-ID: media1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@198.18.1.11:5060>\r\n"), BACKEND, 7000)
}

const BYE: &str = "BYE sip:bob@198.18.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKm2;rport\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\nCall-ID: media1@x\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

struct Bed {
    svc: crate::lb::services::Services,
    mem: SimMemory,
    counters: Box<WorkerCounters>,
}

impl Bed {
    fn new(nat: &str, extra: &str) -> Bed {
        let cfg = config(nat, extra);
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

    fn run(
        &self,
        port: u8,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        p: &[u8],
    ) -> (Verdict, Vec<u8>) {
        let mut f = sim::udp_frame(port_mac(port), src, dst, p);
        let t = self.mem.tables();
        let mut w = sim::worker(&self.counters);
        let v = sim::run(&self.svc, &t, &mut w, &mut f, port, T);
        (v, f)
    }

    fn send(&self, port: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), p: &[u8]) -> Vec<u8> {
        let (v, f) = self.run(port, src, dst, p);
        assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
        f
    }

    fn media(&self) -> &crate::lb::counters::MediaCounters {
        &self.counters.media[0]
    }
}

/// The whole life of one call's media in `nat`: returns nothing, asserts everything.
fn call_media_through_the_vip(nat: &str, backend_leg_addr: Ipv4Addr, backend_leg_port: u16) {
    let bed = Bed::new(nat, "");
    // The offer: the backend is told to send to the backend leg.
    let to_backend = bed.send(0, (CLIENT, 5060), (VIP, 5060), invite().as_bytes());
    let (flow_src, _, _) = parts(&to_backend);
    let text = sip_text(&to_backend);
    assert_eq!(
        media_of(&text),
        (backend_leg_addr, backend_leg_port),
        "{nat}: SDP toward the backend\n{text}"
    );
    assert_eq!(bed.media().flows.get(), 1, "one stream mapped");
    // The answer: the phone is told to send to the VIP's client leg.
    let to_client = bed.send(
        1,
        (BACKEND, 5060),
        flow_src,
        ok(&format!("{}:{}", flow_src.0, flow_src.1)).as_bytes(),
    );
    let text = sip_text(&to_client);
    assert_eq!(
        media_of(&text),
        (VIP, 40000),
        "{nat}: SDP toward the phone\n{text}"
    );
    assert!(
        !text.contains("198.18.1."),
        "{nat}: back network in\n{text}"
    );
    assert_eq!(
        bed.media().flows.get(),
        1,
        "the answer maps the same stream"
    );

    // RTP both ways, RTCP on the next ports: addresses rewritten, payload intact.
    let rtp = [
        0x80u8, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef, 0x55, 0x55,
    ];
    let f = bed.send(0, (CLIENT, 6000), (VIP, 40000), &rtp);
    assert_eq!(
        parts(&f),
        (
            (backend_leg_addr, backend_leg_port),
            (BACKEND, 7000),
            rtp.to_vec()
        ),
        "{nat}: RTP phone → backend"
    );
    let f = bed.send(
        1,
        (BACKEND, 7000),
        (backend_leg_addr, backend_leg_port),
        &rtp,
    );
    assert_eq!(
        parts(&f),
        ((VIP, 40000), (CLIENT, 6000), rtp.to_vec()),
        "{nat}: RTP backend → phone"
    );
    let f = bed.send(0, (CLIENT, 6001), (VIP, 40001), &rtp);
    let (src, dst, _) = parts(&f);
    assert_eq!(
        (src, dst),
        ((backend_leg_addr, backend_leg_port + 1), (BACKEND, 7001)),
        "{nat}: RTCP phone → backend"
    );
    let media = bed.media();
    assert_eq!(media.packets.get(), 3);
    assert_eq!(media.bytes.get(), 3 * (8 + rtp.len() as u64));

    // Someone else sending to the phone's leg is refused and counted.
    let (v, _) = bed.run(0, (Ipv4Addr::new(198, 18, 0, 66), 6000), (VIP, 40000), &rtp);
    assert_eq!(v, Verdict::Drop(DropReason::MediaForeignSource));
    assert_eq!(bed.media().drops[MediaDrop::ForeignSource.index()].get(), 1);

    // BYE ends the mapping: media to its ports is dropped as not mapped.
    bed.send(0, (CLIENT, 5060), (VIP, 5060), BYE.as_bytes());
    assert_eq!(bed.media().ended.get(), 1, "{nat}: BYE ends the stream");
    assert_eq!(bed.mem.tables().media.count_live(), 0);
    let (v, _) = bed.run(0, (CLIENT, 6000), (VIP, 40000), &rtp);
    assert_eq!(v, Verdict::Drop(DropReason::MediaNotMapped));
    let (v, _) = bed.run(
        1,
        (BACKEND, 7000),
        (backend_leg_addr, backend_leg_port),
        &rtp,
    );
    // A SNAT address's free port may be a socket of the host's (exception path on).
    let expect = if nat == "snat" {
        Verdict::ToKernel
    } else {
        Verdict::Drop(DropReason::MediaNotMapped)
    };
    assert_eq!(v, expect);
    assert_eq!(bed.media().packets.get(), 3, "nothing forwarded after BYE");
}

#[test]
fn dnat_media_flows_through_the_vip_both_ways() {
    // dnat: the lower half of media_ports faces phones, the upper half backends.
    call_media_through_the_vip("dnat", VIP, 40032);
}

#[test]
fn snat_media_flows_through_the_vip_and_the_snat_address() {
    call_media_through_the_vip("snat", SNAT, 40000);
}

#[test]
fn snat_the_offer_hides_the_client_in_o_and_c() {
    let bed = Bed::new("snat", "");
    let to_backend = bed.send(0, (CLIENT, 5060), (VIP, 5060), invite().as_bytes());
    let text = sip_text(&to_backend);
    assert!(
        !text.contains("198.18.0.10"),
        "the client's address reached the backend:\n{text}"
    );
    assert!(text.contains("o=- 7 7 IN IP4 198.18.1.1\r\n"), "{text}");
}

#[test]
fn a_failed_initial_invite_ends_its_media_and_a_failed_reinvite_does_not() {
    let bed = Bed::new("dnat", "");
    let to_backend = bed.send(0, (CLIENT, 5060), (VIP, 5060), invite().as_bytes());
    let (src, _, _) = parts(&to_backend);
    assert_eq!(bed.mem.tables().media.count_live(), 1);
    let busy = "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKm1\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=3\r\nCall-ID: media1@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    bed.send(1, (BACKEND, 5060), src, busy.as_bytes());
    assert_eq!(bed.media().ended.get(), 1);
    assert_eq!(bed.mem.tables().media.count_live(), 0);

    // An answered call whose re-INVITE fails keeps its media.
    let bed = Bed::new("dnat", "");
    bed.send(0, (CLIENT, 5060), (VIP, 5060), invite().as_bytes());
    bed.send(1, (BACKEND, 5060), src, ok("198.18.0.10:5060").as_bytes());
    let pending = busy
        .replace("486 Busy Here", "491 Request Pending")
        .replace("CSeq: 1", "CSeq: 2")
        .replace("tag=3", "tag=2");
    bed.send(1, (BACKEND, 5060), src, pending.as_bytes());
    assert_eq!(bed.media().ended.get(), 0);
    assert_eq!(bed.mem.tables().media.count_live(), 1);
}

#[test]
fn with_media_off_sdp_and_rtp_are_left_alone() {
    for extra in ["media = false", "alg = false"] {
        let bed = Bed::new("dnat", extra);
        let to_backend = bed.send(0, (CLIENT, 5060), (VIP, 5060), invite().as_bytes());
        assert_eq!(media_of(&sip_text(&to_backend)), (CLIENT, 6000), "{extra}");
        let (v, _) = bed.run(0, (CLIENT, 6000), (VIP, 40000), &[0x80, 0, 0, 1]);
        assert_eq!(v, Verdict::Drop(DropReason::VipPortClosed), "{extra}");
        assert_eq!(bed.media().flows.get(), 0);
    }
}

#[test]
fn exhausted_media_ports_refuse_the_offer_and_count_it() {
    // Four ports in snat: two pairs on the VIP and two on the SNAT address.
    let bed = Bed::new("snat", "media_ports = '40000-40003'");
    for i in 0..3 {
        let inv = invite().replace("media1@x", &format!("media-x{i}"));
        let (v, _) = bed.run(0, (CLIENT, 5060 + i), (VIP, 5060), inv.as_bytes());
        let expect = if i < 2 {
            Verdict::Forward(1)
        } else {
            Verdict::Drop(DropReason::AlgRefused)
        };
        assert_eq!(v, expect, "call {i}");
    }
    assert_eq!(bed.media().flows.get(), 2);
    assert_eq!(
        bed.media().refused[crate::alg::MediaError::Exhausted.index()].get(),
        1
    );
}

#[test]
fn media_to_a_snat_address_port_nobody_holds_goes_to_the_kernel_or_is_counted() {
    for (exception_path, expect) in [
        (false, Verdict::Drop(DropReason::MediaNotMapped)),
        (true, Verdict::ToKernel),
    ] {
        let cfg = format!(
            "[dataplane]\nexception_path = {exception_path}\n{}",
            config("snat", "")
        );
        let svc = sim::services(&cfg);
        let mem = SimMemory::new(1 << 10).with_media(&cfg);
        let counters: Box<WorkerCounters> = Box::default();
        let mut f = sim::udp_frame(
            port_mac(1),
            (BACKEND, 7000),
            (SNAT, 40010),
            &[0x80, 0, 0, 1],
        );
        let t = mem.tables();
        let mut w = sim::worker(&counters);
        assert_eq!(sim::run(&svc, &t, &mut w, &mut f, 1, T), expect);
    }
}

/// Bad input on the media path: every case is a counted drop or a counted, untouched
/// forward; none crashes or leaves a mapping behind.
mod bad_input {
    use super::*;
    use crate::alg::{EditError, RewriteError, SdpError};
    use crate::lb::process;

    fn alg_error(bed: &Bed, e: RewriteError) -> u64 {
        bed.counters.alg_errors[e.index()].get()
    }

    fn offer(body_edit: impl Fn(String) -> String) -> String {
        let sip = invite();
        let (head, body) = sip.split_once("\r\n\r\n").unwrap();
        let body = body_edit(body.to_string());
        let head = head
            .lines()
            .filter(|l| !l.starts_with("Content-Length"))
            .collect::<Vec<_>>()
            .join("\r\n");
        format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    }

    #[test]
    fn absurd_port_counts_and_missing_c_are_refused_and_counted() {
        let bed = Bed::new("snat", "");
        for (edit, e) in [
            (
                "m=audio 6000/1000 RTP/AVP 0",
                RewriteError::Sdp(SdpError::BadCount),
            ),
            (
                "m=audio 65534/4 RTP/AVP 0",
                RewriteError::Sdp(SdpError::BadCount),
            ),
        ] {
            let sip = offer(|b| b.replace("m=audio 6000 RTP/AVP 0", edit));
            let (v, _) = bed.run(0, (CLIENT, 5060), (VIP, 5060), sip.as_bytes());
            assert_eq!(v, Verdict::Drop(DropReason::AlgRefused), "{edit}");
            assert!(alg_error(&bed, e) >= 1, "{edit}: {e:?} counted");
        }
        let sip = offer(|b| b.replace("c=IN IP4 198.18.0.10\r\n", ""));
        let (v, _) = bed.run(0, (CLIENT, 5060), (VIP, 5060), sip.as_bytes());
        assert_eq!(v, Verdict::Drop(DropReason::AlgRefused));
        assert_eq!(
            alg_error(&bed, RewriteError::Sdp(SdpError::MissingConnection)),
            1
        );
        assert_eq!(bed.media().flows.get(), 0);
        assert_eq!(
            bed.mem.tables().media.count_live(),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn an_ipv6_c_line_keeps_its_sdp_and_the_headers_are_still_rewritten() {
        let bed = Bed::new("snat", "");
        let sip = offer(|b| {
            b.replace("c=IN IP4 198.18.0.10", "c=IN IP6 2001:2::10")
                .replace("IN IP4 198.18.0.10", "IN IP6 2001:2::10")
        });
        let out = bed.send(0, (CLIENT, 5060), (VIP, 5060), sip.as_bytes());
        let text = sip_text(&out);
        assert!(
            text.contains("c=IN IP6 2001:2::10\r\nt=0 0\r\nm=audio 6000 "),
            "{text}"
        );
        assert!(!text.contains("198.18.0.10"), "headers rewritten:\n{text}");
        assert_eq!(alg_error(&bed, RewriteError::Ipv6Media), 1);
        assert_eq!(bed.media().flows.get(), 0);
    }

    #[test]
    fn a_content_length_that_lies_is_a_counted_drop() {
        let bed = Bed::new("dnat", "");
        let sip = invite();
        let n: usize = sip
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        // Longer than the datagram: malformed, dropped.
        let bad = sip.replace(
            &format!("Content-Length: {n}\r\n"),
            &format!("Content-Length: {}\r\n", n + 40),
        );
        let (v, _) = bed.run(0, (CLIENT, 5060), (VIP, 5060), bad.as_bytes());
        assert_eq!(v, Verdict::Drop(DropReason::SipMalformed));
        let scanner_errors: u64 = bed.counters.sip_errors.iter().map(|c| c.get()).sum();
        assert_eq!(scanner_errors, 1, "the scanner's reason counted");
        assert_eq!(bed.mem.tables().media.count_live(), 0);
        // Shorter: the bytes past it are not part of the message (RFC 3261 §18.3):
        // the SDP it keeps is rewritten and what follows is not forwarded.
        let sdp_start = sip.find("\r\n\r\n").unwrap() + 4;
        let keep = sip[sdp_start..].find("m=audio").unwrap() + "m=audio 6000 RTP/AVP 0\r\n".len();
        let short = sip.replace(
            &format!("Content-Length: {n}\r\n"),
            &format!("Content-Length: {keep}\r\n"),
        );
        let out = bed.send(0, (CLIENT, 5060), (VIP, 5060), short.as_bytes());
        let text = sip_text(&out);
        assert!(text.ends_with("m=audio 40032 RTP/AVP 0\r\n"), "{text}");
        assert!(
            !text.contains("a=sendrecv"),
            "the bytes past Content-Length went:\n{text}"
        );
    }

    #[test]
    fn a_message_that_would_outgrow_its_buffer_or_64k_is_refused_untouched() {
        // No room after the frame: the dnat INVITE grows (the VIP in the Request-URI
        // becomes the longer backend address; the phone's short c= and o= address
        // becomes the VIP, the m= port gains a digit).
        let bed = Bed::new("dnat", "");
        let sip = offer(|b| b.replace("198.18.0.10", "1.2.3.4"));
        let mut f = sim::udp_frame(port_mac(0), (CLIENT, 5060), (VIP, 5060), sip.as_bytes());
        let before = f.clone();
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        let v = process(&bed.svc, &t, &mut w, &mut f, 0, T);
        assert_eq!(v, Verdict::Drop(DropReason::AlgRefused));
        assert_eq!(f, before, "refused, the frame is as it came");
        assert_eq!(alg_error(&bed, RewriteError::Edit(EditError::TooLarge)), 1);

        // A datagram of the largest UDP payload that grows past 65,507 bytes.
        let pad = 65_507 - sip.len() - 12;
        let big = offer(|b| {
            format!(
                "{}a=x:{}\r\n",
                b.replace("198.18.0.10", "1.2.3.4"),
                "p".repeat(pad)
            )
        });
        assert!(big.len() > 65_400 && big.len() <= 65_507, "{}", big.len());
        let (v, f) = bed.run(0, (CLIENT, 5060), (VIP, 5060), big.as_bytes());
        assert_eq!(v, Verdict::Drop(DropReason::AlgRefused));
        assert_eq!(&f[42..], big.as_bytes(), "untouched");
        assert_eq!(alg_error(&bed, RewriteError::Edit(EditError::TooLarge)), 2);
    }
}

/// Mutated offers and answers, and stray datagrams to media ports, through the whole
/// pipeline with a real media table: no panic, every forwarded frame well formed,
/// every refusal counted, mappings bounded by what was announced and all gone after
/// the dialogs end.
mod mutated {
    use super::*;
    use crate::table::media::MAX_STREAMS;
    use proptest::prelude::*;

    fn mutate(mut buf: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
        for (at, byte, op) in edits {
            let i = at.index(buf.len() + 1);
            match op {
                0 if i < buf.len() => buf[i] = *byte,
                1 => buf.insert(i, *byte),
                2 => buf.truncate(i),
                _ => {
                    let piece: [&[u8]; 8] = [
                        b"m=audio 0 RTP/AVP 0\r\n",
                        b"m=video 7002/2 RTP/AVP 96\r\n",
                        b"c=IN IP4 0.0.0.0\r\n",
                        b"c=IN IP6 2001:2::1\r\n",
                        b"a=rtcp:7777 IN IP4 198.18.1.11\r\n",
                        b"a=rtcp-mux\r\n",
                        b"a=sendonly\r\n",
                        b"198.18.1.11",
                    ];
                    let p = piece[usize::from(*byte) % piece.len()];
                    buf.splice(i..i, p.iter().copied());
                }
            }
        }
        buf
    }

    proptest! {
        // A fixed seed, as the fuzz tests of `tests/`: CI fails for the code, not for the
        // draw; `PROPTEST_RNG_SEED=<n>` (with `PROPTEST_CASES`) explores others (20,000
        // random cases ran clean on 2026-12-02).
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            rng_seed: std::env::var_os("PROPTEST_RNG_SEED")
                .map_or(proptest::test_runner::RngSeed::Fixed(0x51b1_b000), |_| ProptestConfig::default().rng_seed),
            ..ProptestConfig::default()
        })]

        #[test]
        fn mutated_sdp_and_stray_media_never_break_the_relay(
            nat in prop::sample::select(vec!["dnat", "snat"]),
            offer_edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..6),
            answer_edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..6),
            strays in proptest::collection::vec((0u16..64, any::<bool>(), 0usize..300), 0..16),
        ) {
            let bed = Bed::new(nat, "");
            let offer = mutate(invite().into_bytes(), &offer_edits);
            let (v, out) = bed.run(0, (CLIENT, 5060), (VIP, 5060), &offer);
            let call_id = SipMessage::parse(&offer, &Limits::default())
                .map(|m| String::from_utf8_lossy(m.call_id()).into_owned())
                .ok();
            let mut calls: Vec<String> = call_id.iter().cloned().collect();
            // The backend answers what reached it, to where it came from.
            if let (Verdict::Forward(_), Some(call_id)) = (v, &call_id) {
                let (src, _, payload) = parts(&out);
                prop_assert!(SipMessage::parse(&payload, &Limits::default()).is_ok());
                let answer = ok(&format!("{}:{}", src.0, src.1)).replace("media1@x", call_id);
                let answer = mutate(answer.into_bytes(), &answer_edits);
                if let Ok(m) = SipMessage::parse(&answer, &Limits::default()) {
                    calls.push(String::from_utf8_lossy(m.call_id()).into_owned());
                }
                let (v, out) = bed.run(1, (BACKEND, 5060), src, &answer);
                if let Verdict::Forward(_) = v {
                    let (_, _, payload) = parts(&out);
                    prop_assert!(SipMessage::parse(&payload, &Limits::default()).is_ok());
                }
            }
            let live = bed.mem.tables().media.count_live();
            prop_assert!(live <= MAX_STREAMS, "{live} mappings from one offer and answer");
            prop_assert_eq!(bed.media().flows.get() as usize, live);
            // Stray datagrams to the farm's media ports, from the phone or the backend.
            for (port, from_phone, len) in strays {
                let (in_port, from, to) = if from_phone {
                    (0, (CLIENT, 6000), (VIP, 40000 + port))
                } else {
                    let leg = if nat == "snat" { SNAT } else { VIP };
                    (1, (BACKEND, 7000), (leg, 40000 + port))
                };
                let (v, out) = bed.run(in_port, from, to, &vec![0x80; len]);
                if let Verdict::Forward(_) = v {
                    let (s, d, p) = parts(&out);
                    prop_assert_eq!(p.len(), len);
                    prop_assert!(s.0 == VIP || s.0 == SNAT, "from a relay leg: {s:?}");
                    prop_assert!(d.0 == CLIENT || d.0 == BACKEND, "to an endpoint: {d:?}");
                }
            }
            // The calls (as the offer and the answer named them) end: nothing is left.
            for call_id in &calls {
                let bye = BYE.replace("media1@x", call_id);
                let _ = bed.run(0, (CLIENT, 5060), (VIP, 5060), bye.as_bytes());
            }
            prop_assert_eq!(bed.mem.tables().media.count_live(), 0);
        }
    }
}
