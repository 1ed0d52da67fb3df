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
//!   checked to be `<letter>=`.
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

/// A `c=`, `o=` or `a=rtcp` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address<'a> {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// A host name (or anything else that is not an address) under `IP4`, or a
    /// name under `IP6` in `o=`.
    Name(&'a [u8]),
}

/// A connection line (`c=`), or the address part of `a=rtcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    pub addr: Address<'a>,
    /// The address text, without the `/ttl` and `/count` suffixes.
    pub span: Span,
    /// Multicast TTL (`IP4 addr/ttl`).
    pub ttl: Option<u8>,
    /// Number of addresses (`/count`), 1 when absent.
    pub count: u16,
}

impl Connection<'_> {
    /// `c=IN IP4 0.0.0.0`: the RFC 2543 way to put a stream on hold.
    pub fn is_hold(&self) -> bool {
        self.addr == Address::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// The `o=` line's address: the session's originator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub addr: Address<'a>,
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
pub struct Rtcp<'a> {
    pub port: u16,
    pub port_span: Span,
    pub connection: Option<Connection<'a>>,
}

/// One media section: its `m=` line and the attributes of its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaStream<'a> {
    /// Position among the `m=` lines, from 0: an answer's streams match the offer's
    /// by this index (RFC 3264 §6).
    pub index: usize,
    /// `audio`, `video`, `application`, ...
    pub media: &'a [u8],
    /// 0 rejects the stream.
    pub port: u16,
    pub port_span: Span,
    /// `port/count`; 1 when absent.
    pub port_count: u16,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `udp`, ...
    pub proto: &'a [u8],
    /// The format list as written (payload types for RTP).
    pub formats: &'a [u8],
    /// Media-level `c=`; the session's applies when `None` (see
    /// [`Sdp::connection_of`]).
    pub connection: Option<Connection<'a>>,
    pub rtcp: Option<Rtcp<'a>>,
    pub rtcp_mux: bool,
    /// Media-level direction; see [`Sdp::direction_of`].
    pub direction: Option<Direction>,
    /// `a=candidate` and `a=remote-candidates` lines (ICE, RFC 8839) in the section.
    pub ice_lines: u16,
    /// The section: from its `m=` line to the next `m=` line or the end of the body.
    pub section: Span,
}

impl MediaStream<'_> {
    const EMPTY: MediaStream<'static> = MediaStream {
        index: 0,
        media: b"",
        port: 0,
        port_span: Span { start: 0, end: 0 },
        port_count: 1,
        proto: b"",
        formats: b"",
        connection: None,
        rtcp: None,
        rtcp_mux: false,
        direction: None,
        ice_lines: 0,
        section: Span { start: 0, end: 0 },
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
    origin: Option<Origin<'a>>,
    connection: Option<Connection<'a>>,
    direction: Option<Direction>,
    media: [MediaStream<'a>; MAX_MEDIA],
    media_len: usize,
}

impl<'a> Sdp<'a> {
    /// Reads `body` (exactly the SIP message's body).
    pub fn parse(body: &'a [u8]) -> Result<Self, SdpError> {
        if body.len() > usize::from(u16::MAX) {
            return Err(SdpError::TooLarge);
        }
        let mut sdp = Sdp {
            body,
            origin: None,
            connection: None,
            direction: None,
            media: [MediaStream::EMPTY; MAX_MEDIA],
            media_len: 0,
        };
        let mut pos = 0;
        let mut seen_v = false;
        while pos < body.len() {
            let rest = body.get(pos..).unwrap_or_default();
            let nl = memchr::memchr(b'\n', rest).map_or(body.len(), |i| pos + i);
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
                return Err(if seen_v {
                    SdpError::BadLine
                } else {
                    SdpError::NotSdp
                });
            }
            if !seen_v {
                if kind != b'v' {
                    return Err(SdpError::NotSdp);
                }
                seen_v = true;
                continue;
            }
            sdp.line(kind, start, start + 2, end)?;
        }
        if !seen_v {
            return Err(SdpError::NotSdp);
        }
        if let Some(last) = sdp
            .media_len
            .checked_sub(1)
            .and_then(|i| sdp.media.get_mut(i))
        {
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
    fn line(&mut self, kind: u8, start: usize, v: usize, end: usize) -> Result<(), SdpError> {
        let body = self.body;
        let current = self
            .media_len
            .checked_sub(1)
            .and_then(|i| self.media.get_mut(i));
        match kind {
            b'o' if current.is_none() => self.origin = Some(origin(body, v, end)?),
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
            b'm' => {
                if let Some(m) = current {
                    m.section.end = start as u16;
                }
                let index = self.media_len;
                let slot = self.media.get_mut(index).ok_or(SdpError::TooManyMedia)?;
                *slot = media(body, v, end, index)?;
                slot.section = Span::new(start, end);
                self.media_len += 1;
            }
            b'a' => {
                let value = body.get(v..end).unwrap_or_default();
                let direction = match value {
                    b"sendrecv" => Some(Direction::SendRecv),
                    b"sendonly" => Some(Direction::SendOnly),
                    b"recvonly" => Some(Direction::RecvOnly),
                    b"inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match current {
                    None => {
                        if direction.is_some() {
                            self.direction = direction;
                        }
                    }
                    Some(m) => {
                        if direction.is_some() {
                            m.direction = direction;
                        } else if let Some(r) = value.strip_prefix(b"rtcp:") {
                            m.rtcp = Some(rtcp(body, end - r.len(), end)?);
                        } else if value == b"rtcp-mux" {
                            m.rtcp_mux = true;
                        } else if value.starts_with(b"candidate:")
                            || value.starts_with(b"remote-candidates:")
                        {
                            m.ice_lines = m.ice_lines.saturating_add(1);
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The body this view reads.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    pub fn origin(&self) -> Option<&Origin<'a>> {
        self.origin.as_ref()
    }

    /// The session-level `c=`.
    pub fn connection(&self) -> Option<&Connection<'a>> {
        self.connection.as_ref()
    }

    /// The session-level direction attribute.
    pub fn direction(&self) -> Option<Direction> {
        self.direction
    }

    /// The media sections, in order.
    pub fn media(&self) -> &[MediaStream<'a>] {
        self.media.get(..self.media_len).unwrap_or_default()
    }

    /// The `c=` that applies to `m`: its own, else the session's.
    pub fn connection_of(&self, m: &MediaStream<'a>) -> Option<Connection<'a>> {
        m.connection.or(self.connection)
    }

    /// The direction that applies to `m`: its own, else the session's, else sendrecv.
    pub fn direction_of(&self, m: &MediaStream<'a>) -> Direction {
        m.direction.or(self.direction).unwrap_or_default()
    }

    /// Whether `m` is on hold in either form: `sendonly`/`inactive`, or `c=` 0.0.0.0.
    pub fn on_hold(&self, m: &MediaStream<'a>) -> bool {
        matches!(
            self.direction_of(m),
            Direction::SendOnly | Direction::Inactive
        ) || self.connection_of(m).is_some_and(|c| c.is_hold())
    }
}

/// The index of the last `c` in `s[..before]`.
fn rfind(s: &[u8], c: u8, before: usize) -> Option<usize> {
    s.get(..before)?.iter().rposition(|&x| x == c)
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`. The
/// fields are read from the right, so a user name with spaces (seen in the wild)
/// does not shift the address.
fn origin(body: &[u8], v: usize, end: usize) -> Result<Origin<'_>, SdpError> {
    let bad = SdpError::BadOrigin;
    let value = body.get(v..end).ok_or(bad)?;
    let sp3 = rfind(value, b' ', value.len()).ok_or(bad)?;
    let sp2 = rfind(value, b' ', sp3).ok_or(bad)?;
    let sp1 = rfind(value, b' ', sp2).ok_or(bad)?;
    let head = value.get(..sp1).unwrap_or_default();
    if head.iter().filter(|&&c| c == b' ').count() < 2
        || value.get(sp1 + 1..sp2) != Some(&b"IN"[..])
    {
        return Err(bad);
    }
    let addrtype = value.get(sp2 + 1..sp3).unwrap_or_default();
    let text = value.get(sp3 + 1..).unwrap_or_default();
    let addr = match addrtype {
        _ if text.is_empty() => return Err(bad),
        b"IP4" => lex::parse_ipv4(text).map_or(Address::Name(text), Address::V4),
        b"IP6" => ipv6(text).map_or(Address::Name(text), Address::V6),
        _ => return Err(bad),
    };
    Ok(Origin {
        addr,
        span: Span::new(v + sp3 + 1, end),
    })
}

fn ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `IN IP4 <address>[/ttl[/count]]` or `IN IP6 <address>[/count]` in `body[v..end]`.
fn connection(body: &[u8], v: usize, end: usize) -> Option<Connection<'_>> {
    let value = body.get(v..end)?;
    let (addrtype, a) = if let Some(rest) = value.strip_prefix(b"IN IP4 ") {
        (4, rest)
    } else {
        (6, value.strip_prefix(b"IN IP6 ")?)
    };
    let a_start = end - a.len();
    let slash = a.iter().position(|&c| c == b'/').unwrap_or(a.len());
    let text = a.get(..slash)?;
    let mut suffix = a.get(slash..)?.split(|&c| c == b'/').skip(1);
    let (addr, ttl, count) = if addrtype == 4 {
        let addr = match lex::parse_ipv4(text) {
            Some(ip) => Address::V4(ip),
            None if !text.is_empty() && text.iter().all(|&c| lex::is_host(c)) => {
                Address::Name(text)
            }
            None => return None,
        };
        let ttl = match suffix.next() {
            Some(t) => Some(u8::try_from(lex::parse_u16(t)?).ok()?),
            None => None,
        };
        (addr, ttl, suffix.next())
    } else {
        (Address::V6(ipv6(text)?), None, suffix.next())
    };
    if suffix.next().is_some() {
        return None;
    }
    let count = match count {
        Some(c) => lex::parse_u16(c).filter(|&n| (1..=MAX_PORT_COUNT).contains(&n))?,
        None => 1,
    };
    Some(Connection {
        addr,
        span: Span::new(a_start, a_start + slash),
        ttl,
        count,
    })
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...` in `body[v..end]`.
fn media(body: &[u8], v: usize, end: usize, index: usize) -> Result<MediaStream<'_>, SdpError> {
    let bad = SdpError::BadMedia;
    let value = body.get(v..end).unwrap_or_default();
    let mut fields = value.splitn(4, |&c| c == b' ');
    let media = fields.next().unwrap_or_default();
    let ports = fields.next().unwrap_or_default();
    let proto = fields.next().unwrap_or_default();
    let formats = fields.next().unwrap_or_default();
    if media.is_empty() || ports.is_empty() || proto.is_empty() {
        return Err(bad);
    }
    let slash = ports.iter().position(|&c| c == b'/');
    let port_text = ports
        .get(..slash.unwrap_or(ports.len()))
        .unwrap_or_default();
    let port = lex::parse_u16(port_text).ok_or(bad)?;
    let port_count = match slash {
        Some(s) => lex::parse_u16(ports.get(s + 1..).unwrap_or_default())
            .filter(|&n| (1..=MAX_PORT_COUNT).contains(&n))
            .ok_or(SdpError::BadCount)?,
        None => 1,
    };
    // RTP takes `count` even ports from `port`, RTCP the odd one above each.
    if port != 0 && u32::from(port) + 2 * u32::from(port_count) - 1 > u32::from(u16::MAX) {
        return Err(SdpError::BadCount);
    }
    let p_start = v + media.len() + 1;
    Ok(MediaStream {
        index,
        media,
        port,
        port_span: Span::new(p_start, p_start + port_text.len()),
        port_count,
        proto,
        formats,
        ..MediaStream::EMPTY
    })
}

/// `a=rtcp:` value in `body[v..end]`: `<port> [<nettype> <addrtype> <address>]`.
fn rtcp(body: &[u8], v: usize, end: usize) -> Result<Rtcp<'_>, SdpError> {
    let stop = lex::skip(body, v, |c| c.is_ascii_digit()).min(end);
    let port = lex::parse_u16(body.get(v..stop).unwrap_or_default()).ok_or(SdpError::BadRtcp)?;
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
            (audio.index, audio.media, audio.port),
            (0, &b"audio"[..], 49170)
        );
        assert_eq!(text(OFFER, audio.port_span), b"49170");
        assert_eq!(
            (audio.proto, audio.formats),
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
        assert_eq!(
            sdp.origin().unwrap().addr,
            Address::V6("2001:2::10".parse().unwrap())
        );
        let [a, v, t] = sdp.media() else { panic!() };
        assert_eq!(a.port_count, 2);
        let c = a.connection.unwrap();
        assert_eq!((c.ttl, c.count), (Some(127), 2));
        assert_eq!(text(body, c.span), b"233.252.0.1");
        assert!(a.rtcp_mux);
        assert_eq!(
            v.connection.unwrap().addr,
            Address::V6("2001:2::10".parse().unwrap())
        );
        assert_eq!(
            t.connection.unwrap().addr,
            Address::Name(b"media.example.com")
        );
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
            "o=- 1 IN IP4 198.18.0.1",
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
