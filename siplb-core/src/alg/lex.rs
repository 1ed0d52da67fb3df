//! Lexical pieces shared by the SDP view and the SIP rewriter: IPv4 text, ports,
//! character classes of RFC 3261 §25.1. Everything takes a slice and an index and
//! never indexes out of bounds: a position past the end matches nothing.

use std::net::Ipv4Addr;

/// The byte at `i`, if any.
#[inline(always)]
pub(crate) fn at(s: &[u8], i: usize) -> Option<u8> {
    s.get(i).copied()
}

/// SP, HTAB and the CR LF of a folded SIP line: inside a header value any run of them
/// is linear white space (RFC 3261 §25.1).
#[inline(always)]
pub(crate) fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters.
#[inline(always)]
pub(crate) fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Characters of a URI parameter's name or value (RFC 3261 §25.1 `paramchar`).
#[inline(always)]
pub(crate) fn is_uri_param(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'%'
                | b'['
                | b']'
                | b'/'
                | b':'
                | b'&'
                | b'+'
                | b'$'
        )
}

/// Characters of an unquoted header parameter value (`token / host`, §25.1).
#[inline(always)]
pub(crate) fn is_param_value(c: u8) -> bool {
    is_token(c) || matches!(c, b':' | b'[' | b']')
}

/// Characters of a host name or IPv4 address (RFC 3261 §25.1 `hostname`, plus "_",
/// which the SIP scanner accepts too).
#[inline(always)]
pub(crate) fn is_host(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')
}

/// The first index at or after `i` whose byte does not satisfy `f` (or `s.len()`).
#[inline(always)]
pub(crate) fn skip(s: &[u8], mut i: usize, f: impl Fn(u8) -> bool) -> usize {
    while let Some(&c) = s.get(i) {
        if !f(c) {
            break;
        }
        i += 1;
    }
    i
}

/// [`skip`] that stops at `end` at the latest.
#[inline(always)]
pub(crate) fn skip_to(s: &[u8], i: usize, end: usize, f: impl Fn(u8) -> bool) -> usize {
    skip(s.get(..end).unwrap_or(s), i, f)
}

/// Dotted-quad IPv4 text: four decimal parts of one to three digits, each at most 255.
/// Leading zeros are read as decimal (`010` is 10), as most SIP stacks do.
pub(crate) fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = p.iter().fold(0u16, |a, &c| a * 10 + u16::from(c - b'0'));
        *o = u8::try_from(v).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// Whether `s` is `name`, ignoring ASCII case.
#[inline(always)]
pub(crate) fn eq_caseless(s: &[u8], name: &[u8]) -> bool {
    s.eq_ignore_ascii_case(name)
}

/// A decimal number of one to five digits that fits a `u16` (a port, a count).
pub(crate) fn parse_u16(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = s.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
    u16::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text() {
        assert_eq!(
            parse_ipv4(b"198.18.0.1"),
            Some(Ipv4Addr::new(198, 18, 0, 1))
        );
        assert_eq!(
            parse_ipv4(b"198.019.0.1"),
            Some(Ipv4Addr::new(198, 19, 0, 1))
        );
        assert_eq!(parse_ipv4(b"0.0.0.0"), Some(Ipv4Addr::UNSPECIFIED));
        for bad in [
            &b""[..],
            b"198.18.0",
            b"198.18.0.1.",
            b"198.18.0.256",
            b"198.18..1",
            b"198.18.0.1000",
            b"198.18.0.x",
            b"+98.18.0.1",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ports() {
        assert_eq!(parse_u16(b"0"), Some(0));
        assert_eq!(parse_u16(b"65535"), Some(65535));
        assert_eq!(parse_u16(b"065535"), None);
        assert_eq!(parse_u16(b"65536"), None);
        assert_eq!(parse_u16(b""), None);
        assert_eq!(parse_u16(b"5o60"), None);
    }

    #[test]
    fn skipping_stops_at_the_end() {
        assert_eq!(
            skip(b"  \r\n\tx", 0, |c| c == b' '
                || c == b'\r'
                || c == b'\n'
                || c == b'\t'),
            5
        );
        assert_eq!(skip(b"  ", 7, is_host), 7);
        assert_eq!(skip(b"abc", 0, is_host), 3);
    }
}
