//! The rewriter: finds, in one SIP message and its SDP body, the transport addresses
//! the [`Rules`] name and the media streams a [`MediaMapper`] relays, and records
//! their replacements in an [`Edits`] list (applied afterwards by
//! [`Edits::apply`]). See the module documentation of [`alg`](super) for what is
//! rewritten where.
//!
//! Hit-centric: the header section is searched for each rule's address text; an
//! occurrence is judged from its surroundings only (the field it lies in, the bytes
//! before it: `sip:` or `@` for a URI host, a Via's transport for sent-by, `name=` for
//! a parameter), so a message costs one SIMD pass per rule address plus a few dozen
//! bytes per hit, whatever the rest of it holds. An occurrence in no such place (a
//! display name, a user part, a Call-ID) is left alone. Parsing never panics; a port
//! next to a rule's address that is not a port is an error, never guessed.

use super::edit::{EditError, Edits, Text};
use super::lex::{self, at, eq_caseless};
use super::needle::Needle;
use super::sdp::{
    Address, Connection, Direction, MediaStream, Origin, Sdp, SdpError, Span, MAX_MEDIA,
};
use super::token::{self, AddrSet, TokenKey, MAX_RANGES};
use crate::sip::SipMessage;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::{BitOr, Range};

/// Address rules per message: a backend and a SNAT binding toward a client, a
/// client toward a backend, with room to spare.
pub const MAX_RULES: usize = 8;

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
    /// `from`'s address as text and a finder for it.
    needle: Needle,
    /// `to` as text: the address, and `address:port`.
    to_ip: Text,
    to_ip_port: Text,
    /// Whether an earlier rule has the same address (its search finds this one's).
    repeat: bool,
}

/// Which way [`FlowTokens`] work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWay {
    /// Toward a client: a transport address on one of the set's addresses, any port,
    /// that no [`AddrRule`] takes becomes the VIP with `;slbf=<token>`.
    Hide,
    /// Toward a backend: the VIP with `;slbf=<token>` naming one of the set's
    /// addresses becomes that address and port again, the parameter removed.
    Restore,
}

/// Other flows' SNAT addresses hidden behind the VIP ([`token`]): in
/// URIs (Request-URI, Contact, Route set) `SNAT:port` ⇄ `VIP:sipport;slbf=<token>`;
/// in a Via value the sent-by likewise, and a `received=` on the set's address ⇄ the
/// VIP (a Via whose sent-by is no flow carries `(received, 0)` in its token).
/// `maddr`, `alias` and unquoted `received` parameters of URIs are not covered.
#[derive(Debug, Clone, Copy)]
pub struct FlowTokens {
    pub way: TokenWay,
    /// The only addresses a token may name: the farm's SNAT addresses.
    pub snat: AddrSet,
    /// The VIP's SIP transport address, written in their place.
    pub vip: SocketAddrV4,
    pub key: TokenKey,
    /// Header places only; see [`FlowTokens`] for what is covered in each.
    pub places: Places,
}

#[derive(Debug, Clone, Copy)]
struct TokenRule {
    t: FlowTokens,
    /// What finds the addresses the tokens own: the set's ranges' common text
    /// prefixes (Hide), the VIP (Restore).
    needles: [Option<Needle>; MAX_RANGES],
    vip_ip: Text,
    vip_ip_port: Text,
}

impl TokenRule {
    /// Whether hits of `ip` are the tokens' to judge (before any [`AddrRule`]'s).
    fn owns(&self, ip: Ipv4Addr) -> bool {
        match self.t.way {
            TokenWay::Hide => self.t.snat.contains(ip),
            TokenWay::Restore => ip == *self.t.vip.ip(),
        }
    }
}

/// The rules for one message, in a fixed array (see [`AddrRule`]). Reuse one per
/// worker: [`clear`](Self::clear), then [`push`](Self::push) the message's rules.
#[derive(Debug, Clone)]
pub struct Rules {
    items: [Option<Rule>; MAX_RULES],
    len: usize,
    places: Places,
    tokens: Option<TokenRule>,
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
            tokens: None,
        }
    }

    /// Adds other flows' tokens ([`FlowTokens`]), replacing any set before. Their
    /// places are limited to [`Places::HEADERS`].
    pub fn set_tokens(&mut self, t: FlowTokens) -> Result<(), RewriteError> {
        let text = |ip: u32| {
            let mut x = Text::new();
            // An IPv4 text fits a `Text`.
            let _ = x.push_ipv4(Ipv4Addr::from(ip));
            x
        };
        // A range's addresses all start with the text its ends share. One whose ends
        // share none (its first octet goes from one digit to two) cannot be searched
        // for, and is left out.
        // A prefix that another one starts with finds nothing new.
        let mut prefixes = [Text::new(); MAX_RANGES];
        let mut n = 0;
        let mut snat = t.snat;
        snat.retain(|(lo, hi)| {
            let first = text(lo);
            let p = if lo == hi {
                first
            } else {
                let last = text(hi);
                let k = first
                    .as_bytes()
                    .iter()
                    .zip(last.as_bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                Text::try_from(first.as_bytes().get(..k).unwrap_or_default()).unwrap_or_default()
            };
            if p.is_empty() {
                return false;
            }
            let found = |q: &Text| p.as_bytes().starts_with(q.as_bytes());
            if !prefixes.iter().take(n).any(found) {
                // Drop those this one finds.
                let mut kept = 0;
                for i in 0..n {
                    if !prefixes[i].as_bytes().starts_with(p.as_bytes()) {
                        prefixes[kept] = prefixes[i];
                        kept += 1;
                    }
                }
                prefixes[kept] = p;
                n = kept + 1;
            }
            true
        });
        let t = FlowTokens {
            snat,
            places: Places(t.places.0 & Places::HEADERS.0),
            ..t
        };
        let vip_ip = text(u32::from(*t.vip.ip()));
        let mut needles = [None; MAX_RANGES];
        match t.way {
            TokenWay::Hide => {
                for (slot, p) in needles.iter_mut().zip(prefixes.iter().take(n)) {
                    *slot = Some(Needle::new(*p));
                }
            }
            TokenWay::Restore => needles[0] = Some(Needle::new(vip_ip)),
        }
        let mut vip_ip_port = vip_ip;
        vip_ip_port.push(b":")?;
        vip_ip_port.push_decimal(u32::from(t.vip.port()))?;
        self.tokens = Some(TokenRule {
            t,
            needles,
            vip_ip,
            vip_ip_port,
        });
        self.places = self.places | t.places;
        Ok(())
    }

    /// Adds a rule; [`RewriteError::TooManyRules`] past [`MAX_RULES`]. Rules are tried
    /// in the order they were added.
    pub fn push(&mut self, rule: AddrRule) -> Result<(), RewriteError> {
        let repeat = self.iter().any(|r| r.from.ip() == rule.from.ip());
        let slot = self
            .items
            .get_mut(self.len)
            .ok_or(RewriteError::TooManyRules)?;
        let mut text = Text::new();
        text.push_ipv4(*rule.from.ip())?;
        let mut to_ip = Text::new();
        to_ip.push_ipv4(*rule.to.ip())?;
        let mut to_ip_port = to_ip;
        to_ip_port.push(b":")?;
        to_ip_port.push_decimal(u32::from(rule.to.port()))?;
        *slot = Some(Rule {
            rule,
            needle: Needle::new(text),
            to_ip,
            to_ip_port,
            repeat,
        });
        self.len += 1;
        self.places = self.places | rule.places;
        Ok(())
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.places = Places::NONE;
        self.tokens = None;
    }

    pub fn iter(&self) -> impl Iterator<Item = &AddrRule> + '_ {
        self.rules().map(|r| &r.rule)
    }

    /// Whether `hay` holds any rule's `from` address as text: bytes the rewriter cannot
    /// read as a whole message (part of one on a TCP stream) may then need a rewrite.
    pub fn found_in(&self, hay: &[u8]) -> bool {
        self.needles(Places::ALL)
            .any(|(n, _)| n.find(hay, 0).is_some())
    }

    fn rules(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.items.iter().take(self.len).flatten()
    }

    /// The texts to search for where any rule applies in `places`, each address
    /// found once: a rule's address (`Some`), or a prefix of the addresses the
    /// tokens own (`None`: the address is read at the hit), which the rules' searches
    /// then leave to it.
    fn needles(&self, places: Places) -> impl Iterator<Item = (&Needle, Option<Ipv4Addr>)> + '_ {
        let tokens = self
            .tokens
            .as_ref()
            .filter(|t| t.t.places.intersects(places));
        self.rules()
            .filter(move |r| {
                !r.repeat
                    && self.any_shares(r, places)
                    && !tokens.is_some_and(|t| t.owns(*r.rule.from.ip()))
            })
            .map(|r| (&r.needle, Some(*r.rule.from.ip())))
            .chain(
                tokens
                    .into_iter()
                    .flat_map(|t| t.needles.iter().flatten())
                    .map(|n| (n, None)),
            )
    }

    /// The tokens, where they apply in `place`.
    fn tokens_in(&self, place: Places) -> Option<&TokenRule> {
        self.tokens.as_ref().filter(|t| t.t.places.contains(place))
    }

    /// Whether a rule with `r`'s address applies somewhere in `places`.
    fn any_shares(&self, r: &Rule, places: Places) -> bool {
        self.iter()
            .any(|o| o.from.ip() == r.rule.from.ip() && o.places.intersects(places))
    }

    /// The rule for the transport address `ip:port` in `place`.
    fn by_transport(&self, place: Places, ip: Ipv4Addr, port: u16) -> Option<&Rule> {
        self.rules().find(|r| {
            let a = &r.rule;
            a.places.contains(place) && *a.from.ip() == ip && a.from.port() == port
        })
    }

    /// The rule for the address `ip` alone in `place`, preferring one whose port is
    /// `hint`.
    fn by_ip(&self, place: Places, ip: Ipv4Addr, hint: Option<u16>) -> Option<&Rule> {
        let mut first = None;
        for r in self
            .rules()
            .filter(|r| r.rule.places.contains(place) && *r.rule.from.ip() == ip)
        {
            if Some(r.rule.from.port()) == hint {
                return Some(r);
            }
            first.get_or_insert(r);
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
    /// Every reason, in `index` order.
    pub const ALL: [MediaError; Self::COUNT] = [Self::Exhausted, Self::TableFull, Self::Refused];

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
    /// The `m=` section as written (index, port, port count, ...; its texts are
    /// spans of the body).
    pub stream: MediaStream,
    /// `audio`, `video`, ...
    pub media: &'a [u8],
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
    /// Never returned: counts the flow tokens ([`Edits::foreign_tokens`]) left as
    /// they were in messages that were forwarded.
    #[error("a flow token (slbf=) names none of the farm's SNAT addresses (left as it was)")]
    ForeignToken,
}

impl RewriteError {
    /// Reasons of the rewriter's own, after the nested ones.
    const OWN: usize = 11;

    /// The number of reasons, nested ones included: counters are
    /// `[Counter; RewriteError::COUNT]`.
    pub const COUNT: usize = SdpError::COUNT + EditError::COUNT + MediaError::COUNT + Self::OWN;

    /// Every reason, in `index` order (for counter labels).
    pub fn all() -> impl Iterator<Item = RewriteError> {
        let own = [
            Self::TooManyRules,
            Self::MalformedVia,
            Self::MalformedAddress,
            Self::UnsupportedBody,
            Self::Ipv6Media,
            Self::UnsupportedMediaAddress,
            Self::MediaAddressConflict,
            Self::RtcpNotAdjacent,
            Self::ContentLengthNotFound,
            Self::ForeignMessage,
            Self::ForeignToken,
        ];
        SdpError::ALL
            .into_iter()
            .map(Self::Sdp)
            .chain(EditError::ALL.into_iter().map(Self::Edit))
            .chain(MediaError::ALL.into_iter().map(Self::Media))
            .chain(own)
    }

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
            Self::MalformedVia => O + 1,
            Self::MalformedAddress => O + 2,
            Self::UnsupportedBody => O + 3,
            Self::Ipv6Media => O + 4,
            Self::UnsupportedMediaAddress => O + 5,
            Self::MediaAddressConflict => O + 6,
            Self::RtcpNotAdjacent => O + 7,
            Self::ContentLengthNotFound => O + 8,
            Self::ForeignMessage => O + 9,
            Self::ForeignToken => O + 10,
        }
    }

    /// A snake_case name, for counter labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sdp(e) => e.name(),
            Self::Edit(e) => e.name(),
            Self::Media(e) => e.name(),
            Self::TooManyRules => "too_many_rules",
            Self::MalformedVia => "malformed_via",
            Self::MalformedAddress => "malformed_address",
            Self::UnsupportedBody => "unsupported_body",
            Self::Ipv6Media => "ipv6_media",
            Self::UnsupportedMediaAddress => "unsupported_media_address",
            Self::MediaAddressConflict => "media_address_conflict",
            Self::RtcpNotAdjacent => "rtcp_not_adjacent",
            Self::ContentLengthNotFound => "content_length_not_found",
            Self::ForeignMessage => "foreign_message",
            Self::ForeignToken => "foreign_token",
        }
    }
}

#[cfg(test)]
mod reasons {
    use super::*;

    #[test]
    fn every_reason_once_in_index_order_with_a_unique_name() {
        let all: Vec<RewriteError> = RewriteError::all().collect();
        assert_eq!(all.len(), RewriteError::COUNT);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
        }
        let mut names: Vec<&str> = all.iter().map(|e| e.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RewriteError::COUNT);
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
    // Where the top Via's sent-by lies tells which Via value is the top one.
    let top_via = msg.via().map_or(usize::MAX, |v| {
        (v.host.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize)
    });
    let mut w = Rewriter {
        buf,
        head,
        rules,
        edits,
        request: msg.is_request(),
        top_via,
        last_ip: None,
    };
    for (needle, ip) in rules.needles(Places::HEADERS) {
        let len = needle.text().len();
        let mut from = 0;
        while let Some(hit) = needle.find(head, from) {
            from = hit + len;
            match ip {
                Some(ip) if alone(head, hit, len) => w.hit(hit, hit + len, ip)?,
                Some(_) => {}
                // A prefix: the tokens' if the whole address at the hit is theirs.
                None => {
                    if let Some((ip, e)) = lex::ipv4_at(head, hit) {
                        if alone(head, hit, e - hit)
                            && rules.tokens.as_ref().is_some_and(|t| t.owns(ip))
                        {
                            w.hit(hit, e, ip)?;
                        }
                    }
                }
            }
        }
    }

    if !body.is_empty() {
        let is_sdp = body.starts_with(b"v=");
        // A relayed SDP is read whole anyway; otherwise only a hit makes work.
        let hit = || {
            rules.needles(Places::SDP).any(|(needle, _)| {
                let len = needle.text().len();
                let mut from = 0;
                while let Some(at) = needle.find(body, from) {
                    if alone(body, at, len) {
                        return true;
                    }
                    from = at + len;
                }
                false
            })
        };
        if is_sdp && (media.is_some() || hit()) {
            w.sdp(body_offset, body, media)?;
        } else if hit() {
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
    !before.is_some_and(|c| lex::is(c, lex::HOST)) && !after.is_some_and(|c| lex::is(c, lex::HOST))
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

/// The end of the field holding `pos`: the CR of its last (folded) line.
fn field_end(head: &[u8], pos: usize) -> usize {
    let mut i = pos;
    loop {
        let Some(nl) = lex::find_byte(head, i, b'\n') else {
            return head.len();
        };
        if matches!(at(head, nl + 1), Some(b' ' | b'\t')) {
            i = nl + 1;
            continue;
        }
        return if nl > pos && at(head, nl - 1) == Some(b'\r') {
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
                    // The digits, after white space that may fold the line.
                    let v = lex::skip_to(head, start + colon + 1, head.len(), lex::WS);
                    let d = lex::skip_to(head, v, head.len(), lex::DIGIT);
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

/// The header fields the rules cover: Via (`None` place: top or other is told by
/// the value) or the place of an address field. Names compare without case; compact
/// forms as [`HeaderName`](crate::sip::HeaderName) knows them.
fn field_kind(name: &[u8]) -> Option<Option<Places>> {
    let is = |long: &[u8]| eq_caseless(name, long);
    let place = match name.len() {
        1 => match name.first().map(|c| c | 0x20) {
            Some(b'v') => return Some(None),
            Some(b'm') => Places::CONTACT,
            Some(b'f' | b't') => Places::FROM_TO,
            _ => return None,
        },
        2 if is(b"to") => Places::FROM_TO,
        3 if is(b"via") => return Some(None),
        4 if is(b"from") => Places::FROM_TO,
        4 if is(b"path") => Places::ROUTE,
        5 if is(b"route") => Places::ROUTE,
        7 if is(b"contact") => Places::CONTACT,
        12 if is(b"record-route") => Places::ROUTE,
        13 if is(b"service-route") => Places::ROUTE,
        _ => return None,
    };
    Some(Some(place))
}

/// The index of the last byte before `i` (at or after `floor`) that is not white
/// space, if any.
fn back_ws(s: &[u8], floor: usize, i: usize) -> Option<usize> {
    let mut j = i;
    while j > floor {
        j -= 1;
        if !matches!(at(s, j), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            return Some(j);
        }
    }
    None
}

/// The name of the parameter whose value starts at `value` (`;name = value`): `None`
/// unless `=` and then a token preceded by `;` come before it.
fn param_name(s: &[u8], floor: usize, value: usize) -> Option<&[u8]> {
    let eq = back_ws(s, floor, value)?;
    if at(s, eq)? != b'=' {
        return None;
    }
    let end = back_ws(s, floor, eq)? + 1;
    let mut start = end;
    while start > floor && at(s, start - 1).is_some_and(|c| lex::is(c, lex::TOKEN)) {
        start -= 1;
    }
    let semi = back_ws(s, floor, start)?;
    (start < end && at(s, semi)? == b';').then(|| s.get(start..end).unwrap_or_default())
}

/// `:port` at `i` (white space around the colon allowed when `lws`): the digits'
/// span and value, or `None` if no colon follows; an error if the port is malformed.
fn port_at(
    s: &[u8],
    i: usize,
    end: usize,
    lws: bool,
    bad: RewriteError,
) -> Result<Option<(Range<usize>, u16)>, RewriteError> {
    let c = if lws {
        lex::skip_to(s, i, end, lex::WS)
    } else {
        i
    };
    if c >= end || at(s, c) != Some(b':') {
        return Ok(None);
    }
    let p = if lws {
        lex::skip_to(s, c + 1, end, lex::WS)
    } else {
        c + 1
    };
    let pe = lex::skip_to(s, p, end, lex::DIGIT);
    let port = lex::parse_u16(s.get(p..pe).unwrap_or_default()).ok_or(bad)?;
    Ok(Some((p..pe, port)))
}

/// Whether the URI parameters from `i` (a URI's host or port ends there) hold
/// `transport=tls`, before `end`; they end at the first byte that is not a parameter
/// character, `;` or `=` (`>`, `,`, `?`, white space).
fn transport_tls(s: &[u8], i: usize, end: usize) -> bool {
    const NAME: &[u8] = b"transport=";
    let mut semi = i;
    while semi < end && at(s, semi) == Some(b';') {
        let name_end = lex::skip_to(s, semi + 1, end, lex::URI_PARAM);
        let has_value = name_end < end && at(s, name_end) == Some(b'=');
        let value_end = if has_value {
            lex::skip_to(s, name_end + 1, end, lex::URI_PARAM)
        } else {
            name_end
        };
        if has_value
            && s.get(semi + 1..=name_end)
                .is_some_and(|n| eq_caseless(n, NAME))
        {
            return eq_caseless(s.get(name_end + 1..value_end).unwrap_or_default(), b"tls");
        }
        semi = value_end;
    }
    false
}

/// The URI parameter `name` (with a value) among those from `i` (a URI's host or
/// port ends there) before `end`: the spans of `;name=value` and of the value.
fn uri_param(s: &[u8], i: usize, end: usize, name: &[u8]) -> Option<(Range<usize>, Range<usize>)> {
    let mut semi = i;
    while semi < end && at(s, semi) == Some(b';') {
        let name_end = lex::skip_to(s, semi + 1, end, lex::URI_PARAM);
        let has_value = name_end < end && at(s, name_end) == Some(b'=');
        let value_end = if has_value {
            lex::skip_to(s, name_end + 1, end, lex::URI_PARAM)
        } else {
            name_end
        };
        if has_value
            && s.get(semi + 1..name_end)
                .is_some_and(|n| eq_caseless(n, name))
        {
            return Some((semi..value_end, name_end + 1..value_end));
        }
        semi = value_end;
    }
    None
}

/// `;slbf=<token of flow>`, and the `>` that closes a bracket opened for it.
fn token_text(t: &TokenRule, flow: SocketAddrV4, close: bool) -> Result<Text, RewriteError> {
    let mut x = Text::new();
    x.push(b";")?;
    x.push(token::PARAM)?;
    x.push(b"=")?;
    x.push(&t.t.key.encode(flow))?;
    if close {
        x.push(b">")?;
    }
    Ok(x)
}

/// What a Via value's parameters say about where responses go.
#[derive(Default)]
struct ViaParams {
    /// `rport`: `Some(None)` bare, `Some(Some(..))` with its value's span and port.
    rport: Option<Option<(Range<usize>, u16)>>,
    received: Option<Range<usize>>,
    /// A flow token: the span of `;slbf=value` and of its value.
    token: Option<(Range<usize>, Range<usize>)>,
}

/// Reads the parameters from the `;` at `i` to `end` (one Via value), hopping from
/// `;` to `;` rather than reading every byte of long values like `branch`.
fn via_params(s: &[u8], mut i: usize, end: usize) -> Result<ViaParams, RewriteError> {
    let bad = RewriteError::MalformedVia;
    let mut p = ViaParams::default();
    while i < end && at(s, i) == Some(b';') {
        let ns = lex::skip_to(s, i + 1, end, lex::WS);
        let ne = lex::skip_to(s, ns, end, lex::TOKEN);
        let name = s.get(ns..ne).unwrap_or_default();
        let eq = lex::skip_to(s, ne, end, lex::WS);
        let mut next = lex::find_byte(s.get(..end).unwrap_or(s), ne, b';').unwrap_or(end);
        let value = if eq < end && at(s, eq) == Some(b'=') {
            let vs = lex::skip_to(s, eq + 1, end, lex::WS);
            if at(s, vs) == Some(b'"') {
                let q = quoted_end(s, vs, end).ok_or(bad)?;
                next = lex::skip_to(s, q, end, lex::WS);
                Some(vs..q)
            } else {
                let value = s.get(vs..next).unwrap_or_default();
                let len = value
                    .iter()
                    .rposition(|&c| !lex::is(c, lex::WS))
                    .map_or(0, |p| p + 1);
                Some(vs..vs + len)
            }
        } else {
            None
        };
        if eq_caseless(name, b"rport") {
            let port = match value {
                Some(r) => {
                    let n = lex::parse_u16(s.get(r.clone()).unwrap_or_default()).ok_or(bad)?;
                    Some((r, n))
                }
                None => None,
            };
            p.rport.get_or_insert(port);
        } else if eq_caseless(name, b"received") && p.received.is_none() {
            p.received = value;
        } else if eq_caseless(name, token::PARAM) && p.token.is_none() {
            p.token = value.map(|v| (i..v.end, v));
        }
        i = next;
    }
    Ok(p)
}

/// A Via value's sent-protocol and sent-by from `vs` up to the `;` at `semi`: whether
/// the transport is TLS, the host's span, and the port.
struct SentBy {
    tls: bool,
    host: Range<usize>,
    port: Option<(Range<usize>, u16)>,
}

fn sent_by(s: &[u8], vs: usize, semi: usize) -> Result<SentBy, RewriteError> {
    let bad = RewriteError::MalformedVia;
    // SIP / 2.0 / transport, white space around the slashes allowed.
    let mut i = vs;
    let mut transport = 0..0;
    for part in 0..3 {
        let t = lex::skip_to(s, i, semi, lex::WS);
        let te = lex::skip_to(s, t, semi, lex::TOKEN);
        if te == t {
            return Err(bad);
        }
        transport = t..te;
        i = lex::skip_to(s, te, semi, lex::WS);
        if part < 2 {
            if at(s, i) != Some(b'/') {
                return Err(bad);
            }
            i += 1;
        }
    }
    let h = i;
    let he = if at(s, h) == Some(b'[') {
        lex::find_byte(s.get(..semi).unwrap_or(s), h, b']').ok_or(bad)? + 1
    } else {
        lex::skip_to(s, h, semi, lex::HOST)
    };
    if he == h || he == transport.end {
        return Err(bad);
    }
    let port = port_at(s, he, semi, true, bad)?;
    Ok(SentBy {
        tls: eq_caseless(s.get(transport).unwrap_or_default(), b"tls"),
        host: h..he,
        port,
    })
}

struct Rewriter<'b, 'e> {
    /// The whole message, and its header section.
    buf: &'b [u8],
    head: &'b [u8],
    rules: &'e Rules,
    edits: &'e mut Edits,
    request: bool,
    /// Where the top Via's sent-by starts (`usize::MAX` without Via).
    top_via: usize,
    last_ip: Option<(Ipv4Addr, Text)>,
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

    /// An address; the text of the last one is kept (an SDP repeats the same).
    fn emit_ip(&mut self, range: Range<usize>, ip: Ipv4Addr) -> Result<(), RewriteError> {
        let text = match self.last_ip {
            Some((last, text)) if last == ip => text,
            _ => {
                let mut t = Text::new();
                t.push_ipv4(ip)?;
                self.last_ip = Some((ip, t));
                t
            }
        };
        self.emit(range, text)
    }

    fn emit_port(&mut self, range: Range<usize>, port: u16) -> Result<(), RewriteError> {
        let mut t = Text::new();
        t.push_decimal(u32::from(port))?;
        self.emit(range, t)
    }

    /// `host[:port]` → the rule's `to`, with a port where there was one or where
    /// `to`'s is not the default.
    fn emit_host_port(
        &mut self,
        host: Range<usize>,
        port: Option<Range<usize>>,
        default: u16,
        rule: &Rule,
    ) -> Result<(), RewriteError> {
        let to = (rule.rule.to.port(), rule.to_ip, rule.to_ip_port);
        self.emit_host_port_to(host, port, default, to)
    }

    /// [`emit_host_port`](Self::emit_host_port) toward `(port, address text,
    /// address:port text)`.
    fn emit_host_port_to(
        &mut self,
        host: Range<usize>,
        port: Option<Range<usize>>,
        default: u16,
        (to_port, to_ip, to_ip_port): (u16, Text, Text),
    ) -> Result<(), RewriteError> {
        let text = if port.is_some() || to_port != default {
            to_ip_port
        } else {
            to_ip
        };
        let end = port.map_or(host.end, |p| p.end);
        self.emit(host.start..end, text)
    }

    /// `host[:port]` → the VIP.
    fn emit_vip(
        &mut self,
        t: &TokenRule,
        host: Range<usize>,
        port: Option<Range<usize>>,
        default: u16,
    ) -> Result<(), RewriteError> {
        let to = (t.t.vip.port(), t.vip_ip, t.vip_ip_port);
        self.emit_host_port_to(host, port, default, to)
    }

    /// `host[:port]` → the flow a token named.
    fn emit_flow(
        &mut self,
        flow: SocketAddrV4,
        host: Range<usize>,
        port: Option<Range<usize>>,
        default: u16,
    ) -> Result<(), RewriteError> {
        let mut ip = Text::new();
        ip.push_ipv4(*flow.ip())?;
        let mut ip_port = ip;
        ip_port.push(b":")?;
        ip_port.push_decimal(u32::from(flow.port()))?;
        self.emit_host_port_to(host, port, default, (flow.port(), ip, ip_port))
    }

    /// The flow the token at `value` names, if it is one of the farm's; a foreign or
    /// garbled token is counted and its place left as it is.
    fn read_token(&mut self, t: &TokenRule, value: Range<usize>) -> Option<SocketAddrV4> {
        let flow = self
            .head
            .get(value)
            .and_then(|v| t.t.key.decode(v))
            .filter(|f| t.t.snat.contains(*f.ip()));
        if flow.is_none() {
            self.edits.note_foreign_token();
        }
        flow
    }

    /// An occurrence of `ip` (a rule's address) at `at..e` in the header section:
    /// finds its field and what it is there, and rewrites it if a rule says so.
    fn hit(&mut self, at: usize, e: usize, ip: Ipv4Addr) -> Result<(), RewriteError> {
        let head = self.head;
        let start = field_start(head, at);
        // Values end at their own terminators; only a Via needs its field's end.
        let end = head.len();
        let (place, vs) = if start == 0 {
            // The Request-URI follows the method.
            let Some(sp) = lex::find_byte(head, 0, b' ').filter(|_| self.request) else {
                return Ok(());
            };
            (Places::REQUEST_URI, sp + 1)
        } else {
            let Some(colon) = lex::find_byte(head.get(..at).unwrap_or(head), start, b':') else {
                return Ok(());
            };
            let name = trim_end(head.get(start..colon).unwrap_or_default());
            match field_kind(name) {
                Some(None) => return self.via_hit(colon + 1, field_end(head, at), at, e, ip),
                Some(Some(place)) => (place, colon + 1),
                None => return Ok(()),
            }
        };
        if !self.rules.places.contains(place) {
            return Ok(());
        }
        match param_name(head, vs, at) {
            Some(n) if eq_caseless(n, b"received") || eq_caseless(n, b"maddr") => {
                self.ip_only(at, e, ip, place, None)
            }
            Some(n) if eq_caseless(n, b"alias") => self.alias(at, e, end, ip, place),
            Some(_) => Ok(()),
            None => self.uri_host(vs, end, at, e, ip, place),
        }
    }

    /// A hit in the Via field whose value starts at `vs` and ends at `end`.
    fn via_hit(
        &mut self,
        vs: usize,
        end: usize,
        at: usize,
        e: usize,
        ip: Ipv4Addr,
    ) -> Result<(), RewriteError> {
        let head = self.head;
        // The value holding the hit: between the commas around it.
        let value_start = head
            .get(vs..at)
            .and_then(|v| memchr::memrchr(b',', v))
            .map_or(vs, |c| vs + c + 1);
        let value_end = lex::find_byte(head.get(..end).unwrap_or(head), e, b',').unwrap_or(end);
        let place = if (value_start..value_end).contains(&self.top_via) {
            Places::TOP_VIA
        } else {
            Places::OTHER_VIA
        };
        if !self.rules.places.contains(place) {
            return Ok(());
        }
        self.via(value_start, value_end, at, e, ip, place)
    }

    /// A hit that may be the host of a SIP URI (`sip:HOST`, `sip:user@HOST`), the URI
    /// lying in `vs..end`.
    fn uri_host(
        &mut self,
        vs: usize,
        end: usize,
        at: usize,
        e: usize,
        ip: Ipv4Addr,
        place: Places,
    ) -> Result<(), RewriteError> {
        let head = self.head;
        let colon = match at.checked_sub(1).and_then(|i| lex::at(head, i)) {
            Some(b':') => at - 1,
            // The userinfo before "@" may hold ":" (a password): the scheme's colon is
            // the first one after where the URI starts.
            Some(b'@') => {
                let mut j = at - 1;
                while j > vs
                    && !matches!(
                        lex::at(head, j - 1),
                        Some(b'<' | b' ' | b'\t' | b'\n' | b'"' | b',')
                    )
                {
                    j -= 1;
                }
                match lex::find_byte(head.get(..at).unwrap_or(head), j, b':') {
                    Some(c) => c,
                    None => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        let scheme_start = {
            let mut j = colon;
            while j > vs && lex::at(head, j - 1).is_some_and(|c| c.is_ascii_alphabetic()) {
                j -= 1;
            }
            j
        };
        let scheme = head.get(scheme_start..colon).unwrap_or_default();
        let sips = eq_caseless(scheme, b"sips");
        if !sips && !eq_caseless(scheme, b"sip") {
            return Ok(());
        }
        let bad = RewriteError::MalformedAddress;
        let port = port_at(head, e, end, false, bad)?;
        let after = port.as_ref().map_or(e, |(r, _)| r.end);
        // A host (and port) ends where the URI's parameters, headers or the URI
        // itself end. Anything else (`sip:HOST:x@...`, `sip:HOST:1024bob@...`) makes
        // the hit part of a user name and password, or of no address at all.
        if !matches!(
            lex::at(head, after),
            None | Some(b';' | b'?' | b'>' | b',' | b'"' | b' ' | b'\t' | b'\r' | b'\n')
        ) {
            return Ok(());
        }
        let default = if sips || port.is_none() && transport_tls(head, after, end) {
            5061
        } else {
            5060
        };
        let p = port.as_ref().map_or(default, |(_, p)| *p);
        let port = port.map(|(r, _)| r);
        let rules = self.rules;
        let tokens = rules.tokens_in(place);
        if let Some(t) = tokens.filter(|t| t.t.way == TokenWay::Restore && t.owns(ip)) {
            if let Some((param, value)) = uri_param(head, after, end, token::PARAM) {
                // A URI without a port is never a flow's.
                if let Some(flow) = self.read_token(t, value).filter(|f| f.port() != 0) {
                    self.emit_flow(flow, at..e, port, default)?;
                    self.emit(param, Text::new())?;
                }
                return Ok(());
            }
        }
        if let Some(rule) = rules.by_transport(place, ip, p) {
            self.emit_host_port(at..e, port, default, rule)?;
        } else if let Some(t) = tokens.filter(|t| t.t.way == TokenWay::Hide && t.owns(ip)) {
            // A bare addr-spec (Contact, Route) would take the parameter as the
            // header's: it gets brackets. A Request-URI and a quoted URI need none.
            let before = back_ws(head, vs, scheme_start).and_then(|i| lex::at(head, i));
            let bare = place != Places::REQUEST_URI && !matches!(before, Some(b'<' | b'"'));
            // A bare URI cannot hold headers (`?`) (RFC 3261 20): one that does
            // would not parse once bracketed, and its address cannot be hidden.
            if bare && matches!(lex::at(head, after), Some(b'?' | b'>' | b'"')) {
                return Err(bad);
            }
            if bare {
                self.edits.replace(scheme_start, 0, b"<")?;
            }
            self.emit_vip(t, at..e, port, default)?;
            self.emit(after..after, token_text(t, SocketAddrV4::new(ip, p), bare)?)?;
        }
        Ok(())
    }

    /// An address alone (`received=`, `maddr=`).
    fn ip_only(
        &mut self,
        at: usize,
        e: usize,
        ip: Ipv4Addr,
        place: Places,
        hint: Option<u16>,
    ) -> Result<(), RewriteError> {
        let rules = self.rules;
        if let Some(rule) = rules.by_ip(place, ip, hint) {
            self.emit(at..e, rule.to_ip)?;
        }
        Ok(())
    }

    /// Kamailio's `alias=ip~port~proto` (nathelper `add_contact_alias`).
    fn alias(
        &mut self,
        at: usize,
        e: usize,
        end: usize,
        ip: Ipv4Addr,
        place: Places,
    ) -> Result<(), RewriteError> {
        let head = self.head;
        if lex::at(head, e) != Some(b'~') {
            return Ok(());
        }
        let pe = lex::skip_to(head, e + 1, end, lex::DIGIT);
        let Some(port) = lex::parse_u16(head.get(e + 1..pe).unwrap_or_default()) else {
            return Ok(());
        };
        if let Some(rule) = self.rules.by_transport(place, ip, port) {
            let mut t = rule.to_ip;
            t.push(b"~")?;
            t.push_decimal(u32::from(rule.rule.to.port()))?;
            self.emit(at..pe, t)?;
        }
        Ok(())
    }

    /// A hit in the Via value `vs..ve`: its sent-by, `received` or `maddr`; `rport`
    /// follows the address it goes with (`received`, else sent-by).
    fn via(
        &mut self,
        vs: usize,
        ve: usize,
        at: usize,
        e: usize,
        ip: Ipv4Addr,
        place: Places,
    ) -> Result<(), RewriteError> {
        let head = self.head;
        let semi = lex::find_byte(head.get(..ve).unwrap_or(head), vs, b';').unwrap_or(ve);
        if at < semi {
            let by = sent_by(head, vs, semi)?;
            if by.host != (at..e)
                || lex::skip_to(head, by.port.as_ref().map_or(e, |p| p.0.end), semi, lex::WS)
                    != semi
            {
                return Err(RewriteError::MalformedVia);
            }
            let default = if by.tls { 5061 } else { 5060 };
            let sent_port = by.port.as_ref().map_or(default, |(_, p)| *p);
            let port = by.port.map(|(r, _)| r);
            let rules = self.rules;
            let params = via_params(head, semi, ve)?;
            if let Some(t) = rules.tokens_in(place).filter(|t| t.owns(ip)) {
                match (t.t.way, params.token) {
                    (TokenWay::Restore, Some((param, value))) => {
                        if let Some(flow) = self.read_token(t, value) {
                            if flow.port() != 0 {
                                self.emit_flow(flow, at..e, port, default)?;
                            }
                            self.emit(param, Text::new())?;
                        }
                        return Ok(());
                    }
                    (TokenWay::Hide, _) if rules.by_transport(place, ip, sent_port).is_none() => {
                        // rport stays: a port alone names no address.
                        let end = port.as_ref().map_or(e, |p| p.end);
                        self.emit_vip(t, at..e, port, default)?;
                        let flow = SocketAddrV4::new(ip, sent_port);
                        return self.emit(end..end, token_text(t, flow, false)?);
                    }
                    _ => {}
                }
            }
            if let Some(rule) = rules.by_transport(place, ip, sent_port) {
                self.emit_host_port(at..e, port, default, rule)?;
            }
            // rport goes with the sent-by when no received says otherwise.
            if let (None, Some(Some((r, n)))) = (params.received, params.rport) {
                if let Some(rule) = self.rules.by_transport(place, ip, n) {
                    self.emit_port(r, rule.rule.to.port())?;
                }
            }
            return Ok(());
        }
        match param_name(head, semi, at) {
            Some(n) if eq_caseless(n, b"received") => {
                let params = via_params(head, semi, ve)?;
                if params.received != Some(at..e) {
                    return Ok(());
                }
                if let Some(t) = self.rules.tokens_in(place).filter(|t| t.owns(ip)) {
                    if self.via_received_token(t, vs, semi, at..e, ip, place, params.token)? {
                        return Ok(());
                    }
                }
                if let Some(Some((r, n))) = params.rport {
                    let rules = self.rules;
                    if let Some(rule) = rules.by_transport(place, ip, n) {
                        self.emit_port(r, rule.rule.to.port())?;
                        return self.emit(at..e, rule.to_ip);
                    }
                    return self.ip_only(at, e, ip, place, Some(n));
                }
                let by = sent_by(head, vs, semi)?;
                let default = if by.tls { 5061 } else { 5060 };
                let hint = by.port.map_or(default, |(_, p)| p);
                self.ip_only(at, e, ip, place, Some(hint))
            }
            Some(n) if eq_caseless(n, b"maddr") => self.ip_only(at, e, ip, place, None),
            _ => Ok(()),
        }
    }

    /// A Via's `received=` on an address the tokens own, in the value from `vs` whose
    /// sent-by ends at `semi`: whether the tokens took it. Hidden, it becomes the VIP,
    /// carried by the sent-by's token when the sent-by is the same flow's, else by a
    /// token of its own `(received, 0)` after it. Restored, it becomes the token's
    /// address; the token goes with the sent-by when that is the VIP, else here.
    #[allow(clippy::too_many_arguments)]
    fn via_received_token(
        &mut self,
        t: &TokenRule,
        vs: usize,
        semi: usize,
        received: Range<usize>,
        ip: Ipv4Addr,
        place: Places,
        token: Option<(Range<usize>, Range<usize>)>,
    ) -> Result<bool, RewriteError> {
        let head = self.head;
        let by = sent_by(head, vs, semi)?;
        let by_ip = head.get(by.host.clone()).and_then(lex::parse_ipv4);
        let default = if by.tls { 5061 } else { 5060 };
        let by_port = by.port.map_or(default, |(_, p)| p);
        match (t.t.way, token) {
            (TokenWay::Restore, Some((param, value))) => {
                let with_sent_by = by_ip == Some(ip);
                if with_sent_by {
                    // The sent-by's hit counted a foreign token and removes a good one.
                    let flow = head
                        .get(value)
                        .and_then(|v| t.t.key.decode(v))
                        .filter(|f| t.t.snat.contains(*f.ip()));
                    if let Some(f) = flow {
                        self.emit_ip(received, *f.ip())?;
                    }
                } else if let Some(f) = self.read_token(t, value) {
                    self.emit_ip(received, *f.ip())?;
                    self.emit(param, Text::new())?;
                }
                Ok(true)
            }
            (TokenWay::Hide, _) if self.rules.by_ip(place, ip, None).is_none() => {
                let rules = self.rules;
                let by_hidden = by_ip
                    .is_some_and(|a| t.owns(a) && rules.by_transport(place, a, by_port).is_none());
                if by_hidden {
                    // Another address than the sent-by's flow: a Via the balancer
                    // never makes, left as it is.
                    if by_ip == Some(ip) {
                        self.emit(received, t.vip_ip)?;
                    }
                } else {
                    let end = received.end;
                    self.emit(received, t.vip_ip)?;
                    self.emit(end..end, token_text(t, SocketAddrV4::new(ip, 0), false)?)?;
                }
                Ok(true)
            }
            _ => Ok(false),
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
        let streams = sdp.media();
        let span = |s: Span| base + usize::from(s.start)..base + usize::from(s.end);
        // Per m= line: the address the stream had, and where it goes now.
        let mut mapped: [Option<(Ipv4Addr, Mapped)>; MAX_MEDIA] = [None; MAX_MEDIA];
        if let Some(mapper) = media {
            // Every stream is checked before the first mapping is made.
            if streams.iter().filter(|m| !m.is_rejected()).count() > 1 {
                for m in streams.iter().filter(|m| !m.is_rejected()) {
                    flow(&sdp, m)?;
                }
            }
            for (slot, m) in mapped.iter_mut().zip(streams) {
                if m.is_rejected() {
                    continue;
                }
                let f = flow(&sdp, m)?;
                let to = mapper.map(&f)?;
                if m.rtcp.is_none() && !m.rtcp_mux && Some(to.rtcp_port) != to.port.checked_add(1) {
                    return Err(RewriteError::RtcpNotAdjacent);
                }
                *slot = Some((f.addr, to));
            }
        }
        let rules = self.rules;
        // An address that is not a mapped stream's own: a mapped stream's former
        // address becomes its new one, else the rules decide.
        let subst = |ip: Ipv4Addr| -> Option<Ipv4Addr> {
            mapped
                .iter()
                .flatten()
                .find(|(from, _)| *from == ip && !ip.is_unspecified())
                .map(|(_, to)| to.addr)
                .or_else(|| rules.by_ip(Places::SDP, ip, None).map(|r| *r.rule.to.ip()))
        };
        if let Some(Origin {
            addr: Address::V4(ip),
            span: s,
        }) = sdp.origin()
        {
            // Once media is relayed the origin names the relay, whatever it was: a
            // media server keeps the caller's `o=`, which after the caller's side was
            // rewritten names a balancer back address that no stream accounts for.
            let relay = mapped.iter().flatten().next().map(|(_, to)| to.addr);
            if let Some(to) = relay.or_else(|| subst(*ip)) {
                self.emit_ip(span(*s), to)?;
            }
        }
        if let Some(c) = sdp.connection().filter(|c| !c.is_hold()) {
            // The streams using the session c= must agree on their new address.
            let mut to = None;
            for (m, map) in streams.iter().zip(&mapped) {
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
                self.emit_ip(span(c.span), t)?;
            }
        }
        for (m, map) in streams.iter().zip(&mapped) {
            let own = |c: &Connection| match (map, c.addr) {
                _ if c.is_hold() => None,
                (Some((_, to)), _) => Some(to.addr),
                (None, Address::V4(ip)) => subst(ip),
                _ => None,
            };
            let rtcp_c = m.rtcp.as_ref().and_then(|r| r.connection.as_ref());
            for c in m.connection.iter().chain(rtcp_c) {
                if let Some(t) = own(c) {
                    self.emit_ip(span(c.span), t)?;
                }
            }
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
fn flow<'a>(sdp: &Sdp<'a>, m: &MediaStream) -> Result<MediaFlow<'a>, RewriteError> {
    let v4 = |c: &Connection| match c.addr {
        Address::V4(ip) if !ip.is_multicast() => Ok(ip),
        Address::V6 => Err(RewriteError::Ipv6Media),
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
        media: sdp.text(m.media),
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
            self.flows.push((
                usize::from(f.stream.index),
                f.addr,
                f.stream.port,
                f.rtcp_port,
                f.hold,
            ));
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
    fn the_origin_names_the_relay_whatever_it_was() {
        // rtpengine kept the caller's o=, which names the caller's SNAT address after
        // the balancer rewrote the caller's side; no stream and no rule accounts for it.
        let input = msg(&KAMAILIO_INVITE.replace(
            "o=rtpengine 1712 1 IN IP4 198.19.1.1",
            "o=alice 2890844526 2890844526 IN IP4 198.19.0.100",
        ));
        let r = rules(&[(BACKEND, VIP, Places::ALL)]);
        let mut table = Table::new(*VIP.ip());
        let (_, out) = run(&input, &r, Some(&mut table)).unwrap();
        let out = text(&out);
        assert!(
            out.contains("o=alice 2890844526 2890844526 IN IP4 198.18.0.100\r\n"),
            "{out}"
        );
        assert!(!out.contains("198.19."), "{out}");
        assert_eq!(table.flows.len(), 1);
        // The first relayed stream's address, even when streams map apart and the
        // first one is rejected.
        let two = msg(&KAMAILIO_INVITE
            .replace(
                "o=rtpengine 1712 1 IN IP4 198.19.1.1",
                "o=- 1 1 IN IP4 198.19.0.100",
            )
            .replace(
                "m=audio 30000 RTP/AVP 0 101\r\n",
                "m=video 0 RTP/AVP 99\r\nm=audio 30000 RTP/AVP 0 101\r\n",
            ));
        let mut table = Table::new(Ipv4Addr::new(198, 18, 0, 101));
        let (_, out) = run(&two, &r, Some(&mut table)).unwrap();
        assert!(
            text(&out).contains("o=- 1 1 IN IP4 198.18.0.101\r\n"),
            "{}",
            text(&out)
        );
        // Without a relay the origin is an address like any other: no rule, no change.
        let (_, out) = run(&input, &r, None).unwrap();
        assert!(text(&out).contains("IN IP4 198.19.0.100\r\n"));
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
    fn tls_uris_default_to_5061() {
        let input = msg("OPTIONS sip:198.19.1.1;transport=TLS SIP/2.0\r
Via: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK7\r
From: <sip:a@example.com>;tag=1\r
To: <sip:b@example.com>\r
Call-ID: tls1\r
CSeq: 1 OPTIONS\r
Contact: <sips:198.19.1.1>, <sip:198.19.1.1;lr;transport=tls>, <sip:198.19.1.1;transport=udp>\r
Content-Length: 0\r
\r
");
        let tls = SocketAddrV4::new(*BACKEND.ip(), 5061);
        let vip_tls = SocketAddrV4::new(*VIP.ip(), 5061);
        let r = rules(&[(tls, vip_tls, Places::ALL)]);
        let (_, out) = run(&input, &r, None).unwrap();
        let out = text(&out);
        assert!(
            out.starts_with("OPTIONS sip:198.18.0.100;transport=TLS SIP/2.0\r\n"),
            "{out}"
        );
        assert!(out.contains(
            "Contact: <sips:198.18.0.100>, <sip:198.18.0.100;lr;transport=tls>, <sip:198.19.1.1;transport=udp>\r\n"
        ), "{out}");
        // The plain-SIP rule does not take the TLS ones.
        let r = rules(&[(BACKEND, VIP, Places::ALL)]);
        let (_, out) = run(&input, &r, None).unwrap();
        assert!(text(&out).contains(
            "Contact: <sips:198.19.1.1>, <sip:198.19.1.1;lr;transport=tls>, <sip:198.18.0.100;transport=udp>\r\n"
        ));
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
                msg(&KAMAILIO_INVITE.replace("Record-Route: <sip:198.19.1.1;lr", "Record-Route: <sip:198.19.1.1:99999;lr")),
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
        let to = |r: Option<&Rule>| r.map(|r| r.rule.to);
        assert_eq!(
            to(r.by_ip(Places::TOP_VIA, *SNAT.ip(), Some(1026))),
            Some(to_b)
        );
        assert_eq!(
            to(r.by_ip(Places::TOP_VIA, *SNAT.ip(), Some(9))),
            Some(to_a)
        );
        assert_eq!(
            to(r.by_transport(Places::CONTACT, *SNAT.ip(), 1026)),
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

    // Flow tokens (snat): the callee B at 198.18.0.11 behind its flow SNAT_B, the
    // caller's flow SNAT (198.19.0.100:1024) seen by B only as the VIP and a token.
    const BOB: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 11), 5060);
    const SNAT_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 100), 1030);
    const KEY: u64 = 0x5eed;

    fn snat_set(addrs: &[Ipv4Addr]) -> AddrSet {
        let mut set = AddrSet::new();
        for a in addrs {
            assert!(set.insert(*a));
        }
        set
    }

    fn tokens(way: TokenWay, set: AddrSet) -> FlowTokens {
        FlowTokens {
            way,
            snat: set,
            vip: VIP,
            key: TokenKey::new(KEY),
            places: Places::HEADERS,
        }
    }

    /// What the balancer applies toward B: the backend becomes the VIP, B's own flow
    /// becomes B, other flows on `set` become tokens.
    fn toward_bob(set: AddrSet) -> Rules {
        let mut r = rules(&[
            (BACKEND, VIP, Places::HEADERS),
            (
                SNAT_B,
                BOB,
                Places::TOP_VIA | Places::CONTACT | Places::REQUEST_URI,
            ),
        ]);
        r.set_tokens(tokens(TokenWay::Hide, set)).unwrap();
        r
    }

    /// What the balancer applies to B's messages toward the backend.
    fn from_bob(set: AddrSet) -> Rules {
        let mut r = rules(&[
            (VIP, BACKEND, Places::REQUEST_URI | Places::ROUTE),
            (BOB, SNAT_B, Places::TOP_VIA | Places::CONTACT),
        ]);
        r.set_tokens(tokens(TokenWay::Restore, set)).unwrap();
        r
    }

    fn token_of(flow: SocketAddrV4) -> String {
        String::from_utf8(TokenKey::new(KEY).encode(flow).to_vec()).unwrap()
    }

    /// Rewrites with `r` and returns the text and the foreign tokens counted.
    fn run_tokens(input: &[u8], r: &Rules) -> (String, usize) {
        let m = SipMessage::parse(input, &Limits::default()).unwrap();
        let mut edits = Edits::new();
        rewrite(input, &m, r, None, &mut edits).unwrap();
        let foreign = edits.foreign_tokens();
        let (_, out) = run(input, r, None).unwrap();
        (text(&out), foreign)
    }

    /// Kamailio forwards A's INVITE to B's flow: A's Via and Contact name A's flow.
    const FORWARDED_INVITE: &str = "INVITE sip:bob@198.19.0.100:1030 SIP/2.0\r
Record-Route: <sip:198.19.1.1;lr;ftag=as1>\r
Via: SIP/2.0/UDP 198.19.1.1;branch=z9hG4bK1b0.1\r
Via: SIP/2.0/UDP 198.19.0.100:1024;branch=z9hG4bKa;rport=1024;received=198.19.0.100\r
Max-Forwards: 69\r
From: <sip:alice@example.com>;tag=as1\r
To: <sip:bob@example.com>\r
Call-ID: t1@x\r
CSeq: 1 INVITE\r
Contact: <sip:alice@198.19.0.100:1024>\r
Content-Type: application/sdp\r
Content-Length: N\r
\r
v=0\r
o=- 1 1 IN IP4 198.18.0.10\r
s=-\r
c=IN IP4 198.18.0.10\r
t=0 0\r
m=audio 4000 RTP/AVP 0\r
";

    #[test]
    fn other_flows_reach_a_phone_as_the_vip_and_come_back_exactly() {
        let set = snat_set(&[*SNAT.ip()]);
        let a = token_of(SNAT);
        let input = msg(FORWARDED_INVITE);
        let (out, foreign) = run_tokens(&input, &toward_bob(set));
        assert_eq!(foreign, 0);
        let head = out.split_once("\r\n\r\n").unwrap().0;
        assert_eq!(
            head,
            format!(
                "INVITE sip:bob@198.18.0.11:5060 SIP/2.0\r
Record-Route: <sip:198.18.0.100;lr;ftag=as1>\r
Via: SIP/2.0/UDP 198.18.0.100;branch=z9hG4bK1b0.1\r
Via: SIP/2.0/UDP 198.18.0.100:5060;slbf={a};branch=z9hG4bKa;rport=1024;received=198.18.0.100\r
Max-Forwards: 69\r
From: <sip:alice@example.com>;tag=as1\r
To: <sip:bob@example.com>\r
Call-ID: t1@x\r
CSeq: 1 INVITE\r
Contact: <sip:alice@198.18.0.100:5060;slbf={a}>\r
Content-Type: application/sdp\r
Content-Length: 91"
            )
        );
        assert!(!out.contains("198.19."), "{out}");
        // Grown by two tokens and the backend's two addresses (two bytes each),
        // shorter by B's address (one byte); the body is untouched.
        assert_eq!(
            out.len(),
            input.len() + 2 * (6 + token::TOKEN_LEN) + 2 * 2 - 1
        );

        // B's 200 carries both Vias back: the backend receives A's Via as it wrote it.
        let via_a = head.lines().nth(3).unwrap();
        let ok = msg(&format!(
            "SIP/2.0 200 OK\r
Via: SIP/2.0/UDP 198.18.0.100;branch=z9hG4bK1b0.1\r
{via_a}\r
Record-Route: <sip:198.18.0.100;lr;ftag=as1>\r
From: <sip:alice@example.com>;tag=as1\r
To: <sip:bob@example.com>;tag=b1\r
Call-ID: t1@x\r
CSeq: 1 INVITE\r
Contact: <sip:bob@198.18.0.11:5060>\r
Content-Length: 0\r
\r
"
        ));
        let (back, foreign) = run_tokens(&ok, &from_bob(set));
        assert_eq!(foreign, 0);
        assert!(
            back.contains("\r\nVia: SIP/2.0/UDP 198.19.0.100:1024;branch=z9hG4bKa;rport=1024;received=198.19.0.100\r\n"),
            "{back}"
        );
        assert!(back.contains("Contact: <sip:bob@198.19.0.100:1030>\r\n"));
        assert!(!back.contains("slbf"), "{back}");
        assert!(back.len() < ok.len(), "the message shrank");

        // B's BYE to A's Contact, routed through the backend's Record-Route.
        let bye = msg(&format!(
            "BYE sip:alice@198.18.0.100:5060;slbf={a} SIP/2.0\r
Via: SIP/2.0/UDP 198.18.0.11:5060;branch=z9hG4bKb\r
Route: <sip:198.18.0.100;lr;ftag=as1>\r
From: <sip:bob@example.com>;tag=b1\r
To: <sip:alice@example.com>;tag=as1\r
Call-ID: t1@x\r
CSeq: 1 BYE\r
Content-Length: 0\r
\r
"
        ));
        let (back, foreign) = run_tokens(&bye, &from_bob(set));
        assert_eq!(foreign, 0);
        assert!(
            back.starts_with("BYE sip:alice@198.19.0.100:1024 SIP/2.0\r\n"),
            "{back}"
        );
        assert!(back.contains("Route: <sip:198.19.1.1;lr;ftag=as1>\r\n"));
        assert!(back.contains("Via: SIP/2.0/UDP 198.19.0.100:1030;branch=z9hG4bKb\r\n"));
    }

    /// An address followed by more than a port (`sip:ADDR:1024bob@HOST`) is a user
    /// name and password, not the URI's host: neither rewritten nor tokenized (a
    /// token once made `<sip:VIP;slbf=..>bob@HOST`, which no longer parsed; found
    /// by the ALG fuzz test in CI).
    #[test]
    fn an_address_inside_the_userinfo_is_left_alone() {
        let set = snat_set(&[*SNAT.ip()]);
        let input = msg("MESSAGE sip:bob@198.19.1.1 SIP/2.0\r
Via: SIP/2.0/UDP 198.19.1.1;branch=z9hG4bK3\r
From: <sip:alice@example.com>;tag=1\r
To: sip:198.19.0.100:1024bob@198.19.1.1\r
Contact: <sip:198.19.0.100:1024x@example.com>\r
Call-ID: m1\r
CSeq: 3 MESSAGE\r
Content-Length: N\r
\r
hello");
        let (out, foreign) = run_tokens(&input, &toward_bob(set));
        assert_eq!(foreign, 0);
        assert!(
            out.contains("\r\nTo: sip:198.19.0.100:1024bob@198.18.0.100\r\n"),
            "{out}"
        );
        assert!(
            out.contains("\r\nContact: <sip:198.19.0.100:1024x@example.com>\r\n"),
            "{out}"
        );
        assert!(!out.contains("slbf"), "{out}");
        assert!(
            out.starts_with("MESSAGE sip:bob@198.18.0.100 SIP/2.0\r\n"),
            "{out}"
        );

        // A bare URI with headers cannot be bracketed: the message is refused.
        let input = String::from_utf8(input)
            .unwrap()
            .replace(":1024bob@", ":1?24bob@");
        let m = SipMessage::parse(input.as_bytes(), &Limits::default()).unwrap();
        let r = toward_bob(set);
        let mut edits = Edits::new();
        let got = rewrite(input.as_bytes(), &m, &r, None, &mut edits);
        assert_eq!(got, Err(RewriteError::MalformedAddress));
    }
    #[test]
    fn bare_contacts_get_brackets_and_natted_vias_a_token_of_their_own() {
        let set = snat_set(&[*SNAT.ip()]);
        let a = token_of(SNAT);
        let r0 = token_of(SocketAddrV4::new(*SNAT.ip(), 0));
        let input = msg("SIP/2.0 200 OK\r
Via: SIP/2.0/UDP 198.18.0.11:5060;rport=1030;received=198.19.0.100;branch=z9hG4bKr\r
Via: SIP/2.0/UDP 198.18.77.5:5060;rport=1024;received=198.19.0.100;branch=z9hG4bKp\r
From: <sip:bob@example.com>;tag=r1\r
To: <sip:bob@example.com>;tag=k1\r
Call-ID: reg2@x\r
CSeq: 2 REGISTER\r
Contact: sip:bob@198.19.0.100:1024;expires=60, <sip:bob@198.19.0.100:1030>;expires=3600;received=\"sip:198.19.0.100:1024\"\r
Content-Length: 0\r
\r
");
        let (out, _) = run_tokens(&input, &toward_bob(set));
        // B's own flow (top Via, its binding) goes back to B; the rest is tokens.
        assert!(out.contains("Via: SIP/2.0/UDP 198.18.0.11:5060;rport=5060;received=198.18.0.11;branch=z9hG4bKr\r\n"), "{out}");
        assert!(
            out.contains(&format!("Via: SIP/2.0/UDP 198.18.77.5:5060;rport=1024;received=198.18.0.100;slbf={r0};branch=z9hG4bKp\r\n")),
            "{out}"
        );
        assert!(out.contains(&format!(
            "Contact: <sip:bob@198.18.0.100:5060;slbf={a}>;expires=60, <sip:bob@198.18.0.11:5060>;expires=3600;received=\"sip:198.18.0.100:5060;slbf={a}\"\r\n"
        )), "{out}");
        assert!(!out.contains("198.19."), "{out}");
        // The parser reads the bracketed Contact's expires as before.
        let m = SipMessage::parse(out.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(m.contact_expires(), Some(60));

        // The natted Via comes back with its received, and its token goes.
        let via = out.lines().nth(2).unwrap();
        let req = msg(&format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.100;branch=z9hG4bKk\r\n{via}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ));
        let (back, foreign) = run_tokens(&req, &from_bob(set));
        assert_eq!(foreign, 0);
        assert!(back.contains("Via: SIP/2.0/UDP 198.18.77.5:5060;rport=1024;received=198.19.0.100;branch=z9hG4bKp\r\n"), "{back}");
    }

    #[test]
    fn foreign_and_garbled_tokens_are_left_alone_and_counted() {
        let set = snat_set(&[*SNAT.ip()]);
        let good = token_of(SNAT);
        let other_key = String::from_utf8(TokenKey::new(KEY + 1).encode(SNAT).to_vec()).unwrap();
        let outside = token_of(SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 200), 1024));
        for bad in [
            "garbage",
            "0000000000000",
            other_key.as_str(),
            outside.as_str(),
        ] {
            let bye = msg(&format!(
                "BYE sip:alice@198.18.0.100:5060;slbf={bad} SIP/2.0\r
Via: SIP/2.0/UDP 198.18.0.11:5060;branch=z9hG4bKb\r
Via: SIP/2.0/UDP 198.18.0.100:5060;slbf={bad};branch=z9hG4bKa;rport=1024;received=198.18.0.100\r
Route: <sip:198.18.0.100;lr>\r
From: <sip:bob@example.com>;tag=b1\r
To: <sip:alice@example.com>;tag=as1\r
Call-ID: t1@x\r
CSeq: 1 BYE\r
Content-Length: 0\r
\r
"
            ));
            let (back, foreign) = run_tokens(&bye, &from_bob(set));
            // The Request-URI and the Via (once for the value), both left as they were.
            assert_eq!(foreign, 2, "{bad}: {back}");
            assert!(
                back.starts_with(&format!(
                    "BYE sip:alice@198.18.0.100:5060;slbf={bad} SIP/2.0\r\n"
                )),
                "{back}"
            );
            assert!(back.contains(&format!(
                "Via: SIP/2.0/UDP 198.18.0.100:5060;slbf={bad};branch=z9hG4bKa;rport=1024;received=198.18.0.100\r\n"
            )));
            // The rest is rewritten as without tokens.
            assert!(back.contains("Route: <sip:198.19.1.1;lr>\r\n"), "{back}");
        }
        // Upper case is the same token (URI parameters compare without case).
        let upper = msg(&format!(
            "BYE sip:alice@198.18.0.100:5060;slbf={} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.11:5060;branch=z9hG4bKb\r\nFrom: <sip:b@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            good.to_uppercase()
        ));
        let (back, foreign) = run_tokens(&upper, &from_bob(set));
        assert_eq!(foreign, 0);
        assert!(
            back.starts_with("BYE sip:alice@198.19.0.100:1024 SIP/2.0\r\n"),
            "{back}"
        );
    }

    #[test]
    fn a_pool_is_found_by_its_prefix_and_nothing_else() {
        // A pool sharing its text prefix with the backend's address (198.19.1.1).
        let pool: Vec<Ipv4Addr> = (100..132).map(|k| Ipv4Addr::new(198, 19, 1, k)).collect();
        let mut set = snat_set(&pool);
        assert!(set.insert(*SNAT.ip()));
        let r = toward_bob(set);
        assert_eq!(
            r.needles(Places::HEADERS).count(),
            3,
            "backend, 198.19.1.1, 198.19.0.100"
        );
        let input = msg("INVITE sip:bob@198.19.0.100:1030 SIP/2.0\r
Via: SIP/2.0/UDP 198.19.1.1;branch=z9hG4bK1\r
Via: SIP/2.0/UDP 198.19.1.131:2000;branch=z9hG4bK2\r
Via: SIP/2.0/UDP 198.19.1.132:2000;branch=z9hG4bK3\r
Via: SIP/2.0/UDP 198.19.1.100:32767;branch=z9hG4bK4\r
From: <sip:alice@example.com>;tag=as1\r
To: <sip:bob@example.com>\r
Call-ID: p1@x\r
CSeq: 1 INVITE\r
Contact: <sip:alice@198.19.1.11:2000>\r
Content-Length: 0\r
\r
");
        let (out, _) = run_tokens(&input, &r);
        let t131 = token_of(SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 131), 2000));
        let t100 = token_of(SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 100), 32767));
        assert!(out.starts_with("INVITE sip:bob@198.18.0.11:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.100;branch=z9hG4bK1\r\n"), "{out}");
        assert!(
            out.contains(&format!(
                "Via: SIP/2.0/UDP 198.18.0.100:5060;slbf={t131};branch=z9hG4bK2\r\n"
            )),
            "{out}"
        );
        // Past the pool, and an address the prefix finds that is no flow: left.
        assert!(out.contains("Via: SIP/2.0/UDP 198.19.1.132:2000;branch=z9hG4bK3\r\n"));
        assert!(out.contains(&format!(
            "Via: SIP/2.0/UDP 198.18.0.100:5060;slbf={t100};branch=z9hG4bK4\r\n"
        )));
        assert!(out.contains("Contact: <sip:alice@198.19.1.11:2000>\r\n"));
        // Round trip of the pool's flows.
        let vias: Vec<&str> = out.lines().filter(|l| l.starts_with("Via:")).collect();
        let ok = msg(&format!(
            "SIP/2.0 200 OK\r\n{}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            vias.join("\r\n")
        ));
        let (back, foreign) = run_tokens(&ok, &from_bob(set));
        assert_eq!(foreign, 0);
        assert!(back.contains("Via: SIP/2.0/UDP 198.19.1.131:2000;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP 198.19.1.132:2000;branch=z9hG4bK3\r\nVia: SIP/2.0/UDP 198.19.1.100:32767;branch=z9hG4bK4\r\n"), "{back}");
        // Without tokens the other flows stay as they were (today's behaviour).
        let mut plain = rules(&[
            (BACKEND, VIP, Places::HEADERS),
            (
                SNAT_B,
                BOB,
                Places::TOP_VIA | Places::CONTACT | Places::REQUEST_URI,
            ),
        ]);
        let (out, _) = run_tokens(&input, &plain);
        assert!(out.contains("Via: SIP/2.0/UDP 198.19.1.131:2000;branch=z9hG4bK2\r\n"));
        plain
            .set_tokens(tokens(TokenWay::Hide, AddrSet::new()))
            .unwrap();
        assert_eq!(
            run_tokens(&input, &plain).0,
            out,
            "an empty set hides nothing"
        );
        // A range whose ends share no text cannot be searched for: left out whole.
        let odd = snat_set(&[Ipv4Addr::new(9, 255, 255, 255), Ipv4Addr::new(10, 0, 0, 0)]);
        let r = toward_bob(odd);
        assert_eq!(r.needles(Places::HEADERS).count(), 2, "the two rules' own");
        assert!(!r.tokens.unwrap().owns(Ipv4Addr::new(10, 0, 0, 0)));
    }

    #[test]
    fn hidden_then_restored_is_the_message_the_backend_wrote() {
        // Random messages naming other flows of a two-range pool wherever tokens
        // stand (bracketed URIs, Via sent-by with `received`/`rport`, natted Vias,
        // quoted `received` URIs), and the backend where the Request-URI and Route
        // set name it: what the phone receives names no back-side address, and the
        // restore turns it back byte for byte.
        let pool: Vec<Ipv4Addr> = (100..104)
            .map(|k| Ipv4Addr::new(198, 19, 0, k))
            .chain((1..3).map(|k| Ipv4Addr::new(198, 19, 2, k)))
            .collect();
        let set = snat_set(&pool);
        let (hide, restore) = (toward_bob(set), from_bob(set));
        let seed = std::cell::Cell::new(0x2545_f491_4f6c_dd1du64);
        let next = |m: u64| {
            let mut x = seed.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            seed.set(x);
            x % m
        };
        let mut tokens_seen = 0;
        for _ in 0..500 {
            let flow = || {
                let a = pool[next(pool.len() as u64) as usize];
                // Never B's own flow (1030), which goes to B and not back.
                let p = 1031 + next(31000) as u16;
                format!("{a}:{p}")
            };
            let ruri = if next(2) == 0 {
                format!("sip:alice@{}", flow())
            } else {
                "sip:198.19.1.1;lr".to_string()
            };
            let mut head = format!("OPTIONS {ruri} SIP/2.0\r\n");
            for _ in 0..1 + next(3) {
                head += &match next(4) {
                    0 => format!("Via: SIP/2.0/UDP {};branch=z9hG4bK{}\r\n", flow(), next(1000)),
                    1 => {
                        let f = flow();
                        let (a, p) = f.split_once(':').unwrap();
                        format!("Via: SIP/2.0/UDP {f};rport={p};received={a};branch=z9hG4bKr\r\n")
                    }
                    2 => format!(
                        "Via: SIP/2.0/UDP 10.0.0.{}:5060;received={};rport=4000;branch=z9hG4bKn\r\n",
                        1 + next(200),
                        flow().split_once(':').unwrap().0
                    ),
                    _ => "Via: SIP/2.0/UDP 198.18.0.50:5060;branch=z9hG4bKo\r\n".to_string(),
                };
            }
            for _ in 0..next(3) {
                head += &match next(3) {
                    0 => format!("Route: <sip:{};lr>\r\n", flow()),
                    1 => "Route: <sip:198.19.1.1;lr;ftag=x>\r\n".to_string(),
                    _ => format!("Route: <sip:{};lr>, <sip:198.19.1.1:5060;lr>\r\n", flow()),
                };
            }
            head += "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: rt\r\nCSeq: 1 OPTIONS\r\n";
            for _ in 0..next(3) {
                head += &match next(3) {
                    0 => format!("Contact: <sip:u@{}>;expires=60\r\n", flow()),
                    1 => format!("Contact: \"U\" <sip:u@{};transport=udp>\r\n", flow()),
                    _ => format!(
                        "Contact: <sip:u@198.18.0.50:5060>;received=\"sip:{}\"\r\n",
                        flow()
                    ),
                };
            }
            let input = msg(&format!("{head}Content-Length: N\r\n\r\n"));
            let (hidden, foreign) = run_tokens(&input, &hide);
            assert_eq!(foreign, 0);
            assert!(!hidden.contains("198.19."), "{hidden}");
            tokens_seen += hidden.matches(";slbf=").count();
            let (back, foreign) = run_tokens(hidden.as_bytes(), &restore);
            assert_eq!(foreign, 0);
            assert_eq!(back, text(&input), "hidden:\n{hidden}");
        }
        assert!(tokens_seen > 1000, "{tokens_seen} tokens");
    }

    #[test]
    fn error_indices_are_dense_and_names_unique() {
        let mut all = vec![
            RewriteError::TooManyRules,
            RewriteError::MalformedVia,
            RewriteError::MalformedAddress,
            RewriteError::UnsupportedBody,
            RewriteError::Ipv6Media,
            RewriteError::UnsupportedMediaAddress,
            RewriteError::MediaAddressConflict,
            RewriteError::RtcpNotAdjacent,
            RewriteError::ContentLengthNotFound,
            RewriteError::ForeignMessage,
            RewriteError::ForeignToken,
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
