//! SNAT sessions: one (balancer address, port) per client flow (client address, client
//! port, farm), so backends' answers and backend-originated requests sent to that
//! address and port find their way back to the client.
//!
//! Each farm draws from a pool of SNAT addresses; every address has its own ports
//! 1024-32767 (`PORTS_PER_ADDRESS`). The reverse side is one array of `SnatSlot`s,
//! `PORTS_PER_ADDRESS` per address slot (slot 0: the ports' own addresses, for farms
//! without a pool; slots 1.. the pool addresses, numbered by `SlotRegistry`), so the
//! lookup a backend's packet needs is one load. The forward side is a `FlowTable` from
//! the client flow to its reverse index. 16 bytes per address and port, plus the
//! forward table's 16-byte slots at a load of at most 1/2: about 48 bytes per flow.
//!
//! Concurrency protocol. A slot is `client` (who owns it) and `state`
//! (`generation << 32 | deadline`); it is live while `deadline > now`. Every worker may
//! claim any free slot, so one busy worker can use the whole pool:
//! - *claim*: CAS `state` from an expired value to `(generation + 1) << 32` (still
//!   expired to readers, and no other claimer's CAS on the old value can succeed), then
//!   store `client`, then `state` with the deadline (Release).
//! - *lookup*: load `state` (Acquire), then `client`: a live state was stored after its
//!   client, so the client read is the session's own.
//! - *extend*: `fetch_max` of `generation << 32 | deadline` with the session's own
//!   generation, so an extension that comes late never revives a slot that was since
//!   claimed by another flow (the newer generation compares greater).
//!
//! One race is accepted: a session that expires between a reader's `state` and `client`
//! loads and is claimed at once by a new flow can hand that one packet to the new
//! client. It needs a session to expire (a second-granular deadline) within those few
//! nanoseconds, and costs one misdirected packet of a flow that had ended.
//!
//! Allocation searches at most `SEARCH` ports from the worker's cursor and moves the
//! cursor past them, so a refusal costs a bounded scan and the next search starts
//! further on: past the pool's capacity every new flow is refused
//! (`snat_ports_exhausted`) and the sessions in place keep working.

use crate::hash::hash64;
use crate::table::dirty::DirtyMarks;
use crate::table::flow::{Entry, FlowTable};
use crate::table::sweep::{Sweepable, Tally};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// SNAT ports of each source address: 1024-32767. The kernel's ephemeral range
/// (32768-60999 by default on Linux) stays free for the host's own sockets on the same
/// address (health checks through the exception path).
pub const FIRST_PORT: u16 = 1024;
pub const LAST_PORT: u16 = 32767;
/// Client flows one SNAT address can carry at once.
pub const PORTS_PER_ADDRESS: usize = (LAST_PORT - FIRST_PORT) as usize + 1;
/// The address slot of the ports' own addresses (farms without a SNAT pool).
pub const PORT_ADDRESS: u16 = 0;
/// Ports one allocation looks at before refusing the flow.
pub const SEARCH: usize = 4096;
const VALID: u64 = 1;

/// The reverse entry of one (SNAT address, port). 16 bytes.
#[repr(C, align(16))]
#[derive(Default)]
pub struct SnatSlot {
    /// `client ip << 32 | client port << 16 | farm << 8 | VALID`.
    client: AtomicU64,
    /// `generation << 32 | deadline` (seconds; live while `deadline > now`).
    state: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnatSession {
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub farm: u8,
    /// The SNAT address slot (`Services::snat_source` gives the address).
    pub address: u16,
    pub port: u16,
    pub deadline: u32,
    /// Which claim of the slot this session is (see the protocol above).
    pub generation: u32,
}

impl SnatSession {
    /// The session's index in the reverse table.
    #[inline]
    pub fn index(&self) -> usize {
        usize::from(self.address) * PORTS_PER_ADDRESS + usize::from(self.port - FIRST_PORT)
    }
}

fn pack(ip: Ipv4Addr, port: u16, farm: u8) -> u64 {
    (u64::from(u32::from(ip)) << 32) | (u64::from(port) << 16) | (u64::from(farm) << 8) | VALID
}

fn flow_key(ip: Ipv4Addr, port: u16, farm: u8) -> u64 {
    let mut b = [0u8; 7];
    b[..4].copy_from_slice(&u32::from(ip).to_be_bytes());
    b[4..6].copy_from_slice(&port.to_be_bytes());
    b[6] = farm;
    hash64(&b)
}

#[inline]
fn state(generation: u32, deadline: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(deadline)
}

pub struct SnatTable<'m> {
    forward: FlowTable<'m>,
    /// `PORTS_PER_ADDRESS` slots per address slot.
    reverse: &'m [SnatSlot],
    /// Marks of the reverse slots whose session was stored or extended (HA).
    dirty: DirtyMarks<'m>,
}

/// A worker's place in the search for free ports. Workers start spread over the pool
/// so they rarely race for the same slot.
#[derive(Debug, Clone)]
pub struct SnatAllocator {
    id: u32,
    workers: u32,
    cursor: u64,
}

impl SnatAllocator {
    pub fn for_worker(id: u16, workers: u16) -> Self {
        Self {
            id: u32::from(id),
            workers: u32::from(workers.max(1)),
            cursor: 0,
        }
    }

    /// Where the next search starts among `total` candidates.
    fn start(&self, total: usize) -> usize {
        let offset = total as u64 * u64::from(self.id) / u64::from(self.workers);
        ((self.cursor + offset) % total as u64) as usize
    }
}

impl<'m> SnatTable<'m> {
    /// `reverse` holds `PORTS_PER_ADDRESS` slots per SNAT address slot.
    pub fn new(forward: FlowTable<'m>, reverse: &'m [SnatSlot]) -> Self {
        assert!(
            !reverse.is_empty() && reverse.len().is_multiple_of(PORTS_PER_ADDRESS),
            "PORTS_PER_ADDRESS reverse slots per address"
        );
        Self {
            forward,
            reverse,
            dirty: DirtyMarks::NONE,
        }
    }

    /// The same table, marking in `marks` every reverse slot whose session `state` it
    /// stores (`SeqCst`) or extends (HA replication; the forward table has its own).
    pub fn with_dirty(mut self, marks: DirtyMarks<'m>) -> Self {
        self.dirty = marks;
        self
    }

    /// The marks of the reverse slots' changes (`NONE` if kept by none).
    pub fn dirty(&self) -> &DirtyMarks<'m> {
        &self.dirty
    }

    /// SNAT address slots the reverse table holds (slot 0 included).
    pub fn addresses(&self) -> usize {
        self.reverse.len() / PORTS_PER_ADDRESS
    }

    /// (address, port) mappings the reverse table holds.
    pub fn mappings(&self) -> usize {
        self.reverse.len()
    }

    #[inline]
    fn by_index(&self, index: usize, now: u32) -> Option<SnatSession> {
        let s = self.reverse.get(index)?;
        let st = s.state.load(Ordering::Acquire);
        let deadline = st as u32;
        if deadline <= now {
            return None;
        }
        let c = s.client.load(Ordering::Acquire);
        if c & VALID == 0 {
            return None;
        }
        Some(SnatSession {
            client: Ipv4Addr::from((c >> 32) as u32),
            client_port: (c >> 16) as u16,
            farm: (c >> 8) as u8,
            address: (index / PORTS_PER_ADDRESS) as u16,
            port: FIRST_PORT + (index % PORTS_PER_ADDRESS) as u16,
            deadline,
            generation: (st >> 32) as u32,
        })
    }

    /// The live session that owns `port` of SNAT address slot `address`.
    #[inline]
    pub fn by_port(&self, address: u16, port: u16, now: u32) -> Option<SnatSession> {
        if !(FIRST_PORT..=LAST_PORT).contains(&port) {
            return None;
        }
        let i = usize::from(address) * PORTS_PER_ADDRESS + usize::from(port - FIRST_PORT);
        self.by_index(i, now)
    }

    /// The client flow's live session, if it has one.
    #[inline]
    pub fn by_client(&self, ip: Ipv4Addr, port: u16, farm: u8, now: u32) -> Option<SnatSession> {
        let e = self.forward.lookup(flow_key(ip, port, farm), now)?;
        let s = self.by_index(e.payload as usize, now)?;
        // The slot may have been reused by another flow after this entry was written.
        (s.client == ip && s.client_port == port && s.farm == farm).then_some(s)
    }

    /// The client flow's session, claiming a free port of one of the `pool`'s address
    /// slots when it has none. `None` when no free port was found within `SEARCH`
    /// (the pool is full) or the forward table is full.
    pub fn session(
        &self,
        alloc: &mut SnatAllocator,
        pool: &[u16],
        (ip, port): (Ipv4Addr, u16),
        farm: u8,
        now: u32,
        lifetime: u32,
    ) -> Option<(SnatSession, bool)> {
        let deadline = now.saturating_add(lifetime);
        if let Some(s) = self.by_client(ip, port, farm, now) {
            self.extend(&s, deadline);
            return Some((s, false));
        }
        let total = pool.len() * PORTS_PER_ADDRESS;
        if total == 0 {
            return None;
        }
        let start = alloc.start(total);
        let tries = total.min(SEARCH);
        for k in 0..tries {
            let i = (start + k) % total;
            let address = pool[i / PORTS_PER_ADDRESS];
            let index = usize::from(address) * PORTS_PER_ADDRESS + i % PORTS_PER_ADDRESS;
            let Some(slot) = self.reverse.get(index) else {
                continue;
            };
            let old = slot.state.load(Ordering::Acquire);
            if old as u32 > now {
                continue;
            }
            let generation = ((old >> 32) as u32).wrapping_add(1);
            if slot
                .state
                .compare_exchange(
                    old,
                    state(generation, 0),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            alloc.cursor += k as u64 + 1;
            slot.client.store(pack(ip, port, farm), Ordering::Release);
            slot.state
                .store(state(generation, deadline), Ordering::SeqCst);
            self.dirty.mark(index);
            let stored = self.forward.upsert(flow_key(ip, port, farm), now, |_| {
                Some(Entry {
                    payload: index as u32,
                    deadline,
                })
            });
            if stored.is_err() {
                // Without a forward entry the flow could not find its port again.
                slot.state.store(state(generation, 0), Ordering::Release);
                return None;
            }
            let s = SnatSession {
                client: ip,
                client_port: port,
                farm,
                address,
                port: FIRST_PORT + (i % PORTS_PER_ADDRESS) as u16,
                deadline,
                generation,
            };
            return Some((s, true));
        }
        alloc.cursor += tries as u64;
        None
    }

    /// Keeps the session alive until at least `deadline` (a dialog or a registration
    /// that uses it lives that long).
    #[inline]
    pub fn extend(&self, s: &SnatSession, deadline: u32) {
        let Some(slot) = self.reverse.get(s.index()) else {
            return;
        };
        let want = state(s.generation, deadline);
        if slot.state.load(Ordering::Relaxed) < want
            && slot.state.fetch_max(want, Ordering::SeqCst) < want
        {
            self.dirty.mark(s.index());
        }
        // The forward entry only needs to outlive lookups; it is refreshed lazily.
        let key = flow_key(s.client, s.client_port, s.farm);
        let index = s.index() as u32;
        if let Some(e) = self.forward.lookup(key, 0) {
            if e.deadline < deadline && e.payload == index {
                let _ = self.forward.upsert(key, 0, |old| {
                    let old = old?;
                    (old.deadline < deadline).then_some(Entry {
                        payload: old.payload,
                        deadline,
                    })
                });
            }
        }
    }

    /// The forward table (client flow → reverse index), for replication.
    pub fn forward(&self) -> &FlowTable<'m> {
        &self.forward
    }

    /// Calls `f(index, client word, deadline)` for every reverse slot that ever had a
    /// session (for replication to the other unit of an HA pair).
    pub fn for_each_mapping(&self, f: impl FnMut(u32, u64, u32)) {
        self.for_each_mapping_in(0..self.reverse.len(), f);
    }

    /// `for_each_mapping` over the reverse slots `range` (a group of dirty marks).
    pub fn for_each_mapping_in(&self, range: Range<usize>, mut f: impl FnMut(u32, u64, u32)) {
        let end = range.end.min(self.reverse.len());
        let start = range.start.min(end);
        for (i, s) in self.reverse[start..end].iter().enumerate() {
            let c = s.client.load(Ordering::Acquire);
            if c & VALID != 0 {
                f(
                    (start + i) as u32,
                    c,
                    s.state.load(Ordering::Acquire) as u32,
                );
            }
        }
    }

    /// Stores a replicated session: reverse slot `index` belongs to `client` (a word
    /// from `for_each_mapping`) until `deadline`. Both units number address slots
    /// alike because they run the same configuration.
    pub fn import(&self, index: u32, client: u64, deadline: u32) {
        let Some(s) = self.reverse.get(index as usize) else {
            return;
        };
        if client & VALID == 0 {
            return;
        }
        let generation = ((s.state.load(Ordering::Acquire) >> 32) as u32).wrapping_add(1);
        s.client.store(client, Ordering::Release);
        s.state.store(state(generation, deadline), Ordering::SeqCst);
        self.dirty.mark(index as usize);
    }

    /// Live sessions (a scan of every address's ports; `Sweep` spreads one out).
    pub fn count_live(&self, now: u32) -> usize {
        self.tally(0..self.reverse.len(), (0, 0), now).live
    }
}

/// A sweep's unit is one (address, port).
impl Sweepable for SnatTable<'_> {
    fn units(&self) -> usize {
        self.reverse.len()
    }

    fn tally(&self, range: Range<usize>, (from, to): (u32, u32), now: u32) -> Tally {
        let mut t = Tally::default();
        for s in &self.reverse[range] {
            if s.client.load(Ordering::Relaxed) & VALID != 0 {
                let d = s.state.load(Ordering::Relaxed) as u32;
                t.expired += u64::from(d > from && d <= to);
                t.live += usize::from(d > now);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::flow::Slot;

    fn reverse(addresses: usize) -> Vec<SnatSlot> {
        (0..addresses * PORTS_PER_ADDRESS)
            .map(|_| SnatSlot::default())
            .collect()
    }

    fn forward(slots: usize) -> Vec<Slot> {
        (0..slots).map(|_| Slot::default()).collect()
    }

    #[test]
    fn session_is_stable_reversible_and_expires() {
        let slots = forward(4096);
        let rev = reverse(1);
        let t = SnatTable::new(FlowTable::new(&slots, 8), &rev);
        let mut alloc = SnatAllocator::for_worker(0, 1);
        let c = Ipv4Addr::new(198, 18, 0, 10);
        let (s, new) = t.session(&mut alloc, &[0], (c, 5060), 0, 100, 30).unwrap();
        assert!(new);
        let (s2, new2) = t.session(&mut alloc, &[0], (c, 5060), 0, 101, 30).unwrap();
        assert!(!new2);
        assert_eq!((s.address, s.port), (s2.address, s2.port));
        let back = t.by_port(s.address, s.port, 110).unwrap();
        assert_eq!((back.client, back.client_port, back.farm), (c, 5060, 0));
        let (other, _) = t.session(&mut alloc, &[0], (c, 5062), 0, 101, 30).unwrap();
        assert_ne!(other.port, s.port);
        // A registration keeps it for an hour.
        t.extend(&s, 3700);
        assert!(t.by_port(0, s.port, 3000).is_some());
        assert!(
            t.by_port(0, other.port, 3000).is_none(),
            "idle session expired"
        );
        assert_eq!(t.count_live(3000), 1);
        assert!(t.by_port(0, 80, 100).is_none(), "below the SNAT ports");
    }

    #[test]
    fn one_worker_fills_the_shared_pool_then_reuses_expired_ports() {
        let slots = forward(1 << 17);
        let rev = reverse(3);
        let t = SnatTable::new(FlowTable::new(&slots, 16), &rev);
        // Worker 1 of 2 may use every port of the pool's two addresses.
        let mut alloc = SnatAllocator::for_worker(1, 2);
        let client = |i: usize| (Ipv4Addr::from(0xc612_0000 + (i as u32 >> 8)), i as u16);
        let cap = 2 * PORTS_PER_ADDRESS;
        for i in 0..cap {
            let (ip, port) = client(i);
            let (s, new) = t
                .session(&mut alloc, &[1, 2], (ip, port), 0, 10, 5)
                .unwrap();
            assert!(new && (s.address == 1 || s.address == 2));
        }
        let (ip, port) = client(cap);
        assert!(
            t.session(&mut alloc, &[1, 2], (ip, port), 0, 11, 5)
                .is_none(),
            "full"
        );
        assert_eq!(t.count_live(11), cap);
        assert_eq!(
            t.count_live(11),
            t.mappings() - PORTS_PER_ADDRESS,
            "slot 0 untouched"
        );
        // Later every session has expired: the new flow gets a port, the old flows
        // lose theirs.
        let (s, new) = t
            .session(&mut alloc, &[1, 2], (ip, port), 0, 20, 5)
            .unwrap();
        assert!(new);
        let old = t.by_port(s.address, s.port, 20).unwrap();
        assert_eq!((old.client, old.client_port), (ip, port));
        let (ip0, port0) = client(0);
        assert!(t.by_client(ip0, port0, 0, 20).is_none());
    }

    #[test]
    fn a_late_extension_does_not_revive_a_reclaimed_port() {
        let slots = forward(4096);
        let rev = reverse(1);
        let t = SnatTable::new(FlowTable::new(&slots, 8), &rev);
        let mut alloc = SnatAllocator::for_worker(0, 1);
        let a = Ipv4Addr::new(198, 18, 0, 10);
        let b = Ipv4Addr::new(198, 18, 0, 11);
        let (sa, _) = t.session(&mut alloc, &[0], (a, 1), 0, 10, 5).unwrap();
        // The same port, once a's session expired, goes to b.
        let mut again = SnatAllocator::for_worker(0, 1);
        let (sb, _) = t.session(&mut again, &[0], (b, 1), 0, 20, 5).unwrap();
        assert_eq!((sa.address, sa.port), (sb.address, sb.port));
        assert!(sb.generation > sa.generation);
        t.extend(&sa, 3600);
        let now = t.by_port(sb.address, sb.port, 21).unwrap();
        assert_eq!((now.client, now.deadline), (b, 25));
        assert!(t.by_client(a, 1, 0, 21).is_none());
    }

    #[test]
    fn workers_start_spread_over_the_pool() {
        let total = 4 * PORTS_PER_ADDRESS;
        let starts: Vec<usize> = (0..4)
            .map(|w| SnatAllocator::for_worker(w, 4).start(total))
            .collect();
        assert_eq!(starts, [0, 31744, 63488, 95232]);
    }

    #[test]
    fn replicated_mappings_import_into_a_second_table() {
        let slots = forward(4096);
        let rev = reverse(2);
        let t = SnatTable::new(FlowTable::new(&slots, 8), &rev);
        let mut alloc = SnatAllocator::for_worker(0, 1);
        let c = Ipv4Addr::new(198, 18, 0, 10);
        let (s, _) = t.session(&mut alloc, &[1], (c, 5060), 3, 100, 30).unwrap();
        let slots2 = forward(4096);
        let rev2 = reverse(2);
        let standby = SnatTable::new(FlowTable::new(&slots2, 8), &rev2);
        let mut n = 0;
        t.for_each_mapping(|i, client, deadline| {
            standby.import(i, client, deadline);
            n += 1;
        });
        t.forward().for_each_slot(|_, k, v| {
            if k != 0 {
                standby.forward().import(k, v, 100).unwrap();
            }
        });
        assert_eq!(n, 1);
        let back = standby.by_port(1, s.port, 110).unwrap();
        assert_eq!((back.client, back.client_port, back.farm), (c, 5060, 3));
        let fwd = standby.by_client(c, 5060, 3, 110).unwrap();
        assert_eq!((fwd.address, fwd.port), (1, s.port));
    }
}
