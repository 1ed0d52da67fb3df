//! The requests the client sends: REGISTER, INVITE (with an SDP body padded to a frame
//! size), ACK, BYE, OPTIONS. The top Via branch carries the send time (TSC), the slot
//! and a step number, so a response names its request without a lookup table.

use crate::text::{parse_hex, Out};
use std::net::Ipv4Addr;

/// The methods the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register = 0,
    Invite = 1,
    Ack = 2,
    Bye = 3,
    Options = 4,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Register,
        Kind::Invite,
        Kind::Ack,
        Kind::Bye,
        Kind::Options,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "REGISTER",
            Kind::Invite => "INVITE",
            Kind::Ack => "ACK",
            Kind::Bye => "BYE",
            Kind::Options => "OPTIONS",
        }
    }
}

/// What the top Via branch encodes: `z9hG4bK-` + 16 hex (TSC) + 8 hex (slot) + 8 hex
/// (step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Branch {
    pub tsc: u64,
    pub slot: u32,
    pub step: u32,
}

const BRANCH_PREFIX: &[u8] = b"z9hG4bK-";
pub const BRANCH_LEN: usize = 8 + 32;

impl Branch {
    fn write(&self, o: &mut Out<'_>) {
        o.put(BRANCH_PREFIX)
            .hex(self.tsc, 16)
            .hex(self.slot.into(), 8)
            .hex(self.step.into(), 8);
    }

    /// Reads a branch this generator wrote; `None` for anyone else's.
    pub fn parse(b: &[u8]) -> Option<Branch> {
        if b.len() != BRANCH_LEN || !b.starts_with(BRANCH_PREFIX) {
            return None;
        }
        let h = &b[BRANCH_PREFIX.len()..];
        Some(Branch {
            tsc: parse_hex(&h[..16])?,
            slot: parse_hex(&h[16..24])? as u32,
            step: parse_hex(&h[24..32])? as u32,
        })
    }
}

/// Everything that varies between two requests.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub kind: Kind,
    pub src_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    /// Identifies this generator run, so Call-IDs of two runs never meet in a balancer
    /// that stayed up.
    pub run: u32,
    pub call: u64,
    pub user: u32,
    pub cseq: u32,
    pub branch: Branch,
    /// The To tag of the dialog (ACK of a 2xx, BYE); empty outside a dialog.
    pub to_tag: &'a [u8],
    /// Carries credentials (the retry after a 401/407 challenge).
    pub auth: bool,
    /// Pads an INVITE's SDP so the SIP message has at least this many bytes.
    pub min_len: usize,
}

/// Width reserved for the Content-Length value, filled in once the body is written.
const CONTENT_LENGTH_WIDTH: usize = 5;

/// Writes the Call-ID value of call `call` of run `run`.
pub fn write_call_id(o: &mut Out<'_>, run: u32, call: u64) {
    o.hex(run.into(), 8)
        .byte(b'-')
        .hex(call, 16)
        .put(b"@siplb-gen");
}

/// Writes the request as SIP text into `out`; `None` if it does not fit.
pub fn write(r: &Request<'_>, out: &mut [u8]) -> Option<usize> {
    let mut o = Out::new(out);
    let method = r.kind.name().as_bytes();
    o.put(method).byte(b' ');
    match r.kind {
        Kind::Register => o.put(b"sip:").ip(r.dst_ip),
        _ => o
            .put(b"sip:service@")
            .ip(r.dst_ip)
            .byte(b':')
            .dec(r.dst_port.into()),
    };
    o.put(b" SIP/2.0\r\nVia: SIP/2.0/UDP ")
        .ip(r.src_ip)
        .byte(b':')
        .dec(r.src_port.into())
        .put(b";rport;branch=");
    r.branch.write(&mut o);
    o.put(b"\r\nMax-Forwards: 70\r\nFrom: <sip:u")
        .dec(r.user.into())
        .put(b"@siplb-gen.test>;tag=")
        .hex(r.call, 16)
        .put(b"\r\nTo: ");
    match r.kind {
        Kind::Register => o.put(b"<sip:u").dec(r.user.into()).put(b"@siplb-gen.test>"),
        _ => o.put(b"<sip:service@").ip(r.dst_ip).byte(b'>'),
    };
    if !r.to_tag.is_empty() {
        o.put(b";tag=").put(r.to_tag);
    }
    o.put(b"\r\nCall-ID: ");
    write_call_id(&mut o, r.run, r.call);
    o.put(b"\r\nCSeq: ")
        .dec(r.cseq.into())
        .byte(b' ')
        .put(method)
        .put(b"\r\n");
    if matches!(r.kind, Kind::Register | Kind::Invite) {
        o.put(b"Contact: <sip:u")
            .dec(r.user.into())
            .byte(b'@')
            .ip(r.src_ip)
            .byte(b':')
            .dec(r.src_port.into())
            .put(b">\r\n");
    }
    if r.kind == Kind::Register {
        o.put(b"Expires: 3600\r\n");
    }
    if r.auth {
        o.put(if r.kind == Kind::Register {
            b"Authorization: " as &[u8]
        } else {
            b"Proxy-Authorization: "
        });
        o.put(b"Digest username=\"u")
            .dec(r.user.into())
            .put(b"\", realm=\"siplb-gen\", nonce=\"")
            .hex(r.call, 16)
            .put(b"\", uri=\"sip:")
            .ip(r.dst_ip)
            .put(b"\", response=\"")
            .hex(r.call.rotate_left(17) ^ 0x5bd1_e995, 16)
            .hex(r.call, 16)
            .put(b"\"\r\n");
    }
    if r.kind == Kind::Invite {
        o.put(b"Content-Type: application/sdp\r\n");
    }
    o.put(b"User-Agent: siplb-gen\r\nContent-Length: ");
    let cl_at = o.len();
    o.fill(b' ', CONTENT_LENGTH_WIDTH).put(b"\r\n\r\n");
    let body_at = o.len();
    if r.kind == Kind::Invite {
        o.put(b"v=0\r\no=- ")
            .dec(r.call)
            .put(b" 1 IN IP4 ")
            .ip(r.src_ip)
            .put(b"\r\ns=-\r\nc=IN IP4 ")
            .ip(r.src_ip)
            .put(b"\r\nt=0 0\r\nm=audio ")
            .dec(crate::media::client_rtp_port(r.call).into())
            .put(b" RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
        const PAD_LINE: usize = b"a=x-pad:\r\n".len();
        if r.min_len > o.len() + PAD_LINE {
            let n = r.min_len - o.len() - PAD_LINE;
            o.put(b"a=x-pad:").fill(b'x', n).put(b"\r\n");
        }
    }
    let body_len = o.len().saturating_sub(body_at);
    let mut digits = [b' '; CONTENT_LENGTH_WIDTH];
    let mut v = body_len;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if v != 0 {
        return None;
    }
    // Right-aligned: the spaces before the number are white space after the colon.
    o.patch(cl_at, &digits);
    o.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use siplb_core::sip::{Limits, Method, SipMessage};

    fn sample(kind: Kind) -> Request<'static> {
        Request {
            kind,
            src_ip: Ipv4Addr::new(198, 18, 0, 10),
            src_port: 5070,
            dst_ip: Ipv4Addr::new(198, 18, 0, 2),
            dst_port: 5060,
            run: 0xabcd,
            call: 77,
            user: 12,
            cseq: 3,
            branch: Branch {
                tsc: 0x0123_4567_89ab_cdef,
                slot: 9,
                step: 2,
            },
            to_tag: b"",
            auth: false,
            min_len: 0,
        }
    }

    #[test]
    fn every_kind_parses_with_the_balancer_scanner() {
        let mut buf = [0u8; 2048];
        for kind in Kind::ALL {
            for auth in [false, true] {
                let mut r = sample(kind);
                r.auth = auth;
                if matches!(kind, Kind::Ack | Kind::Bye) {
                    r.to_tag = b"b1x42";
                }
                let n = write(&r, &mut buf).unwrap();
                let m = SipMessage::parse(&buf[..n], &Limits::default()).unwrap_or_else(|e| {
                    panic!("{kind:?}: {e:?}\n{}", String::from_utf8_lossy(&buf[..n]))
                });
                assert_eq!(
                    m.method().unwrap(),
                    Method::from_bytes(kind.name().as_bytes())
                );
                assert_eq!(m.call_id(), b"0000abcd-000000000000004d@siplb-gen");
                assert_eq!(m.cseq().seq, 3);
                let via = m.via().unwrap();
                assert_eq!(Branch::parse(via.branch.unwrap()), Some(r.branch));
                assert_eq!(via.port, Some(5070));
                assert_eq!(m.to().tag, (!r.to_tag.is_empty()).then_some(r.to_tag));
                assert_eq!(m.content_length(), Some(m.body().len()));
                if kind == Kind::Register {
                    assert_eq!(m.to().uri.user, Some(&b"u12"[..]));
                }
            }
        }
    }

    #[test]
    fn invite_is_padded_to_the_requested_size() {
        let mut buf = [0u8; 2048];
        let mut r = sample(Kind::Invite);
        let plain = write(&r, &mut buf).unwrap();
        r.min_len = plain + 300;
        let n = write(&r, &mut buf).unwrap();
        assert_eq!(n, plain + 300);
        let m = SipMessage::parse(&buf[..n], &Limits::default()).unwrap();
        assert_eq!(m.body().len(), m.content_length().unwrap());
        assert!(m.body().ends_with(b"xxxx\r\n"));
    }

    #[test]
    fn too_small_buffer_is_refused() {
        let mut buf = [0u8; 100];
        assert_eq!(write(&sample(Kind::Options), &mut buf), None);
    }

    #[test]
    fn foreign_branches_are_not_ours() {
        assert_eq!(Branch::parse(b"z9hG4bK776asdhds"), None);
        assert_eq!(Branch::parse(&[b'x'; BRANCH_LEN]), None);
    }
}
