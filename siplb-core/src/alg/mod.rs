//! The SIP ALG: address rewriting in SIP messages and their SDP bodies under NAT, the
//! job of the Linux kernel's `nf_conntrack_sip`/`nf_nat_sip` and of Kamailio's
//! `nathelper`, done on the packet's own bytes without allocation, lock, system call
//! or `unsafe`.
//!
//! - [`sdp`]: a zero-copy view over an SDP body: the addresses and ports a media
//!   relay rewrites, where they lie, and typed errors for bodies it cannot rewrite.
//! - [`edit`]: replacements collected while scanning, applied in place in one pass
//!   to the packet's buffer with Content-Length fixed, or refused with the buffer
//!   untouched.
//! - [`rewrite`](mod@rewrite): the rewriter, which turns address [`Rules`] and a
//!   [`MediaMapper`] into [`Edits`].
//! - [`token`]: flow tokens, the checked, keyed `slbf=` parameter that stands for
//!   another client's SNAT flow in what a phone receives, and the set of a farm's
//!   SNAT addresses a token may name.
//!
//! # Use
//!
//! ```
//! use siplb_core::alg::{rewrite, AddrRule, Edits, Outcome, Places, Rules};
//! use siplb_core::sip::{Limits, SipMessage};
//! use std::net::{Ipv4Addr, SocketAddrV4};
//!
//! let backend = SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 1), 5060);
//! let vip = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 100), 5060);
//! let mut rules = Rules::new();
//! rules.push(AddrRule { from: backend, to: vip, places: Places::ALL })?;
//!
//! let mut packet = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bKa\r\n\
//! From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: x\r\n\
//! CSeq: 1 INVITE\r\nContact: <sip:b@198.19.1.1>\r\nContent-Length: 0\r\n\r\n".to_vec();
//! let len = packet.len();
//! packet.resize(len + 128, 0); // the mbuf's tailroom
//!
//! let mut edits = Edits::new(); // one per worker, reused
//! let msg = SipMessage::parse(&packet[..len], &Limits::default())?;
//! let outcome = rewrite(&packet[..len], &msg, &rules, None, &mut edits)?;
//! assert!(matches!(outcome, Outcome::Rewritten { .. }));
//! let new_len = edits.apply(&mut packet)?;
//! let text = String::from_utf8_lossy(&packet[..new_len]);
//! assert!(text.contains("Contact: <sip:b@198.18.0.100>\r\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The caller then fixes what lies outside the SIP message: UDP length and checksum,
//! IPv4 total length and checksum, and for TCP the sequence numbers of the rest of
//! the stream (the length changes by `new_len - edits.msg_len()`).
//!
//! # What is rewritten, where
//!
//! A rule ([`AddrRule`]) says "the transport address A becomes B" in a set of
//! [`Places`]; an address with a port (URI host, Via sent-by, `rport` with its
//! address, `alias`) must match A's port, the default one (5060, 5061 for `sips:`
//! and TLS) when none is written; an address alone (`received`, `maddr`, SDP) must
//! match A's address. The places:
//!
//! | place | what |
//! |---|---|
//! | [`Places::REQUEST_URI`] | host:port of a request's Request-URI, its `maddr`/`alias` |
//! | [`Places::TOP_VIA`], [`Places::OTHER_VIA`] | sent-by, `received=`, `rport=` (with the address it goes with), `maddr=` of the top / every other Via value |
//! | [`Places::CONTACT`] | every Contact URI, its `maddr`/`alias` (Kamailio `ip~port~proto`) URI parameters, `received=` header parameter (an address, or a quoted URI as Kamailio's registrar writes it) |
//! | [`Places::ROUTE`] | Record-Route, Route, Path, Service-Route URIs, same parameters |
//! | [`Places::FROM_TO`] | From and To URIs whose host is the transport address |
//! | [`Places::SDP`] | `o=`, `c=` and `a=rtcp` addresses that no relayed stream accounts for |
//!
//! Flow tokens ([`FlowTokens`], [`Rules::set_tokens`]): a second kind of rule that
//! matches every port of a set of addresses (the farm's SNAT addresses), taken only
//! where no [`AddrRule`] matched:
//!
//! | place | hidden toward a client ([`TokenWay::Hide`]) | restored toward a backend ([`TokenWay::Restore`]) |
//! |---|---|---|
//! | Request-URI, Contact (and its quoted `received="sip:..."`), Route set | `SNAT:port` → `VIP:sipport;slbf=<token>`; a bare Contact or Route addr-spec gets `<>` so the parameter stays the URI's | `VIP[:port];slbf=<token>` → `SNAT:port`, the parameter removed |
//! | Via values | sent-by `SNAT:port` → `VIP:sipport;slbf=<token>`; `received=SNAT` → the VIP (a natted sent-by's `received` carries a token `(SNAT, 0)` of its own); `rport` stays | sent-by and `received=` back, the parameter removed |
//!
//! A token that does not decode to one of the set's addresses is left as it is and
//! counted ([`Edits::foreign_tokens`], [`RewriteError::ForeignToken`]). Not covered:
//! `maddr=`, `alias=` and unquoted `received=` URI or Contact parameters naming
//! another flow.
//!
//! Media: with a [`MediaMapper`], every stream of an SDP body that is not rejected
//! (port 0) is handed to it, resolved ([`MediaFlow`]: address, RTP and RTCP ports,
//! direction, hold), and its `m=` port, `a=rtcp` port and address, and the `c=` it
//! uses become the mapper's answer ([`Mapped`]); an IPv4 `o=` becomes the first
//! relayed stream's new address whatever it was (a media server keeps the caller's
//! origin, which names a balancer back address once the caller's side was
//! rewritten), and any other SDP address that was a relayed stream's becomes that
//! stream's new address. Hold keeps its
//! `c=IN IP4 0.0.0.0`; `a=candidate` and `a=remote-candidates` lines of relayed
//! streams are removed (they name the endpoint's own addresses).
//!
//! Both directions with the same rules:
//! - toward clients: the backend's `addr:port` → VIP:5060 in [`Places::ALL`]; in
//!   `snat` also the balancer's SNAT `addr:port` for this client's flow → the
//!   client's `addr:port` (a backend writes it into `received=`/`rport=`, `alias=`,
//!   a REGISTER 200's Contact, and the Request-URI of requests to a registered
//!   phone), and every other flow on the farm's SNAT addresses → a flow token
//!   (another phone's Via and Contact that a proxy forwards); SDP streams mapped onto
//!   the VIP.
//! - toward backends in `snat`: the client's `addr:port` (the packet's source) → the
//!   SNAT `addr:port` in `TOP_VIA | CONTACT | SDP` (add `FROM_TO` to hide it there
//!   too); flow tokens back to their flows; SDP streams mapped onto the SNAT address.
//!
//! Checked cheaply first: the header section (and, without a mapper, the body) is
//! searched for each rule's address text with a SIMD substring finder built once per
//! rule (for flow tokens, the text the set's ranges start with, or the VIP's);
//! each occurrence is then judged from the bytes around it (its header field,
//! and whether it follows `sip:`/`@`, a Via's transport, or `received=`, `maddr=`,
//! `alias=`), so only the neighbourhood of a hit is read. A message with nothing to
//! change is [`Outcome::Unchanged`] and no byte moves.
//!
//! # Limits
//!
//! - TLS (and SIP over WebSocket inside TLS) cannot be rewritten: the balancer does not
//!   terminate it. TLS farms need backends that advertise the VIP themselves.
//! - IPv4 only: rules are IPv4 transport addresses; an IPv6 host or `c=IN IP6` is left
//!   as it is by the rules, and a relayed stream with an IPv6 (or host name, or
//!   multicast) `c=` is an error ([`RewriteError::Ipv6Media`],
//!   [`RewriteError::UnsupportedMediaAddress`]). IPv6 is issue 17.
//! - Addresses are found by their dotted-quad text as [`std::net::Ipv4Addr`] prints
//!   it; one written with leading zeros (`198.019.1.1`) is not found.
//! - Headers other than those above (Refer-To, Replaces, P-Asserted-Identity,
//!   Diversion, ...) are identities, not transport addresses, and are not rewritten;
//!   nor are multipart bodies (a body that is not SDP but holds a rule's address is
//!   [`RewriteError::UnsupportedBody`]).
//! - At most [`MAX_RULES`](rewrite::MAX_RULES) rules,
//!   [`MAX_EDITS`](edit::MAX_EDITS) replacements and [`sdp::MAX_MEDIA`] streams per
//!   message; the result may not exceed the buffer or [`MAX_DATAGRAM`] bytes.
//!   Every refusal is a typed error with a dense [`RewriteError::index`] for
//!   counters, and leaves the packet as it was.

pub mod edit;
mod lex;
mod needle;
pub mod rewrite;
pub mod sdp;
pub mod token;

pub use edit::{EditError, Edits, MAX_DATAGRAM};
pub use rewrite::{
    rewrite, AddrRule, FlowTokens, Mapped, MediaError, MediaFlow, MediaMapper, Outcome, Places,
    RewriteError, Rules, TokenWay,
};
pub use sdp::{Sdp, SdpError};
pub use token::{AddrSet, TokenKey};
