//! The per-packet decision: what a frame is, where it goes, and how it is rewritten.
//!
//! `process` takes one Ethernet frame in place and returns a `Verdict`; the dataplane
//! worker owns the I/O around it. Nothing here allocates, locks or makes a system call:
//! the state it touches is the read-only `Services` snapshot, the shared lock-free
//! tables, and the worker's own context.

use super::counters::{DropReason, WorkerCounters};
use super::neighbour::NeighbourTable;
use super::reassembly::{Reassembler, Reassembly};
use super::services::{source_key, BackendState, Farm, Services};
use super::snat::{SnatAllocator, SnatTable};
use crate::config::{Affinity, NatMode};
use crate::hash::hash64;
use crate::sip::{Method, SipMessage, SipUri, StartLine};
use crate::table::dialog::{Dialog, DialogState, DialogTable};
use crate::table::registration::{Registration, RegistrationTable};
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{self, EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::udp::{self, UdpPacket};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

/// Seconds between ARP requests for the same unresolved address.
const ARP_RETRY_S: u32 = 1;
/// Registration lifetime assumed when a 2xx to REGISTER names none (RFC 3261 §10.2.1.1
/// default).
const DEFAULT_REGISTER_EXPIRES: u32 = 3600;

/// What the worker does with the frame after `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Forward(u8),
    /// Free the frame; counted by reason.
    Drop(DropReason),
    /// Free the frame; it was fully handled (an ARP reply learned from, a fragment
    /// kept for reassembly).
    Consumed,
    /// The frame completed a fragmented datagram: process `ctx.reassembly`'s frame.
    Reassembled,
}

/// The shared tables, laid over shared memory by the dataplane (or a Vec in tests).
pub struct Tables<'m> {
    pub dialogs: DialogTable<'m>,
    pub registrations: RegistrationTable<'m>,
    pub neighbours: NeighbourTable<'m>,
    pub snat: SnatTable<'m>,
}

/// ARP requests the worker must send after this packet (the frame that caused them
/// was dropped; SIP retransmits).
#[derive(Debug, Default)]
pub struct ArpRequests {
    items: [(u8, u32); 8],
    len: usize,
}

impl ArpRequests {
    fn push(&mut self, port: u8, ip: Ipv4Addr) {
        if self.len < self.items.len() {
            self.items[self.len] = (port, ip.into());
            self.len += 1;
        }
    }

    /// Takes the pending requests as (port, address).
    pub fn drain(&mut self) -> impl Iterator<Item = (u8, Ipv4Addr)> + '_ {
        let n = std::mem::take(&mut self.len);
        self.items[..n]
            .iter()
            .map(|(p, ip)| (*p, Ipv4Addr::from(*ip)))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One worker's private state.
pub struct WorkerCtx<'a> {
    pub counters: &'a WorkerCounters,
    pub limits: crate::sip::Limits,
    pub snat_ports: SnatAllocator,
    pub arp_requests: ArpRequests,
    pub reassembly: Reassembler,
}

/// Processes one frame received on `in_port` at time `now` (seconds).
pub fn process(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut [u8],
    in_port: u8,
    now: u32,
) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let Some(port) = svc.ports.get(usize::from(in_port)) else {
        return Verdict::Drop(DropReason::NotBalanced);
    };
    let dst = eth.dst();
    if dst != port.mac && !dst.is_broadcast() {
        return Verdict::Drop(DropReason::NotOurMac);
    }
    match eth.ethertype() {
        ETHERTYPE_IPV4 => ipv4_in(svc, t, w, frame, in_port, now),
        ETHERTYPE_ARP => arp_in(svc, t, w, frame, in_port, now),
        _ => Verdict::Drop(DropReason::UnsupportedEthertype),
    }
}

fn arp_in(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut [u8],
    in_port: u8,
    now: u32,
) -> Verdict {
    let port = &svc.ports[usize::from(in_port)];
    let Ok(mut a) = ArpPacket::new_checked(&mut frame[ethernet::HEADER_LEN..]) else {
        return Verdict::Drop(DropReason::ArpMalformed);
    };
    let (sender, sender_mac, target) = (a.sender_ip(), a.sender_mac(), a.target_ip());
    // Learn from any ARP of a connected host (requests, replies, gratuitous).
    if port.net.contains(sender)
        && sender != port.net.addr
        && !sender_mac.is_multicast()
        && t.neighbours.learn(sender, sender_mac, in_port, now)
    {
        w.counters.arp_learned.inc();
    }
    if a.operation() == arp::OP_REQUEST && svc.answers_arp(in_port, target) {
        a.make_reply(port.mac);
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst(sender_mac);
        eth.set_src(port.mac);
        w.counters.arp_replies.inc();
        return Verdict::Forward(in_port);
    }
    if a.operation() == arp::OP_REPLY && target == port.net.addr {
        return Verdict::Consumed;
    }
    Verdict::Drop(DropReason::ArpNotForUs)
}

fn ipv4_in(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut [u8],
    in_port: u8,
    now: u32,
) -> Verdict {
    let l3 = ethernet::HEADER_LEN;
    let (src, dst, proto, hl, is_frag) = match Ipv4Packet::new_checked(&frame[l3..]) {
        Ok(ip) => (
            ip.src(),
            ip.dst(),
            ip.protocol(),
            ip.header_len(),
            ip.is_fragment(),
        ),
        Err(crate::wire::WireError::Truncated) => return Verdict::Drop(DropReason::Truncated),
        Err(_) => return Verdict::Drop(DropReason::Ipv4Malformed),
    };
    // Glean the sender's MAC: answers to it go back the way it came.
    let port = &svc.ports[usize::from(in_port)];
    if port.net.contains(src) && src != port.net.addr {
        let mac = EthernetFrame::new_unchecked(&frame[..]).src();
        if !mac.is_multicast() {
            t.neighbours.learn(src, mac, in_port, now);
        }
    }
    if is_frag {
        // Only datagrams for us are reassembled; others would be routed as they are,
        // and nothing but balanced traffic is routed.
        if svc.farm_with_vip(dst).is_none() && !svc.is_own(dst) && !svc.is_backend_addr(src) {
            return Verdict::Drop(DropReason::NotBalanced);
        }
        w.counters.fragments_in.inc();
        let timed_out = w.reassembly.timed_out;
        let r = w.reassembly.push(frame, now);
        w.counters.drops[DropReason::FragmentTimeout as usize]
            .add(w.reassembly.timed_out - timed_out);
        return match r {
            Reassembly::Held => Verdict::Consumed,
            Reassembly::Complete => {
                w.counters.datagrams_reassembled.inc();
                Verdict::Reassembled
            }
            Reassembly::Dropped(r) => Verdict::Drop(r),
        };
    }
    let l4 = l3 + hl;
    if let Some(farm) = svc.farm_with_vip(dst) {
        return match proto {
            ipv4::PROTO_UDP => match udp_ports(frame, l4) {
                Some((_, dport)) => match svc.farm_for(dst, dport) {
                    Some(f) if f.udp => client_to_vip(svc, t, w, frame, l4, f, now),
                    _ => Verdict::Drop(DropReason::VipPortClosed),
                },
                None => Verdict::Drop(DropReason::UdpMalformed),
            },
            ipv4::PROTO_ICMP => echo_reply(w, frame, l4, in_port),
            ipv4::PROTO_TCP if farm.tcp => Verdict::Drop(DropReason::TcpUnsupported),
            _ => Verdict::Drop(DropReason::VipPortClosed),
        };
    }
    if svc.is_own(dst) {
        return match proto {
            ipv4::PROTO_UDP => match udp_ports(frame, l4) {
                Some((_, dport)) => snat_backend_to_client(svc, t, w, frame, l4, dport, now),
                None => Verdict::Drop(DropReason::UdpMalformed),
            },
            ipv4::PROTO_ICMP => echo_reply(w, frame, l4, in_port),
            _ => Verdict::Drop(DropReason::NotBalanced),
        };
    }
    if proto == ipv4::PROTO_UDP {
        if let Some((sport, _)) = udp_ports(frame, l4) {
            if let Some((farm, idx)) = svc.backend_at(src, sport) {
                if farm.nat == NatMode::Dnat {
                    return dnat_backend_to_client(svc, t, w, frame, l4, farm, idx, now);
                }
            }
        }
    }
    Verdict::Drop(DropReason::NotBalanced)
}

/// The UDP ports, if the UDP header is sound.
fn udp_ports(frame: &[u8], l4: usize) -> Option<(u16, u16)> {
    let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
    let u = UdpPacket::new_checked(ip.payload()).ok()?;
    Some((u.src_port(), u.dst_port())).filter(|_| l4 > 0)
}

/// The SIP payload's range in the frame.
fn sip_range(frame: &[u8], l4: usize) -> (usize, usize) {
    let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
    let u = UdpPacket::new_unchecked(ip.payload());
    (l4 + udp::HEADER_LEN, l4 + u.len())
}

fn echo_reply(w: &mut WorkerCtx<'_>, frame: &mut [u8], l4: usize, in_port: u8) -> Verdict {
    let total = {
        let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        ethernet::HEADER_LEN + ip.total_len()
    };
    let Ok(mut m) = IcmpPacket::new_checked(&mut frame[l4..total]) else {
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
    w.counters.icmp_replies.inc();
    Verdict::Forward(in_port)
}

/// Where a SIP message goes and how long the state it touched lives.
struct Placement {
    backend: usize,
    /// The latest deadline of the dialog or registration this message refreshed; SNAT
    /// sessions live at least that long.
    keep_until: u32,
}

/// The AOR key (user@host of a SIP URI). Hosts are compared as sent (phones repeat
/// their own spelling), users are case-sensitive (RFC 3261 §19.1.4).
fn aor_key(uri: &SipUri<'_>) -> u64 {
    let u = uri.user.map(hash64).unwrap_or(0);
    let h = hash64(uri.host);
    (u.rotate_left(29) ^ h).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// A backend slot from a table entry, if it still belongs to `farm`, with its index.
fn slot_in_farm(svc: &Services, farm: &Farm, slot: u16) -> Option<usize> {
    match svc.backend_by_slot(slot) {
        Some((f, i)) if f.id == farm.id => Some(i),
        _ => None,
    }
}

fn client_to_vip(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut [u8],
    l4: usize,
    farm: &Farm,
    now: u32,
) -> Verdict {
    let (a, b) = sip_range(frame, l4);
    let (client, cport) = {
        let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        let u = UdpPacket::new_unchecked(&frame[l4..]);
        (ip.src(), u.src_port())
    };
    let placed = match SipMessage::parse(&frame[a..b], &w.limits) {
        Ok(msg) => place_client_message(svc, t, w, farm, &msg, client, now),
        Err(e) => {
            w.counters.sip_errors[e.index()].inc();
            return Verdict::Drop(DropReason::SipMalformed);
        }
    };
    let p = match placed {
        Ok(p) => p,
        Err(r) => return Verdict::Drop(r),
    };
    let backend = &farm.backends[p.backend];
    let Some((out_port, _)) = svc.route(backend.addr) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let new_src = match farm.nat {
        NatMode::Dnat => None,
        NatMode::Snat => {
            let lifetime = farm
                .timers
                .transaction
                .max(p.keep_until.saturating_sub(now));
            match t
                .snat
                .session(&mut w.snat_ports, client, cport, farm.id, now, lifetime)
            {
                Some((s, created)) => {
                    if created {
                        w.counters.snat_sessions_created.inc();
                    }
                    Some((svc.snat_source(farm, out_port), s.port))
                }
                None => return Verdict::Drop(DropReason::SnatPortsExhausted),
            }
        }
    };
    if let Err(r) = rewrite(frame, l4, new_src, Some((backend.addr, backend.port))) {
        return Verdict::Drop(r);
    }
    let c = &w.counters.backends[usize::from(backend.slot)];
    c.to_packets.inc();
    c.to_bytes.add(frame.len() as u64);
    to_next_hop(svc, t, w, frame, backend.addr, now)
}

fn place_client_message(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    farm: &Farm,
    msg: &SipMessage<'_>,
    client: Ipv4Addr,
    now: u32,
) -> Result<Placement, DropReason> {
    let call_key = hash64(msg.call_id());
    let timers = &farm.timers;
    match *msg.start_line() {
        StartLine::Request { method, .. } => {
            w.counters.sip_requests.inc();
            if method == Method::Register {
                return place_register(svc, t, w, farm, msg, now);
            }
            // Anything whose Call-ID we know follows it: in-dialog requests, ACK,
            // CANCEL, BYE, retransmissions, and a request resent after a 401/407.
            if let Some(d) = t.dialogs.get(call_key, now) {
                if let Some(i) = slot_in_farm(svc, farm, d.backend) {
                    let b = &farm.backends[i];
                    if b.state != BackendState::Down || !farm.move_dialogs_on_down {
                        let keep = t.dialogs.on_request(call_key, now, timers, method);
                        return Ok(Placement {
                            backend: i,
                            keep_until: keep,
                        });
                    }
                }
            }
            let in_dialog = msg.to().tag.is_some()
                || matches!(method, Method::Ack | Method::Cancel | Method::Bye);
            let backend = if in_dialog {
                farm.pick(call_key)
            } else {
                match farm.affinity {
                    Affinity::CallId => farm.pick(call_key),
                    Affinity::Source => farm.pick(source_key(client)),
                    Affinity::Registrar => t
                        .registrations
                        .get(aor_key(&msg.from().uri), now)
                        .and_then(|r| slot_in_farm(svc, farm, r.backend))
                        .filter(|i| farm.backends[*i].takes_new_work())
                        .or_else(|| farm.pick(call_key)),
                }
            }
            .ok_or(DropReason::NoBackend)?;
            let state = if in_dialog {
                if method == Method::Bye {
                    DialogState::Terminating
                } else {
                    DialogState::Confirmed
                }
            } else {
                DialogState::Trying
            };
            let keep = record_dialog(t, w, farm, call_key, backend, state, now);
            Ok(Placement {
                backend,
                keep_until: keep,
            })
        }
        StartLine::Response { code, .. } => {
            w.counters.sip_responses.inc();
            // An answer to a backend-originated request: back to that backend.
            let backend = t
                .dialogs
                .get(call_key, now)
                .and_then(|d| slot_in_farm(svc, farm, d.backend))
                .or_else(|| farm.pick(call_key))
                .ok_or(DropReason::NoBackend)?;
            let keep = t
                .dialogs
                .on_response(call_key, now, timers, msg.cseq().method, code);
            Ok(Placement {
                backend,
                keep_until: keep,
            })
        }
    }
}

/// REGISTER goes where the AOR is registered (so a challenged re-REGISTER meets the
/// server that sent the 401), else where Maglev puts the AOR.
fn place_register(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    farm: &Farm,
    msg: &SipMessage<'_>,
    now: u32,
) -> Result<Placement, DropReason> {
    let aor = aor_key(&msg.to().uri);
    let known = t
        .registrations
        .get(aor, now)
        .and_then(|r| slot_in_farm(svc, farm, r.backend))
        .filter(|i| farm.backends[*i].takes_new_work());
    let backend = known
        .or_else(|| farm.pick(aor))
        .ok_or(DropReason::NoBackend)?;
    let reg = Registration {
        backend: farm.backends[backend].slot,
        farm: farm.id,
    };
    // Until the 2xx says how long the binding lives, hold it for a transaction.
    match t
        .registrations
        .refresh(aor, now, reg, now.saturating_add(farm.timers.transaction))
    {
        Ok((deadline, created)) => {
            if created {
                w.counters.registrations_created.inc();
            }
            Ok(Placement {
                backend,
                keep_until: deadline,
            })
        }
        Err(_) => {
            w.counters.registration_table_full.inc();
            Ok(Placement {
                backend,
                keep_until: now.saturating_add(farm.timers.transaction),
            })
        }
    }
}

fn record_dialog(
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    farm: &Farm,
    call_key: u64,
    backend: usize,
    state: DialogState,
    now: u32,
) -> u32 {
    let d = Dialog {
        backend: farm.backends[backend].slot,
        farm: farm.id,
        state,
    };
    match t.dialogs.insert(call_key, now, d, &farm.timers) {
        Ok((deadline, created)) => {
            if created {
                w.counters.dialogs_created.inc();
            }
            deadline
        }
        Err(_) => {
            // Stickiness then rests on the Call-ID hash alone.
            w.counters.dialog_table_full.inc();
            now
        }
    }
}

/// Notes what a backend's message means for dialogs and registrations, and returns
/// how long the client's state must be kept.
fn observe_backend_message(
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    farm: &Farm,
    backend: usize,
    msg: &SipMessage<'_>,
    now: u32,
) -> u32 {
    let call_key = hash64(msg.call_id());
    let timers = &farm.timers;
    match *msg.start_line() {
        StartLine::Request { method, .. } => {
            w.counters.sip_requests.inc();
            // A backend calling a phone (or refreshing, or hanging up): the phone's
            // answers and in-dialog requests must come back to this backend.
            if t.dialogs.get(call_key, now).is_some() {
                t.dialogs.on_request(call_key, now, timers, method)
            } else {
                let state = if method == Method::Bye {
                    DialogState::Terminating
                } else {
                    DialogState::Trying
                };
                record_dialog(t, w, farm, call_key, backend, state, now)
            }
        }
        StartLine::Response { code, .. } => {
            w.counters.sip_responses.inc();
            let cseq = msg.cseq();
            if cseq.method == Method::Register && (200..300).contains(&code) {
                let aor = aor_key(&msg.to().uri);
                let expires = msg
                    .contact_expires()
                    .or(msg.expires())
                    .unwrap_or(DEFAULT_REGISTER_EXPIRES);
                let reg = Registration {
                    backend: farm.backends[backend].slot,
                    farm: farm.id,
                };
                let until = if expires == 0 {
                    // Unregistered: keep only long enough for retransmissions.
                    now.saturating_add(timers.linger)
                } else {
                    now.saturating_add(expires)
                        .saturating_add(timers.registration_margin)
                };
                return match t.registrations.set(aor, now, reg, until) {
                    Ok(()) => until,
                    Err(_) => {
                        w.counters.registration_table_full.inc();
                        until
                    }
                };
            }
            t.dialogs
                .on_response(call_key, now, timers, cseq.method, code)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn dnat_backend_to_client(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut [u8],
    l4: usize,
    farm: &Farm,
    backend: usize,
    now: u32,
) -> Verdict {
    let (a, b) = sip_range(frame, l4);
    match SipMessage::parse(&frame[a..b], &w.limits) {
        Ok(msg) => {
            observe_backend_message(t, w, farm, backend, &msg, now);
        }
        Err(e) => {
            w.counters.sip_errors[e.index()].inc();
            return Verdict::Drop(DropReason::SipMalformed);
        }
    }
    let dst = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]).dst();
    if let Err(r) = rewrite(frame, l4, Some((farm.vip, farm.port)), None) {
        return Verdict::Drop(r);
    }
    let c = &w.counters.backends[usize::from(farm.backends[backend].slot)];
    c.from_packets.inc();
    c.from_bytes.add(frame.len() as u64);
    to_next_hop(svc, t, w, frame, dst, now)
}

#[allow(clippy::too_many_arguments)]
fn snat_backend_to_client(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut [u8],
    l4: usize,
    dport: u16,
    now: u32,
) -> Verdict {
    let Some(session) = t.snat.by_port(dport, now) else {
        return Verdict::Drop(DropReason::SnatNoSession);
    };
    let (src, sport) = {
        let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        let u = UdpPacket::new_unchecked(&frame[l4..]);
        (ip.src(), u.src_port())
    };
    let Some(farm) = svc.farms.get(usize::from(session.farm)) else {
        return Verdict::Drop(DropReason::SnatNoSession);
    };
    let Some(backend) = farm
        .backends
        .iter()
        .position(|b| b.addr == src && b.port == sport)
    else {
        // Only the farm's backends may use a client's session.
        return Verdict::Drop(DropReason::NotBalanced);
    };
    let (a, b) = sip_range(frame, l4);
    let keep = match SipMessage::parse(&frame[a..b], &w.limits) {
        Ok(msg) => observe_backend_message(t, w, farm, backend, &msg, now),
        Err(e) => {
            w.counters.sip_errors[e.index()].inc();
            return Verdict::Drop(DropReason::SipMalformed);
        }
    };
    t.snat.extend(dport, keep);
    if let Err(r) = rewrite(
        frame,
        l4,
        Some((farm.vip, farm.port)),
        Some((session.client, session.client_port)),
    ) {
        return Verdict::Drop(r);
    }
    let c = &w.counters.backends[usize::from(farm.backends[backend].slot)];
    c.from_packets.inc();
    c.from_bytes.add(frame.len() as u64);
    to_next_hop(svc, t, w, frame, session.client, now)
}

/// Rewrites the IPv4 and UDP addresses and ports, updating both checksums
/// incrementally, and decrements the TTL.
fn rewrite(
    frame: &mut [u8],
    l4: usize,
    src: Option<(Ipv4Addr, u16)>,
    dst: Option<(Ipv4Addr, u16)>,
) -> Result<(), DropReason> {
    let (old_src, old_dst) = {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
        if !ip.decrement_ttl() {
            return Err(DropReason::TtlExpired);
        }
        let old = (ip.src(), ip.dst());
        if let Some((a, _)) = src {
            ip.set_src(a);
        }
        if let Some((a, _)) = dst {
            ip.set_dst(a);
        }
        old
    };
    let mut u = UdpPacket::new_unchecked(&mut frame[l4..]);
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

/// Sets the Ethernet addresses for the next hop toward `dst`, or asks ARP for it.
fn to_next_hop(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    frame: &mut [u8],
    dst: Ipv4Addr,
    now: u32,
) -> Verdict {
    let Some((port, hop)) = svc.route(dst) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let Some(n) = t.neighbours.lookup(hop) else {
        if t.neighbours.should_request(hop, now, ARP_RETRY_S) {
            w.arp_requests.push(port, hop);
        }
        return Verdict::Drop(DropReason::NeighbourUnresolved);
    };
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.set_dst(n.mac);
    eth.set_src(svc.ports[usize::from(port)].mac);
    Verdict::Forward(port)
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
