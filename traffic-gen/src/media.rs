//! RTP for the media mode (`--rtp-streams`): each side of a call sends RTP where the
//! SDP it *received* says, and checks that what arrives is the other side's stream.
//!
//! A `MediaSide` is one side's streams (the client's or the backends'): the legs it
//! sends (local address and RTP port → the address and port the peer's SDP named), and
//! per local RTP port the SSRC expected there. Through a balancer that relays media
//! (siplb in dnat) the SDPs name the VIP's legs, so a stream delivered to the wrong
//! port, or another stream's packets, show up as `misdelivered`. SSRCs come from the
//! Call-ID's hash (low half: the client's stream, high half: the backend's), which
//! both sides know without talking. Legs are opened while calls are set up; sending
//! and receiving write or read fixed offsets and allocate nothing.

use crate::frame::{self, Endpoint};
use crate::text::Out;
use std::net::Ipv4Addr;

/// RTP fixed header (RFC 3550 §5.1): V=2, no padding, extension or CSRC.
pub const RTP_HEADER_LEN: usize = 12;
/// Payload type 0: PCMU (RFC 3551 §6), 8000 Hz.
const PT_PCMU: u8 = 0;
/// PCMU silence.
const PCMU_SILENCE: u8 = 0xff;
/// Local RTP ports per side: port `base + 2 i` for stream slot `i`.
pub const PORT_SLOTS: u16 = 20_000;
/// The client's first RTP port (the INVITE's SDP names `CLIENT_RTP_BASE + 2 (call %
/// PORT_SLOTS)`).
pub const CLIENT_RTP_BASE: u16 = 10_000;
/// The backends' first RTP port.
pub const BACKEND_RTP_BASE: u16 = 20_000;

/// The client's RTP port for call `call`.
pub fn client_rtp_port(call: u64) -> u16 {
    CLIENT_RTP_BASE + 2 * (call % u64::from(PORT_SLOTS)) as u16
}

/// SSRCs of a call's two streams from its Call-ID hash: (client's, backend's).
pub fn ssrcs(call_hash: u64) -> (u32, u32) {
    (call_hash as u32, (call_hash >> 32) as u32)
}

/// Whether a datagram looks like RTP (version 2, a full fixed header); SIP starts with
/// a letter, so the two never mix.
#[inline]
pub fn is_rtp(payload: &[u8]) -> bool {
    payload.len() >= RTP_HEADER_LEN && payload[0] & 0xc0 == 0x80
}

/// The body of a SIP message: what follows the empty line (empty without one).
pub fn body_of(msg: &[u8]) -> &[u8] {
    memchr::memmem::find(msg, b"\r\n\r\n").map_or(&[], |at| &msg[at + 4..])
}

/// The address and port an SDP body offers for audio: the `m=audio` port and the
/// `c=IN IP4` address (media-level if the stream has one, else session-level). `None`
/// without either, or for an IPv6 or host-name `c=`.
pub fn sdp_audio(body: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let (mut session_c, mut media_c, mut port) = (None, None, None);
    for line in body.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"m=") {
            // Only the first audio stream counts; a later m= line ends its section.
            if port.is_some() {
                break;
            }
            let mut f = rest.split(|&c| c == b' ');
            if f.next() == Some(b"audio") {
                port = f
                    .next()
                    .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
            }
        } else if let Some(addr) = line.strip_prefix(b"c=IN IP4 ") {
            let ip = std::str::from_utf8(addr).ok()?.trim().parse().ok()?;
            if port.is_some() {
                media_c = Some(ip);
            } else {
                session_c = Some(ip);
            }
        }
    }
    Some((media_c.or(session_c)?, port?))
}

/// Writes an SDP offering PCMU audio at `ip`:`port`; `None` if it does not fit.
pub fn write_sdp(out: &mut [u8], session: u64, ip: Ipv4Addr, port: u16) -> Option<usize> {
    let mut o = Out::new(out);
    o.put(b"v=0\r\no=- ")
        .dec(session)
        .put(b" 1 IN IP4 ")
        .ip(ip)
        .put(b"\r\ns=-\r\nc=IN IP4 ")
        .ip(ip)
        .put(b"\r\nt=0 0\r\nm=audio ")
        .dec(port.into())
        .put(b" RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
    o.finish()
}

/// One stream this side sends.
#[derive(Debug, Clone, Copy)]
struct Leg {
    src_ip: Ipv4Addr,
    src_port: u16,
    /// Where the peer's SDP said to send (MAC: the next hop's).
    dst: Endpoint,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
}

/// Counters of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Streams opened (the peer's SDP named where to send).
    pub legs: u64,
    /// Calls whose SDP named no usable IPv4 audio address (no leg opened).
    pub no_sdp: u64,
    pub sent: u64,
    /// RTP packets of the expected stream at one of this side's RTP ports.
    pub received: u64,
    pub received_bytes: u64,
    /// RTP at a port this side never announced, or with another stream's SSRC.
    pub misdelivered: u64,
}

/// One side's RTP streams: what it sends and what it expects.
pub struct MediaSide {
    base: u16,
    legs: Vec<Leg>,
    next: usize,
    /// SSRC expected at local port `base + 2 i`, by `i`.
    expected: Vec<Option<u32>>,
    payload_len: usize,
    pub stats: MediaStats,
}

impl MediaSide {
    /// A side whose RTP ports start at `base`, with room for `streams` legs and RTP
    /// payloads of `payload_len` bytes.
    pub fn new(base: u16, streams: usize, payload_len: usize) -> Self {
        MediaSide {
            base,
            legs: Vec::with_capacity(streams),
            next: 0,
            expected: vec![None; usize::from(PORT_SLOTS)],
            payload_len,
            stats: MediaStats::default(),
        }
    }

    /// The local RTP port of stream slot `i`.
    pub fn port(&self, i: u64) -> u16 {
        self.base + 2 * (i % u64::from(PORT_SLOTS)) as u16
    }

    /// Opens a stream from `src` (announced in this side's SDP) to `dst` (named by the
    /// peer's SDP) with SSRC `ssrc_out`, and expects the peer's stream, SSRC
    /// `ssrc_in`, at `src`'s port.
    pub fn open(&mut self, src: (Ipv4Addr, u16), dst: Endpoint, ssrc_out: u32, ssrc_in: u32) {
        if let Some(e) = self.slot_of(src.1) {
            self.expected[e] = Some(ssrc_in);
        }
        self.legs.push(Leg {
            src_ip: src.0,
            src_port: src.1,
            dst,
            ssrc: ssrc_out,
            seq: 0,
            timestamp: 0,
        });
        self.stats.legs += 1;
    }

    pub fn has_legs(&self) -> bool {
        !self.legs.is_empty()
    }

    fn slot_of(&self, port: u16) -> Option<usize> {
        let off = port.checked_sub(self.base)?;
        (off % 2 == 0 && off / 2 < PORT_SLOTS).then_some(usize::from(off / 2))
    }

    /// Writes the next packet of the next stream (round robin) into `out`, from
    /// `src_mac`; returns the frame length, `None` without streams or room.
    #[inline]
    pub fn emit(&mut self, src_mac: siplb_core::wire::MacAddr, out: &mut [u8]) -> Option<usize> {
        let n = self.legs.len();
        if n == 0 {
            return None;
        }
        if self.next >= n {
            self.next = 0;
        }
        let leg = &mut self.legs[self.next];
        self.next += 1;
        let len = RTP_HEADER_LEN + self.payload_len;
        let rtp = out.get_mut(frame::HEADERS_LEN..frame::HEADERS_LEN + len)?;
        rtp[0] = 0x80;
        rtp[1] = PT_PCMU;
        rtp[2..4].copy_from_slice(&leg.seq.to_be_bytes());
        rtp[4..8].copy_from_slice(&leg.timestamp.to_be_bytes());
        rtp[8..12].copy_from_slice(&leg.ssrc.to_be_bytes());
        rtp[RTP_HEADER_LEN..].fill(PCMU_SILENCE);
        let frame_len = frame::write_udp_headers(
            out,
            Endpoint {
                mac: src_mac,
                ip: leg.src_ip,
                port: leg.src_port,
            },
            leg.dst,
            len,
            leg.seq,
        );
        leg.seq = leg.seq.wrapping_add(1);
        // One sample per byte at 8000 Hz.
        leg.timestamp = leg.timestamp.wrapping_add(self.payload_len as u32);
        self.stats.sent += 1;
        Some(frame_len)
    }

    /// Accounts for an RTP datagram (`is_rtp`) that arrived at local port `port`.
    #[inline]
    pub fn receive(&mut self, port: u16, payload: &[u8]) {
        let ssrc = u32::from_be_bytes([payload[8], payload[9], payload[10], payload[11]]);
        let expected = self.slot_of(port).and_then(|i| self.expected[i]);
        if expected == Some(ssrc) {
            self.stats.received += 1;
            self.stats.received_bytes += payload.len() as u64;
        } else {
            self.stats.misdelivered += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Incoming;
    use siplb_core::wire::MacAddr;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    #[test]
    fn sdp_names_the_audio_address_and_port() {
        let mut b = [0u8; 256];
        let n = write_sdp(&mut b, 7, A, 10_002).unwrap();
        assert_eq!(sdp_audio(&b[..n]), Some((A, 10_002)));
        let media_level = b"v=0\r\nc=IN IP4 198.18.0.10\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.18.0.2\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 198.18.0.99\r\n";
        assert_eq!(sdp_audio(media_level), Some((VIP, 4000)));
        assert_eq!(sdp_audio(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"), None);
        assert_eq!(
            sdp_audio(b"c=IN IP6 2001:2::1\r\nm=audio 4000 RTP/AVP 0\r\n"),
            None
        );
        assert_eq!(
            sdp_audio(b"c=IN IP4 198.18.0.2\r\nm=video 4000 RTP/AVP 0\r\n"),
            None
        );
        assert_eq!(
            body_of(b"INVITE x SIP/2.0\r\nA: b\r\n\r\nv=0\r\n"),
            b"v=0\r\n"
        );
        assert_eq!(body_of(b"no end"), b"");
    }

    #[test]
    fn rtp_frames_go_where_the_sdp_said_and_are_counted_by_ssrc() {
        let (mac_a, mac_b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let mut sender = MediaSide::new(CLIENT_RTP_BASE, 4, 160);
        let mut receiver = MediaSide::new(BACKEND_RTP_BASE, 4, 160);
        let (client_ssrc, backend_ssrc) = ssrcs(0x1111_2222_3333_4444);
        let local = (A, sender.port(3));
        let to = Endpoint {
            mac: mac_b,
            ip: VIP,
            port: 40_000,
        };
        sender.open(local, to, client_ssrc, backend_ssrc);
        receiver.open(
            (VIP, receiver.port(0)),
            Endpoint {
                mac: mac_a,
                ip: A,
                port: local.1,
            },
            backend_ssrc,
            client_ssrc,
        );
        let mut f = [0u8; 512];
        for seq in 0..3u16 {
            let n = sender.emit(mac_a, &mut f).unwrap();
            assert_eq!(n, frame::HEADERS_LEN + RTP_HEADER_LEN + 160);
            let Incoming::Udp { src, dst, payload } = frame::classify(&f[..n]) else {
                panic!("not UDP");
            };
            assert_eq!((src.ip, src.port, src.mac), (A, 10_006, mac_a));
            assert_eq!(dst, to);
            assert!(is_rtp(payload));
            assert_eq!(u16::from_be_bytes([payload[2], payload[3]]), seq);
            assert_eq!(
                u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
                160 * u32::from(seq)
            );
            // Delivered as a relay would: to the port the receiver announced.
            receiver.receive(receiver.port(0), payload);
        }
        // Another stream's SSRC, a port never announced, an odd port.
        let n = sender.emit(mac_a, &mut f).unwrap();
        let Incoming::Udp { payload, .. } = frame::classify(&f[..n]) else {
            panic!();
        };
        let mut wrong = payload.to_vec();
        wrong[11] ^= 1;
        receiver.receive(receiver.port(0), &wrong);
        receiver.receive(receiver.port(1), payload);
        receiver.receive(receiver.port(0) + 1, payload);
        assert_eq!(sender.stats.sent, 4);
        assert_eq!(sender.stats.legs, 1);
        assert_eq!(receiver.stats.received, 3);
        assert_eq!(receiver.stats.received_bytes, 3 * 172);
        assert_eq!(receiver.stats.misdelivered, 3);
        assert!(!is_rtp(b"SIP/2.0 200 OK\r\n"));
    }

    #[test]
    fn no_stream_no_frame() {
        let mut s = MediaSide::new(BACKEND_RTP_BASE, 1, 160);
        assert!(!s.has_legs());
        assert_eq!(s.emit(MacAddr([2; 6]), &mut [0u8; 512]), None);
        assert_eq!(s.stats.sent, 0);
    }
}
