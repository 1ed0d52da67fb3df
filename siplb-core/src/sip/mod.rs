//! The zero-copy SIP scanner of the hot path (RFC 3261 §7, §25).
//!
//! [`SipMessage::parse`] validates one message (a UDP datagram or a stream frame) in a
//! single pass over its header section and borrows what the balancer needs: start
//! line, top Via, From, To, Call-ID, CSeq, Max-Forwards, Expires, the Contact
//! `expires` of REGISTER transactions, Content-Length and where the body starts. It
//! never allocates, copies or panics, and its work is bounded by [`Limits`]; every
//! rejection is a [`SipError`] the dataplane counts by reason.
//!
//! Two tiers read the same grammar. Fast paths take the canonical spellings real
//! traffic uses (`Via: SIP/2.0/UDP host:port;branch=...`, `From: "Name"
//! <sip:user@host>;tag=...`, `Call-ID: token`, a field's name, long or compact, directly
//! followed by its colon, one line per field) and parse a field of interest while they
//! look for its line end; lines of other fields are only searched for their end.
//! Anything else (folding, white space before a colon or around `/` and `;`, IPv6,
//! quoted pairs, several values on a line, and every malformed line) falls back to the
//! general RFC 3261 grammar, field by field, which also decides every error and its
//! order. A fast path accepts a subset of what the general grammar accepts and returns
//! the same view; `parse_general` (hidden) runs the general grammar alone, and the tests
//! and the fuzz target check that both agree on every input.
//!
//! [`SteerView::scan`] is the light scan for messages of known dialogs: the start
//! line, Call-ID, To tag and CSeq, validated with the same grammar, the other fields
//! only stepped over (its doc says exactly what it checks).
//!
//! [`next_frame`] cuts a TCP byte stream into messages by Content-Length and
//! recognises CRLF keep-alives; [`StreamFramer`] reassembles segments on top of it.
//!
//! Decisions where RFC 3261 leaves room or real traffic bends it:
//! - Bytes after Content-Length in a datagram are ignored (§18.3); a Content-Length
//!   beyond the datagram is an error. Without Content-Length the body is the rest of
//!   the datagram; on a stream Content-Length is required.
//! - Parsing is eager: a malformed required field (or Via, Max-Forwards, Expires,
//!   Content-Length when present) fails `parse`, so accessors cannot fail. Via is
//!   optional; only its first value is read.
//! - Hosts are returned as written, IPv6 references with their brackets; escapes stay
//!   escaped. Non-SIP URIs (`tel:`, unknown schemes) are opaque (see [`SipUri`]).
//! - Header names are case-insensitive and every compact form is known
//!   ([`HeaderName`]); method names are case-sensitive (§7.1), so the CSeq method must
//!   match the request's byte for byte.
//! - Max-Forwards above 255, Expires and `expires` above 2³²−1 are errors (RFC 4475
//!   `scalar02`); a CSeq number is any 32-bit value.
//!
//! Full SIP types (building, rewriting every header) are rsip's job, off the hot path.

mod abnf;
mod caseless;
mod error;
mod framing;
mod header;
mod limits;
mod message;
mod method;
mod name_addr;
mod params;
mod steer;
mod uri;
mod via;

pub use error::SipError;
pub use framing::{next_frame, Frame, StreamFramer, StreamItem};
pub use header::{Header, HeaderName, Headers};
pub use limits::Limits;
pub use message::{CSeq, SipMessage, StartLine};
pub use method::Method;
pub use name_addr::NameAddr;
pub use steer::SteerView;
pub use uri::SipUri;
pub use via::Via;
