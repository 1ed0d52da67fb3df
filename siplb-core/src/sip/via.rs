//! The top Via value: `sent-protocol LWS sent-by *( SEMI via-params )` (RFC 3261
//! §20.42, grammar §25.1), with `received` and `rport` (RFC 3581).

use super::abnf::{self, at, HOSTNAME, TOKEN};
use super::caseless::Name;
use super::params::{self, Param};

/// The top Via: where responses go (RFC 3261 §18.2.2) and the transaction's branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// The transport token as written (`UDP`, `tcp`, `TLS`, `SCTP`, `WS`, ...).
    pub transport: &'a [u8],
    /// The sent-by host as written; an IPv6 reference keeps its brackets
    /// (`[2001:db8::1]`), as in [`SipUri::host`](super::SipUri::host).
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub branch: Option<&'a [u8]>,
    /// RFC 3581: `None` if absent, `Some(None)` for a bare `;rport` (a request asking
    /// for it), `Some(Some(port))` once filled in.
    pub rport: Option<Option<u16>>,
    /// The `received` address as written (RFC 3261 §18.2.1; IPv6 without brackets).
    pub received: Option<&'a [u8]>,
}

/// Parses the first value of a Via header field; a `,` may follow it (several values on
/// one line, §7.3.1). `None` if that first value is malformed.
#[inline]
pub(crate) fn parse_top(s: &[u8]) -> Option<Via<'_>> {
    // sent-protocol = protocol-name SLASH protocol-version SLASH transport, with LWS
    // around the slashes (RFC 4475 `wsinv`).
    let (name, i) = token(s, 0)?;
    let i = slash(s, i)?;
    let (version, i) = token(s, i)?;
    let i = slash(s, i)?;
    let (transport, i) = token(s, i)?;
    if !name.eq_ignore_ascii_case(b"SIP") || version != b"2.0" {
        return None;
    }
    let h = abnf::skip_ws(s, i);
    if h == i {
        return None;
    }
    // sent-by = host [ COLON port ]
    let (host, mut i) = abnf::host(s, h)?;
    let mut port = None;
    let c = abnf::skip_ws(s, i);
    if at(s, c) == Some(b':') {
        let p = abnf::skip_ws(s, c + 1);
        let end = abnf::skip_digits(s, p);
        port = Some(abnf::port(s.get(p..end)?)?);
        i = end;
    }
    let mut via = Via {
        transport,
        host,
        port,
        branch: None,
        rport: None,
        received: None,
    };
    let end = params::parse(s, i, |p| via.param(p))?;
    matches!(at(s, end), None | Some(b',')).then_some(via)
}

/// The canonical spelling of a top Via in `s` from `i`: spaces, `SIP/2.0/` and a
/// transport, one space, a host name or IPv4 address, an optional `:port`, then
/// parameters without white space or quotes. Writes the Via into `out` (see
/// [`SipUri::parse_canonical`](super::SipUri::parse_canonical) for why) and returns
/// the index of the first byte after it (the caller checks it ends the value); `None`
/// for anything else (IPv6, white space around `/` or `;`, several values, ...), which
/// [`parse_top`] then reads. Where it returns `Some`, `parse_top` of `s[i..end]`
/// returns the same Via.
#[inline]
pub(crate) fn parse_top_canonical<'a>(s: &'a [u8], i: usize, out: &mut Via<'a>) -> Option<usize> {
    let i = abnf::skip_sp(s, i);
    if !abnf::lit_at(s, i, b"SIP/2.0/") {
        return None;
    }
    let t = i + 8;
    let t_end = abnf::skip(s, t, TOKEN);
    if t_end == t || at(s, t_end) != Some(b' ') {
        return None;
    }
    let h = t_end + 1;
    let h_end = abnf::skip_run(s, h, HOSTNAME);
    if h_end == h {
        return None;
    }
    out.transport = s.get(t..t_end)?;
    out.host = s.get(h..h_end)?;
    let mut j = h_end;
    out.port = None;
    if at(s, j) == Some(b':') {
        let (p, end) = abnf::number(s, j + 1, u64::from(u16::MAX))?;
        out.port = Some(u16::try_from(p).ok()?);
        j = end;
    }
    out.branch = None;
    out.rport = None;
    out.received = None;
    params::parse_canonical(s, j, |p| out.param(p))
}

impl<'a> Via<'a> {
    /// A Via of nothing, for a view under construction.
    pub(crate) const EMPTY: Via<'static> = Via {
        transport: b"",
        host: b"",
        port: None,
        branch: None,
        rport: None,
        received: None,
    };

    /// Takes in one Via parameter; `None` if it is malformed.
    #[inline(always)]
    fn param(&mut self, p: Param<'a>) -> Option<()> {
        const BRANCH: Name = Name::new(b"branch");
        const RPORT: Name = Name::new(b"rport");
        const RECEIVED: Name = Name::new(b"received");
        if p.is(&BRANCH) {
            if !p.token {
                return None;
            }
            self.branch.get_or_insert(p.value?);
        } else if p.is(&RPORT) {
            let port = match p.value {
                Some(v) => Some(abnf::port(v)?),
                None => None,
            };
            self.rport.get_or_insert(port);
        } else if p.is(&RECEIVED) {
            self.received.get_or_insert(p.value?);
        }
        Some(())
    }
}

/// A token after optional LWS, and the index after it.
fn token(s: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let start = abnf::skip_ws(s, i);
    let end = abnf::skip(s, start, TOKEN);
    if end == start {
        return None;
    }
    Some((s.get(start..end)?, end))
}

/// `SLASH = SWS "/" SWS`: the index after the slash.
fn slash(s: &[u8], i: usize) -> Option<usize> {
    let j = abnf::skip_ws(s, i);
    (at(s, j)? == b'/').then_some(j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_params() {
        let v = parse_top(b"SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport;received=198.18.0.9").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"pc33.atlanta.example.com");
        assert_eq!(v.port, Some(5066));
        assert_eq!(v.branch, Some(&b"z9hG4bK776asdhds"[..]));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.received, Some(&b"198.18.0.9"[..]));

        let v = parse_top(b"SIP/2.0/TCP [2001:db8::9]:5070;rport=61000;branch=z9hG4bKx, SIP/2.0/UDP b.example.com").unwrap();
        assert_eq!(v.host, b"[2001:db8::9]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport, Some(Some(61000)));
        assert_eq!(v.received, None);
    }

    #[test]
    fn torture_white_space() {
        // RFC 4475 `wsinv`.
        let v = parse_top(b"SIP  /   2.0\r\n /UDP\r\n    198.18.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.transport, v.host, v.port),
            (&b"UDP"[..], &b"198.18.2.2"[..], None)
        );
        assert_eq!(v.branch, Some(&b"390skdjuw"[..]));
        let v = parse_top(b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  198.18.255.111   ; branch=\r\n z9hG4bK30239").unwrap();
        assert_eq!(
            (v.transport, v.host),
            (&b"TCP"[..], &b"spindle.example.com"[..])
        );
        assert_eq!(v.branch, Some(&b"z9hG4bK9ikj8"[..]));
        let v = parse_top(b"SIP/2.0/UDP host.example.com : 5062 ;branch=z9hG4bKa").unwrap();
        assert_eq!(v.port, Some(5062));
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"SIP/2.0/UDP",
            b"SIP/2.0/UDP ",
            b"SIP/2.0 UDP host",
            b"SIP/3.0/UDP host",
            b"HTTP/2.0/UDP host",
            b"SIP/2.0/UDPhost",
            b"SIP/2.0/UDP 198.18.2.15;;,;,,",
            b"SIP/2.0/UDP host:99999",
            b"SIP/2.0/UDP host:",
            b"SIP/2.0/UDP host;rport=x",
            b"SIP/2.0/UDP host;branch",
            b"SIP/2.0/UDP host junk",
            b"SIP/2.0/UDP [2001:db8::1;branch=z",
            b", SIP/2.0/UDP host",
        ] {
            assert!(
                parse_top(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
