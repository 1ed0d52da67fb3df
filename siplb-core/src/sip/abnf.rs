//! The basic rules of RFC 3261 §25.1 the scanner needs: character classes (token,
//! word, URI characters, host names), linear white space, quoted strings and decimal
//! numbers. Everything here works on a slice and an index and never indexes out of
//! bounds: a position past the end simply matches nothing.

/// `token` characters (RFC 3261 §25.1): alphanum / "-" / "." / "!" / "%" / "*" / "_" /
/// "+" / "`" / "'" / "~".
pub(crate) const TOKEN: u16 = 1 << 0;
/// `word` characters (Call-ID, §25.1): token characters plus "(" / ")" / "<" / ">" /
/// ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}".
pub(crate) const WORD: u16 = 1 << 1;
/// Characters a URI may hold (§25.1 `unreserved` / `reserved` / `escaped`, plus the
/// brackets of IPv6 references).
pub(crate) const URIC: u16 = 1 << 2;
/// Host name and IPv4 address characters (§25.1 `hostname`). "_" is accepted too: it
/// is common in the wild (SRV-style names) and harmless to a balancer.
pub(crate) const HOSTNAME: u16 = 1 << 3;
/// White space inside a header value: SP, HTAB and the CR LF of a folded line. The
/// header scanner only lets CR LF into a value when white space follows, so inside a
/// value any run of these bytes is LWS (§25.1).
pub(crate) const WS: u16 = 1 << 4;
/// Characters of an IPv6 reference between its brackets (§25.1 `IPv6reference`).
pub(crate) const IPV6: u16 = 1 << 5;
/// Characters of a parameter value: token characters plus those of a host (":" and
/// brackets of IPv6 references), §25.1 `gen-value = token / host / quoted-string`.
pub(crate) const PVALUE: u16 = 1 << 6;
/// Call-ID characters: `word [ "@" word ]` (§25.1).
pub(crate) const CALLID: u16 = 1 << 7;
/// URI characters after the host of a canonical SIP URI (its parameters): URI
/// characters but "@" (which would make the part before it userinfo) and "?" (headers).
pub(crate) const URI_PARAM: u16 = 1 << 8;

const fn in_set(c: u8, set: &[u8]) -> bool {
    let mut i = 0;
    while i < set.len() {
        if set[i] == c {
            return true;
        }
        i += 1;
    }
    false
}

const fn classes() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let alnum = c.is_ascii_alphanumeric();
        let mut k: u16 = 0;
        if alnum || in_set(c, b"-.!%*_+`'~") {
            k |= TOKEN | WORD | PVALUE;
        }
        if in_set(c, b"()<>:\\\"/[]?{}") {
            k |= WORD;
        }
        if k & WORD != 0 || c == b'@' {
            k |= CALLID;
        }
        if alnum || in_set(c, b"-_.!~*'()%;/?:@&=+$,[]") {
            k |= URIC;
        }
        if alnum || in_set(c, b"-._") {
            k |= HOSTNAME;
        }
        if in_set(c, b" \t\r\n") {
            k |= WS;
        }
        if c.is_ascii_hexdigit() || in_set(c, b":.") {
            k |= IPV6;
        }
        if in_set(c, b":[]") {
            k |= PVALUE;
        }
        if k & URIC != 0 && c != b'@' && c != b'?' {
            k |= URI_PARAM;
        }
        t[i] = k;
        i += 1;
    }
    t
}

static CLASSES: [u16; 256] = classes();

/// Whether `c` belongs to one of the classes in `class` (a bit set of the constants).
#[inline(always)]
pub(crate) fn is(c: u8, class: u16) -> bool {
    CLASSES[usize::from(c)] & class != 0
}

/// The index of the first byte at or after `i` that is not in `class`.
#[inline]
pub(crate) fn skip(s: &[u8], mut i: usize, class: u16) -> usize {
    // Four bytes per loop trip: one bounds check and one back edge for four tests.
    while let Some(&[a, b, c, d]) = s.get(i..).and_then(|r| r.first_chunk::<4>()) {
        match (is(a, class), is(b, class), is(c, class), is(d, class)) {
            (true, true, true, true) => i += 4,
            (false, ..) => return i,
            (true, false, ..) => return i + 1,
            (true, true, false, _) => return i + 2,
            (true, true, true, false) => return i + 3,
        }
    }
    match s.get(i..) {
        Some(rest) => {
            i + rest
                .iter()
                .position(|&c| !is(c, class))
                .unwrap_or(rest.len())
        }
        None => i,
    }
}

/// [`skip`] for one class bit, eight bytes per step while a whole word is in the
/// class: a branch-free fold over eight bytes costs a third of eight loop trips, and
/// the runs the fast paths meet (hosts, Call-IDs, branches, tags) are long.
#[inline(always)]
pub(crate) fn skip_run(s: &[u8], mut i: usize, class: u16) -> usize {
    debug_assert!(class.count_ones() == 1);
    while let Some(w) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        // A tree of ANDs, not a chain: the exit test waits on three levels, not eight.
        let c = |k: usize| CLASSES[usize::from(w[k])];
        if (c(0) & c(1)) & (c(2) & c(3)) & ((c(4) & c(5)) & (c(6) & c(7))) & class == 0 {
            break;
        }
        i += 8;
    }
    skip(s, i, class)
}

/// The index of the first non-digit at or after `i`.
#[inline]
pub(crate) fn skip_digits(s: &[u8], i: usize) -> usize {
    match s.get(i..) {
        Some(rest) => {
            i + rest
                .iter()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(rest.len())
        }
        None => i,
    }
}

/// The index of the first byte at or after `i` that is not a space (SP only: the
/// canonical spellings use no other white space).
#[inline(always)]
pub(crate) fn skip_sp(s: &[u8], mut i: usize) -> usize {
    while s.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// Skips linear white space (`SWS`, §25.1) from `i`.
#[inline]
pub(crate) fn skip_ws(s: &[u8], i: usize) -> usize {
    skip(s, i, WS)
}

/// `s` without leading and trailing LWS.
#[inline]
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = skip_ws(s, 0);
    let mut end = s.len();
    while end > start && s.get(end - 1).is_some_and(|&c| is(c, WS)) {
        end -= 1;
    }
    s.get(start..end).unwrap_or_default()
}

/// Whether every byte of a non-empty `s` belongs to `class` (a single class bit).
/// Branch-free over the bytes: the inputs are short and usually valid.
#[inline]
pub(crate) fn all(s: &[u8], class: u16) -> bool {
    !s.is_empty()
        && s.iter()
            .fold(class, |acc, &c| acc & CLASSES[usize::from(c)])
            != 0
}

/// Whether `s` holds `lit` at `i` (a fixed-size compare, not a call to `memcmp`).
#[inline(always)]
pub(crate) fn lit_at<const N: usize>(s: &[u8], i: usize, lit: &[u8; N]) -> bool {
    s.get(i..).and_then(|r| r.first_chunk::<N>()) == Some(lit)
}

/// The byte at `i`, if any.
#[inline(always)]
pub(crate) fn at(s: &[u8], i: usize) -> Option<u8> {
    s.get(i).copied()
}

/// Given `s[i] == '"'`, the index just past the closing quote of the `quoted-string`
/// (§25.1: `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`); `None` if unterminated.
pub(crate) fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    // Display names and quoted parameters are short: a plain loop beats memchr2.
    let mut j = i.checked_add(1)?;
    loop {
        match at(s, j)? {
            b'"' => return Some(j + 1),
            // A backslash escapes the next byte, except CR and LF.
            b'\\' => match at(s, j + 1)? {
                b'\r' | b'\n' => return None,
                _ => j += 2,
            },
            _ => j += 1,
        }
    }
}

/// A decimal number (`1*DIGIT`) no larger than `max`; `None` if `s` is empty, holds a
/// non-digit or overflows. Leading zeros are allowed (RFC 4475 `wsinv`).
#[inline]
pub(crate) fn decimal(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    // Up to 19 digits cannot overflow: no checks per digit.
    if s.len() <= 19 {
        let mut v: u64 = 0;
        for &c in s {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + u64::from(d);
        }
        return (v <= max).then_some(v);
    }
    let mut v: u64 = 0;
    for &c in s {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
        if v > max {
            return None;
        }
    }
    Some(v)
}

/// The decimal number (`1*DIGIT`) at `i` and the index after its digits: [`skip_digits`]
/// and [`decimal`] in one pass. `None` if no digit is there or it exceeds `max`.
#[inline(always)]
pub(crate) fn number(s: &[u8], i: usize, max: u64) -> Option<(u64, usize)> {
    let (mut v, mut j) = (0u64, i);
    while let Some(d) = s.get(j).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
        v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        j += 1;
    }
    match j - i {
        0 => None,
        // Up to 19 digits cannot overflow.
        1..=19 => (v <= max).then_some((v, j)),
        _ => Some((decimal(s.get(i..j)?, max)?, j)),
    }
}

/// A `delta-seconds` value (§25.1), at most 2³²−1 (§20.19).
#[inline]
pub(crate) fn delta_seconds(s: &[u8]) -> Option<u32> {
    decimal(s, u64::from(u32::MAX)).and_then(|v| u32::try_from(v).ok())
}

/// A port number (§25.1 `port = 1*DIGIT`, at most 65535).
#[inline]
pub(crate) fn port(s: &[u8]) -> Option<u16> {
    decimal(s, u64::from(u16::MAX)).and_then(|v| u16::try_from(v).ok())
}

/// Parses `host` (§25.1: hostname / IPv4address / IPv6reference) at `i`; returns the
/// host as written (an IPv6 reference keeps its brackets) and the index after it.
pub(crate) fn host(s: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if at(s, i)? == b'[' {
        let close = i + 1 + memchr::memchr(b']', s.get(i + 1..)?)?;
        let inner = s.get(i + 1..close)?;
        if !all(inner, IPV6) || !inner.contains(&b':') {
            return None;
        }
        return Some((s.get(i..=close)?, close + 1));
    }
    let end = skip(s, i, HOSTNAME);
    if end == i {
        return None;
    }
    Some((s.get(i..end)?, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_rfc3261() {
        assert!(all(b"z9hG4bK-.!%*_+`'~", TOKEN));
        assert!(!is(b'@', TOKEN) && !is(b'@', WORD) && is(b'@', URIC));
        assert!(all(b"a(b)<c>:\\\"/[]?{}", WORD));
        assert!(!is(b' ', URIC) && !is(b'<', URIC) && !is(b'"', URIC));
        assert!(all(b"[2001:db8::1]", PVALUE));
    }

    #[test]
    fn trims_folded_white_space() {
        assert_eq!(trim(b" \r\n\t abc \r\n "), b"abc");
        assert_eq!(trim(b" \t "), b"");
        assert_eq!(trim(b""), b"");
    }

    #[test]
    fn quoted_strings_honour_escapes() {
        assert_eq!(quoted_end(b"\"a\\\"b\" <x>", 0), Some(6));
        assert_eq!(quoted_end(b"\"\\\x00\\\x07\"", 0), Some(6));
        assert_eq!(quoted_end(b"\"open", 0), None);
        assert_eq!(quoted_end(b"\"ends in escape\\", 0), None);
        assert_eq!(quoted_end(b"\"bad\\\r\n \"", 0), None);
    }

    #[test]
    fn decimals_reject_overflow_and_junk() {
        assert_eq!(decimal(b"0068", 255), Some(68));
        assert_eq!(decimal(b"256", 255), None);
        assert_eq!(decimal(b"", 255), None);
        assert_eq!(decimal(b"-1", 255), None);
        assert_eq!(delta_seconds(b"4294967295"), Some(u32::MAX));
        assert_eq!(delta_seconds(b"4294967296"), None);
        assert_eq!(delta_seconds(b"36893488147419103232"), None);
        assert_eq!(port(b"65535"), Some(65535));
        assert_eq!(port(b"65536"), None);
        assert_eq!(number(b"x0068;", 1, 255), Some((68, 5)));
        assert_eq!(number(b"x256", 1, 255), None);
        assert_eq!(number(b"x;", 1, 255), None);
        assert_eq!(number(b"36893488147419103232 ", 0, u64::MAX), None);
        assert_eq!(number(b"00000000000000000000001", 0, 1), Some((1, 23)));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host(b"[2001:db8::9]:5060", 0),
            Some((&b"[2001:db8::9]"[..], 13))
        );
        assert_eq!(
            host(b"proxy.example.com;lr", 0),
            Some((&b"proxy.example.com"[..], 17))
        );
        assert_eq!(host(b"[2001:db8::9", 0), None);
        assert_eq!(host(b"[zz]", 0), None);
        assert_eq!(host(b";x", 0), None);
        assert_eq!(host(b"", 3), None);
    }
}
