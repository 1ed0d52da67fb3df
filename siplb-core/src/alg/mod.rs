//! The SIP ALG: address rewriting in SIP messages and their SDP bodies under NAT, the
//! job of the Linux kernel's `nf_conntrack_sip`/`nf_nat_sip` and of Kamailio's
//! `nathelper`, done on the packet's own bytes without allocation, lock or system
//! call.
//!
//! - [`sdp`]: a zero-copy view over an SDP body: the addresses and ports a media
//!   relay rewrites, where they lie, and typed errors for bodies it cannot rewrite.
//! - [`edit`]: replacements collected while scanning, applied in place in one pass
//!   to the packet's buffer with Content-Length fixed, or refused with the buffer
//!   untouched.

pub mod edit;
mod lex;
pub mod sdp;
