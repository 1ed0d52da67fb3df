//! Property tests of the SIP scanner:
//! - a message generated from known fields reads back as those fields however it is
//!   spelled (compact or long names, any case, white space around colons and
//!   separators, folded lines, header order);
//! - any stream of valid messages and keep-alives, cut into segments at any points,
//!   frames into the same messages;
//! - every prefix of a valid message is `Incomplete` to the stream framer;
//! - the light scan for steering reads a generated message as the full parser does,
//!   and reads it still when a field it does not read is broken (the full parser
//!   then refuses it, for a reason in that field);
//! - no input makes the scanner or the framer panic.

mod sip_support;

use proptest::prelude::*;
use sip_support::fuzz_checks::check_steer;
use sip_support::{corpus, scan, Addr, Fields, Start, Steered, Uri, ViaF};
use siplb_core::sip::{
    next_frame, Frame, Limits, SipError, SipMessage, SteerView, StreamFramer, StreamItem,
};

/// The fields of a generated message, and how to spell it.
#[derive(Debug, Clone)]
struct Msg {
    method: Option<&'static str>,
    code: u16,
    ruri_user: Option<String>,
    host: String,
    port: Option<u16>,
    transport: &'static str,
    via_host: String,
    via_port: Option<u16>,
    branch: String,
    rport: Option<Option<u16>>,
    received: Option<String>,
    more_vias: usize,
    from_display: Option<String>,
    from_user: String,
    from_tag: String,
    to_user: String,
    to_tag: Option<String>,
    call_id: String,
    cseq: u32,
    max_forwards: Option<u8>,
    expires: Option<u32>,
    contact_expires: Option<u32>,
    body: Vec<u8>,
    style: Style,
}

#[derive(Debug, Clone)]
struct Style {
    compact: u32,
    case: u32,
    ws: Vec<u8>,
    fold: u32,
    shuffle: u64,
}

const METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "X-CUSTOM",
];

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,20}"
}

fn hostname() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}\\.example\\.com",
        (0u8..=1, any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| format!("198.{}.{b}.{c}", 18 + a)),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("[2001:db8::{a:x}:{b:x}]")),
    ]
}

fn style() -> impl Strategy<Value = Style> {
    (
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(0u8..6, 64),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(compact, case, ws, fold, shuffle)| Style {
            compact,
            case,
            ws,
            fold,
            shuffle,
        })
}

fn msg() -> impl Strategy<Value = Msg> {
    let addresses = (
        proptest::option::of("[a-z0-9][a-z0-9._-]{0,12}"),
        hostname(),
        proptest::option::of(1u16..),
        prop::sample::select(vec!["UDP", "TCP", "TLS", "SCTP", "WS", "udp"]),
        hostname(),
        proptest::option::of(1u16..),
        "z9hG4bK[a-zA-Z0-9.!%*_+`'~-]{1,24}",
        proptest::option::of(proptest::option::of(1u16..)),
        proptest::option::of("198\\.18\\.[0-9]{1,3}\\.[0-9]{1,3}"),
        0usize..3,
    );
    let parties = (
        proptest::option::of(prop_oneof![
            "[A-Za-z][A-Za-z0-9]{0,8}( [A-Za-z0-9]{1,8}){0,2}",
            "\"[A-Za-z ,;:<>@]{0,16}\"",
        ]),
        "[a-z0-9][a-z0-9._-]{0,12}",
        token(),
        "[a-z0-9][a-z0-9._-]{0,12}",
        proptest::option::of(token()),
        "[a-zA-Z0-9.!%*_+`'~()<>:\\\\\"/\\[\\]?{}-]{1,30}(@[a-z0-9.]{1,20})?",
    );
    let numbers = (
        proptest::option::of(prop::sample::select(METHODS.to_vec())),
        100u16..700,
        any::<u32>(),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(any::<u8>(), 0..300),
        style(),
    );
    (addresses, parties, numbers).prop_map(|(a, p, n)| Msg {
        method: n.0,
        code: n.1,
        ruri_user: a.0,
        host: a.1,
        port: a.2,
        transport: a.3,
        via_host: a.4,
        via_port: a.5,
        branch: a.6,
        rport: a.7,
        received: a.8,
        more_vias: a.9,
        from_display: p.0,
        from_user: p.1,
        from_tag: p.2,
        to_user: p.3,
        to_tag: p.4,
        call_id: p.5,
        cseq: n.2,
        max_forwards: n.3,
        expires: n.4,
        contact_expires: n.5,
        body: n.6,
        style: n.7,
    })
}

impl Msg {
    fn cseq_method(&self) -> &'static str {
        self.method.unwrap_or("INVITE")
    }

    fn register(&self) -> bool {
        self.cseq_method() == "REGISTER"
    }

    /// What the scanner must report.
    fn expected(&self) -> Fields {
        let uri = |user: Option<&String>, port| Uri {
            scheme: "sip".into(),
            user: user.cloned(),
            host: self.host.clone(),
            port,
        };
        Fields {
            start: match self.method {
                Some(m) => Start::Request {
                    method: m.into(),
                    uri: uri(self.ruri_user.as_ref(), self.port),
                },
                None => Start::Response { code: self.code },
            },
            via: Some(ViaF {
                transport: self.transport.to_ascii_uppercase(),
                host: self.via_host.clone(),
                port: self.via_port,
                branch: Some(self.branch.clone()),
                rport: self.rport,
                received: self.received.clone(),
            }),
            from: Addr {
                display: self.from_display.clone(),
                uri: uri(Some(&self.from_user), None),
                tag: Some(self.from_tag.clone()),
            },
            to: Addr {
                display: None,
                uri: uri(Some(&self.to_user), None),
                tag: self.to_tag.clone(),
            },
            call_id: self.call_id.clone(),
            cseq: (self.cseq, self.cseq_method().into()),
            max_forwards: self.max_forwards.map(u32::from),
            expires: self.expires,
            contact_expires: self.contact_expires.filter(|_| self.register()),
            content_length: Some(self.body.len()),
            body: self.body.clone(),
        }
    }

    /// The message on the wire, spelled as `style` says.
    fn render(&self) -> Vec<u8> {
        let st = &self.style;
        let mut k = 0usize;
        // Optional LWS, where the grammar allows it; sometimes a folded line.
        let mut lws = |allow_fold: bool| -> String {
            k += 1;
            let w = st.ws[k % st.ws.len()];
            let fold = allow_fold && st.fold & (1 << (k % 32)) != 0;
            let mut s = match w {
                0 | 1 => String::new(),
                2 => " ".into(),
                3 => "\t".into(),
                4 => "  ".into(),
                _ => " \t ".into(),
            };
            if fold {
                s.push_str("\r\n ");
            }
            s
        };
        let sip_uri = |user: Option<&String>, port: Option<u16>| {
            let mut u = String::from("sip:");
            if let Some(user) = user {
                u.push_str(user);
                u.push('@');
            }
            u.push_str(&self.host);
            if let Some(p) = port {
                u.push_str(&format!(":{p}"));
            }
            u
        };

        let mut via = format!(
            "SIP{}/{}2.0{}/{}{}{} {}{}",
            lws(true),
            lws(true),
            lws(true),
            lws(true),
            self.transport,
            lws(false),
            lws(true),
            self.via_host
        );
        if let Some(p) = self.via_port {
            via.push_str(&format!("{}:{}{p}", lws(true), lws(true)));
        }
        let mut params = vec![format!("branch{}={}{}", lws(true), lws(true), self.branch)];
        match self.rport {
            Some(Some(p)) => params.push(format!("rport={p}")),
            Some(None) => params.push("rport".into()),
            None => {}
        }
        if let Some(r) = &self.received {
            params.push(format!("received={r}"));
        }
        params.push("x-extension".into());
        for p in params {
            via.push_str(&format!("{};{}{p}", lws(true), lws(true)));
        }
        for i in 0..self.more_vias {
            via.push_str(&format!(
                "{},{}SIP/2.0/UDP other{i}.example.com",
                lws(true),
                lws(true)
            ));
        }

        let from_display = match &self.from_display {
            Some(d) => format!("{d}{}", lws(true)),
            None => String::new(),
        };
        let from = format!(
            "{from_display}<{}>{};{}tag{}={}{}",
            sip_uri(Some(&self.from_user), None),
            lws(true),
            lws(true),
            lws(true),
            lws(true),
            self.from_tag
        );
        // To in addr-spec form: its parameters belong to the header.
        let mut to = sip_uri(Some(&self.to_user), None);
        if let Some(t) = &self.to_tag {
            to.push_str(&format!("{};{}tag={t}", lws(true), lws(true)));
        }
        let cseq = format!(
            "{}{} {}{}",
            self.cseq,
            lws(true),
            lws(true),
            self.cseq_method()
        );

        let mut fields: Vec<(&str, Option<char>, String)> = vec![
            ("Via", Some('v'), via),
            ("From", Some('f'), from),
            ("To", Some('t'), to),
            ("Call-ID", Some('i'), self.call_id.clone()),
            ("CSeq", None, cseq),
            ("Content-Length", Some('l'), self.body.len().to_string()),
            ("Content-Type", Some('c'), "application/octet-stream".into()),
            ("Subject", Some('s'), "proptest".into()),
        ];
        if let Some(m) = self.max_forwards {
            fields.push(("Max-Forwards", None, m.to_string()));
        }
        if let Some(e) = self.expires {
            fields.push(("Expires", None, e.to_string()));
        }
        let mut contact = format!("<{}>", sip_uri(Some(&self.from_user), Some(5060)));
        if let Some(e) = self.contact_expires {
            contact.push_str(&format!(
                "{};{}expires{}={}{e}",
                lws(true),
                lws(true),
                lws(true),
                lws(true)
            ));
        }
        fields.push(("Contact", Some('m'), contact));
        // Shuffle (Via stays first so it stays the top Via).
        let mut s = st.shuffle;
        for i in (2..fields.len()).rev() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            fields.swap(i, 1 + (s >> 33) as usize % i);
        }

        let mut out = match self.method {
            Some(m) => format!(
                "{m} {} SIP/2.0\r\n",
                sip_uri(self.ruri_user.as_ref(), self.port)
            ),
            None => format!("SIP/2.0 {} Whatever Reason\r\n", self.code),
        };
        for (i, (long, compact, value)) in fields.iter().enumerate() {
            let name: String = match compact {
                Some(c) if st.compact & (1 << i) != 0 => c.to_string(),
                _ => long.to_string(),
            };
            let name: String = name
                .chars()
                .enumerate()
                .map(|(j, ch)| {
                    if st.case & (1 << ((i + j) % 32)) != 0 {
                        ch.to_ascii_uppercase()
                    } else {
                        ch.to_ascii_lowercase()
                    }
                })
                .collect();
            let before = if st.ws[i % st.ws.len()] == 5 { " " } else { "" };
            out.push_str(&format!("{name}{before}:{}{value}\r\n", lws(false)));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_messages_read_back_however_spelled(m in msg()) {
        let wire = m.render();
        prop_assert_eq!(scan(&wire), m.expected(), "{}", String::from_utf8_lossy(&wire));
        // The fast paths for canonical spellings read it as the general grammar does.
        let l = Limits::default();
        prop_assert_eq!(SipMessage::parse(&wire, &l), SipMessage::parse_general(&wire, &l));
    }

    #[test]
    fn light_scan_reads_generated_messages_as_the_full_parser(m in msg(), fault in 0u8..8) {
        let mut wire = m.render();
        // A fault in a field the light scan does not read, as the first header field
        // (the generated ones may be folded): the full parser must refuse the message
        // for that field, the light scan read it all the same.
        let (line, want): (&[u8], &[SipError]) = match fault {
            1 => (b"Max-Forwards: 256\r\n", &[SipError::BadMaxForwards, SipError::DuplicateHeader]),
            2 => (b"From: <sip:a@b\r\n", &[SipError::DuplicateHeader]),
            3 => (b"Via: SIP/2.0/UDP\r\n", &[SipError::BadVia]),
            4 => (b"Expires: -1\r\n", &[SipError::BadExpires, SipError::DuplicateHeader]),
            5 => (b"X Bad: 1\r\n", &[SipError::BadHeaderLine]),
            6 => (b"l: 1x\r\n", &[SipError::DuplicateHeader]),
            7 if !m.body.is_empty() => (b"", &[SipError::ContentLengthExceedsDatagram]),
            _ => (b"", &[]),
        };
        if fault == 7 && !m.body.is_empty() {
            wire.pop();
        }
        let at = wire.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        wire.splice(at..at, line.iter().copied());
        let l = Limits::default();
        let full = SipMessage::parse(&wire, &l);
        match full {
            Ok(_) => prop_assert!(want.is_empty(), "{}", String::from_utf8_lossy(&wire)),
            Err(e) => prop_assert!(want.contains(&e), "{e}: {}", String::from_utf8_lossy(&wire)),
        }
        let v = SteerView::scan(&wire, &l);
        prop_assert!(v.is_ok(), "{:?}: {}", v, String::from_utf8_lossy(&wire));
        prop_assert_eq!(Steered::of(&v.unwrap()), Steered::expected(&m.expected()));
        prop_assert!(check_steer(&wire, &l, full));
    }

    #[test]
    fn streams_frame_the_same_at_any_split(
        msgs in proptest::collection::vec(msg(), 1..4),
        keepalive in proptest::collection::vec(0u8..4, 4),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let wires: Vec<Vec<u8>> = msgs.iter().map(Msg::render).collect();
        let mut stream = Vec::new();
        for (i, w) in wires.iter().enumerate() {
            match keepalive[i] {
                1 => stream.extend_from_slice(b"\r\n\r\n"),
                2 => stream.extend_from_slice(b"\r\n"),
                _ => {}
            }
            stream.extend_from_slice(w);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut framer = StreamFramer::new(Limits::default());
        let (mut got, mut prev) = (Vec::new(), 0);
        for cut in cuts.into_iter().chain([stream.len()]) {
            framer.push(&stream[prev..cut]);
            prev = cut;
            while let Some(item) = framer.next_item().unwrap() {
                if let StreamItem::Message(m) = item {
                    got.push(m.to_vec());
                }
            }
        }
        prop_assert_eq!(framer.buffered(), 0);
        prop_assert_eq!(&got, &wires);
        for (g, m) in got.iter().zip(&msgs) {
            prop_assert_eq!(scan(g), m.expected());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let l = Limits::default();
        let _ = SipMessage::parse(&bytes, &l);
        let _ = next_frame(&bytes, &l);
    }

    #[test]
    fn mutated_corpus_messages_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let files = corpus("valid");
        let mut buf = files[which.index(files.len())].1.clone();
        for (at, byte, op) in edits {
            let i = at.index(buf.len() + 1);
            match op {
                0 if i < buf.len() => buf[i] = byte,
                1 => buf.insert(i, byte),
                _ => buf.truncate(i),
            }
        }
        let l = Limits::default();
        if let Ok(m) = SipMessage::parse(&buf, &l) {
            prop_assert!(m.body_offset() <= buf.len());
            prop_assert!(!m.call_id().is_empty());
            let _ = m.headers().count();
        }
        let _ = next_frame(&buf, &l);
    }
}

/// Every proper prefix of a valid message is incomplete to the framer, the whole is a
/// message, and a UDP parse of a prefix fails.
#[test]
fn every_prefix_is_incomplete() {
    let l = Limits::default();
    for (name, buf) in corpus("valid") {
        assert_eq!(
            next_frame(&buf, &l),
            Ok(Frame::Message { len: buf.len() }),
            "{name}"
        );
        for k in 0..buf.len() {
            assert_eq!(
                next_frame(&buf[..k], &l),
                Ok(Frame::Incomplete),
                "{name} at {k}"
            );
            assert!(SipMessage::parse(&buf[..k], &l).is_err(), "{name} at {k}");
        }
    }
}
