//! Header fields: names with their compact forms, and the line scanner that splits a
//! header section into fields (RFC 3261 §7.3), folding included.

use super::abnf::{self, TOKEN};
use super::error::SipError;

/// The header fields the scanner knows by name. Names compare case-insensitively and
/// every compact form maps to its long form (RFC 3261 §7.3.3 and the IANA SIP header
/// registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    /// `i`
    CallId,
    CSeq,
    /// `f`
    From,
    /// `t`
    To,
    /// `v`
    Via,
    /// `m`
    Contact,
    /// `l`
    ContentLength,
    MaxForwards,
    Expires,
    /// `c`
    ContentType,
    /// `e`
    ContentEncoding,
    /// `k`
    Supported,
    /// `s`
    Subject,
    /// `o` (RFC 6665)
    Event,
    /// `u` (RFC 6665)
    AllowEvents,
    /// `r` (RFC 3515)
    ReferTo,
    /// `b` (RFC 3892)
    ReferredBy,
    /// `x` (RFC 4028)
    SessionExpires,
    /// `y` (RFC 8224)
    Identity,
    /// `a` (RFC 3841)
    AcceptContact,
    /// `j` (RFC 3841)
    RejectContact,
    /// `d` (RFC 3841)
    RequestDisposition,
    /// Any other name.
    Other,
}

/// Long names, one per known variant.
const LONG_NAMES: [(HeaderName, &str); 22] = [
    (HeaderName::CallId, "Call-ID"),
    (HeaderName::CSeq, "CSeq"),
    (HeaderName::From, "From"),
    (HeaderName::To, "To"),
    (HeaderName::Via, "Via"),
    (HeaderName::Contact, "Contact"),
    (HeaderName::ContentLength, "Content-Length"),
    (HeaderName::MaxForwards, "Max-Forwards"),
    (HeaderName::Expires, "Expires"),
    (HeaderName::ContentType, "Content-Type"),
    (HeaderName::ContentEncoding, "Content-Encoding"),
    (HeaderName::Supported, "Supported"),
    (HeaderName::Subject, "Subject"),
    (HeaderName::Event, "Event"),
    (HeaderName::AllowEvents, "Allow-Events"),
    (HeaderName::ReferTo, "Refer-To"),
    (HeaderName::ReferredBy, "Referred-By"),
    (HeaderName::SessionExpires, "Session-Expires"),
    (HeaderName::Identity, "Identity"),
    (HeaderName::AcceptContact, "Accept-Contact"),
    (HeaderName::RejectContact, "Reject-Contact"),
    (HeaderName::RequestDisposition, "Request-Disposition"),
];

impl HeaderName {
    /// Classifies a header name as written (any case, long or compact).
    #[inline]
    pub fn from_bytes(name: &[u8]) -> Self {
        use HeaderName::*;
        let Some(&first) = name.first() else {
            return Other;
        };
        if name.len() == 1 {
            return match first.to_ascii_lowercase() {
                b'i' => CallId,
                b'f' => From,
                b't' => To,
                b'v' => Via,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'e' => ContentEncoding,
                b'k' => Supported,
                b's' => Subject,
                b'o' => Event,
                b'u' => AllowEvents,
                b'r' => ReferTo,
                b'b' => ReferredBy,
                b'x' => SessionExpires,
                b'y' => Identity,
                b'a' => AcceptContact,
                b'j' => RejectContact,
                b'd' => RequestDisposition,
                _ => Other,
            };
        }
        // Dispatch on length and first letter, then confirm the whole name.
        let (candidate, long): (Self, &[u8]) = match (name.len(), first.to_ascii_lowercase()) {
            (2, b't') => (To, b"To"),
            (3, b'v') => (Via, b"Via"),
            (4, b'f') => (From, b"From"),
            (4, b'c') => (CSeq, b"CSeq"),
            (5, b'e') => (Event, b"Event"),
            (7, b'c') => match name.get(2) {
                Some(b'l' | b'L') => (CallId, b"Call-ID"),
                _ => (Contact, b"Contact"),
            },
            (7, b'e') => (Expires, b"Expires"),
            (7, b's') => (Subject, b"Subject"),
            (8, b'r') => (ReferTo, b"Refer-To"),
            (8, b'i') => (Identity, b"Identity"),
            (9, b's') => (Supported, b"Supported"),
            (11, b'r') => (ReferredBy, b"Referred-By"),
            (12, b'a') => (AllowEvents, b"Allow-Events"),
            (12, b'c') => (ContentType, b"Content-Type"),
            (12, b'm') => (MaxForwards, b"Max-Forwards"),
            (14, b'c') => (ContentLength, b"Content-Length"),
            (14, b'a') => (AcceptContact, b"Accept-Contact"),
            (14, b'r') => (RejectContact, b"Reject-Contact"),
            (15, b's') => (SessionExpires, b"Session-Expires"),
            (16, b'c') => (ContentEncoding, b"Content-Encoding"),
            (19, b'r') => (RequestDisposition, b"Request-Disposition"),
            _ => return Other,
        };
        if long.eq_ignore_ascii_case(name) {
            candidate
        } else {
            Other
        }
    }

    /// The long name (`Call-ID`), `None` for `Other`.
    pub fn long_name(self) -> Option<&'static str> {
        LONG_NAMES.iter().find(|(h, _)| *h == self).map(|(_, n)| *n)
    }

    /// The compact form (`i` for Call-ID), if the name has one.
    pub fn compact(self) -> Option<u8> {
        use HeaderName::*;
        Some(match self {
            CallId => b'i',
            From => b'f',
            To => b't',
            Via => b'v',
            Contact => b'm',
            ContentLength => b'l',
            ContentType => b'c',
            ContentEncoding => b'e',
            Supported => b'k',
            Subject => b's',
            Event => b'o',
            AllowEvents => b'u',
            ReferTo => b'r',
            ReferredBy => b'b',
            SessionExpires => b'x',
            Identity => b'y',
            AcceptContact => b'a',
            RejectContact => b'j',
            RequestDisposition => b'd',
            CSeq | MaxForwards | Expires | Other => return None,
        })
    }
}

/// One header field of a parsed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: HeaderName,
    /// The name as written (`v`, `VIA`, `X-Custom`).
    pub raw_name: &'a [u8],
    /// The value without surrounding white space. A folded value keeps its inner CR LF
    /// and indentation: treat any run of SP, HTAB, CR, LF in it as one space.
    pub value: &'a [u8],
}

/// The header fields of a message, in order: see
/// [`SipMessage::headers`](super::SipMessage::headers).
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    scan: Scanner<'a>,
}

impl<'a> Headers<'a> {
    /// Fields of the header section that starts at `pos` (after the start line); only
    /// called on a message that already scanned within limits.
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Self {
            scan: Scanner::new(buf, pos, usize::MAX, usize::MAX),
        }
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        match self.scan.next() {
            Ok(Scan::Field { name, value }) => Some(Header {
                name: HeaderName::from_bytes(name),
                raw_name: name,
                value: abnf::trim(value),
            }),
            _ => None,
        }
    }
}

/// What the scanner found next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan<'a> {
    /// A header field. The value runs from after the colon to the end of its last
    /// (folded) line; it is not trimmed.
    Field { name: &'a [u8], value: &'a [u8] },
    /// The empty line: the body starts at `body_offset`.
    End { body_offset: usize },
    /// The buffer ends before the empty line.
    Incomplete,
}

/// Finds the line that starts at `pos`: `(end of its content, start of the next line)`.
/// `Ok(None)` if no LF follows (yet).
#[inline]
pub(crate) fn line_at(
    buf: &[u8],
    pos: usize,
    max_line_len: usize,
) -> Result<Option<(usize, usize)>, SipError> {
    let rest = buf.get(pos..).unwrap_or_default();
    let Some(nl) = memchr::memchr(b'\n', rest) else {
        // A partial line already too long can never become valid.
        return if rest.len() > max_line_len.saturating_add(1) {
            Err(SipError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if nl == 0 || rest.get(nl - 1) != Some(&b'\r') {
        return Err(SipError::BadLineEnding);
    }
    if nl - 1 > max_line_len {
        return Err(SipError::LineTooLong);
    }
    Ok(Some((pos + nl - 1, pos + nl + 1)))
}

/// Splits a header section into fields, enforcing the line and field limits.
#[derive(Debug, Clone)]
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    fields: usize,
    max_fields: usize,
    max_line_len: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize, max_fields: usize, max_line_len: usize) -> Self {
        Self {
            buf,
            pos,
            fields: 0,
            max_fields,
            max_line_len,
        }
    }

    /// The next field, the end of the section, or `Incomplete`.
    #[inline]
    pub(crate) fn next(&mut self) -> Result<Scan<'a>, SipError> {
        let buf = self.buf;
        let Some((mut end, mut next)) = line_at(buf, self.pos, self.max_line_len)? else {
            return Ok(Scan::Incomplete);
        };
        let line = buf.get(self.pos..end).unwrap_or_default();
        let Some(&first) = line.first() else {
            self.pos = next;
            return Ok(Scan::End { body_offset: next });
        };
        // header = field-name *(SP / HTAB) ":" value (§7.3.1). A line that starts with
        // white space continues the previous field and is consumed with it below, so it
        // can only be seen here before the first field.
        if first == b' ' || first == b'\t' {
            return Err(SipError::BadHeaderLine);
        }
        let name_end = abnf::skip(line, 0, TOKEN);
        let mut colon = name_end;
        while matches!(line.get(colon), Some(b' ' | b'\t')) {
            colon += 1;
        }
        if name_end == 0 || line.get(colon) != Some(&b':') {
            return Err(SipError::BadHeaderLine);
        }
        self.fields += 1;
        if self.fields > self.max_fields {
            return Err(SipError::TooManyHeaders);
        }
        let value_start = self.pos + colon + 1;
        // Folded continuation lines (§7.3.1).
        loop {
            match buf.get(next) {
                Some(b' ' | b'\t') => match line_at(buf, next, self.max_line_len)? {
                    Some((e, n)) => (end, next) = (e, n),
                    None => return Ok(Scan::Incomplete),
                },
                Some(_) => break,
                // The empty line must still come.
                None => return Ok(Scan::Incomplete),
            }
        }
        let name = line.get(..name_end).unwrap_or_default();
        let value = buf.get(value_start..end).unwrap_or_default();
        self.pos = next;
        Ok(Scan::Field { name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_forms_map_to_long_forms() {
        for (h, long) in LONG_NAMES {
            assert_eq!(HeaderName::from_bytes(long.as_bytes()), h);
            assert_eq!(HeaderName::from_bytes(long.to_uppercase().as_bytes()), h);
            assert_eq!(HeaderName::from_bytes(long.to_lowercase().as_bytes()), h);
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(&[c]), h);
                assert_eq!(HeaderName::from_bytes(&[c.to_ascii_uppercase()]), h);
            }
        }
        let compact: Vec<u8> = LONG_NAMES.iter().filter_map(|(h, _)| h.compact()).collect();
        for c in b"ivftlmceksourbxy" {
            assert!(compact.contains(c), "{}", *c as char);
        }
        for other in [
            "",
            "q",
            "Call-IDs",
            "Contacts",
            "X-Via",
            "Cseq2",
            "Content-Lengt",
        ] {
            assert_eq!(HeaderName::from_bytes(other.as_bytes()), HeaderName::Other);
        }
        assert_eq!(HeaderName::Other.long_name(), None);
    }

    fn fields(s: &[u8]) -> Result<Vec<(String, String)>, SipError> {
        let mut sc = Scanner::new(s, 0, 8, 40);
        let mut v = Vec::new();
        loop {
            match sc.next()? {
                Scan::Field { name, value } => v.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )),
                Scan::End { body_offset } => {
                    v.push(("<body>".into(), body_offset.to_string()));
                    return Ok(v);
                }
                Scan::Incomplete => {
                    v.push(("<incomplete>".into(), String::new()));
                    return Ok(v);
                }
            }
        }
    }

    #[test]
    fn folding_and_colons() {
        let v = fields(b"Via  : a\r\n b\r\n\tc\r\nTo:x\r\n\r\nbody").unwrap();
        assert_eq!(
            v,
            vec![
                ("Via".into(), " a\r\n b\r\n\tc".into()),
                ("To".into(), "x".into()),
                ("<body>".into(), "26".into()),
            ]
        );
    }

    #[test]
    fn incomplete_and_errors() {
        assert_eq!(
            fields(b"To: x\r\n").unwrap().last().unwrap().0,
            "<incomplete>"
        );
        assert_eq!(
            fields(b"To: x\r\n ").unwrap().last().unwrap().0,
            "<incomplete>"
        );
        assert_eq!(fields(b"To: x").unwrap().last().unwrap().0, "<incomplete>");
        assert_eq!(fields(b" To: x\r\n\r\n"), Err(SipError::BadHeaderLine));
        assert_eq!(fields(b"To x\r\n\r\n"), Err(SipError::BadHeaderLine));
        assert_eq!(fields(b": x\r\n\r\n"), Err(SipError::BadHeaderLine));
        assert_eq!(fields(b"To: x\n\r\n"), Err(SipError::BadLineEnding));
        assert_eq!(fields(b"\n"), Err(SipError::BadLineEnding));
        assert_eq!(fields(&[b'a'; 60]), Err(SipError::LineTooLong));
        let long = [&b"To: "[..], &[b'a'; 40], b"\r\n\r\n"].concat();
        assert_eq!(fields(&long), Err(SipError::LineTooLong));
        assert_eq!(fields(&b"a:b\r\n".repeat(9)), Err(SipError::TooManyHeaders));
    }
}
