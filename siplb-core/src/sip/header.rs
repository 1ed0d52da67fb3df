//! Header fields: names with their compact forms, and the line scanner that splits a
//! header section into fields (RFC 3261 §7.3), folding included.

use super::abnf::{self, TOKEN};
use super::caseless::{self, Name};
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

/// Long names of the known variants, in declaration order (indexed by discriminant).
const LONG_NAMES: [(HeaderName, &str, Name); 22] = [
    (HeaderName::CallId, "Call-ID", Name::new(b"Call-ID")),
    (HeaderName::CSeq, "CSeq", Name::new(b"CSeq")),
    (HeaderName::From, "From", Name::new(b"From")),
    (HeaderName::To, "To", Name::new(b"To")),
    (HeaderName::Via, "Via", Name::new(b"Via")),
    (HeaderName::Contact, "Contact", Name::new(b"Contact")),
    (
        HeaderName::ContentLength,
        "Content-Length",
        Name::new(b"Content-Length"),
    ),
    (
        HeaderName::MaxForwards,
        "Max-Forwards",
        Name::new(b"Max-Forwards"),
    ),
    (HeaderName::Expires, "Expires", Name::new(b"Expires")),
    (
        HeaderName::ContentType,
        "Content-Type",
        Name::new(b"Content-Type"),
    ),
    (
        HeaderName::ContentEncoding,
        "Content-Encoding",
        Name::new(b"Content-Encoding"),
    ),
    (HeaderName::Supported, "Supported", Name::new(b"Supported")),
    (HeaderName::Subject, "Subject", Name::new(b"Subject")),
    (HeaderName::Event, "Event", Name::new(b"Event")),
    (
        HeaderName::AllowEvents,
        "Allow-Events",
        Name::new(b"Allow-Events"),
    ),
    (HeaderName::ReferTo, "Refer-To", Name::new(b"Refer-To")),
    (
        HeaderName::ReferredBy,
        "Referred-By",
        Name::new(b"Referred-By"),
    ),
    (
        HeaderName::SessionExpires,
        "Session-Expires",
        Name::new(b"Session-Expires"),
    ),
    (HeaderName::Identity, "Identity", Name::new(b"Identity")),
    (
        HeaderName::AcceptContact,
        "Accept-Contact",
        Name::new(b"Accept-Contact"),
    ),
    (
        HeaderName::RejectContact,
        "Reject-Contact",
        Name::new(b"Reject-Contact"),
    ),
    (
        HeaderName::RequestDisposition,
        "Request-Disposition",
        Name::new(b"Request-Disposition"),
    ),
];

/// Compact forms by letter (`a` to `z`).
const COMPACT: [HeaderName; 26] = {
    let mut t = [HeaderName::Other; 26];
    let mut i = 0;
    while i < LONG_NAMES.len() {
        if let Some(c) = LONG_NAMES[i].0.compact() {
            t[(c - b'a') as usize] = LONG_NAMES[i].0;
        }
        i += 1;
    }
    t
};

const fn name_hash(len: usize, first: u8, last: u8) -> usize {
    (len + 11 * (first & 0x1f) as usize + 19 * (last & 0x1f) as usize) % 64
}

/// Index into `LONG_NAMES` by `name_hash` (out of range: no known name).
const BY_HASH: [u8; 64] = {
    let mut t = [u8::MAX; 64];
    let mut i = 0;
    while i < LONG_NAMES.len() {
        let n = LONG_NAMES[i].1.as_bytes();
        let h = name_hash(n.len(), n[0], n[n.len() - 1]);
        assert!(t[h] == u8::MAX, "name_hash collides");
        t[h] = i as u8;
        i += 1;
    }
    t
};

impl HeaderName {
    /// Classifies a header name as written (any case, long or compact).
    pub fn from_bytes(name: &[u8]) -> Self {
        Self::classify(name, 0, name.len())
    }

    /// Classifies the name `buf[at..at + len]`; reads whole words of `buf`, so pass
    /// the message rather than the name alone.
    #[inline]
    pub(crate) fn classify(buf: &[u8], at: usize, len: usize) -> Self {
        let (Some(&first), Some(&last)) = (buf.get(at), buf.get(at + len.max(1) - 1)) else {
            return HeaderName::Other;
        };
        if len == 1 {
            return if first.is_ascii_alphabetic() {
                COMPACT[usize::from((first | 0x20) - b'a')]
            } else {
                HeaderName::Other
            };
        }
        // A collision-free hash of the known long names picks the one candidate; the
        // comparison confirms it.
        match LONG_NAMES.get(usize::from(BY_HASH[name_hash(len, first, last)])) {
            Some((h, _, long)) if long.eq_at(buf, at, len) => *h,
            _ => HeaderName::Other,
        }
    }

    /// Like [`classify`](Self::classify) for the nine fields `SipMessage` records
    /// (Call-ID to Expires), `Other` for every other name, known or not: a switch on
    /// the length and one comparison, cheaper than the general lookup.
    #[inline(always)]
    pub(crate) fn classify_recorded(buf: &[u8], at: usize, len: usize) -> Self {
        const TO: Name = Name::new(b"To");
        const VIA: Name = Name::new(b"Via");
        const FROM: Name = Name::new(b"From");
        const CSEQ: Name = Name::new(b"CSeq");
        const CALL_ID: Name = Name::new(b"Call-ID");
        const CONTACT: Name = Name::new(b"Contact");
        const EXPIRES: Name = Name::new(b"Expires");
        const MAX_FORWARDS: Name = Name::new(b"Max-Forwards");
        const CONTENT_LENGTH: Name = Name::new(b"Content-Length");
        let Some(&first) = buf.get(at) else {
            return HeaderName::Other;
        };
        let (candidate, name) = match (len, first | 0x20) {
            (1, c) => {
                let h = match c {
                    b'i' => HeaderName::CallId,
                    b'f' => HeaderName::From,
                    b't' => HeaderName::To,
                    b'v' => HeaderName::Via,
                    b'm' => HeaderName::Contact,
                    b'l' => HeaderName::ContentLength,
                    _ => HeaderName::Other,
                };
                return h;
            }
            (2, _) => (HeaderName::To, &TO),
            (3, _) => (HeaderName::Via, &VIA),
            (4, b'f') => (HeaderName::From, &FROM),
            (4, _) => (HeaderName::CSeq, &CSEQ),
            (7, b'e') => (HeaderName::Expires, &EXPIRES),
            (7, _) => match buf.get(at + 1).map(|c| c | 0x20) {
                Some(b'a') => (HeaderName::CallId, &CALL_ID),
                _ => (HeaderName::Contact, &CONTACT),
            },
            (12, _) => (HeaderName::MaxForwards, &MAX_FORWARDS),
            (14, _) => (HeaderName::ContentLength, &CONTENT_LENGTH),
            _ => return HeaderName::Other,
        };
        if name.eq_at(buf, at, len) {
            candidate
        } else {
            HeaderName::Other
        }
    }

    /// The field whose usual spelling starts `buf[at..]`, as
    /// [`classify_recorded`](Self::classify_recorded) names it: a recorded field (long
    /// name in any case, or compact form) or a common other one (Allow, Content-Type,
    /// Supported, Server, User-Agent, Route, Record-Route: `Other`), then directly a
    /// colon. Returns the name and the index of the colon; `None` when the line starts
    /// some other way (then find the colon and classify the name).
    #[inline(always)]
    pub(crate) fn guess_recorded(buf: &[u8], at: usize) -> Option<(Self, usize)> {
        const VIA: Name = Name::new(b"Via:");
        const FROM: Name = Name::new(b"From:");
        const TO: Name = Name::new(b"To:");
        const CALL_ID: Name = Name::new(b"Call-ID:");
        const CSEQ: Name = Name::new(b"CSeq:");
        const CONTACT: Name = Name::new(b"Contact:");
        const CONTENT_LENGTH: Name = Name::new(b"Content-Length:");
        const MAX_FORWARDS: Name = Name::new(b"Max-Forwards:");
        const EXPIRES: Name = Name::new(b"Expires:");
        const ALLOW: Name = Name::new(b"Allow:");
        const CONTENT_TYPE: Name = Name::new(b"Content-Type:");
        const SUPPORTED: Name = Name::new(b"Supported:");
        const SERVER: Name = Name::new(b"Server:");
        const USER_AGENT: Name = Name::new(b"User-Agent:");
        const ROUTE: Name = Name::new(b"Route:");
        const RECORD_ROUTE: Name = Name::new(b"Record-Route:");
        let first = *buf.get(at)? | 0x20;
        if buf.get(at + 1) == Some(&b':') {
            return match Self::classify_recorded(buf, at, 1) {
                HeaderName::Other => None,
                h => Some((h, at + 1)),
            };
        }
        let second = *buf.get(at + 1)? | 0x20;
        // Each arm compares with its own constant, so the compare folds to a word or two.
        let is =
            |name: &Name, h: HeaderName| name.is_at(buf, at).then_some((h, at + name.len() - 1));
        match (first, second) {
            (b'v', _) => is(&VIA, HeaderName::Via),
            (b'f', _) => is(&FROM, HeaderName::From),
            (b't', _) => is(&TO, HeaderName::To),
            (b'c', b'a') => is(&CALL_ID, HeaderName::CallId),
            (b'c', b's') => is(&CSEQ, HeaderName::CSeq),
            (b'c', b'o') => match buf.get(at + 4).map(|c| c | 0x20) {
                Some(b'a') => is(&CONTACT, HeaderName::Contact),
                _ => match buf.get(at + 8).map(|c| c | 0x20) {
                    Some(b't') => is(&CONTENT_TYPE, HeaderName::Other),
                    _ => is(&CONTENT_LENGTH, HeaderName::ContentLength),
                },
            },
            (b'm', _) => is(&MAX_FORWARDS, HeaderName::MaxForwards),
            (b'e', _) => is(&EXPIRES, HeaderName::Expires),
            (b'a', _) => is(&ALLOW, HeaderName::Other),
            (b's', b'u') => is(&SUPPORTED, HeaderName::Other),
            (b's', _) => is(&SERVER, HeaderName::Other),
            (b'u', _) => is(&USER_AGENT, HeaderName::Other),
            (b'r', b'o') => is(&ROUTE, HeaderName::Other),
            (b'r', _) => is(&RECORD_ROUTE, HeaderName::Other),
            _ => None,
        }
    }

    /// The long name (`Call-ID`), `None` for `Other`.
    pub fn long_name(self) -> Option<&'static str> {
        LONG_NAMES.get(self as usize).map(|(_, n, _)| *n)
    }

    /// The compact form (`i` for Call-ID), if the name has one.
    pub const fn compact(self) -> Option<u8> {
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
            Ok(Scan::Field {
                name,
                raw_name,
                value,
            }) => Some(Header {
                name,
                raw_name,
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
    Field {
        name: HeaderName,
        raw_name: &'a [u8],
        value: &'a [u8],
    },
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

/// How many line ends the scanner finds ahead of the line it works on.
const AHEAD: usize = 16;

/// Splits a header section into fields, enforcing the line and field limits.
///
/// Line ends are found in batches ahead of use: a tight loop of `memchr` calls fills
/// `lf`, then the fields are cut from those positions. Work on one field then no longer
/// waits for the search of the next line, so the processor overlaps the fields.
#[derive(Debug, Clone)]
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    /// Start of the next line to cut.
    pos: usize,
    fields: usize,
    max_fields: usize,
    max_line_len: usize,
    /// LF positions after `pos`, in order: `lf[head..tail]`.
    lf: [usize; AHEAD],
    head: usize,
    tail: usize,
    /// Where the search for line ends resumes.
    search: usize,
    /// How many line ends one refill finds (at most `AHEAD`).
    batch: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize, max_fields: usize, max_line_len: usize) -> Self {
        Self {
            buf,
            pos,
            fields: 0,
            max_fields,
            max_line_len,
            lf: [0; AHEAD],
            head: 0,
            tail: 0,
            search: pos,
            batch: AHEAD,
        }
    }

    /// A scanner for the one field at `pos`: finds line ends one at a time, since the
    /// caller reads the lines after it another way.
    pub(crate) fn one_field(
        buf: &'a [u8],
        pos: usize,
        max_fields: usize,
        max_line_len: usize,
    ) -> Self {
        Self {
            batch: 1,
            ..Self::new(buf, pos, max_fields, max_line_len)
        }
    }

    /// Where the next line starts.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Finds up to `AHEAD` more line ends, stopping after the empty line that ends the
    /// header section (the body is never searched).
    fn refill(&mut self) {
        let (buf, batch) = (self.buf, self.batch);
        let (mut n, mut from) = (0, self.search);
        while let (Some(slot), Some(rest)) =
            (self.lf.get_mut(n).filter(|_| n < batch), buf.get(from..))
        {
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                from = buf.len();
                break;
            };
            *slot = from + nl;
            n += 1;
            let empty = nl == 1 && rest.first() == Some(&b'\r');
            from += nl + 1;
            if empty {
                break;
            }
        }
        (self.head, self.tail, self.search) = (0, n, from);
    }

    /// The line that starts at `pos` (the next one): `(end of its content, start of
    /// the line after)`; `Ok(None)` if no LF follows yet.
    #[inline]
    fn line(&mut self, pos: usize) -> Result<Option<(usize, usize)>, SipError> {
        if self.head == self.tail {
            self.refill();
        }
        let Some(&nl) = self.lf.get(self.head).filter(|_| self.head < self.tail) else {
            // A partial line already too long can never become valid.
            return if self.buf.len().saturating_sub(pos) > self.max_line_len.saturating_add(1) {
                Err(SipError::LineTooLong)
            } else {
                Ok(None)
            };
        };
        self.head += 1;
        if nl <= pos || self.buf.get(nl - 1) != Some(&b'\r') {
            return Err(SipError::BadLineEnding);
        }
        if nl - 1 - pos > self.max_line_len {
            return Err(SipError::LineTooLong);
        }
        Ok(Some((nl - 1, nl + 1)))
    }

    /// The next field, the end of the section, or `Incomplete`.
    #[inline]
    pub(crate) fn next(&mut self) -> Result<Scan<'a>, SipError> {
        let buf = self.buf;
        let Some((mut end, mut next)) = self.line(self.pos)? else {
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
        let colon = caseless::find(line, 0, b':').ok_or(SipError::BadHeaderLine)?;
        let mut name_end = colon;
        while name_end > 0 && matches!(line.get(name_end - 1), Some(b' ' | b'\t')) {
            name_end -= 1;
        }
        let raw_name = line.get(..name_end).unwrap_or_default();
        let name = HeaderName::classify(buf, self.pos, name_end);
        // A known name matched exactly, so only other names need checking.
        if name == HeaderName::Other && !abnf::all(raw_name, TOKEN) {
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
                Some(b' ' | b'\t') => match self.line(next)? {
                    Some((e, n)) => (end, next) = (e, n),
                    None => return Ok(Scan::Incomplete),
                },
                Some(_) => break,
                // The empty line must still come.
                None => return Ok(Scan::Incomplete),
            }
        }
        let value = buf.get(value_start..end).unwrap_or_default();
        self.pos = next;
        Ok(Scan::Field {
            name,
            raw_name,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_forms_map_to_long_forms() {
        for (i, (h, long, _)) in LONG_NAMES.into_iter().enumerate() {
            assert_eq!(h as usize, i);
            assert_eq!(HeaderName::from_bytes(long.as_bytes()), h);
            assert_eq!(HeaderName::from_bytes(long.to_uppercase().as_bytes()), h);
            assert_eq!(HeaderName::from_bytes(long.to_lowercase().as_bytes()), h);
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(&[c]), h);
                assert_eq!(HeaderName::from_bytes(&[c.to_ascii_uppercase()]), h);
            }
        }
        let compact: Vec<u8> = LONG_NAMES
            .iter()
            .filter_map(|(h, _, _)| h.compact())
            .collect();
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
                Scan::Field {
                    raw_name, value, ..
                } => v.push((
                    String::from_utf8_lossy(raw_name).into_owned(),
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
