//! SIP and SIPS URIs (RFC 3261 §19.1, grammar §25.1), borrowed from the message.

use super::abnf::{self, at, HOSTNAME, URIC, URI_PARAM};
use super::caseless::{self, Name};

/// A URI as the balancer needs it. For `sip:`/`sips:` the parts follow RFC 3261 §19.1;
/// any other scheme (`tel:`, `urn:`, an unknown one, RFC 4475 `unkscm`) is opaque: `user`
/// and `port` are `None` and `host` holds what follows the colon up to the first `;`
/// or `?`. Escaped characters stay escaped (RFC 4475 `esc01`): compare bytes, not
/// meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// As written (`sip`, `SIP`, `sips`, `tel`, ...).
    pub scheme: &'a [u8],
    /// The `user` (or telephone-subscriber) of `userinfo`, without the password.
    pub user: Option<&'a [u8]>,
    /// The `host` production as written: an IPv6 reference keeps its brackets
    /// (`[2001:db8::1]`), so it can be told from a name without looking again.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// `uri-parameters` with their leading `;` (`;transport=tcp;lr`), up to `?` or the
    /// end; empty if none.
    pub params: &'a [u8],
    /// `headers` with their leading `?`; empty if none.
    pub headers: &'a [u8],
}

impl<'a> SipUri<'a> {
    /// Parses `s`, which must be exactly one URI (no surrounding white space or
    /// brackets). `None` if it is malformed.
    pub fn parse(s: &'a [u8]) -> Option<Self> {
        const SIP: Name = Name::new(b"sip:");
        const SIPS: Name = Name::new(b"sips:");
        let (colon, sip) = if SIP.is_prefix_of(s) {
            (3, true)
        } else if SIPS.is_prefix_of(s) {
            (4, true)
        } else {
            // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
            if !at(s, 0)?.is_ascii_alphabetic() {
                return None;
            }
            let c = s
                .iter()
                .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))?;
            ((at(s, c)? == b':').then_some(c)?, false)
        };
        let scheme = s.get(..colon)?;
        let rest = s.get(colon + 1..)?;
        if !sip {
            // Opaque: checked as URI characters, split at the first ";" or "?".
            if !abnf::all(rest, URIC) {
                return None;
            }
            let end = rest
                .iter()
                .position(|&c| c == b';' || c == b'?')
                .unwrap_or(rest.len());
            let host = rest.get(..end)?;
            if host.is_empty() {
                return None;
            }
            let (params, headers) = split_params(rest.get(end..)?);
            return Some(Self {
                scheme,
                user: None,
                host,
                port: None,
                params,
                headers,
            });
        }

        // `[ userinfo ] hostport uri-parameters [ headers ]`. `user` may hold ";", "?"
        // and "/" (RFC 4475 `semiuri`) but never "@", which appears nowhere after
        // userinfo either: the first "@" ends userinfo. Each part is looked at once.
        let (user, host_start) = match caseless::find(rest, 0, b'@') {
            Some(a) => {
                let userinfo = rest.get(..a)?;
                if !abnf::all(userinfo, URIC) {
                    return None;
                }
                let end = userinfo.iter().position(|&c| c == b':').unwrap_or(a);
                let user = userinfo.get(..end)?;
                if user.is_empty() {
                    return None;
                }
                (Some(user), a + 1)
            }
            None => (None, 0),
        };
        let (host, mut i) = abnf::host(rest, host_start)?;
        let mut port = None;
        if at(rest, i) == Some(b':') {
            let end = abnf::skip_digits(rest, i + 1);
            port = Some(abnf::port(rest.get(i + 1..end)?)?);
            i = end;
        }
        let tail = rest.get(i..)?;
        if !matches!(tail.first(), None | Some(b';' | b'?'))
            || !tail.iter().all(|&c| abnf::is(c, URIC))
        {
            return None;
        }
        let (params, headers) = split_params(tail);
        Some(Self {
            scheme,
            user,
            host,
            port,
            params,
            headers,
        })
    }

    /// A URI of nothing, for a view under construction.
    pub(crate) const EMPTY: SipUri<'static> = SipUri {
        scheme: b"",
        user: None,
        host: b"",
        port: None,
        params: b"",
        headers: b"",
    };

    /// The canonical spelling of a SIP URI in `s` from `i`: `sip:` or `sips:`, an
    /// optional user of host-name characters and `@`, a host name or IPv4 address, an
    /// optional port and parameters; no password, IPv6 reference or headers. Writes
    /// the URI into `out` and returns the index of the first byte after it (the caller
    /// checks that byte: SP after a Request-URI, `>` in brackets); `None` for anything
    /// else, which [`parse`](Self::parse) then reads, and `out` is then meaningless.
    /// Where it returns `Some`, `parse` of `s[i..end]` returns the same URI: the user
    /// holds no "@" or ":", and nothing after the host holds an "@" that would make the
    /// part before it userinfo.
    ///
    /// It writes into the view being built rather than returning a URI: a copy of a
    /// value just stored field by field reads it back in wider loads than it was
    /// written with, which waits for the stores to reach the cache.
    #[inline]
    pub(crate) fn parse_canonical(s: &'a [u8], i: usize, out: &mut Self) -> Option<usize> {
        const SIP: Name = Name::new(b"sip:");
        const SIPS: Name = Name::new(b"sips:");
        let colon = if SIP.eq_at(s, i, 4) {
            i + 3
        } else if SIPS.eq_at(s, i, 5) {
            i + 4
        } else {
            return None;
        };
        out.scheme = s.get(i..colon)?;
        let first = colon + 1;
        let first_end = abnf::skip_run(s, first, HOSTNAME);
        let (host_start, host_end) = if at(s, first_end) == Some(b'@') {
            let host_start = first_end + 1;
            out.user = Some(s.get(first..first_end).filter(|u| !u.is_empty())?);
            (host_start, abnf::skip_run(s, host_start, HOSTNAME))
        } else {
            out.user = None;
            (first, first_end)
        };
        if host_end == host_start {
            return None;
        }
        out.host = s.get(host_start..host_end)?;
        let mut j = host_end;
        out.port = None;
        if at(s, j) == Some(b':') {
            let (p, end) = abnf::number(s, j + 1, u64::from(u16::MAX))?;
            out.port = Some(u16::try_from(p).ok()?);
            j = end;
        }
        let params_start = j;
        if at(s, j) == Some(b';') {
            j = abnf::skip_run(s, j, URI_PARAM);
        }
        out.params = s.get(params_start..j)?;
        out.headers = s.get(j..j)?;
        Some(j)
    }

    /// Whether the scheme is `sip` or `sips` (any case).
    pub fn is_sip(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"sip") || self.scheme.eq_ignore_ascii_case(b"sips")
    }
}

/// Splits `;params?headers` at the first `?`.
fn split_params(tail: &[u8]) -> (&[u8], &[u8]) {
    let q = tail.iter().position(|&c| c == b'?').unwrap_or(tail.len());
    tail.split_at(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<SipUri<'_>> {
        SipUri::parse(s.as_bytes())
    }

    #[test]
    fn sip_uri_parts() {
        let u = p("sip:alice:secret@atlanta.example.com:5070;transport=tcp;lr?Subject=x").unwrap();
        assert_eq!(u.scheme, b"sip");
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.host, b"atlanta.example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params, b";transport=tcp;lr");
        assert_eq!(u.headers, b"?Subject=x");
        assert!(u.is_sip());

        let u = p("SIPS:[2001:db8::10]:5061").unwrap();
        assert_eq!(
            (u.user, u.host, u.port),
            (None, &b"[2001:db8::10]"[..], Some(5061))
        );
    }

    #[test]
    fn user_with_reserved_characters() {
        // RFC 4475 `semiuri` and `intmeth`.
        let u = p("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
        let u = p("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com").unwrap();
        assert_eq!(
            u.user,
            Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
        );
        assert_eq!(u.host, b"example.com");
        assert_eq!(u.params, b"");
    }

    #[test]
    fn opaque_schemes() {
        let u = p("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(
            (u.user, u.host, u.port),
            (None, &b"+1-201-555-0123"[..], None)
        );
        assert_eq!(u.params, b";phone-context=example.com");
        assert!(!u.is_sip());
        assert_eq!(
            p("nobodyKnowsThisScheme:totallyopaquecontent")
                .unwrap()
                .host,
            b"totallyopaquecontent"
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "sip:",
            "sip:@example.com",
            "<sip:a@example.com>",
            "sip:a@example.com:",
            "sip:a@example.com:65536",
            "sip:a@exa mple.com",
            "sip:a@example.com:50x",
            "1sip:a@b",
            "sip:[2001:db8::1",
            "sip:a@/x",
            "mailto:",
            "sip:a@b\"c",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }
}
