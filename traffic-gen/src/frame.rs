//! Ethernet + IPv4 + UDP around a SIP payload, and the classification of what arrives
//! (ARP or UDP over IPv4), with `siplb-core`'s wire views.

use siplb_core::wire::arp::{self, ArpPacket};
use siplb_core::wire::ethernet::{self, EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use siplb_core::wire::ipv4::{self, Ipv4Packet};
use siplb_core::wire::udp::{self, UdpPacket};
use siplb_core::wire::MacAddr;
use std::net::Ipv4Addr;

/// Bytes of Ethernet, IPv4 (no options) and UDP headers in front of the payload.
pub const HEADERS_LEN: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;
const IP_AT: usize = ethernet::HEADER_LEN;
const UDP_AT: usize = IP_AT + ipv4::MIN_HEADER_LEN;

/// One side of a UDP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// Writes the headers in front of a payload of `payload_len` bytes already at
/// `frame[HEADERS_LEN..]`; returns the frame length. The UDP checksum is left 0 ("none",
/// RFC 768), which receivers accept and which the balancer keeps.
pub fn write_udp_headers(
    frame: &mut [u8],
    src: Endpoint,
    dst: Endpoint,
    payload_len: usize,
    ident: u16,
) -> usize {
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.set_dst(dst.mac);
    eth.set_src(src.mac);
    eth.set_ethertype(ETHERTYPE_IPV4);
    let ip_len = ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + payload_len;
    ipv4::write_header(
        &mut frame[IP_AT..UDP_AT],
        ip_len as u16,
        ident,
        false,
        0,
        64,
        ipv4::PROTO_UDP,
        src.ip,
        dst.ip,
    );
    udp::write_header(&mut frame[UDP_AT..], src.port, dst.port, payload_len);
    HEADERS_LEN + payload_len
}

/// What a received frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    Arp {
        op: u16,
        sender_mac: MacAddr,
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
    },
    Udp {
        src: Endpoint,
        /// The destination's MAC is the frame's; its IP and port the datagram's.
        dst: Endpoint,
        payload: &'a [u8],
    },
    Other,
}

/// Classifies a frame; fragments, bad checksums and other protocols are `Other`.
pub fn classify(frame: &[u8]) -> Incoming<'_> {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Incoming::Other;
    };
    let body = &frame[ethernet::HEADER_LEN..];
    match eth.ethertype() {
        ETHERTYPE_ARP => match ArpPacket::new_checked(body) {
            Ok(a) => Incoming::Arp {
                op: a.operation(),
                sender_mac: a.sender_mac(),
                sender_ip: a.sender_ip(),
                target_ip: a.target_ip(),
            },
            Err(_) => Incoming::Other,
        },
        ETHERTYPE_IPV4 => {
            let Ok(ip) = Ipv4Packet::new_checked(body) else {
                return Incoming::Other;
            };
            if ip.protocol() != ipv4::PROTO_UDP || ip.is_fragment() {
                return Incoming::Other;
            }
            let hl = ip.header_len();
            let total = ip.total_len();
            let dgram = &body[hl..total];
            let Ok(u) = UdpPacket::new_checked(dgram) else {
                return Incoming::Other;
            };
            Incoming::Udp {
                src: Endpoint {
                    mac: eth.src(),
                    ip: ip.src(),
                    port: u.src_port(),
                },
                dst: Endpoint {
                    mac: eth.dst(),
                    ip: ip.dst(),
                    port: u.dst_port(),
                },
                payload: &dgram[udp::HEADER_LEN..u.len()],
            }
        }
        _ => Incoming::Other,
    }
}

/// An ARP reply saying `ip` is at `our_mac`, to the asker; returns the frame length.
pub fn write_arp_reply(
    out: &mut [u8],
    our_mac: MacAddr,
    ip: Ipv4Addr,
    asker_mac: MacAddr,
    asker_ip: Ipv4Addr,
) -> usize {
    arp::write_frame(
        out,
        arp::OP_REPLY,
        our_mac,
        ip,
        asker_mac,
        asker_mac,
        asker_ip,
    )
}

/// An ARP request for `target` from `sender` (`sender == target`: a gratuitous ARP
/// that announces the address).
pub fn write_arp_request(
    out: &mut [u8],
    our_mac: MacAddr,
    sender: Ipv4Addr,
    target: Ipv4Addr,
) -> usize {
    arp::write_frame(
        out,
        arp::OP_REQUEST,
        our_mac,
        sender,
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        target,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frame_round_trips() {
        let a = Endpoint {
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(198, 18, 0, 10),
            port: 5060,
        };
        let b = Endpoint {
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            ip: Ipv4Addr::new(198, 18, 0, 2),
            port: 5061,
        };
        let mut f = [0u8; 128];
        f[HEADERS_LEN..HEADERS_LEN + 5].copy_from_slice(b"hello");
        let n = write_udp_headers(&mut f, a, b, 5, 1);
        assert_eq!(n, HEADERS_LEN + 5);
        match classify(&f[..n]) {
            Incoming::Udp { src, dst, payload } => {
                assert_eq!((src, dst, payload), (a, b, &b"hello"[..]));
            }
            other => panic!("{other:?}"),
        }
        // Trailing padding (short frames padded to 60 bytes) is ignored.
        assert!(matches!(classify(&f[..64]), Incoming::Udp { payload, .. } if payload == b"hello"));
    }

    #[test]
    fn arp_request_and_reply_classify() {
        let mut f = [0u8; 60];
        let m = MacAddr([2, 0, 0, 0, 0, 9]);
        let n = write_arp_request(
            &mut f,
            m,
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 2),
        );
        assert_eq!(
            classify(&f[..n]),
            Incoming::Arp {
                op: arp::OP_REQUEST,
                sender_mac: m,
                sender_ip: Ipv4Addr::new(198, 18, 0, 10),
                target_ip: Ipv4Addr::new(198, 18, 0, 2),
            }
        );
        let n = write_arp_reply(
            &mut f,
            m,
            Ipv4Addr::new(198, 18, 1, 11),
            MacAddr([2; 6]),
            Ipv4Addr::new(198, 18, 1, 1),
        );
        assert!(
            matches!(classify(&f[..n]), Incoming::Arp { op: arp::OP_REPLY, sender_ip, .. } if sender_ip == Ipv4Addr::new(198, 18, 1, 11))
        );
    }
}
