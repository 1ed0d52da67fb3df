//! `Flow`: one IPv4 packet described once, after its headers were checked (in the
//! manner of Katran's `packet_description`). Every later stage reads the addresses,
//! ports and offsets from here instead of re-wrapping the header views.

use crate::wire::checksum;
use crate::wire::ethernet;
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::TcpSegment;
use crate::wire::udp::{self, UdpPacket};
use crate::wire::WireError;
use std::net::Ipv4Addr;

/// The checked facts of an IPv4 packet in a frame.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Offset of the L4 header in the frame.
    pub l4: usize,
    /// Offset one past the L4 payload in the frame: the IP datagram's end (Ethernet
    /// padding excluded), or the UDP length's for UDP.
    pub end: usize,
    /// Source and destination ports, when the UDP or TCP header is sound (never for a
    /// fragment).
    pub ports: Option<(u16, u16)>,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// The packet is a fragment of a larger datagram.
    pub fragment: bool,
    pub in_port: u8,
}

impl Flow {
    /// Checks the IPv4 header (and the UDP or TCP header when there is one) of `frame`
    /// and describes the packet. A malformed L4 header is not an error here: `ports`
    /// stays `None`, and the stage that needed them counts the drop.
    #[inline]
    pub fn parse(frame: &[u8], in_port: u8) -> Result<Flow, WireError> {
        let ip = Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..])?;
        let l4 = ethernet::HEADER_LEN + ip.header_len();
        let mut flow = Flow {
            src: ip.src(),
            dst: ip.dst(),
            proto: ip.protocol(),
            l4,
            end: ethernet::HEADER_LEN + ip.total_len(),
            ports: None,
            tcp_flags: 0,
            fragment: ip.is_fragment(),
            in_port,
        };
        if flow.fragment {
            return Ok(flow);
        }
        match flow.proto {
            ipv4::PROTO_UDP => {
                if let Ok(u) = UdpPacket::new_checked(ip.payload()) {
                    flow.ports = Some((u.src_port(), u.dst_port()));
                    // The UDP length may be shorter than the IP payload.
                    flow.end = l4 + u.len();
                }
            }
            ipv4::PROTO_TCP => {
                if let Ok(t) = TcpSegment::new_checked(ip.payload()) {
                    flow.ports = Some((t.src_port(), t.dst_port()));
                    flow.tcp_flags = t.flags();
                }
            }
            _ => {}
        }
        Ok(flow)
    }

    /// Finishes a UDP or TCP checksum that the sender's kernel left for a NIC to
    /// finish (`CHECKSUM_PARTIAL`: the field holds only the pseudo-header's folded sum).
    /// Linux hands such frames from a veth with TX checksum offload on to af_packet
    /// sockets unfinished, and DPDK's af_packet PMD does not flag them: forwarded
    /// as they are, or NATed with an incremental update, every receiver drops them
    /// (the health checks' answers first). The test costs a pseudo-header sum per
    /// packet; only a packet whose field equals it and whose checksum does not verify
    /// is summed whole and finished. Returns whether it finished one.
    #[inline]
    pub fn finish_partial_checksum(&self, frame: &mut [u8]) -> bool {
        let at = match self.proto {
            ipv4::PROTO_UDP => 6,
            ipv4::PROTO_TCP => 16,
            _ => return false,
        };
        if self.ports.is_none() {
            return false;
        }
        let Some(l4) = frame.get_mut(self.l4..self.end) else {
            return false;
        };
        let Some(&[hi, lo]) = l4.get(at..at + 2) else {
            return false;
        };
        // The IP total length bounds `end`: the length fits 16 bits.
        let pseudo = ipv4::pseudo_header_sum(self.src, self.dst, self.proto, l4.len() as u16);
        // At most six 16-bit words: two folds, no loop.
        let once = (pseudo & 0xffff) + (pseudo >> 16);
        let folded = ((once & 0xffff) + (once >> 16)) as u16;
        if u16::from_be_bytes([hi, lo]) != folded {
            return false;
        }
        finish_checksum(l4, at, pseudo, self.proto)
    }

    /// The source port (0 without ports).
    #[inline]
    pub fn sport(&self) -> u16 {
        self.ports.map_or(0, |p| p.0)
    }

    /// The destination port (0 without ports).
    #[inline]
    pub fn dport(&self) -> u16 {
        self.ports.map_or(0, |p| p.1)
    }

    /// The UDP payload's range in the frame (for a UDP flow with ports).
    #[inline]
    pub fn udp_payload(&self) -> std::ops::Range<usize> {
        self.l4 + udp::HEADER_LEN..self.end
    }
}

/// The rare case of `Flow::finish_partial_checksum`, out of the packet path's way:
/// a field equal to the pseudo-header's sum, which a whole checksum may also be (one
/// in 65,536); only a checksum that does not verify is finished.
#[cold]
#[inline(never)]
fn finish_checksum(l4: &mut [u8], at: usize, pseudo: u32, proto: u8) -> bool {
    if checksum::fold(checksum::sum(pseudo, l4)) == 0xffff {
        return false;
    }
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = !checksum::fold(checksum::sum(pseudo, l4));
    if c == 0 && proto == ipv4::PROTO_UDP {
        // 0 means "no checksum" in UDP; its one's-complement twin says the same sum.
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::sim::udp_frame;
    use crate::wire::tcp::{self, TcpSegment};
    use crate::wire::MacAddr;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

    /// What a kernel with TX checksum offload puts in the field: the pseudo-header's
    /// folded sum.
    fn make_partial(f: &mut [u8], proto: u8, at: usize) {
        let len = (f.len() - 34) as u16;
        let p = checksum::fold(ipv4::pseudo_header_sum(A, B, proto, len));
        f[34 + at..34 + at + 2].copy_from_slice(&p.to_be_bytes());
    }

    #[test]
    fn partial_udp_checksums_are_finished_and_whole_ones_left_alone() {
        let whole = udp_frame(
            MacAddr([2, 0, 0, 0, 0, 1]),
            (A, 5060),
            (B, 5060),
            b"SIP/2.0 200 OK\r\n\r\n",
        );
        let mut f = whole.clone();
        let flow = Flow::parse(&f, 0).unwrap();
        assert!(
            !flow.finish_partial_checksum(&mut f),
            "a whole checksum stays"
        );
        assert_eq!(f, whole);
        make_partial(&mut f, ipv4::PROTO_UDP, 6);
        assert_ne!(f, whole);
        assert!(!UdpPacket::new_checked(&f[34..]).unwrap().verify(A, B));
        assert!(flow.finish_partial_checksum(&mut f));
        assert_eq!(f, whole, "finished as the sender's NIC would have");
        assert!(!flow.finish_partial_checksum(&mut f), "once");
        // A corrupted datagram (its checksum whole, the bytes wrong) is left as it is.
        f[36 + 6] ^= 0x10;
        let bad = f.clone();
        assert!(!flow.finish_partial_checksum(&mut f));
        assert_eq!(f, bad);
    }

    #[test]
    fn partial_tcp_checksums_are_finished() {
        let payload = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
        let mut f = udp_frame(MacAddr([2, 0, 0, 0, 0, 1]), (A, 5060), (B, 5060), &[0; 12]);
        f.extend_from_slice(payload);
        let total = (f.len() - 14) as u16;
        ipv4::write_header(
            &mut f[14..34],
            total,
            1,
            false,
            0,
            64,
            ipv4::PROTO_TCP,
            A,
            B,
        );
        tcp::write_header(&mut f[34..54], 40000, 5060, 7, 9, tcp::ACK);
        TcpSegment::new_unchecked(&mut f[34..]).fill_checksum(A, B);
        let whole = f.clone();
        let flow = Flow::parse(&f, 0).unwrap();
        assert_eq!(flow.ports, Some((40000, 5060)));
        make_partial(&mut f, ipv4::PROTO_TCP, 16);
        assert_ne!(f, whole);
        assert!(flow.finish_partial_checksum(&mut f));
        assert_eq!(f, whole);
    }
}
