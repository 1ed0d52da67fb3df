//! What the SIP ALG promises on any input, checked on one input: shared by the
//! cargo-fuzz target (`fuzz/fuzz_targets/alg_rewrite.rs`, which includes this file)
//! and the CI test `alg_fuzz.rs`, which runs it over the corpora and mutations.
//!
//! Beyond "never panics": the SDP view's spans lie in the body and read back as the
//! addresses and ports it reports; for a message the scanner accepts, under five
//! rule sets (toward a client with media relayed, toward a backend in snat, rules
//! without relay, and both snat directions with flow tokens), `rewrite` returns a typed error, or `Unchanged` with no edit, or
//! edits that `apply` turns into exactly the length announced, in a buffer of
//! exactly that capacity; one byte less is `TooLarge` with the buffer untouched. The
//! result parses, keeps Call-ID and CSeq, has a Content-Length equal to its body, and
//! differs from the input only at the edits and the Content-Length value.

use siplb_core::alg::sdp::{Address, Sdp};
use siplb_core::alg::{
    rewrite, AddrRule, AddrSet, EditError, Edits, FlowTokens, Mapped, MediaError, MediaFlow,
    MediaMapper, Outcome, Places, Rules, TokenKey, TokenWay,
};
use siplb_core::sip::{Limits, SipMessage};
use std::net::{Ipv4Addr, SocketAddrV4};

const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 100), 5060);
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 1), 5060);
const SNAT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 100), 1024);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 5060);
const CLIENT_NAT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 40000);

/// Hands out ports from 20000; refuses streams whose port ends in 7 (to reach the
/// error path too).
struct Table {
    addr: Ipv4Addr,
    next: u16,
}

impl MediaMapper for Table {
    fn map(&mut self, f: &MediaFlow<'_>) -> Result<Mapped, MediaError> {
        if f.stream.port % 10 == 7 {
            return Err(MediaError::Exhausted);
        }
        let port = self.next;
        self.next = self.next.wrapping_add(2).max(20000);
        Ok(Mapped {
            addr: self.addr,
            port,
            rtcp_port: port + 1,
        })
    }
}

fn rules(list: &[(SocketAddrV4, SocketAddrV4, Places)]) -> Rules {
    let mut r = Rules::new();
    for &(from, to, places) in list {
        r.push(AddrRule { from, to, places }).expect("rules fit");
    }
    r
}

/// Runs every check on `data`; panics if a promise is broken.
pub fn check(data: &[u8]) {
    check_sdp(data);
    let limits = Limits::default();
    let Ok(msg) = SipMessage::parse(data, &limits) else {
        return;
    };
    check_sdp(msg.body());
    let toward_client = rules(&[(BACKEND, VIP, Places::ALL), (SNAT, CLIENT_NAT, Places::ALL)]);
    let toward_backend = rules(&[(
        CLIENT,
        SNAT,
        Places::TOP_VIA | Places::CONTACT | Places::SDP,
    )]);
    check_rewrite(data, &msg, &toward_client, Some(*VIP.ip()));
    check_rewrite(data, &msg, &toward_backend, Some(*SNAT.ip()));
    check_rewrite(data, &msg, &toward_client, None);
    // snat with flow tokens: a pool around the SNAT address and the backends'.
    let mut snat = AddrSet::new();
    for a in [SNAT.ip().octets(), [198, 19, 0, 101], [198, 19, 1, 100]] {
        snat.insert(Ipv4Addr::from(a));
    }
    let tokens = |way| FlowTokens {
        way,
        snat,
        vip: VIP,
        key: TokenKey::new(1),
        places: Places::HEADERS,
    };
    let mut hide = rules(&[
        (BACKEND, VIP, Places::HEADERS),
        (
            SNAT,
            CLIENT_NAT,
            Places::TOP_VIA | Places::CONTACT | Places::REQUEST_URI,
        ),
    ]);
    hide.set_tokens(tokens(TokenWay::Hide)).expect("tokens fit");
    let mut restore = rules(&[
        (VIP, BACKEND, Places::REQUEST_URI | Places::ROUTE),
        (CLIENT, SNAT, Places::TOP_VIA | Places::CONTACT),
    ]);
    restore
        .set_tokens(tokens(TokenWay::Restore))
        .expect("tokens fit");
    check_rewrite(data, &msg, &hide, None);
    check_rewrite(data, &msg, &restore, None);
}

/// Dotted-quad text read as the SDP view reads it (leading zeros are decimal).
fn ipv4_text(t: &[u8]) -> Option<Ipv4Addr> {
    let parts: Vec<u8> = std::str::from_utf8(t)
        .ok()?
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    <[u8; 4]>::try_from(parts).ok().map(Ipv4Addr::from)
}

fn check_sdp(body: &[u8]) {
    let Ok(sdp) = Sdp::parse(body) else {
        return;
    };
    let text = |r: std::ops::Range<usize>| body.get(r).expect("span inside the body");
    if let Some(o) = sdp.origin() {
        let t = text(o.span.range());
        if let Address::V4(ip) = o.addr {
            assert_eq!(ipv4_text(t), Some(ip));
        }
    }
    for m in sdp.media() {
        assert!(m.port_count >= 1);
        let section = text(m.section.range());
        assert!(section.starts_with(b"m="));
        let number = |t: &[u8]| std::str::from_utf8(t).ok()?.parse::<u16>().ok();
        assert_eq!(number(text(m.port_span.range())), Some(m.port));
        if let Some(r) = &m.rtcp {
            assert_eq!(number(text(r.port_span.range())), Some(r.port));
        }
        if !m.is_rejected() {
            assert!(sdp.connection_of(m).is_some());
        }
        for c in m.connection.iter().chain(sdp.connection()) {
            let t = text(c.span.range());
            if let Address::V4(ip) = c.addr {
                assert_eq!(ipv4_text(t), Some(ip));
            }
        }
    }
}

fn check_rewrite(data: &[u8], msg: &SipMessage<'_>, rules: &Rules, relay: Option<Ipv4Addr>) {
    let mut table = Table {
        addr: relay.unwrap_or(Ipv4Addr::UNSPECIFIED),
        next: 20000,
    };
    let media = relay.map(|_| &mut table as &mut dyn MediaMapper);
    let mut edits = Edits::new();
    let len = match rewrite(data, msg, rules, media, &mut edits) {
        Err(_) => return,
        Ok(Outcome::Unchanged) => {
            assert!(edits.is_empty());
            return;
        }
        Ok(Outcome::Rewritten { len }) => len,
    };
    let msg_len = edits.msg_len();
    assert!(msg_len <= data.len());
    let mut buf = data[..msg_len].to_vec();
    buf.resize(len.max(msg_len), 0x55);
    let n = edits
        .apply(&mut buf[..len.max(msg_len)])
        .expect("applies within its announced length");
    assert_eq!(n, len);
    if len > msg_len {
        let mut short = data[..msg_len].to_vec();
        short.resize(len - 1, 0x55);
        let before = short.clone();
        assert_eq!(edits.apply(&mut short), Err(EditError::TooLarge));
        assert_eq!(short, before, "a refused apply touched the buffer");
    }
    let out = &buf[..n];
    let relaxed = Limits {
        max_line_len: 65535,
        ..Limits::default()
    };
    let parsed = SipMessage::parse(out, &relaxed).expect("the rewritten message parses");
    assert_eq!(parsed.call_id(), msg.call_id());
    assert_eq!(parsed.cseq(), msg.cseq());
    if let Some(cl) = parsed.content_length() {
        assert_eq!(
            cl,
            n - parsed.body_offset(),
            "Content-Length is the body's length"
        );
    }

    // The model: every edit spliced into a copy. It differs from the result only on
    // the Content-Length line.
    let mut model = Vec::new();
    let mut pos = 0;
    for (r, t) in edits.iter() {
        model.extend_from_slice(&data[pos..r.start]);
        model.extend_from_slice(t);
        pos = r.end;
    }
    model.extend_from_slice(&data[pos..msg_len]);
    let lines = |b: &[u8]| {
        b.split(|&c| c == b'\n')
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
    };
    let (a, b) = (lines(&model), lines(out));
    assert_eq!(a.len(), b.len());
    // The header a line belongs to: its own name, or, for a folded continuation
    // line (starting with a space or tab), the name of the line it continues.
    let mut header = String::new();
    for (x, y) in a.iter().zip(&b) {
        if !x.starts_with(b" ") && !x.starts_with(b"\t") {
            let name = x.split(|&c| c == b':').next().unwrap_or_default();
            header = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
        }
        if x != y {
            let name = &header;
            assert!(
                name == "content-length" || name == "l",
                "a line changed outside the edits: {:?} -> {:?}",
                String::from_utf8_lossy(x),
                String::from_utf8_lossy(y)
            );
        }
    }
}
