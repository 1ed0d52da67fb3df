//! What the SIP scanner promises on any input, checked on one input: shared by the
//! cargo-fuzz target (`fuzz/fuzz_targets/sip_scan.rs`, which includes this file) and
//! the CI test `sip_fuzz.rs`, which runs it over the corpus and random mutations.
//!
//! Beyond "never panics": `SipMessage::parse` under default and tight limits gives
//! exactly what the general grammar alone gives (`parse_general`, no fast path for
//! canonical spellings), the same message or the same error; it returns slices that
//! lie in the input, a body that fits, and the same view without the bytes
//! after the body; the light scan (`SteerView::scan`) accepts whatever the full
//! parser accepts, with the same start line, Call-ID, To tag and CSeq, and where it
//! accepts what the full parser rejects, the fault lies in a field it does not read
//! (see `check_steer`); `next_frame` cuts a stream into frames that parse without panic;
//! `StreamFramer` fed the same bytes in two segments cuts the same messages.

use siplb_core::sip::{
    next_frame, Frame, HeaderName, Limits, SipError, SipMessage, SteerView, StreamFramer,
    StreamItem,
};

/// Runs every check on `data`; panics if a promise is broken.
pub fn check(data: &[u8]) {
    let limits = Limits::default();
    check_message(data, &limits);
    let tight = Limits {
        max_headers: 6,
        max_line_len: 80,
        max_message_len: 700,
    };
    check_message(data, &tight);

    for l in [limits, tight] {
        let (msgs, consumed, end) = one_shot(data, &l);
        let split = data
            .first()
            .map_or(0, |&b| usize::from(b) * data.len() / 256);
        let mut f = StreamFramer::new(l);
        let (mut got, mut eaten, mut failed) = (Vec::new(), 0, false);
        'feed: for seg in [&data[..split], &data[split..]] {
            f.push(seg);
            loop {
                match f.next_item() {
                    Ok(Some(StreamItem::Message(m))) => {
                        eaten += m.len();
                        got.push(m.to_vec());
                    }
                    Ok(Some(StreamItem::KeepAlive(k))) => eaten += k.len(),
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break 'feed;
                    }
                }
            }
        }
        assert_eq!(got, msgs.iter().map(|m| m.to_vec()).collect::<Vec<_>>());
        assert_eq!(eaten, consumed);
        assert!(!failed || end == End::Error);
    }
}

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr_range(), inner.as_ptr_range());
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

fn check_message(data: &[u8], limits: &Limits) {
    let parsed = SipMessage::parse(data, limits);
    assert_eq!(parsed, SipMessage::parse_general(data, limits));
    check_steer(data, limits, parsed);
    let Ok(m) = parsed else {
        return;
    };
    assert!(m.body_offset() <= data.len());
    assert!(within(data, m.body()) && within(data, m.call_id()));
    assert!(!m.call_id().is_empty());
    assert!(within(data, m.cseq().method_raw) && within(data, m.from().uri.host));
    assert!(within(data, m.to().uri.host));
    if let Some(v) = m.via() {
        assert!(within(data, v.host) && within(data, v.transport));
    }
    if let Some(n) = m.content_length() {
        assert_eq!(m.body().len(), n);
        // Bytes after the body are ignored (RFC 3261 §18.3).
        let exact = SipMessage::parse(&data[..m.body_offset() + n], limits).expect("trimmed");
        assert_eq!(exact.call_id(), m.call_id());
        assert_eq!(exact.body(), m.body());
        assert_eq!(exact.via(), m.via());
    }
    assert!(m.headers().count() <= limits.max_headers);
}

#[derive(Debug, PartialEq)]
enum End {
    Incomplete,
    Error,
}

/// Cuts `data` with `next_frame`: the messages, the bytes consumed and why it stopped.
fn one_shot<'a>(data: &'a [u8], limits: &Limits) -> (Vec<&'a [u8]>, usize, End) {
    let (mut msgs, mut at) = (Vec::new(), 0);
    loop {
        match next_frame(&data[at..], limits) {
            Ok(Frame::Message { len }) => {
                assert!(len > 0 && at + len <= data.len());
                check_message(&data[at..at + len], limits);
                msgs.push(&data[at..at + len]);
                at += len;
            }
            Ok(Frame::KeepAlive { len }) => {
                assert!(len == 2 || len == 4);
                at += len;
            }
            Ok(Frame::Incomplete) => return (msgs, at, End::Incomplete),
            Err(_) => return (msgs, at, End::Error),
        }
    }
}

/// The full parser's errors that can come from what the light scan does not read:
/// other fields' names and values, the body's length.
const UNREAD: [SipError; 10] = [
    SipError::BadHeaderLine,
    SipError::DuplicateHeader,
    SipError::MissingFrom,
    SipError::BadFrom,
    SipError::BadVia,
    SipError::BadContact,
    SipError::BadMaxForwards,
    SipError::BadExpires,
    SipError::BadContentLength,
    SipError::ContentLengthExceedsDatagram,
];

/// Checks the light scan on `data` against the full parser; returns whether the light
/// scan accepted it.
///
/// `full` is `SipMessage::parse` of the same bytes. If it accepted them, the light scan
/// must too, with the same fields. If the light scan accepts what the full parser
/// rejects, the full parser's error must be one it cannot see ([`UNREAD`]), and the
/// message cut down to the fields the light scan reads (start line, Call-ID, CSeq, To,
/// a plain From since From is required; no body) must parse fully, to the same fields:
/// the fault lay in what was cut away.
pub fn check_steer(data: &[u8], limits: &Limits, full: Result<SipMessage<'_>, SipError>) -> bool {
    let light = SteerView::scan(data, limits);
    match (full, light) {
        (Ok(m), Ok(v)) => assert_same(&m, &v),
        (Ok(_), Err(e)) => panic!("the light scan refused ({e}) what the full parser accepts"),
        (Err(e), Ok(v)) => {
            assert!(
                UNREAD.contains(&e),
                "the light scan accepted a message whose {e}"
            );
            let cut = read_fields_only(data);
            // The cut message may be longer than a tiny original (a From was added)
            // and its fields are the originals' lines: only the line limit applies.
            let relaxed = Limits {
                max_headers: usize::MAX,
                max_message_len: usize::MAX,
                ..*limits
            };
            let m = SipMessage::parse(&cut, &relaxed).unwrap_or_else(|e2| {
                panic!(
                    "full parser: {e}; cut to the light scan's fields: {e2}\n{}",
                    String::from_utf8_lossy(&cut)
                )
            });
            assert_same(&m, &v);
        }
        (Err(_), Err(_)) => return false,
    }
    true
}

fn assert_same(m: &SipMessage<'_>, v: &SteerView<'_>) {
    assert_eq!(v.start_line(), m.start_line());
    assert_eq!(v.call_id(), m.call_id());
    assert_eq!(v.to_tag(), m.to().tag);
    assert_eq!(v.cseq(), m.cseq());
    assert_eq!((v.method(), v.status()), (m.method(), m.status()));
}

/// The start line and the Call-ID, CSeq and To fields of a message the light scan
/// accepted (so every line ends in CRLF), each with its continuation lines, then a
/// plain From and the empty line.
fn read_fields_only(data: &[u8]) -> Vec<u8> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the light scan found the empty line")
        + 2;
    let mut lines = data[..end].split_inclusive(|&c| c == b'\n');
    let mut out = lines.next().expect("a start line").to_vec();
    let mut keep = false;
    for line in lines {
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let name = line.split(|&c| c == b':').next().unwrap_or_default();
            let name_end = name.len()
                - name
                    .iter()
                    .rev()
                    .take_while(|&&c| c == b' ' || c == b'\t')
                    .count();
            let name = &name[..name_end];
            keep = matches!(
                HeaderName::from_bytes(name),
                HeaderName::CallId | HeaderName::CSeq | HeaderName::To
            ) && line.contains(&b':');
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"f: <sip:a@b>;tag=1\r\n\r\n");
    out
}
