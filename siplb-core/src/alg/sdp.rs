//! A zero-copy view over an SDP body (RFC 8866, offer/answer RFC 3264) holding what a
//! media relay reads and rewrites: the `o=` address, the session- and media-level
//! `c=` lines, each `m=` line (port, port count, transport, formats), `a=rtcp`
//! (RFC 3605), `a=rtcp-mux` (RFC 5761) and the direction attributes.
//!
//! [`Sdp::parse`] reads the body once, in order, and records where each rewritable
//! value lies ([`Span`], offsets into the body) so an edit can replace exactly those
//! bytes. It never allocates or panics: media sections live in a fixed array of
//! [`MAX_MEDIA`], and every malformed line the relay depends on is an [`SdpError`].
//!
//! Decisions where real traffic bends the grammar:
//! - Lines end in CRLF or LF alone; empty lines are skipped (many stacks end the body
//!   with an extra CRLF). The first line must be `v=`.
//! - Lines the relay does not read (`s=`, `t=`, `b=`, other attributes) are only
//!   checked to be `<letter>=`; `o=` is read from its end (`IN IP4|IP6 address`
//!   after at least one other field), so a user name with spaces does not shift it.
//! - A `c=` address that is not IPv4 text under `IP4` is a host name
//!   ([`Address::Name`], RFC 8866 §5.7 allows one); under `IP6` it must be IPv6.
//! - Hold is either form: a direction attribute (`sendonly`, `inactive`, RFC 3264
//!   §8.4) or the older `c=IN IP4 0.0.0.0` (RFC 2543); port 0 rejects a stream
//!   (RFC 3264 §6). A stream that is not rejected needs a `c=` at its level or the
//!   session's.

use super::lex::{self, at};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// Media sections per body. Calls carry one to three (audio, video, BFCP); eight
/// leaves room and keeps the view small.
pub const MAX_MEDIA: usize = 8;

/// Largest `/count` accepted on an `m=` port or a `c=` address (RFC 8866 §5.14
/// hierarchical encoding). Unicast calls never use one above 2.
pub const MAX_PORT_COUNT: u16 = 16;

/// Why an SDP body was refused. `Copy` and dense, for per-reason counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body longer than 65535 bytes")]
    TooLarge,
    #[error("body is not SDP: the first line is not `v=` (RFC 8866 §5)")]
    NotSdp,
    #[error("SDP line is not `<letter>=<value>` (RFC 8866 §5)")]
    BadLine,
    #[error(
        "malformed `o=`: expected `user sess-id sess-version IN IP4|IP6 address` (RFC 8866 §5.2)"
    )]
    BadOrigin,
    #[error("malformed or repeated `c=`: expected one `IN IP4|IP6 address[/ttl][/count]` per level (RFC 8866 §5.7)")]
    BadConnection,
    #[error("malformed `m=`: expected `media port[/count] proto fmt...` (RFC 8866 §5.14)")]
    BadMedia,
    #[error("`m=` port count of 0 or above 16, or ports past 65535 (RFC 8866 §5.14)")]
    BadCount,
    #[error("malformed `a=rtcp`: expected `port [IN IP4|IP6 address]` (RFC 3605)")]
    BadRtcp,
    #[error("more than 8 `m=` lines")]
    TooManyMedia,
    #[error("a stream that is not rejected has no `c=` at media or session level (RFC 8866 §5.7)")]
    MissingConnection,
}

impl SdpError {
    /// The number of reasons.
    pub const COUNT: usize = 10;
    /// Every reason, in `index` order.
    pub const ALL: [SdpError; Self::COUNT] = [
        Self::TooLarge,
        Self::NotSdp,
        Self::BadLine,
        Self::BadOrigin,
        Self::BadConnection,
        Self::BadMedia,
        Self::BadCount,
        Self::BadRtcp,
        Self::TooManyMedia,
        Self::MissingConnection,
    ];

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A snake_case name, for counter labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooLarge => "sdp_too_large",
            Self::NotSdp => "not_sdp",
            Self::BadLine => "sdp_bad_line",
            Self::BadOrigin => "sdp_bad_origin",
            Self::BadConnection => "sdp_bad_connection",
            Self::BadMedia => "sdp_bad_media",
            Self::BadCount => "sdp_bad_count",
            Self::BadRtcp => "sdp_bad_rtcp",
            Self::TooManyMedia => "sdp_too_many_media",
            Self::MissingConnection => "sdp_missing_connection",
        }
    }
}

/// Where a value lies in the body: `start..end`, byte offsets from the body's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u16,
    pub end: u16,
}

impl Span {
    /// Offsets below 65536: `Sdp::parse` refuses longer bodies first.
    fn new(start: usize, end: usize) -> Self {
        Self {
            start: start as u16,
            end: end as u16,
        }
    }

    pub fn range(self) -> Range<usize> {
        usize::from(self.start)..usize::from(self.end)
    }
}

/// A `c=`, `o=` or `a=rtcp` address. The text is at the holder's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    V4(Ipv4Addr),
    V6,
    /// A host name (or anything else that is not an address) under `IP4`, or a
    /// name under `IP6` in `o=`.
    Name,
}

/// A connection line (`c=`), or the address part of `a=rtcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub addr: Address,
    /// The address text, without the `/ttl` and `/count` suffixes.
    pub span: Span,
    /// Multicast TTL (`IP4 addr/ttl`).
    pub ttl: Option<u8>,
    /// Number of addresses (`/count`), 1 when absent.
    pub count: u16,
}

impl Connection {
    /// `c=IN IP4 0.0.0.0`: the RFC 2543 way to put a stream on hold.
    pub fn is_hold(&self) -> bool {
        self.addr == Address::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// The `o=` line's address: the session's originator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub addr: Address,
    pub span: Span,
}

/// A stream's direction (RFC 3264 §5.1); `sendrecv` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// `a=rtcp:port [IN IP4 address]` (RFC 3605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtcp {
    pub port: u16,
    pub port_span: Span,
    pub connection: Option<Connection>,
}

/// One media section: its `m=` line and the attributes of its section. Texts are
/// spans of the body: read them with [`Sdp::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaStream {
    /// Position among the `m=` lines, from 0: an answer's streams match the offer's
    /// by this index (RFC 3264 §6).
    pub index: u8,
    /// `audio`, `video`, `application`, ...
    pub media: Span,
    /// 0 rejects the stream.
    pub port: u16,
    pub port_span: Span,
    /// `port/count`; 1 when absent.
    pub port_count: u16,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `udp`, ...
    pub proto: Span,
    /// The format list as written (payload types for RTP).
    pub formats: Span,
    /// Media-level `c=`; the session's applies when `None` (see
    /// [`Sdp::connection_of`]).
    pub connection: Option<Connection>,
    pub rtcp: Option<Rtcp>,
    pub rtcp_mux: bool,
    /// Media-level direction; see [`Sdp::direction_of`].
    pub direction: Option<Direction>,
    /// `a=candidate` and `a=remote-candidates` lines (ICE, RFC 8839) in the section.
    pub ice_lines: u16,
    /// The section: from its `m=` line to the next `m=` line or the end of the body.
    pub section: Span,
}

const NO_SPAN: Span = Span { start: 0, end: 0 };

impl MediaStream {
    const EMPTY: MediaStream = MediaStream {
        index: 0,
        media: NO_SPAN,
        port: 0,
        port_span: NO_SPAN,
        port_count: 1,
        proto: NO_SPAN,
        formats: NO_SPAN,
        connection: None,
        rtcp: None,
        rtcp_mux: false,
        direction: None,
        ice_lines: 0,
        section: NO_SPAN,
    };

    /// Port 0: a stream the answerer rejects or the offerer removes (RFC 3264 §6, §8.2).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }
}

/// A parsed SDP body; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdp<'a> {
    body: &'a [u8],
    origin: Option<Origin>,
    connection: Option<Connection>,
    direction: Option<Direction>,
    media_len: u8,
    media: [MediaStream; MAX_MEDIA],
}

impl<'a> Sdp<'a> {
    /// Reads `body` (exactly the SIP message's body).
    pub fn parse(body: &'a [u8]) -> Result<Self, SdpError> {
        if body.len() > usize::from(u16::MAX) {
            return Err(SdpError::TooLarge);
        }
        if !body.starts_with(b"v=") {
            return Err(SdpError::NotSdp);
        }
        let mut sdp = Sdp {
            body,
            origin: None,
            connection: None,
            direction: None,
            media_len: 0,
            media: [MediaStream::EMPTY; MAX_MEDIA],
        };
        // The v= line is the first.
        let mut pos = lex::find_byte(body, 0, b'\n').map_or(body.len(), |nl| nl + 1);
        while pos < body.len() {
            let nl = lex::find_byte(body, pos, b'\n').unwrap_or(body.len());
            let end = if nl > pos && at(body, nl - 1) == Some(b'\r') {
                nl - 1
            } else {
                nl
            };
            let start = pos;
            pos = nl + 1;
            if start == end {
                continue;
            }
            let kind = at(body, start).unwrap_or(0);
            if !kind.is_ascii_alphabetic() || at(body, start + 1) != Some(b'=') {
                return Err(SdpError::BadLine);
            }
            if matches!(kind, b'a' | b'm' | b'c' | b'o') {
                sdp.line(kind, start, start + 2, end)?;
            }
        }
        let n = usize::from(sdp.media_len);
        if let Some(last) = n.checked_sub(1).and_then(|i| sdp.media.get_mut(i)) {
            last.section.end = body.len() as u16;
        }
        let session = sdp.connection.is_some();
        if sdp
            .media()
            .iter()
            .any(|m| !m.is_rejected() && m.connection.is_none() && !session)
        {
            return Err(SdpError::MissingConnection);
        }
        Ok(sdp)
    }

    /// Takes in the line `kind=` whose value is `body[v..end]`.
    #[inline]
    fn line(&mut self, kind: u8, start: usize, v: usize, end: usize) -> Result<(), SdpError> {
        let body = self.body;
        let n = usize::from(self.media_len);
        let current = match n {
            0 => None,
            _ => self.media.get_mut(n - 1),
        };
        match kind {
            b'a' => match (attribute(body, v, end), current) {
                (Attribute::Other, _) => {}
                (Attribute::Direction(d), None) => self.direction = Some(d),
                (Attribute::Direction(d), Some(m)) => m.direction = Some(d),
                (Attribute::Rtcp, Some(m)) => m.rtcp = Some(rtcp(body, v + 5, end)?),
                (Attribute::RtcpMux, Some(m)) => m.rtcp_mux = true,
                (Attribute::Ice, Some(m)) => m.ice_lines = m.ice_lines.saturating_add(1),
                (_, None) => {}
            },
            b'm' => {
                if let Some(m) = current {
                    m.section.end = start as u16;
                }
                let slot = self.media.get_mut(n).ok_or(SdpError::TooManyMedia)?;
                media(body, v, end, slot)?;
                slot.index = n as u8;
                slot.section = Span::new(start, end);
                self.media_len += 1;
            }
            b'c' => {
                let c = connection(body, v, end).ok_or(SdpError::BadConnection)?;
                let slot = match current {
                    Some(m) => &mut m.connection,
                    None => &mut self.connection,
                };
                if slot.replace(c).is_some() {
                    return Err(SdpError::BadConnection);
                }
            }
            _ if current.is_none() => self.origin = Some(origin(body, v, end)?),
            _ => {}
        }
        Ok(())
    }

    /// The body this view reads.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The text at `span`.
    pub fn text(&self, span: Span) -> &'a [u8] {
        self.body.get(span.range()).unwrap_or_default()
    }

    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// The session-level `c=`.
    pub fn connection(&self) -> Option<&Connection> {
        self.connection.as_ref()
    }

    /// The session-level direction attribute.
    pub fn direction(&self) -> Option<Direction> {
        self.direction
    }

    /// The media sections, in order.
    pub fn media(&self) -> &[MediaStream] {
        self.media
            .get(..usize::from(self.media_len))
            .unwrap_or_default()
    }

    /// The `c=` that applies to `m`: its own, else the session's.
    pub fn connection_of(&self, m: &MediaStream) -> Option<Connection> {
        m.connection.or(self.connection)
    }

    /// The direction that applies to `m`: its own, else the session's, else sendrecv.
    pub fn direction_of(&self, m: &MediaStream) -> Direction {
        m.direction.or(self.direction).unwrap_or_default()
    }

    /// Whether `m` is on hold in either form: `sendonly`/`inactive`, or `c=` 0.0.0.0.
    pub fn on_hold(&self, m: &MediaStream) -> bool {
        matches!(
            self.direction_of(m),
            Direction::SendOnly | Direction::Inactive
        ) || self.connection_of(m).is_some_and(|c| c.is_hold())
    }
}

/// The attributes the view reads (RFC 3264 §5.1, RFC 3605, RFC 5761, RFC 8839).
enum Attribute {
    Direction(Direction),
    /// `rtcp:` (its value starts after those five bytes).
    Rtcp,
    RtcpMux,
    /// `candidate:` or `remote-candidates:`.
    Ice,
    Other,
}

/// Classifies the attribute `body[v..end]` by its first bytes: most lines are
/// `rtpmap`/`fmtp`, told apart by the second byte.
#[inline]
fn attribute(body: &[u8], v: usize, end: usize) -> Attribute {
    let value = body.get(v..end).unwrap_or_default();
    match value {
        [b'r', b't', b'c', b'p', b':', ..] => Attribute::Rtcp,
        [b'r', b't', b'c', b'p', b'-', ..] if value == b"rtcp-mux" => Attribute::RtcpMux,
        [b'r', b'e', ..] => match value {
            b"recvonly" => Attribute::Direction(Direction::RecvOnly),
            _ if value.starts_with(b"remote-candidates:") => Attribute::Ice,
            _ => Attribute::Other,
        },
        [b's', b'e', ..] => match value {
            b"sendrecv" => Attribute::Direction(Direction::SendRecv),
            b"sendonly" => Attribute::Direction(Direction::SendOnly),
            _ => Attribute::Other,
        },
        b"inactive" => Attribute::Direction(Direction::Inactive),
        [b'c', b'a', ..] if value.starts_with(b"candidate:") => Attribute::Ice,
        _ => Attribute::Other,
    }
}

/// `IN IP4 ` or `IN IP6 ` at `i`: 4 or 6.
fn addrtype(s: &[u8], i: usize) -> Option<u8> {
    match s.get(i..i + 7)? {
        b"IN IP4 " => Some(4),
        b"IN IP6 " => Some(6),
        _ => None,
    }
}

fn ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `o=<username> <sess-id> <sess-version> IN IP4|IP6 <unicast-address>`. Read from the
/// right, so a user name with spaces (seen in the wild) does not shift the address.
fn origin(body: &[u8], v: usize, end: usize) -> Result<Origin, SdpError> {
    let bad = SdpError::BadOrigin;
    let sp = body
        .get(v..end)
        .and_then(|value| value.iter().rposition(|&c| c == b' '))
        .map(|p| v + p)
        .ok_or(bad)?;
    // `IN IP4 ` ends at the last space, after the other fields and a space.
    let t = sp.checked_sub(6).filter(|&t| t > v + 1).ok_or(bad)?;
    let kind = addrtype(body, t).filter(|_| at(body, t - 1) == Some(b' '));
    let text = body.get(sp + 1..end).unwrap_or_default();
    let addr = match kind {
        _ if text.is_empty() => return Err(bad),
        Some(4) => lex::parse_ipv4(text).map_or(Address::Name, Address::V4),
        Some(_) => ipv6(text).map_or(Address::Name, |_| Address::V6),
        None => return Err(bad),
    };
    Ok(Origin {
        addr,
        span: Span::new(sp + 1, end),
    })
}

/// `IN IP4 <address>[/ttl[/count]]` or `IN IP6 <address>[/count]` in `body[v..end]`.
fn connection(body: &[u8], v: usize, end: usize) -> Option<Connection> {
    let kind = addrtype(body, v)?;
    let a = v + 7;
    let ends = |e: usize| e == end || (e < end && at(body, e) == Some(b'/'));
    let (addr, slash) = match lex::ipv4_at(body, a).filter(|&(_, e)| ends(e)) {
        Some((ip, e)) if kind == 4 => (Address::V4(ip), e),
        _ if kind == 4 => {
            let e = lex::skip_to(body, a, end, lex::HOST);
            if e == a || !ends(e) {
                return None;
            }
            (Address::Name, e)
        }
        _ => {
            let e = lex::find_byte(body.get(..end)?, a, b'/').unwrap_or(end);
            ipv6(body.get(a..e)?)?;
            (Address::V6, e)
        }
    };
    // Suffixes: IP4 `/ttl[/count]`, IP6 `/count`.
    let number = |from: usize| {
        let e = lex::skip_to(body, from, end, lex::DIGIT);
        Some((lex::parse_u16(body.get(from..e)?)?, e))
    };
    let (mut ttl, mut count, mut i) = (None, 1, slash);
    if i < end && kind == 4 {
        let (t, e) = number(i + 1)?;
        ttl = Some(u8::try_from(t).ok()?);
        i = e;
    }
    if i < end {
        if at(body, i) != Some(b'/') {
            return None;
        }
        let (c, e) = number(i + 1)?;
        count = c;
        i = e;
    }
    if i != end || !(1..=MAX_PORT_COUNT).contains(&count) {
        return None;
    }
    Some(Connection {
        addr,
        span: Span::new(a, slash),
        ttl,
        count,
    })
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...` in `body[v..end]`, into `m`.
fn media(body: &[u8], v: usize, end: usize, m: &mut MediaStream) -> Result<(), SdpError> {
    let bad = SdpError::BadMedia;
    let line = body.get(..end).ok_or(bad)?;
    let sp = lex::find_byte(line, v, b' ').ok_or(bad)?;
    let p = sp + 1;
    let (port, pe) = lex::u16_at(body, p, end).ok_or(bad)?;
    let mut i = pe;
    let mut port_count = 1;
    if at(body, i) == Some(b'/') && i < end {
        let (n, ce) = lex::u16_at(body, i + 1, end)
            .filter(|&(n, _)| (1..=MAX_PORT_COUNT).contains(&n))
            .ok_or(SdpError::BadCount)?;
        port_count = n;
        i = ce;
    }
    if at(body, i) != Some(b' ') || i >= end || sp == v {
        return Err(bad);
    }
    let t = i + 1;
    let te = lex::find_byte(line, t, b' ').unwrap_or(end);
    if te == t {
        return Err(bad);
    }
    // RTP takes `count` even ports from `port`, RTCP the odd one above each.
    if port != 0 && u32::from(port) + 2 * u32::from(port_count) - 1 > u32::from(u16::MAX) {
        return Err(SdpError::BadCount);
    }
    m.media = Span::new(v, sp);
    m.port = port;
    m.port_span = Span::new(p, pe);
    m.port_count = port_count;
    m.proto = Span::new(t, te);
    m.formats = Span::new((te + 1).min(end), end);
    Ok(())
}

/// `a=rtcp:` value in `body[v..end]`: `<port> [<nettype> <addrtype> <address>]`.
fn rtcp(body: &[u8], v: usize, end: usize) -> Result<Rtcp, SdpError> {
    let (port, stop) = lex::u16_at(body, v, end).ok_or(SdpError::BadRtcp)?;
    let connection = match at(body, stop) {
        _ if stop == end => None,
        Some(b' ') => Some(connection(body, stop + 1, end).ok_or(SdpError::BadRtcp)?),
        _ => return Err(SdpError::BadRtcp),
    };
    Ok(Rtcp {
        port,
        port_span: Span::new(v, stop),
        connection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer as a softphone sends it (LF-only lines are accepted too).
    const OFFER: &[u8] = b"v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 198.18.0.10\r\n\
s=-\r\n\
c=IN IP4 198.18.0.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n\
m=video 51372 RTP/AVP 99\r\n\
c=IN IP4 198.18.0.11\r\n\
a=rtcp:53020 IN IP4 198.18.0.12\r\n\
a=rtpmap:99 h263-1998/90000\r\n";

    fn text(body: &[u8], s: Span) -> &[u8] {
        &body[s.range()]
    }

    #[test]
    fn offer_with_two_streams() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let o = sdp.origin().unwrap();
        assert_eq!(o.addr, Address::V4(Ipv4Addr::new(198, 18, 0, 10)));
        assert_eq!(text(OFFER, o.span), b"198.18.0.10");
        let c = sdp.connection().unwrap();
        assert_eq!(text(OFFER, c.span), b"198.18.0.10");
        assert_eq!((c.ttl, c.count), (None, 1));
        let [audio, video] = sdp.media() else {
            panic!("two streams")
        };
        assert_eq!(
            (audio.index, sdp.text(audio.media), audio.port),
            (0, &b"audio"[..], 49170)
        );
        assert_eq!(text(OFFER, audio.port_span), b"49170");
        assert_eq!(
            (sdp.text(audio.proto), sdp.text(audio.formats)),
            (&b"RTP/AVP"[..], &b"0 8 101"[..])
        );
        assert_eq!(sdp.connection_of(audio).as_ref(), sdp.connection());
        assert_eq!(audio.direction, Some(Direction::SendRecv));
        assert!(text(OFFER, audio.section).starts_with(b"m=audio"));
        assert!(text(OFFER, audio.section).ends_with(b"a=sendrecv\r\n"));
        assert_eq!(video.index, 1);
        let vc = sdp.connection_of(video).unwrap();
        assert_eq!(text(OFFER, vc.span), b"198.18.0.11");
        let r = video.rtcp.unwrap();
        assert_eq!((r.port, text(OFFER, r.port_span)), (53020, &b"53020"[..]));
        assert_eq!(text(OFFER, r.connection.unwrap().span), b"198.18.0.12");
        assert_eq!(sdp.direction_of(video), Direction::SendRecv);
        assert_eq!(video.section.end as usize, OFFER.len());
        assert!(!sdp.on_hold(audio));
    }

    #[test]
    fn lf_only_lines_and_trailing_empty_line() {
        let lf: Vec<u8> = OFFER
            .iter()
            .copied()
            .filter(|&c| c != b'\r')
            .chain(*b"\n")
            .collect();
        let sdp = Sdp::parse(&lf).unwrap();
        assert_eq!(sdp.media().len(), 2);
        assert_eq!(text(&lf, sdp.media()[1].port_span), b"51372");
        assert_eq!(text(&lf, sdp.origin().unwrap().span), b"198.18.0.10");
    }

    #[test]
    fn hold_forms_and_rejected_streams() {
        let old = b"v=0\r\no=- 1 2 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n";
        let sdp = Sdp::parse(old).unwrap();
        assert!(sdp.connection().unwrap().is_hold());
        assert!(sdp.on_hold(&sdp.media()[0]));

        let new = b"v=0\r\no=- 1 2 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\na=sendonly\r\nm=audio 49170 RTP/AVP 0\r\nm=video 0 RTP/AVP 99\r\na=inactive\r\n";
        let sdp = Sdp::parse(new).unwrap();
        let [audio, video] = sdp.media() else {
            panic!()
        };
        assert_eq!(sdp.direction(), Some(Direction::SendOnly));
        assert_eq!(sdp.direction_of(audio), Direction::SendOnly);
        assert!(sdp.on_hold(audio));
        assert!(video.is_rejected());
        assert_eq!(sdp.direction_of(video), Direction::Inactive);

        // A rejected stream needs no c= anywhere.
        let rejected =
            b"v=0\r\no=- 1 2 IN IP4 198.18.0.10\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
        assert!(Sdp::parse(rejected).unwrap().media()[0].is_rejected());
    }

    #[test]
    fn counts_ttl_ipv6_names_and_mux() {
        let body = b"v=0\r\no=- 1 2 IN IP6 2001:2::10\r\ns=-\r\nt=0 0\r\n\
m=audio 49170/2 RTP/AVP 0\r\nc=IN IP4 233.252.0.1/127/2\r\na=rtcp-mux\r\n\
m=video 49180 RTP/AVP 31\r\nc=IN IP6 2001:2::10\r\n\
m=text 49190 RTP/AVP 98\r\nc=IN IP4 media.example.com\r\n\
a=candidate:1 1 UDP 2130706431 198.18.0.10 49190 typ host\r\n";
        let sdp = Sdp::parse(body).unwrap();
        assert_eq!(sdp.origin().unwrap().addr, Address::V6);
        assert_eq!(sdp.text(sdp.origin().unwrap().span), b"2001:2::10");
        let [a, v, t] = sdp.media() else { panic!() };
        assert_eq!(a.port_count, 2);
        let c = a.connection.unwrap();
        assert_eq!((c.ttl, c.count), (Some(127), 2));
        assert_eq!(text(body, c.span), b"233.252.0.1");
        assert!(a.rtcp_mux);
        assert_eq!(v.connection.unwrap().addr, Address::V6);
        assert_eq!(t.connection.unwrap().addr, Address::Name);
        assert_eq!(sdp.text(t.connection.unwrap().span), b"media.example.com");
        assert_eq!(t.ice_lines, 1);
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let head = "v=0\r\no=- 1 2 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\n";
        for (tail, want) in [
            ("m=audio 49170/0 RTP/AVP 0\r\n", SdpError::BadCount),
            ("m=audio 49170/17 RTP/AVP 0\r\n", SdpError::BadCount),
            ("m=audio 49170/65535 RTP/AVP 0\r\n", SdpError::BadCount),
            ("m=audio 65534/2 RTP/AVP 0\r\n", SdpError::BadCount),
            ("m=audio 65536 RTP/AVP 0\r\n", SdpError::BadMedia),
            ("m=audio x RTP/AVP 0\r\n", SdpError::BadMedia),
            ("m=audio 49170\r\n", SdpError::BadMedia),
            ("m=audio  49170 RTP/AVP 0\r\n", SdpError::BadMedia),
            (
                "m=audio 49170 RTP/AVP 0\r\nc=IN IP4 198.18.0.1\r\nc=IN IP4 198.18.0.2\r\n",
                SdpError::BadConnection,
            ),
            (
                "m=audio 49170 RTP/AVP 0\r\nc=IN IP4 2001:2::1\r\n",
                SdpError::BadConnection,
            ),
            (
                "m=audio 49170 RTP/AVP 0\r\nc=IN IP6 198.18.0.1.x\r\n",
                SdpError::BadConnection,
            ),
            (
                "m=audio 49170 RTP/AVP 0\r\nc=IN IP4 198.18.0.1/300\r\n",
                SdpError::BadConnection,
            ),
            (
                "m=audio 49170 RTP/AVP 0\r\nc=IN IP4 233.252.0.1/1/99\r\n",
                SdpError::BadConnection,
            ),
            (
                "m=audio 49170 RTP/AVP 0\r\nc=XX IP4 198.18.0.1\r\n",
                SdpError::BadConnection,
            ),
            ("m=audio 49170 RTP/AVP 0\r\na=rtcp:x\r\n", SdpError::BadRtcp),
            (
                "m=audio 49170 RTP/AVP 0\r\na=rtcp:53020 IN IP4\r\n",
                SdpError::BadRtcp,
            ),
            (
                "m=audio 49170 RTP/AVP 0\r\nnot a line\r\n",
                SdpError::BadLine,
            ),
            (&"m=audio 1 RTP/AVP 0\r\n".repeat(9), SdpError::TooManyMedia),
        ] {
            let body = format!("{head}{tail}");
            assert_eq!(Sdp::parse(body.as_bytes()), Err(want), "{tail:?}");
        }
        let no_c =
            b"v=0\r\no=- 1 2 IN IP4 198.18.0.10\r\ns=-\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n";
        assert_eq!(Sdp::parse(no_c), Err(SdpError::MissingConnection));
        for bad_o in [
            "o=IN IP4 198.18.0.1",
            "o=- 1 2 XX IP4 198.18.0.1",
            "o=- 1 2 IN IP4 ",
            "o=- 1 2 IN IPX a",
        ] {
            let body = format!("v=0\r\n{bad_o}\r\n");
            assert_eq!(
                Sdp::parse(body.as_bytes()),
                Err(SdpError::BadOrigin),
                "{bad_o}"
            );
        }
        for not in [
            &b""[..],
            b"\r\n",
            b"s=-\r\nv=0\r\n",
            b"--boundary\r\n",
            b"v",
        ] {
            assert_eq!(Sdp::parse(not), Err(SdpError::NotSdp));
        }
        assert_eq!(Sdp::parse(&vec![b'v'; 70_000]), Err(SdpError::TooLarge));
    }

    #[test]
    fn error_names_are_unique() {
        let all = [
            SdpError::TooLarge,
            SdpError::NotSdp,
            SdpError::BadLine,
            SdpError::BadOrigin,
            SdpError::BadConnection,
            SdpError::BadMedia,
            SdpError::BadCount,
            SdpError::BadRtcp,
            SdpError::TooManyMedia,
            SdpError::MissingConnection,
        ];
        assert_eq!(all.len(), SdpError::COUNT);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        let mut names: Vec<_> = all.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SdpError::COUNT);
    }
}
