//! The rewriter: finds, in one SIP message and its SDP body, the transport addresses
//! the [`Rules`] name and the media streams a [`MediaMapper`] relays, and records
//! their replacements in an [`Edits`] list (applied afterwards by
//! [`Edits::apply`]). See the module documentation of [`alg`](super) for what is
//! rewritten where.
//!
//! Cost: a message is first searched (`memchr::memmem`) for the IPv4 text of each
//! rule's address; only the header fields holding a hit are parsed, and a message
//! without hits and without SDP to relay is [`Outcome::Unchanged`] after those
//! searches alone. Field parsing is this module's own (the scanner validates only the
//! top Via and the fields the balancer reads), bounded by the field, and never panics.

use super::edit::{EditError, Edits, Text};
use super::lex::{self, at, eq_caseless};
use super::sdp::{Address, Connection, Direction, MediaStream, Sdp, SdpError, MAX_MEDIA};
use crate::sip::{HeaderName, SipMessage};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::{BitOr, Range};

/// Address rules per message: a backend and a SNAT binding toward a client, a
/// client toward a backend, with room to spare.
pub const MAX_RULES: usize = 8;

/// Distinct header fields holding a rule's address, per message.
pub const MAX_FIELDS: usize = 32;

/// Where a rule applies: a set of the places below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Places(u8);

impl Places {
    /// The Request-URI.
    pub const REQUEST_URI: Places = Places(1);
    /// The first value of the first Via: sent-by, `received`, `rport`, `maddr`.
    pub const TOP_VIA: Places = Places(1 << 1);
    /// Every other Via value, the same parts.
    pub const OTHER_VIA: Places = Places(1 << 2);
    /// Contact URIs, their `maddr`/`alias` URI parameters and `received`/`alias`
    /// header parameters.
    pub const CONTACT: Places = Places(1 << 3);
    /// Record-Route, Route, Path (RFC 3327) and Service-Route (RFC 3608).
    pub const ROUTE: Places = Places(1 << 4);
    /// The From and To URIs (when their host is the transport address).
    pub const FROM_TO: Places = Places(1 << 5);
    /// The SDP body: `o=`, `c=` and `a=rtcp` addresses not handled by a
    /// [`MediaMapper`].
    pub const SDP: Places = Places(1 << 6);
    /// Every header place.
    pub const HEADERS: Places = Places(0x3f);
    pub const ALL: Places = Places(0x7f);
    pub const NONE: Places = Places(0);

    pub const fn union(self, other: Places) -> Places {
        Places(self.0 | other.0)
    }

    /// Whether every place of `other` is in `self`.
    pub const fn contains(self, other: Places) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: Places) -> bool {
        self.0 & other.0 != 0
    }
}

impl BitOr for Places {
    type Output = Places;

    fn bitor(self, other: Places) -> Places {
        self.union(other)
    }
}

/// "The transport address `from` becomes `to` in `places`".
///
/// Where a place holds an address and a port (a SIP URI, a Via sent-by, `rport` with
/// its address, Kamailio's `alias=ip~port~proto`), both must equal `from`; a URI or
/// sent-by without a port has the default one (5060, 5061 for `sips:` and TLS).
/// Where a place holds an address alone (`received=`, `maddr=`, SDP `o=`/`c=`), the
/// address must equal `from`'s; when several rules share that address, the one
/// whose port the place's context names (`rport`, the sent-by port) wins, else the
/// first. A port is written only where one was, or where `to`'s differs from the
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRule {
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
    pub places: Places,
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    rule: AddrRule,
    /// `from`'s address as text, what the message is searched for.
    text: Text,
    /// Whether an earlier rule has the same address (its search finds this one's).
    repeat: bool,
}

/// The rules for one message, in a fixed array (see [`AddrRule`]).
#[derive(Debug, Clone)]
pub struct Rules {
    items: [Option<Rule>; MAX_RULES],
    len: usize,
    places: Places,
}

impl Default for Rules {
    fn default() -> Self {
        Self::new()
    }
}

impl Rules {
    pub const fn new() -> Self {
        Self {
            items: [None; MAX_RULES],
            len: 0,
            places: Places::NONE,
        }
    }

    /// Adds a rule; [`RewriteError::TooManyRules`] past [`MAX_RULES`]. Rules are tried
    /// in the order they were added.
    pub fn push(&mut self, rule: AddrRule) -> Result<(), RewriteError> {
        let mut text = Text::new();
        text.push_ipv4(*rule.from.ip())
            .map_err(RewriteError::Edit)?;
        let repeat = self.iter().any(|r| r.from.ip() == rule.from.ip());
        let slot = self
            .items
            .get_mut(self.len)
            .ok_or(RewriteError::TooManyRules)?;
        *slot = Some(Rule { rule, text, repeat });
        self.len += 1;
        self.places = self.places | rule.places;
        Ok(())
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.places = Places::NONE;
    }

    pub fn iter(&self) -> impl Iterator<Item = &AddrRule> + '_ {
        self.rules().map(|r| &r.rule)
    }

    fn rules(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.items.iter().take(self.len).flatten()
    }

    /// The address texts to search for where any rule applies in `places`, each once.
    fn needles(&self, places: Places) -> impl Iterator<Item = &[u8]> + '_ {
        self.rules()
            .filter(move |r| !r.repeat && self.any_shares(r, places))
            .map(|r| r.text.as_bytes())
    }

    /// Whether a rule with `r`'s address applies somewhere in `places`.
    fn any_shares(&self, r: &Rule, places: Places) -> bool {
        self.iter()
            .any(|o| o.from.ip() == r.rule.from.ip() && o.places.intersects(places))
    }

    /// The rule for the transport address `ip:port` in `place`.
    fn by_transport(&self, place: Places, ip: Ipv4Addr, port: u16) -> Option<SocketAddrV4> {
        self.iter()
            .find(|r| r.places.contains(place) && *r.from.ip() == ip && r.from.port() == port)
            .map(|r| r.to)
    }

    /// The rule for the address `ip` alone in `place`, preferring one whose port is
    /// `hint`.
    fn by_ip(&self, place: Places, ip: Ipv4Addr, hint: Option<u16>) -> Option<SocketAddrV4> {
        let mut first = None;
        for r in self
            .iter()
            .filter(|r| r.places.contains(place) && *r.from.ip() == ip)
        {
            if Some(r.from.port()) == hint {
                return Some(r.to);
            }
            first.get_or_insert(r.to);
        }
        first
    }
}

/// Why a media mapping was refused, as the [`MediaMapper`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MediaError {
    #[error("no media port left in the farm's media_ports range")]
    Exhausted,
    #[error("the media table is full")]
    TableFull,
    #[error("the stream may not be relayed (policy)")]
    Refused,
}

impl MediaError {
    pub const COUNT: usize = 3;

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Exhausted => "media_ports_exhausted",
            Self::TableFull => "media_table_full",
            Self::Refused => "media_refused",
        }
    }
}

/// One stream an SDP announces, resolved: where its endpoint receives RTP and RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFlow<'a> {
    /// The `m=` section as written (index, media, port, port count, proto, ...).
    pub stream: MediaStream<'a>,
    /// The `c=` that applies (media level, else session): 0.0.0.0 for RFC 2543 hold.
    pub addr: Ipv4Addr,
    /// The RTCP port: the RTP port with `a=rtcp-mux`, else `a=rtcp`'s, else RTP + 1.
    pub rtcp_port: u16,
    /// `a=rtcp`'s address, else `addr`.
    pub rtcp_addr: Ipv4Addr,
    pub direction: Direction,
    /// `sendonly`, `inactive` or `c=` 0.0.0.0.
    pub hold: bool,
}

/// Where the other side must send a stream instead: the relay's address and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    pub addr: Ipv4Addr,
    pub port: u16,
    /// Written into `a=rtcp` when the stream has one. Without `a=rtcp` (and without
    /// `rtcp-mux`) the peer sends RTCP to `port + 1`, so this must be `port + 1`.
    pub rtcp_port: u16,
}

/// The media table behind the rewriter: called once per stream that is not rejected
/// (port 0), in `m=` order, after the whole SDP has been validated. A call that
/// returns an error ends the rewrite; mappings made for earlier streams of the same
/// message stay with the mapper (they expire like any idle mapping).
pub trait MediaMapper {
    fn map(&mut self, flow: &MediaFlow<'_>) -> Result<Mapped, MediaError>;
}

/// Why a message could not be rewritten. The buffer is untouched; the caller drops
/// the message (or forwards it as it is) and counts the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RewriteError {
    #[error("SDP body: {0}")]
    Sdp(SdpError),
    #[error("edits: {0}")]
    Edit(EditError),
    #[error("media mapping: {0}")]
    Media(MediaError),
    #[error("more than 8 address rules")]
    TooManyRules,
    #[error("more than 32 header fields hold a rule's address")]
    TooManyFields,
    #[error("a Via holding a rule's address is malformed (RFC 3261 §20.42)")]
    MalformedVia,
    #[error("a Request-URI, Contact, Route, Record-Route, Path, Service-Route, From or To holding a rule's address is malformed (RFC 3261 §20)")]
    MalformedAddress,
    #[error("the body holds a rule's address but is not SDP (multipart bodies are not rewritten)")]
    UnsupportedBody,
    #[error("a stream to relay has an IPv6 c= address: the media path is IPv4 only")]
    Ipv6Media,
    #[error("a stream to relay has a host name or multicast c= address")]
    UnsupportedMediaAddress,
    #[error("streams sharing the session-level c= were mapped to different addresses")]
    MediaAddressConflict,
    #[error("a stream without a=rtcp was mapped to an RTCP port other than RTP + 1")]
    RtcpNotAdjacent,
    #[error("the Content-Length read by the scanner was not found again")]
    ContentLengthNotFound,
    #[error("the SipMessage was not parsed from this buffer")]
    ForeignMessage,
}

impl RewriteError {
    /// Reasons of the rewriter's own, after the nested ones.
    const OWN: usize = 11;

    /// The number of reasons, nested ones included: counters are
    /// `[Counter; RewriteError::COUNT]`.
    pub const COUNT: usize = SdpError::COUNT + EditError::COUNT + MediaError::COUNT + Self::OWN;

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        const E: usize = SdpError::COUNT;
        const M: usize = E + EditError::COUNT;
        const O: usize = M + MediaError::COUNT;
        match self {
            Self::Sdp(e) => e.index(),
            Self::Edit(e) => E + e.index(),
            Self::Media(e) => M + e.index(),
            Self::TooManyRules => O,
            Self::TooManyFields => O + 1,
            Self::MalformedVia => O + 2,
            Self::MalformedAddress => O + 3,
            Self::UnsupportedBody => O + 4,
            Self::Ipv6Media => O + 5,
            Self::UnsupportedMediaAddress => O + 6,
            Self::MediaAddressConflict => O + 7,
            Self::RtcpNotAdjacent => O + 8,
            Self::ContentLengthNotFound => O + 9,
            Self::ForeignMessage => O + 10,
        }
    }

    /// A snake_case name, for counter labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sdp(e) => e.name(),
            Self::Edit(e) => e.name(),
            Self::Media(e) => e.name(),
            Self::TooManyRules => "too_many_rules",
            Self::TooManyFields => "too_many_fields",
            Self::MalformedVia => "malformed_via",
            Self::MalformedAddress => "malformed_address",
            Self::UnsupportedBody => "unsupported_body",
            Self::Ipv6Media => "ipv6_media",
            Self::UnsupportedMediaAddress => "unsupported_media_address",
            Self::MediaAddressConflict => "media_address_conflict",
            Self::RtcpNotAdjacent => "rtcp_not_adjacent",
            Self::ContentLengthNotFound => "content_length_not_found",
            Self::ForeignMessage => "foreign_message",
        }
    }
}

impl From<EditError> for RewriteError {
    fn from(e: EditError) -> Self {
        Self::Edit(e)
    }
}

impl From<SdpError> for RewriteError {
    fn from(e: SdpError) -> Self {
        Self::Sdp(e)
    }
}

impl From<MediaError> for RewriteError {
    fn from(e: MediaError) -> Self {
        Self::Media(e)
    }
}

/// What [`rewrite`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to change: forward the message as it is (`edits` is empty).
    Unchanged,
    /// `edits` holds the changes; the message will be `len` bytes once applied.
    Rewritten { len: usize },
}

/// Finds what `rules` and `media` change in the message `msg` parsed from `buf`, and
/// records it in `edits` (reset first). `media`: relay every stream of an SDP body
/// through this mapper; `None` leaves ports alone and rewrites SDP addresses by the
/// rules only. Nothing is written to `buf`: apply `edits` to the packet's buffer
/// afterwards.
pub fn rewrite(
    buf: &[u8],
    msg: &SipMessage<'_>,
    rules: &Rules,
    media: Option<&mut dyn MediaMapper>,
    edits: &mut Edits,
) -> Result<Outcome, RewriteError> {
    let body_offset = msg.body_offset();
    let body = msg.body();
    let msg_len = body_offset + body.len();
    if buf.get(body_offset..msg_len).map(<[u8]>::as_ptr) != Some(body.as_ptr()) {
        return Err(RewriteError::ForeignMessage);
    }
    edits.reset(msg_len, body_offset, None)?;
    let head = buf.get(..body_offset).unwrap_or_default();

    let mut fields = [0usize; MAX_FIELDS];
    let mut n = 0;
    for needle in rules.needles(Places::HEADERS) {
        for hit in memchr::memmem::find_iter(head, needle) {
            if !alone(head, hit, needle.len()) {
                continue;
            }
            let start = field_start(head, hit);
            let found = fields.get(..n).unwrap_or_default();
            if found.contains(&start) {
                continue;
            }
            let slot = fields.get_mut(n).ok_or(RewriteError::TooManyFields)?;
            *slot = start;
            n += 1;
        }
    }
    let fields = fields.get_mut(..n).unwrap_or_default();
    fields.sort_unstable();

    let mut w = Rewriter { buf, rules, edits };
    if !fields.is_empty() {
        // Where the top Via's sent-by lies tells which Via field is the top one.
        let top_via = msg.via().map(|v| {
            let host_at = (v.host.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
            field_start(head, host_at.min(body_offset))
        });
        for &start in fields.iter() {
            w.field(head, start, msg.is_request(), top_via == Some(start))?;
        }
    }

    if !body.is_empty() {
        let hit = rules.needles(Places::SDP).any(|needle| {
            memchr::memmem::find_iter(body, needle).any(|at| alone(body, at, needle.len()))
        });
        let is_sdp = body.starts_with(b"v=");
        if is_sdp && (media.is_some() || hit) {
            w.sdp(body_offset, body, media)?;
        } else if hit {
            return Err(RewriteError::UnsupportedBody);
        }
    }

    if edits.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    if msg.content_length().is_some() && edits.iter().any(|(r, _)| r.start >= body_offset) {
        let span = content_length_span(head).ok_or(RewriteError::ContentLengthNotFound)?;
        edits.set_content_length(span)?;
    }
    Ok(Outcome::Rewritten {
        len: edits.new_len()?,
    })
}

/// Whether the hit at `at` of `len` bytes is a whole address, not part of a longer
/// name or number (`198.18.0.1` in `198.18.0.10` or `x198.18.0.1.example.com`).
fn alone(s: &[u8], at: usize, len: usize) -> bool {
    let before = at.checked_sub(1).and_then(|i| s.get(i)).copied();
    let after = s.get(at + len).copied();
    !before.is_some_and(lex::is_host) && !after.is_some_and(lex::is_host)
}

/// The start of the header field holding `pos` (folded lines included): 0 for the
/// start line.
fn field_start(head: &[u8], pos: usize) -> usize {
    let line_start = |i: usize| {
        head.get(..i)
            .and_then(|h| memchr::memrchr(b'\n', h))
            .map_or(0, |nl| nl + 1)
    };
    let mut start = line_start(pos);
    while start > 0 && matches!(at(head, start), Some(b' ' | b'\t')) {
        start = line_start(start - 1);
    }
    start
}

/// The end of the field starting at `start`: the CR of its last (folded) line.
fn field_end(head: &[u8], start: usize) -> usize {
    let mut i = start;
    loop {
        let Some(nl) = head
            .get(i..)
            .and_then(|r| memchr::memchr(b'\n', r))
            .map(|p| i + p)
        else {
            return head.len();
        };
        if matches!(at(head, nl + 1), Some(b' ' | b'\t')) {
            i = nl + 1;
            continue;
        }
        return if nl > start && at(head, nl - 1) == Some(b'\r') {
            nl - 1
        } else {
            nl
        };
    }
}

/// The span of the Content-Length value's digits. The field is nearly always last,
/// so the header section is read backwards, line by line.
fn content_length_span(head: &[u8]) -> Option<Range<usize>> {
    // The section ends with the last field's CRLF and the empty line's.
    let mut end = head.len().checked_sub(4)?;
    loop {
        let start = head
            .get(..end)
            .and_then(|h| memchr::memrchr(b'\n', h))
            .map(|nl| nl + 1)?;
        if !matches!(at(head, start), Some(b' ' | b'\t')) {
            let line = head.get(start..end).unwrap_or_default();
            if let Some(colon) = memchr::memchr(b':', line) {
                let name = trim_end(line.get(..colon).unwrap_or_default());
                if eq_caseless(name, b"content-length") || eq_caseless(name, b"l") {
                    let fe = field_end(head, start);
                    let v = lex::skip_to(head, start + colon + 1, fe, lex::is_ws);
                    let d = lex::skip_to(head, v, fe, |c| c.is_ascii_digit());
                    return (d > v).then_some(v..d);
                }
            }
        }
        end = start.checked_sub(2)?;
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(0, |p| p + 1);
    s.get(..n).unwrap_or_default()
}

/// The headers (other than Via) whose values are name-addr lists the rules cover.
fn address_place(name: &[u8]) -> Option<Places> {
    match HeaderName::from_bytes(name) {
        HeaderName::Contact => Some(Places::CONTACT),
        HeaderName::From | HeaderName::To => Some(Places::FROM_TO),
        HeaderName::Other
            if eq_caseless(name, b"record-route")
                || eq_caseless(name, b"route")
                || eq_caseless(name, b"path")
                || eq_caseless(name, b"service-route") =>
        {
            Some(Places::ROUTE)
        }
        _ => None,
    }
}

struct Rewriter<'b, 'e> {
    buf: &'b [u8],
    rules: &'e Rules,
    edits: &'e mut Edits,
}

impl Rewriter<'_, '_> {
    /// Records `range` → `text` unless it is already that text.
    fn emit(&mut self, range: Range<usize>, text: Text) -> Result<(), RewriteError> {
        if self.buf.get(range.clone()) == Some(text.as_bytes()) {
            return Ok(());
        }
        Ok(self
            .edits
            .replace_text(range.start, range.end - range.start, text)?)
    }

    fn emit_ip(&mut self, range: Range<usize>, ip: Ipv4Addr) -> Result<(), RewriteError> {
        let mut t = Text::new();
        t.push_ipv4(ip)?;
        self.emit(range, t)
    }

    fn emit_port(&mut self, range: Range<usize>, port: u16) -> Result<(), RewriteError> {
        let mut t = Text::new();
        t.push_decimal(u64::from(port))?;
        self.emit(range, t)
    }

    /// `host[:port]` → `to`, with a port where there was one or where `to`'s is not
    /// the default.
    fn emit_host_port(
        &mut self,
        host: Range<usize>,
        port: Option<Range<usize>>,
        default: u16,
        to: SocketAddrV4,
    ) -> Result<(), RewriteError> {
        let mut t = Text::new();
        t.push_ipv4(*to.ip())?;
        if port.is_some() || to.port() != default {
            t.push(b":")?;
            t.push_decimal(u64::from(to.port()))?;
        }
        let end = port.map_or(host.end, |p| p.end);
        self.emit(host.start..end, t)
    }

    /// The field starting at `start` (0: the start line).
    fn field(
        &mut self,
        head: &[u8],
        start: usize,
        request: bool,
        top_via: bool,
    ) -> Result<(), RewriteError> {
        let end = field_end(head, start);
        if start == 0 {
            if !request || !self.rules.places.contains(Places::REQUEST_URI) {
                return Ok(());
            }
            // Method SP Request-URI SP SIP-Version
            let line = head.get(..end).unwrap_or_default();
            let (Some(sp1), Some(sp2)) = (memchr::memchr(b' ', line), memchr::memrchr(b' ', line))
            else {
                return Err(RewriteError::MalformedAddress);
            };
            return self.uri(sp1 + 1, sp2, Places::REQUEST_URI);
        }
        let Some(colon) = head
            .get(start..end)
            .and_then(|f| memchr::memchr(b':', f))
            .map(|c| start + c)
        else {
            return Ok(());
        };
        let name = trim_end(head.get(start..colon).unwrap_or_default());
        if HeaderName::from_bytes(name) == HeaderName::Via {
            if self
                .rules
                .places
                .intersects(Places::TOP_VIA | Places::OTHER_VIA)
            {
                self.via_list(colon + 1, end, top_via)?;
            }
            return Ok(());
        }
        match address_place(name) {
            Some(place) if self.rules.places.contains(place) => {
                self.address_list(colon + 1, end, place)
            }
            _ => Ok(()),
        }
    }

    /// A SIP URI in `buf[s..e]`: its host and port, and its `maddr` and `alias`
    /// parameters. Other schemes (`tel:`, ...) carry no transport address.
    fn uri(&mut self, s: usize, e: usize, place: Places) -> Result<(), RewriteError> {
        let buf = self.buf;
        let bad = RewriteError::MalformedAddress;
        let u = buf.get(s..e).ok_or(bad)?;
        let colon = s + memchr::memchr(b':', u).ok_or(bad)?;
        let scheme = buf.get(s..colon).unwrap_or_default();
        let sips = eq_caseless(scheme, b"sips");
        if !sips && !eq_caseless(scheme, b"sip") {
            return Ok(());
        }
        // The first "@" ends the userinfo: none can follow it in a SIP URI.
        let rest = colon + 1;
        let host_start = buf
            .get(rest..e)
            .and_then(|r| memchr::memchr(b'@', r))
            .map_or(rest, |a| rest + a + 1);
        let host_end = if at(buf, host_start) == Some(b'[') {
            let close = buf
                .get(host_start..e)
                .and_then(|r| memchr::memchr(b']', r))
                .ok_or(bad)?;
            host_start + close + 1
        } else {
            lex::skip_to(buf, host_start, e, lex::is_host)
        };
        if host_end == host_start {
            return Err(bad);
        }
        let mut i = host_end;
        let mut port = None;
        if i < e && at(buf, i) == Some(b':') {
            let pe = lex::skip_to(buf, i + 1, e, |c| c.is_ascii_digit());
            let p = lex::parse_u16(buf.get(i + 1..pe).unwrap_or_default()).ok_or(bad)?;
            port = Some((i + 1..pe, p));
            i = pe;
        }
        let (mut tls, mut maddr, mut alias) = (sips, None, None);
        while i < e && at(buf, i) == Some(b';') {
            let ne = lex::skip_to(buf, i + 1, e, lex::is_uri_param);
            let name = buf.get(i + 1..ne).unwrap_or_default();
            let (vs, ve) = if ne < e && at(buf, ne) == Some(b'=') {
                (ne + 1, lex::skip_to(buf, ne + 1, e, lex::is_uri_param))
            } else {
                (ne, ne)
            };
            if name.is_empty() {
                return Err(bad);
            }
            let value = buf.get(vs..ve).unwrap_or_default();
            if eq_caseless(name, b"transport") {
                tls = eq_caseless(value, b"tls");
            } else if eq_caseless(name, b"maddr") {
                maddr = Some(vs..ve);
            } else if eq_caseless(name, b"alias") {
                alias = Some(vs..ve);
            }
            i = ve;
        }
        if i < e && at(buf, i) != Some(b'?') {
            return Err(bad);
        }
        let default = if tls { 5061 } else { 5060 };
        let host = buf.get(host_start..host_end).unwrap_or_default();
        if let Some(ip) = lex::parse_ipv4(host) {
            let p = port.as_ref().map_or(default, |(_, p)| *p);
            if let Some(to) = self.rules.by_transport(place, ip, p) {
                self.emit_host_port(host_start..host_end, port.map(|(r, _)| r), default, to)?;
            }
        }
        if let Some(m) = maddr {
            self.ip_param(m, place, None)?;
        }
        if let Some(a) = alias {
            self.alias(a, place)?;
        }
        Ok(())
    }

    /// An address-only parameter value (`received=`, `maddr=`).
    fn ip_param(
        &mut self,
        r: Range<usize>,
        place: Places,
        hint: Option<u16>,
    ) -> Result<(), RewriteError> {
        let text = self.buf.get(r.clone()).unwrap_or_default();
        if let Some(to) = lex::parse_ipv4(text).and_then(|ip| self.rules.by_ip(place, ip, hint)) {
            self.emit_ip(r, *to.ip())?;
        }
        Ok(())
    }

    /// Kamailio's `alias=ip~port~proto` (nathelper `add_contact_alias`).
    fn alias(&mut self, r: Range<usize>, place: Places) -> Result<(), RewriteError> {
        let v = self.buf.get(r.clone()).unwrap_or_default();
        let mut parts = v.split(|&c| c == b'~');
        let (Some(ip), Some(port)) = (parts.next(), parts.next()) else {
            return Ok(());
        };
        let (Some(ip_addr), Some(p)) = (lex::parse_ipv4(ip), lex::parse_u16(port)) else {
            return Ok(());
        };
        if let Some(to) = self.rules.by_transport(place, ip_addr, p) {
            let mut t = Text::new();
            t.push_ipv4(*to.ip())?;
            t.push(b"~")?;
            t.push_decimal(u64::from(to.port()))?;
            self.emit(r.start..r.start + ip.len() + 1 + port.len(), t)?;
        }
        Ok(())
    }

    /// A list of `name-addr / addr-spec` values with header parameters, `buf[s..e]`
    /// (Contact, Route, Record-Route, Path, Service-Route, From, To).
    fn address_list(&mut self, s: usize, e: usize, place: Places) -> Result<(), RewriteError> {
        let buf = self.buf;
        let bad = RewriteError::MalformedAddress;
        let mut i = s;
        loop {
            i = lex::skip_to(buf, i, e, lex::is_ws);
            if i >= e {
                return Ok(());
            }
            let after = match at(buf, i) {
                Some(b'*') => i + 1,
                Some(b'"') => {
                    let q = quoted_end(buf, i, e).ok_or(bad)?;
                    let lt = lex::skip_to(buf, q, e, lex::is_ws);
                    if at(buf, lt) != Some(b'<') {
                        return Err(bad);
                    }
                    self.bracketed(lt, e, place)?
                }
                _ => {
                    let stop = lex::skip_to(buf, i, e, |c| lex::is_token(c) || lex::is_ws(c));
                    if stop < e && at(buf, stop) == Some(b'<') {
                        self.bracketed(stop, e, place)?
                    } else {
                        // addr-spec: the URI ends at the first ";", "," or white space.
                        let end =
                            lex::skip_to(buf, i, e, |c| c != b';' && c != b',' && !lex::is_ws(c));
                        self.uri(i, end, place)?;
                        end
                    }
                }
            };
            i = self.header_params(after, e, place)?;
            if i < e {
                if at(buf, i) != Some(b',') {
                    return Err(bad);
                }
                i += 1;
            }
        }
    }

    /// `<uri>` from the `<` at `lt`: rewrites the URI, returns the index after `>`.
    fn bracketed(&mut self, lt: usize, e: usize, place: Places) -> Result<usize, RewriteError> {
        let gt = self
            .buf
            .get(lt + 1..e)
            .and_then(|r| memchr::memchr(b'>', r))
            .map(|p| lt + 1 + p)
            .ok_or(RewriteError::MalformedAddress)?;
        self.uri(lt + 1, gt, place)?;
        Ok(gt + 1)
    }

    /// Header parameters from `i`: `received` (an address, or a quoted URI as
    /// Kamailio's registrar writes it) and `alias`. Returns where they end.
    fn header_params(
        &mut self,
        mut i: usize,
        e: usize,
        place: Places,
    ) -> Result<usize, RewriteError> {
        let buf = self.buf;
        let bad = RewriteError::MalformedAddress;
        loop {
            i = lex::skip_to(buf, i, e, lex::is_ws);
            if i >= e || at(buf, i) != Some(b';') {
                return Ok(i);
            }
            let ns = lex::skip_to(buf, i + 1, e, lex::is_ws);
            let ne = lex::skip_to(buf, ns, e, lex::is_token);
            if ne == ns {
                return Err(bad);
            }
            let name = buf.get(ns..ne).unwrap_or_default();
            let eq = lex::skip_to(buf, ne, e, lex::is_ws);
            if eq >= e || at(buf, eq) != Some(b'=') {
                i = ne;
                continue;
            }
            let vs = lex::skip_to(buf, eq + 1, e, lex::is_ws);
            let quoted = at(buf, vs) == Some(b'"');
            let ve = if quoted {
                quoted_end(buf, vs, e).ok_or(bad)?
            } else {
                lex::skip_to(buf, vs, e, lex::is_param_value)
            };
            if ve == vs {
                return Err(bad);
            }
            if eq_caseless(name, b"received") {
                if quoted {
                    let inner = buf.get(vs + 1..ve - 1).unwrap_or_default();
                    let prefix = |p: &[u8]| inner.get(..p.len()).is_some_and(|h| eq_caseless(h, p));
                    if prefix(b"sip:") || prefix(b"sips:") {
                        self.uri(vs + 1, ve - 1, place)?;
                    }
                } else {
                    self.ip_param(vs..ve, place, None)?;
                }
            } else if eq_caseless(name, b"alias") && !quoted {
                self.alias(vs..ve, place)?;
            }
            i = ve;
        }
    }

    /// The Via values of one field, `buf[s..e]`; the first is the top Via when
    /// `top` (the message's first Via field).
    fn via_list(&mut self, s: usize, e: usize, top: bool) -> Result<(), RewriteError> {
        let buf = self.buf;
        let bad = RewriteError::MalformedVia;
        let ws = |i: usize| lex::skip_to(buf, i, e, lex::is_ws);
        let token = |i: usize| {
            let start = ws(i);
            let end = lex::skip_to(buf, start, e, lex::is_token);
            (end > start).then_some((start..end, end))
        };
        let slash = |i: usize| {
            let j = ws(i);
            (at(buf, j) == Some(b'/') && j < e).then_some(j + 1)
        };
        let mut i = s;
        let mut first = top;
        loop {
            i = ws(i);
            if i >= e {
                return Ok(());
            }
            let place = if first {
                Places::TOP_VIA
            } else {
                Places::OTHER_VIA
            };
            first = false;
            // sent-protocol LWS sent-by
            let (_, j) = token(i).ok_or(bad)?;
            let j = slash(j).ok_or(bad)?;
            let (_, j) = token(j).ok_or(bad)?;
            let j = slash(j).ok_or(bad)?;
            let (transport, j) = token(j).ok_or(bad)?;
            let h = ws(j);
            if h == j {
                return Err(bad);
            }
            let h_end = if at(buf, h) == Some(b'[') {
                buf.get(h..e)
                    .and_then(|r| memchr::memchr(b']', r))
                    .map(|p| h + p + 1)
                    .ok_or(bad)?
            } else {
                lex::skip_to(buf, h, e, lex::is_host)
            };
            if h_end == h {
                return Err(bad);
            }
            let mut k = h_end;
            let mut port = None;
            let c = ws(k);
            if c < e && at(buf, c) == Some(b':') {
                let p = ws(c + 1);
                let pe = lex::skip_to(buf, p, e, |c| c.is_ascii_digit());
                let v = lex::parse_u16(buf.get(p..pe).unwrap_or_default()).ok_or(bad)?;
                port = Some((p..pe, v));
                k = pe;
            }
            // via-params
            let (mut received, mut rport, mut maddr) = (None, None, None);
            loop {
                let semi = ws(k);
                if semi >= e || at(buf, semi) != Some(b';') {
                    k = semi;
                    break;
                }
                let (name, ne) = token(semi + 1).ok_or(bad)?;
                let eq = ws(ne);
                let value = if eq < e && at(buf, eq) == Some(b'=') {
                    let vs = ws(eq + 1);
                    let ve = if at(buf, vs) == Some(b'"') {
                        quoted_end(buf, vs, e).ok_or(bad)?
                    } else {
                        lex::skip_to(buf, vs, e, lex::is_param_value)
                    };
                    if ve == vs {
                        return Err(bad);
                    }
                    k = ve;
                    Some(vs..ve)
                } else {
                    k = ne;
                    None
                };
                let name = buf.get(name).unwrap_or_default();
                if eq_caseless(name, b"received") {
                    received = received.or(value);
                } else if eq_caseless(name, b"rport") {
                    rport = rport.or(Some(value));
                } else if eq_caseless(name, b"maddr") {
                    maddr = maddr.or(value);
                }
            }
            if k < e {
                if at(buf, k) != Some(b',') {
                    return Err(bad);
                }
                k += 1;
            }
            i = k;
            if !self.rules.places.contains(place) {
                continue;
            }
            let tls = eq_caseless(buf.get(transport).unwrap_or_default(), b"tls");
            let default = if tls { 5061 } else { 5060 };
            let sent_by = lex::parse_ipv4(buf.get(h..h_end).unwrap_or_default());
            let sent_port = port.as_ref().map_or(default, |(_, p)| *p);
            if let Some(to) = sent_by.and_then(|ip| self.rules.by_transport(place, ip, sent_port)) {
                self.emit_host_port(h..h_end, port.map(|(r, _)| r), default, to)?;
            }
            let received_ip = received
                .clone()
                .and_then(|r| lex::parse_ipv4(buf.get(r).unwrap_or_default()));
            // rport=N with the address it goes with: a transport address.
            let rport = rport.flatten().and_then(|r| {
                let n = lex::parse_u16(buf.get(r.clone()).unwrap_or_default())?;
                Some((r, n))
            });
            let rport_n = rport.as_ref().map(|(_, n)| *n);
            let mut received_done = false;
            if let Some((r, n)) = rport {
                let to = received_ip
                    .or(sent_by)
                    .and_then(|ip| self.rules.by_transport(place, ip, n));
                if let Some(to) = to {
                    self.emit_port(r, to.port())?;
                    if let (Some(rr), Some(_)) = (received.clone(), received_ip) {
                        self.emit_ip(rr, *to.ip())?;
                        received_done = true;
                    }
                }
            }
            if let (Some(rr), false) = (received, received_done) {
                let hint = rport_n.unwrap_or(sent_port);
                self.ip_param(rr, place, Some(hint))?;
            }
            if let Some(m) = maddr {
                self.ip_param(m, place, None)?;
            }
        }
    }

    /// The SDP body at `base`: media streams through `media`, other addresses by the
    /// rules.
    fn sdp(
        &mut self,
        base: usize,
        body: &[u8],
        media: Option<&mut dyn MediaMapper>,
    ) -> Result<(), RewriteError> {
        let sdp = Sdp::parse(body)?;
        let span = |s: super::sdp::Span| base + usize::from(s.start)..base + usize::from(s.end);
        // (address the stream had, where it goes now) per m= line.
        let mut mapped: [Option<(Ipv4Addr, Mapped)>; MAX_MEDIA] = [None; MAX_MEDIA];
        if let Some(mapper) = media {
            let mut flows = [None; MAX_MEDIA];
            for (slot, m) in flows.iter_mut().zip(sdp.media()) {
                if !m.is_rejected() {
                    *slot = Some(flow(&sdp, m)?);
                }
            }
            for (slot, f) in mapped.iter_mut().zip(flows) {
                let Some(f) = f else { continue };
                let to = mapper.map(&f)?;
                let s = &f.stream;
                if s.rtcp.is_none() && !s.rtcp_mux && Some(to.rtcp_port) != to.port.checked_add(1) {
                    return Err(RewriteError::RtcpNotAdjacent);
                }
                *slot = Some((f.addr, to));
            }
        }
        // An address that is not a mapped stream's own: a mapped stream's former
        // address becomes its new one, else the rules decide.
        let subst = |ip: Ipv4Addr| -> Option<Ipv4Addr> {
            mapped
                .iter()
                .flatten()
                .find(|(from, _)| *from == ip && !ip.is_unspecified())
                .map(|(_, to)| to.addr)
                .or_else(|| self.rules.by_ip(Places::SDP, ip, None).map(|to| *to.ip()))
        };
        let mut edits: [Option<(Range<usize>, Ipv4Addr)>; 2 + 2 * MAX_MEDIA] =
            [const { None }; 2 + 2 * MAX_MEDIA];
        let mut n = 0;
        let mut push = |r: Range<usize>, ip: Ipv4Addr| {
            if let Some(slot) = edits.get_mut(n) {
                *slot = Some((r, ip));
                n += 1;
            }
        };
        if let Some(o) = sdp.origin() {
            if let Address::V4(ip) = o.addr {
                if let Some(to) = subst(ip) {
                    push(span(o.span), to);
                }
            }
        }
        if let Some(c) = sdp.connection().filter(|c| !c.is_hold()) {
            // The streams using the session c= must agree on their new address.
            let mut to = None;
            for (m, map) in sdp.media().iter().zip(&mapped) {
                if let (None, Some((_, dst))) = (m.connection, map) {
                    if to.is_some_and(|t| t != dst.addr) {
                        return Err(RewriteError::MediaAddressConflict);
                    }
                    to = Some(dst.addr);
                }
            }
            let to = match (to, c.addr) {
                (Some(t), _) => Some(t),
                (None, Address::V4(ip)) => subst(ip),
                _ => None,
            };
            if let Some(t) = to {
                push(span(c.span), t);
            }
        }
        for (m, map) in sdp.media().iter().zip(&mapped) {
            let own = |c: &Connection<'_>| match (map, c.addr) {
                _ if c.is_hold() => None,
                (Some((_, to)), _) => Some(to.addr),
                (None, Address::V4(ip)) => subst(ip),
                _ => None,
            };
            if let Some(c) = &m.connection {
                if let Some(t) = own(c) {
                    push(span(c.span), t);
                }
            }
            if let Some(c) = m.rtcp.as_ref().and_then(|r| r.connection.as_ref()) {
                if let Some(t) = own(c) {
                    push(span(c.span), t);
                }
            }
        }
        for (r, ip) in edits.into_iter().flatten() {
            self.emit_ip(r, ip)?;
        }
        for (m, map) in sdp.media().iter().zip(mapped) {
            let Some((_, to)) = map else { continue };
            self.emit_port(span(m.port_span), to.port)?;
            if let Some(r) = &m.rtcp {
                self.emit_port(span(r.port_span), to.rtcp_port)?;
            }
            if m.ice_lines > 0 {
                self.drop_ice_lines(base, body, m.section.range())?;
            }
        }
        Ok(())
    }

    /// Removes the `a=candidate` and `a=remote-candidates` lines of a relayed stream:
    /// they name the endpoint's own addresses, which the peer must no longer use.
    fn drop_ice_lines(
        &mut self,
        base: usize,
        body: &[u8],
        section: Range<usize>,
    ) -> Result<(), RewriteError> {
        let mut pos = section.start;
        while pos < section.end {
            let next = body
                .get(pos..section.end)
                .and_then(|r| memchr::memchr(b'\n', r))
                .map_or(section.end, |p| pos + p + 1);
            let line = body.get(pos..next).unwrap_or_default();
            if line.starts_with(b"a=candidate:") || line.starts_with(b"a=remote-candidates:") {
                self.edits.replace(base + pos, next - pos, b"")?;
            }
            pos = next;
        }
        Ok(())
    }
}

/// The stream `m` resolved for the mapper; only IPv4 unicast can be relayed.
fn flow<'a>(sdp: &Sdp<'a>, m: &MediaStream<'a>) -> Result<MediaFlow<'a>, RewriteError> {
    let v4 = |c: &Connection<'_>| match c.addr {
        Address::V4(ip) if !ip.is_multicast() => Ok(ip),
        Address::V6(_) => Err(RewriteError::Ipv6Media),
        _ => Err(RewriteError::UnsupportedMediaAddress),
    };
    let c = sdp.connection_of(m).ok_or(SdpError::MissingConnection)?;
    let addr = v4(&c)?;
    let rtcp_addr = match m.rtcp.as_ref().and_then(|r| r.connection.as_ref()) {
        Some(rc) => v4(rc)?,
        None => addr,
    };
    let rtcp_port = match (&m.rtcp, m.rtcp_mux) {
        (_, true) => m.port,
        (Some(r), false) => r.port,
        (None, false) => m.port.saturating_add(1),
    };
    Ok(MediaFlow {
        stream: *m,
        addr,
        rtcp_port,
        rtcp_addr,
        direction: sdp.direction_of(m),
        hold: sdp.on_hold(m),
    })
}

/// Given `s[i] == '"'`, the index after the closing quote (backslash escapes
/// honoured), before `e`.
fn quoted_end(s: &[u8], i: usize, e: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < e {
        match at(s, j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Limits;

    // Test-bed addresses (198.18.0.0/15): clients and the VIP in 198.18, the server
    // farm (backends, their media, the balancer's SNAT address) in 198.19.
    const ALICE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 5060);
    const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 100), 5060);
    const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 1), 5060);
    const SNAT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 100), 1024);

    /// A media table handing out VIP ports 20000, 20002, ... and remembering calls.
    struct Table {
        addr: Ipv4Addr,
        next: u16,
        flows: Vec<(usize, Ipv4Addr, u16, u16, bool)>,
        fail: Option<MediaError>,
        rtcp_gap: u16,
    }

    impl Table {
        fn new(addr: Ipv4Addr) -> Self {
            Self {
                addr,
                next: 20000,
                flows: Vec::new(),
                fail: None,
                rtcp_gap: 1,
            }
        }
    }

    impl MediaMapper for Table {
        fn map(&mut self, f: &MediaFlow<'_>) -> Result<Mapped, MediaError> {
            if let Some(e) = self.fail {
                return Err(e);
            }
            self.flows
                .push((f.stream.index, f.addr, f.stream.port, f.rtcp_port, f.hold));
            let port = self.next;
            self.next += 2;
            Ok(Mapped {
                addr: self.addr,
                port,
                rtcp_port: port + self.rtcp_gap,
            })
        }
    }

    fn rules(list: &[(SocketAddrV4, SocketAddrV4, Places)]) -> Rules {
        let mut r = Rules::new();
        for &(from, to, places) in list {
            r.push(AddrRule { from, to, places }).unwrap();
        }
        r
    }

    /// Fixes the Content-Length of a literal message.
    fn msg(text: &str) -> Vec<u8> {
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let head = head
            .replace(
                "Content-Length: N",
                &format!("Content-Length: {}", body.len()),
            )
            .replace("l: N", &format!("l: {}", body.len()));
        format!("{head}\r\n\r\n{body}").into_bytes()
    }

    /// Rewrites and applies into a buffer with room to grow; checks that the result
    /// parses and that Content-Length matches the body.
    fn run(
        input: &[u8],
        rules: &Rules,
        media: Option<&mut dyn MediaMapper>,
    ) -> Result<(Outcome, Vec<u8>), RewriteError> {
        let m = SipMessage::parse(input, &Limits::default()).unwrap();
        let mut edits = Edits::new();
        let outcome = rewrite(input, &m, rules, media, &mut edits)?;
        let mut buf = input.to_vec();
        buf.resize(input.len() + 512, 0);
        let n = edits.apply(&mut buf)?;
        buf.truncate(n);
        if outcome == Outcome::Unchanged {
            assert!(edits.is_empty());
            assert_eq!(buf, input);
        } else {
            assert_eq!(outcome, Outcome::Rewritten { len: n });
        }
        let out = SipMessage::parse(&buf, &Limits::default()).expect("rewritten message parses");
        if let Some(cl) = out.content_length() {
            assert_eq!(cl, buf.len() - out.body_offset());
        }
        Ok((outcome, buf))
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    const KAMAILIO_INVITE: &str = "INVITE sip:bob@198.18.0.20:5060 SIP/2.0\r
Record-Route: <sip:198.19.1.1;lr;ftag=as1;nat=yes>\r
Via: SIP/2.0/UDP 198.19.1.1;branch=z9hG4bK1b0.1\r
Via: SIP/2.0/UDP 198.18.0.10:5060;received=198.18.0.10;rport=5060;branch=z9hG4bKa\r
Max-Forwards: 69\r
From: \"Alice\" <sip:alice@example.com>;tag=as1\r
To: <sip:bob@example.com>\r
Call-ID: c1@198.18.0.10\r
CSeq: 1 INVITE\r
Contact: <sip:alice@198.18.0.10:5060;alias=198.18.0.10~5060~1>\r
Content-Type: application/sdp\r
Content-Length: N\r
\r
v=0\r
o=rtpengine 1712 1 IN IP4 198.19.1.1\r
s=-\r
c=IN IP4 198.19.1.1\r
t=0 0\r
m=audio 30000 RTP/AVP 0 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=rtcp:30001\r
a=sendrecv\r
";

    #[test]
    fn record_routed_invite_toward_the_callee() {
        let input = msg(KAMAILIO_INVITE);
        let r = rules(&[(BACKEND, VIP, Places::ALL)]);
        let mut table = Table::new(*VIP.ip());
        let (_, out) = run(&input, &r, Some(&mut table)).unwrap();
        let out = text(&out);
        assert!(
            out.contains("Record-Route: <sip:198.18.0.100;lr;ftag=as1;nat=yes>\r\n"),
            "{out}"
        );
        assert!(out.contains("Via: SIP/2.0/UDP 198.18.0.100;branch=z9hG4bK1b0.1\r\n"));
        assert!(out.contains("o=rtpengine 1712 1 IN IP4 198.18.0.100\r\n"));
        assert!(out.contains("c=IN IP4 198.18.0.100\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\n"));
        assert!(out.contains("a=rtcp:20001\r\n"));
        // The caller's own addresses are not the rule's.
        assert!(out.contains("received=198.18.0.10;rport=5060"));
        assert!(!out.contains("198.19."), "{out}");
        assert_eq!(table.flows, [(0, *BACKEND.ip(), 30000, 30001, false)]);
    }

    #[test]
    fn answer_toward_the_caller() {
        let input = msg("SIP/2.0 200 OK\r
Via: SIP/2.0/UDP 198.18.0.10:5060;received=198.18.0.10;rport=5060;branch=z9hG4bKa\r
Record-Route: <sip:198.19.1.1:5060;lr;ftag=as1>, <sip:198.19.1.1:5080;transport=tcp;lr>\r
From: \"Alice\" <sip:alice@example.com>;tag=as1\r
To: <sip:bob@example.com>;tag=bt1\r
Call-ID: c1@198.18.0.10\r
CSeq: 1 INVITE\r
Contact: <sip:bob@198.19.1.1:5060;transport=udp>\r
Content-Type: application/sdp\r
Content-Length: N\r
\r
v=0\r
o=bob 2890844527 2890844527 IN IP4 198.19.1.1\r
s=-\r
c=IN IP4 198.19.1.1\r
t=0 0\r
m=audio 30002 RTP/AVP 0\r
a=rtpmap:0 PCMU/8000\r
");
        let r = rules(&[(BACKEND, VIP, Places::ALL)]);
        let mut table = Table::new(*VIP.ip());
        let (_, out) = run(&input, &r, Some(&mut table)).unwrap();
        let out = text(&out);
        // An explicit port stays explicit; 5080 is another transport address.
        assert!(out.contains(
            "Record-Route: <sip:198.18.0.100:5060;lr;ftag=as1>, <sip:198.19.1.1:5080;transport=tcp;lr>\r\n"
        ), "{out}");
        assert!(out.contains("Contact: <sip:bob@198.18.0.100:5060;transport=udp>\r\n"));
        assert!(out.contains("m=audio 20000 RTP/AVP 0\r\n"));
        assert!(out.contains("c=IN IP4 198.18.0.100\r\n"));
        assert!(out.contains("o=bob 2890844527 2890844527 IN IP4 198.18.0.100\r\n"));
    }

    const REGISTER_200: &str = "SIP/2.0 200 OK\r
Via: SIP/2.0/UDP 198.18.0.10:5060;rport=1024;received=198.19.0.100;branch=z9hG4bKr\r
From: <sip:alice@example.com>;tag=r1\r
To: <sip:alice@example.com>;tag=k1\r
Call-ID: reg1@198.18.0.10\r
CSeq: 2 REGISTER\r
Contact: <sip:alice@198.19.0.100:1024;alias=198.19.0.100~1024~1>;expires=3600;received=\"sip:198.19.0.100:1024\"\r
Server: kamailio (5.6.3 (x86_64/linux))\r
Content-Length: 0\r
\r
";

    #[test]
    fn register_200_gives_back_the_clients_address() {
        // snat: the backend saw the balancer's SNAT address; the client is behind
        // its own NAT (sent-by 5060, source port 40000).
        let client = SocketAddrV4::new(*ALICE.ip(), 40000);
        let r = rules(&[(SNAT, client, Places::ALL)]);
        let (outcome, out) = run(REGISTER_200.as_bytes(), &r, None).unwrap();
        let out = text(&out);
        assert!(matches!(outcome, Outcome::Rewritten { .. }));
        assert!(out.contains("Via: SIP/2.0/UDP 198.18.0.10:5060;rport=40000;received=198.18.0.10;branch=z9hG4bKr\r\n"), "{out}");
        assert!(out.contains("Contact: <sip:alice@198.18.0.10:40000;alias=198.18.0.10~40000~1>;expires=3600;received=\"sip:198.18.0.10:40000\"\r\n"), "{out}");
        assert!(!out.contains("198.19."));
        // The scanner still reads the binding's lifetime.
        let m = SipMessage::parse(out.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(m.contact_expires(), Some(3600));
    }

    #[test]
    fn hold_reinvite_keeps_the_hold_address() {
        let input = msg("INVITE sip:bob@198.18.0.20:5060 SIP/2.0\r
Via: SIP/2.0/UDP 198.19.1.1:5060;branch=z9hG4bK2\r
From: <sip:alice@example.com>;tag=as1\r
To: <sip:bob@example.com>;tag=bt1\r
Call-ID: c1@198.18.0.10\r
CSeq: 2 INVITE\r
Contact: <sip:198.19.1.1>\r
Content-Type: application/sdp\r
Content-Length: N\r
\r
v=0\r
o=rtpengine 1712 2 IN IP4 198.19.1.1\r
s=-\r
c=IN IP4 0.0.0.0\r
t=0 0\r
m=audio 30000 RTP/AVP 0\r
a=sendonly\r
");
        let r = rules(&[(BACKEND, VIP, Places::ALL)]);
        let mut table = Table::new(*VIP.ip());
        let (_, out) = run(&input, &r, Some(&mut table)).unwrap();
        let out = text(&out);
        assert!(out.contains("c=IN IP4 0.0.0.0\r\n"), "{out}");
        assert!(out.contains("o=rtpengine 1712 2 IN IP4 198.18.0.100\r\n"));
        assert!(out.contains("m=audio 20000 RTP/AVP 0\r\na=sendonly\r\n"));
        assert!(out.contains("Contact: <sip:198.18.0.100>\r\n"));
        assert!(out.contains("Via: SIP/2.0/UDP 198.18.0.100:5060;branch=z9hG4bK2\r\n"));
        assert_eq!(
            table.flows,
            [(0, Ipv4Addr::UNSPECIFIED, 30000, 30001, true)]
        );
    }

    #[test]
    fn several_streams_with_a_rejected_one() {
        let input = msg("SIP/2.0 200 OK\r
Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKa\r
From: <sip:alice@example.com>;tag=as1\r
To: <sip:bob@example.com>;tag=bt1\r
Call-ID: c2@198.18.0.10\r
CSeq: 1 INVITE\r
Contact: <sip:bob@198.19.1.1>\r
Content-Length: N\r
\r
v=0\r
o=- 1 1 IN IP4 198.19.1.1\r
s=-\r
c=IN IP4 198.19.1.1\r
t=0 0\r
m=audio 30000 RTP/AVP 0\r
a=rtcp-mux\r
m=video 0 RTP/AVP 99\r
c=IN IP4 198.19.1.1\r
m=video 30010/2 RTP/AVP 99\r
c=IN IP4 198.19.1.2\r
a=rtcp:30013 IN IP4 198.19.1.2\r
a=candidate:1 1 UDP 2130706431 198.19.1.2 30010 typ host\r
a=candidate:1 2 UDP 2130706430 198.19.1.2 30011 typ host\r
a=ice-ufrag:8hhY\r
");
        let r = rules(&[(BACKEND, VIP, Places::ALL)]);
        let mut table = Table::new(*VIP.ip());
        let (_, out) = run(&input, &r, Some(&mut table)).unwrap();
        let out = text(&out);
        let body = out.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            "v=0\r
o=- 1 1 IN IP4 198.18.0.100\r
s=-\r
c=IN IP4 198.18.0.100\r
t=0 0\r
m=audio 20000 RTP/AVP 0\r
a=rtcp-mux\r
m=video 0 RTP/AVP 99\r
c=IN IP4 198.18.0.100\r
m=video 20002/2 RTP/AVP 99\r
c=IN IP4 198.18.0.100\r
a=rtcp:20003 IN IP4 198.18.0.100\r
a=ice-ufrag:8hhY\r
"
        );
        assert_eq!(
            table.flows,
            [
                (0, *BACKEND.ip(), 30000, 30000, false),
                (2, Ipv4Addr::new(198, 19, 1, 2), 30010, 30013, false)
            ]
        );
    }

    #[test]
    fn compact_and_folded_headers() {
        let input = msg("MESSAGE sip:bob@198.19.1.1 SIP/2.0\r
v: SIP/2.0/UDP 198.19.1.1\r
 ;branch=z9hG4bK3 ;rport\r
v  : SIP/2.0/TCP 198.19.1.1:5061, SIP/2.0/TLS 198.19.1.1;branch=z9hG4bK0\r
f: <sip:alice@198.19.1.1>;tag=1\r
t: sip:bob@198.19.1.1\r
i: m1\r
CSeq: 3 MESSAGE\r
m: \"Bob, B\" <sip:bob@198.19.1.1:5060>\r
\t;expires=60, sip:bob@198.19.1.1;q=0.5\r
route: <sip:198.19.1.1;lr>\r
Path: <sip:198.19.1.1;lr>\r
Service-Route: <sip:198.19.1.1;lr>\r
l: N\r
\r
hello");
        let tls = SocketAddrV4::new(*BACKEND.ip(), 5061);
        let vip_tls = SocketAddrV4::new(*VIP.ip(), 5061);
        let r = rules(&[(BACKEND, VIP, Places::ALL), (tls, vip_tls, Places::ALL)]);
        let (_, out) = run(&input, &r, None).unwrap();
        let out = text(&out);
        assert_eq!(
            out,
            "MESSAGE sip:bob@198.18.0.100 SIP/2.0\r
v: SIP/2.0/UDP 198.18.0.100\r
 ;branch=z9hG4bK3 ;rport\r
v  : SIP/2.0/TCP 198.18.0.100:5061, SIP/2.0/TLS 198.18.0.100;branch=z9hG4bK0\r
f: <sip:alice@198.18.0.100>;tag=1\r
t: sip:bob@198.18.0.100\r
i: m1\r
CSeq: 3 MESSAGE\r
m: \"Bob, B\" <sip:bob@198.18.0.100:5060>\r
\t;expires=60, sip:bob@198.18.0.100;q=0.5\r
route: <sip:198.18.0.100;lr>\r
Path: <sip:198.18.0.100;lr>\r
Service-Route: <sip:198.18.0.100;lr>\r
l: 5\r
\r
hello"
        );
    }

    #[test]
    fn toward_a_backend_in_snat() {
        let input = msg("INVITE sip:bob@example.com SIP/2.0\r
Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK776asdhds;rport\r
Max-Forwards: 70\r
Contact: <sip:alice@198.18.0.10:5060>\r
To: <sip:bob@example.com>\r
From: \"Alice\" <sip:alice@198.18.0.10>;tag=9fxced76sl\r
Call-ID: 3848276298220188511@198.18.0.10\r
CSeq: 1 INVITE\r
Content-Type: application/sdp\r
Content-Length: N\r
\r
v=0\r
o=alice 2890844526 2890844526 IN IP4 198.18.0.10\r
s=-\r
c=IN IP4 198.18.0.10\r
t=0 0\r
m=audio 49170 RTP/AVP 0 8 101\r
a=sendrecv\r
");
        let r = rules(&[(ALICE, SNAT, Places::TOP_VIA | Places::CONTACT | Places::SDP)]);
        let mut table = Table::new(*SNAT.ip());
        let (_, out) = run(&input, &r, Some(&mut table)).unwrap();
        let out = text(&out);
        assert!(
            out.contains("Via: SIP/2.0/UDP 198.19.0.100:1024;branch=z9hG4bK776asdhds;rport\r\n"),
            "{out}"
        );
        assert!(out.contains("Contact: <sip:alice@198.19.0.100:1024>\r\n"));
        // From is not a place of this rule, nor is the Call-ID ever.
        assert!(out.contains("From: \"Alice\" <sip:alice@198.18.0.10>;tag=9fxced76sl\r\n"));
        assert!(out.contains("Call-ID: 3848276298220188511@198.18.0.10\r\n"));
        assert!(out.contains("o=alice 2890844526 2890844526 IN IP4 198.19.0.100\r\n"));
        assert!(out.contains("c=IN IP4 198.19.0.100\r\nt=0 0\r\nm=audio 20000 RTP/AVP"));
    }

    #[test]
    fn snat_responses_restore_via_and_rport() {
        // The Via the balancer wrote toward the backend comes back with rport filled.
        let input = msg("SIP/2.0 180 Ringing\r
Via: SIP/2.0/UDP 198.19.0.100:1024;branch=z9hG4bK776asdhds;rport=1024\r
To: <sip:bob@example.com>;tag=b\r
From: <sip:alice@198.18.0.10>;tag=9fxced76sl\r
Call-ID: x@198.18.0.10\r
CSeq: 1 INVITE\r
Content-Length: 0\r
\r
");
        let r = rules(&[(SNAT, ALICE, Places::ALL)]);
        let (_, out) = run(&input, &r, None).unwrap();
        assert!(text(&out)
            .contains("Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK776asdhds;rport=5060\r\n"));
    }

    #[test]
    fn nothing_to_do_is_unchanged() {
        let input = msg(KAMAILIO_INVITE);
        let other = SocketAddrV4::new(Ipv4Addr::new(198, 19, 9, 9), 5060);
        let r = rules(&[(other, VIP, Places::ALL)]);
        let (outcome, _) = run(&input, &r, None).unwrap();
        assert_eq!(outcome, Outcome::Unchanged);
        // The backend's address with another port is another transport address, and
        // a rule without places matches nowhere.
        let r = rules(&[
            (SocketAddrV4::new(*BACKEND.ip(), 5070), VIP, Places::HEADERS),
            (BACKEND, VIP, Places::NONE),
        ]);
        assert_eq!(run(&input, &r, None).unwrap().0, Outcome::Unchanged);
        // A rule onto itself changes nothing either.
        let r = rules(&[(BACKEND, BACKEND, Places::ALL)]);
        assert_eq!(run(&input, &r, None).unwrap().0, Outcome::Unchanged);
    }

    #[test]
    fn a_lying_content_length_and_bytes_after_the_body() {
        // Content-Length shorter than what follows: the rest is not the message.
        let mut input = msg(KAMAILIO_INVITE);
        input.extend_from_slice(b"c=IN IP4 198.19.1.1\r\n");
        let r = rules(&[(BACKEND, VIP, Places::ALL)]);
        let mut table = Table::new(*VIP.ip());
        let (_, out) = run(&input, &r, Some(&mut table)).unwrap();
        assert!(!text(&out).contains("198.19."));
        // Longer than the datagram: the scanner refuses it before the rewriter.
        let exact = msg(KAMAILIO_INVITE);
        let m = SipMessage::parse(&exact, &Limits::default()).unwrap();
        let cl = m.content_length().unwrap();
        let long = text(&exact).replace(
            &format!("Content-Length: {cl}"),
            &format!("Content-Length: {}", cl + 1),
        );
        assert!(SipMessage::parse(long.as_bytes(), &Limits::default()).is_err());
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        let r = rules(&[(BACKEND, VIP, Places::ALL)]);
        let with_body = |body: &str| {
            let head = KAMAILIO_INVITE.split_once("\r\n\r\n").unwrap().0;
            msg(&format!("{head}\r\n\r\n{body}"))
        };
        let sdp =
            |media: &str| format!("v=0\r\no=- 1 1 IN IP4 198.19.1.1\r\ns=-\r\nt=0 0\r\n{media}");
        let cases: Vec<(Vec<u8>, RewriteError)> = vec![
            (
                with_body(&sdp("m=audio 30000/40000 RTP/AVP 0\r\nc=IN IP4 198.19.1.1\r\n")),
                RewriteError::Sdp(SdpError::BadCount),
            ),
            (
                with_body(&sdp("m=audio 30000 RTP/AVP 0\r\nc=IN IP6 2001:2::1\r\n")),
                RewriteError::Ipv6Media,
            ),
            (
                with_body(&sdp("m=audio 30000 RTP/AVP 0\r\nc=IN IP4 233.252.0.1/16\r\n")),
                RewriteError::UnsupportedMediaAddress,
            ),
            (
                with_body(&sdp("m=audio 30000 RTP/AVP 0\r\n")),
                RewriteError::Sdp(SdpError::MissingConnection),
            ),
            (
                with_body("--boundary\r\nContent-Type: application/sdp\r\n\r\nc=IN IP4 198.19.1.1\r\n--boundary--\r\n"),
                RewriteError::UnsupportedBody,
            ),
            (
                msg(&KAMAILIO_INVITE.replace("Record-Route: <sip:198.19.1.1;lr", "Record-Route: <sip:198.19.1.1;lr;")),
                RewriteError::MalformedAddress,
            ),
            (
                msg(&KAMAILIO_INVITE.replace("Via: SIP/2.0/UDP 198.18.0.10:5060", "Via: SIP/2.0/UDP 198.19.1.1 198.18.0.10:5060")),
                RewriteError::MalformedVia,
            ),
        ];
        for (input, want) in cases {
            let mut table = Table::new(*VIP.ip());
            assert_eq!(
                run(&input, &r, Some(&mut table)).unwrap_err(),
                want,
                "{}",
                text(&input)
            );
        }

        let input = msg(KAMAILIO_INVITE);
        let mut table = Table::new(*VIP.ip());
        table.fail = Some(MediaError::Exhausted);
        assert_eq!(
            run(&input, &r, Some(&mut table)).unwrap_err(),
            RewriteError::Media(MediaError::Exhausted)
        );
        let no_rtcp = msg(&KAMAILIO_INVITE.replace("a=rtcp:30001\r\n", ""));
        let mut table = Table::new(*VIP.ip());
        table.rtcp_gap = 3;
        assert_eq!(
            run(&no_rtcp, &r, Some(&mut table)).unwrap_err(),
            RewriteError::RtcpNotAdjacent
        );

        // A message from another buffer.
        let other = msg(KAMAILIO_INVITE);
        let m = SipMessage::parse(&other, &Limits::default()).unwrap();
        let mut edits = Edits::new();
        assert_eq!(
            rewrite(&input, &m, &r, None, &mut edits).unwrap_err(),
            RewriteError::ForeignMessage
        );
    }

    #[test]
    fn growth_past_the_largest_datagram_is_refused() {
        // 1900 Record-Route values of the backend: each grows by two bytes.
        let rr = "<sip:198.19.1.1;lr>,".repeat(1900);
        let body = "x".repeat(65_507 - 1000 - rr.len());
        let input = msg(&format!(
            "MESSAGE sip:bob@198.18.0.20 SIP/2.0\r
Via: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK5\r
Record-Route: {rr}<sip:198.19.1.1;lr>\r
From: <sip:alice@example.com>;tag=1\r
To: <sip:bob@example.com>\r
Call-ID: big\r
CSeq: 1 MESSAGE\r
Content-Length: N\r
\r
{body}"
        ));
        let r = rules(&[(
            BACKEND,
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 100), 5060),
            Places::ALL,
        )]);
        let m = SipMessage::parse(
            &input,
            &Limits {
                max_line_len: 65535,
                ..Limits::default()
            },
        )
        .unwrap();
        let mut edits = Edits::new();
        // Far more values than edits: refused before anything is written.
        assert_eq!(
            rewrite(&input, &m, &r, None, &mut edits).unwrap_err(),
            RewriteError::Edit(EditError::TooManyEdits)
        );
        // Within the edit budget but past 65507 bytes.
        let rr = "<sip:198.19.1.1;lr>,".repeat(40);
        let head = format!(
            "MESSAGE sip:bob@198.18.0.20 SIP/2.0\r
Via: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK5\r
Record-Route: {rr}<sip:198.19.1.1;lr>\r
From: <sip:alice@example.com>;tag=1\r
To: <sip:bob@example.com>\r
Call-ID: big\r
CSeq: 1 MESSAGE\r
Content-Length: N\r
\r
"
        );
        let body = "x".repeat(65_507 - head.len() - 40);
        let input = msg(&format!("{head}{body}"));
        assert!(input.len() <= 65_507);
        let m = SipMessage::parse(
            &input,
            &Limits {
                max_line_len: 65535,
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(
            rewrite(&input, &m, &r, None, &mut edits).unwrap_err(),
            RewriteError::Edit(EditError::TooLarge)
        );
    }

    #[test]
    fn rules_prefer_the_port_the_context_names() {
        let a = SocketAddrV4::new(*SNAT.ip(), 1024);
        let b = SocketAddrV4::new(*SNAT.ip(), 1026);
        let to_a = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 11), 5062);
        let to_b = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 12), 5064);
        let r = rules(&[(a, to_a, Places::ALL), (b, to_b, Places::ALL)]);
        assert_eq!(r.by_ip(Places::TOP_VIA, *SNAT.ip(), Some(1026)), Some(to_b));
        assert_eq!(r.by_ip(Places::TOP_VIA, *SNAT.ip(), Some(9)), Some(to_a));
        assert_eq!(
            r.by_transport(Places::CONTACT, *SNAT.ip(), 1026),
            Some(to_b)
        );
        assert_eq!(r.needles(Places::ALL).count(), 1);
        let mut full = rules(&[(a, to_a, Places::ALL); MAX_RULES]);
        assert_eq!(
            full.push(AddrRule {
                from: a,
                to: to_a,
                places: Places::ALL
            }),
            Err(RewriteError::TooManyRules)
        );
        full.clear();
        assert_eq!(full.iter().count(), 0);
    }

    #[test]
    fn error_indices_are_dense_and_names_unique() {
        let mut all = vec![
            RewriteError::TooManyRules,
            RewriteError::TooManyFields,
            RewriteError::MalformedVia,
            RewriteError::MalformedAddress,
            RewriteError::UnsupportedBody,
            RewriteError::Ipv6Media,
            RewriteError::UnsupportedMediaAddress,
            RewriteError::MediaAddressConflict,
            RewriteError::RtcpNotAdjacent,
            RewriteError::ContentLengthNotFound,
            RewriteError::ForeignMessage,
        ];
        all.extend(
            [
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
            ]
            .map(RewriteError::Sdp),
        );
        all.extend(
            [
                EditError::TooManyEdits,
                EditError::TextTooLong,
                EditError::Overlap,
                EditError::OutOfBounds,
                EditError::TooLarge,
            ]
            .map(RewriteError::Edit),
        );
        all.extend(
            [
                MediaError::Exhausted,
                MediaError::TableFull,
                MediaError::Refused,
            ]
            .map(RewriteError::Media),
        );
        assert_eq!(all.len(), RewriteError::COUNT);
        let mut idx: Vec<_> = all.iter().map(|e| e.index()).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..RewriteError::COUNT).collect::<Vec<_>>());
        let mut names: Vec<_> = all.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RewriteError::COUNT);
    }
}
