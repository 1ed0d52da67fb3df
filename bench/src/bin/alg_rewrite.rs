//! The SIP ALG's cost per message (issue 12: "an INVITE with SDP rewritten vs not
//! rewritten, aim ≤ 1.5×").
//!
//!   cargo run --release -p bench --bin alg_rewrite [-- ROUNDS]
//!   valgrind --tool=callgrind --toggle-collect='*count_rewrite*' alg_rewrite count N [I]
//!
//! Messages:
//! - **toward client**: a record-routed INVITE a Kamailio backend (198.19.1.1) sends
//!   to a registered phone, SDP naming the backend's media (rtpengine), 913 bytes
//!   (`siplb-core/tests/alg_corpus/kamailio_invite_to_callee.sip`).
//!   Rule: backend → VIP:5060 everywhere; SDP relayed through a media table stub.
//!   Rewritten: Request-URI untouched, Record-Route, top Via, Contact, `o=`, `c=`,
//!   `m=`, `a=rtcp`.
//! - **toward backend (snat)**: the scanner corpus' INVITE with SDP (634 bytes) from a
//!   client, rule client → SNAT address in top Via, Contact and SDP; SDP relayed.
//! - **no change**: the toward-client INVITE with a rule for another backend and no
//!   media relay: the memmem searches only.
//! - **callee, snat** and **callee, tokens**: the same INVITE as Kamailio forwards it
//!   to the callee's SNAT flow (198.19.0.100:1030), the caller's Via and Contact naming
//!   the caller's flow (`kamailio_invite_to_callee_snat.sip`), with the rules
//!   `rules_to_client` builds in snat (backend → VIP in the headers, the callee's flow
//!   → the callee in top Via, Contact and Request-URI), no media relay; without and
//!   with flow tokens (`TokenKey` derived and tokens set per message, as the balancer
//!   does), which hide the caller's flow.
//!
//! Rows per message: `parse` (`SipMessage::parse`, what every message costs today);
//! `parse + rewrite` (the rules built, as the balancer does per message, and edits
//! recorded); `copy + parse + rewrite + apply` (the packet
//! copied into a scratch buffer first, since apply changes it, then rewritten in
//! place) and `copy` alone, subtracted for the ratio. The ratio is (parse + rewrite +
//! apply) / parse on medians. Each round times a batch; best and median rounds are
//! printed. Timings move with other load on the machine: run it several times.

use siplb_core::alg::{
    rewrite, AddrRule, AddrSet, Edits, FlowTokens, Mapped, MediaError, MediaFlow, MediaMapper,
    Outcome, Places, Rules, Sdp, TokenKey, TokenWay,
};
use siplb_core::sip::{Limits, SipMessage};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};

const TOWARD_CLIENT: &[u8] =
    include_bytes!("../../../siplb-core/tests/alg_corpus/kamailio_invite_to_callee.sip");

const TOWARD_CALLEE_SNAT: &[u8] =
    include_bytes!("../../../siplb-core/tests/alg_corpus/kamailio_invite_to_callee_snat.sip");

const TOWARD_BACKEND: &[u8] =
    include_bytes!("../../../siplb-core/tests/corpus/valid/invite_sdp.sip");

const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 100), 5060);
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 1), 5060);
const OTHER_BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 2), 5060);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 5060);
const SNAT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 100), 1024);
const CALLEE_FLOW: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 100), 1030);
const CALLEE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 20), 5060);

/// A stand-in for the shared media table: the relay address and the next even port.
struct Stub {
    addr: Ipv4Addr,
    next: u16,
}

impl MediaMapper for Stub {
    fn map(&mut self, _: &MediaFlow<'_>) -> Result<Mapped, MediaError> {
        self.next = if self.next >= 60000 {
            20000
        } else {
            self.next + 2
        };
        Ok(Mapped {
            addr: self.addr,
            port: self.next,
            rtcp_port: self.next + 1,
        })
    }
}

struct Case {
    name: &'static str,
    msg: &'static [u8],
    rules: Vec<AddrRule>,
    /// Flow tokens hiding other flows on the SNAT address.
    tokens: bool,
    relay: Option<Ipv4Addr>,
}

impl Case {
    /// The rules, built per message as the balancer does (they name the flow), in
    /// the worker's reused `Rules`.
    fn rules<'r>(&self, rules: &'r mut Rules) -> &'r Rules {
        rules.clear();
        for r in &self.rules {
            rules.push(*r).expect("the rules fit");
        }
        if self.tokens {
            let mut snat = AddrSet::new();
            snat.insert(*SNAT.ip());
            let t = FlowTokens {
                way: TokenWay::Hide,
                snat,
                vip: VIP,
                key: TokenKey::new(black_box(0x5eed)),
                places: Places::HEADERS,
            };
            rules.set_tokens(t).expect("tokens fit");
        }
        rules
    }
}

fn cases() -> [Case; 5] {
    let rule = |from, to, places| AddrRule { from, to, places };
    let callee = || {
        vec![
            rule(BACKEND, VIP, Places::HEADERS),
            rule(
                CALLEE_FLOW,
                CALLEE,
                Places::TOP_VIA | Places::CONTACT | Places::REQUEST_URI,
            ),
        ]
    };
    [
        Case {
            name: "toward client",
            msg: TOWARD_CLIENT,
            rules: vec![rule(BACKEND, VIP, Places::ALL)],
            tokens: false,
            relay: Some(*VIP.ip()),
        },
        Case {
            name: "toward backend",
            msg: TOWARD_BACKEND,
            rules: vec![rule(
                CLIENT,
                SNAT,
                Places::TOP_VIA | Places::CONTACT | Places::SDP,
            )],
            tokens: false,
            relay: Some(*SNAT.ip()),
        },
        Case {
            name: "no change",
            msg: TOWARD_CLIENT,
            rules: vec![rule(OTHER_BACKEND, VIP, Places::ALL)],
            tokens: false,
            relay: None,
        },
        Case {
            name: "callee, snat",
            msg: TOWARD_CALLEE_SNAT,
            rules: callee(),
            tokens: false,
            relay: None,
        },
        Case {
            name: "callee, tokens",
            msg: TOWARD_CALLEE_SNAT,
            rules: callee(),
            tokens: true,
            relay: None,
        },
    ]
}

fn parse(msg: &[u8], limits: &Limits) -> usize {
    let m = SipMessage::parse(msg, limits).expect("bench message parses");
    m.body_offset() + m.call_id().len()
}

fn parse_rewrite(c: &Case, w: &mut Worker, limits: &Limits) -> usize {
    let m = SipMessage::parse(c.msg, limits).expect("bench message parses");
    let media = c.relay.map(|_| &mut w.stub as &mut dyn MediaMapper);
    let rules = c.rules(&mut w.rules);
    match rewrite(c.msg, &m, rules, media, &mut w.edits).expect("bench message rewrites") {
        Outcome::Unchanged => 0,
        Outcome::Rewritten { len } => len,
    }
}

/// The packet copied into `buf`, then parsed, rewritten and rewritten in place.
fn full(c: &Case, w: &mut Worker, limits: &Limits) -> usize {
    let n = c.msg.len();
    w.buf[..n].copy_from_slice(c.msg);
    let (head, _) = w.buf.split_at(n);
    let m = SipMessage::parse(head, limits).expect("bench message parses");
    let media = c.relay.map(|_| &mut w.stub as &mut dyn MediaMapper);
    let rules = c.rules(&mut w.rules);
    match rewrite(head, &m, rules, media, &mut w.edits).expect("bench message rewrites") {
        Outcome::Unchanged => n,
        Outcome::Rewritten { .. } => w.edits.apply(&mut w.buf).expect("fits"),
    }
}

/// What a worker keeps between messages.
struct Worker {
    stub: Stub,
    rules: Rules,
    edits: Edits,
    buf: Vec<u8>,
}

impl Worker {
    fn new(c: &Case) -> Self {
        Self {
            stub: Stub {
                addr: c.relay.unwrap_or(Ipv4Addr::UNSPECIFIED),
                next: 20000,
            },
            rules: Rules::new(),
            edits: Edits::new(),
            buf: vec![0u8; c.msg.len() + 256],
        }
    }
}

/// `count N [I]`: N SDP views of the body, N parses, then N copy + parse + rewrite +
/// apply, of each message (or of message I only), untimed, for instruction counts
/// under callgrind.
fn count(n: usize, only: Option<usize>, limits: &Limits) {
    #[inline(never)]
    fn count_parse(c: &Case, n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| parse(black_box(c.msg), limits)).sum()
    }
    #[inline(never)]
    fn count_rewrite(c: &Case, w: &mut Worker, n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| full(black_box(c), w, limits)).sum()
    }
    #[inline(never)]
    fn count_sdp(c: &Case, n: usize, limits: &Limits) -> usize {
        let m = SipMessage::parse(c.msg, limits).expect("bench message parses");
        (0..n)
            .map(|_| Sdp::parse(black_box(m.body())).map_or(0, |s| s.media().len()))
            .sum()
    }
    for (i, c) in cases().iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        black_box(count_sdp(c, n, limits));
        let mut w = Worker::new(c);
        black_box(count_parse(c, n, limits));
        black_box(count_rewrite(c, &mut w, n, limits));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    let limits = Limits::default();
    if first.as_deref() == Some("count") {
        let n = args
            .next()
            .map_or(1000, |a| a.parse().expect("N is a number"));
        let only = args.next().map(|a| a.parse().expect("I is a number"));
        count(n, only, &limits);
        return;
    }
    let rounds: usize = first.map_or(21, |a| a.parse().expect("ROUNDS is a number"));
    println!(
        "{:<15} {:>5}  {:<34} {:>8} {:>9}",
        "message", "bytes", "work", "best ns", "median ns"
    );
    for c in cases() {
        let mut w = Worker::new(&c);
        // The result, once, for the record.
        let new_len = full(&c, &mut w, &limits);
        let edits = w.edits.len();
        let batch = 100_000;
        let p = bench::time_batches(rounds, batch, || parse(black_box(c.msg), &limits));
        let pr = bench::time_batches(rounds, batch, || {
            parse_rewrite(black_box(&c), &mut w, &limits)
        });
        let copy = bench::time_batches(rounds, batch, || {
            w.buf[..c.msg.len()].copy_from_slice(black_box(c.msg));
            w.buf[0] as usize
        });
        let f = bench::time_batches(rounds, batch, || full(black_box(&c), &mut w, &limits));
        for (work, (best, median)) in [
            ("parse", p),
            ("parse + rewrite", pr),
            ("copy + parse + rewrite + apply", f),
            ("copy", copy),
        ] {
            println!(
                "{:<15} {:>5}  {:<34} {:>8.1} {:>9.1}",
                c.name,
                c.msg.len(),
                work,
                best,
                median
            );
        }
        println!(
            "{:<15} {:>5}  -> {} bytes, {} edits; (parse + rewrite + apply) / parse = {:.2} (median), {:.2} (best)\n",
            c.name,
            "",
            new_len,
            edits,
            (f.1 - copy.1) / p.1,
            (f.0 - copy.0) / p.0,
        );
    }
}
