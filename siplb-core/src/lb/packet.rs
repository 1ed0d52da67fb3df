//! `Flow`: one IPv4 packet described once, after its headers were checked (in the
//! manner of Katran's `packet_description`). Every later stage reads the addresses,
//! ports and offsets from here instead of re-wrapping the header views.

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
