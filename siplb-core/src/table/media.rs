//! `MediaTable`: the RTP/RTCP flows announced in SDP, forwarded through the balancer as
//! plain L4 NAT (issue 12, items 2 and 8). Shared by all workers: RTP can arrive on
//! any queue.
//!
//! # Model
//!
//! A mapping relays one SDP stream (`m=` line) of one dialog between two endpoints,
//! the client's and the backend's (or the media relay behind it). It owns two *legs*,
//! each a port pair (RTP on an even port, RTCP on the next) on an address of the
//! balancer: the client leg on a VIP, the backend leg on the farm's SNAT address (or
//! the VIP in `dnat`). Pairs come from [`Pool`]s (an address and a port range, e.g. a
//! farm's `media_ports` on one address). An endpoint sends to the leg facing it; the
//! packet leaves from the other leg toward the other endpoint:
//!
//! ```text
//! client ──▶ VIP:pc      (client leg)  ──▶ from SNAT:pb to backend's endpoint
//! backend ─▶ SNAT:pb     (backend leg) ──▶ from VIP:pc  to client's endpoint
//! ```
//!
//! A leg is found from the packet's destination alone, (address, port) → pool → the
//! leg's slot, by arithmetic: no hash, no probing, and port allocation *is* slot
//! allocation. Each leg's 64-byte [`Leg`] holds all that forwarding from it reads and
//! writes (one cache line per packet): where to send, the source to write, the source
//! it accepts, the idle deadline, counters. What only SIP and housekeeping read
//! (Call-ID hash, announced endpoints) lies in a separate [`LegInfo`] array.
//!
//! [`MediaTable::announce`] (called once per stream of every SDP that crosses, through
//! [`MediaSession`], the rewriter's [`MediaMapper`]) creates the mapping on the
//! dialog's first SDP and records the announcing side's endpoint; it returns the
//! address the *other* side must send to. A dialog's mappings are found through a
//! small index, a [`FlowTable`] keyed by (Call-ID hash, stream index), so
//! [`MediaTable::end_dialog`] does at most [`MAX_STREAMS`] lookups, never a scan.
//!
//! # Endpoints: latching, hold, port 0
//!
//! - Symmetric RTP (RFC 4961) and client NAT: the SDP of a phone behind NAT names its
//!   private address. A leg sends toward the endpoint's announced address until a
//!   packet arrives *at that leg* (from the endpoint's side); the first one's source
//!   is latched, separately for RTP and RTCP (a NAT gives them different ports), and
//!   from then on packets go back to it. Latched legs accept packets only from the
//!   latched source or from the announced endpoint (an endpoint that moved without NAT
//!   re-latches); anything else is dropped as [`MediaDrop::ForeignSource`] (RTP
//!   injection, the "RTP bleed" of relays that re-learn from any packet).
//! - A new SDP from the same side with the same endpoint (session refresh, hold answer)
//!   keeps the latch; one with another endpoint resets it. The first SDP of a side
//!   whose packets already latched (early media before the answer) keeps the latch.
//! - Hold with `c=0.0.0.0` (RFC 2543), or a port 0 in an announced endpoint, pauses the
//!   direction toward that side ([`MediaDrop::NoDestination`]) and keeps what was
//!   learnt; the next SDP with an address resumes it. `a=sendonly`/`inactive` change
//!   nothing here: RTCP keeps flowing both ways.
//! - Rejected streams (`m=` port 0) never reach the mapper; a stream mapped by the
//!   offer and rejected by the answer lives until its dialog ends or it idles out, or
//!   the caller ends it ([`MediaTable::end_stream`]).
//! - A re-INVITE that moves an endpoint keeps the mapping and its ports (the other side
//!   keeps sending to the same place) and redirects it.
//!
//! # Concurrency protocol
//!
//! Every word is an atomic; a leg is a seqlock whose sequence is its `link` word
//! (state, generation, deadline).
//! - *Allocate*: claim the pair's bit in the pool's bitmap (`fetch_or`, next fit from a
//!   shared rotor, so a freed port waits a turn of the range before it is reused). The
//!   leg is `FREE`; write its fields, then `link` = `LIVE` with a new generation
//!   (Release). Both legs of a mapping share the generation, which is also written
//!   into the tag of every endpoint word.
//! - *Forward* (any worker): `link` (Acquire), the fields, an Acquire fence, `link`
//!   again: a changed state or generation means the leg was ended or reused mid-read
//!   and the packet is dropped as unmapped. Latching CASes the leg's source word and
//!   the peer's destination word expecting the mapping's generation in their tag, so
//!   a latch never lands in a reused leg. The deadline is refreshed by a CAS on
//!   `link` when it is older than `now + timeout` (with a clock in seconds: at most
//!   once a second per leg, so legs do not bounce between workers' caches); the
//!   counters word is a load and a store (see below).
//! - *End* (a BYE's [`end_dialog`](MediaTable::end_dialog), or [`sweep`](MediaTable::sweep)
//!   of mappings both of whose legs are idle): CAS the client leg `LIVE` → `DYING`
//!   (the winner owns the end), the backend leg → `FREE` (the sweep undoes the first
//!   step if the backend leg was refreshed meanwhile), drop the index entry, client
//!   leg → `FREE`, then clear both bitmap bits (Release) so the pairs can be claimed.
//! - *Announce* (SIP path): index lookup or allocation, then single-word CASes on the
//!   mapping's endpoint words, tagged by generation.
//!
//! Races accepted:
//! - A worker that validated a leg an instant before the mapping ended forwards that
//!   one packet with the old addresses. Its ports are not reused at once (next fit: a
//!   turn of the range), so a reply to it finds no mapping rather than a new call to
//!   latch onto. Stopping it would need a reference count on the packet path, an
//!   atomic write per packet on a shared line.
//! - A packet latching at the moment an SDP from the same side moves the endpoint may
//!   leave the latch or the destination on the old value until the next packet from
//!   that side latches again (20 ms of RTP later). Both are single words; making the
//!   pair atomic would need a lock.
//! - Counters: a load and a store, not a locked add. A locked instruction drains the
//!   core's memory pipeline, so a worker could no longer overlap the DRAM accesses of
//!   a burst's legs (`bench --bin media`: 287 ns per packet with `fetch_add`, 152 ns
//!   without). Two workers forwarding on one leg at the same instant can lose a
//!   count; RSS keeps an endpoint's flow on one queue, so this needs an endpoint
//!   whose packets are spread over queues. Exact per-farm totals belong in the
//!   workers' own counters.
//!
//! As in [`FlowTable`], two workers announcing the *first* SDP of the same stream at
//! once (a retransmission on another queue) both allocate; the index insert decides,
//! and the loser frees its pairs and answers with the winner's.
//!
//! # Memory
//!
//! Per mapping: two legs of 64 + 24 bytes (176), two bitmap bits, and its share of
//! the index, sized at one 16-byte slot per two legs rounded up to a power of two
//! (load at most 0.5: 32 to 64 bytes). Memory is fixed by the pools, not by traffic:
//! 1 M mappings on 64 pools of 32,256 pairs (ports 1024-65535 of 32 VIP and 32 SNAT
//! addresses) take 215.5 MB, 215.5 bytes per mapping
//! (`tests::one_million_mappings_fit`).

mod replica;

pub use replica::{Exported, MappingRecord, RECORD_BYTES};

use crate::alg::{Mapped, MediaError, MediaFlow, MediaMapper};
use crate::table::dirty::DirtyMarks;
use crate::table::flow::{Entry, FlowTable, Slot};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::atomic::{
    fence, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

/// Streams per dialog that can be relayed (the rewriter handles `sdp::MAX_MEDIA`).
pub const MAX_STREAMS: usize = crate::alg::sdp::MAX_MEDIA;
/// Index probe bound, as the dialog table's.
const INDEX_PROBE: usize = 16;
/// Index entries live until their mapping ends.
const NEVER: u32 = u32::MAX;

// `link`: deadline (0..32) | state (32..34) | role (34) | stream (35..40) | gen (40..64).
const FREE: u64 = 0;
const LIVE: u64 = 1;
const DYING: u64 = 2;
const STATE_SHIFT: u32 = 32;
const ROLE_BACKEND: u64 = 1 << 34;
const STREAM_SHIFT: u32 = 35;
const GEN_SHIFT: u32 = 40;
const GEN_MASK: u64 = (1 << 24) - 1;

// Endpoint words: address (32..64) | port (16..32) | tag (0..16), the tag being
// LATCHED, HOLD and the low 14 bits of the mapping's generation.
const LATCHED: u64 = 1;
const HOLD: u64 = 2;
const TAG_GEN_SHIFT: u32 = 2;
const TAG_MASK: u64 = 0xffff;

// `peer`: peer leg (0..32) | farm (32..48) | idle timeout in seconds (48..64).
// `count`: packets (40..64, modulo 2^24) | bytes (0..40).
const PACKET_ONE: u64 = 1 << 40;

const RTP: usize = 0;
const RTCP: usize = 1;

/// The forwarding half of a leg: one cache line. Zeroed memory is a free leg.
#[repr(C, align(64))]
#[derive(Default)]
pub struct Leg {
    link: AtomicU64,
    peer: AtomicU64,
    /// The peer leg's local address and RTP port: the source to write.
    out: AtomicU64,
    /// Where packets arriving at this leg go (RTP, RTCP): the other endpoint.
    dst: [AtomicU64; 2],
    /// The latched source of packets arriving at this leg (RTP, RTCP).
    src: [AtomicU64; 2],
    count: AtomicU64,
}

/// The cold half of a leg, read on the SIP path and by housekeeping.
#[repr(C)]
#[derive(Default)]
pub struct LegInfo {
    call: AtomicU64,
    /// The endpoint (RTP, RTCP) announced by the side this leg faces; 0 = none yet.
    announced: [AtomicU64; 2],
}

/// Which endpoint of a mapping, and the leg facing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// A pool as configured: an address of the balancer and a port range on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub addr: Ipv4Addr,
    pub ports: RangeInclusive<u16>,
}

/// A pool in the table: its pairs are the legs `leg_base..leg_base + pairs`. `repr(C)`:
/// the dataplane lays pools in shared memory that the control plane reads.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Pool {
    addr: u32,
    first_port: u16,
    pairs: u32,
    /// First leg, a multiple of 64: leg `i` is bit `i % 64` of bitmap word `i / 64`.
    leg_base: u32,
    rotor: AtomicU32,
    exhausted: AtomicU64,
}

impl Pool {
    fn words(&self) -> u32 {
        self.pairs.div_ceil(64)
    }

    fn contains(&self, addr: u32, port: u16) -> bool {
        self.addr == addr
            && port >= self.first_port
            && u32::from(port - self.first_port) < 2 * self.pairs
    }

    fn local(&self, leg: u32) -> u64 {
        let port = u32::from(self.first_port) + 2 * (leg - self.leg_base);
        ep(self.addr, port as u16)
    }
}

/// A pool's index in the table (pools are sorted by address and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(u16);

/// Pools that cannot be laid out; names the range and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("media ports {start}-{end} on {addr}: no RTP/RTCP pair (an even port and the next); give a range of at least two ports")]
    NoPair {
        addr: Ipv4Addr,
        start: u16,
        end: u16,
    },
    #[error("media ports {start}-{end} on {addr} overlap another range on that address; give each farm its own ports")]
    Overlap {
        addr: Ipv4Addr,
        start: u16,
        end: u16,
    },
    #[error("more than 65535 media pools; use fewer addresses or ranges")]
    TooMany,
}

/// Lays out pools: sorted by (address, first port), each one's legs at a multiple of
/// 64. Returns them with the number of legs (and bitmap bits) they need.
pub fn layout(specs: &[PoolSpec]) -> Result<(Vec<Pool>, usize), PoolError> {
    let mut sorted: Vec<&PoolSpec> = specs.iter().collect();
    sorted.sort_by_key(|s| (s.addr, *s.ports.start()));
    if sorted.len() > usize::from(u16::MAX) {
        return Err(PoolError::TooMany);
    }
    let mut pools = Vec::with_capacity(sorted.len());
    let mut legs = 0usize;
    let mut prev: Option<&PoolSpec> = None;
    for s in sorted {
        let (start, end) = (*s.ports.start(), *s.ports.end());
        // Port 0 is no port; RTP takes the even port of each pair.
        let first = (u32::from(start).max(2) + 1) & !1;
        let pairs = (u32::from(end) + 1).saturating_sub(first) / 2;
        if pairs == 0 {
            return Err(PoolError::NoPair {
                addr: s.addr,
                start,
                end,
            });
        }
        if let Some(p) = prev {
            if p.addr == s.addr && *p.ports.end() >= start {
                return Err(PoolError::Overlap {
                    addr: s.addr,
                    start,
                    end,
                });
            }
        }
        prev = Some(s);
        pools.push(Pool {
            addr: s.addr.into(),
            first_port: first as u16,
            pairs,
            leg_base: legs as u32,
            ..Pool::default()
        });
        legs += (pairs as usize).next_multiple_of(64);
    }
    Ok((pools, legs))
}

/// Where a forwarded packet goes: rewrite the source to `src` and the destination to
/// `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nat {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub farm: u16,
}

/// Why a packet to a media port was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MediaDrop {
    #[error("no live media mapping at this address and port")]
    NotMapped,
    #[error("the other endpoint has not announced where to send, or holds (0.0.0.0, port 0)")]
    NoDestination,
    #[error("a source other than the latched one or the announced endpoint")]
    ForeignSource,
}

impl MediaDrop {
    pub const COUNT: usize = 3;

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::NotMapped => "media_not_mapped",
            Self::NoDestination => "media_no_destination",
            Self::ForeignSource => "media_foreign_source",
        }
    }
}

/// Where a mapping's legs come from and how long it may idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub farm: u16,
    pub client_pool: PoolId,
    pub backend_pool: PoolId,
    /// Idle seconds before the mapping ends (both legs idle).
    pub timeout: u16,
}

/// One stream's endpoint as an SDP announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// The dialog's Call-ID hash (`hash64`, never 0).
    pub call: u64,
    /// The `m=` line's index, below [`MAX_STREAMS`].
    pub stream: u8,
    /// The side whose SDP this is.
    pub from: Side,
    pub rtp: SocketAddrV4,
    pub rtcp: SocketAddrV4,
}

/// What one leg holds, for listings and tests (not the packet path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegView {
    pub call: u64,
    pub stream: u8,
    pub side: Side,
    pub farm: u16,
    pub deadline: u32,
    /// Where RTP and RTCP arriving here go (`None`: nowhere yet, or hold).
    pub dst: [Option<SocketAddrV4>; 2],
    /// The latched sources.
    pub latched: [Option<SocketAddrV4>; 2],
    pub packets: u32,
    pub bytes: u64,
}

/// Mappings visited and ended by one [`MediaTable::sweep`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub visited: usize,
    pub ended: usize,
    /// Mappings whose client leg was visited and lives on (one count per mapping).
    pub live: usize,
}

#[inline(always)]
fn ep(addr: u32, port: u16) -> u64 {
    (u64::from(addr) << 32) | (u64::from(port) << 16)
}

#[inline(always)]
fn ep_of(a: SocketAddrV4) -> u64 {
    ep(u32::from(*a.ip()), a.port())
}

#[inline(always)]
fn sock(w: u64) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from((w >> 32) as u32), (w >> 16) as u16)
}

#[inline(always)]
fn tag(generation: u64) -> u64 {
    (generation << TAG_GEN_SHIFT) & TAG_MASK
}

#[inline(always)]
fn tag_matches(w: u64, generation: u64) -> bool {
    (w ^ tag(generation)) & (TAG_MASK & !(LATCHED | HOLD)) == 0
}

#[inline(always)]
fn state(link: u64) -> u64 {
    (link >> STATE_SHIFT) & 3
}

#[inline(always)]
fn generation(link: u64) -> u64 {
    link >> GEN_SHIFT
}

#[inline(always)]
fn with_state(link: u64, s: u64) -> u64 {
    (link & !(3 << STATE_SHIFT)) | (s << STATE_SHIFT)
}

fn index_key(call: u64, stream: u8) -> u64 {
    let k = call ^ (u64::from(stream) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    k.max(1)
}

/// CAS loop on an endpoint word of generation `g`; false if it belongs to another.
fn update_tagged(w: &AtomicU64, g: u64, f: impl Fn(u64) -> u64) -> bool {
    let mut cur = w.load(Acquire);
    loop {
        if !tag_matches(cur, g) {
            return false;
        }
        match w.compare_exchange_weak(cur, f(cur), Release, Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// The media table over caller-provided memory (see [`MediaMemory`] for an owner).
#[derive(Clone, Copy)]
pub struct MediaTable<'m> {
    pools: &'m [Pool],
    legs: &'m [Leg],
    info: &'m [LegInfo],
    bitmap: &'m [AtomicU64],
    index: FlowTable<'m>,
    /// Marks of the legs whose mapping changed (HA replication).
    dirty: DirtyMarks<'m>,
}

impl<'m> MediaTable<'m> {
    /// A table over `pools` (from [`layout`]), `legs`, `info` (one per leg),
    /// `bitmap` (one bit per leg) and the dialog index's `slots`.
    pub fn new(
        pools: &'m [Pool],
        legs: &'m [Leg],
        info: &'m [LegInfo],
        bitmap: &'m [AtomicU64],
        slots: &'m [Slot],
    ) -> Self {
        let need = pools.last().map_or(0, |p| {
            p.leg_base as usize + (p.pairs as usize).next_multiple_of(64)
        });
        assert!(
            legs.len() >= need && info.len() >= need && bitmap.len() * 64 >= need,
            "media table memory smaller than its pools' {need} legs"
        );
        Self {
            pools,
            legs,
            info,
            bitmap,
            index: FlowTable::new(slots, INDEX_PROBE),
            dirty: DirtyMarks::NONE,
        }
    }

    /// The same table, marking in `marks` (one bit per group of legs) every leg whose
    /// mapping is created, redirected, latched, refreshed or ended (HA replication).
    pub fn with_dirty(mut self, marks: DirtyMarks<'m>) -> Self {
        self.dirty = marks;
        self
    }

    /// The marks of the legs' changes (`NONE` if kept by none).
    pub fn dirty(&self) -> &DirtyMarks<'m> {
        &self.dirty
    }

    /// The mapping of `legs` changed. The fence orders the writes before it (whatever
    /// their ordering) before the mark's load, as `dirty` requires of a `SeqCst` write;
    /// it runs per mapping event and per leg refresh (once a second at most), not per
    /// packet.
    #[inline]
    fn touched(&self, legs: [u32; 2]) {
        if self.dirty.is_on() {
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            self.dirty.mark(legs[0] as usize);
            self.dirty.mark(legs[1] as usize);
        }
    }

    /// Legs the table holds (a multiple of 64: one bitmap word each 64).
    pub fn legs(&self) -> usize {
        self.legs.len()
    }

    /// The pool holding `addr:port` (any port of its range).
    pub fn pool(&self, addr: Ipv4Addr, port: u16) -> Option<PoolId> {
        self.find_pool(u32::from(addr), port)
            .map(|(i, _)| PoolId(i as u16))
    }

    #[inline(always)]
    fn find_pool(&self, addr: u32, port: u16) -> Option<(usize, &'m Pool)> {
        let i = self
            .pools
            .partition_point(|p| (p.addr, p.first_port) <= (addr, port));
        let i = i.checked_sub(1)?;
        let p = &self.pools[i];
        p.contains(addr, port).then_some((i, p))
    }

    /// Refusals for want of a free pair in `pool`.
    pub fn exhausted(&self, pool: PoolId) -> u64 {
        self.pools[usize::from(pool.0)].exhausted.load(Relaxed)
    }

    /// Pairs of `pool` in use (a scan of its bitmap words).
    pub fn in_use(&self, pool: PoolId) -> u32 {
        let p = &self.pools[usize::from(pool.0)];
        let w0 = p.leg_base as usize / 64;
        self.bitmap[w0..w0 + p.words() as usize]
            .iter()
            .map(|w| w.load(Relaxed).count_ones())
            .sum()
    }

    /// The leg a packet to `to` would use, for a worker to prefetch a burst's legs
    /// before [`forward`](Self::forward)ing them: a random line of a large table
    /// costs a DRAM access, which a loop of `forward`s pays one after the other.
    #[inline]
    pub fn leg_for(&self, to: SocketAddrV4) -> Option<&'m Leg> {
        let (_, pool) = self.find_pool(u32::from(*to.ip()), to.port())?;
        let li = pool.leg_base + u32::from(to.port() - pool.first_port) / 2;
        self.legs.get(li as usize)
    }

    /// The packet path: a packet of `bytes` from `from` to `to` (a media port). Latches
    /// the source, refreshes the deadline, counts, and says how to rewrite it.
    #[inline]
    pub fn forward(
        &self,
        to: SocketAddrV4,
        from: SocketAddrV4,
        bytes: u32,
        now: u32,
    ) -> Result<Nat, MediaDrop> {
        let (_, pool) = self
            .find_pool(u32::from(*to.ip()), to.port())
            .ok_or(MediaDrop::NotMapped)?;
        let off = u32::from(to.port() - pool.first_port);
        let (li, k) = (pool.leg_base + off / 2, (off & 1) as usize);
        let leg = &self.legs[li as usize];
        let l1 = leg.link.load(Acquire);
        if state(l1) != LIVE {
            return Err(MediaDrop::NotMapped);
        }
        let peer = leg.peer.load(Relaxed);
        let out = leg.out.load(Relaxed);
        let dst = leg.dst[k].load(Relaxed);
        let src = leg.src[k].load(Relaxed);
        fence(Acquire);
        let l2 = leg.link.load(Relaxed);
        if l2 >> STATE_SHIFT != l1 >> STATE_SHIFT {
            return Err(MediaDrop::NotMapped);
        }
        let from_w = ep_of(from);
        if src & LATCHED == 0 || src & !TAG_MASK != from_w {
            self.check_source(li, peer as u32, k, src, from_w, generation(l1))?;
        }
        let deadline = now.saturating_add((peer >> 48) as u32);
        if (l2 as u32) < deadline
            && leg
                .link
                .compare_exchange(
                    l2,
                    (l2 & !0xffff_ffff) | u64::from(deadline),
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
        {
            self.touched([li, li]);
        }
        if dst & HOLD != 0 || dst >> 32 == 0 || (dst >> 16) as u16 == 0 {
            return Err(MediaDrop::NoDestination);
        }
        // Not a locked add: see "Races accepted".
        let c = leg.count.load(Relaxed);
        leg.count
            .store(c.wrapping_add(PACKET_ONE | u64::from(bytes)), Relaxed);
        Ok(Nat {
            src: SocketAddrV4::new(
                Ipv4Addr::from((out >> 32) as u32),
                (out >> 16) as u16 + k as u16,
            ),
            dst: sock(dst),
            farm: (peer >> 32) as u16,
        })
    }

    /// A packet from `from` whose source is not this leg's latched one: latch it (first
    /// packet, or the announced endpoint coming back), or refuse it.
    #[cold]
    fn check_source(
        &self,
        li: u32,
        peer: u32,
        k: usize,
        src: u64,
        from: u64,
        g: u64,
    ) -> Result<(), MediaDrop> {
        let leg = &self.legs[li as usize];
        if src & LATCHED != 0 {
            let announced = self.info[li as usize].announced[k].load(Relaxed);
            if announced == 0 || announced != from {
                return Err(MediaDrop::ForeignSource);
            }
        }
        let latched = from | LATCHED | tag(g);
        if let Err(now) = leg.src[k].compare_exchange(src, latched, Release, Relaxed) {
            // Another worker latched first: only its source passes.
            return if now == latched {
                Ok(())
            } else {
                Err(MediaDrop::ForeignSource)
            };
        }
        update_tagged(&self.legs[peer as usize].dst[k], g, |d| {
            latched | (d & HOLD)
        });
        self.touched([li, peer]);
        Ok(())
    }

    /// Records the endpoint a side's SDP announces for a stream, creating the mapping
    /// on the stream's first SDP; returns where the *other* side must send (the local
    /// address of the leg facing it, RTCP on the next port).
    pub fn announce(
        &self,
        place: &Placement,
        a: &Announce,
        now: u32,
    ) -> Result<Mapped, MediaError> {
        self.announce_counted(place, a, now).map(|(m, _)| m)
    }

    /// [`announce`](Self::announce), also saying whether it created the mapping.
    pub fn announce_counted(
        &self,
        place: &Placement,
        a: &Announce,
        now: u32,
    ) -> Result<(Mapped, bool), MediaError> {
        if usize::from(a.stream) >= MAX_STREAMS {
            return Err(MediaError::Refused);
        }
        let (ci, created) = match self.head(a.call, a.stream) {
            Some(ci) => (ci, false),
            None => (self.create(place, a, now)?, true),
        };
        let cl = &self.legs[ci as usize];
        let g = generation(cl.link.load(Acquire));
        let bi = cl.peer.load(Relaxed) as u32;
        let (from_leg, to_leg) = match a.from {
            Side::Client => (ci, bi),
            Side::Backend => (bi, ci),
        };
        for (k, e) in [(RTP, a.rtp), (RTCP, a.rtcp)] {
            self.set_endpoint(from_leg, to_leg, k, ep_of(e), g);
        }
        self.touched([ci, bi]);
        let local = sock(self.legs[from_leg as usize].out.load(Relaxed));
        let m = Mapped {
            addr: *local.ip(),
            port: local.port(),
            rtcp_port: local.port() + 1,
        };
        Ok((m, created))
    }

    /// The side facing leg `from_leg` announced `e` for kind `k`: the peer leg sends
    /// there, unless what was latched still stands.
    fn set_endpoint(&self, from_leg: u32, to_leg: u32, k: usize, e: u64, g: u64) {
        let dst = &self.legs[to_leg as usize].dst[k];
        if e >> 32 == 0 || (e >> 16) as u16 == 0 {
            update_tagged(dst, g, |d| d | HOLD);
            return;
        }
        let old = self.info[from_leg as usize].announced[k].swap(e, Relaxed);
        let src = &self.legs[from_leg as usize].src[k];
        let latched = src.load(Acquire) & LATCHED != 0;
        if old == e || (old == 0 && latched) {
            update_tagged(dst, g, |d| d & !HOLD);
            return;
        }
        update_tagged(src, g, |_| tag(g));
        update_tagged(dst, g, |_| e | tag(g));
    }

    /// The client leg of a live mapping for (`call`, `stream`), from the index.
    fn head(&self, call: u64, stream: u8) -> Option<u32> {
        let e = self.index.lookup(index_key(call, stream), 0)?;
        self.is_head(e.payload, call, stream).then_some(e.payload)
    }

    fn is_head(&self, ci: u32, call: u64, stream: u8) -> bool {
        let Some(leg) = self.legs.get(ci as usize) else {
            return false;
        };
        let l = leg.link.load(Acquire);
        state(l) == LIVE
            && l & ROLE_BACKEND == 0
            && (l >> STREAM_SHIFT) & 31 == u64::from(stream)
            && self.info[ci as usize].call.load(Relaxed) == call
    }

    fn create(&self, place: &Placement, a: &Announce, now: u32) -> Result<u32, MediaError> {
        let cp = &self.pools[usize::from(place.client_pool.0)];
        let bp = &self.pools[usize::from(place.backend_pool.0)];
        let ci = self.claim(cp).ok_or(MediaError::Exhausted)?;
        let Some(bi) = self.claim(bp) else {
            self.release(ci);
            return Err(MediaError::Exhausted);
        };
        let (cl, bl) = (&self.legs[ci as usize], &self.legs[bi as usize]);
        let g = (generation(cl.link.load(Relaxed)).max(generation(bl.link.load(Relaxed))) + 1)
            & GEN_MASK;
        let deadline = now.saturating_add(u32::from(place.timeout));
        let peer_bits = (u64::from(place.farm) << 32) | (u64::from(place.timeout) << 48);
        for (li, pi, pool, role) in [(ci, bi, bp, 0), (bi, ci, cp, ROLE_BACKEND)] {
            let (leg, info) = (&self.legs[li as usize], &self.info[li as usize]);
            leg.peer.store(peer_bits | u64::from(pi), Relaxed);
            leg.out.store(pool.local(pi), Relaxed);
            for k in [RTP, RTCP] {
                leg.dst[k].store(tag(g), Relaxed);
                leg.src[k].store(tag(g), Relaxed);
                info.announced[k].store(0, Relaxed);
            }
            leg.count.store(0, Relaxed);
            info.call.store(a.call, Relaxed);
            leg.link.store(
                (g << GEN_SHIFT)
                    | (u64::from(a.stream) << STREAM_SHIFT)
                    | role
                    | (LIVE << STATE_SHIFT)
                    | u64::from(deadline),
                Release,
            );
        }
        // The index decides between two first SDPs of one stream announced at once.
        let ours = Cell::new(false);
        let r = self
            .index
            .upsert(index_key(a.call, a.stream), now, |old| match old {
                Some(e) if e.payload != ci && self.is_head(e.payload, a.call, a.stream) => {
                    ours.set(false);
                    None
                }
                _ => {
                    ours.set(true);
                    Some(Entry {
                        payload: ci,
                        deadline: NEVER,
                    })
                }
            });
        match r {
            Ok(_) if ours.get() => Ok(ci),
            Ok(prev) => {
                self.end(ci, None);
                Ok(prev.map_or(ci, |e| e.payload))
            }
            Err(_) => {
                self.end(ci, None);
                Err(MediaError::TableFull)
            }
        }
    }

    /// Claims a free pair of `pool`, next fit from its rotor; counts exhaustion.
    fn claim(&self, pool: &Pool) -> Option<u32> {
        let words = pool.words();
        let start = pool.rotor.load(Relaxed) % pool.pairs;
        let (w_start, b_start) = (start / 64, start % 64);
        for step in 0..=words {
            let w = (w_start + step) % words;
            let word = &self.bitmap[(pool.leg_base / 64 + w) as usize];
            let mut valid = if w == words - 1 && !pool.pairs.is_multiple_of(64) {
                (1u64 << (pool.pairs % 64)) - 1
            } else {
                !0
            };
            if step == 0 {
                valid &= !0 << b_start;
            } else if step == words {
                valid &= (1u64 << b_start).wrapping_sub(1);
            }
            let mut cur = word.load(Relaxed);
            loop {
                let free = !cur & valid;
                if free == 0 {
                    break;
                }
                let bit = 1u64 << free.trailing_zeros();
                let prev = word.fetch_or(bit, Acquire);
                if prev & bit == 0 {
                    let pair = w * 64 + bit.trailing_zeros();
                    pool.rotor.store(pair + 1, Relaxed);
                    return Some(pool.leg_base + pair);
                }
                cur = prev;
            }
        }
        pool.exhausted.fetch_add(1, Relaxed);
        None
    }

    fn release(&self, leg: u32) {
        self.bitmap[leg as usize / 64].fetch_and(!(1u64 << (leg % 64)), Release);
    }

    /// Ends the mapping whose client leg is `ci`. With `idle_at`, only if both legs
    /// are idle at that time (the sweep); returns whether it ended it.
    fn end(&self, ci: u32, idle_at: Option<u32>) -> bool {
        let cl = &self.legs[ci as usize];
        let l = cl.link.load(Acquire);
        if state(l) != LIVE || l & ROLE_BACKEND != 0 {
            return false;
        }
        if idle_at.is_some_and(|now| l as u32 > now) {
            return false;
        }
        if cl
            .link
            .compare_exchange(l, with_state(l, DYING), Acquire, Relaxed)
            .is_err()
        {
            return false;
        }
        let bi = cl.peer.load(Relaxed) as u32;
        let bl = &self.legs[bi as usize];
        let mut b = bl.link.load(Acquire);
        loop {
            if state(b) != LIVE || generation(b) != generation(l) {
                break; // not ours: nothing to end there (never expected)
            }
            if idle_at.is_some_and(|now| b as u32 > now) {
                // The backend leg carries traffic: the mapping lives on.
                cl.link.store(l, Release);
                return false;
            }
            match bl
                .link
                .compare_exchange(b, with_state(b, FREE), Acquire, Acquire)
            {
                Ok(_) => break,
                Err(now) => b = now,
            }
        }
        let info = &self.info[ci as usize];
        let (call, stream) = (info.call.load(Relaxed), ((l >> STREAM_SHIFT) & 31) as u8);
        let _ = self.index.upsert(index_key(call, stream), 0, |old| {
            old.filter(|e| e.payload == ci).map(|e| Entry {
                payload: e.payload,
                deadline: 0,
            })
        });
        cl.link.store(with_state(l, FREE), Release);
        self.touched([ci, bi]);
        self.release(ci);
        if state(b) == LIVE && generation(b) == generation(l) {
            self.release(bi);
        }
        true
    }

    /// Ends every mapping of the dialog `call` (BYE, CANCEL, final error): at most
    /// [`MAX_STREAMS`] index lookups. Returns how many it ended.
    pub fn end_dialog(&self, call: u64) -> usize {
        (0..MAX_STREAMS as u8)
            .filter(|&s| self.end_stream(call, s))
            .count()
    }

    /// Ends one stream's mapping (an `m=` line rejected by the answer).
    pub fn end_stream(&self, call: u64, stream: u8) -> bool {
        self.head(call, stream).is_some_and(|ci| self.end(ci, None))
    }

    /// Housekeeping: ends mappings both of whose legs are idle at `now`, visiting the
    /// legs of `budget` bitmap words (64 legs each) from `cursor`, which it advances
    /// (wrapping). A full turn takes `bitmap words / budget` calls.
    pub fn sweep(&self, cursor: &mut usize, budget: usize, now: u32) -> Swept {
        let mut s = Swept::default();
        let n = self.bitmap.len();
        if n == 0 {
            return s;
        }
        for _ in 0..budget.min(n) {
            let w = *cursor % n;
            *cursor = (w + 1) % n;
            let mut bits = self.bitmap[w].load(Acquire);
            while bits != 0 {
                let li = (w * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                s.visited += 1;
                if self.end(li, Some(now)) {
                    s.ended += 1;
                } else {
                    let l = self.legs[li as usize].link.load(Relaxed);
                    if state(l) == LIVE && l & ROLE_BACKEND == 0 {
                        s.live += 1;
                    }
                }
            }
        }
        s
    }

    /// The leg at `addr:port` (either port of its pair), if live.
    pub fn get(&self, addr: Ipv4Addr, port: u16) -> Option<LegView> {
        let (_, pool) = self.find_pool(addr.into(), port)?;
        let li = (pool.leg_base + u32::from(port - pool.first_port) / 2) as usize;
        let (leg, info) = (&self.legs[li], &self.info[li]);
        let l = leg.link.load(Acquire);
        if state(l) != LIVE {
            return None;
        }
        let peer = leg.peer.load(Relaxed);
        let d = [leg.dst[RTP].load(Relaxed), leg.dst[RTCP].load(Relaxed)];
        let s = [leg.src[RTP].load(Relaxed), leg.src[RTCP].load(Relaxed)];
        let count = leg.count.load(Relaxed);
        let call = info.call.load(Relaxed);
        fence(Acquire);
        if leg.link.load(Relaxed) >> STATE_SHIFT != l >> STATE_SHIFT {
            return None; // ended or reused while read
        }
        let dst = |d: u64| (d & HOLD == 0 && d >> 32 != 0).then(|| sock(d));
        let latched = |s: u64| (s & LATCHED != 0).then(|| sock(s));
        Some(LegView {
            call,
            stream: ((l >> STREAM_SHIFT) & 31) as u8,
            side: if l & ROLE_BACKEND == 0 {
                Side::Client
            } else {
                Side::Backend
            },
            farm: (peer >> 32) as u16,
            deadline: l as u32,
            dst: [dst(d[RTP]), dst(d[RTCP])],
            latched: [latched(s[RTP]), latched(s[RTCP])],
            packets: (count >> 40) as u32,
            bytes: count & (PACKET_ONE - 1),
        })
    }

    /// Live mappings per farm into `out[farm]` (a scan, like `count_live`).
    pub fn live_by_farm(&self, out: &mut [u64]) {
        for (w, word) in self.bitmap.iter().enumerate() {
            let mut bits = word.load(Relaxed);
            while bits != 0 {
                let leg = &self.legs[w * 64 + bits.trailing_zeros() as usize];
                bits &= bits - 1;
                let l = leg.link.load(Relaxed);
                if state(l) == LIVE && l & ROLE_BACKEND == 0 {
                    let farm = (leg.peer.load(Relaxed) >> 32) as u16;
                    if let Some(n) = out.get_mut(usize::from(farm)) {
                        *n += 1;
                    }
                }
            }
        }
    }

    /// Live mappings (a scan of the bitmap and client legs; not for the hot path).
    pub fn count_live(&self) -> usize {
        let mut n = 0;
        for (w, word) in self.bitmap.iter().enumerate() {
            let mut bits = word.load(Relaxed);
            while bits != 0 {
                let l = self.legs[w * 64 + bits.trailing_zeros() as usize]
                    .link
                    .load(Relaxed);
                bits &= bits - 1;
                if state(l) == LIVE && l & ROLE_BACKEND == 0 {
                    n += 1;
                }
            }
        }
        n
    }
}

/// The rewriter's [`MediaMapper`] for one SDP body: the dialog, the side it comes from
/// and where its mappings' legs come from.
pub struct MediaSession<'t, 'm> {
    pub table: &'t MediaTable<'m>,
    pub place: Placement,
    pub call: u64,
    pub from: Side,
    pub now: u32,
    /// Mappings this session created (streams seen for the first time).
    pub created: u32,
}

impl MediaMapper for MediaSession<'_, '_> {
    fn map(&mut self, f: &MediaFlow<'_>) -> Result<Mapped, MediaError> {
        let stream = f.stream.index;
        let a = Announce {
            call: self.call,
            stream,
            from: self.from,
            rtp: SocketAddrV4::new(f.addr, f.stream.port),
            rtcp: SocketAddrV4::new(f.rtcp_addr, f.rtcp_port),
        };
        let (m, created) = self.table.announce_counted(&self.place, &a, self.now)?;
        self.created += u32::from(created);
        Ok(m)
    }
}

/// Owned memory for a media table (tests, benchmarks; the dataplane lays the same
/// arrays in memzones).
pub struct MediaMemory {
    pools: Vec<Pool>,
    legs: Vec<Leg>,
    info: Vec<LegInfo>,
    bitmap: Vec<AtomicU64>,
    index: Vec<Slot>,
}

impl MediaMemory {
    pub fn new(specs: &[PoolSpec]) -> Result<Self, PoolError> {
        let (pools, legs) = layout(specs)?;
        Ok(Self {
            pools,
            legs: (0..legs).map(|_| Leg::default()).collect(),
            info: (0..legs).map(|_| LegInfo::default()).collect(),
            bitmap: (0..legs / 64).map(|_| AtomicU64::new(0)).collect(),
            index: (0..Self::index_slots(legs))
                .map(|_| Slot::default())
                .collect(),
        })
    }

    /// Index slots for `legs` legs: one mapping per two legs, at a load of at most 0.5.
    pub fn index_slots(legs: usize) -> usize {
        legs.next_power_of_two()
            .max(crate::table::flow::BUCKET_SLOTS)
    }

    pub fn table(&self) -> MediaTable<'_> {
        MediaTable::new(
            &self.pools,
            &self.legs,
            &self.info,
            &self.bitmap,
            &self.index,
        )
    }

    /// Bytes of table memory (legs, their info, bitmap, index).
    pub fn bytes(&self) -> usize {
        self.legs.len() * (std::mem::size_of::<Leg>() + std::mem::size_of::<LegInfo>())
            + self.bitmap.len() * 8
            + FlowTable::bytes_for(self.index.len())
    }

    /// Mappings the pools can hold if every pair were used (two legs each).
    pub fn capacity(&self) -> usize {
        self.pools.iter().map(|p| p.pairs as usize).sum::<usize>() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash64;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
    const T: u32 = 1000;

    fn sa(a: Ipv4Addr, p: u16) -> SocketAddrV4 {
        SocketAddrV4::new(a, p)
    }

    /// A VIP pool and a SNAT pool of `pairs` pairs each.
    fn memory(pairs: u16) -> MediaMemory {
        MediaMemory::new(&[
            PoolSpec {
                addr: VIP,
                ports: 20000..=20000 + 2 * pairs - 1,
            },
            PoolSpec {
                addr: SNAT,
                ports: 30000..=30000 + 2 * pairs - 1,
            },
        ])
        .unwrap()
    }

    fn place(t: &MediaTable) -> Placement {
        Placement {
            farm: 3,
            client_pool: t.pool(VIP, 20000).unwrap(),
            backend_pool: t.pool(SNAT, 30000).unwrap(),
            timeout: 30,
        }
    }

    fn call(i: u64) -> u64 {
        hash64(&i.to_le_bytes())
    }

    fn ann(call: u64, stream: u8, from: Side, rtp: SocketAddrV4) -> Announce {
        Announce {
            call,
            stream,
            from,
            rtp,
            rtcp: sa(*rtp.ip(), rtp.port() + 1),
        }
    }

    /// Offer from the client, answer from the backend: (where the backend sends,
    /// where the client sends).
    fn dialog(
        t: &MediaTable,
        c: u64,
        stream: u8,
        client: SocketAddrV4,
        backend: SocketAddrV4,
    ) -> (Mapped, Mapped) {
        let p = place(t);
        let to_backend = t
            .announce(&p, &ann(c, stream, Side::Client, client), T)
            .unwrap();
        let to_client = t
            .announce(&p, &ann(c, stream, Side::Backend, backend), T)
            .unwrap();
        (to_backend, to_client)
    }

    fn at(m: Mapped) -> SocketAddrV4 {
        sa(m.addr, m.port)
    }

    fn rtcp(m: Mapped) -> SocketAddrV4 {
        sa(m.addr, m.rtcp_port)
    }

    #[test]
    fn offer_and_answer_map_rtp_and_rtcp_both_ways() {
        let mem = memory(8);
        let t = mem.table();
        let (ce, be) = (sa(CLIENT, 4000), sa(BACKEND, 5000));
        let (to_b, to_c) = dialog(&t, call(1), 0, ce, be);
        assert_eq!(to_b.addr, SNAT);
        assert_eq!(to_c.addr, VIP);
        assert_eq!(to_b.port % 2, 0, "RTP on an even port");
        assert_eq!(to_c.port % 2, 0);
        assert_eq!(to_b.rtcp_port, to_b.port + 1, "RTCP on the next one");
        // Client → VIP: out from the backend leg to the backend.
        let n = t.forward(at(to_c), ce, 200, T).unwrap();
        assert_eq!(
            n,
            Nat {
                src: at(to_b),
                dst: be,
                farm: 3
            }
        );
        let n = t.forward(rtcp(to_c), sa(CLIENT, 4001), 80, T).unwrap();
        assert_eq!((n.src, n.dst), (rtcp(to_b), sa(BACKEND, 5001)));
        // Backend → SNAT side port: out from the VIP to the client.
        let n = t.forward(at(to_b), be, 200, T).unwrap();
        assert_eq!((n.src, n.dst), (at(to_c), ce));
        let n = t.forward(rtcp(to_b), sa(BACKEND, 5001), 80, T).unwrap();
        assert_eq!((n.src, n.dst), (rtcp(to_c), sa(CLIENT, 4001)));
        let v = t.get(VIP, to_c.port).unwrap();
        assert_eq!(
            (v.call, v.stream, v.side, v.farm),
            (call(1), 0, Side::Client, 3)
        );
        assert_eq!((v.packets, v.bytes), (2, 280), "counted per direction");
        assert_eq!(t.get(SNAT, to_b.port).unwrap().side, Side::Backend);
        // Nothing else is mapped.
        assert_eq!(
            t.forward(sa(VIP, to_c.port + 2), ce, 200, T),
            Err(MediaDrop::NotMapped)
        );
        assert_eq!(
            t.forward(sa(VIP, 5060), ce, 200, T),
            Err(MediaDrop::NotMapped)
        );
        assert_eq!(
            t.forward(sa(CLIENT, to_c.port), ce, 200, T),
            Err(MediaDrop::NotMapped)
        );
        assert_eq!(t.count_live(), 1);
        // A second SDP of the same stream finds the same mapping.
        let (b2, c2) = dialog(&t, call(1), 0, ce, be);
        assert_eq!((b2, c2), (to_b, to_c));
        assert_eq!(t.count_live(), 1);
    }

    #[test]
    fn a_rtcp_and_rtcp_mux_endpoints_are_honoured() {
        let mem = memory(8);
        let t = mem.table();
        let p = place(&t);
        let c = call(2);
        let mut a = ann(c, 0, Side::Client, sa(CLIENT, 4000));
        a.rtcp = sa(Ipv4Addr::new(198, 18, 0, 11), 4999); // a=rtcp:4999 IN IP4 ...
        let to_b = t.announce(&p, &a, T).unwrap();
        let mut b = ann(c, 0, Side::Backend, sa(BACKEND, 5000));
        b.rtcp = b.rtp; // rtcp-mux
        let to_c = t.announce(&p, &b, T).unwrap();
        let n = t.forward(rtcp(to_b), sa(BACKEND, 5000), 80, T).unwrap();
        assert_eq!(n.dst, sa(Ipv4Addr::new(198, 18, 0, 11), 4999));
        let n = t
            .forward(rtcp(to_c), sa(Ipv4Addr::new(198, 18, 0, 11), 4999), 80, T)
            .unwrap();
        assert_eq!(n.dst, sa(BACKEND, 5000));
    }

    #[test]
    fn symmetric_rtp_latches_the_first_source_and_refuses_others() {
        let mem = memory(8);
        let t = mem.table();
        let p = place(&t);
        let c = call(3);
        let private = sa(Ipv4Addr::new(10, 0, 0, 5), 4000);
        let public = sa(Ipv4Addr::new(198, 18, 0, 77), 61000);
        let public_rtcp = sa(Ipv4Addr::new(198, 18, 0, 77), 61007);
        let (to_b, to_c) = dialog(&t, c, 0, private, sa(BACKEND, 5000));
        // Before the client sends, media toward it goes to its SDP address.
        assert_eq!(
            t.forward(at(to_b), sa(BACKEND, 5000), 200, T).unwrap().dst,
            private
        );
        // Its first packets latch RTP and RTCP separately.
        t.forward(at(to_c), public, 200, T).unwrap();
        t.forward(rtcp(to_c), public_rtcp, 80, T).unwrap();
        assert_eq!(
            t.forward(at(to_b), sa(BACKEND, 5000), 200, T).unwrap().dst,
            public
        );
        assert_eq!(
            t.forward(rtcp(to_b), sa(BACKEND, 5001), 80, T).unwrap().dst,
            public_rtcp
        );
        let v = t.get(VIP, to_c.port).unwrap();
        assert_eq!(v.latched, [Some(public), Some(public_rtcp)]);
        // Anyone else is refused, on either port.
        let other = sa(Ipv4Addr::new(198, 18, 0, 99), 61000);
        assert_eq!(
            t.forward(at(to_c), other, 200, T),
            Err(MediaDrop::ForeignSource)
        );
        assert_eq!(
            t.forward(rtcp(to_c), other, 80, T),
            Err(MediaDrop::ForeignSource)
        );
        // A session refresh with the same SDP keeps the latch.
        t.announce(&p, &ann(c, 0, Side::Client, private), T)
            .unwrap();
        assert_eq!(
            t.forward(at(to_b), sa(BACKEND, 5000), 200, T).unwrap().dst,
            public
        );
        assert_eq!(
            t.forward(at(to_c), public, 200, T).map(|n| n.dst),
            Ok(sa(BACKEND, 5000))
        );
        // The endpoint moves (re-INVITE, no NAT): same ports, new destination, new latch.
        let moved = sa(Ipv4Addr::new(198, 18, 0, 12), 4100);
        assert_eq!(
            t.announce(&p, &ann(c, 0, Side::Client, moved), T).unwrap(),
            to_b
        );
        assert_eq!(
            t.forward(at(to_b), sa(BACKEND, 5000), 200, T).unwrap().dst,
            moved
        );
        t.forward(at(to_c), moved, 200, T).unwrap();
        assert_eq!(
            t.forward(at(to_c), public, 200, T),
            Err(MediaDrop::ForeignSource)
        );
        // The announced endpoint itself may always take the latch back.
        let mem2 = memory(8);
        let t2 = mem2.table();
        let direct = sa(CLIENT, 4000);
        let (_, to_c2) = dialog(&t2, c, 0, direct, sa(BACKEND, 5000));
        t2.forward(at(to_c2), other, 200, T).unwrap();
        t2.forward(at(to_c2), direct, 200, T).unwrap();
        assert_eq!(t2.get(VIP, to_c2.port).unwrap().latched[0], Some(direct));
        assert_eq!(
            t2.forward(at(to_c2), other, 200, T),
            Err(MediaDrop::ForeignSource)
        );
    }

    #[test]
    fn early_media_latches_before_the_answer() {
        let mem = memory(8);
        let t = mem.table();
        let p = place(&t);
        let c = call(4);
        let to_b = t
            .announce(&p, &ann(c, 0, Side::Client, sa(CLIENT, 4000)), T)
            .unwrap();
        let rtpengine = sa(BACKEND, 5000);
        let n = t.forward(at(to_b), rtpengine, 200, T).unwrap();
        assert_eq!(n.dst, sa(CLIENT, 4000));
        // The client's packets to the VIP leg reach the latched backend source even
        // before the answer names it; the answer then keeps that latch.
        assert_eq!(
            t.forward(
                sa(n.src.ip().to_owned(), n.src.port()),
                sa(CLIENT, 4000),
                200,
                T
            )
            .unwrap()
            .dst,
            rtpengine
        );
        let to_c = t
            .announce(&p, &ann(c, 0, Side::Backend, sa(BACKEND, 5000)), T)
            .unwrap();
        assert_eq!(at(to_c), n.src);
        assert_eq!(t.get(SNAT, to_b.port).unwrap().latched[0], Some(rtpengine));
    }

    #[test]
    fn hold_pauses_one_direction_and_keeps_the_latch() {
        let mem = memory(8);
        let t = mem.table();
        let p = place(&t);
        let c = call(5);
        let private = sa(Ipv4Addr::new(10, 0, 0, 5), 4000);
        let public = sa(Ipv4Addr::new(198, 18, 0, 77), 61000);
        let (to_b, to_c) = dialog(&t, c, 0, private, sa(BACKEND, 5000));
        t.forward(at(to_c), public, 200, T).unwrap();
        // c=IN IP4 0.0.0.0 from the client: nothing goes to it, it may still send.
        t.announce(
            &p,
            &ann(c, 0, Side::Client, sa(Ipv4Addr::UNSPECIFIED, 4000)),
            T,
        )
        .unwrap();
        assert_eq!(
            t.forward(at(to_b), sa(BACKEND, 5000), 200, T),
            Err(MediaDrop::NoDestination)
        );
        assert_eq!(t.get(SNAT, to_b.port).unwrap().dst[0], None);
        assert!(t.forward(at(to_c), public, 200, T).is_ok());
        // Resumed with its old SDP: the latch learnt before the hold still stands.
        t.announce(&p, &ann(c, 0, Side::Client, private), T)
            .unwrap();
        assert_eq!(
            t.forward(at(to_b), sa(BACKEND, 5000), 200, T).unwrap().dst,
            public
        );
        // A port 0 endpoint pauses too.
        t.announce(&p, &ann(c, 0, Side::Backend, sa(BACKEND, 0)), T)
            .unwrap();
        assert_eq!(
            t.forward(at(to_c), public, 200, T),
            Err(MediaDrop::NoDestination)
        );
    }

    #[test]
    fn idle_mappings_end_in_the_sweep_and_their_ports_are_reused() {
        let mem = memory(2);
        let t = mem.table();
        let p = place(&t);
        let (ce, be) = (sa(CLIENT, 4000), sa(BACKEND, 5000));
        let (to_b, to_c) = dialog(&t, call(6), 0, ce, be);
        dialog(&t, call(7), 0, ce, be);
        assert_eq!(
            t.announce(&p, &ann(call(8), 0, Side::Client, ce), T),
            Err(MediaError::Exhausted)
        );
        // One-way traffic (hold) keeps a mapping alive: refreshed at T + 20.
        t.forward(at(to_c), ce, 200, T + 20).unwrap();
        let mut cursor = 0;
        assert_eq!(t.sweep(&mut cursor, 1, T + 29).ended, 0, "not idle yet");
        let s = t.sweep(&mut cursor, 100, T + 30);
        assert_eq!(
            s,
            Swept {
                visited: 4,
                ended: 1,
                live: 1
            },
            "call 7 idled out, call 6 is alive"
        );
        assert_eq!(t.in_use(p.client_pool), 1);
        assert_eq!(t.in_use(p.backend_pool), 1);
        // Reused by the next call; call 6's ports are still its own.
        let (b8, c8) = dialog(&t, call(8), 0, sa(CLIENT, 4100), be);
        assert_ne!(at(b8), at(to_b));
        assert_eq!(
            t.forward(at(c8), sa(CLIENT, 4100), 200, T + 31)
                .unwrap()
                .dst,
            be
        );
        assert_eq!(t.forward(at(to_c), ce, 200, T + 31).unwrap().dst, be);
        assert_eq!(t.sweep(&mut cursor, 100, T + 50).ended, 0);
        assert_eq!(
            t.sweep(&mut cursor, 100, T + 61).ended,
            2,
            "both idle by T + 61"
        );
        assert_eq!(
            t.forward(at(to_c), ce, 200, T + 62),
            Err(MediaDrop::NotMapped)
        );
        assert_eq!((t.count_live(), t.in_use(p.client_pool)), (0, 0));
    }

    #[test]
    fn end_dialog_frees_exactly_its_ports() {
        let mem = memory(8);
        let t = mem.table();
        let p = place(&t);
        let (ce, be) = (sa(CLIENT, 4000), sa(BACKEND, 5000));
        let a0 = dialog(&t, call(10), 0, ce, be);
        let a1 = dialog(&t, call(10), 1, sa(CLIENT, 4002), sa(BACKEND, 5002));
        let b0 = dialog(&t, call(11), 0, ce, be);
        assert_eq!(t.count_live(), 3);
        assert_eq!(t.end_dialog(call(10)), 2);
        assert_eq!(t.end_dialog(call(10)), 0, "already ended");
        assert_eq!(t.end_dialog(call(12)), 0, "no such dialog");
        for (to_b, to_c) in [a0, a1] {
            assert_eq!(t.forward(at(to_c), ce, 200, T), Err(MediaDrop::NotMapped));
            assert_eq!(t.forward(at(to_b), be, 200, T), Err(MediaDrop::NotMapped));
        }
        assert_eq!(t.forward(at(b0.1), ce, 200, T).unwrap().dst, be);
        assert_eq!((t.in_use(p.client_pool), t.in_use(p.backend_pool)), (1, 1));
        // A stream rejected later is ended alone.
        assert!(t.end_stream(call(11), 0));
        assert_eq!(t.count_live(), 0);
        // A new dialog with the ended one's Call-ID starts afresh.
        let again = dialog(&t, call(10), 0, ce, be);
        assert_eq!(t.forward(at(again.1), ce, 200, T).unwrap().dst, be);
    }

    #[test]
    fn exhaustion_is_counted_and_leaks_nothing() {
        let mem = MediaMemory::new(&[
            PoolSpec {
                addr: VIP,
                ports: 20000..=20005,
            },
            PoolSpec {
                addr: SNAT,
                ports: 30000..=30003,
            },
        ])
        .unwrap();
        let t = mem.table();
        let p = place(&t);
        let ce = sa(CLIENT, 4000);
        for i in 0..2 {
            t.announce(&p, &ann(call(20 + i), 0, Side::Client, ce), T)
                .unwrap();
        }
        // The backend pool is out: the client pair claimed first is given back.
        let e = t.announce(&p, &ann(call(30), 0, Side::Client, ce), T);
        assert_eq!(e, Err(MediaError::Exhausted));
        assert_eq!(
            (t.exhausted(p.client_pool), t.exhausted(p.backend_pool)),
            (0, 1)
        );
        assert_eq!((t.in_use(p.client_pool), t.in_use(p.backend_pool)), (2, 2));
        assert_eq!(t.end_dialog(call(20)), 1);
        t.announce(&p, &ann(call(30), 0, Side::Client, ce), T)
            .unwrap();
        // A stream index the rewriter never hands out is refused.
        let e = t.announce(&p, &ann(call(31), MAX_STREAMS as u8, Side::Client, ce), T);
        assert_eq!(e, Err(MediaError::Refused));
    }

    #[test]
    fn pools_are_laid_out_on_even_ports_and_checked() {
        let mem = MediaMemory::new(&[PoolSpec {
            addr: VIP,
            ports: 20001..=20010,
        }])
        .unwrap();
        let t = mem.table();
        assert_eq!(t.pool(VIP, 20001), None, "the odd first port is not used");
        let id = t.pool(VIP, 20002).unwrap();
        assert_eq!(t.pool(VIP, 20009), Some(id));
        assert_eq!(t.pool(VIP, 20010), None, "20010 has no RTCP port");
        assert_eq!(mem.capacity(), 2, "4 pairs: 2 mappings of two legs");
        let no_pair = MediaMemory::new(&[PoolSpec {
            addr: VIP,
            ports: 20000..=20000,
        }]);
        assert!(matches!(no_pair, Err(PoolError::NoPair { .. })));
        let overlap = MediaMemory::new(&[
            PoolSpec {
                addr: VIP,
                ports: 20000..=20099,
            },
            PoolSpec {
                addr: VIP,
                ports: 20050..=20199,
            },
        ]);
        assert!(matches!(overlap, Err(PoolError::Overlap { .. })));
        let msg = overlap.err().unwrap().to_string();
        assert!(msg.contains("20050-20199 on 198.18.0.2"), "{msg}");
        let top = MediaMemory::new(&[PoolSpec {
            addr: VIP,
            ports: 65534..=65535,
        }])
        .unwrap();
        assert!(top.table().pool(VIP, 65535).is_some());
    }

    #[test]
    fn the_rewriter_relays_sdp_through_a_media_session() {
        use crate::alg::{rewrite, Edits, Outcome, Rules};
        use crate::sip::{Limits, SipMessage};
        let mem = memory(8);
        let t = mem.table();
        let c = call(40);
        let body = "v=0\r\no=a 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let text = format!("INVITE sip:b@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c40\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let mut buf = text.into_bytes();
        let len = buf.len();
        buf.resize(len + 128, 0);
        let msg = SipMessage::parse(&buf[..len], &Limits::default()).unwrap();
        let mut session = MediaSession {
            table: &t,
            place: place(&t),
            call: c,
            from: Side::Client,
            now: T,
            created: 0,
        };
        let mut edits = Edits::new();
        let out = rewrite(
            &buf[..len],
            &msg,
            &Rules::new(),
            Some(&mut session),
            &mut edits,
        )
        .unwrap();
        assert!(matches!(out, Outcome::Rewritten { .. }));
        let n = edits.apply(&mut buf).unwrap();
        let s = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(session.created, 1, "one stream, one mapping");
        let v = t.get(SNAT, 30000).unwrap();
        assert_eq!((v.call, v.side), (c, Side::Backend));
        assert!(s.contains("c=IN IP4 198.18.1.1\r\n"), "{s}");
        assert!(s.contains("m=audio 30000 RTP/AVP 0\r\n"), "{s}");
        assert_eq!(
            t.forward(sa(SNAT, 30000), sa(BACKEND, 5000), 200, T)
                .unwrap()
                .dst,
            sa(CLIENT, 4000)
        );
    }

    #[test]
    fn one_million_mappings_fit() {
        // 32 VIP and 32 SNAT addresses with ports 1024-65535: 2,064,384 pairs.
        let specs: Vec<PoolSpec> = (0..64u32)
            .map(|i| PoolSpec {
                addr: Ipv4Addr::from(
                    u32::from(Ipv4Addr::new(198, 18, 2 + (i / 32) as u8, 0)) + i % 32,
                ),
                ports: 1024..=65535,
            })
            .collect();
        let mem = MediaMemory::new(&specs).unwrap();
        let t = mem.table();
        let n = 1_000_000u64;
        let mut failed = 0;
        let mut maps: Vec<Mapped> = Vec::with_capacity(n as usize);
        for i in 0..n {
            let j = (i % 32) as u8;
            let p = Placement {
                farm: 0,
                client_pool: t.pool(Ipv4Addr::new(198, 18, 2, j), 1024).unwrap(),
                backend_pool: t.pool(Ipv4Addr::new(198, 18, 3, j), 1024).unwrap(),
                timeout: 60,
            };
            let ce = sa(
                Ipv4Addr::from(0xc613_0000 | (i as u32 & 0xffff)),
                4000 + 2 * (i as u32 >> 16) as u16,
            );
            match t.announce(&p, &ann(call(i), 0, Side::Client, ce), T) {
                Ok(m) => maps.push(m),
                Err(_) => failed += 1,
            }
        }
        println!(
            "1 M mappings in {} MiB: {:.1} bytes per mapping ({} live, {failed} refused)",
            mem.bytes() >> 20,
            mem.bytes() as f64 / n as f64,
            t.count_live()
        );
        assert_eq!(failed, 0);
        assert_eq!(t.count_live(), n as usize);
        assert!(mem.bytes() as f64 / (n as f64) < 256.0);
        for i in (0..n).step_by(9973) {
            let to_b = maps[i as usize];
            assert_eq!(t.get(to_b.addr, to_b.port).map(|v| v.call), Some(call(i)));
            let ce = sa(
                Ipv4Addr::from(0xc613_0000 | (i as u32 & 0xffff)),
                4000 + 2 * (i as u32 >> 16) as u16,
            );
            let n = t.forward(at(to_b), sa(BACKEND, 5000), 200, T).unwrap();
            assert_eq!(n.dst, ce);
            assert_eq!(t.end_dialog(call(i)), 1);
        }
    }

    /// The endpoint each call announces, so a reader can tell a crossed mapping.
    fn endpoint_of(c: u64) -> SocketAddrV4 {
        sa(
            Ipv4Addr::from(0xc612_0000 | (c as u32 & 0x0001_ffff)),
            2 * (1000 + (c >> 40) as u16 % 20000),
        )
    }

    #[test]
    fn concurrent_workers_never_lose_or_cross_a_mapping() {
        let mem = memory(2000);
        let t = mem.table();
        let p = place(&t);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            // Writers: dialogs come and go; each checks its own through the packet path.
            let writers: Vec<_> = (0..3u64)
                .map(|w| {
                    let (t, p) = (&t, &p);
                    sc.spawn(move || {
                        let mut checked = 0;
                        for round in 0..40u64 {
                            let calls: Vec<u64> =
                                (0..100).map(|i| call(w << 32 | round << 16 | i)).collect();
                            let mut maps = Vec::new();
                            for &c in &calls {
                                let to_b = t
                                    .announce(p, &ann(c, 0, Side::Client, endpoint_of(c)), T)
                                    .unwrap();
                                let to_c = t
                                    .announce(p, &ann(c, 0, Side::Backend, sa(BACKEND, 5000)), T)
                                    .unwrap();
                                maps.push((c, to_b, to_c));
                            }
                            for &(c, to_b, to_c) in &maps {
                                let n = t.forward(at(to_b), sa(BACKEND, 5000), 200, T).unwrap();
                                assert_eq!((n.src, n.dst), (at(to_c), endpoint_of(c)), "crossed");
                                let n = t.forward(at(to_c), endpoint_of(c), 200, T).unwrap();
                                assert_eq!(
                                    (n.src, n.dst),
                                    (at(to_b), sa(BACKEND, 5000)),
                                    "crossed"
                                );
                                checked += 1;
                            }
                            if round < 39 {
                                for &c in &calls {
                                    assert_eq!(t.end_dialog(c), 1, "lost");
                                }
                            }
                        }
                        checked
                    })
                })
                .collect();
            // Readers meanwhile: every live leg they see is consistent with its call.
            for _ in 0..2 {
                let (t, stop) = (&t, &stop);
                sc.spawn(move || {
                    let mut seen = 0u64;
                    // At least one pass, the last after the writers are done.
                    loop {
                        let done = stop.load(Relaxed);
                        for port in (30000..34000).step_by(2) {
                            if let Some(v) = t.get(SNAT, port) {
                                if let Some(d) = v.dst[0] {
                                    assert_eq!(
                                        d,
                                        endpoint_of(v.call),
                                        "a leg showed another call's endpoint"
                                    );
                                    seen += 1;
                                }
                            }
                        }
                        if done {
                            break;
                        }
                    }
                    assert!(seen > 0, "readers saw live legs");
                });
            }
            // Readers stop even if a writer failed, so a failure fails, not hangs.
            let results: Vec<_> = writers.into_iter().map(|h| h.join()).collect();
            stop.store(true, Relaxed);
            let checked: usize = results.into_iter().map(|r| r.unwrap()).sum();
            assert_eq!(checked, 3 * 40 * 100);
        });
        assert_eq!(t.count_live(), 300, "the last round of each writer");
        assert_eq!(
            (t.in_use(p.client_pool), t.in_use(p.backend_pool)),
            (300, 300)
        );
    }

    #[test]
    fn concurrent_first_sdps_of_one_stream_make_one_mapping() {
        let mem = memory(1000);
        let t = mem.table();
        let p = place(&t);
        let results: Vec<Vec<Mapped>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let (t, p) = (&t, &p);
                    sc.spawn(move || {
                        (0..500u64)
                            .map(|i| {
                                t.announce(
                                    p,
                                    &ann(
                                        call(100 + i),
                                        0,
                                        Side::Client,
                                        endpoint_of(call(100 + i)),
                                    ),
                                    T,
                                )
                                .unwrap()
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results[0], results[1], "every worker got the one mapping");
        assert_eq!(results[1], results[2]);
        assert_eq!(t.count_live(), 500);
        assert_eq!(
            (t.in_use(p.client_pool), t.in_use(p.backend_pool)),
            (500, 500),
            "losers gave their pairs back"
        );
    }
}
