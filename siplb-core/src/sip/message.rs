//! A zero-copy view over one SIP message (RFC 3261 §7): the start line and the header
//! fields the balancer needs, validated once in [`SipMessage::parse`] and borrowed
//! from the buffer.

use super::abnf::{self, at, CALLID, TOKEN};
use super::caseless;
use super::error::SipError;
use super::header::{self, HeaderName, Headers, Scan, Scanner};
use super::limits::Limits;
use super::method::Method;
use super::name_addr::{self, NameAddr};
use super::uri::SipUri;
use super::via::{self, Via};

/// The first line of a message (RFC 3261 §7.1, §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request {
        method: Method,
        /// The method as written; the name of an `Other` method.
        method_raw: &'a [u8],
        uri: SipUri<'a>,
    },
    Response {
        /// 100..=699.
        code: u16,
        /// As written, possibly empty (RFC 4475 `noreason`) or UTF-8 (`unreason`).
        reason: &'a [u8],
    },
}

impl StartLine<'_> {
    /// A start line of nothing, for a view under construction.
    pub(crate) const EMPTY: StartLine<'static> = StartLine::Response {
        code: 0,
        reason: b"",
    };
}

/// The CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Any 32-bit value is accepted (§8.1.1.5 asks senders to stay below 2³¹).
    pub seq: u32,
    pub method: Method,
    pub method_raw: &'a [u8],
}

impl CSeq<'_> {
    /// A CSeq of nothing, for a view under construction.
    pub(crate) const EMPTY: CSeq<'static> = CSeq {
        seq: 0,
        method: Method::Other,
        method_raw: b"",
    };
}

/// One SIP message, scanned eagerly: [`parse`](Self::parse) validates the start line
/// and every header field the accessors return, so a message that parses yields them
/// without further checks or failure.
///
/// What is validated: the start line; Call-ID, CSeq, From, To (required, one each);
/// the top Via value (the first value of the first Via field; later values and fields
/// are not looked at); Max-Forwards, Expires, Content-Length (optional, one each); and
/// for REGISTER transactions (CSeq method REGISTER) the first Contact value. Other
/// fields only need a well-formed `name:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipMessage<'a> {
    buf: &'a [u8],
    start_line: StartLine<'a>,
    headers_offset: usize,
    call_id: &'a [u8],
    cseq: CSeq<'a>,
    via: Option<Via<'a>>,
    from: NameAddr<'a>,
    to: NameAddr<'a>,
    max_forwards: Option<u32>,
    expires: Option<u32>,
    contact_expires: Option<u32>,
    content_length: Option<usize>,
    body_offset: usize,
}

/// What the header scan found of the fields of interest: raw values indexed by
/// `HeaderName` (its first nine variants are exactly these fields), and which of them
/// a canonical fast path already parsed into the message under construction.
#[derive(Default)]
struct Found<'a> {
    raw: [Option<&'a [u8]>; 9],
    /// Bit `1 << HeaderName as u32`: the message holds the field as a fast path
    /// parsed it.
    fast: u32,
    /// Where the first Contact value starts, if it is on one line (with `raw`, for the
    /// canonical parse of a REGISTER's Contact).
    contact_start: Option<usize>,
}

const _: () = assert!(
    HeaderName::CallId as usize == 0
        && HeaderName::CSeq as usize == 1
        && HeaderName::From as usize == 2
        && HeaderName::To as usize == 3
        && HeaderName::Via as usize == 4
        && HeaderName::Contact as usize == 5
        && HeaderName::ContentLength as usize == 6
        && HeaderName::MaxForwards as usize == 7
        && HeaderName::Expires as usize == 8
        && HeaderName::ContentType as usize == 9,
    "Found relies on the order of HeaderName"
);

impl<'a> Found<'a> {
    /// Via and Contact may repeat (the first counts); the others may not (RFC 4475
    /// `multi01`, `mcl01`).
    const REPEATABLE: u32 = 1 << HeaderName::Via as u32 | 1 << HeaderName::Contact as u32;

    #[inline(always)]
    fn add(&mut self, name: HeaderName, value: &'a [u8]) -> Result<(), SipError> {
        let i = name as usize;
        if let Some(slot) = self.raw.get_mut(i) {
            if slot.is_none() {
                *slot = Some(value);
            } else if Self::REPEATABLE & (1 << i) == 0 {
                return Err(SipError::DuplicateHeader);
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn get(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.raw.get(name as usize).copied().flatten()
    }

    /// Whether a fast path parsed `name` into the message.
    #[inline(always)]
    fn is_fast(&self, name: HeaderName) -> bool {
        self.fast & 1 << name as u32 != 0
    }

    /// Reads the field at `pos` if it is spelled plainly: a known name or a token, a
    /// colon, and a value on one line within `max_line_len`, followed by a line that
    /// does not continue it. A field of interest in its canonical spelling is parsed
    /// in the same pass over its bytes; other values are only searched for their line
    /// end. Returns where the next line starts, or `None` (nothing recorded) when the
    /// general scanner must read the field: folding, white space before the colon, the
    /// end of the buffer, and every malformed line, so errors and their order stay the
    /// general scanner's.
    #[inline(always)]
    fn canonical_field(
        &mut self,
        m: &mut SipMessage<'a>,
        pos: usize,
        max_line_len: usize,
    ) -> Result<Option<usize>, SipError> {
        let buf = m.buf;
        let (name, colon) = match HeaderName::guess_recorded(buf, pos) {
            Some(guess) => guess,
            None => {
                let Some(colon) = caseless::find(buf, pos, b':') else {
                    return Ok(None);
                };
                let name = HeaderName::classify_recorded(buf, pos, colon - pos);
                // A recorded name matched exactly; any other must be a token (which
                // also keeps the colon on this line).
                let raw = buf.get(pos..colon).unwrap_or_default();
                if name == HeaderName::Other && !abnf::all(raw, TOKEN) {
                    return Ok(None);
                }
                (name, colon)
            }
        };
        let v = colon + 1;
        if name == HeaderName::Other {
            // Nothing to record: only the line end is searched for. `nl - 1` is at
            // least the colon, so it is never read as the CR.
            return Ok(find_lf(buf, v)
                .filter(|&nl| {
                    buf.get(nl - 1) == Some(&b'\r')
                        && nl - 1 - pos <= max_line_len
                        && matches!(buf.get(nl + 1), Some(c) if *c != b' ' && *c != b'\t')
                })
                .map(|nl| nl + 1));
        }
        let first = self.get(name).is_none();
        // A first field of interest in canonical spelling is parsed into the message,
        // and marked fast only if its line turns out plain. `parsed` is where its value
        // stops.
        let plain = |e: usize| {
            abnf::lit_at(buf, e, b"\r\n")
                && e - pos <= max_line_len
                && matches!(buf.get(e + 2), Some(c) if *c != b' ' && *c != b'\t')
        };
        let parsed = match name {
            _ if !first => None,
            HeaderName::Via => via::parse_top_canonical(buf, v, m.via.insert(Via::EMPTY)),
            HeaderName::From => name_addr::parse_canonical(buf, v, false, &mut m.from).map(|p| p.0),
            HeaderName::To => name_addr::parse_canonical(buf, v, false, &mut m.to).map(|p| p.0),
            HeaderName::CallId => canonical_call_id(buf, v, &mut m.call_id),
            HeaderName::CSeq => canonical_cseq(buf, v, &mut m.cseq),
            HeaderName::ContentLength => {
                canonical_number(buf, v, u64::from(u32::MAX)).and_then(|(n, e)| {
                    m.content_length = Some(usize::try_from(n).ok()?);
                    Some(e)
                })
            }
            HeaderName::MaxForwards => canonical_number(buf, v, 255).and_then(|(n, e)| {
                m.max_forwards = Some(u32::try_from(n).ok()?);
                Some(e)
            }),
            HeaderName::Expires => {
                canonical_number(buf, v, u64::from(u32::MAX)).and_then(|(n, e)| {
                    m.expires = Some(u32::try_from(n).ok()?);
                    Some(e)
                })
            }
            _ => None,
        };
        if let Some(e) = parsed.filter(|&e| plain(e)) {
            self.fast |= 1 << name as u32;
            // A first field: no duplicate to refuse.
            if let Some(slot) = self.raw.get_mut(name as usize) {
                *slot = Some(buf.get(v..e).unwrap_or_default());
            }
            return Ok(Some(e + 2));
        }
        let end = match parsed {
            Some(e) if abnf::lit_at(buf, e, b"\r\n") => Some(e),
            _ => {
                // Not canonical: only the line end is searched for. `nl - 1` is at
                // least the colon, so it is never read as the CR.
                find_lf(buf, v)
                    .filter(|&nl| buf.get(nl - 1) == Some(&b'\r'))
                    .map(|nl| nl - 1)
            }
        };
        let plain = end.filter(|&end| {
            end - pos <= max_line_len
                && matches!(buf.get(end + 2), Some(c) if *c != b' ' && *c != b'\t')
        });
        let Some(end) = plain else {
            return Ok(None);
        };
        self.add(name, buf.get(v..end).unwrap_or_default())?;
        if name == HeaderName::Contact && first {
            self.contact_start = Some(v);
        }
        Ok(Some(end + 2))
    }
}

/// The first LF at or after `i`, by `memchr` (SIMD: 16 or 32 bytes per step).
#[inline(always)]
pub(super) fn find_lf(buf: &[u8], i: usize) -> Option<usize> {
    memchr::memchr(b'\n', buf.get(i..)?).map(|p| i + p)
}

/// Stores a single-valued field, refusing a second one (RFC 4475 `mcl01`).
#[inline(always)]
pub(super) fn once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) -> Result<(), SipError> {
    if slot.replace(value).is_some() {
        return Err(SipError::DuplicateHeader);
    }
    Ok(())
}

impl<'a> SipMessage<'a> {
    /// Scans one message that is the whole of `buf`: a UDP datagram, or a frame cut by
    /// [`next_frame`](super::next_frame).
    ///
    /// Framing follows RFC 3261 §18.3: Content-Length is optional (without it the body
    /// is the rest of `buf`); a Content-Length larger than the bytes after the empty
    /// line is [`SipError::ContentLengthExceedsDatagram`]; bytes beyond the body are
    /// ignored ("MUST be discarded", RFC 4475 `dblreq`) — [`body`](Self::body) ends
    /// where Content-Length says.
    ///
    /// Plainly spelled fields (one line, canonical forms such as `SIP/2.0/UDP
    /// host:port;branch=...` or `"Name" <sip:user@host>;tag=...`) take fast paths that
    /// parse them while finding their line end; everything else goes through the
    /// general grammar. Both give the same result (see [`parse_general`]).
    ///
    /// [`parse_general`]: Self::parse_general
    pub fn parse(buf: &'a [u8], limits: &Limits) -> Result<Self, SipError> {
        Self::scan(buf, limits, true)
    }

    /// [`parse`](Self::parse) with the general grammar alone, no fast path: the same
    /// result, more slowly. For differential tests and fuzzing.
    #[doc(hidden)]
    pub fn parse_general(buf: &'a [u8], limits: &Limits) -> Result<Self, SipError> {
        Self::scan(buf, limits, false)
    }

    #[inline(always)]
    fn scan(buf: &'a [u8], limits: &Limits, canonical: bool) -> Result<Self, SipError> {
        // Built in place, in the value returned (one local returned on every path, so
        // the compiler builds it where the caller wants it): fast paths write fields
        // straight into it, see `SipUri::parse_canonical` for why.
        let mut r = Ok(Self {
            buf,
            start_line: StartLine::EMPTY,
            headers_offset: 0,
            call_id: b"",
            cseq: CSeq::EMPTY,
            via: None,
            from: NameAddr::EMPTY,
            to: NameAddr::EMPTY,
            max_forwards: None,
            expires: None,
            contact_expires: None,
            content_length: None,
            body_offset: 0,
        });
        if let Ok(m) = &mut r {
            if let Err(e) = m.fill(limits, canonical) {
                r = Err(e);
            }
        }
        r
    }

    /// Scans `self.buf` into `self`.
    #[inline(always)]
    fn fill(&mut self, limits: &Limits, canonical: bool) -> Result<(), SipError> {
        let m = self;
        let buf = m.buf;
        m.headers_offset = start_line(buf, limits, canonical, &mut m.start_line)?;

        let mut f = Found::default();
        let (mut pos, mut fields) = (m.headers_offset, 0);
        m.body_offset = loop {
            if canonical {
                if abnf::lit_at(buf, pos, b"\r\n") {
                    break pos + 2;
                }
                if fields < limits.max_headers {
                    if let Some(next) = f.canonical_field(m, pos, limits.max_line_len)? {
                        (pos, fields) = (next, fields + 1);
                        continue;
                    }
                }
            }
            let mut scan =
                Scanner::one_field(buf, pos, limits.max_headers - fields, limits.max_line_len);
            match scan.next()? {
                Scan::Field { name, value, .. } => f.add(name, value)?,
                Scan::End { body_offset } => break body_offset,
                Scan::Incomplete => return Err(SipError::IncompleteHeaders),
            }
            (pos, fields) = (scan.pos(), fields + 1);
        };

        // What no fast path parsed, by the general grammar, in the general grammar's
        // order of errors.
        let available = buf.len().saturating_sub(m.body_offset);
        if !f.is_fast(HeaderName::ContentLength) {
            m.content_length = match f.get(HeaderName::ContentLength) {
                Some(v) => Some(content_length(v)?),
                None => None,
            };
        }
        if m.content_length.is_some_and(|n| n > available) {
            return Err(SipError::ContentLengthExceedsDatagram);
        }
        if !f.is_fast(HeaderName::CallId) {
            let v = f.get(HeaderName::CallId).ok_or(SipError::MissingCallId)?;
            m.call_id = call_id(v).ok_or(SipError::BadCallId)?;
        }
        if !f.is_fast(HeaderName::CSeq) {
            let v = f.get(HeaderName::CSeq).ok_or(SipError::MissingCSeq)?;
            m.cseq = parse_cseq(v).ok_or(SipError::BadCSeq)?;
        }
        if !f.is_fast(HeaderName::From) {
            let v = f.get(HeaderName::From).ok_or(SipError::MissingFrom)?;
            m.from = from_to(v).ok_or(SipError::BadFrom)?;
        }
        if !f.is_fast(HeaderName::To) {
            let v = f.get(HeaderName::To).ok_or(SipError::MissingTo)?;
            m.to = from_to(v).ok_or(SipError::BadTo)?;
        }
        if !f.is_fast(HeaderName::Via) {
            m.via = match f.get(HeaderName::Via) {
                Some(v) => Some(via::parse_top(v).ok_or(SipError::BadVia)?),
                None => None,
            };
        }
        if !f.is_fast(HeaderName::MaxForwards) {
            m.max_forwards = match f.get(HeaderName::MaxForwards) {
                Some(v) => Some(
                    abnf::decimal(abnf::trim(v), 255)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or(SipError::BadMaxForwards)?,
                ),
                None => None,
            };
        }
        if !f.is_fast(HeaderName::Expires) {
            m.expires = match f.get(HeaderName::Expires) {
                Some(v) => Some(abnf::delta_seconds(abnf::trim(v)).ok_or(SipError::BadExpires)?),
                None => None,
            };
        }
        // The Contact `expires` parameter only means something in REGISTER (§10.2.1.1).
        m.contact_expires = match f.get(HeaderName::Contact) {
            Some(v) if m.cseq.method == Method::Register => {
                let mut contact = NameAddr::EMPTY;
                let fast = f.contact_start.and_then(|at| {
                    let (end, expires) = name_addr::parse_canonical(buf, at, true, &mut contact)?;
                    (at + v.len() == end).then_some(expires)
                });
                match fast {
                    Some(expires) => expires,
                    None => contact_expires(v)?,
                }
            }
            _ => None,
        };
        if let StartLine::Request { method_raw, .. } = m.start_line {
            if method_raw != m.cseq.method_raw {
                return Err(SipError::CSeqMethodMismatch);
            }
        }
        Ok(())
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

    pub fn cseq(&self) -> CSeq<'a> {
        self.cseq
    }

    /// The top Via value, if the message has a Via.
    pub fn via(&self) -> Option<Via<'a>> {
        self.via
    }

    pub fn from(&self) -> NameAddr<'a> {
        self.from
    }

    pub fn to(&self) -> NameAddr<'a> {
        self.to
    }

    pub fn max_forwards(&self) -> Option<u32> {
        self.max_forwards
    }

    /// The Expires header (RFC 3261 §20.19).
    pub fn expires(&self) -> Option<u32> {
        self.expires
    }

    /// The `expires` parameter of the first Contact value, for REGISTER transactions
    /// (CSeq method REGISTER, requests and responses); `None` otherwise or if absent.
    pub fn contact_expires(&self) -> Option<u32> {
        self.contact_expires
    }

    pub fn content_length(&self) -> Option<usize> {
        self.content_length
    }

    /// The header fields as sent, from the first field to the empty line that ends
    /// them (for searches of fields the scanner does not read).
    pub fn header_section(&self) -> &'a [u8] {
        &self.buf[self.headers_offset..self.body_offset]
    }

    /// Where the body starts in the buffer given to `parse`.
    pub fn body_offset(&self) -> usize {
        self.body_offset
    }

    /// The body: Content-Length bytes, or the rest of the buffer without Content-Length.
    pub fn body(&self) -> &'a [u8] {
        let rest = self.buf.get(self.body_offset..).unwrap_or_default();
        match self.content_length {
            Some(n) => rest.get(..n).unwrap_or(rest),
            None => rest,
        }
    }

    /// Every header field in order, compact names classified as their long forms.
    pub fn headers(&self) -> Headers<'a> {
        Headers::new(self.buf, self.headers_offset)
    }
}

/// The checks of the whole message and its start line, shared with the light scan:
/// the size, a datagram of nothing but CR/LF, then the start line (its canonical
/// spelling first if `canonical`, else or failing that the general grammar), written
/// into `line`. Returns where the header section starts.
#[inline(always)]
pub(super) fn start_line<'a>(
    buf: &'a [u8],
    limits: &Limits,
    canonical: bool,
    line: &mut StartLine<'a>,
) -> Result<usize, SipError> {
    if buf.len() > limits.max_message_len {
        return Err(SipError::MessageTooLarge);
    }
    // The first byte settles it for any real message.
    if matches!(buf.first(), None | Some(b'\r' | b'\n'))
        && buf.iter().all(|&c| c == b'\r' || c == b'\n')
    {
        return Err(SipError::Empty);
    }
    if canonical {
        if let Some(h) = canonical_status_line(buf, limits.max_line_len, line)
            .or_else(|| canonical_request_line(buf, limits.max_line_len, line))
        {
            return Ok(h);
        }
    }
    let (line_end, headers_offset) =
        header::line_at(buf, 0, limits.max_line_len)?.ok_or(SipError::IncompleteHeaders)?;
    *line = parse_start_line(buf.get(..line_end).unwrap_or_default())?;
    Ok(headers_offset)
}

/// The canonical spelling of a Request-Line (a method, a canonical SIP URI,
/// `SIP/2.0` in upper case, CRLF, within `max_line_len`), written into `line`; where
/// the header section starts, or `None` for anything else, which the general path
/// reads.
#[inline(always)]
fn canonical_request_line<'a>(
    buf: &'a [u8],
    max_line_len: usize,
    line: &mut StartLine<'a>,
) -> Option<usize> {
    let m = abnf::skip(buf, 0, TOKEN);
    if m == 0 || at(buf, m) != Some(b' ') {
        return None;
    }
    let method_raw = buf.get(..m)?;
    *line = StartLine::Request {
        method: Method::from_bytes(method_raw),
        method_raw,
        uri: SipUri::EMPTY,
    };
    let StartLine::Request { uri, .. } = line else {
        return None;
    };
    let u = SipUri::parse_canonical(buf, m + 1, uri)?;
    if !abnf::lit_at(buf, u, b" SIP/2.0\r\n") || u + 8 > max_line_len {
        return None;
    }
    Some(u + 10)
}

/// A Status-Line that starts `SIP/2.0 ` in upper case, within `max_line_len`, written
/// into `line`; where the header section starts, or `None` for anything else.
#[inline(always)]
fn canonical_status_line<'a>(
    buf: &'a [u8],
    max_line_len: usize,
    line: &mut StartLine<'a>,
) -> Option<usize> {
    if !abnf::lit_at(buf, 0, b"SIP/2.0 ") || at(buf, 11) != Some(b' ') {
        return None;
    }
    let code = abnf::decimal(buf.get(8..11)?, 699).filter(|&c| c >= 100)?;
    // No LF before the reason phrase: its first twelve bytes are checked above.
    let nl = 12 + memchr::memchr(b'\n', buf.get(12..)?)?;
    let end = nl - 1;
    if at(buf, end) != Some(b'\r') || end > max_line_len {
        return None;
    }
    *line = StartLine::Response {
        code: u16::try_from(code).ok()?,
        reason: buf.get(12..end)?,
    };
    Some(nl + 1)
}

/// A canonical Call-ID value from `v`: spaces, then Call-ID characters; written into
/// `out`, returning the index after it.
#[inline(always)]
pub(super) fn canonical_call_id<'a>(buf: &'a [u8], v: usize, out: &mut &'a [u8]) -> Option<usize> {
    let start = abnf::skip_sp(buf, v);
    let end = abnf::skip_run(buf, start, CALLID);
    *out = buf.get(start..end).filter(|c| !c.is_empty())?;
    Some(end)
}

/// A canonical CSeq value from `v`: spaces, digits, spaces, a method; written into
/// `out`, returning the index after it.
#[inline(always)]
pub(super) fn canonical_cseq<'a>(buf: &'a [u8], v: usize, out: &mut CSeq<'a>) -> Option<usize> {
    let start = abnf::skip_sp(buf, v);
    let (seq, digits) = abnf::number(buf, start, u64::from(u32::MAX))?;
    let m = abnf::skip_sp(buf, digits);
    let m_end = abnf::skip(buf, m, TOKEN);
    if m == digits || m_end == m {
        return None;
    }
    let method_raw = buf.get(m..m_end)?;
    out.seq = u32::try_from(seq).ok()?;
    out.method = Method::from_bytes(method_raw);
    out.method_raw = method_raw;
    Some(m_end)
}

/// A canonical number from `v`: spaces, then digits making at most `max`.
#[inline(always)]
fn canonical_number(buf: &[u8], v: usize, max: u64) -> Option<(u64, usize)> {
    abnf::number(buf, abnf::skip_sp(buf, v), max)
}

/// `Request-Line = Method SP Request-URI SP SIP-Version` or `Status-Line = SIP-Version
/// SP Status-Code SP Reason-Phrase` (RFC 3261 §7.1, §7.2): single spaces, nothing
/// trailing (RFC 4475 `lwsruri`, `lwsstart`, `trws`).
#[inline]
fn parse_start_line(line: &[u8]) -> Result<StartLine<'_>, SipError> {
    let sp1 = memchr::memchr(b' ', line).ok_or(SipError::BadRequestLine)?;
    let first = line.get(..sp1).unwrap_or_default();
    let rest = line.get(sp1 + 1..).unwrap_or_default();
    if first.len() > 4
        && first
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        if !is_sip_2_0(first) {
            return Err(SipError::BadVersion);
        }
        // Status-Code = 3DIGIT, 100..=699; then SP and any reason phrase.
        let code = rest.get(..3).and_then(|d| abnf::decimal(d, 699));
        let code = match (code, at(rest, 3)) {
            (Some(c @ 100..), Some(b' ')) => c as u16,
            _ => return Err(SipError::BadStatusLine),
        };
        let reason = rest.get(4..).unwrap_or_default();
        return Ok(StartLine::Response { code, reason });
    }
    if !abnf::all(first, TOKEN) {
        return Err(SipError::BadRequestLine);
    }
    let sp2 = memchr::memchr(b' ', rest).ok_or(SipError::BadRequestLine)?;
    let uri = rest.get(..sp2).unwrap_or_default();
    let version = rest.get(sp2 + 1..).unwrap_or_default();
    if uri.is_empty()
        || memchr::memchr(b' ', version).is_some()
        || !version
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return Err(SipError::BadRequestLine);
    }
    if !is_sip_2_0(version) {
        return Err(SipError::BadVersion);
    }
    let uri = match SipUri::parse(uri) {
        // A Request-URI carries no URI headers (RFC 3261 §19.1.5, RFC 4475 `escruri`).
        Some(u) if u.headers.is_empty() => u,
        _ => return Err(SipError::BadRequestUri),
    };
    Ok(StartLine::Request {
        method: Method::from_bytes(first),
        method_raw: first,
        uri,
    })
}

fn is_sip_2_0(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"SIP/2.0")
}

/// `CSeq = 1*DIGIT LWS Method`.
#[inline]
pub(super) fn parse_cseq(v: &[u8]) -> Option<CSeq<'_>> {
    let start = abnf::skip_ws(v, 0);
    let digits = abnf::skip_digits(v, start);
    let seq = abnf::decimal(v.get(start..digits)?, u64::from(u32::MAX))?;
    let m = abnf::skip_ws(v, digits);
    let m_end = abnf::skip(v, m, TOKEN);
    if m == digits || m_end == m || abnf::skip_ws(v, m_end) != v.len() {
        return None;
    }
    let method_raw = v.get(m..m_end)?;
    Some(CSeq {
        seq: u32::try_from(seq).ok()?,
        method: Method::from_bytes(method_raw),
        method_raw,
    })
}

/// `Call-ID = word [ "@" word ]` (§20.8), trimmed.
#[inline]
pub(super) fn call_id(v: &[u8]) -> Option<&[u8]> {
    let c = abnf::trim(v);
    abnf::all(c, CALLID).then_some(c)
}

/// From and To hold exactly one value.
#[inline]
pub(super) fn from_to(v: &[u8]) -> Option<NameAddr<'_>> {
    let p = name_addr::parse(v, false)?;
    (p.end == v.len()).then_some(p.addr)
}

/// The `expires` of the first Contact value; `*` has none.
fn contact_expires(v: &[u8]) -> Result<Option<u32>, SipError> {
    if abnf::trim(v) == b"*" {
        return Ok(None);
    }
    name_addr::parse(v, true)
        .map(|p| p.expires)
        .ok_or(SipError::BadContact)
}

/// `Content-Length = 1*DIGIT` (§20.14).
pub(super) fn content_length(v: &[u8]) -> Result<usize, SipError> {
    abnf::decimal(abnf::trim(v), u64::from(u32::MAX))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(SipError::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn invite_fields() {
        let m = SipMessage::parse(INVITE, &limits()).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.status(), None);
        let StartLine::Request {
            uri, method_raw, ..
        } = *m.start_line()
        else {
            panic!("not a request")
        };
        assert_eq!(method_raw, b"INVITE");
        assert_eq!(
            (uri.user, uri.host),
            (Some(&b"bob"[..]), &b"biloxi.example.com"[..])
        );
        assert_eq!(m.call_id(), b"a84b4c76e66710@pc33.atlanta.example.com");
        assert_eq!(m.cseq().seq, 314159);
        assert_eq!(m.cseq().method, Method::Invite);
        assert_eq!(m.via().unwrap().branch, Some(&b"z9hG4bK776asdhds"[..]));
        assert_eq!(m.via().unwrap().rport, Some(None));
        assert_eq!(m.from().tag, Some(&b"1928301774"[..]));
        assert_eq!(m.to().tag, None);
        assert_eq!(m.to().display, Some(&b"Bob"[..]));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.content_length(), Some(4));
        assert_eq!(m.contact_expires(), None);
        assert_eq!(&INVITE[m.body_offset()..], b"v=0\n");
        assert_eq!(m.body(), b"v=0\n");
        assert_eq!(m.headers().count(), 9);
    }

    #[test]
    fn trailing_bytes_are_ignored_and_short_bodies_rejected() {
        let mut extra = INVITE.to_vec();
        extra.extend_from_slice(b"junk");
        let m = SipMessage::parse(&extra, &limits()).unwrap();
        assert_eq!(m.body(), b"v=0\n");
        let short = &INVITE[..INVITE.len() - 1];
        assert_eq!(
            SipMessage::parse(short, &limits()).unwrap_err(),
            SipError::ContentLengthExceedsDatagram
        );
    }

    #[test]
    fn status_lines() {
        for (line, want) in [
            (&b"SIP/2.0 200 OK"[..], Ok((200, &b"OK"[..]))),
            (b"SIP/2.0 100 ", Ok((100, &b""[..]))),
            (b"sip/2.0 699 x y", Ok((699, &b"x y"[..]))),
            (b"SIP/2.0 100", Err(SipError::BadStatusLine)),
            (b"SIP/2.0 099 x", Err(SipError::BadStatusLine)),
            (b"SIP/2.0 700 x", Err(SipError::BadStatusLine)),
            (b"SIP/2.0 4294967301 x", Err(SipError::BadStatusLine)),
            (b"SIP/2.0 20 x", Err(SipError::BadStatusLine)),
            (b"SIP/7.0 200 OK", Err(SipError::BadVersion)),
        ] {
            let got = parse_start_line(line).map(|s| match s {
                StartLine::Response { code, reason } => (code, reason),
                StartLine::Request { .. } => panic!("request"),
            });
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn request_lines() {
        for (line, want) in [
            (
                &b"INVITE  sip:a@example.com SIP/2.0"[..],
                SipError::BadRequestLine,
            ),
            (
                b"INVITE sip:a@example.com  SIP/2.0",
                SipError::BadRequestLine,
            ),
            (
                b"OPTIONS sip:a@example.com SIP/2.0  ",
                SipError::BadRequestLine,
            ),
            (
                b"INVITE sip:a@example.com; lr SIP/2.0",
                SipError::BadRequestLine,
            ),
            (
                b"INVITE <sip:a@example.com> SIP/2.0",
                SipError::BadRequestUri,
            ),
            (
                b"INVITE sip:a@example.com?Route=%3Csip:example.com%3E SIP/2.0",
                SipError::BadRequestUri,
            ),
            (b"OPTIONS sip:a@example.com SIP/7.0", SipError::BadVersion),
            (b"INVITE", SipError::BadRequestLine),
            (
                b"IN(VITE sip:a@example.com SIP/2.0",
                SipError::BadRequestLine,
            ),
            (
                b"INVITE sip:a@example.com HTTP/1.1",
                SipError::BadRequestLine,
            ),
        ] {
            assert_eq!(
                parse_start_line(line).unwrap_err(),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let StartLine::Request {
            method, method_raw, ..
        } = parse_start_line(
            b"!interesting-Method0123456789_*+`.%indeed'~ sip:a@example.com SIP/2.0",
        )
        .unwrap()
        else {
            panic!()
        };
        assert_eq!(method, Method::Other);
        assert_eq!(method_raw, b"!interesting-Method0123456789_*+`.%indeed'~");
    }

    #[test]
    fn cseq() {
        let c = parse_cseq(b" 0009\r\n  INVITE ").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert_eq!(parse_cseq(b"4294967295 ACK").unwrap().seq, u32::MAX);
        for bad in [
            &b"36893488147419103232 REGISTER"[..],
            b"1INVITE",
            b"1",
            b"INVITE",
            b"1 INVITE x",
            b"-1 INVITE",
        ] {
            assert!(
                parse_cseq(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
