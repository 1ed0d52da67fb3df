//! Issue 14 items 1, 2 and 6 through the whole packet path (`sim`): tables filled
//! from spoofed sources, the measured To-tag bypass, bans, and the TCP rules.

use crate::lb::counters::{DropReason, WorkerCounters};
use crate::lb::security::limits;
use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
use crate::lb::{Tables, Verdict};
use crate::table::DialogState;
use crate::wire::tcp;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 0, 2), 5060);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);

fn cfg(nat: &str, security: &str) -> String {
    format!(
        "[security]\n{security}\n[[port]]\nname='f'\naddress='198.18.0.1/24'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nnat='{nat}'\nprotocols=['udp','tcp']\nbackends=[{{address='198.18.1.11'}}]\n"
    )
}

/// A request of `method` with Call-ID `cid`; `to_tag` makes it look in-dialog.
fn request(method: &str, cid: &str, to_tag: bool) -> Vec<u8> {
    let tag = if to_tag { ";tag=b1" } else { "" };
    format!(
        "{method} sip:b@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{cid}\r\nFrom: <sip:a@x>;tag=a1\r\nTo: <sip:b@x>{tag}\r\nCall-ID: {cid}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A spoofed source of the 198.18.0.0/15 test range, one per `i`.
fn spoofed(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xC612_0000 | (0x1_0000 + i))
}

struct Bed<'m> {
    svc: crate::lb::services::Services,
    t: Tables<'m>,
    c: Box<WorkerCounters>,
}

impl<'m> Bed<'m> {
    fn new(mem: &'m SimMemory, cfg: &str) -> Self {
        let t = mem.tables();
        t.neighbours.learn(BACKEND, host_mac(BACKEND), 1, 1);
        t.neighbours.learn(CLIENT, host_mac(CLIENT), 0, 1);
        Bed {
            svc: sim::services(cfg),
            t,
            c: Box::default(),
        }
    }

    fn udp(&self, src: Ipv4Addr, payload: &[u8], now: u32) -> Verdict {
        let mut w = sim::worker(&self.c);
        let mut f = sim::udp_frame(port_mac(0), (src, 5060), VIP, payload);
        sim::run(&self.svc, &self.t, &mut w, &mut f, 0, now)
    }

    fn tcp(&self, src: (Ipv4Addr, u16), flags: u8, now: u32) -> Verdict {
        let mut w = sim::worker(&self.c);
        let mut f = sim::tcp_frame(port_mac(0), src, VIP, flags, b"");
        sim::run(&self.svc, &self.t, &mut w, &mut f, 0, now)
    }

    /// The backend's answer to a client's TCP segment (dnat: to the client).
    fn tcp_from_backend(&self, client: (Ipv4Addr, u16), flags: u8, now: u32) -> Verdict {
        let mut w = sim::worker(&self.c);
        let mut f = sim::tcp_frame(port_mac(1), (BACKEND, 5060), client, flags, b"");
        sim::run(&self.svc, &self.t, &mut w, &mut f, 1, now)
    }
}

fn tally(vs: impl IntoIterator<Item = Verdict>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in vs {
        *m.entry(format!("{v:?}")).or_default() += 1;
    }
    m
}

#[test]
fn stray_in_dialog_requests_from_spoofed_sources_leave_no_lasting_state_in_dnat() {
    // 1024 dialog slots; 3000 spoofed sources each send one in-dialog-looking request
    // (To-tagged INVITE, ACK, BYE, CANCEL) of a Call-ID nobody placed.
    let mem = SimMemory::new(1 << 10);
    let bed = Bed::new(&mem, &cfg("dnat", "max_new_per_source = 5"));
    let kinds = [
        ("INVITE", true),
        ("ACK", false),
        ("BYE", false),
        ("CANCEL", false),
    ];
    let verdicts: Vec<Verdict> = (0..3000u32)
        .map(|i| {
            let (m, tag) = kinds[i as usize % 4];
            bed.udp(spoofed(i), &request(m, &format!("stray{i}"), tag), 100)
        })
        .collect();
    println!("strays: {:?}", tally(verdicts.iter().copied()));
    assert!(verdicts.iter().all(|v| *v == Verdict::Forward(1)));
    assert_eq!(bed.c.stray_sip_forwarded.get(), 3000);
    let full = bed.c.dialog_table_full.get();
    println!(
        "dialogs created {}, table full {full}",
        bed.c.dialogs_created.get()
    );
    assert!(full > 0, "the table filled up (and that was counted)");
    // None of it is confirmed: To-tagged INVITEs, ACKs and CANCELs live a
    // transaction (32 s), BYEs the linger time.
    let by_state = bed.t.dialogs.count_by_state(100);
    assert_eq!(by_state[DialogState::Confirmed as usize], 0, "{by_state:?}");
    // A legitimate call while the table is full still completes: placement rests on
    // the Call-ID hash, and the full table was counted.
    assert_eq!(
        bed.udp(CLIENT, &request("INVITE", "legit-1", false), 101),
        Verdict::Forward(1)
    );
    // A transaction later the strays are gone and calls get their dialogs again
    // (before issue 14 they were "confirmed" for 7200 s, in snat with a SNAT port each).
    assert_eq!(bed.t.dialogs.count_live(133), 0);
    let created = bed.c.dialogs_created.get();
    assert_eq!(
        bed.udp(CLIENT, &request("INVITE", "legit-2", false), 133),
        Verdict::Forward(1)
    );
    assert_eq!(bed.c.dialogs_created.get(), created + 1);
    assert_eq!(
        bed.t
            .dialogs
            .get(crate::hash::hash64(b"legit-2"), 133)
            .map(|d| d.state),
        Some(DialogState::Trying)
    );
}

#[test]
fn stray_in_dialog_requests_and_responses_are_dropped_in_snat() {
    let mem = SimMemory::new(1 << 10);
    let bed = Bed::new(&mem, &cfg("snat", ""));
    let kinds = [
        ("INVITE", true),
        ("ACK", false),
        ("BYE", false),
        ("CANCEL", false),
    ];
    for i in 0..400u32 {
        let (m, tag) = kinds[i as usize % 4];
        assert_eq!(
            bed.udp(spoofed(i), &request(m, &format!("s{i}"), tag), 100),
            Verdict::Drop(DropReason::NoDialog)
        );
    }
    let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.1.1:1024;branch=z9hG4bKx\r\nFrom: <sip:b@x>;tag=b1\r\nTo: <sip:a@x>;tag=a1\r\nCall-ID: nobody\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        bed.udp(spoofed(7), response, 100),
        Verdict::Drop(DropReason::NoDialog)
    );
    assert_eq!(bed.c.snat_sessions_created.get(), 0, "no SNAT port taken");
    assert_eq!(bed.t.dialogs.count_live(100), 0);
    // New work still passes.
    assert_eq!(
        bed.udp(CLIENT, &request("INVITE", "legit", false), 100),
        Verdict::Forward(1)
    );
    assert_eq!(bed.c.snat_sessions_created.get(), 1);
    // A stray of a client flow that holds a SNAT session already (its dialog did not
    // fit a full table) goes on through that session: no new port.
    assert_eq!(
        bed.udp(CLIENT, &request("BYE", "not-recorded", false), 101),
        Verdict::Forward(1)
    );
    assert_eq!(bed.c.snat_sessions_created.get(), 1);
    assert_eq!(bed.c.stray_sip_forwarded.get(), 1);
}

#[test]
fn the_measured_to_tag_bypass_is_limited_and_bans_its_source() {
    // Issue 14: with max_new_per_source = 10, 3,000 INVITEs carrying a To-tag from
    // one source all passed and left 3,000 dialogs confirmed for 2 h.
    let mem = SimMemory::new(1 << 12);
    let bed = Bed::new(&mem, &cfg("dnat", "max_new_per_source = 10"));
    let verdicts: Vec<Verdict> = (0..3000u32)
        .map(|i| bed.udp(CLIENT, &request("INVITE", &format!("tt{i}"), true), 100))
        .collect();
    let t = tally(verdicts.iter().copied());
    let live = bed.t.dialogs.count_live(100);
    let confirmed = bed.t.dialogs.count_by_state(100)[DialogState::Confirmed as usize];
    println!("3000 To-tagged INVITEs from one source: {t:?}; dialogs live {live}, confirmed {confirmed}, live after 32 s {}", bed.t.dialogs.count_live(132));
    assert_eq!(t.get("Forward(1)"), Some(&10), "the INVITE bucket's burst");
    assert_eq!(
        t.get("Drop(Flood)"),
        Some(&17),
        "16 overruns, the 17th bans"
    );
    assert_eq!(t.get("Drop(Banned)"), Some(&2973));
    assert_eq!((live, confirmed), (10, 0));
    assert_eq!(bed.t.dialogs.count_live(132), 0);
    let bans = limits::list_bans(&bed.t.rates, 101);
    assert_eq!(bans.len(), 1);
    assert_eq!((bans[0].source, bans[0].reason), (CLIENT, "flood"));
    assert_eq!((bans[0].remaining_s, bans[0].hits), (299, 2973));
    assert_eq!(bed.c.sources_banned.get(), 1);
    // Lifted by hand, the source may call again.
    assert!(limits::unban(&bed.t.rates, CLIENT, 105));
    assert_eq!(
        bed.udp(CLIENT, &request("INVITE", "after", false), 105),
        Verdict::Forward(1)
    );
}

#[test]
fn a_full_rates_table_is_counted_and_its_known_sources_keep_passing() {
    // The simulation's rates table has 4096 slots; 20,000 spoofed sources each start a
    // call within their limit.
    let mem = SimMemory::new(1 << 16);
    let bed = Bed::new(&mem, &cfg("dnat", "max_new_per_source = 5"));
    assert_eq!(
        bed.udp(CLIENT, &request("INVITE", "before", false), 100),
        Verdict::Forward(1)
    );
    let mut legit = 0;
    let verdicts: Vec<Verdict> = (0..20_000u32)
        .map(|i| {
            if i % 5000 == 0 {
                // The legitimate source keeps calling (within its limit) meanwhile.
                legit += usize::from(
                    bed.udp(CLIENT, &request("INVITE", &format!("l{i}"), false), 100)
                        == Verdict::Forward(1),
                );
            }
            bed.udp(spoofed(i), &request("INVITE", &format!("f{i}"), false), 100)
        })
        .collect();
    let t = tally(verdicts);
    println!(
        "20000 spoofed sources: {t:?}; rate_table_full {}; legitimate calls {legit}/4",
        bed.c.rate_table_full.get()
    );
    let refused = *t.get("Drop(RateTableFull)").unwrap_or(&0) as u64;
    assert!(refused > 10_000, "{t:?}");
    assert_eq!(bed.c.rate_table_full.get(), refused, "every one counted");
    assert_eq!(legit, 4, "the source already metered keeps its entry");
}

#[test]
fn tcp_segments_that_are_not_syns_create_no_connection() {
    for nat in ["dnat", "snat"] {
        let mem = SimMemory::new(1 << 10);
        let bed = Bed::new(&mem, &cfg(nat, ""));
        let verdicts: Vec<Verdict> = (0..2000u32)
            .map(|i| bed.tcp((spoofed(i), 40000), tcp::ACK, 100))
            .collect();
        let t = tally(verdicts);
        println!("{nat}: 2000 stray ACKs: {t:?}");
        assert_eq!(bed.t.connections.count_live(100), 0, "{nat}");
        assert_eq!(bed.c.tcp_connections_created.get(), 0);
        if nat == "dnat" {
            assert_eq!(t.get("Forward(1)"), Some(&2000));
            assert_eq!(bed.c.stray_tcp_forwarded.get(), 2000);
        } else {
            assert_eq!(t.get("Drop(TcpNoConnection)"), Some(&2000));
        }
        // A real connection still opens.
        assert_eq!(bed.tcp((CLIENT, 40001), tcp::SYN, 100), Verdict::Forward(1));
        assert_eq!(bed.c.tcp_connections_created.get(), 1);
    }
}

#[test]
fn bogus_tcp_flags_are_dropped() {
    let mem = SimMemory::new(1 << 10);
    let bed = Bed::new(&mem, &cfg("dnat", ""));
    let bogus = (0u8..64)
        .filter(|f| bed.tcp((CLIENT, 40000), *f, 100) == Verdict::Drop(DropReason::TcpBogusFlags))
        .count();
    assert_eq!(bogus, 46);
    let off = Bed::new(&mem, &cfg("dnat", "tcp_drop_bogus_flags = false"));
    assert_eq!(off.tcp((CLIENT, 40002), 0x3F, 100), Verdict::Forward(1));
}

#[test]
fn syn_and_rst_rates_and_connections_per_source_are_limited() {
    let mem = SimMemory::new(1 << 10);
    let bed = Bed::new(
        &mem,
        &cfg(
            "dnat",
            "tcp_syn = { rate = 20, burst = 15 }\ntcp_rst = { rate = 10, burst = 5 }\ntcp_max_connections_per_source = 20\nban_overruns = 0",
        ),
    );
    // SKUDONET's defaults: 15 SYNs at once, then 20 a second.
    let syns = tally((0..40u16).map(|p| bed.tcp((CLIENT, 41000 + p), tcp::SYN, 100)));
    assert_eq!(syns.get("Forward(1)"), Some(&15), "{syns:?}");
    assert_eq!(syns.get("Drop(TcpSynRate)"), Some(&25));
    // 5 more open the next second: 20 connections, the cap.
    let more = tally((40..50u16).map(|p| bed.tcp((CLIENT, 41000 + p), tcp::SYN, 101)));
    assert_eq!(more.get("Forward(1)"), Some(&5), "{more:?}");
    assert_eq!(more.get("Drop(TcpConnectionLimit)"), Some(&5));
    // Closing one (its FIN) makes room for one.
    assert_eq!(
        bed.tcp((CLIENT, 41000), tcp::FIN | tcp::ACK, 101),
        Verdict::Forward(1)
    );
    assert_eq!(bed.tcp((CLIENT, 42000), tcp::SYN, 102), Verdict::Forward(1));
    assert_eq!(
        bed.tcp((CLIENT, 42001), tcp::SYN, 102),
        Verdict::Drop(DropReason::TcpConnectionLimit)
    );
    // RSTs: 5 at once, then 10 a second.
    let rsts = tally((0..20u16).map(|p| bed.tcp((CLIENT, 41001 + p), tcp::RST, 103)));
    assert_eq!(rsts.get("Forward(1)"), Some(&5), "{rsts:?}");
    assert_eq!(rsts.get("Drop(TcpRstRate)"), Some(&15));
}

#[test]
fn under_a_syn_flood_from_spoofed_sources_known_clients_still_connect() {
    let mem = SimMemory::new(1 << 10);
    let bed = Bed::new(&mem, &cfg("dnat", "tcp_untrusted_syn_per_s = 100"));
    // A client that finished a handshake earlier: the backend sent it data.
    let known = (CLIENT, 43000);
    assert_eq!(bed.tcp(known, tcp::SYN, 90), Verdict::Forward(1));
    assert_eq!(
        bed.tcp_from_backend(known, tcp::SYN | tcp::ACK, 90),
        Verdict::Forward(0)
    );
    assert_eq!(bed.tcp(known, tcp::ACK, 90), Verdict::Forward(1));
    assert_eq!(
        bed.tcp_from_backend(known, tcp::ACK | 0x08, 90),
        Verdict::Forward(0)
    );
    // 5000 SYNs from spoofed sources in one second, and the known client reconnecting
    // in the middle of them.
    let mut known_ok = 0;
    let flood = tally((0..5000u32).map(|i| {
        if i % 1000 == 500 {
            let p = 43001 + (i / 1000) as u16;
            known_ok += usize::from(bed.tcp((CLIENT, p), tcp::SYN, 100) == Verdict::Forward(1));
        }
        bed.tcp((spoofed(i), 40000), tcp::SYN, 100)
    }));
    println!("SYN flood: {flood:?}; known client {known_ok}/5");
    assert_eq!(flood.get("Forward(1)"), Some(&100), "the untrusted budget");
    assert_eq!(flood.get("Drop(TcpSynFlood)"), Some(&4900));
    assert_eq!(known_ok, 5);
}

#[test]
fn each_farm_has_its_own_buckets() {
    // Two farms on two VIPs: `[farm.limits]` of the second overrides `[security]`'s
    // INVITE bucket, and the buckets of one source are separate per farm.
    let cfg = "[security]\ninvite = { rate = 2, burst = 2 }\n[[port]]\nname='f'\naddress='198.18.0.1/24'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='a'\nvip='198.18.0.2'\nbackends=[{address='198.18.1.11'}]\n[[farm]]\nname='b'\nvip='198.18.0.3'\nbackends=[{address='198.18.1.11', port=5080}]\n[farm.limits]\ninvite = { rate = 5, burst = 5 }\n";
    let mem = SimMemory::new(1 << 10);
    let bed = Bed::new(&mem, cfg);
    let send = |vip: Ipv4Addr, i: u32| {
        let mut w = sim::worker(&bed.c);
        let mut f = sim::udp_frame(
            port_mac(0),
            (CLIENT, 5060),
            (vip, 5060),
            &request("INVITE", &format!("{vip}-{i}"), false),
        );
        sim::run(&bed.svc, &bed.t, &mut w, &mut f, 0, 100)
    };
    let passed = |vip| {
        (0..10)
            .filter(|i| send(vip, *i) == Verdict::Forward(1))
            .count()
    };
    assert_eq!(
        passed(Ipv4Addr::new(198, 18, 0, 2)),
        2,
        "[security]'s bucket"
    );
    assert_eq!(passed(Ipv4Addr::new(198, 18, 0, 3)), 5, "[farm.limits]");
}

/// A REGISTER of `user` (CSeq `seq`), with or without credentials.
fn register(user: &str, cid: &str, seq: u32, credentials: bool) -> Vec<u8> {
    let auth = if credentials {
        format!("Authorization: Digest username=\"{user}\", realm=\"x\", nonce=\"n\", uri=\"sip:x\", response=\"00\"\r\n")
    } else {
        String::new()
    };
    format!(
        "REGISTER sip:198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{cid}{seq}\r\nFrom: <sip:{user}@x>;tag=r1\r\nTo: <sip:{user}@x>\r\nCall-ID: {cid}\r\nCSeq: {seq} REGISTER\r\nContact: <sip:{user}@198.18.0.10:5060>\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The registrar's answer `code` to a REGISTER of `user`.
fn register_answer(code: u16, user: &str, cid: &str, seq: u32) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{cid}{seq}\r\nFrom: <sip:{user}@x>;tag=r1\r\nTo: <sip:{user}@x>;tag=s1\r\nCall-ID: {cid}\r\nCSeq: {seq} REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

impl Bed<'_> {
    /// The backend's message to `client` (dnat: from the backend, to the client).
    fn backend_says(&self, client: Ipv4Addr, payload: &[u8], now: u32) -> Verdict {
        let mut w = sim::worker(&self.c);
        let mut f = sim::udp_frame(port_mac(1), (BACKEND, 5060), (client, 5060), payload);
        sim::run(&self.svc, &self.t, &mut w, &mut f, 1, now)
    }
}

#[test]
fn refused_credentials_ban_their_source_and_first_challenges_never_count() {
    let mem = SimMemory::new(1 << 12);
    let bed = Bed::new(
        &mem,
        &cfg(
            "dnat",
            "auth_failures = 3\nauth_window_s = 60\nauth_ban_s = 100",
        ),
    );
    let attacker = spoofed(7);
    bed.t.neighbours.learn(attacker, host_mac(attacker), 0, 1);
    // A phone challenged on each of 10 registrations (no credentials yet) and then
    // accepted: never counted.
    for i in 0..10 {
        let cid = format!("phone{i}");
        assert_eq!(
            bed.udp(CLIENT, &register("alice", &cid, 1, false), 10),
            Verdict::Forward(1)
        );
        assert_eq!(
            bed.backend_says(CLIENT, &register_answer(401, "alice", &cid, 1), 10),
            Verdict::Forward(0)
        );
        assert_eq!(
            bed.udp(CLIENT, &register("alice", &cid, 2, true), 10),
            Verdict::Forward(1)
        );
        assert_eq!(
            bed.backend_says(CLIENT, &register_answer(200, "alice", &cid, 2), 10),
            Verdict::Forward(0)
        );
    }
    assert_eq!(
        bed.c.auth_failures.get(),
        0,
        "challenges and accepted credentials"
    );
    // The attacker: challenged, then its credentials refused, three times.
    for i in 0..3 {
        let cid = format!("guess{i}");
        assert_eq!(
            bed.udp(attacker, &register("root", &cid, 1, false), 20),
            Verdict::Forward(1)
        );
        bed.backend_says(attacker, &register_answer(401, "root", &cid, 1), 20);
        assert_eq!(
            bed.udp(attacker, &register("root", &cid, 2, true), 20),
            Verdict::Forward(1)
        );
        bed.backend_says(attacker, &register_answer(401, "root", &cid, 2), 20);
    }
    assert_eq!(bed.c.auth_failures.get(), 3);
    assert_eq!(bed.c.sources_banned.get(), 1, "banned on the 3rd failure");
    let bans = limits::list_bans(&bed.t.rates, 21);
    assert_eq!(bans.len(), 1);
    assert_eq!(
        (bans[0].source, bans[0].reason),
        (attacker, "auth_failures")
    );
    assert_eq!(bans[0].remaining_s, 99);
    assert_eq!(
        bed.udp(attacker, &register("root", "guess9", 1, false), 21),
        Verdict::Drop(DropReason::Banned)
    );
    // The phone is not affected; the ban ends after auth_ban_s.
    assert_eq!(
        bed.udp(CLIENT, &register("alice", "later", 1, false), 21),
        Verdict::Forward(1)
    );
    assert_eq!(
        bed.udp(attacker, &register("root", "guess10", 1, false), 121),
        Verdict::Forward(1)
    );
    // A 403 counts whatever was sent.
    bed.backend_says(attacker, &register_answer(403, "root", "guess10", 1), 121);
    assert_eq!(bed.c.auth_failures.get(), 4);
}

/// Issue 14 item 4, the dataplane's side: new sources go onto the ring once; with
/// `hold` their new work waits for the verdict (retransmissions pass after it), a
/// listed source is banned, a dialog admitted before is not touched.
#[test]
fn dnsbl_new_sources_are_noted_once_held_until_their_verdict_and_listed_ones_banned() {
    use crate::lb::security::dnsbl::judge;
    let mem = SimMemory::new(1 << 12);
    let hold = cfg(
        "dnat",
        "dnsbl = ['bl.test']\ndnsbl_pending = 'hold'\nmax_new_per_source = 10",
    );
    let bed = Bed::new(&mem, &hold);
    let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 66));
    let inv = |src, cid: &str, now| bed.udp(src, &request("INVITE", cid, false), now);
    assert_eq!(inv(a, "a1", 100), Verdict::Drop(DropReason::DnsblPending));
    assert_eq!(
        inv(a, "a1", 100),
        Verdict::Drop(DropReason::DnsblPending),
        "a retransmission before the verdict"
    );
    assert_eq!(inv(b, "b1", 100), Verdict::Drop(DropReason::DnsblPending));
    assert_eq!(bed.t.new_sources.pop(), Some(a));
    assert_eq!(bed.t.new_sources.pop(), Some(b));
    assert_eq!(bed.t.new_sources.pop(), None, "each source once");
    assert_eq!(bed.c.dnsbl_noted.get(), 2);
    judge(&bed.t.rates, a, false, 5, 0, 101).unwrap();
    judge(&bed.t.rates, b, true, 300, 0, 101).unwrap();
    assert_eq!(
        inv(a, "a1", 101),
        Verdict::Forward(1),
        "the retransmission after the verdict"
    );
    assert_eq!(inv(b, "b1", 101), Verdict::Drop(DropReason::Banned));
    assert_eq!(limits::list_bans(&bed.t.rates, 101)[0].reason, "dnsbl");
    // When a's verdict expires (5 s), its dialog's messages still pass while a new
    // call waits.
    let bye = bed.udp(a, &request("BYE", "a1", true), 110);
    assert_eq!(bye, Verdict::Forward(1));
    assert_eq!(inv(a, "a2", 110), Verdict::Drop(DropReason::DnsblPending));
    assert_eq!(bed.t.new_sources.pop(), Some(a), "looked up again");

    // A TCP SYN is new work too: held, then admitted after the verdict.
    let c = Ipv4Addr::new(198, 18, 0, 12);
    assert_eq!(
        bed.tcp((c, 40000), tcp::SYN, 120),
        Verdict::Drop(DropReason::DnsblPending)
    );
    assert_eq!(bed.t.new_sources.pop(), Some(c));
    judge(&bed.t.rates, c, false, 300, 0, 121).unwrap();
    assert_eq!(bed.tcp((c, 40000), tcp::SYN, 121), Verdict::Forward(1));

    // `admit` (the default): new sources are noted and pass meanwhile.
    let mem = SimMemory::new(1 << 12);
    let bed = Bed::new(&mem, &cfg("dnat", "dnsbl = ['bl.test']"));
    let inv = |src, cid: &str, now| bed.udp(src, &request("INVITE", cid, false), now);
    assert_eq!(inv(a, "a1", 100), Verdict::Forward(1));
    assert_eq!(bed.t.new_sources.pop(), Some(a));
    // Off: nothing noted.
    let mem = SimMemory::new(1 << 12);
    let bed = Bed::new(&mem, &cfg("dnat", ""));
    let inv = |src, cid: &str, now| bed.udp(src, &request("INVITE", cid, false), now);
    assert_eq!(inv(a, "a1", 100), Verdict::Forward(1));
    assert_eq!(bed.t.new_sources.pop(), None);
}
