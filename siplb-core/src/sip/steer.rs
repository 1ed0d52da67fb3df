//! The light scan for steering: a message that belongs to a known dialog or
//! registration needs only its start line, Call-ID, To tag and CSeq to be steered, so
//! [`SteerView::scan`] reads those and nothing else of substance.

use super::abnf::{self, at};
use super::error::SipError;
use super::header::{HeaderName, Scan, Scanner};
use super::limits::Limits;
use super::message::{self, CSeq, StartLine};
use super::method::Method;
use super::name_addr::{self, NameAddr};

/// The fields steering needs, from a light scan of one message.
///
/// What is validated, with the same grammar and the same [`SipError`] kinds as
/// [`SipMessage::parse`](super::SipMessage::parse):
/// - the size (`max_message_len`) and a datagram of nothing but CR/LF;
/// - the start line: a Request-Line (method, Request-URI, `SIP/2.0`) or a Status-Line;
/// - the structure of the header section: every line ends in CRLF and fits
///   `max_line_len`, at most `max_headers` fields, no continuation line before the
///   first field, and the empty line that ends it (the body is never read);
/// - Call-ID, CSeq and To: present, once each, well formed (To as a whole name-addr,
///   so its tag is the one the full parser finds), and the CSeq method equal to the
///   request's.
///
/// What is not: From, Via, Max-Forwards, Expires, Content-Length, Contact and every
/// other field, beyond their lines' CRLF and length (a field line without a valid
/// `name:` is not noticed unless its name starts like one of the three), and the
/// body. So whenever `SipMessage::parse` accepts a message this scan accepts it with
/// equal fields; where this scan accepts a message the full parser rejects, the fault
/// lies in what is not validated (the tests and the fuzz target check both).
///
/// Use it only where those fields decide everything: a message that creates a dialog
/// or a registration, or is out of any dialog, goes through the full parser.
///
/// Header names are found on every line start (any case, long or compact form,
/// `i:`/`t:`), not by searching for `Call-ID:`: names are case-insensitive and a second
/// Call-ID spelled `i:` must be refused, so no line start may be skipped. Line ends of
/// the other fields are found by `memchr` (SIMD); the three fields take the full
/// parser's fast paths when spelled canonically, else its general grammar for that
/// field (folding, white space before the colon, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteerView<'a> {
    start_line: StartLine<'a>,
    call_id: &'a [u8],
    to_tag: Option<&'a [u8]>,
    cseq: CSeq<'a>,
}

/// What the walk found of the three fields.
struct Found<'a> {
    /// Bit `1 << HeaderName as u32` for each of the three fields met.
    seen: u32,
    /// Those of them that a fast path parsed into the view.
    fast: u32,
    /// Raw values by `HeaderName` (Call-ID 0, CSeq 1, To 3), for the general grammar.
    raw: [&'a [u8]; 4],
    /// Where a fast path parses To.
    to: NameAddr<'a>,
}

impl<'a> SteerView<'a> {
    /// Scans `buf`, one whole message (a UDP datagram or a frame cut by
    /// [`next_frame`](super::next_frame)), for the fields steering needs. Zero-copy, no
    /// allocation; the work is bounded by `limits` as in the full parser.
    pub fn scan(buf: &'a [u8], limits: &Limits) -> Result<Self, SipError> {
        // Built in place, as `SipMessage::parse` builds its view.
        let mut view = Self {
            start_line: StartLine::EMPTY,
            call_id: b"",
            to_tag: None,
            cseq: CSeq::EMPTY,
        };
        let mut pos = message::start_line(buf, limits, true, &mut view.start_line)?;
        let mut f = Found {
            seen: 0,
            fast: 0,
            raw: [b""; 4],
            to: NameAddr::EMPTY,
        };
        let mut fields = 0;
        loop {
            if abnf::lit_at(buf, pos, b"\r\n") {
                break;
            }
            let first = at(buf, pos).ok_or(SipError::IncompleteHeaders)?;
            // Continuation lines are consumed with their field, so one here comes
            // before the first field (§7.3.1).
            if first == b' ' || first == b'\t' {
                return Err(SipError::BadHeaderLine);
            }
            fields += 1;
            if fields > limits.max_headers {
                return Err(SipError::TooManyHeaders);
            }
            pos = match first | 0x20 {
                b'c' | b't' | b'i' => f.candidate(&mut view, buf, pos, limits)?,
                _ => skip_field(buf, pos, limits)?,
            };
        }

        // What no fast path parsed, by the full parser's general grammar.
        if f.fast & CALL_ID == 0 {
            if f.seen & CALL_ID == 0 {
                return Err(SipError::MissingCallId);
            }
            view.call_id = message::call_id(f.raw[0]).ok_or(SipError::BadCallId)?;
        }
        if f.fast & CSEQ == 0 {
            if f.seen & CSEQ == 0 {
                return Err(SipError::MissingCSeq);
            }
            view.cseq = message::parse_cseq(f.raw[1]).ok_or(SipError::BadCSeq)?;
        }
        view.to_tag = if f.fast & TO != 0 {
            f.to.tag
        } else {
            if f.seen & TO == 0 {
                return Err(SipError::MissingTo);
            }
            message::from_to(f.raw[3]).ok_or(SipError::BadTo)?.tag
        };
        if let StartLine::Request { method_raw, .. } = view.start_line {
            if method_raw != view.cseq.method_raw {
                return Err(SipError::CSeqMethodMismatch);
            }
        }
        Ok(view)
    }

    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start_line
    }

    /// The request method; `None` for a response.
    pub fn method(&self) -> Option<Method> {
        match self.start_line {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code; `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match self.start_line {
            StartLine::Request { .. } => None,
            StartLine::Response { code, .. } => Some(code),
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start_line, StartLine::Request { .. })
    }

    /// The Call-ID value, trimmed.
    pub fn call_id(&self) -> &'a [u8] {
        self.call_id
    }

    /// The `tag` parameter of To; `None` outside a dialog.
    pub fn to_tag(&self) -> Option<&'a [u8]> {
        self.to_tag
    }

    pub fn cseq(&self) -> CSeq<'a> {
        self.cseq
    }
}

const CALL_ID: u32 = 1 << HeaderName::CallId as u32;
const CSEQ: u32 = 1 << HeaderName::CSeq as u32;
const TO: u32 = 1 << HeaderName::To as u32;

impl<'a> Found<'a> {
    /// Reads the field at `pos`, whose name may be Call-ID, CSeq or To; returns where
    /// the next field starts.
    #[inline(always)]
    fn candidate(
        &mut self,
        view: &mut SteerView<'a>,
        buf: &'a [u8],
        pos: usize,
        limits: &Limits,
    ) -> Result<usize, SipError> {
        let Some((name, colon)) = HeaderName::guess_recorded(buf, pos) else {
            return self.general(buf, pos, limits);
        };
        let bit = 1 << name as u32;
        if bit & (CALL_ID | CSEQ | TO) == 0 {
            return skip_field(buf, pos, limits);
        }
        if self.seen & bit != 0 {
            return Err(SipError::DuplicateHeader);
        }
        let v = colon + 1;
        let end = match name {
            HeaderName::CallId => message::canonical_call_id(buf, v, &mut view.call_id),
            HeaderName::CSeq => message::canonical_cseq(buf, v, &mut view.cseq),
            _ => name_addr::parse_canonical(buf, v, false, &mut self.to).map(|p| p.0),
        };
        // A fast path's value must end its line, and no continuation may follow.
        let plain = end.filter(|&e| {
            abnf::lit_at(buf, e, b"\r\n")
                && e - pos <= limits.max_line_len
                && matches!(at(buf, e + 2), Some(c) if c != b' ' && c != b'\t')
        });
        match plain {
            Some(e) => {
                self.seen |= bit;
                self.fast |= bit;
                Ok(e + 2)
            }
            None => self.general(buf, pos, limits),
        }
    }

    /// Reads the field at `pos` with the general grammar.
    #[cold]
    fn general(&mut self, buf: &'a [u8], pos: usize, limits: &Limits) -> Result<usize, SipError> {
        // The caller counted the field against `max_headers`.
        let mut scan = Scanner::one_field(buf, pos, usize::MAX, limits.max_line_len);
        let Scan::Field { name, value, .. } = scan.next()? else {
            // The caller saw a non-empty line at `pos`: only a missing line end remains.
            return Err(SipError::IncompleteHeaders);
        };
        let bit = 1 << name as u32;
        if bit & (CALL_ID | CSEQ | TO) != 0 {
            if self.seen & bit != 0 {
                return Err(SipError::DuplicateHeader);
            }
            self.seen |= bit;
            if let Some(slot) = self.raw.get_mut(name as usize) {
                *slot = value;
            }
        }
        Ok(scan.pos())
    }
}

/// Steps over the field at `pos` and its continuation lines, checking only that each
/// line ends in CRLF within `max_line_len`; returns where the next field starts.
#[inline(always)]
fn skip_field(buf: &[u8], pos: usize, limits: &Limits) -> Result<usize, SipError> {
    let mut line = pos;
    loop {
        let Some(nl) = message::find_lf(buf, line) else {
            // As the full parser: a partial line already too long can never be valid.
            return Err(
                if buf.len() - line > limits.max_line_len.saturating_add(1) {
                    SipError::LineTooLong
                } else {
                    SipError::IncompleteHeaders
                },
            );
        };
        if nl == line || at(buf, nl - 1) != Some(b'\r') {
            return Err(SipError::BadLineEnding);
        }
        if nl - 1 - line > limits.max_line_len {
            return Err(SipError::LineTooLong);
        }
        match at(buf, nl + 1) {
            Some(b' ' | b'\t') => line = nl + 1,
            Some(_) => return Ok(nl + 1),
            None => return Err(SipError::IncompleteHeaders),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::SipMessage;

    const ACK: &[u8] = b"ACK sip:bob@198.18.0.20:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-ack-1\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@198.18.0.10>;tag=a1\r\n\
To: <sip:bob@198.18.0.20>;tag=b2\r\n\
Call-ID: c0ffee@198.18.0.10\r\n\
CSeq: 1 ACK\r\n\
Content-Length: 0\r\n\
\r\n";

    fn scan(buf: &[u8]) -> Result<SteerView<'_>, SipError> {
        SteerView::scan(buf, &Limits::default())
    }

    #[test]
    fn reads_the_fields_of_an_in_dialog_ack() {
        let v = scan(ACK).unwrap();
        assert_eq!(v.method(), Some(Method::Ack));
        assert_eq!(v.status(), None);
        assert!(v.is_request());
        assert_eq!(v.call_id(), b"c0ffee@198.18.0.10");
        assert_eq!(v.to_tag(), Some(&b"b2"[..]));
        assert_eq!((v.cseq().seq, v.cseq().method), (1, Method::Ack));
        let m = SipMessage::parse(ACK, &Limits::default()).unwrap();
        assert_eq!(v.start_line(), m.start_line());
    }

    /// Replaces the first `from` in ACK by `to`.
    fn ack_with(from: &str, to: &str) -> Vec<u8> {
        let s = std::str::from_utf8(ACK).unwrap();
        assert!(s.contains(from), "{from}");
        s.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn compact_odd_and_folded_spellings() {
        for (from, to) in [
            ("Call-ID: ", "i: "),
            ("Call-ID: ", "call-id: "),
            ("Call-ID: ", "CALL-ID :\t"),
            ("To: ", "t: "),
            ("To: ", "TO  :"),
            (";tag=b2", "\r\n ; tag = b2"),
            ("CSeq: 1 ACK", "cseq:\r\n\t1\r\n ACK"),
        ] {
            let buf = ack_with(from, to);
            let v = scan(&buf).unwrap_or_else(|e| panic!("{to:?}: {e}"));
            assert_eq!(v.call_id(), b"c0ffee@198.18.0.10", "{to:?}");
            assert_eq!(v.to_tag(), Some(&b"b2"[..]), "{to:?}");
            assert_eq!(v.cseq().seq, 1, "{to:?}");
        }
    }

    #[test]
    fn never_reads_the_body() {
        let mut buf = ack_with("Call-ID: c0ffee@198.18.0.10\r\n", "");
        buf.extend_from_slice(b"Call-ID: smuggled\r\n");
        assert_eq!(scan(&buf), Err(SipError::MissingCallId));
    }

    #[test]
    fn refuses_what_it_reads_when_malformed() {
        for (from, to, want) in [
            ("Call-ID: ", "i: a b ", SipError::BadCallId),
            ("CSeq: 1 ACK", "CSeq: 1 BYE", SipError::CSeqMethodMismatch),
            ("CSeq: 1 ACK", "CSeq: ACK", SipError::BadCSeq),
            ("To: <", "To: \"open <", SipError::BadTo),
            (";tag=b2", ";tag=\"b2\"", SipError::BadTo),
            (
                "Content-Length: 0\r\n",
                "i: again\r\n",
                SipError::DuplicateHeader,
            ),
            (
                "Content-Length: 0\r\n",
                "t: <sip:x@y>\r\n",
                SipError::DuplicateHeader,
            ),
            (
                "Content-Length: 0\r\n",
                "cseq: 2 ACK\r\n",
                SipError::DuplicateHeader,
            ),
            (
                "Call-ID: c0ffee@198.18.0.10\r\n",
                "",
                SipError::MissingCallId,
            ),
            (
                "To: <sip:bob@198.18.0.20>;tag=b2\r\n",
                "",
                SipError::MissingTo,
            ),
            ("CSeq: 1 ACK\r\n", "", SipError::MissingCSeq),
            ("ACK sip:", "ACK  sip:", SipError::BadRequestLine),
            (
                "Max-Forwards: 70\r\n",
                "Max-Forwards: 70\n",
                SipError::BadLineEnding,
            ),
            ("Via: ", " Via: ", SipError::BadHeaderLine),
            ("\r\n\r\n", "\r\n", SipError::IncompleteHeaders),
        ] {
            let buf = ack_with(from, to);
            assert_eq!(scan(&buf), Err(want), "{to:?}");
            assert!(
                SipMessage::parse(&buf, &Limits::default()).is_err(),
                "{to:?}"
            );
        }
        assert_eq!(scan(b"\r\n\r\n"), Err(SipError::Empty));
    }

    #[test]
    fn leaves_other_fields_to_the_full_parser() {
        for (from, to, full) in [
            (
                "Max-Forwards: 70",
                "Max-Forwards: 300",
                SipError::BadMaxForwards,
            ),
            (
                "Content-Length: 0",
                "Content-Length: 9",
                SipError::ContentLengthExceedsDatagram,
            ),
            ("branch=", "branch=\"", SipError::BadVia),
            ("From: \"Alice\"", "From: \"Alice", SipError::BadFrom),
        ] {
            let buf = ack_with(from, to);
            assert_eq!(
                SipMessage::parse(&buf, &Limits::default()),
                Err(full),
                "{to:?}"
            );
            assert_eq!(scan(&buf).unwrap().call_id(), b"c0ffee@198.18.0.10");
        }
    }
}
