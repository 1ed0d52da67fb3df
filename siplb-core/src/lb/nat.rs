//! Address translation and the next hop: the SNAT source of a client flow, the L3/L4
//! rewrite with incremental checksums, and the Ethernet addresses toward the next hop
//! (or an ARP request when it is unknown). Shared by the UDP and TCP paths.

use super::context::{Ctx, Verdict};
use super::counters::DropReason;
use super::packet::Flow;
use super::services::{Farm, Services};
use crate::config::NatMode;
use crate::wire::arp;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::TcpSegment;
use crate::wire::udp::{self, UdpPacket};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

/// Seconds between ARP requests for the same unresolved address.
const ARP_RETRY_S: u32 = 1;

impl Ctx<'_, '_, '_> {
    /// The source a client's packet gets toward a backend: unchanged in dnat; in snat
    /// an address of the farm's pool (or the egress port's) and the client flow's port
    /// there (a session kept `lifetime` seconds).
    pub(super) fn nat_source(
        &mut self,
        farm: &Farm,
        out_port: u8,
        (client, cport): (Ipv4Addr, u16),
        lifetime: u32,
    ) -> Result<Option<(Ipv4Addr, u16)>, DropReason> {
        if farm.nat == NatMode::Dnat {
            return Ok(None);
        }
        let (s, created) = self
            .t
            .snat
            .session(
                &mut self.w.snat_ports,
                farm.snat_slots(),
                (client, cport),
                farm.id,
                self.now,
                lifetime,
            )
            .ok_or(DropReason::SnatPortsExhausted)?;
        if created {
            self.w.counters.snat_sessions_created.inc();
        }
        Ok(Some((self.svc.snat_source(s.address, out_port), s.port)))
    }

    /// Answers the UDP datagram of `flow` in its own buffer: `payload` replaces its
    /// payload, addresses and ports are swapped, lengths and checksum set, and the
    /// frame goes back to its sender. `None` if `payload` does not fit the buffer.
    pub(super) fn answer_in_place(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        payload: &[u8],
    ) -> Option<Verdict> {
        let n = payload.len();
        let start = flow.l4 + udp::HEADER_LEN;
        frame.get_mut(start..start + n)?.copy_from_slice(payload);
        let udp_len = (udp::HEADER_LEN + n) as u16;
        let ip_len = flow.l4 - ethernet::HEADER_LEN + usize::from(udp_len);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
            ip.swap_addrs();
            ip.set_total_len(ip_len as u16);
        }
        let mut u = UdpPacket::new_unchecked(&mut frame[flow.l4..]);
        u.swap_ports();
        u.set_len(udp_len);
        if u.checksum() != 0 {
            u.fill_checksum(flow.dst, flow.src);
        }
        self.len = flow.l4 + usize::from(udp_len);
        Some(self.next_hop(frame, flow.src))
    }

    /// Sets the Ethernet addresses for the next hop toward `dst`, or asks ARP for it.
    pub(super) fn next_hop(&mut self, frame: &mut [u8], dst: Ipv4Addr) -> Verdict {
        let Some((port, hop)) = self.svc.route(dst) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(n) = self.t.neighbours.lookup(hop) else {
            if self.t.neighbours.should_request(hop, self.now, ARP_RETRY_S) {
                self.w.arp_requests.push(port, hop);
            }
            return Verdict::Drop(DropReason::NeighbourUnresolved);
        };
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst(n.mac);
        eth.set_src(self.svc.ports[usize::from(port)].mac);
        Verdict::Forward(port)
    }
}

/// Rewrites the IPv4 addresses and the UDP or TCP ports of `flow` in `frame` with
/// incremental checksums, and decrements the TTL.
pub(super) fn rewrite_l4(
    frame: &mut [u8],
    flow: &Flow,
    src: Option<(Ipv4Addr, u16)>,
    dst: Option<(Ipv4Addr, u16)>,
) -> Result<(), DropReason> {
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
        if !ip.decrement_ttl() {
            return Err(DropReason::TtlExpired);
        }
        if let Some((a, _)) = src {
            ip.set_src(a);
        }
        if let Some((a, _)) = dst {
            ip.set_dst(a);
        }
    }
    let (old_src, old_dst) = (flow.src, flow.dst);
    if flow.proto == ipv4::PROTO_TCP {
        let mut t = TcpSegment::new_unchecked(&mut frame[flow.l4..]);
        if let Some((a, p)) = src {
            t.pseudo_addr_changed(old_src, a);
            t.set_src_port(p);
        }
        if let Some((a, p)) = dst {
            t.pseudo_addr_changed(old_dst, a);
            t.set_dst_port(p);
        }
        return Ok(());
    }
    let mut u = UdpPacket::new_unchecked(&mut frame[flow.l4..]);
    if let Some((a, p)) = src {
        u.pseudo_addr_changed(old_src, a);
        u.set_src_port(p);
    }
    if let Some((a, p)) = dst {
        u.pseudo_addr_changed(old_dst, a);
        u.set_dst_port(p);
    }
    Ok(())
}

/// Writes an ARP request for `ip` from `port` into `out` and returns its length.
pub fn write_arp_request(svc: &Services, port: u8, ip: Ipv4Addr, out: &mut [u8]) -> usize {
    let p = &svc.ports[usize::from(port)];
    arp::write_frame(
        out,
        arp::OP_REQUEST,
        p.mac,
        p.net.addr,
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        ip,
    )
}

/// Writes a gratuitous ARP (a request for `ip` from `ip`, RFC 5227 §3) into `out`.
pub fn write_gratuitous_arp(svc: &Services, port: u8, ip: Ipv4Addr, out: &mut [u8]) -> usize {
    let p = &svc.ports[usize::from(port)];
    arp::write_frame(
        out,
        arp::OP_REQUEST,
        p.mac,
        ip,
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        ip,
    )
}
