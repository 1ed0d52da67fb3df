//! What every stage of the packet path shares: the verdict it returns, the shared
//! tables, the worker's private state, and `Ctx`, the per-packet context that carries
//! them together with the services snapshot and the time.
//!
//! Both the dispatch (`dispatch.rs`) and the protocol stages (`udp.rs`, `tcp.rs`,
//! `nat.rs`) import from here and never from each other's internals, so the module
//! graph has no cycle.

use super::backend_load::LoadTable;
use super::counters::{DropReason, WorkerCounters};
use super::held::{HeldStore, Resends, Ticket};
use super::neighbour::NeighbourTable;
use super::reassembly::Reassembler;
use super::services::{Farm, Services};
use super::snat::{SnatAllocator, SnatTable};
use super::timing::RequestTimes;
use crate::alg::Edits;
use crate::sip::Method;
use crate::table::connection::ConnectionTable;
use crate::table::dialog::DialogTable;
use crate::table::flow::FlowTable;
use crate::table::media::MediaTable;
use crate::table::registration::RegistrationTable;
use crate::table::source_ring::SourceRing;
use crate::table::tcp_seq::SeqTable;
use std::net::Ipv4Addr;

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

impl From<DropReason> for Verdict {
    fn from(r: DropReason) -> Self {
        Verdict::Drop(r)
    }
}

/// The shared tables, laid over shared memory by the dataplane (or a Vec in tests).
pub struct Tables<'m> {
    pub dialogs: DialogTable<'m>,
    /// Per-source limits and the ban list (`lb/security/limits.rs`).
    pub rates: FlowTable<'m>,
    pub connections: ConnectionTable<'m>,
    pub registrations: RegistrationTable<'m>,
    pub neighbours: NeighbourTable<'m>,
    pub snat: SnatTable<'m>,
    /// RTP/RTCP mappings of the SDP the ALG relays (`lb/media.rs`).
    pub media: MediaTable<'m>,
    /// Sequence corrections of TCP connections whose SIP the ALG rewrote.
    pub tcp_seq: SeqTable<'m>,
    /// When clients' requests left for their backends (`lb::timing`).
    pub request_times: RequestTimes<'m>,
    /// Live load per backend slot: dialogs, overload signals, passive health.
    pub load: LoadTable<'m>,
    /// Sources for the control plane's DNSBL lookups (`lb/security/dnsbl.rs`).
    pub new_sources: SourceRing<'m>,
    /// New INVITEs and REGISTERs held for failover (`lb::failover`).
    pub held: HeldStore<'m>,
}

/// ARP requests the worker must send after this packet (the frame that caused them
/// was dropped; SIP retransmits).
#[derive(Debug, Default)]
pub struct ArpRequests {
    items: [(u8, u32); 8],
    len: usize,
}

impl ArpRequests {
    pub(super) fn push(&mut self, port: u8, ip: Ipv4Addr) {
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
    /// The SIP ALG's replacements for the message being rewritten (reused).
    pub edits: Edits,
    /// The length of the frame `process` leaves in the buffer (the ALG may change it).
    pub out_len: usize,
    /// The farm that handled the frame `process` returned a verdict for (`Farm::id`,
    /// `counters::NO_FARM` if none): its drops are counted per farm too.
    pub farm: u8,
    /// Microseconds (a wrapping clock, any origin), set by the worker per burst: the
    /// backends' response times.
    pub now_us: u32,
    /// Milliseconds of the shared clock (`Clock::millis`) at this poll, for the
    /// overload holds and passive health.
    pub now_ms: u64,
    /// Held requests to send again after this packet (`lb::failover`).
    pub resends: Resends,
    /// The held request the packet being processed sends again, if it is one.
    pub resend: Option<Ticket>,
    /// Where the failover's timeout scan goes on from.
    pub held_cursor: usize,
}

/// Everything one packet's handling reads and writes besides the frame itself:
/// built once per packet by `process`, passed by reference to every stage.
pub struct Ctx<'p, 'm, 'w> {
    pub svc: &'p Services,
    pub t: &'p Tables<'m>,
    pub w: &'p mut WorkerCtx<'w>,
    /// Seconds (the tables' clock).
    pub now: u32,
    /// The frame's length; the buffer the stages get may be longer (room to grow).
    pub len: usize,
}

impl Ctx<'_, '_, '_> {
    /// A backend slot from a table entry, if it still belongs to `farm`, with its
    /// index in the farm.
    #[inline]
    pub(super) fn slot_in_farm(&self, farm: &Farm, slot: u16) -> Option<usize> {
        match self.svc.backend_by_slot(slot) {
            Some((f, i)) if f.id == farm.id => Some(i),
            _ => None,
        }
    }

    /// Counts a frame sent to backend `idx` of `farm`.
    #[inline]
    pub(super) fn count_to(&self, farm: &Farm, idx: usize, len: usize) {
        let c = &self.w.counters.backends[usize::from(farm.backends[idx].slot)];
        c.to_packets.inc();
        c.to_bytes.add(len as u64);
    }

    /// Stamps the request `txn` (`timing::transaction_key`) sent to a backend now.
    #[inline]
    pub(super) fn request_sent(&self, txn: u64) {
        if !self.t.request_times.sent(txn, self.w.now_us) {
            self.w.counters.request_times_full.inc();
        }
    }

    /// Counts backend `idx` of `farm`'s answer `code` to the request `txn` (CSeq
    /// `method`), with its time if the request was stamped.
    #[inline]
    pub(super) fn answer_from(&self, farm: &Farm, idx: usize, txn: u64, code: u16, method: Method) {
        let time = self
            .t
            .request_times
            .answered(txn, self.w.now_us, code >= 200);
        self.w.counters.responses[usize::from(farm.backends[idx].slot)].answer(code, method, time);
    }

    /// Counts a frame received from backend `idx` of `farm`.
    #[inline]
    pub(super) fn count_from(&self, farm: &Farm, idx: usize, len: usize) {
        let c = &self.w.counters.backends[usize::from(farm.backends[idx].slot)];
        c.from_packets.inc();
        c.from_bytes.add(len as u64);
    }
}
