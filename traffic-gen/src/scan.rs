//! The generator's own lean reading of SIP, for its hot loop: split the header section
//! into lines and pick the few fields it needs, without validating the message.
//!
//! The generator must outrun the balancer on one core, and the balancer's full scanner
//! (`siplb_core::sip::SipMessage::parse`, which validates every field it returns) costs
//! about as much per message as everything else the balancer does. What the generator
//! reads is written by itself or by a peer that answers it, so a line scan is enough;
//! the tests check that it agrees with the full scanner on what the generator sends and
//! answers. Folded (continued) lines are not joined: a continuation is skipped.

use siplb_core::sip::Method;

/// The header fields the generator reads, by long or compact name (RFC 3261 §7.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Via,
    From,
    To,
    CallId,
    CSeq,
    /// Authorization or Proxy-Authorization.
    Credentials,
    Other,
}

fn field(name: &[u8]) -> Field {
    match name.len() {
        1 => match name[0].to_ascii_lowercase() {
            b'v' => Field::Via,
            b'f' => Field::From,
            b't' => Field::To,
            b'i' => Field::CallId,
            _ => Field::Other,
        },
        _ if name.eq_ignore_ascii_case(b"Via") => Field::Via,
        _ if name.eq_ignore_ascii_case(b"From") => Field::From,
        _ if name.eq_ignore_ascii_case(b"To") => Field::To,
        _ if name.eq_ignore_ascii_case(b"Call-ID") => Field::CallId,
        _ if name.eq_ignore_ascii_case(b"CSeq") => Field::CSeq,
        _ if name.eq_ignore_ascii_case(b"Authorization")
            || name.eq_ignore_ascii_case(b"Proxy-Authorization") =>
        {
            Field::Credentials
        }
        _ => Field::Other,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

/// The start line, and the header lines after it up to the empty line.
pub struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Splits `msg` into its start line and header lines; `None` without a line end.
pub fn lines(msg: &[u8]) -> Option<(&[u8], Lines<'_>)> {
    let end = memchr::memchr(b'\n', msg)?;
    Some((
        trim(&msg[..end]),
        Lines {
            buf: msg,
            pos: end + 1,
        },
    ))
}

impl<'a> Iterator for Lines<'a> {
    /// The field, its name as written, and its value without surrounding white space.
    type Item = (Field, &'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.buf.get(self.pos..)?;
            let end = memchr::memchr(b'\n', rest)?;
            let line = &rest[..end];
            self.pos += end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                self.pos = self.buf.len();
                return None;
            }
            if matches!(line[0], b' ' | b'\t') {
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let name = trim(&line[..colon]);
            return Some((field(name), name, trim(&line[colon + 1..])));
        }
    }
}

/// The `;name=value` parameter of a header value (`tag`, `branch`), up to the next
/// `;`, `,` or white space; in a `name-addr` value only after the `>` (parameters
/// inside the angle brackets belong to the URI).
pub fn param<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut i = memchr::memrchr(b'>', value).map_or(0, |gt| gt + 1);
    while let Some(at) = memchr::memchr(b';', &value[i..]) {
        let p = &value[i + at + 1..];
        let p = trim(p);
        if p.len() > name.len()
            && p[..name.len()].eq_ignore_ascii_case(name)
            && p[name.len()] == b'='
        {
            let v = &p[name.len() + 1..];
            let end = v
                .iter()
                .position(|c| matches!(c, b';' | b',' | b'>' | b' ' | b'\t'))
                .unwrap_or(v.len());
            return Some(&v[..end]);
        }
        i += at + 1;
    }
    None
}

/// What the client reads from a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    pub code: u16,
    /// The branch of the top Via.
    pub branch: Option<&'a [u8]>,
    pub cseq_method: Method,
    pub to_tag: Option<&'a [u8]>,
}

/// Reads a response; `None` for a request or a malformed status line.
pub fn response(msg: &[u8]) -> Option<Response<'_>> {
    let (start, fields) = lines(msg)?;
    let rest = start.strip_prefix(b"SIP/2.0 ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let mut r = Response {
        code,
        branch: None,
        cseq_method: Method::Other,
        to_tag: None,
    };
    let mut via_seen = false;
    for (f, _, value) in fields {
        match f {
            Field::Via if !via_seen => {
                via_seen = true;
                r.branch = param(value, b"branch");
            }
            Field::To => r.to_tag = param(value, b"tag"),
            Field::CSeq => {
                let m = value
                    .iter()
                    .position(|c| matches!(c, b' ' | b'\t'))
                    .map(|sp| trim(&value[sp..]))
                    .unwrap_or_default();
                r.cseq_method = Method::from_bytes(m);
            }
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use siplb_core::sip::{HeaderName, Limits, SipMessage};

    const RESPONSE: &[u8] = b"SIP/2.0 200 OK\r\n\
        Via: SIP/2.0/UDP 198.18.1.1:5060;branch=z9hG4bKproxy;received=198.18.1.1\r\n\
        v: SIP/2.0/UDP 198.18.0.10:5070;rport=5070;branch=z9hG4bK-inner\r\n\
        From: <sip:u1@siplb-gen.test>;tag=abc\r\n\
        t: <sip:service@198.18.0.2>;tag=b1x2a\r\n\
        i: 1@x\r\n\
        CSeq:  2  BYE\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn response_fields_agree_with_the_full_scanner() {
        let r = response(RESPONSE).unwrap();
        let m = SipMessage::parse(RESPONSE, &Limits::default()).unwrap();
        assert_eq!(Some(r.code), m.status());
        assert_eq!(r.branch, m.via().unwrap().branch);
        assert_eq!(r.to_tag, m.to().tag);
        assert_eq!(r.cseq_method, m.cseq().method);
    }

    #[test]
    fn lines_classify_compact_and_long_names() {
        let (start, fields) = lines(RESPONSE).unwrap();
        assert_eq!(start, b"SIP/2.0 200 OK");
        let got: Vec<Field> = fields.map(|(f, _, _)| f).collect();
        use Field::*;
        assert_eq!(got, [Via, Via, From, To, CallId, CSeq, Other]);
        let m = SipMessage::parse(RESPONSE, &Limits::default()).unwrap();
        let full: Vec<&[u8]> = m.headers().map(|h| h.value).collect();
        let ours: Vec<&[u8]> = lines(RESPONSE).unwrap().1.map(|(_, _, v)| v).collect();
        assert_eq!(full, ours);
        assert_eq!(m.headers().filter(|h| h.name == HeaderName::Via).count(), 2);
    }

    #[test]
    fn params_and_requests() {
        assert_eq!(param(b"<sip:a@b>;tag=x1;foo", b"tag"), Some(&b"x1"[..]));
        assert_eq!(param(b"<sip:a@b;tag=no>", b"tag"), None);
        assert_eq!(
            param(b"SIP/2.0/UDP h:1;rport;branch=z9;x", b"branch"),
            Some(&b"z9"[..])
        );
        assert_eq!(param(b"<sip:a@b>", b"tag"), None);
        assert!(response(b"INVITE sip:a@b SIP/2.0\r\n\r\n").is_none());
        assert!(response(b"SIP/2.0 2x0 OK\r\n\r\n").is_none());
    }
}
