//! What the SIP scanner promises on any input, checked on one input: shared by the
//! cargo-fuzz target (`fuzz/fuzz_targets/sip_scan.rs`, which includes this file) and
//! the CI test `sip_fuzz.rs`, which runs it over the corpus and random mutations.
//!
//! Beyond "never panics": `SipMessage::parse` under default and tight limits gives
//! exactly what the general grammar alone gives (`parse_general`, no fast path for
//! canonical spellings), the same message or the same error; it returns slices that
//! lie in the input, a body that fits, and the same view without the bytes
//! after the body; `next_frame` cuts a stream into frames that parse without panic;
//! `StreamFramer` fed the same bytes in two segments cuts the same messages.

use siplb_core::sip::{next_frame, Frame, Limits, SipMessage, StreamFramer, StreamItem};

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
