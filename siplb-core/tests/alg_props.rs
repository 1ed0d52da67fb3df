//! Property tests of the SIP ALG rewriter (`siplb_core::alg`). Messages are built from
//! random choices: start line, Via values with `received`/`rport`, Record-Route,
//! Route, Contact with Kamailio's `alias`, From/To, an SDP body with several streams
//! (rejected ones, hold, `a=rtcp`, `rtcp-mux`), spelled with compact names, any case
//! and folded lines. The rules map the server farm's addresses (198.19.0.0/16: a
//! backend, the balancer's SNAT address) to the client side's (198.18.0.0/16). After
//! rewriting and applying in place:
//! - the message parses with `SipMessage::parse` and, when the original did, with rsip;
//! - Content-Length equals the body's length;
//! - no 198.19 address is left in a header the rules cover nor in the SDP;
//! - every other header field and SDP line is byte for byte what it was, and the
//!   in-place result equals the edits spliced into a copy.
//!
//! A second property feeds mutated messages: the rewriter returns a typed error or a
//! message that parses, never panics.

use proptest::prelude::*;
use siplb_core::alg::{
    rewrite, AddrRule, Edits, Mapped, MediaError, MediaFlow, MediaMapper, Outcome, Places, Rules,
};
use siplb_core::sip::{Limits, SipMessage};
use std::net::{Ipv4Addr, SocketAddrV4};

const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 100), 5060);
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 1), 5060);
const SNAT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 100), 1024);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 40000);

/// Random choices, consumed in order; zeros past the end (what shrinking tends to).
struct Dice<'a> {
    rolls: &'a [u32],
    next: usize,
    /// Canonical spelling only (long names, `: `, no folding), which rsip reads.
    plain: bool,
}

impl Dice<'_> {
    fn roll(&mut self, n: usize) -> usize {
        let r = self.rolls.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        r as usize % n.max(1)
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.roll(100) < percent
    }
}

/// A transport address: the farm's (which the rules rewrite) or the client side's.
fn host_port(d: &mut Dice) -> String {
    match d.roll(6) {
        0 => "198.19.1.1".into(),
        1 => "198.19.1.1:5060".into(),
        2 => "198.19.0.100:1024".into(),
        3 => format!("198.18.0.{}", 1 + d.roll(250)),
        4 => format!("198.18.1.{}:{}", 1 + d.roll(250), 2000 + d.roll(60000)),
        _ => "example.com".into(),
    }
}

fn farm_or_client_ip(d: &mut Dice) -> String {
    match d.roll(4) {
        0 => "198.19.1.1".into(),
        1 => "198.19.0.100".into(),
        _ => format!("198.18.0.{}", 1 + d.roll(250)),
    }
}

/// A header name in its long or compact form, in some case.
fn name(d: &mut Dice, long: &str, compact: Option<&str>) -> String {
    if d.plain {
        return long.to_string();
    }
    let n = match compact {
        Some(c) if d.chance(30) => c.to_string(),
        _ => long.to_string(),
    };
    match d.roll(4) {
        0 => n.to_ascii_lowercase(),
        1 => n.to_ascii_uppercase(),
        _ => n,
    }
}

/// `;` before a parameter, sometimes on a folded line.
fn semi(d: &mut Dice) -> &'static str {
    if !d.plain && d.chance(10) {
        "\r\n ;"
    } else {
        ";"
    }
}

fn colon(d: &mut Dice) -> &'static str {
    if d.plain {
        return ": ";
    }
    [": ", ":", " : ", ":\t"][d.roll(4)]
}

fn via(d: &mut Dice, i: usize) -> String {
    let hp = host_port(d);
    let mut v = format!(
        "SIP/2.0/{} {hp}{}branch=z9hG4bK{i}x",
        ["UDP", "TCP"][d.roll(2)],
        semi(d)
    );
    match d.roll(5) {
        0 => v += &format!("{}rport", semi(d)),
        1 => v += &format!("{}rport=1024{}received=198.19.0.100", semi(d), semi(d)),
        2 => {
            v += &format!(
                "{}received={}{}rport=5060",
                semi(d),
                farm_or_client_ip(d),
                semi(d)
            )
        }
        3 => v += &format!("{}received={}", semi(d), farm_or_client_ip(d)),
        _ => {}
    }
    v
}

fn uri(d: &mut Dice) -> String {
    let user = if d.chance(60) { "alice@" } else { "" };
    let mut u = format!("sip:{user}{}", host_port(d));
    if d.chance(30) {
        u += ";lr";
    }
    if d.chance(20) {
        let alias = match d.roll(3) {
            0 => "198.19.0.100~1024~1".to_string(),
            1 => "198.19.1.1~5060~1".to_string(),
            _ => format!("198.18.0.{}~5060~1", 1 + d.roll(250)),
        };
        u += &format!(";alias={alias}");
    }
    u
}

fn name_addr(d: &mut Dice) -> String {
    let display = ["", "\"Alice, A\" ", "Bob "][d.roll(3)];
    let mut v = format!("{display}<{}>", uri(d));
    if d.chance(20) {
        v += &format!("{}received=\"sip:{}\"", semi(d), host_port(d));
    }
    if d.chance(20) {
        v += ";expires=3600";
    }
    v
}

fn list(d: &mut Dice, n: usize, f: impl Fn(&mut Dice) -> String) -> String {
    (0..n).map(|_| f(d)).collect::<Vec<_>>().join(", ")
}

fn sdp(d: &mut Dice) -> String {
    let session = match d.roll(4) {
        0 => "0.0.0.0".to_string(),
        _ => farm_or_client_ip(d),
    };
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 {}\r\ns=-\r\nc=IN IP4 {session}\r\nt=0 0\r\n",
        farm_or_client_ip(d)
    );
    if d.chance(15) {
        s += "a=sendonly\r\n";
    }
    for i in 0..1 + d.roll(3) {
        let port = if d.chance(15) {
            0
        } else {
            2 * (5000 + d.roll(20000))
        };
        let count = if d.chance(10) { "/2" } else { "" };
        s += &format!(
            "m={} {port}{count} RTP/AVP 0 101\r\n",
            ["audio", "video"][i % 2]
        );
        if d.chance(30) {
            s += &format!("c=IN IP4 {}\r\n", farm_or_client_ip(d));
        }
        s += "a=rtpmap:0 PCMU/8000\r\n";
        match d.roll(4) {
            0 => s += &format!("a=rtcp:{}\r\n", port + 1),
            1 => s += &format!("a=rtcp:{} IN IP4 {}\r\n", port + 3, farm_or_client_ip(d)),
            2 => s += "a=rtcp-mux\r\n",
            _ => {}
        }
        if d.chance(20) {
            s += ["a=sendrecv\r\n", "a=recvonly\r\n", "a=inactive\r\n"][d.roll(3)];
        }
    }
    s
}

/// A message and whether its SDP should be relayed through a media table.
fn message(d: &mut Dice) -> Vec<u8> {
    let request = d.chance(60);
    let method = ["INVITE", "MESSAGE", "OPTIONS", "REGISTER", "UPDATE"][d.roll(5)];
    let start = if request {
        format!("{method} {} SIP/2.0", uri(d))
    } else {
        format!("SIP/2.0 {} Whatever", [100, 180, 200, 404][d.roll(4)])
    };
    let mut fields = vec![];
    for i in 0..1 + d.roll(3) {
        let n = 1 + d.roll(2);
        let values = (0..n)
            .map(|k| via(d, i * 2 + k))
            .collect::<Vec<_>>()
            .join(", ");
        fields.push(format!("{}{}{values}", name(d, "Via", Some("v")), colon(d)));
    }
    for (long, compact) in [
        ("Record-Route", None),
        ("Route", None),
        ("Path", None),
        ("Contact", Some("m")),
    ] {
        if d.chance(50) {
            let n = 1 + d.roll(3);
            let v = list(d, n, name_addr);
            fields.push(format!("{}{}{v}", name(d, long, compact), colon(d)));
        }
    }
    let from = format!("<sip:alice@{}>;tag=f1", host_port(d));
    let to = format!("<sip:bob@{}>", host_port(d));
    fields.push(format!("{}{}{from}", name(d, "From", Some("f")), colon(d)));
    fields.push(format!("{}{}{to}", name(d, "To", Some("t")), colon(d)));
    fields.push(format!(
        "{}{}c{}@198.19.1.1",
        name(d, "Call-ID", Some("i")),
        colon(d),
        d.roll(1000)
    ));
    fields.push(format!("CSeq: 7 {method}"));
    fields.push("X-Farm: 198.19.1.1:5060".into());
    let body = if d.chance(70) { sdp(d) } else { String::new() };
    if !body.is_empty() {
        fields.push("Content-Type: application/sdp".into());
    }
    fields.push(format!(
        "{}{}{}",
        name(d, "Content-Length", Some("l")),
        colon(d),
        body.len()
    ));
    // Shuffle a little: move one field to the front of the list.
    let k = d.roll(fields.len());
    let f = fields.remove(k);
    fields.insert(0, f);
    format!("{start}\r\n{}\r\n\r\n{body}", fields.join("\r\n")).into_bytes()
}

/// Maps every stream to the VIP, ports from 20000 in pairs.
struct Table {
    next: u16,
    calls: usize,
}

impl MediaMapper for Table {
    fn map(&mut self, _: &MediaFlow<'_>) -> Result<Mapped, MediaError> {
        let port = self.next;
        self.next += 4;
        self.calls += 1;
        Ok(Mapped {
            addr: *VIP.ip(),
            port,
            rtcp_port: port + 1,
        })
    }
}

fn rules() -> Rules {
    let mut r = Rules::new();
    for (from, to) in [(BACKEND, VIP), (SNAT, CLIENT)] {
        r.push(AddrRule {
            from,
            to,
            places: Places::ALL,
        })
        .unwrap();
    }
    r
}

/// Header fields (folded lines joined) and the body.
fn fields(msg: &[u8]) -> (Vec<String>, String) {
    let text = String::from_utf8_lossy(msg);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut out: Vec<String> = vec![];
    for line in head.split("\r\n") {
        match (line.starts_with([' ', '\t']), out.last_mut()) {
            (true, Some(last)) => {
                last.push_str("\r\n");
                last.push_str(line);
            }
            _ => out.push(line.to_string()),
        }
    }
    (out, body.to_string())
}

fn field_name(field: &str) -> String {
    field
        .split(':')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_content_length(field: &str) -> bool {
    matches!(field_name(field).as_str(), "content-length" | "l")
}

fn covered(field: &str) -> bool {
    let name = field_name(field);
    matches!(
        name.as_str(),
        "via"
            | "v"
            | "record-route"
            | "route"
            | "path"
            | "contact"
            | "m"
            | "from"
            | "f"
            | "to"
            | "t"
    )
}

/// Whether the SNAT port (1024) is written as a port (`:1024`, `rport=1024`,
/// `~1024`).
fn snat_port(field: &str) -> bool {
    let b = field.as_bytes();
    b.windows(6).enumerate().any(|(i, w)| {
        matches!(w[0], b':' | b'=' | b'~')
            && &w[1..5] == b"1024"
            && !w[5].is_ascii_digit()
            && !(w[0] == b':' && b[..i].ends_with(b"Content-Length"))
    }) || b.ends_with(b":1024")
}

fn sdp_rewritable(line: &str) -> bool {
    ["o=", "c=", "m=", "a=rtcp:"]
        .iter()
        .any(|p| line.starts_with(p))
}

fn splice(msg: &[u8], edits: &Edits, new: &[u8]) -> Vec<u8> {
    // The model: each edit spliced into a copy; Content-Length taken from the result.
    let mut out = Vec::new();
    let mut pos = 0;
    for (r, t) in edits.iter() {
        out.extend_from_slice(&msg[pos..r.start]);
        out.extend_from_slice(t);
        pos = r.end;
    }
    out.extend_from_slice(&msg[pos..edits.msg_len()]);
    let (f_model, b_model) = fields(&out);
    let (f_new, b_new) = fields(new);
    assert_eq!(b_model, b_new);
    for (a, b) in f_model.iter().zip(&f_new) {
        if !is_content_length(a) {
            assert_eq!(a, b);
        }
    }
    out
}

fn check(input: &[u8], relay: bool, plain: bool) {
    let limits = Limits::default();
    let m = SipMessage::parse(input, &limits).expect("generated message parses");
    let rsip_ok = rsip::SipMessage::try_from(input).is_ok();
    assert!(
        rsip_ok || !plain,
        "rsip reads every plainly spelled message"
    );
    let mut table = Table {
        next: 20000,
        calls: 0,
    };
    let mut edits = Edits::new();
    let media: Option<&mut dyn MediaMapper> = if relay { Some(&mut table) } else { None };
    let outcome = rewrite(input, &m, &rules(), media, &mut edits).expect("rewrite");
    let mut buf = input.to_vec();
    buf.resize(input.len() + 1024, 0xEE);
    let n = edits.apply(&mut buf).expect("apply");
    buf.truncate(n);
    if outcome == Outcome::Unchanged {
        assert_eq!(buf, input);
    }
    splice(input, &edits, &buf);

    let out = SipMessage::parse(&buf, &limits).expect("rewritten message parses");
    assert_eq!(out.call_id(), m.call_id());
    assert_eq!(out.cseq(), m.cseq());
    if let Some(cl) = out.content_length() {
        assert_eq!(cl, buf.len() - out.body_offset(), "Content-Length");
    }
    if rsip_ok {
        rsip::SipMessage::try_from(&buf[..]).expect("rsip parses the rewritten message");
    }

    let (before, body_before) = fields(input);
    let (after, body_after) = fields(&buf);
    assert_eq!(before.len(), after.len());
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        let request_uri = i == 0 && m.is_request();
        if request_uri || covered(a) {
            assert!(!b.contains("198.19."), "farm address left in {b:?}");
            assert!(!snat_port(b), "SNAT port left in {b:?}");
        } else if !is_content_length(a) {
            assert_eq!(a, b, "a field the rules do not cover changed");
        }
    }
    let lines_before: Vec<_> = body_before.split("\r\n").collect();
    let lines_after: Vec<_> = body_after.split("\r\n").collect();
    assert_eq!(lines_before.len(), lines_after.len());
    for (a, b) in lines_before.iter().zip(&lines_after) {
        if sdp_rewritable(a) {
            assert!(!b.contains("198.19."), "farm address left in SDP {b:?}");
        } else {
            assert_eq!(a, b);
        }
    }
    if relay && !body_before.is_empty() {
        let live = lines_before
            .iter()
            .filter(|l| l.starts_with("m=") && !l.split(' ').nth(1).unwrap().starts_with('0'))
            .count();
        assert_eq!(
            table.calls, live,
            "one mapping per stream that is not rejected"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn rewritten_messages_parse_and_leak_nothing(
        rolls in prop::collection::vec(any::<u32>(), 200),
        relay in any::<bool>(),
        plain in any::<bool>(),
    ) {
        let mut d = Dice { rolls: &rolls, next: 0, plain };
        let msg = message(&mut d);
        check(&msg, relay, plain);
    }

    #[test]
    fn mutated_messages_never_panic(
        rolls in prop::collection::vec(any::<u32>(), 200),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        relay in any::<bool>(),
    ) {
        let mut d = Dice { rolls: &rolls, next: 0, plain: false };
        let mut msg = message(&mut d);
        for (at, byte) in cuts {
            let i = at.index(msg.len());
            match byte % 3 {
                0 => msg[i] = byte,
                1 => { msg.remove(i); }
                _ => msg.insert(i, [b';', b',', b'"', b'<', b'>', b' ', b'\r', b'\n', b':', b'/'][usize::from(byte) % 10]),
            }
        }
        let limits = Limits::default();
        let Ok(m) = SipMessage::parse(&msg, &limits) else { return Ok(()) };
        let mut table = Table { next: 20000, calls: 0 };
        let mut edits = Edits::new();
        let media: Option<&mut dyn MediaMapper> = if relay { Some(&mut table) } else { None };
        if rewrite(&msg, &m, &rules(), media, &mut edits).is_ok() {
            let mut buf = msg.clone();
            buf.resize(msg.len() + 1024, 0);
            let n = edits.apply(&mut buf).expect("apply after a successful rewrite");
            let out = SipMessage::parse(&buf[..n], &limits);
            prop_assert!(out.is_ok(), "{:?}", out);
        }
    }
}
