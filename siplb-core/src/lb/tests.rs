//! The packet path end to end, in process: frames in, verdicts and rewritten frames
//! out, over tables in plain memory (`sim`).

mod balancing {
    use crate::hash::hash64;
    use crate::lb::counters::{DropReason, WorkerCounters};
    use crate::lb::reassembly::fragment;
    use crate::lb::services::{BackendState, Services};
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
    use crate::lb::udp::aor_key;
    use crate::lb::{process, Verdict};
    use crate::sip::SipUri;
    use crate::table::dialog::DialogState;
    use crate::wire::arp::{self, ArpPacket};
    use crate::wire::checksum;
    use crate::wire::ethernet::EthernetFrame;
    use crate::wire::icmp;
    use crate::wire::ipv4::{self, Ipv4Packet};
    use crate::wire::udp::UdpPacket;
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
    const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);

    fn config(nat: &str, affinity: &str) -> String {
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
affinity = "{affinity}"
backends = [ {{ address = "198.18.1.11" }}, {{ address = "198.18.1.12" }} ]
"#
        )
    }

    fn invite(call_id: &str, from_user: &str, pad: usize) -> Vec<u8> {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=x-pad:{}\r\n",
            "x".repeat(pad)
        );
        format!(
            "INVITE sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:{from_user}@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from_user}@198.18.0.10>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes()
    }

    fn response(code: u16, cseq: &str, call_id: &str, to_user: &str, extra: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:{to_user}@siplb.test>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn register(user: &str, call_id: &str, cseq: u32) -> Vec<u8> {
        format!(
            "REGISTER sip:siplb.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5062;branch=z9hG4bK{cseq};rport\r\nFrom: <sip:{user}@siplb.test>;tag=9\r\nTo: <sip:{user}@siplb.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@198.18.0.10:5062>;expires=600\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    struct Bed {
        svc: Services,
        mem: SimMemory,
        counters: Box<WorkerCounters>,
    }

    impl Bed {
        fn new(nat: &str, affinity: &str) -> Bed {
            let bed = Bed {
                svc: sim::services(&config(nat, affinity)),
                mem: SimMemory::new(1 << 12),
                counters: Box::default(),
            };
            let t = bed.mem.tables();
            for (ip, port) in [(CLIENT, 0), (B1, 1), (B2, 1)] {
                t.neighbours.learn(ip, host_mac(ip), port, 1);
            }
            bed
        }

        /// Sends `payload` from `src` to `dst` into port `port`; returns the verdict and
        /// the frame that leaves.
        fn send(
            &self,
            port: u8,
            src: (Ipv4Addr, u16),
            dst: (Ipv4Addr, u16),
            payload: &[u8],
        ) -> (Verdict, Vec<u8>) {
            let mut f = sim::udp_frame(port_mac(port), src, dst, payload);
            let t = self.mem.tables();
            let mut w = sim::worker(&self.counters);
            let v = sim::run(&self.svc, &t, &mut w, &mut f, port, 100);
            (v, f)
        }
    }

    /// (src, dst) addresses and ports of a frame, after checking every checksum.
    fn addrs(f: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
        let ip = Ipv4Packet::new_checked(&f[14..]).expect("valid IPv4");
        assert_eq!(checksum::checksum(ip.header()), 0);
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify(ip.src(), ip.dst()), "UDP checksum");
        ((ip.src(), u.src_port()), (ip.dst(), u.dst_port()))
    }

    #[test]
    fn dnat_invite_goes_to_a_backend_and_its_answer_comes_from_the_vip() {
        let bed = Bed::new("dnat", "call-id");
        let (v, out) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("c1@x", "alice", 0));
        assert_eq!(v, Verdict::Forward(1));
        let (src, dst) = addrs(&out);
        assert_eq!(src, (CLIENT, 5060), "dnat keeps the client's address");
        assert!(dst == (B1, 5060) || dst == (B2, 5060));
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!((eth.src(), eth.dst()), (port_mac(1), host_mac(dst.0)));
        // Every later message of the call reaches the same backend.
        for _ in 0..5 {
            let (_, again) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("c1@x", "alice", 0));
            assert_eq!(addrs(&again).1, dst);
        }
        let (v, back) = bed.send(
            1,
            dst,
            (CLIENT, 5060),
            &response(200, "1 INVITE", "c1@x", "bob", ""),
        );
        assert_eq!(v, Verdict::Forward(0));
        assert_eq!(addrs(&back), ((VIP, 5060), (CLIENT, 5060)));
        let d = bed.mem.tables().dialogs.get(hash64(b"c1@x"), 100).unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
    }

    #[test]
    fn an_unanswered_invite_resent_after_its_backend_went_down_finds_a_live_one() {
        // on_backend_down = keep (the default): answered dialogs stay, unanswered move.
        let mut bed = Bed::new("dnat", "call-id");
        let (_, first) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("t1@x", "alice", 0));
        let dead = addrs(&first).1;
        let (other, _) = (0..64)
            .map(|i| {
                let cid = format!("t2-{i}@x");
                let (_, f) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite(&cid, "alice", 0));
                (cid, f)
            })
            .find(|(_, f)| addrs(f).1 == dead)
            .expect("some call lands on the same backend");
        // That second call was answered (180): it is an early dialog, not `trying`.
        bed.send(
            1,
            dead,
            (CLIENT, 5060),
            &response(180, "1 INVITE", &other, "bob", ""),
        );
        let fi = bed.svc.farms[0]
            .backends
            .iter()
            .position(|b| b.addr == dead.0)
            .unwrap();
        bed.svc.farms[0].backends[fi].state = BackendState::Down;
        bed.svc.farms[0].table = crate::lb::services::build_table(&bed.svc.farms[0].backends);

        let (_, again) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("t1@x", "alice", 0));
        let live = addrs(&again).1;
        assert_ne!(live, dead, "the retransmission is placed on a live backend");
        let (_, later) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("t1@x", "alice", 0));
        assert_eq!(addrs(&later).1, live, "and stays there");
        let (_, kept) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite(&other, "alice", 0));
        assert_eq!(
            addrs(&kept).1,
            dead,
            "an answered dialog is kept (keep mode)"
        );
    }

    #[test]
    fn snat_maps_the_client_to_a_balancer_port_and_back() {
        let bed = Bed::new("snat", "call-id");
        let (v, out) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("c2@x", "alice", 0));
        assert_eq!(v, Verdict::Forward(1));
        let (src, backend) = addrs(&out);
        assert_eq!(
            src.0,
            Ipv4Addr::new(198, 18, 1, 1),
            "source is the back port's address"
        );
        // The backend answers to that address and port; it comes back from the VIP.
        let (v, back) = bed.send(
            1,
            backend,
            src,
            &response(180, "1 INVITE", "c2@x", "bob", ""),
        );
        assert_eq!(v, Verdict::Forward(0));
        assert_eq!(addrs(&back), ((VIP, 5060), (CLIENT, 5060)));
        // A stranger cannot use the session.
        let (v, _) = bed.send(
            1,
            (Ipv4Addr::new(198, 18, 1, 99), 5060),
            src,
            &response(200, "1 INVITE", "c2@x", "bob", ""),
        );
        assert_eq!(v, Verdict::Drop(DropReason::NotBalanced));
    }

    #[test]
    fn challenged_register_meets_the_same_registrar_and_calls_follow_it() {
        let bed = Bed::new("dnat", "registrar");
        let (_, first) = bed.send(0, (CLIENT, 5062), (VIP, 5060), &register("carol", "r1", 1));
        let registrar = addrs(&first).1;
        bed.send(
            1,
            registrar,
            (CLIENT, 5062),
            &response(401, "1 REGISTER", "r1", "carol", ""),
        );
        let (_, second) = bed.send(0, (CLIENT, 5062), (VIP, 5060), &register("carol", "r1", 2));
        assert_eq!(addrs(&second).1, registrar);
        bed.send(
            1,
            registrar,
            (CLIENT, 5062),
            &response(
                200,
                "2 REGISTER",
                "r1",
                "carol",
                "Contact: <sip:carol@198.18.0.10:5062>;expires=600\r\n",
            ),
        );
        let reg = bed.mem.tables().registrations.get_entry(
            aor_key(&crate::sip::SipUri::parse(b"sip:carol@siplb.test").unwrap()),
            100,
        );
        assert_eq!(
            reg.map(|r| r.1),
            Some(100 + 600 + 30),
            "binding lives Expires + margin"
        );
        // Whatever their Call-IDs, carol's calls go to her registrar.
        for i in 0..20 {
            let (_, out) = bed.send(
                0,
                (CLIENT, 5062),
                (VIP, 5060),
                &invite(&format!("call{i}"), "carol", 0),
            );
            assert_eq!(addrs(&out).1, registrar, "call {i}");
        }
    }

    /// Registers `user` through the VIP and has its registrar accept it; returns the
    /// registrar.
    fn register_at_its_registrar(bed: &Bed, user: &str) -> (Ipv4Addr, u16) {
        let cid = format!("reg-{user}");
        let (_, out) = bed.send(0, (CLIENT, 5062), (VIP, 5060), &register(user, &cid, 1));
        let registrar = addrs(&out).1;
        bed.send(
            1,
            registrar,
            (CLIENT, 5062),
            &response(
                200,
                "1 REGISTER",
                &cid,
                user,
                &format!("Contact: <sip:{user}@198.18.0.10:5062>;expires=600\r\n"),
            ),
        );
        registrar
    }

    /// An INVITE from `from` to `to`'s AOR (`sip:to@siplb.test`, as they registered).
    fn invite_to(call_id: &str, from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(invite(call_id, from, 0))
            .unwrap()
            .replacen(
                "INVITE sip:bob@198.18.0.2",
                &format!("INVITE sip:{to}@siplb.test"),
                1,
            )
            .into_bytes()
    }

    #[test]
    fn callee_affinity_sends_a_call_to_the_callees_registrar_then_the_callers() {
        for affinity in ["callee", "registrar"] {
            let bed = Bed::new("dnat", affinity);
            // Two phones whose AORs Maglev puts on different registrars.
            let caller = register_at_its_registrar(&bed, "dave");
            let (callee_user, callee) = (0..)
                .map(|i| format!("erin{i}"))
                .map(|u| {
                    let r = register_at_its_registrar(&bed, &u);
                    (u, r)
                })
                .find(|(_, r)| *r != caller)
                .unwrap();
            let mut at = [0, 0];
            for i in 0..20 {
                let (_, out) = bed.send(
                    0,
                    (CLIENT, 5060),
                    (VIP, 5060),
                    &invite_to(&format!("{affinity}-call{i}"), "dave", &callee_user),
                );
                let b = addrs(&out).1;
                at[usize::from(b == callee)] += 1;
            }
            match affinity {
                "callee" => assert_eq!(at, [0, 20], "{affinity}: [caller's, callee's] registrar"),
                _ => assert_eq!(at, [20, 0], "{affinity}: [caller's, callee's] registrar"),
            }
            // A callee that never registered here: the caller's registrar.
            for i in 0..5 {
                let (_, out) = bed.send(
                    0,
                    (CLIENT, 5060),
                    (VIP, 5060),
                    &invite_to(&format!("{affinity}-zed{i}"), "dave", "zed"),
                );
                assert_eq!(addrs(&out).1, caller, "{affinity}: unknown callee");
            }
        }
    }

    #[test]
    fn messages_of_known_dialogs_are_steered_from_the_light_scan_and_the_rest_parsed_in_full() {
        let bed = Bed::new("dnat", "call-id");
        let c = &bed.counters;
        let (_, first) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("s1@x", "alice", 0));
        let backend = addrs(&first).1;
        assert_eq!(c.sip_steered.get(), 0, "a new INVITE is parsed in full");
        for (code, cseq) in [(180, "1 INVITE"), (200, "1 INVITE")] {
            let (v, _) = bed.send(
                1,
                backend,
                (CLIENT, 5060),
                &response(code, cseq, "s1@x", "bob", ""),
            );
            assert_eq!(v, Verdict::Forward(0));
        }
        let ack = b"ACK sip:bob@198.18.1.11 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK2\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>;tag=2\r\nCall-ID: s1@x\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
        let bye = b"BYE sip:bob@198.18.1.11 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK3\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>;tag=2\r\nCall-ID: s1@x\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        for m in [&ack[..], &bye[..]] {
            let (v, out) = bed.send(0, (CLIENT, 5060), (VIP, 5060), m);
            assert_eq!(v, Verdict::Forward(1));
            assert_eq!(
                addrs(&out).1,
                backend,
                "in-dialog requests follow the dialog"
            );
        }
        bed.send(
            1,
            backend,
            (CLIENT, 5060),
            &response(200, "2 BYE", "s1@x", "bob", ""),
        );
        assert_eq!(
            c.sip_steered.get(),
            5,
            "180, 200, ACK, BYE, 200 of a known dialog"
        );
        let d = bed.mem.tables().dialogs.get(hash64(b"s1@x"), 100).unwrap();
        assert_eq!(
            d.state,
            DialogState::Terminating,
            "the light path moves the state"
        );
        // REGISTER, its answers and an ACK of an unknown dialog are parsed in full.
        let (_, reg) = bed.send(0, (CLIENT, 5062), (VIP, 5060), &register("dave", "r9", 1));
        bed.send(
            1,
            addrs(&reg).1,
            (CLIENT, 5062),
            &response(401, "1 REGISTER", "r9", "dave", ""),
        );
        let stray = String::from_utf8_lossy(ack).replace("s1@x", "unknown@x");
        bed.send(0, (CLIENT, 5060), (VIP, 5060), stray.as_bytes());
        assert_eq!(c.sip_steered.get(), 5);
        assert_eq!((c.sip_requests.get(), c.sip_responses.get()), (5, 4));
    }

    #[test]
    fn backend_originated_call_is_answered_back_to_that_backend() {
        let bed = Bed::new("dnat", "call-id");
        // Backend 2 calls the phone directly (the balancer is its gateway).
        let inv = invite("pbx-call", "pbx", 0);
        let (v, out) = bed.send(1, (B2, 5060), (CLIENT, 5062), &inv);
        assert_eq!(v, Verdict::Forward(0));
        assert_eq!(
            addrs(&out),
            ((VIP, 5060), (CLIENT, 5062)),
            "the phone sees the VIP"
        );
        // Whatever Maglev says about this Call-ID, the phone's answers go to B2.
        for code in [180, 200] {
            let (_, back) = bed.send(
                0,
                (CLIENT, 5062),
                (VIP, 5060),
                &response(code, "1 INVITE", "pbx-call", "alice", ""),
            );
            assert_eq!(addrs(&back).1, (B2, 5060));
        }
    }

    #[test]
    fn a_3000_byte_invite_in_fragments_is_reassembled_and_balanced() {
        let bed = Bed::new("dnat", "call-id");
        let whole = sim::udp_frame(
            port_mac(0),
            (CLIENT, 5060),
            (VIP, 5060),
            &invite("big@x", "alice", 2600),
        );
        assert!(whole.len() > 3000);
        let mut scratch = vec![0u8; 1514];
        let mut frags = Vec::new();
        fragment(&whole, 1500, &mut scratch, |f| frags.push(f.to_vec())).unwrap();
        assert_eq!(frags.len(), 3);
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        let mut verdicts = Vec::new();
        let mut last = Vec::new();
        for f in &frags {
            let mut f = f.clone();
            verdicts.push(sim::run(&bed.svc, &t, &mut w, &mut f, 0, 100));
            last = f;
        }
        assert_eq!(verdicts[..2], [Verdict::Consumed, Verdict::Consumed]);
        assert_eq!(verdicts[2], Verdict::Forward(1));
        // The ALG names the backend in the Request-URI (198.18.0.2 → 198.18.1.1x).
        assert_eq!(last.len(), whole.len() + 1);
        let (src, dst) = addrs(&last);
        assert_eq!(src, (CLIENT, 5060));
        assert!(dst.0 == B1 || dst.0 == B2);
        assert_eq!(bed.counters.datagrams_reassembled.get(), 1);
    }

    #[test]
    fn arp_for_the_vip_and_ping_of_the_vip_are_answered() {
        let bed = Bed::new("dnat", "call-id");
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        let mut f = vec![0u8; 60];
        arp::write_frame(
            &mut f,
            arp::OP_REQUEST,
            host_mac(CLIENT),
            CLIENT,
            MacAddr::BROADCAST,
            MacAddr::ZERO,
            VIP,
        );
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut f, 0, 100),
            Verdict::Forward(0)
        );
        let a = ArpPacket::new_checked(&f[14..]).unwrap();
        assert_eq!(
            (a.operation(), a.sender_ip(), a.sender_mac()),
            (arp::OP_REPLY, VIP, port_mac(0))
        );
        // ICMP echo to the VIP.
        let mut p = sim::udp_frame(port_mac(0), (CLIENT, 1), (VIP, 2), b"ping-payload");
        let hdr = &mut p[14..34];
        hdr[9] = ipv4::PROTO_ICMP;
        hdr[10] = 0;
        hdr[11] = 0;
        let c = checksum::checksum(hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        let icmp_len = p.len() - 34;
        let m = &mut p[34..];
        m[..icmp_len].fill(0);
        m[0] = icmp::TYPE_ECHO_REQUEST;
        m[4..8].copy_from_slice(&[0x12, 0x34, 0, 1]); // identifier, sequence
        let c = checksum::checksum(&m[..icmp_len]);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut p, 0, 100),
            Verdict::Forward(0)
        );
        let ip = Ipv4Packet::new_checked(&p[14..]).unwrap();
        assert_eq!((ip.src(), ip.dst()), (VIP, CLIENT));
        assert_eq!(p[34], icmp::TYPE_ECHO_REPLY);
        assert_eq!(checksum::checksum(&p[34..]), 0);
    }

    #[test]
    fn bad_input_is_dropped_and_counted_by_reason() {
        let bed = Bed::new("dnat", "call-id");
        let (v, _) = bed.send(
            0,
            (CLIENT, 5060),
            (VIP, 5060),
            b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n",
        );
        assert_eq!(v, Verdict::Drop(DropReason::SipMalformed));
        let (v, _) = bed.send(0, (CLIENT, 5060), (VIP, 5070), &invite("c@x", "a", 0));
        assert_eq!(v, Verdict::Drop(DropReason::VipPortClosed));
        let (v, _) = bed.send(
            0,
            (CLIENT, 5060),
            (Ipv4Addr::new(198, 18, 0, 77), 5060),
            b"x",
        );
        assert_eq!(v, Verdict::Drop(DropReason::NotBalanced));
        assert_eq!(
            bed.counters.sip_errors.iter().map(|c| c.get()).sum::<u64>(),
            1
        );
        // Truncated and corrupt frames, any length.
        let good = sim::udp_frame(
            port_mac(0),
            (CLIENT, 5060),
            (VIP, 5060),
            &invite("c@x", "a", 0),
        );
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        for n in 0..good.len() {
            let mut f = good[..n].to_vec();
            assert!(
                matches!(
                    process(&bed.svc, &t, &mut w, &mut f, 0, 100),
                    Verdict::Drop(_)
                ),
                "prefix {n}"
            );
        }
        let mut f = good.clone();
        f[14 + 8] = 1; // TTL 1: cannot be forwarded
        let c = {
            let h = &mut f[14..34];
            h[10] = 0;
            h[11] = 0;
            checksum::checksum(h)
        };
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut f, 0, 100),
            Verdict::Drop(DropReason::TtlExpired)
        );
    }

    #[test]
    fn unresolved_next_hop_asks_arp_once_per_second() {
        let bed = Bed::new("dnat", "call-id");
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        let stranger = Ipv4Addr::new(198, 18, 0, 20);
        // A backend answers a client the balancer has never heard from.
        let mut f = sim::udp_frame(
            port_mac(1),
            (B1, 5060),
            (stranger, 5060),
            &response(200, "1 OPTIONS", "o1", "x", ""),
        );
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut f.clone(), 1, 100),
            Verdict::Drop(DropReason::NeighbourUnresolved)
        );
        assert_eq!(
            w.arp_requests.drain().collect::<Vec<_>>(),
            vec![(0, stranger)]
        );
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut f, 1, 100),
            Verdict::Drop(DropReason::NeighbourUnresolved)
        );
        assert!(w.arp_requests.is_empty(), "rate limited");
    }

    #[test]
    fn workers_sharing_tables_agree_on_dialogs() {
        // A client's request on one worker, the backend's answer and the BYE on another.
        let bed = Bed::new("dnat", "call-id");
        let t = bed.mem.tables();
        let c2: Box<WorkerCounters> = Box::default();
        let mut w1 = sim::worker(&bed.counters);
        let mut w2 = sim::worker(&c2);
        let mut placed = std::collections::HashMap::new();
        for i in 0..200 {
            let cid = format!("x{i}");
            let mut f = sim::udp_frame(
                port_mac(0),
                (CLIENT, 5060),
                (VIP, 5060),
                &invite(&cid, "a", 0),
            );
            sim::run(&bed.svc, &t, &mut w1, &mut f, 0, 100);
            placed.insert(cid, addrs(&f).1);
        }
        for (cid, backend) in &placed {
            let bye = format!("BYE sip:b@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK2\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: {cid}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
            let mut f = sim::udp_frame(port_mac(0), (CLIENT, 5060), (VIP, 5060), bye.as_bytes());
            sim::run(&bed.svc, &t, &mut w2, &mut f, 0, 101);
            assert_eq!(addrs(&f).1, *backend);
        }
        let spread = placed.values().filter(|b| b.0 == B1).count();
        assert!((70..=130).contains(&spread), "{spread} of 200 on B1");
    }

    #[test]
    fn four_units_from_one_config_agree_on_a_million_call_ids_and_aors() {
        // Independent units: each parses the config and builds its own tables.
        let six = r#"
[[port]]
name = "back"
address = "198.18.1.1/24"
[[farm]]
name = "pbx"
vip = "198.18.0.2"
backends = [
 { address = "198.18.1.11", weight = 3 }, { address = "198.18.1.12" }, { address = "198.18.1.13", weight = 2 },
 { address = "198.18.1.14" }, { address = "198.18.1.15", weight = 2 }, { address = "198.18.1.16" },
]
"#;
        for removed in [None, Some(3usize)] {
            let units: Vec<Services> = (0..4)
                .map(|_| {
                    let mut s = sim::services(six);
                    if let Some(r) = removed {
                        s.farms[0].backends[r].state = crate::lb::services::BackendState::Down;
                        s.farms[0].table = crate::lb::services::build_table(&s.farms[0].backends);
                    }
                    s
                })
                .collect();
            let mut x = 0x9e37_79b9_u64;
            for i in 0..1_000_000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = if i % 2 == 0 {
                    hash64(format!("{x:x}@198.18.0.10").as_bytes())
                } else {
                    aor_key(&SipUri {
                        scheme: b"sip",
                        user: Some(format!("u{x}").as_bytes()),
                        host: b"siplb.test",
                        port: None,
                        params: b"",
                        headers: b"",
                    })
                };
                let first = units[0].farms[0].pick(key);
                assert!(first.is_some() && Some(first) != removed.map(Some));
                assert!(units[1..].iter().all(|u| u.farms[0].pick(key) == first));
            }
        }
    }
}

mod exception_path {
    use crate::lb::counters::{DropReason, WorkerCounters};
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
    use crate::lb::{process, Verdict};
    use crate::wire::arp;
    use std::net::Ipv4Addr;

    #[test]
    fn the_hosts_own_traffic_goes_to_the_kernel() {
        let cfg = "[[port]]\nname='back'\naddress='198.18.1.1/24'\n[[farm]]\nname='f'\nvip='198.18.0.2'\nnat='snat'\nbackends=[{address='198.18.1.11'}]\n";
        let svc = sim::services(cfg);
        assert!(svc.exception_path, "on by default");
        let mem = SimMemory::new(1 << 10);
        let t = mem.tables();
        let c: Box<WorkerCounters> = Box::default();
        let mut w = sim::worker(&c);
        let own = Ipv4Addr::new(198, 18, 1, 1);
        let b = Ipv4Addr::new(198, 18, 1, 11);
        // A health-check answer to a kernel socket's port.
        let mut f = sim::udp_frame(
            port_mac(0),
            (b, 5060),
            (own, 40000),
            b"SIP/2.0 200 OK\r\n\r\n",
        );
        assert_eq!(process(&svc, &t, &mut w, &mut f, 0, 10), Verdict::ToKernel);
        // The answer to the kernel's ARP request.
        let mut a = vec![0u8; 60];
        arp::write_frame(
            &mut a,
            arp::OP_REPLY,
            host_mac(b),
            b,
            port_mac(0),
            port_mac(0),
            own,
        );
        assert_eq!(process(&svc, &t, &mut w, &mut a, 0, 10), Verdict::ToKernel);
        // Without the exception path they are dropped or answered here.
        let mut off = svc.clone();
        off.exception_path = false;
        let mut f = sim::udp_frame(
            port_mac(0),
            (b, 5060),
            (own, 40000),
            b"SIP/2.0 200 OK\r\n\r\n",
        );
        assert_eq!(
            process(&off, &t, &mut w, &mut f, 0, 10),
            Verdict::Drop(DropReason::SnatNoSession)
        );
    }
}

mod security {
    use crate::lb::counters::{DropReason, WorkerCounters};
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
    use crate::lb::Verdict;
    use std::net::Ipv4Addr;

    fn invite(cid: &str, ua: &str) -> Vec<u8> {
        format!(
            "INVITE sip:b@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{cid}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn deny_scanners_and_floods_are_dropped_and_counted() {
        let cfg = "[security]\ndeny = ['198.18.0.66']\nmax_new_per_source = 5\n[[port]]\nname='f'\naddress='198.18.0.1/24'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nbackends=[{address='198.18.1.11'}]\n";
        let svc = sim::services(cfg);
        let mem = SimMemory::new(1 << 10);
        let t = mem.tables();
        let b = Ipv4Addr::new(198, 18, 1, 11);
        t.neighbours.learn(b, host_mac(b), 1, 1);
        let c: Box<WorkerCounters> = Box::default();
        let mut w = sim::worker(&c);
        let vip = (Ipv4Addr::new(198, 18, 0, 2), 5060);
        let client = (Ipv4Addr::new(198, 18, 0, 10), 5060);
        let mut send = |src, payload: &[u8], now| {
            let mut f = sim::udp_frame(port_mac(0), src, vip, payload);
            sim::run(&svc, &t, &mut w, &mut f, 0, now)
        };
        assert_eq!(
            send(
                (Ipv4Addr::new(198, 18, 0, 66), 5060),
                &invite("d1", "x"),
                10
            ),
            Verdict::Drop(DropReason::Denied)
        );
        assert_eq!(
            send(client, &invite("s1", "friendly-scanner"), 10),
            Verdict::Drop(DropReason::Scanner)
        );
        let verdicts: Vec<Verdict> = (0..8)
            .map(|i| send(client, &invite(&format!("c{i}"), "Linphone"), 11))
            .collect();
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == Verdict::Forward(1))
                .count(),
            5
        );
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == Verdict::Drop(DropReason::Flood))
                .count(),
            3
        );
        // Messages of admitted dialogs are never limited, and a new second has room.
        assert_eq!(
            send(client, &invite("c0", "Linphone"), 11),
            Verdict::Forward(1)
        );
        assert_eq!(
            send(client, &invite("c9", "Linphone"), 12),
            Verdict::Forward(1)
        );
    }
}

mod alg {
    use crate::alg::{self, RewriteError};
    use crate::lb::counters::WorkerCounters;
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
    use crate::lb::Verdict;
    use crate::sip::{Limits, SipMessage};
    use crate::wire::checksum;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::udp::UdpPacket;
    use std::net::Ipv4Addr;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

    fn config(nat: &str, alg: bool) -> String {
        format!(
            "[[port]]\nname='f'\naddress='198.18.0.1/24'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nnat='{nat}'\nalg={alg}\nbackends=[{{address='198.18.1.11'}}]\n"
        )
    }

    /// The SIP text of a frame after checking its IPv4 and UDP lengths and checksums.
    fn sip_of(f: &[u8]) -> String {
        let ip = Ipv4Packet::new_checked(&f[14..]).expect("valid IPv4");
        assert_eq!(checksum::checksum(ip.header()), 0, "IPv4 checksum");
        assert_eq!(14 + ip.total_len(), f.len(), "IPv4 total length");
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(u.len(), ip.payload().len(), "UDP length");
        assert!(u.verify(ip.src(), ip.dst()), "UDP checksum");
        let m = SipMessage::parse(u.payload(), &Limits::default()).expect("parses");
        assert_eq!(m.content_length(), Some(m.body().len()));
        String::from_utf8(u.payload().to_vec()).unwrap()
    }

    struct Bed {
        svc: crate::lb::services::Services,
        mem: SimMemory,
        counters: Box<WorkerCounters>,
    }

    impl Bed {
        fn new(nat: &str, alg: bool) -> Bed {
            let bed = Bed {
                svc: sim::services(&config(nat, alg)),
                mem: SimMemory::new(1 << 10),
                counters: Box::default(),
            };
            let t = bed.mem.tables();
            let b = Ipv4Addr::new(198, 18, 1, 11);
            t.neighbours.learn(b, host_mac(b), 1, 1);
            t.neighbours.learn(CLIENT, host_mac(CLIENT), 0, 1);
            bed
        }

        fn send(&self, port: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), sip: &str) -> Vec<u8> {
            let mut f = sim::udp_frame(port_mac(port), src, dst, sip.as_bytes());
            let t = self.mem.tables();
            let mut w = sim::worker(&self.counters);
            let v = sim::run(&self.svc, &t, &mut w, &mut f, port, 100);
            assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
            f
        }
    }

    const INVITE: &str = "INVITE sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKa1;rport\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: alg1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.18.0.10:5060>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    /// The backend's 200 OK: its own address in Contact and Record-Route, and (in
    /// snat) the balancer's flow address in the Via's received/rport.
    fn ok(via_addr: &str, via_params: &str) -> String {
        format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {via_addr};branch=z9hG4bKa1{via_params}\r\nRecord-Route: <sip:198.18.1.11;lr>\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\nCall-ID: alg1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@198.18.1.11:5060>\r\nContent-Length: 0\r\n\r\n")
    }

    #[test]
    fn dnat_backend_addresses_become_the_vip_in_what_the_phone_receives() {
        let bed = Bed::new("dnat", true);
        let to_backend = bed.send(0, (CLIENT, 5060), (VIP, 5060), INVITE);
        assert_eq!(
            sip_of(&to_backend),
            INVITE.replace("sip:bob@198.18.0.2 ", "sip:bob@198.18.1.11 "),
            "dnat: only the VIP in the Request-URI becomes the backend; the client's addresses stay"
        );
        let out = bed.send(
            1,
            (Ipv4Addr::new(198, 18, 1, 11), 5060),
            (CLIENT, 5060),
            &ok("198.18.0.10:5060", ";rport=5060"),
        );
        let text = sip_of(&out);
        assert!(
            !text.contains("198.18.1."),
            "a backend address leaked:\n{text}"
        );
        assert!(
            text.contains("Record-Route: <sip:198.18.0.2;lr>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Contact: <sip:bob@198.18.0.2:5060>\r\n"),
            "{text}"
        );
        assert_eq!(
            bed.counters.alg_rewritten.get(),
            2,
            "the INVITE and the 200"
        );
    }

    #[test]
    fn snat_the_phone_sees_its_own_address_and_the_backend_sees_the_balancers() {
        let bed = Bed::new("snat", true);
        let to_backend = bed.send(0, (CLIENT, 5060), (VIP, 5060), INVITE);
        let ip = Ipv4Packet::new_checked(&to_backend[14..]).unwrap();
        let sport = UdpPacket::new_checked(ip.payload()).unwrap().src_port();
        assert_eq!(ip.src(), SNAT);
        let flow = format!("198.18.1.1:{sport}");
        let text = sip_of(&to_backend);
        assert!(
            !text.contains("198.18.0.10"),
            "the client's address reached the backend:\n{text}"
        );
        assert!(
            text.contains(&format!("Via: SIP/2.0/UDP {flow};branch")),
            "{text}"
        );
        assert!(
            text.contains(&format!("Contact: <sip:alice@{flow}>")),
            "{text}"
        );
        // The backend answers to the flow; the phone gets its own address back.
        let answer = ok(&flow, &format!(";received=198.18.1.1;rport={sport}"));
        let out = bed.send(
            1,
            (Ipv4Addr::new(198, 18, 1, 11), 5060),
            (SNAT, sport),
            &answer,
        );
        let text = sip_of(&out);
        assert!(
            !text.contains("198.18.1."),
            "a back-side address leaked:\n{text}"
        );
        assert!(text.contains("Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKa1;received=198.18.0.10;rport=5060\r\n"), "{text}");
        assert!(
            text.contains("Contact: <sip:bob@198.18.0.2:5060>\r\n"),
            "{text}"
        );
        assert_eq!(bed.counters.alg_rewritten.get(), 2);
    }

    /// The source port the balancer gave a client's message toward the backend.
    fn snat_port(to_backend: &[u8]) -> u16 {
        let ip = Ipv4Packet::new_checked(&to_backend[14..]).unwrap();
        assert_eq!(ip.src(), SNAT);
        UdpPacket::new_checked(ip.payload()).unwrap().src_port()
    }

    fn destination(f: &[u8]) -> (Ipv4Addr, u16) {
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        (
            ip.dst(),
            UdpPacket::new_checked(ip.payload()).unwrap().dst_port(),
        )
    }

    /// snat: a proxy forwards phone A's INVITE to phone B. B receives A's Via and
    /// Contact as the VIP with a flow token, never a balancer back address; what B
    /// sends back gives the backend A's flow exactly as the backend wrote it.
    #[test]
    fn snat_another_phones_flow_reaches_a_phone_as_the_vip_and_comes_back_exactly() {
        const BOB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
        const BACKEND: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 1, 11), 5060);
        let bed = Bed::new("snat", true);
        bed.mem.tables().neighbours.learn(BOB, host_mac(BOB), 0, 1);
        // B registers: its flow.
        let register = "REGISTER sip:198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.11:5060;branch=z9hG4bKr1;rport\r\nFrom: <sip:bob@pbx.test>;tag=r\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: reg-b@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@198.18.0.11:5060>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let sb = snat_port(&bed.send(0, (BOB, 5060), (VIP, 5060), register));
        // A calls: its flow.
        let sa = snat_port(&bed.send(0, (CLIENT, 5060), (VIP, 5060), INVITE));
        assert_ne!(sa, sb);
        // The proxy forwards the INVITE to B's flow.
        let via_a = format!(
            "Via: SIP/2.0/UDP 198.18.1.1:{sa};branch=z9hG4bKa1;rport={sa};received=198.18.1.1"
        );
        let forwarded = format!("INVITE sip:bob@198.18.1.1:{sb} SIP/2.0\r\nRecord-Route: <sip:198.18.1.11;lr>\r\nVia: SIP/2.0/UDP 198.18.1.11;branch=z9hG4bKk1\r\n{via_a}\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: alg1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.18.1.1:{sa}>\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n");
        let to_b = bed.send(1, BACKEND, (SNAT, sb), &forwarded);
        assert_eq!(destination(&to_b), (BOB, 5060));
        let text = sip_of(&to_b);
        assert!(
            !text.contains("198.18.1."),
            "a back-side address reached B:\n{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "INVITE sip:bob@198.18.0.11:5060 SIP/2.0");
        assert_eq!(lines[1], "Record-Route: <sip:198.18.0.2;lr>");
        assert_eq!(lines[2], "Via: SIP/2.0/UDP 198.18.0.2;branch=z9hG4bKk1");
        let token = |l: &str| {
            let t = l.split("slbf=").nth(1).expect("a flow token");
            t[..alg::token::TOKEN_LEN].to_string()
        };
        let t = token(lines[3]);
        assert_eq!(
            lines[3],
            format!("Via: SIP/2.0/UDP 198.18.0.2:5060;slbf={t};branch=z9hG4bKa1;rport={sa};received=198.18.0.2")
        );
        assert_eq!(
            lines[8],
            format!("Contact: <sip:alice@198.18.0.2:5060;slbf={t}>")
        );
        // B answers with both Vias; the backend receives A's as it wrote it.
        let ok = format!("SIP/2.0 200 OK\r\n{}\r\n{}\r\nRecord-Route: <sip:198.18.0.2;lr>\r\nFrom: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=b\r\nCall-ID: alg1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@198.18.0.11:5060>\r\nContent-Length: 0\r\n\r\n", lines[2], lines[3]);
        let to_backend = bed.send(0, (BOB, 5060), (VIP, 5060), &ok);
        assert_eq!(destination(&to_backend), BACKEND);
        let text = sip_of(&to_backend);
        assert!(text.contains(&format!("\r\n{via_a}\r\n")), "{text}");
        assert!(
            text.contains(&format!("Contact: <sip:bob@198.18.1.1:{sb}>\r\n")),
            "{text}"
        );
        assert!(!text.contains("slbf"), "{text}");
        // B hangs up toward A's Contact, through the Record-Route.
        let bye = format!("BYE sip:alice@198.18.0.2:5060;slbf={t} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.11:5060;branch=z9hG4bKb1;rport\r\nRoute: <sip:198.18.0.2;lr>\r\nFrom: <sip:bob@pbx.test>;tag=b\r\nTo: <sip:alice@pbx.test>;tag=1\r\nCall-ID: alg1@x\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
        let text = sip_of(&bed.send(0, (BOB, 5060), (VIP, 5060), &bye));
        assert!(
            text.starts_with(&format!("BYE sip:alice@198.18.1.1:{sa} SIP/2.0\r\n")),
            "{text}"
        );
        assert!(text.contains("Route: <sip:198.18.1.11;lr>\r\n"), "{text}");
        let foreign = || bed.counters.alg_errors[RewriteError::ForeignToken.index()].get();
        assert_eq!(foreign(), 0);
        // A token of no flow of the farm: forwarded as it is, counted.
        let forged = bye
            .replace(&t, "0123456789abc")
            .replace("CSeq: 1 BYE", "CSeq: 2 BYE");
        let text = sip_of(&bed.send(0, (BOB, 5060), (VIP, 5060), &forged));
        assert!(
            text.starts_with("BYE sip:alice@198.18.0.2:5060;slbf=0123456789abc SIP/2.0\r\n"),
            "{text}"
        );
        assert_eq!(foreign(), 1);
        assert_eq!(bed.counters.alg_rewritten.get(), 6, "every message");
    }

    #[test]
    fn with_the_alg_off_messages_pass_untouched() {
        for nat in ["dnat", "snat"] {
            let bed = Bed::new(nat, false);
            let to_backend = bed.send(0, (CLIENT, 5060), (VIP, 5060), INVITE);
            assert_eq!(sip_of(&to_backend), INVITE);
            let ip = Ipv4Packet::new_checked(&to_backend[14..]).unwrap();
            let src = (
                ip.src(),
                UdpPacket::new_checked(ip.payload()).unwrap().src_port(),
            );
            let answer = ok("198.18.0.10:5060", "");
            let out = bed.send(1, (Ipv4Addr::new(198, 18, 1, 11), 5060), src, &answer);
            assert_eq!(
                sip_of(&out),
                answer,
                "{nat}: the backend's addresses reach the phone"
            );
            assert_eq!(bed.counters.alg_rewritten.get(), 0);
        }
    }
}

mod snat_pool {
    use crate::lb::context::Ctx;
    use crate::lb::counters::{DropReason, WorkerCounters};
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
    use crate::lb::snat::PORTS_PER_ADDRESS;
    use crate::lb::Verdict;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::udp::UdpPacket;
    use std::net::Ipv4Addr;

    const POOL: usize = 32;
    const FIRST: u32 = 0xc612_0164; // 198.18.1.100
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
    const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);

    fn config() -> String {
        "[[port]]\nname='front'\naddress='198.19.0.1/16'\n[[port]]\nname='back'\naddress='198.18.1.1/24'\n[[farm]]\nname='f'\nvip='198.19.0.2'\nnat='snat'\nsnat_addresses=['198.18.1.100-198.18.1.131']\nbackends=[{address='198.18.1.11'}]\n".into()
    }

    /// Spoofed client flow `i`: 32768 ports on each of 198.19.0.0, 198.19.0.1...
    fn client(i: usize) -> (Ipv4Addr, u16) {
        (
            Ipv4Addr::from(0xc613_0000 + (i >> 15) as u32),
            1024 + (i & 0x7fff) as u16,
        )
    }

    fn addrs(f: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify(ip.src(), ip.dst()), "UDP checksum");
        ((ip.src(), u.src_port()), (ip.dst(), u.dst_port()))
    }

    /// A million client flows at once through one farm's pool of 32 addresses, then a
    /// counted refusal for every flow past its capacity while the admitted ones keep
    /// mapping both ways.
    #[test]
    fn a_pool_of_32_addresses_carries_a_million_flows_and_refuses_the_rest() {
        let svc = sim::services(&config());
        let pool: Vec<Ipv4Addr> = (0..POOL as u32)
            .map(|k| Ipv4Addr::from(FIRST + k))
            .collect();
        for a in &pool {
            assert!(svc.is_own(*a) && svc.answers_arp(1, *a), "{a} is ours");
        }
        assert!(pool.iter().all(|a| svc.announced(1).contains(a)));
        assert!(!svc.answers_arp(1, Ipv4Addr::from(FIRST + POOL as u32)));
        let capacity = POOL * PORTS_PER_ADDRESS;
        assert_eq!(capacity, 1_015_808);
        // The forward table at the dataplane's sizing (`slots_for`: load at most 1/2).
        let mem = SimMemory::with_snat(1 << 10, (2 * capacity).next_power_of_two(), 1 + POOL);
        let t = mem.tables();
        let counters: Box<WorkerCounters> = Box::default();
        let mut w = sim::worker(&counters);
        let farm = &svc.farms[0];
        const EXTRA: usize = 1000;
        let mut used = vec![false; capacity];
        let mut admitted = Vec::with_capacity(capacity);
        {
            let mut cx = Ctx {
                svc: &svc,
                t: &t,
                w: &mut w,
                now: 100,
                len: 0,
            };
            for i in 0..capacity + EXTRA {
                match cx.nat_source(farm, 1, client(i), 600) {
                    Ok(Some((a, p))) => {
                        let k = (u32::from(a) - FIRST) as usize;
                        assert!(k < POOL, "{a} is a pool address");
                        let j = k * PORTS_PER_ADDRESS + usize::from(p - 1024);
                        assert!(!used[j], "{a}:{p} given twice");
                        used[j] = true;
                        admitted.push((i, (a, p)));
                    }
                    // What the worker does with the verdict.
                    Err(r) => cx.w.counters.dropped(r),
                    Ok(None) => unreachable!("snat farm"),
                }
            }
        }
        assert_eq!(
            admitted.len(),
            capacity,
            "every (address, port) of the pool"
        );
        assert_eq!(counters.snat_sessions_created.get(), capacity as u64);
        let refused = counters.drops[DropReason::SnatPortsExhausted as usize].get();
        assert_eq!(refused, EXTRA as u64);
        assert_eq!(counters.total_drops(), EXTRA as u64);
        assert_eq!(t.snat.count_live(100), capacity);
        // Admitted flows map both ways: the same mapping again, the reverse lookup,
        // and a backend's answer through the packet path back to the client.
        let neighbours = [(BACKEND, 1u8)];
        for (ip, port) in neighbours {
            t.neighbours.learn(ip, host_mac(ip), port, 1);
        }
        let mut cx = Ctx {
            svc: &svc,
            t: &t,
            w: &mut w,
            now: 101,
            len: 0,
        };
        for &(i, mapped) in [0, capacity / 2, capacity - 1]
            .iter()
            .map(|&n| &admitted[n])
        {
            assert_eq!(cx.nat_source(farm, 1, client(i), 600), Ok(Some(mapped)));
            let (cip, cport) = client(i);
            cx.t.neighbours.learn(cip, host_mac(cip), 0, 1);
            let mut f = sim::udp_frame(
                port_mac(1),
                (BACKEND, 5060),
                mapped,
                b"OPTIONS sip:x@198.18.1.100 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.11:5060;branch=z9hG4bKb\r\nFrom: <sip:pbx@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            );
            let v = sim::run(&svc, &t, cx.w, &mut f, 1, 101);
            assert_eq!(v, Verdict::Forward(0));
            assert_eq!(addrs(&f), ((VIP, 5060), (cip, cport)));
        }
        // A new client's INVITE through the packet path is refused and counted.
        let (nip, nport) = client(capacity + EXTRA);
        let invite = format!("INVITE sip:b@198.19.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP {nip}:{nport};branch=z9hG4bKn\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: n\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
        let mut f = sim::udp_frame(port_mac(0), (nip, nport), (VIP, 5060), invite.as_bytes());
        let v = sim::run(&svc, &t, cx.w, &mut f, 0, 101);
        assert_eq!(v, Verdict::Drop(DropReason::SnatPortsExhausted));
        let Verdict::Drop(r) = v else { unreachable!() };
        cx.w.counters.dropped(r);
        assert_eq!(
            counters.drops[DropReason::SnatPortsExhausted as usize].get(),
            EXTRA as u64 + 1
        );
        assert_eq!(counters.snat_sessions_created.get(), capacity as u64);
    }
}
