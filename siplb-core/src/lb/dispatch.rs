//! The per-packet decision, top level: what a frame is and which stage handles it.
//!
//! `process` takes one Ethernet frame in place and returns a `Verdict`; the dataplane
//! worker owns the I/O around it. This file is the map of the hot path:
//!
//! ```text
//! process ─ Ethernet ─┬─ ARP: learn, answer for own addresses and VIPs
//!                     └─ IPv4: checked once into a `Flow`
//!                         ├─ fragment → reassembly (then the whole datagram again)
//!                         ├─ to a VIP:   UDP → udp.rs client_to_vip
//!                         │              TCP → tcp.rs client_to_vip, ICMP → echo
//!                         ├─ to an own address: SNAT port → udp.rs / tcp.rs
//!                         │              snat_backend_to_client; else the kernel
//!                         └─ from a dnat backend → udp.rs / tcp.rs dnat_backend_to_client
//! ```
//!
//! Nothing here allocates, locks or makes a system call: the state it touches is the
//! read-only `Services` snapshot, the shared lock-free tables, and the worker's own
//! context.

use super::context::{Ctx, Tables, Verdict, WorkerCtx};
use super::counters::{DropReason, NO_FARM};
use super::packet::Flow;
use super::reassembly::Reassembly;
use super::services::Farm;
use super::services::Services;
use super::snat::{LAST_PORT, PORT_ADDRESS};
use crate::config::NatMode;
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{self, EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::WireError;
use std::net::SocketAddrV4;

/// Processes one frame received on `in_port` at time `now` (seconds), with no room
/// to grow: a message the SIP ALG would lengthen is refused (counted).
pub fn process(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut [u8],
    in_port: u8,
    now: u32,
) -> Verdict {
    let len = frame.len();
    process_in(svc, t, w, frame, len, in_port, now)
}

/// Processes the `len`-byte frame at the start of `buf` received on `in_port` at time
/// `now` (seconds). The rest of `buf` is room the SIP ALG may grow a message into;
/// the frame's length afterwards is in `w.out_len`.
pub fn process_in(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    buf: &mut [u8],
    len: usize,
    in_port: u8,
    now: u32,
) -> Verdict {
    w.out_len = len;
    w.farm = NO_FARM;
    let Ok(eth) = EthernetFrame::new_checked(&buf[..len]) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let Some(port) = svc.ports.get(usize::from(in_port)) else {
        return Verdict::Drop(DropReason::NotBalanced);
    };
    let dst = eth.dst();
    if dst != port.mac && !dst.is_broadcast() {
        return Verdict::Drop(DropReason::NotOurMac);
    }
    let ethertype = eth.ethertype();
    let mut cx = Ctx {
        svc,
        t,
        w,
        now,
        len,
    };
    let v = match ethertype {
        ETHERTYPE_IPV4 => cx.ipv4_in(buf, in_port),
        ETHERTYPE_ARP => cx.arp_in(&mut buf[..len], in_port),
        _ => Verdict::Drop(DropReason::UnsupportedEthertype),
    };
    let out_len = cx.len;
    w.out_len = out_len;
    v
}

impl Ctx<'_, '_, '_> {
    fn arp_in(&mut self, frame: &mut [u8], in_port: u8) -> Verdict {
        let port = &self.svc.ports[usize::from(in_port)];
        let Ok(mut a) = ArpPacket::new_checked(&mut frame[ethernet::HEADER_LEN..]) else {
            return Verdict::Drop(DropReason::ArpMalformed);
        };
        let (sender, sender_mac, target) = (a.sender_ip(), a.sender_mac(), a.target_ip());
        // Learn from any ARP of a connected host (requests, replies, gratuitous).
        if port.net.contains(sender)
            && sender != port.net.addr
            && !sender_mac.is_multicast()
            && self
                .t
                .neighbours
                .learn(sender, sender_mac, in_port, self.now)
        {
            self.w.counters.arp_learned.inc();
        }
        if a.operation() == arp::OP_REQUEST && self.svc.answers_arp(in_port, target) {
            a.make_reply(port.mac);
            let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
            eth.set_dst(sender_mac);
            eth.set_src(port.mac);
            self.w.counters.arp_replies.inc();
            return Verdict::Forward(in_port);
        }
        if a.operation() == arp::OP_REPLY && target == port.net.addr {
            // The kernel asked (its own traffic, e.g. health checks): it needs the answer.
            return if self.svc.exception_path {
                Verdict::ToKernel
            } else {
                Verdict::Consumed
            };
        }
        Verdict::Drop(DropReason::ArpNotForUs)
    }

    fn ipv4_in(&mut self, frame: &mut [u8], in_port: u8) -> Verdict {
        let flow = match Flow::parse(&frame[..self.len], in_port) {
            Ok(f) => f,
            Err(WireError::Truncated) => return Verdict::Drop(DropReason::Truncated),
            Err(_) => return Verdict::Drop(DropReason::Ipv4Malformed),
        };
        if flow.finish_partial_checksum(&mut frame[..self.len]) {
            self.w.counters.checksums_finished.inc();
        }
        let svc = self.svc;
        // Glean the sender's MAC: answers to it go back the way it came.
        let port = &svc.ports[usize::from(in_port)];
        if port.net.contains(flow.src) && flow.src != port.net.addr {
            let mac = EthernetFrame::new_unchecked(&frame[..]).src();
            if !mac.is_multicast() {
                self.t.neighbours.learn(flow.src, mac, in_port, self.now);
            }
        }
        if flow.fragment {
            return self.fragment_in(&frame[..self.len], &flow);
        }
        if let Some(farm) = svc.farm_with_vip(flow.dst) {
            self.w.farm = farm.id;
            if !svc.active {
                return Verdict::Drop(DropReason::Standby);
            }
            if !svc.security.admits(flow.src) {
                return Verdict::Drop(DropReason::Denied);
            }
            if svc.security.banned(&self.t.rates, flow.src, self.now) {
                return Verdict::Drop(DropReason::Banned);
            }
            return match (flow.proto, flow.ports) {
                (ipv4::PROTO_UDP, Some((_, dport))) => match svc.farm_for(flow.dst, dport) {
                    Some(f) if f.udp => self.udp_client_to_vip(frame, &flow, f),
                    Some(_) => Verdict::Drop(DropReason::VipPortClosed),
                    None => self.media_to_vip(frame, &flow, farm),
                },
                (ipv4::PROTO_UDP, None) => Verdict::Drop(DropReason::UdpMalformed),
                (ipv4::PROTO_ICMP, _) => self.echo_reply(frame, &flow),
                (ipv4::PROTO_TCP, Some((_, dport))) => match svc.tcp_farm_for(flow.dst, dport) {
                    Some((f, tls)) => self.tcp_client_to_vip(frame, &flow, f, tls),
                    None if farm.tcp || farm.tls => Verdict::Drop(DropReason::VipPortClosed),
                    None => Verdict::Drop(DropReason::TcpUnsupported),
                },
                (ipv4::PROTO_TCP, None) => Verdict::Drop(DropReason::TcpMalformed),
                _ => Verdict::Drop(DropReason::VipPortClosed),
            };
        }
        // Passive health: a backend's port unreachable marks it down, then the
        // message goes where it went before.
        if flow.proto == ipv4::PROTO_ICMP && svc.is_backend_addr(flow.src) {
            self.note_backend_icmp(frame, &flow);
        }
        if svc.is_own(flow.dst) {
            return self.own_address_in(frame, &flow);
        }
        // From a backend in dnat mode: the balancer is its gateway.
        if let Some((sport, _)) = flow.ports {
            match flow.proto {
                ipv4::PROTO_UDP => {
                    if let Some((farm, idx)) = svc.backend_at(flow.src, sport) {
                        if farm.nat == NatMode::Dnat {
                            self.w.farm = farm.id;
                            return self.udp_dnat_backend_to_client(frame, &flow, farm, idx);
                        }
                    }
                }
                ipv4::PROTO_TCP => {
                    if let Some((farm, idx, tls)) = svc.tcp_backend_at(flow.src, sport) {
                        if farm.nat == NatMode::Dnat {
                            self.w.farm = farm.id;
                            return self.tcp_dnat_backend_to_client(frame, &flow, farm, idx, tls);
                        }
                    }
                }
                _ => {}
            }
        }
        Verdict::Drop(DropReason::NotBalanced)
    }

    /// UDP to a VIP port that no farm serves: a media leg's, or closed.
    fn media_to_vip(&mut self, frame: &mut [u8], flow: &Flow, farm: &Farm) -> Verdict {
        match self.media_in(frame, flow) {
            Ok(v) => v,
            // Told apart only on this path: a media port without a live mapping, or
            // no media port at all.
            Err(_)
                if self
                    .t
                    .media
                    .leg_for(SocketAddrV4::new(flow.dst, flow.dport()))
                    .is_some() =>
            {
                self.media_not_mapped(farm)
            }
            Err(_) => Verdict::Drop(DropReason::VipPortClosed),
        }
    }

    /// A fragment: only datagrams for us are reassembled; others would be routed as
    /// they are, and nothing but balanced traffic is routed.
    fn fragment_in(&mut self, frame: &[u8], flow: &Flow) -> Verdict {
        let svc = self.svc;
        if svc.farm_with_vip(flow.dst).is_none()
            && !svc.is_own(flow.dst)
            && !svc.is_backend_addr(flow.src)
        {
            return Verdict::Drop(DropReason::NotBalanced);
        }
        let w = &mut *self.w;
        w.counters.fragments_in.inc();
        let timed_out = w.reassembly.timed_out;
        let r = w.reassembly.push(frame, self.now);
        w.counters.drops[DropReason::FragmentTimeout as usize]
            .add(w.reassembly.timed_out - timed_out);
        match r {
            Reassembly::Held => Verdict::Consumed,
            Reassembly::Complete => {
                w.counters.datagrams_reassembled.inc();
                Verdict::Reassembled
            }
            Reassembly::Dropped(r) => Verdict::Drop(r),
        }
    }

    /// For one of our own addresses: SNAT sessions own some of its ports; everything
    /// else is the host's (ICMP, SSH, health-check answers...).
    fn own_address_in(&mut self, frame: &mut [u8], flow: &Flow) -> Verdict {
        let svc = self.svc;
        // A pool address's ports are its own; the ports' own addresses share slot
        // PORT_ADDRESS, whose session belongs to the address its farm translates to.
        let session = |cx: &Self, dport: u16| {
            let pooled = svc
                .snat_slot(flow.dst)
                .and_then(|a| cx.t.snat.by_port(a, dport, cx.now));
            pooled.or_else(|| {
                cx.t.snat.by_port(PORT_ADDRESS, dport, cx.now).filter(|s| {
                    svc.farms.get(usize::from(s.farm)).is_some_and(|f| {
                        f.snat_pool.is_empty()
                            && svc.snat_source(PORT_ADDRESS, flow.in_port) == flow.dst
                    })
                })
            })
        };
        match (flow.proto, flow.ports) {
            // Media legs on SNAT addresses lie above the SNAT ports.
            (ipv4::PROTO_UDP, Some((_, dport))) if dport > LAST_PORT => {
                match self.media_in(frame, flow) {
                    Ok(v) => return v,
                    // Not a live leg (or no media port): the host's own socket may own
                    // the port.
                    Err(_) if svc.exception_path => return Verdict::ToKernel,
                    Err(d)
                        if self
                            .t
                            .media
                            .leg_for(SocketAddrV4::new(flow.dst, dport))
                            .is_some() =>
                    {
                        return Verdict::Drop(d.into())
                    }
                    Err(_) => {}
                }
            }
            (ipv4::PROTO_UDP, Some((_, dport))) => {
                if let Some(s) = session(self, dport) {
                    self.w.farm = s.farm;
                    return self.udp_snat_backend_to_client(frame, flow, s);
                }
            }
            (ipv4::PROTO_UDP, None) => return Verdict::Drop(DropReason::UdpMalformed),
            (ipv4::PROTO_TCP, Some((_, dport))) => {
                if let Some(s) = session(self, dport) {
                    self.w.farm = s.farm;
                    return self.tcp_snat_backend_to_client(frame, flow, s);
                }
            }
            (ipv4::PROTO_TCP, None) => return Verdict::Drop(DropReason::TcpMalformed),
            _ => {}
        }
        if svc.exception_path {
            return Verdict::ToKernel;
        }
        match flow.proto {
            ipv4::PROTO_ICMP => self.echo_reply(frame, flow),
            ipv4::PROTO_UDP => Verdict::Drop(DropReason::SnatNoSession),
            _ => Verdict::Drop(DropReason::NotBalanced),
        }
    }

    fn echo_reply(&mut self, frame: &mut [u8], flow: &Flow) -> Verdict {
        let Ok(mut m) = IcmpPacket::new_checked(&mut frame[flow.l4..flow.end]) else {
            return Verdict::Drop(DropReason::IcmpUnsupported);
        };
        if m.msg_type() != icmp::TYPE_ECHO_REQUEST {
            return Verdict::Drop(DropReason::IcmpUnsupported);
        }
        m.make_echo_reply();
        Ipv4Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]).swap_addrs();
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        let (s, d) = (eth.src(), eth.dst());
        eth.set_src(d);
        eth.set_dst(s);
        self.w.counters.icmp_replies.inc();
        Verdict::Forward(flow.in_port)
    }
}
