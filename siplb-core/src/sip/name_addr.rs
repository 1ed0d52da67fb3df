//! From, To and Contact values: `( name-addr / addr-spec ) *( SEMI param )` (RFC 3261
//! §20.10, §20.20, §20.39, grammar §25.1).

use super::abnf::{self, at, TOKEN, WS};
use super::caseless::{self, Name};
use super::params::{self, Param};
use super::uri::SipUri;

/// An address with its display name and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written, quotes included (`"Alice \"A\""`, or `Alice Smith`
    /// for a token list); `None` if absent. It may span a folded line.
    pub display: Option<&'a [u8]>,
    pub uri: SipUri<'a>,
    /// The `tag` parameter (RFC 3261 §19.3).
    pub tag: Option<&'a [u8]>,
}

impl NameAddr<'_> {
    /// An address of nothing, for a view under construction.
    pub(crate) const EMPTY: NameAddr<'static> = NameAddr {
        display: None,
        uri: SipUri::EMPTY,
        tag: None,
    };
}

/// One parsed value and what else it said.
pub(crate) struct Parsed<'a> {
    pub addr: NameAddr<'a>,
    /// The `expires` parameter (Contact, §20.10), if `want_expires`.
    pub expires: Option<u32>,
    /// The index of the byte after the value: the end of `s`, or a `,` before another
    /// value.
    pub end: usize,
}

/// Parses the first value of `s`. A value in `addr-spec` form (no angle brackets) ends
/// its URI at the first `;`, `,` or white space and may not carry URI headers (§20,
/// RFC 4475 `regbadct`). With `want_expires`, an `expires` parameter must be
/// `delta-seconds`.
#[inline]
pub(crate) fn parse(s: &[u8], want_expires: bool) -> Option<Parsed<'_>> {
    let start = abnf::skip_ws(s, 0);
    let (display, uri, after) = match at(s, start)? {
        b'"' => {
            let q = abnf::quoted_end(s, start)?;
            let lt = abnf::skip_ws(s, q);
            if at(s, lt)? != b'<' {
                return None;
            }
            let (uri, after) = bracketed(s, lt)?;
            (Some(s.get(start..q)?), uri, after)
        }
        _ => {
            // `*(token LWS)` then "<", or else an addr-spec.
            let stop = abnf::skip(s, start, TOKEN | WS);
            if at(s, stop) == Some(b'<') {
                let display = abnf::trim(s.get(start..stop)?);
                let (uri, after) = bracketed(s, stop)?;
                ((!display.is_empty()).then_some(display), uri, after)
            } else {
                let end = start
                    + s.get(start..)?
                        .iter()
                        .position(|&c| c == b';' || c == b',' || abnf::is(c, WS))
                        .unwrap_or(s.len() - start);
                let uri = SipUri::parse(s.get(start..end)?)?;
                if !uri.headers.is_empty() {
                    return None;
                }
                (None, uri, end)
            }
        }
    };
    let (mut tag, mut expires) = (None, None);
    let end = params::parse(s, after, |p| param(&mut tag, &mut expires, p, want_expires))?;
    if !matches!(at(s, end), None | Some(b',')) {
        return None;
    }
    Some(Parsed {
        addr: NameAddr { display, uri, tag },
        expires,
        end,
    })
}

/// The canonical spellings of a value in `s` from `i`: `<uri>`, `"Display" <uri>` (no
/// backslash in the quotes) or `Display Name <uri>`, after optional spaces; the URI in
/// its canonical spelling ([`SipUri::parse_canonical`]) and parameters without white
/// space or quotes. Writes the value into `out` (see `SipUri::parse_canonical` for
/// why) and returns the index of the first byte after it (the caller checks it ends
/// the field) and the `expires` parameter if `want_expires`. `None` for anything else
/// (addr-spec form, folding, tabs, ...), which [`parse`] then reads; where it returns
/// `Some`, `parse` of `s[i..end]` returns the same.
#[inline]
pub(crate) fn parse_canonical<'a>(
    s: &'a [u8],
    i: usize,
    want_expires: bool,
    out: &mut NameAddr<'a>,
) -> Option<(usize, Option<u32>)> {
    let start = abnf::skip_sp(s, i);
    let lt = match at(s, start)? {
        b'<' => {
            out.display = None;
            start
        }
        b'"' => {
            // Stops at the closing quote, or at what only the general grammar reads.
            let len = s
                .get(start + 1..)?
                .iter()
                .position(|&c| matches!(c, b'"' | b'\\' | b'\r' | b'\n'))?;
            let q = start + 1 + len;
            if at(s, q)? != b'"' {
                return None;
            }
            out.display = Some(s.get(start..=q)?);
            abnf::skip_sp(s, q + 1)
        }
        _ => {
            let mut stop = start;
            while let Some(&c) = s.get(stop) {
                if !(c == b' ' || abnf::is(c, TOKEN)) {
                    break;
                }
                stop += 1;
            }
            let mut end = stop;
            while end > start && at(s, end - 1) == Some(b' ') {
                end -= 1;
            }
            out.display = Some(s.get(start..end)?).filter(|d| !d.is_empty());
            stop
        }
    };
    if at(s, lt)? != b'<' {
        return None;
    }
    let gt = SipUri::parse_canonical(s, lt + 1, &mut out.uri)?;
    if at(s, gt)? != b'>' {
        return None;
    }
    out.tag = None;
    let mut expires = None;
    let end = params::parse_canonical(s, gt + 1, |p| {
        param(&mut out.tag, &mut expires, p, want_expires)
    })?;
    Some((end, expires))
}

/// Takes in one parameter of a value: the first `tag` (a token) and, if
/// `want_expires`, the first `expires`; `None` if the parameter is malformed. Every
/// `expires` must be valid.
#[inline(always)]
fn param<'a>(
    tag: &mut Option<&'a [u8]>,
    expires: &mut Option<u32>,
    p: Param<'a>,
    want_expires: bool,
) -> Option<()> {
    const TAG: Name = Name::new(b"tag");
    const EXPIRES: Name = Name::new(b"expires");
    if p.is(&TAG) {
        if !p.token {
            return None;
        }
        tag.get_or_insert(p.value?);
    } else if want_expires && p.is(&EXPIRES) {
        let v = abnf::delta_seconds(p.value?)?;
        expires.get_or_insert(v);
    }
    Some(())
}

/// Given `s[lt] == '<'`, the URI up to `>` (no white space inside, RFC 4475
/// `badaspec`) and the index after `>`.
#[inline]
fn bracketed(s: &[u8], lt: usize) -> Option<(SipUri<'_>, usize)> {
    let gt = caseless::find(s, lt + 1, b'>')?;
    Some((SipUri::parse(s.get(lt + 1..gt)?)?, gt + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Option<NameAddr<'_>> {
        let p = parse(s.as_bytes(), false)?;
        (p.end == s.len()).then_some(p.addr)
    }

    #[test]
    fn forms() {
        let a = one("\"Alice \\\"A\\\"\" <sip:alice@atlanta.example.com>;tag=1928301774").unwrap();
        assert_eq!(a.display, Some(&b"\"Alice \\\"A\\\"\""[..]));
        assert_eq!(a.uri.user, Some(&b"alice"[..]));
        assert_eq!(a.tag, Some(&b"1928301774"[..]));

        let a = one("Bob  Smith <sips:bob@biloxi.example.com:5061;transport=tls>").unwrap();
        assert_eq!(a.display, Some(&b"Bob  Smith"[..]));
        assert_eq!(a.uri.port, Some(5061));
        assert_eq!(a.uri.params, b";transport=tls");
        assert_eq!(a.tag, None);

        // RFC 4475 `lwsdisp`: no LWS between display name and "<".
        let a = one("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display, Some(&b"caller"[..]));

        // addr-spec: parameters belong to the header, not the URI.
        let a = one("sip:carol@chicago.example.com;tag=887s").unwrap();
        assert_eq!(a.display, None);
        assert_eq!(a.uri.params, b"");
        assert_eq!(a.tag, Some(&b"887s"[..]));

        // RFC 4475 `wsinv`: folded parameters.
        let a = one(
            " \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(a.tag, Some(&b"98asjd8"[..]));
    }

    #[test]
    fn contact_expires_and_lists() {
        let p = parse(
            b"<sip:a@198.18.0.7:5060>;expires=3600;q=0.7, <sip:b@x>",
            true,
        )
        .unwrap();
        assert_eq!(p.expires, Some(3600));
        assert_eq!(p.end, 42);
        assert!(parse(b"<sip:a@x>;expires=280297596632815", true).is_none());
        assert!(parse(b"<sip:a@x>;expires=280297596632815", false).is_some());
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "\"Mr. J. User <sip:j.user@example.com>",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "<sip:user@example.com",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@x>;tag",
            "<sip:a@x>;tag=\"q\"",
            "<sip:a@x> junk",
            "<sip:a@x>;;",
        ] {
            assert!(one(bad).is_none(), "{bad:?}");
        }
    }
}
