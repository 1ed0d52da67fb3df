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
use crate::table::connection::ConnectionTable;
use crate::table::dialog::{Dialog, DialogState, DialogTable};
use crate::table::flow::FlowTable;
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
    /// For the balancer host itself: hand it to the kernel interface of the port it
    /// came in on (the exception path).
    ToKernel,
}

/// The shared tables, laid over shared memory by the dataplane (or a Vec in tests).
pub struct Tables<'m> {
    pub dialogs: DialogTable<'m>,
    /// New work per source in the current second (`[security] max_new_per_source`).
    pub rates: FlowTable<'m>,
    pub connections: ConnectionTable<'m>,
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
        // The kernel asked (its own traffic, e.g. health checks): it needs the answer.
        return if svc.exception_path {
            Verdict::ToKernel
        } else {
            Verdict::Consumed
        };
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
        if !svc.active {
            return Verdict::Drop(DropReason::Standby);
        }
        if !svc.security.admits(src) {
            return Verdict::Drop(DropReason::Denied);
        }
        return match proto {
            ipv4::PROTO_UDP => match udp_ports(frame, l4) {
                Some((_, dport)) => match svc.farm_for(dst, dport) {
                    Some(f) if f.udp => client_to_vip(svc, t, w, frame, l4, f, now),
                    _ => Verdict::Drop(DropReason::VipPortClosed),
                },
                None => Verdict::Drop(DropReason::UdpMalformed),
            },
            ipv4::PROTO_ICMP => echo_reply(w, frame, l4, in_port),
            ipv4::PROTO_TCP => match super::tcp::ports(frame, l4) {
                Some((_, dport)) => match svc.tcp_farm_for(dst, dport) {
                    Some((f, tls)) => super::tcp::client_to_vip(svc, t, w, frame, l4, f, tls, now),
                    None if farm.tcp || farm.tls => Verdict::Drop(DropReason::VipPortClosed),
                    None => Verdict::Drop(DropReason::TcpUnsupported),
                },
                None => Verdict::Drop(DropReason::TcpMalformed),
            },
            _ => Verdict::Drop(DropReason::VipPortClosed),
        };
    }
    if svc.is_own(dst) {
        // SNAT sessions own some of our ports; everything else for our own addresses
        // is the host's (ICMP, SSH, health-check answers...).
        // A session's port belongs to it only on the address its farm translates to.
        let session = |dport: u16| {
            t.snat.by_port(dport, now).filter(|s| {
                svc.farms
                    .get(usize::from(s.farm))
                    .is_some_and(|f| svc.snat_source(f, in_port) == dst)
            })
        };
        if proto == ipv4::PROTO_UDP {
            match udp_ports(frame, l4) {
                Some((_, dport)) if session(dport).is_some() => {
                    return snat_backend_to_client(svc, t, w, frame, l4, dport, now)
                }
                Some(_) => {}
                None => return Verdict::Drop(DropReason::UdpMalformed),
            }
        }
        if proto == ipv4::PROTO_TCP {
            match super::tcp::ports(frame, l4) {
                Some((_, dport)) => {
                    if let Some(s) = session(dport) {
                        return super::tcp::snat_backend_to_client(svc, t, w, frame, l4, s, now);
                    }
                }
                None => return Verdict::Drop(DropReason::TcpMalformed),
            }
        }
        if svc.exception_path {
            return Verdict::ToKernel;
        }
        return match proto {
            ipv4::PROTO_ICMP => echo_reply(w, frame, l4, in_port),
            ipv4::PROTO_UDP => Verdict::Drop(DropReason::SnatNoSession),
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
    if proto == ipv4::PROTO_TCP {
        if let Some((sport, _)) = super::tcp::ports(frame, l4) {
            if let Some((farm, idx, tls)) = svc.tcp_backend_at(src, sport) {
                if farm.nat == NatMode::Dnat {
                    return super::tcp::dnat_backend_to_client(
                        svc, t, w, frame, l4, farm, idx, tls, now,
                    );
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
pub(super) fn slot_in_farm(svc: &Services, farm: &Farm, slot: u16) -> Option<usize> {
    match svc.backend_by_slot(slot) {
        Some((f, i)) if f.id == farm.id => Some(i),
        _ => None,
    }
}

/// The source a client's packet gets toward a backend: unchanged in dnat; in snat the
/// balancer's address and the client flow's port (a session kept `lifetime` seconds).
#[allow(clippy::too_many_arguments)]
pub(super) fn nat_source(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    farm: &Farm,
    out_port: u8,
    (client, cport): (Ipv4Addr, u16),
    now: u32,
    lifetime: u32,
) -> Result<Option<(Ipv4Addr, u16)>, DropReason> {
    if farm.nat == NatMode::Dnat {
        return Ok(None);
    }
    let (s, created) = t
        .snat
        .session(&mut w.snat_ports, client, cport, farm.id, now, lifetime)
        .ok_or(DropReason::SnatPortsExhausted)?;
    if created {
        w.counters.snat_sessions_created.inc();
    }
    Ok(Some((svc.snat_source(farm, out_port), s.port)))
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
    let lifetime = farm
        .timers
        .transaction
        .max(p.keep_until.saturating_sub(now));
    let new_src = match nat_source(svc, t, w, farm, out_port, (client, cport), now, lifetime) {
        Ok(src) => src,
        Err(r) => return Verdict::Drop(r),
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
            let new_work = method == Method::Register
                || (msg.to().tag.is_none()
                    && !matches!(method, Method::Ack | Method::Cancel | Method::Bye)
                    && t.dialogs.get(call_key, now).is_none());
            if new_work {
                let ua = msg
                    .headers()
                    .find(|h| h.raw_name.eq_ignore_ascii_case(b"user-agent"))
                    .map(|h| h.value);
                if ua.is_some_and(|ua| svc.security.is_scanner(ua)) {
                    return Err(DropReason::Scanner);
                }
                if !svc.security.within_rate(&t.rates, client, now) {
                    return Err(DropReason::Flood);
                }
            }
            if method == Method::Register {
                return place_register(svc, t, w, farm, msg, now);
            }
            // Anything whose Call-ID we know follows it: in-dialog requests, ACK,
            // CANCEL, BYE, retransmissions, and a request resent after a 401/407.
            if let Some(d) = t.dialogs.get(call_key, now) {
                if let Some(i) = slot_in_farm(svc, farm, d.backend) {
                    let b = &farm.backends[i];
                    // An INVITE (or other dialog-creating request) resent to a backend
                    // that went down before answering anything is placed anew: the
                    // call is not lost with the backend that never saw it through.
                    let unanswered = d.state == DialogState::Trying
                        && msg.to().tag.is_none()
                        && !matches!(method, Method::Ack | Method::Cancel | Method::Bye);
                    let moves =
                        b.state == BackendState::Down && (farm.move_dialogs_on_down || unanswered);
                    if !moves {
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
    rewrite_l4(frame, l4, false, src, dst)
}

/// Rewrites IPv4 addresses and UDP (`tcp` false) or TCP ports with incremental
/// checksums, and decrements the TTL.
pub(super) fn rewrite_l4(
    frame: &mut [u8],
    l4: usize,
    tcp: bool,
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
    if tcp {
        let mut t = crate::wire::tcp::TcpSegment::new_unchecked(&mut frame[l4..]);
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
pub(super) fn to_next_hop(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::reassembly::fragment;
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
    use crate::wire::checksum;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
    const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);

    fn config(nat: &str, affinity: &str) -> String {
        format!(
            r#"
[[port]]
name = "front"
address = "198.18.0.1/24"
[[port]]
name = "back"
address = "198.18.1.1/24"
[[farm]]
name = "pbx"
vip = "198.18.0.2"
nat = "{nat}"
affinity = "{affinity}"
backends = [ {{ address = "198.18.1.11" }}, {{ address = "198.18.1.12" }} ]
"#
        )
    }

    fn invite(call_id: &str, from_user: &str, pad: usize) -> Vec<u8> {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=x-pad:{}\r\n",
            "x".repeat(pad)
        );
        format!(
            "INVITE sip:bob@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:{from_user}@siplb.test>;tag=1\r\nTo: <sip:bob@siplb.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from_user}@198.18.0.10>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes()
    }

    fn response(code: u16, cseq: &str, call_id: &str, to_user: &str, extra: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:alice@siplb.test>;tag=1\r\nTo: <sip:{to_user}@siplb.test>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn register(user: &str, call_id: &str, cseq: u32) -> Vec<u8> {
        format!(
            "REGISTER sip:siplb.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5062;branch=z9hG4bK{cseq};rport\r\nFrom: <sip:{user}@siplb.test>;tag=9\r\nTo: <sip:{user}@siplb.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@198.18.0.10:5062>;expires=600\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    struct Bed {
        svc: Services,
        mem: SimMemory,
        counters: Box<WorkerCounters>,
    }

    impl Bed {
        fn new(nat: &str, affinity: &str) -> Bed {
            let bed = Bed {
                svc: sim::services(&config(nat, affinity)),
                mem: SimMemory::new(1 << 12),
                counters: Box::default(),
            };
            let t = bed.mem.tables();
            for (ip, port) in [(CLIENT, 0), (B1, 1), (B2, 1)] {
                t.neighbours.learn(ip, host_mac(ip), port, 1);
            }
            bed
        }

        /// Sends `payload` from `src` to `dst` into port `port`; returns the verdict and
        /// the frame that leaves.
        fn send(
            &self,
            port: u8,
            src: (Ipv4Addr, u16),
            dst: (Ipv4Addr, u16),
            payload: &[u8],
        ) -> (Verdict, Vec<u8>) {
            let mut f = sim::udp_frame(port_mac(port), src, dst, payload);
            let t = self.mem.tables();
            let mut w = sim::worker(&self.counters);
            let v = sim::run(&self.svc, &t, &mut w, &mut f, port, 100);
            (v, f)
        }
    }

    /// (src, dst) addresses and ports of a frame, after checking every checksum.
    fn addrs(f: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
        let ip = Ipv4Packet::new_checked(&f[14..]).expect("valid IPv4");
        assert_eq!(checksum::checksum(ip.header()), 0);
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify(ip.src(), ip.dst()), "UDP checksum");
        ((ip.src(), u.src_port()), (ip.dst(), u.dst_port()))
    }

    #[test]
    fn dnat_invite_goes_to_a_backend_and_its_answer_comes_from_the_vip() {
        let bed = Bed::new("dnat", "call-id");
        let (v, out) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("c1@x", "alice", 0));
        assert_eq!(v, Verdict::Forward(1));
        let (src, dst) = addrs(&out);
        assert_eq!(src, (CLIENT, 5060), "dnat keeps the client's address");
        assert!(dst == (B1, 5060) || dst == (B2, 5060));
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!((eth.src(), eth.dst()), (port_mac(1), host_mac(dst.0)));
        // Every later message of the call reaches the same backend.
        for _ in 0..5 {
            let (_, again) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("c1@x", "alice", 0));
            assert_eq!(addrs(&again).1, dst);
        }
        let (v, back) = bed.send(
            1,
            dst,
            (CLIENT, 5060),
            &response(200, "1 INVITE", "c1@x", "bob", ""),
        );
        assert_eq!(v, Verdict::Forward(0));
        assert_eq!(addrs(&back), ((VIP, 5060), (CLIENT, 5060)));
        let d = bed.mem.tables().dialogs.get(hash64(b"c1@x"), 100).unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
    }

    #[test]
    fn an_unanswered_invite_resent_after_its_backend_went_down_finds_a_live_one() {
        // on_backend_down = keep (the default): answered dialogs stay, unanswered move.
        let mut bed = Bed::new("dnat", "call-id");
        let (_, first) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("t1@x", "alice", 0));
        let dead = addrs(&first).1;
        let (other, _) = (0..64)
            .map(|i| {
                let cid = format!("t2-{i}@x");
                let (_, f) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite(&cid, "alice", 0));
                (cid, f)
            })
            .find(|(_, f)| addrs(f).1 == dead)
            .expect("some call lands on the same backend");
        // That second call was answered (180): it is an early dialog, not `trying`.
        bed.send(
            1,
            dead,
            (CLIENT, 5060),
            &response(180, "1 INVITE", &other, "bob", ""),
        );
        let fi = bed.svc.farms[0]
            .backends
            .iter()
            .position(|b| b.addr == dead.0)
            .unwrap();
        bed.svc.farms[0].backends[fi].state = BackendState::Down;
        bed.svc.farms[0].table = crate::lb::services::build_table(&bed.svc.farms[0].backends);

        let (_, again) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("t1@x", "alice", 0));
        let live = addrs(&again).1;
        assert_ne!(live, dead, "the retransmission is placed on a live backend");
        let (_, later) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("t1@x", "alice", 0));
        assert_eq!(addrs(&later).1, live, "and stays there");
        let (_, kept) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite(&other, "alice", 0));
        assert_eq!(
            addrs(&kept).1,
            dead,
            "an answered dialog is kept (keep mode)"
        );
    }

    #[test]
    fn snat_maps_the_client_to_a_balancer_port_and_back() {
        let bed = Bed::new("snat", "call-id");
        let (v, out) = bed.send(0, (CLIENT, 5060), (VIP, 5060), &invite("c2@x", "alice", 0));
        assert_eq!(v, Verdict::Forward(1));
        let (src, backend) = addrs(&out);
        assert_eq!(
            src.0,
            Ipv4Addr::new(198, 18, 1, 1),
            "source is the back port's address"
        );
        // The backend answers to that address and port; it comes back from the VIP.
        let (v, back) = bed.send(
            1,
            backend,
            src,
            &response(180, "1 INVITE", "c2@x", "bob", ""),
        );
        assert_eq!(v, Verdict::Forward(0));
        assert_eq!(addrs(&back), ((VIP, 5060), (CLIENT, 5060)));
        // A stranger cannot use the session.
        let (v, _) = bed.send(
            1,
            (Ipv4Addr::new(198, 18, 1, 99), 5060),
            src,
            &response(200, "1 INVITE", "c2@x", "bob", ""),
        );
        assert_eq!(v, Verdict::Drop(DropReason::NotBalanced));
    }

    #[test]
    fn challenged_register_meets_the_same_registrar_and_calls_follow_it() {
        let bed = Bed::new("dnat", "registrar");
        let (_, first) = bed.send(0, (CLIENT, 5062), (VIP, 5060), &register("carol", "r1", 1));
        let registrar = addrs(&first).1;
        bed.send(
            1,
            registrar,
            (CLIENT, 5062),
            &response(401, "1 REGISTER", "r1", "carol", ""),
        );
        let (_, second) = bed.send(0, (CLIENT, 5062), (VIP, 5060), &register("carol", "r1", 2));
        assert_eq!(addrs(&second).1, registrar);
        bed.send(
            1,
            registrar,
            (CLIENT, 5062),
            &response(
                200,
                "2 REGISTER",
                "r1",
                "carol",
                "Contact: <sip:carol@198.18.0.10:5062>;expires=600\r\n",
            ),
        );
        let reg = bed.mem.tables().registrations.get_entry(
            aor_key(&crate::sip::SipUri::parse(b"sip:carol@siplb.test").unwrap()),
            100,
        );
        assert_eq!(
            reg.map(|r| r.1),
            Some(100 + 600 + 30),
            "binding lives Expires + margin"
        );
        // Whatever their Call-IDs, carol's calls go to her registrar.
        for i in 0..20 {
            let (_, out) = bed.send(
                0,
                (CLIENT, 5062),
                (VIP, 5060),
                &invite(&format!("call{i}"), "carol", 0),
            );
            assert_eq!(addrs(&out).1, registrar, "call {i}");
        }
    }

    #[test]
    fn backend_originated_call_is_answered_back_to_that_backend() {
        let bed = Bed::new("dnat", "call-id");
        // Backend 2 calls the phone directly (the balancer is its gateway).
        let inv = invite("pbx-call", "pbx", 0);
        let (v, out) = bed.send(1, (B2, 5060), (CLIENT, 5062), &inv);
        assert_eq!(v, Verdict::Forward(0));
        assert_eq!(
            addrs(&out),
            ((VIP, 5060), (CLIENT, 5062)),
            "the phone sees the VIP"
        );
        // Whatever Maglev says about this Call-ID, the phone's answers go to B2.
        for code in [180, 200] {
            let (_, back) = bed.send(
                0,
                (CLIENT, 5062),
                (VIP, 5060),
                &response(code, "1 INVITE", "pbx-call", "alice", ""),
            );
            assert_eq!(addrs(&back).1, (B2, 5060));
        }
    }

    #[test]
    fn a_3000_byte_invite_in_fragments_is_reassembled_and_balanced() {
        let bed = Bed::new("dnat", "call-id");
        let whole = sim::udp_frame(
            port_mac(0),
            (CLIENT, 5060),
            (VIP, 5060),
            &invite("big@x", "alice", 2600),
        );
        assert!(whole.len() > 3000);
        let mut scratch = vec![0u8; 1514];
        let mut frags = Vec::new();
        fragment(&whole, 1500, &mut scratch, |f| frags.push(f.to_vec())).unwrap();
        assert_eq!(frags.len(), 3);
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        let mut verdicts = Vec::new();
        let mut last = Vec::new();
        for f in &frags {
            let mut f = f.clone();
            verdicts.push(sim::run(&bed.svc, &t, &mut w, &mut f, 0, 100));
            last = f;
        }
        assert_eq!(verdicts[..2], [Verdict::Consumed, Verdict::Consumed]);
        assert_eq!(verdicts[2], Verdict::Forward(1));
        assert_eq!(last.len(), whole.len());
        let (src, dst) = addrs(&last);
        assert_eq!(src, (CLIENT, 5060));
        assert!(dst.0 == B1 || dst.0 == B2);
        assert_eq!(bed.counters.datagrams_reassembled.get(), 1);
    }

    #[test]
    fn arp_for_the_vip_and_ping_of_the_vip_are_answered() {
        let bed = Bed::new("dnat", "call-id");
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        let mut f = vec![0u8; 60];
        arp::write_frame(
            &mut f,
            arp::OP_REQUEST,
            host_mac(CLIENT),
            CLIENT,
            MacAddr::BROADCAST,
            MacAddr::ZERO,
            VIP,
        );
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut f, 0, 100),
            Verdict::Forward(0)
        );
        let a = ArpPacket::new_checked(&f[14..]).unwrap();
        assert_eq!(
            (a.operation(), a.sender_ip(), a.sender_mac()),
            (arp::OP_REPLY, VIP, port_mac(0))
        );
        // ICMP echo to the VIP.
        let mut p = sim::udp_frame(port_mac(0), (CLIENT, 1), (VIP, 2), b"ping-payload");
        let hdr = &mut p[14..34];
        hdr[9] = ipv4::PROTO_ICMP;
        hdr[10] = 0;
        hdr[11] = 0;
        let c = checksum::checksum(hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        let icmp_len = p.len() - 34;
        let m = &mut p[34..];
        m[..icmp_len].fill(0);
        m[0] = icmp::TYPE_ECHO_REQUEST;
        m[4..8].copy_from_slice(&[0x12, 0x34, 0, 1]); // identifier, sequence
        let c = checksum::checksum(&m[..icmp_len]);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut p, 0, 100),
            Verdict::Forward(0)
        );
        let ip = Ipv4Packet::new_checked(&p[14..]).unwrap();
        assert_eq!((ip.src(), ip.dst()), (VIP, CLIENT));
        assert_eq!(p[34], icmp::TYPE_ECHO_REPLY);
        assert_eq!(checksum::checksum(&p[34..]), 0);
    }

    #[test]
    fn bad_input_is_dropped_and_counted_by_reason() {
        let bed = Bed::new("dnat", "call-id");
        let (v, _) = bed.send(
            0,
            (CLIENT, 5060),
            (VIP, 5060),
            b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n",
        );
        assert_eq!(v, Verdict::Drop(DropReason::SipMalformed));
        let (v, _) = bed.send(0, (CLIENT, 5060), (VIP, 5070), &invite("c@x", "a", 0));
        assert_eq!(v, Verdict::Drop(DropReason::VipPortClosed));
        let (v, _) = bed.send(
            0,
            (CLIENT, 5060),
            (Ipv4Addr::new(198, 18, 0, 77), 5060),
            b"x",
        );
        assert_eq!(v, Verdict::Drop(DropReason::NotBalanced));
        assert_eq!(
            bed.counters.sip_errors.iter().map(|c| c.get()).sum::<u64>(),
            1
        );
        // Truncated and corrupt frames, any length.
        let good = sim::udp_frame(
            port_mac(0),
            (CLIENT, 5060),
            (VIP, 5060),
            &invite("c@x", "a", 0),
        );
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        for n in 0..good.len() {
            let mut f = good[..n].to_vec();
            assert!(
                matches!(
                    process(&bed.svc, &t, &mut w, &mut f, 0, 100),
                    Verdict::Drop(_)
                ),
                "prefix {n}"
            );
        }
        let mut f = good.clone();
        f[14 + 8] = 1; // TTL 1: cannot be forwarded
        let c = {
            let h = &mut f[14..34];
            h[10] = 0;
            h[11] = 0;
            checksum::checksum(h)
        };
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut f, 0, 100),
            Verdict::Drop(DropReason::TtlExpired)
        );
    }

    #[test]
    fn unresolved_next_hop_asks_arp_once_per_second() {
        let bed = Bed::new("dnat", "call-id");
        let t = bed.mem.tables();
        let mut w = sim::worker(&bed.counters);
        let stranger = Ipv4Addr::new(198, 18, 0, 20);
        // A backend answers a client the balancer has never heard from.
        let mut f = sim::udp_frame(
            port_mac(1),
            (B1, 5060),
            (stranger, 5060),
            &response(200, "1 OPTIONS", "o1", "x", ""),
        );
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut f.clone(), 1, 100),
            Verdict::Drop(DropReason::NeighbourUnresolved)
        );
        assert_eq!(
            w.arp_requests.drain().collect::<Vec<_>>(),
            vec![(0, stranger)]
        );
        assert_eq!(
            process(&bed.svc, &t, &mut w, &mut f, 1, 100),
            Verdict::Drop(DropReason::NeighbourUnresolved)
        );
        assert!(w.arp_requests.is_empty(), "rate limited");
    }

    #[test]
    fn workers_sharing_tables_agree_on_dialogs() {
        // A client's request on one worker, the backend's answer and the BYE on another.
        let bed = Bed::new("dnat", "call-id");
        let t = bed.mem.tables();
        let c2: Box<WorkerCounters> = Box::default();
        let mut w1 = sim::worker(&bed.counters);
        let mut w2 = sim::worker(&c2);
        let mut placed = std::collections::HashMap::new();
        for i in 0..200 {
            let cid = format!("x{i}");
            let mut f = sim::udp_frame(
                port_mac(0),
                (CLIENT, 5060),
                (VIP, 5060),
                &invite(&cid, "a", 0),
            );
            sim::run(&bed.svc, &t, &mut w1, &mut f, 0, 100);
            placed.insert(cid, addrs(&f).1);
        }
        for (cid, backend) in &placed {
            let bye = format!("BYE sip:b@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK2\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: {cid}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
            let mut f = sim::udp_frame(port_mac(0), (CLIENT, 5060), (VIP, 5060), bye.as_bytes());
            sim::run(&bed.svc, &t, &mut w2, &mut f, 0, 101);
            assert_eq!(addrs(&f).1, *backend);
        }
        let spread = placed.values().filter(|b| b.0 == B1).count();
        assert!((70..=130).contains(&spread), "{spread} of 200 on B1");
    }

    #[test]
    fn four_units_from_one_config_agree_on_a_million_call_ids_and_aors() {
        // Independent units: each parses the config and builds its own tables.
        let six = r#"
[[port]]
name = "back"
address = "198.18.1.1/24"
[[farm]]
name = "pbx"
vip = "198.18.0.2"
backends = [
 { address = "198.18.1.11", weight = 3 }, { address = "198.18.1.12" }, { address = "198.18.1.13", weight = 2 },
 { address = "198.18.1.14" }, { address = "198.18.1.15", weight = 2 }, { address = "198.18.1.16" },
]
"#;
        for removed in [None, Some(3usize)] {
            let units: Vec<Services> = (0..4)
                .map(|_| {
                    let mut s = sim::services(six);
                    if let Some(r) = removed {
                        s.farms[0].backends[r].state = crate::lb::services::BackendState::Down;
                        s.farms[0].table = crate::lb::services::build_table(&s.farms[0].backends);
                    }
                    s
                })
                .collect();
            let mut x = 0x9e37_79b9_u64;
            for i in 0..1_000_000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = if i % 2 == 0 {
                    hash64(format!("{x:x}@198.18.0.10").as_bytes())
                } else {
                    aor_key(&SipUri {
                        scheme: b"sip",
                        user: Some(format!("u{x}").as_bytes()),
                        host: b"siplb.test",
                        port: None,
                        params: b"",
                        headers: b"",
                    })
                };
                let first = units[0].farms[0].pick(key);
                assert!(first.is_some() && Some(first) != removed.map(Some));
                assert!(units[1..].iter().all(|u| u.farms[0].pick(key) == first));
            }
        }
    }
}

#[cfg(test)]
mod exception_path_tests {
    use super::*;
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};

    #[test]
    fn the_hosts_own_traffic_goes_to_the_kernel() {
        let cfg = "[[port]]\nname='back'\naddress='198.18.1.1/24'\n[[farm]]\nname='f'\nvip='198.18.0.2'\nnat='snat'\nbackends=[{address='198.18.1.11'}]\n";
        let svc = sim::services(cfg);
        assert!(svc.exception_path, "on by default");
        let mem = SimMemory::new(1 << 10);
        let t = mem.tables();
        let c: Box<WorkerCounters> = Box::default();
        let mut w = sim::worker(&c);
        let own = Ipv4Addr::new(198, 18, 1, 1);
        let b = Ipv4Addr::new(198, 18, 1, 11);
        // A health-check answer to a kernel socket's port.
        let mut f = sim::udp_frame(
            port_mac(0),
            (b, 5060),
            (own, 40000),
            b"SIP/2.0 200 OK\r\n\r\n",
        );
        assert_eq!(process(&svc, &t, &mut w, &mut f, 0, 10), Verdict::ToKernel);
        // The answer to the kernel's ARP request.
        let mut a = vec![0u8; 60];
        arp::write_frame(
            &mut a,
            arp::OP_REPLY,
            host_mac(b),
            b,
            port_mac(0),
            port_mac(0),
            own,
        );
        assert_eq!(process(&svc, &t, &mut w, &mut a, 0, 10), Verdict::ToKernel);
        // Without the exception path they are dropped or answered here.
        let mut off = svc.clone();
        off.exception_path = false;
        let mut f = sim::udp_frame(
            port_mac(0),
            (b, 5060),
            (own, 40000),
            b"SIP/2.0 200 OK\r\n\r\n",
        );
        assert_eq!(
            process(&off, &t, &mut w, &mut f, 0, 10),
            Verdict::Drop(DropReason::SnatNoSession)
        );
    }
}

#[cfg(test)]
mod security_tests {
    use super::*;
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};

    fn invite(cid: &str, ua: &str) -> Vec<u8> {
        format!(
            "INVITE sip:b@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{cid}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn deny_scanners_and_floods_are_dropped_and_counted() {
        let cfg = "[security]\ndeny = ['198.18.0.66']\nmax_new_per_source = 5\n[[port]]\nname='f'\naddress='198.18.0.1/24'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nbackends=[{address='198.18.1.11'}]\n";
        let svc = sim::services(cfg);
        let mem = SimMemory::new(1 << 10);
        let t = mem.tables();
        let b = Ipv4Addr::new(198, 18, 1, 11);
        t.neighbours.learn(b, host_mac(b), 1, 1);
        let c: Box<WorkerCounters> = Box::default();
        let mut w = sim::worker(&c);
        let vip = (Ipv4Addr::new(198, 18, 0, 2), 5060);
        let client = (Ipv4Addr::new(198, 18, 0, 10), 5060);
        let mut send = |src, payload: &[u8], now| {
            let mut f = sim::udp_frame(port_mac(0), src, vip, payload);
            sim::run(&svc, &t, &mut w, &mut f, 0, now)
        };
        assert_eq!(
            send(
                (Ipv4Addr::new(198, 18, 0, 66), 5060),
                &invite("d1", "x"),
                10
            ),
            Verdict::Drop(DropReason::Denied)
        );
        assert_eq!(
            send(client, &invite("s1", "friendly-scanner"), 10),
            Verdict::Drop(DropReason::Scanner)
        );
        let verdicts: Vec<Verdict> = (0..8)
            .map(|i| send(client, &invite(&format!("c{i}"), "Linphone"), 11))
            .collect();
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == Verdict::Forward(1))
                .count(),
            5
        );
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == Verdict::Drop(DropReason::Flood))
                .count(),
            3
        );
        // Messages of admitted dialogs are never limited, and a new second has room.
        assert_eq!(
            send(client, &invite("c0", "Linphone"), 11),
            Verdict::Forward(1)
        );
        assert_eq!(
            send(client, &invite("c9", "Linphone"), 12),
            Verdict::Forward(1)
        );
    }
}
