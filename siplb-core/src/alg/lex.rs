//! Lexical pieces shared by the SDP view and the SIP rewriter: IPv4 text, ports,
//! character classes of RFC 3261 §25.1. Everything takes a slice and an index and
//! never indexes out of bounds: a position past the end matches nothing.

use std::net::Ipv4Addr;

/// The byte at `i`, if any.
#[inline(always)]
pub(crate) fn at(s: &[u8], i: usize) -> Option<u8> {
    s.get(i).copied()
}

/// Character classes (bits of [`CLASSES`]), RFC 3261 §25.1.
/// SP, HTAB and the CR LF of a folded line: inside a header value any run of them is
/// linear white space.
pub(crate) const WS: u8 = 1;
/// `token`.
pub(crate) const TOKEN: u8 = 1 << 1;
/// A URI parameter's name or value (`paramchar`).
pub(crate) const URI_PARAM: u8 = 1 << 2;
/// An unquoted header parameter value (`token / host`).
pub(crate) const PARAM_VALUE: u8 = 1 << 3;
/// A host name or IPv4 address (`hostname`, plus "_" as the SIP scanner accepts).
pub(crate) const HOST: u8 = 1 << 4;
pub(crate) const DIGIT: u8 = 1 << 5;
/// Anything but what ends an `addr-spec` in a header (";", ",", white space).
pub(crate) const ADDR_SPEC: u8 = 1 << 6;

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let alnum = c.is_ascii_alphanumeric();
        let mut k = 0;
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            k |= WS;
        } else if c != b';' && c != b',' {
            k |= ADDR_SPEC;
        }
        if alnum
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            k |= TOKEN | PARAM_VALUE;
        }
        if matches!(c, b':' | b'[' | b']') {
            k |= PARAM_VALUE;
        }
        if alnum
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
        {
            k |= URI_PARAM;
        }
        if alnum || matches!(c, b'-' | b'.' | b'_') {
            k |= HOST;
        }
        if c.is_ascii_digit() {
            k |= DIGIT;
        }
        t[i] = k;
        i += 1;
    }
    t
}

static CLASSES: [u8; 256] = classes();

/// Whether `c` is in one of the classes of `class`.
#[inline(always)]
pub(crate) fn is(c: u8, class: u8) -> bool {
    CLASSES[usize::from(c)] & class != 0
}

/// The first index at or after `i` whose byte is in none of `class` (or `s.len()`).
#[inline(always)]
pub(crate) fn skip(s: &[u8], mut i: usize, class: u8) -> usize {
    while let Some(&c) = s.get(i) {
        if !is(c, class) {
            break;
        }
        i += 1;
    }
    i
}

/// [`skip`] that stops at `end` at the latest.
#[inline(always)]
pub(crate) fn skip_to(s: &[u8], i: usize, end: usize, class: u8) -> usize {
    skip(s.get(..end).unwrap_or(s), i, class)
}

/// Dotted-quad IPv4 text: four decimal parts of one to three digits, each at most 255.
/// Leading zeros are read as decimal (`010` is 10), as most SIP stacks do.
pub(crate) fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let (ip, end) = ipv4_at(s, 0)?;
    (end == s.len()).then_some(ip)
}

/// Dotted-quad IPv4 text at `i`: the address and the index after it (the caller
/// checks what follows). Octets unrolled: three digit tests at most each.
#[inline]
pub(crate) fn ipv4_at(s: &[u8], i: usize) -> Option<(Ipv4Addr, usize)> {
    let digit = |j: usize| s.get(j).map(|c| c.wrapping_sub(b'0')).filter(|&d| d < 10);
    let octet = |j: usize| -> Option<(u8, usize)> {
        let d0 = u16::from(digit(j)?);
        let Some(d1) = digit(j + 1) else {
            return Some((d0 as u8, j + 1));
        };
        let v = d0 * 10 + u16::from(d1);
        let Some(d2) = digit(j + 2) else {
            return Some((v as u8, j + 2));
        };
        let v = v * 10 + u16::from(d2);
        (v <= 255).then_some((v as u8, j + 3))
    };
    let dot = |j: usize| (s.get(j) == Some(&b'.')).then_some(j + 1);
    let (a, j) = octet(i)?;
    let (b, j) = octet(dot(j)?)?;
    let (c, j) = octet(dot(j)?)?;
    let (d, j) = octet(dot(j)?)?;
    // A fourth digit or a fifth part belongs to something else.
    if digit(j).is_some() {
        return None;
    }
    Some((Ipv4Addr::new(a, b, c, d), j))
}

/// The first `b` at or after `from`. Lines are short: eight bytes per step over the
/// first 64, where a `memchr` call costs more than it saves, then `memchr`.
#[inline]
pub(crate) fn find_byte(s: &[u8], from: usize, b: u8) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let rest = s.get(from..)?;
    let near = rest.len().min(64);
    let pattern = LOW * u64::from(b);
    let mut i = 0;
    while let Some(chunk) = rest.get(i..i + 8).filter(|_| i + 8 <= near) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // The lowest flagged byte is the first zero byte of `x` (exact; only flags
        // above a true zero can be false).
        let zero = x.wrapping_sub(LOW) & !x & HIGH;
        if zero != 0 {
            return Some(from + i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr(b, rest.get(i..)?).map(|p| from + i + p)
}

/// Decimal digits at `i`, before `end`: their value (at most 5 digits, else `None`)
/// and the index after them. No digit: `None`.
#[inline]
pub(crate) fn u16_at(s: &[u8], i: usize, end: usize) -> Option<(u16, usize)> {
    let mut v = 0u32;
    let mut j = i;
    while j < end {
        match s.get(j).map(|c| c.wrapping_sub(b'0')) {
            Some(d @ 0..=9) => v = v * 10 + u32::from(d),
            _ => break,
        }
        j += 1;
        if j - i > 5 {
            return None;
        }
    }
    (j > i).then_some(())?;
    Some((u16::try_from(v).ok()?, j))
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
            b"198.18.0.1234",
            b"1.2.3.4.5",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bytes_are_found_near_and_far() {
        let mut s = vec![b'x'; 200];
        for at in [0, 3, 7, 8, 15, 63, 64, 65, 199] {
            s[at] = b'\n';
            for from in [0, 1, at.saturating_sub(1), at]
                .into_iter()
                .filter(|&f| f <= at)
            {
                assert_eq!(find_byte(&s, from, b'\n'), Some(at), "at {at} from {from}");
            }
            assert_eq!(find_byte(&s, at + 1, b'\n'), None);
            s[at] = b'x';
        }
        // Bytes just above the searched one never flag falsely.
        assert_eq!(
            find_byte(b"\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\n", 0, b'\n'),
            Some(8)
        );
        assert_eq!(find_byte(b"ab", 5, b'a'), None);
    }

    #[test]
    fn numbers_in_place() {
        assert_eq!(u16_at(b"x49170 ", 1, 7), Some((49170, 6)));
        assert_eq!(u16_at(b"65535", 0, 5), Some((65535, 5)));
        assert_eq!(u16_at(b"65536", 0, 5), None);
        assert_eq!(u16_at(b"123456", 0, 6), None);
        assert_eq!(u16_at(b"12/3", 0, 1), Some((1, 1)));
        assert_eq!(u16_at(b"x", 0, 1), None);
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
        assert_eq!(skip(b"  \r\n\tx", 0, WS), 5);
        assert_eq!(skip_to(b"    x", 0, 2, WS), 2);
        assert_eq!(skip_to(b"    x", 3, 2, WS), 3);
        assert_eq!(skip(b"  ", 7, HOST), 7);
        assert_eq!(skip(b"abc", 0, HOST), 3);
        assert_eq!(skip(b"a<b;c", 0, ADDR_SPEC), 3);
        assert_eq!(skip(b"12a", 0, DIGIT), 2);
        assert!(is(b'~', TOKEN) && is(b':', PARAM_VALUE) && !is(b':', TOKEN));
        assert!(is(b'/', URI_PARAM) && !is(b';', URI_PARAM) && !is(b'=', URI_PARAM));
    }
}
