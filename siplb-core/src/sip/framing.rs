//! Framing SIP messages on a byte stream (TCP, TLS): each message ends where its
//! Content-Length says (RFC 3261 §18.3), and CRLF keep-alives sit between messages
//! (RFC 5626 §3.5.1; RFC 3261 §7.5 also says to ignore CRLF before a start line).

use super::error::SipError;
use super::header::{self, HeaderName, Scan, Scanner};
use super::limits::Limits;
use super::message;

/// What starts a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of `len` bytes: header section and Content-Length bytes of body.
    /// It is not validated beyond its framing: give `&buf[..len]` to
    /// [`SipMessage::parse`](super::SipMessage::parse).
    Message { len: usize },
    /// A keep-alive: `len` 4 is a "ping" (CRLF CRLF), `len` 2 a "pong" (CRLF) or a
    /// stray CRLF before a start line (RFC 5626 §3.5.1). A CRLF at the very end of the
    /// buffer is a pong: pongs arrive alone and must not wait for more bytes, so a ping
    /// split between its two CRLFs reads as two pongs.
    KeepAlive { len: usize },
    /// More bytes are needed.
    Incomplete,
}

/// How far framing got, with what it knows about the bytes still missing.
enum Progress {
    Done(Frame),
    /// The header section is complete; the message will be this long.
    NeedTotal(usize),
    /// The header section is not complete yet.
    NeedHeaders,
}

/// Frames the message or keep-alive at the start of `buf` (a stream's unconsumed
/// bytes). Content-Length is required on streams ([`SipError::MissingContentLength`]);
/// two of them are [`SipError::DuplicateHeader`] (they would let two parsers cut the
/// stream differently). A frame that would exceed `limits.max_message_len`, or a line
/// that would exceed `max_line_len`, is an error as soon as it is certain, so a peer
/// cannot make the caller buffer without bound.
pub fn next_frame(buf: &[u8], limits: &Limits) -> Result<Frame, SipError> {
    Ok(match progress(buf, limits)? {
        Progress::Done(f) => f,
        Progress::NeedTotal(_) | Progress::NeedHeaders => Frame::Incomplete,
    })
}

fn progress(buf: &[u8], limits: &Limits) -> Result<Progress, SipError> {
    match buf {
        [] | [b'\r'] | [b'\r', b'\n', b'\r'] => return Ok(Progress::NeedTotal(buf.len() + 1)),
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Progress::Done(Frame::KeepAlive { len: 4 })),
        [b'\r', b'\n', ..] => return Ok(Progress::Done(Frame::KeepAlive { len: 2 })),
        [b'\r' | b'\n', ..] => return Err(SipError::BadLineEnding),
        _ => {}
    }
    let need_headers = || {
        if buf.len() >= limits.max_message_len {
            Err(SipError::MessageTooLarge)
        } else {
            Ok(Progress::NeedHeaders)
        }
    };
    let Some((_, headers_offset)) = header::line_at(buf, 0, limits.max_line_len)? else {
        return need_headers();
    };
    let mut scan = Scanner::new(buf, headers_offset, limits.max_headers, limits.max_line_len);
    let mut content_length = None;
    let body_offset = loop {
        match scan.next()? {
            Scan::Field { name, value, .. } => {
                if name == HeaderName::ContentLength {
                    message::once(&mut content_length, value)?;
                }
            }
            Scan::End { body_offset } => break body_offset,
            Scan::Incomplete => return need_headers(),
        }
    };
    let body = message::content_length(content_length.ok_or(SipError::MissingContentLength)?)?;
    let len = body_offset
        .checked_add(body)
        .filter(|&n| n <= limits.max_message_len)
        .ok_or(SipError::MessageTooLarge)?;
    Ok(if buf.len() < len {
        Progress::NeedTotal(len)
    } else {
        Progress::Done(Frame::Message { len })
    })
}

/// One item cut from a stream by [`StreamFramer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamItem<'b> {
    /// A whole message (framed only; parse it with `SipMessage::parse`).
    Message(&'b [u8]),
    /// `\r\n\r\n` (ping) or `\r\n` (pong), as in [`Frame::KeepAlive`].
    KeepAlive(&'b [u8]),
}

/// Reassembles a stream from its segments and cuts it into messages and keep-alives.
/// It owns a growing buffer, so it is for the control plane and tests; the dataplane
/// calls [`next_frame`] on its own buffers. Work is linear in the bytes pushed: while a
/// header section is incomplete only the new bytes are searched for its end, and while
/// a body is incomplete nothing is scanned.
///
/// After an error the stream cannot be resynchronised: every later call returns the
/// same error, and the connection should be closed.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    start: usize,
    limits: Limits,
    wait: Wait,
    failed: Option<SipError>,
}

/// What the framer waits for before framing again.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// This many unconsumed bytes.
    Total(usize),
    /// The end of the header section; the first `searched` unconsumed bytes hold none.
    HeaderEnd { searched: usize },
}

impl StreamFramer {
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            limits,
            wait: Wait::Total(1),
            failed: None,
        }
    }

    /// Appends a segment.
    pub fn push(&mut self, segment: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(segment);
    }

    /// Unconsumed bytes.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete item, `Ok(None)` if more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<StreamItem<'_>>, SipError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match self.wait {
            Wait::Total(n) if pending.len() < n => return Ok(None),
            Wait::HeaderEnd { searched } if pending.len() < self.limits.max_message_len => {
                let from = searched.saturating_sub(3);
                let tail = pending.get(from..).unwrap_or_default();
                if memchr::memmem::find(tail, b"\r\n\r\n").is_none() {
                    self.wait = Wait::HeaderEnd {
                        searched: pending.len(),
                    };
                    return Ok(None);
                }
            }
            _ => {}
        }
        let (len, keepalive) = match progress(pending, &self.limits) {
            Ok(Progress::Done(Frame::Message { len })) => (len, false),
            Ok(Progress::Done(Frame::KeepAlive { len })) => (len, true),
            Ok(Progress::Done(Frame::Incomplete)) | Ok(Progress::NeedHeaders) => {
                self.wait = Wait::HeaderEnd {
                    searched: pending.len(),
                };
                return Ok(None);
            }
            Ok(Progress::NeedTotal(n)) => {
                self.wait = Wait::Total(n);
                return Ok(None);
            }
            Err(e) => {
                self.failed = Some(e);
                return Err(e);
            }
        };
        let from = self.start;
        self.start += len;
        self.wait = Wait::Total(1);
        let bytes = self.buf.get(from..from + len).unwrap_or_default();
        Ok(Some(if keepalive {
            StreamItem::KeepAlive(bytes)
        } else {
            StreamItem::Message(bytes)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:b@example.com SIP/2.0\r\nl: 3\r\n\r\nabc";

    #[test]
    fn frames_messages_and_keepalives() {
        let l = Limits::default();
        assert_eq!(next_frame(MSG, &l), Ok(Frame::Message { len: MSG.len() }));
        assert_eq!(next_frame(&MSG[..MSG.len() - 1], &l), Ok(Frame::Incomplete));
        assert_eq!(next_frame(&MSG[..20], &l), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"", &l), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r", &l), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r\n\r", &l), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r\n", &l), Ok(Frame::KeepAlive { len: 2 }));
        assert_eq!(
            next_frame(b"\r\nOPTIONS", &l),
            Ok(Frame::KeepAlive { len: 2 })
        );
        assert_eq!(
            next_frame(b"\r\n\r\nOPT", &l),
            Ok(Frame::KeepAlive { len: 4 })
        );
        assert_eq!(next_frame(b"\n", &l), Err(SipError::BadLineEnding));
        assert_eq!(next_frame(b"\rX", &l), Err(SipError::BadLineEnding));
    }

    #[test]
    fn framing_errors() {
        let l = Limits::default();
        let no_cl = b"OPTIONS sip:b@example.com SIP/2.0\r\nTo: x\r\n\r\n";
        assert_eq!(next_frame(no_cl, &l), Err(SipError::MissingContentLength));
        let two = b"OPTIONS sip:b@example.com SIP/2.0\r\nContent-Length: 0\r\nl: 4\r\n\r\n";
        assert_eq!(next_frame(two, &l), Err(SipError::DuplicateHeader));
        let neg = b"OPTIONS sip:b@example.com SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(next_frame(neg, &l), Err(SipError::BadContentLength));
        let huge = b"OPTIONS sip:b@example.com SIP/2.0\r\nContent-Length: 99999\r\n\r\n";
        assert_eq!(next_frame(huge, &l), Err(SipError::MessageTooLarge));
        let small = Limits {
            max_message_len: 16,
            ..l
        };
        assert_eq!(
            next_frame(&MSG[..16], &small),
            Err(SipError::MessageTooLarge)
        );
        assert_eq!(next_frame(&MSG[..15], &small), Ok(Frame::Incomplete));
    }

    #[test]
    fn stream_framer_reassembles() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(MSG);
        for cut in 0..stream.len() {
            let mut f = StreamFramer::new(Limits::default());
            let mut out = Vec::new();
            for seg in [&stream[..cut], &stream[cut..]] {
                f.push(seg);
                while let Some(item) = f.next_item().unwrap() {
                    out.push(match item {
                        StreamItem::Message(m) => m.to_vec(),
                        StreamItem::KeepAlive(k) => k.to_vec(),
                    });
                }
            }
            let joined: Vec<u8> = out.concat();
            assert_eq!(joined, stream, "cut at {cut}");
            assert!(
                out.iter().filter(|m| m.as_slice() == MSG).count() == 2,
                "cut at {cut}"
            );
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn stream_framer_stays_failed() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"\nOPTIONS");
        assert_eq!(f.next_item(), Err(SipError::BadLineEnding));
        f.push(MSG);
        assert_eq!(f.next_item(), Err(SipError::BadLineEnding));
    }
}
