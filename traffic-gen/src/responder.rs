//! The stateless UAS that answers as N backends: 100/180/200 to INVITE, nothing to
//! ACK, 200 to the rest, optionally a 401 (REGISTER) / 407 (INVITE) challenge first.
//!
//! A response goes back to the request's source IP, port and MAC, and copies every
//! Via in order, From, To (with a tag added), Call-ID and CSeq, so it works behind a
//! balancer in dnat or snat mode as well as behind a proxy that forwards from its own
//! socket. Each request is also recorded in the stickiness account.
//!
//! With media (`ResponderConfig::media`) the 200 to an INVITE carries an SDP (the
//! backend's address, a port of its own per call), and the backend sends RTP to the
//! address the INVITE's SDP named (through a relaying balancer: the VIP's backend leg).

use crate::frame::{self, Endpoint, Incoming};
use crate::media::{self, MediaSide};
use crate::request::Kind;
use crate::scan::{self, Field};
use crate::stickiness::Stickiness;
use crate::text::Out;
use siplb_core::hash::hash64;
use siplb_core::sip::Method;
use siplb_core::wire::arp;
use siplb_core::wire::MacAddr;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy)]
pub struct ResponderConfig {
    /// Backend i answers at `first_backend + i`.
    pub first_backend: Ipv4Addr,
    pub backends: u16,
    /// The UDP port the backends listen on.
    pub sip_port: u16,
    pub challenge: bool,
    /// RTP payload bytes per packet when calls carry media (`None`: signalling only).
    pub media: Option<usize>,
}

/// Counters of the responder.
#[derive(Debug, Clone, Default)]
pub struct ResponderStats {
    /// Requests received, by `Kind` (index), and other methods.
    pub received: [u64; 5],
    pub received_other: u64,
    /// Datagrams to a backend that did not parse as a SIP request.
    pub malformed: u64,
    pub responses: u64,
    pub challenges: u64,
    /// Requests received per backend.
    pub per_backend: Vec<u64>,
}

const INVITE_CODES: &[u16] = &[100, 180, 200];
const OK: &[u16] = &[200];
const UNAUTHORIZED: &[u16] = &[401];
const PROXY_AUTH: &[u16] = &[407];
const NONE: &[u16] = &[];
/// Room for the header fields copied from a request into its responses.
const COPIED_MAX: usize = 4096;

/// What to do with a frame that arrived at the backends' port.
pub enum Action {
    Ignore,
    /// Answer an ARP request for a backend address.
    ArpReply {
        ip: Ipv4Addr,
        asker_mac: MacAddr,
        asker_ip: Ipv4Addr,
    },
    /// Send these responses, in order (possibly none: ACK), with [`Responder::write`].
    Answer(Answer),
}

/// The responses a request gets; the header fields they copy are kept by the
/// responder until the next request.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    method: Method,
    client: Endpoint,
    backend: Endpoint,
    call_hash: u64,
    pub codes: &'static [u16],
    /// The backend's RTP port, announced in the 200's SDP (media only).
    media_port: Option<u16>,
}

pub struct Responder {
    cfg: ResponderConfig,
    /// Via (all, in order), From, To (tagged), Call-ID and CSeq of the last request,
    /// as lines ready to copy into each of its responses.
    copied: Box<[u8; COPIED_MAX]>,
    copied_len: usize,
    /// Numbers the To tags this responder adds.
    tags: u64,
    pub stats: ResponderStats,
    pub stickiness: Stickiness,
    /// The backends' RTP streams, with `ResponderConfig::media`.
    pub media: Option<MediaSide>,
}

const VIA: u8 = 1;
const FROM: u8 = 2;
const TO: u8 = 4;
const CALL_ID: u8 = 8;
const CSEQ: u8 = 16;

impl Responder {
    /// `calls` sizes the stickiness table (calls in flight, with a large margin).
    pub fn new(cfg: ResponderConfig, calls: usize) -> Self {
        Responder {
            cfg,
            copied: Box::new([0; COPIED_MAX]),
            copied_len: 0,
            tags: 0,
            stats: ResponderStats {
                per_backend: vec![0; usize::from(cfg.backends)],
                ..Default::default()
            },
            stickiness: Stickiness::new((calls * 64).clamp(1 << 16, 1 << 22)),
            media: cfg
                .media
                .map(|payload| MediaSide::new(media::BACKEND_RTP_BASE, calls, payload)),
        }
    }

    pub fn config(&self) -> &ResponderConfig {
        &self.cfg
    }

    /// The index of the backend at `ip`, if it is one of ours.
    pub fn backend_index(&self, ip: Ipv4Addr) -> Option<u16> {
        let i = u32::from(ip).wrapping_sub(u32::from(self.cfg.first_backend));
        (i < u32::from(self.cfg.backends)).then_some(i as u16)
    }

    pub fn backend_ip(&self, i: u16) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cfg.first_backend) + u32::from(i))
    }

    /// Whether a frame is for the backends (an ARP for one of them, or a datagram to
    /// one of them).
    pub fn wants(&self, incoming: &Incoming<'_>) -> bool {
        match incoming {
            Incoming::Arp { target_ip, .. } => self.backend_index(*target_ip).is_some(),
            Incoming::Udp { dst, .. } => self.backend_index(dst.ip).is_some(),
            Incoming::Other => false,
        }
    }

    /// Decides the answer to one frame and accounts for it.
    pub fn handle(&mut self, incoming: Incoming<'_>) -> Action {
        match incoming {
            Incoming::Arp {
                op: arp::OP_REQUEST,
                sender_mac,
                sender_ip,
                target_ip,
            } if self.backend_index(target_ip).is_some() && sender_ip != target_ip => {
                Action::ArpReply {
                    ip: target_ip,
                    asker_mac: sender_mac,
                    asker_ip: sender_ip,
                }
            }
            Incoming::Udp { dst, payload, .. }
                if dst.port != self.cfg.sip_port && media::is_rtp(payload) =>
            {
                if let Some(m) = self.media.as_mut() {
                    m.receive(dst.port, payload);
                }
                Action::Ignore
            }
            Incoming::Udp { src, dst, payload } if dst.port == self.cfg.sip_port => {
                let Some(bi) = self.backend_index(dst.ip) else {
                    return Action::Ignore;
                };
                let Some((method, call_id, credentials)) = self.read_request(bi, payload) else {
                    self.stats.malformed += 1;
                    return Action::Ignore;
                };
                self.stats.per_backend[usize::from(bi)] += 1;
                let call_hash = hash64(call_id);
                self.stickiness.record(call_hash, bi);
                let kind = match method {
                    Method::Register => Some(Kind::Register),
                    Method::Invite => Some(Kind::Invite),
                    Method::Ack => Some(Kind::Ack),
                    Method::Bye => Some(Kind::Bye),
                    Method::Options => Some(Kind::Options),
                    _ => None,
                };
                match kind {
                    Some(k) => self.stats.received[k as usize] += 1,
                    None => self.stats.received_other += 1,
                }
                let codes = match method {
                    Method::Ack => NONE,
                    Method::Invite if self.cfg.challenge && !credentials => PROXY_AUTH,
                    Method::Invite => INVITE_CODES,
                    Method::Register if self.cfg.challenge && !credentials => UNAUTHORIZED,
                    _ => OK,
                };
                if matches!(codes.first(), Some(401 | 407)) {
                    self.stats.challenges += 1;
                }
                self.stats.responses += codes.len() as u64;
                let media_port = match self.media.as_mut() {
                    Some(m) if codes == INVITE_CODES => {
                        let port = m.port(m.stats.legs + m.stats.no_sdp);
                        match media::sdp_audio(media::body_of(payload)) {
                            Some((ip, their_port)) => {
                                let (client_ssrc, ours) = media::ssrcs(call_hash);
                                let to = Endpoint {
                                    mac: src.mac,
                                    ip,
                                    port: their_port,
                                };
                                m.open((dst.ip, port), to, ours, client_ssrc);
                            }
                            None => m.stats.no_sdp += 1,
                        }
                        Some(port)
                    }
                    _ => None,
                };
                Action::Answer(Answer {
                    method,
                    client: src,
                    backend: dst,
                    call_hash,
                    codes,
                    media_port,
                })
            }
            _ => Action::Ignore,
        }
    }

    /// Reads a request (the lean scan of `scan`) and keeps the fields its responses
    /// copy; returns its method, Call-ID and whether it carries credentials, `None`
    /// if it is not a request or lacks a required field.
    fn read_request<'p>(
        &mut self,
        backend: u16,
        payload: &'p [u8],
    ) -> Option<(Method, &'p [u8], bool)> {
        let (start, fields) = scan::lines(payload)?;
        let sp = memchr::memchr(b' ', start)?;
        let method_raw = &start[..sp];
        if method_raw.starts_with(b"SIP/") || !start.ends_with(b" SIP/2.0") {
            return None;
        }
        self.tags += 1;
        let tag = self.tags;
        let mut o = Out::new(&mut self.copied[..]);
        let (mut seen, mut call_id, mut credentials) = (0u8, None, false);
        for (field, _, value) in fields {
            let (bit, name): (u8, &[u8]) = match field {
                Field::Via => (VIA, b"Via: "),
                Field::From => (FROM, b"From: "),
                Field::To => (TO, b"To: "),
                Field::CallId => {
                    call_id = Some(value);
                    (CALL_ID, b"Call-ID: ")
                }
                Field::CSeq => (CSEQ, b"CSeq: "),
                Field::Credentials => {
                    credentials = true;
                    continue;
                }
                Field::Other => continue,
            };
            seen |= bit;
            o.put(name).put(value);
            if field == Field::To && scan::param(value, b"tag").is_none() {
                // The tag names the backend that answered and the transaction.
                o.put(b";tag=b").dec(backend.into()).byte(b'x').hex(tag, 8);
            }
            o.put(b"\r\n");
        }
        self.copied_len = o.finish()?;
        (seen == VIA | FROM | TO | CALL_ID | CSEQ).then(|| {
            (
                Method::from_bytes(method_raw),
                call_id.unwrap_or_default(),
                credentials,
            )
        })
    }

    /// Writes the whole frame of response `code` to the last request handled, from a
    /// backend port with MAC `our_mac`; returns its length, `None` if `out` is too
    /// small.
    pub fn write(&self, a: &Answer, code: u16, our_mac: MacAddr, out: &mut [u8]) -> Option<usize> {
        let sip = out.get_mut(frame::HEADERS_LEN..)?;
        let mut o = Out::new(sip);
        o.put(b"SIP/2.0 ")
            .dec(code.into())
            .byte(b' ')
            .put(reason(code))
            .put(b"\r\n")
            .put(&self.copied[..self.copied_len]);
        if code == 200 && a.method == Method::Invite {
            o.put(b"Contact: <sip:")
                .ip(a.backend.ip)
                .byte(b':')
                .dec(a.backend.port.into())
                .put(b">\r\n");
        }
        if code == 401 || code == 407 {
            o.put(if code == 401 {
                b"WWW-Authenticate: " as &[u8]
            } else {
                b"Proxy-Authenticate: "
            })
            .put(b"Digest realm=\"siplb-gen\", nonce=\"")
            .hex(a.call_hash, 16)
            .put(b"\", algorithm=MD5\r\n");
        }
        let mut sdp = [0u8; 256];
        let sdp_len = match a.media_port {
            Some(port) if code == 200 => {
                media::write_sdp(&mut sdp, a.call_hash, a.backend.ip, port)?
            }
            _ => 0,
        };
        if sdp_len > 0 {
            o.put(b"Content-Type: application/sdp\r\n");
        }
        o.put(b"Server: siplb-gen\r\nContent-Length: ")
            .dec(sdp_len as u64)
            .put(b"\r\n\r\n")
            .put(&sdp[..sdp_len]);
        let n = o.finish()?;
        let src = Endpoint {
            mac: our_mac,
            ..a.backend
        };
        Some(frame::write_udp_headers(
            out,
            src,
            a.client,
            n,
            a.call_hash as u16,
        ))
    }
}

fn reason(code: u16) -> &'static [u8] {
    match code {
        100 => b"Trying",
        180 => b"Ringing",
        200 => b"OK",
        401 => b"Unauthorized",
        407 => b"Proxy Authentication Required",
        _ => b"Response",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{self, Branch, Request};
    use siplb_core::sip::{HeaderName, Limits, SipMessage};

    const BACKEND_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
    const LB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn responder(challenge: bool) -> Responder {
        Responder::new(
            ResponderConfig {
                first_backend: Ipv4Addr::new(198, 18, 1, 11),
                backends: 3,
                sip_port: 5060,
                challenge,
                media: None,
            },
            16,
        )
    }

    /// A request frame as the balancer forwards it in dnat mode: client source, backend
    /// destination, the balancer's MAC.
    fn request_frame(kind: Kind, backend: u8, call: u64, auth: bool, buf: &mut [u8]) -> usize {
        let r = Request {
            kind,
            src_ip: Ipv4Addr::new(198, 18, 0, 10),
            src_port: 5070,
            dst_ip: Ipv4Addr::new(198, 18, 0, 2),
            dst_port: 5060,
            run: 1,
            call,
            user: 5,
            cseq: 1,
            branch: Branch {
                tsc: 99,
                slot: 1,
                step: 0,
            },
            to_tag: b"",
            auth,
            min_len: 0,
        };
        let n = request::write(&r, &mut buf[frame::HEADERS_LEN..]).unwrap();
        // A proxy in front adds its own Via on top.
        let mut with_via = Vec::new();
        let text = &buf[frame::HEADERS_LEN..frame::HEADERS_LEN + n];
        let line_end = text.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        with_via.extend_from_slice(&text[..line_end]);
        with_via.extend_from_slice(b"Via: SIP/2.0/UDP 198.18.1.1:5060;branch=z9hG4bKproxy\r\n");
        with_via.extend_from_slice(&text[line_end..]);
        buf[frame::HEADERS_LEN..frame::HEADERS_LEN + with_via.len()].copy_from_slice(&with_via);
        frame::write_udp_headers(
            buf,
            Endpoint {
                mac: LB_MAC,
                ip: Ipv4Addr::new(198, 18, 0, 10),
                port: 5070,
            },
            Endpoint {
                mac: BACKEND_MAC,
                ip: Ipv4Addr::new(198, 18, 1, 11 + backend),
                port: 5060,
            },
            with_via.len(),
            1,
        )
    }

    #[test]
    fn invite_gets_100_180_200_back_to_its_source_with_vias_in_order() {
        let mut r = responder(false);
        let mut req = [0u8; 2048];
        let n = request_frame(Kind::Invite, 1, 7, false, &mut req);
        let Action::Answer(a) = r.handle(frame::classify(&req[..n])) else {
            panic!("no answer");
        };
        assert_eq!(a.codes, &[100, 180, 200]);
        let mut out = [0u8; 2048];
        let m = r.write(&a, 200, BACKEND_MAC, &mut out).unwrap();
        let Incoming::Udp { src, dst, payload } = frame::classify(&out[..m]) else {
            panic!("not UDP");
        };
        assert_eq!(
            (src.ip, src.port, src.mac),
            (Ipv4Addr::new(198, 18, 1, 12), 5060, BACKEND_MAC)
        );
        assert_eq!(
            (dst.ip, dst.port, dst.mac),
            (Ipv4Addr::new(198, 18, 0, 10), 5070, LB_MAC)
        );
        let resp = SipMessage::parse(payload, &Limits::default()).unwrap();
        assert_eq!(resp.status(), Some(200));
        assert_eq!(resp.via().unwrap().branch, Some(&b"z9hG4bKproxy"[..]));
        let vias: Vec<_> = resp
            .headers()
            .filter(|h| h.name == HeaderName::Via)
            .collect();
        assert_eq!(vias.len(), 2);
        assert!(
            Branch::parse(&vias[1].value[vias[1].value.len() - request::BRANCH_LEN..]).is_some()
        );
        assert_eq!(resp.call_id(), b"00000001-0000000000000007@siplb-gen");
        assert_eq!(resp.cseq().method, Method::Invite);
        assert!(resp.to().tag.unwrap().starts_with(b"b1x"));
        assert!(resp.headers().any(|h| h.name == HeaderName::Contact));
        assert_eq!(r.stats.received[Kind::Invite as usize], 1);
        assert_eq!(r.stats.per_backend, vec![0, 1, 0]);
    }

    #[test]
    fn ack_is_not_answered_and_others_get_200() {
        let mut r = responder(false);
        let mut req = [0u8; 2048];
        let n = request_frame(Kind::Ack, 0, 7, false, &mut req);
        assert!(
            matches!(r.handle(frame::classify(&req[..n])), Action::Answer(a) if a.codes.is_empty())
        );
        for k in [Kind::Bye, Kind::Options, Kind::Register] {
            let n = request_frame(k, 0, 8, false, &mut req);
            assert!(
                matches!(r.handle(frame::classify(&req[..n])), Action::Answer(a) if a.codes == [200])
            );
        }
    }

    #[test]
    fn challenge_until_credentials() {
        let mut r = responder(true);
        let mut req = [0u8; 2048];
        let mut out = [0u8; 2048];
        for (kind, code) in [(Kind::Register, 401), (Kind::Invite, 407)] {
            let n = request_frame(kind, 2, 9, false, &mut req);
            let Action::Answer(a) = r.handle(frame::classify(&req[..n])) else {
                panic!();
            };
            assert_eq!(a.codes, &[code]);
            let m = r.write(&a, code, BACKEND_MAC, &mut out).unwrap();
            let Incoming::Udp { payload, .. } = frame::classify(&out[..m]) else {
                panic!();
            };
            let text = String::from_utf8_lossy(payload);
            assert!(
                text.contains("Authenticate: Digest realm=\"siplb-gen\""),
                "{text}"
            );
            let n = request_frame(kind, 2, 9, true, &mut req);
            assert!(
                matches!(r.handle(frame::classify(&req[..n])), Action::Answer(a) if a.codes.last() == Some(&200))
            );
        }
        assert_eq!(r.stats.challenges, 2);
    }

    #[test]
    fn split_dialogs_are_counted_at_the_backends() {
        let mut r = responder(false);
        let mut req = [0u8; 2048];
        for (call, backend) in [(1, 0), (1, 0), (2, 1), (1, 2), (2, 1)] {
            let n = request_frame(Kind::Options, backend, call, false, &mut req);
            r.handle(frame::classify(&req[..n]));
        }
        assert_eq!(r.stickiness.split_dialogs, 1);
        assert_eq!(r.stickiness.split_messages, 1);
    }

    #[test]
    fn requests_without_a_required_field_or_responses_are_malformed() {
        let mut r = responder(false);
        let mut req = [0u8; 2048];
        let n = request_frame(Kind::Options, 0, 3, false, &mut req);
        let text = req[frame::HEADERS_LEN..n].to_vec();
        let pos = text.windows(9).position(|w| w == b"Call-ID: ").unwrap();
        let mut broken = text.clone();
        broken[pos..pos + 7].copy_from_slice(b"X-Nope:");
        let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n".to_vec();
        for payload in [broken, response] {
            let incoming = Incoming::Udp {
                src: Endpoint {
                    mac: LB_MAC,
                    ip: Ipv4Addr::new(198, 18, 0, 10),
                    port: 5070,
                },
                dst: Endpoint {
                    mac: BACKEND_MAC,
                    ip: Ipv4Addr::new(198, 18, 1, 11),
                    port: 5060,
                },
                payload: &payload,
            };
            assert!(matches!(r.handle(incoming), Action::Ignore));
        }
        assert_eq!(r.stats.malformed, 2);
        assert_eq!(r.stats.per_backend, vec![0, 0, 0]);
    }

    #[test]
    fn arp_for_backends_only() {
        let mut r = responder(false);
        let mut f = [0u8; 60];
        let n = frame::write_arp_request(
            &mut f,
            LB_MAC,
            Ipv4Addr::new(198, 18, 1, 1),
            Ipv4Addr::new(198, 18, 1, 13),
        );
        assert!(
            matches!(r.handle(frame::classify(&f[..n])), Action::ArpReply { ip, .. } if ip == Ipv4Addr::new(198, 18, 1, 13))
        );
        let n = frame::write_arp_request(
            &mut f,
            LB_MAC,
            Ipv4Addr::new(198, 18, 1, 1),
            Ipv4Addr::new(198, 18, 1, 14),
        );
        assert!(matches!(r.handle(frame::classify(&f[..n])), Action::Ignore));
    }
}
