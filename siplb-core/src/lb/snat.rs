//! SNAT sessions: one balancer port per client flow (client address, client port,
//! farm), so backends' answers and backend-originated requests sent to that port find
//! their way back to the client.
//!
//! The reverse side is an array indexed by the SNAT port (the lookup a backend's packet
//! needs is one load); the forward side is a `FlowTable` from the client flow to its
//! port. Each worker allocates ports only from its own range, so allocation needs no
//! CAS; any worker may extend a session's deadline (`fetch_max`).

use crate::hash::hash64;
use crate::table::flow::{Entry, FlowTable};
use crate::table::sweep::{Sweepable, Tally};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// SNAT ports of each source address: 1024-32767. The kernel's ephemeral range
/// (32768-60999 by default on Linux) stays free for the host's own sockets on the same
/// address (health checks through the exception path).
pub const FIRST_PORT: u16 = 1024;
pub const LAST_PORT: u16 = 32767;
const VALID: u64 = 1;

/// The reverse entry of one SNAT port. 16 bytes.
#[repr(C, align(16))]
#[derive(Default)]
pub struct SnatSlot {
    /// `client ip << 32 | client port << 16 | farm << 8 | VALID`.
    client: AtomicU64,
    /// Seconds; the session is live while `deadline > now`.
    deadline: AtomicU32,
    _pad: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnatSession {
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub farm: u8,
    pub port: u16,
    pub deadline: u32,
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

pub struct SnatTable<'m> {
    forward: FlowTable<'m>,
    /// Indexed by port; `reverse.len()` is 65536.
    reverse: &'m [SnatSlot],
}

/// A worker's share of the port space and where its next search starts.
#[derive(Debug, Clone)]
pub struct SnatAllocator {
    first: u16,
    last: u16,
    cursor: u16,
}

impl SnatAllocator {
    /// Worker `id` of `workers` gets an equal, disjoint slice of ports 1024-32767.
    pub fn for_worker(id: u16, workers: u16) -> Self {
        let span = (u32::from(LAST_PORT) + 1 - u32::from(FIRST_PORT)) / u32::from(workers.max(1));
        let first = u32::from(FIRST_PORT) + span * u32::from(id);
        let last = first + span - 1;
        Self {
            first: first as u16,
            last: last as u16,
            cursor: first as u16,
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'m> SnatTable<'m> {
    /// `reverse` must have 65536 slots.
    pub fn new(forward: FlowTable<'m>, reverse: &'m [SnatSlot]) -> Self {
        assert_eq!(reverse.len(), 65536, "one reverse slot per port");
        Self { forward, reverse }
    }

    /// The live session that owns `port`.
    #[inline]
    pub fn by_port(&self, port: u16, now: u32) -> Option<SnatSession> {
        let s = &self.reverse[usize::from(port)];
        let c = s.client.load(Ordering::Acquire);
        let deadline = s.deadline.load(Ordering::Acquire);
        if c & VALID == 0 || deadline <= now {
            return None;
        }
        Some(SnatSession {
            client: Ipv4Addr::from((c >> 32) as u32),
            client_port: (c >> 16) as u16,
            farm: (c >> 8) as u8,
            port,
            deadline,
        })
    }

    /// The client flow's live session, if it has one.
    #[inline]
    pub fn by_client(&self, ip: Ipv4Addr, port: u16, farm: u8, now: u32) -> Option<SnatSession> {
        let e = self.forward.lookup(flow_key(ip, port, farm), now)?;
        let s = self.by_port(e.payload as u16, now)?;
        // The port may have been reused by another flow after this entry was written.
        (s.client == ip && s.client_port == port && s.farm == farm).then_some(s)
    }

    /// The client flow's session, allocating a port from `alloc` when it has none.
    /// `None` when the worker's ports are all in use (or the forward table is full).
    pub fn session(
        &self,
        alloc: &mut SnatAllocator,
        ip: Ipv4Addr,
        port: u16,
        farm: u8,
        now: u32,
        lifetime: u32,
    ) -> Option<(SnatSession, bool)> {
        if let Some(s) = self.by_client(ip, port, farm, now) {
            self.extend(s.port, now.saturating_add(lifetime));
            return Some((s, false));
        }
        let deadline = now.saturating_add(lifetime);
        let n = alloc.len();
        for _ in 0..n {
            let p = alloc.cursor;
            alloc.cursor = if p == alloc.last { alloc.first } else { p + 1 };
            let slot = &self.reverse[usize::from(p)];
            if slot.deadline.load(Ordering::Acquire) > now {
                continue;
            }
            // Only this worker writes slots in its range: publish the client, then the
            // deadline that makes it live (readers check the deadline after the client).
            slot.client.store(pack(ip, port, farm), Ordering::Release);
            slot.deadline.store(deadline, Ordering::Release);
            let key = flow_key(ip, port, farm);
            self.forward
                .upsert(key, now, |_| {
                    Some(Entry {
                        payload: u32::from(p),
                        deadline,
                    })
                })
                .ok()?;
            let s = SnatSession {
                client: ip,
                client_port: port,
                farm,
                port: p,
                deadline,
            };
            return Some((s, true));
        }
        None
    }

    /// Keeps the session on `port` alive until at least `deadline` (a dialog or a
    /// registration that uses it lives that long).
    #[inline]
    pub fn extend(&self, port: u16, deadline: u32) {
        let s = &self.reverse[usize::from(port)];
        if s.deadline.load(Ordering::Relaxed) < deadline {
            s.deadline.fetch_max(deadline, Ordering::AcqRel);
        }
        // The forward entry only needs to outlive lookups; it is refreshed lazily.
        let c = s.client.load(Ordering::Acquire);
        let key = flow_key(
            Ipv4Addr::from((c >> 32) as u32),
            (c >> 16) as u16,
            (c >> 8) as u8,
        );
        if let Some(e) = self.forward.lookup(key, 0) {
            if e.deadline < deadline && e.payload == u32::from(port) {
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

    /// The forward table (client flow → port), for replication.
    pub fn forward(&self) -> &FlowTable<'m> {
        &self.forward
    }

    /// Calls `f(port, client word, deadline)` for every port that ever had a session
    /// (for replication to the other unit of an HA pair).
    pub fn for_each_port(&self, mut f: impl FnMut(u16, u64, u32)) {
        for (port, s) in self.reverse.iter().enumerate() {
            let c = s.client.load(Ordering::Acquire);
            if c & VALID != 0 {
                f(port as u16, c, s.deadline.load(Ordering::Acquire));
            }
        }
    }

    /// Stores a replicated session: port `port` belongs to `client` (a word from
    /// `for_each_port`) until `deadline`.
    pub fn import(&self, port: u16, client: u64, deadline: u32) {
        if client & VALID == 0 {
            return;
        }
        let s = &self.reverse[usize::from(port)];
        s.client.store(client, Ordering::Release);
        s.deadline.store(deadline, Ordering::Release);
    }

    /// Live sessions (a scan of all 65536 ports; `Sweep` spreads one out).
    pub fn count_live(&self, now: u32) -> usize {
        self.tally(0..self.reverse.len(), (0, 0), now).live
    }
}

/// A sweep's unit is one port.
impl Sweepable for SnatTable<'_> {
    fn units(&self) -> usize {
        self.reverse.len()
    }

    fn tally(&self, range: Range<usize>, (from, to): (u32, u32), now: u32) -> Tally {
        let mut t = Tally::default();
        for s in &self.reverse[range] {
            if s.client.load(Ordering::Relaxed) & VALID != 0 {
                let d = s.deadline.load(Ordering::Relaxed);
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

    fn reverse() -> Vec<SnatSlot> {
        (0..65536).map(|_| SnatSlot::default()).collect()
    }

    #[test]
    fn allocator_ranges_are_disjoint_and_cover() {
        let a = SnatAllocator::for_worker(0, 2);
        let b = SnatAllocator::for_worker(1, 2);
        assert_eq!(a.first, FIRST_PORT);
        assert_eq!(a.last + 1, b.first);
        assert!(b.last >= LAST_PORT - 1 && b.last <= LAST_PORT);
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn session_is_stable_reversible_and_expires() {
        let slots: Vec<Slot> = (0..4096).map(|_| Slot::default()).collect();
        let rev = reverse();
        let t = SnatTable::new(FlowTable::new(&slots, 8), &rev);
        let mut alloc = SnatAllocator::for_worker(0, 1);
        let c = Ipv4Addr::new(198, 18, 0, 10);
        let (s, new) = t.session(&mut alloc, c, 5060, 0, 100, 30).unwrap();
        assert!(new);
        let (s2, new2) = t.session(&mut alloc, c, 5060, 0, 101, 30).unwrap();
        assert!(!new2);
        assert_eq!(s.port, s2.port);
        let back = t.by_port(s.port, 110).unwrap();
        assert_eq!((back.client, back.client_port, back.farm), (c, 5060, 0));
        let (other, _) = t.session(&mut alloc, c, 5062, 0, 101, 30).unwrap();
        assert_ne!(other.port, s.port);
        // A registration keeps it for an hour.
        t.extend(s.port, 3700);
        assert!(t.by_port(s.port, 3000).is_some());
        assert!(
            t.by_port(other.port, 3000).is_none(),
            "idle session expired"
        );
        assert_eq!(t.count_live(3000), 1);
    }

    #[test]
    fn expired_ports_are_reused_and_stale_forward_entries_ignored() {
        let slots: Vec<Slot> = (0..4096).map(|_| Slot::default()).collect();
        let rev = reverse();
        let t = SnatTable::new(FlowTable::new(&slots, 8), &rev);
        // A worker with a tiny range: 1 of 64512 workers' worth is still >= 1 port.
        let mut alloc = SnatAllocator {
            first: 2000,
            last: 2001,
            cursor: 2000,
        };
        let a = Ipv4Addr::new(198, 18, 0, 10);
        let b = Ipv4Addr::new(198, 18, 0, 11);
        let c = Ipv4Addr::new(198, 18, 0, 12);
        t.session(&mut alloc, a, 1, 0, 10, 5).unwrap();
        t.session(&mut alloc, b, 1, 0, 10, 5).unwrap();
        assert!(t.session(&mut alloc, c, 1, 0, 11, 5).is_none(), "exhausted");
        let (s, _) = t.session(&mut alloc, c, 1, 0, 20, 5).unwrap();
        assert!(s.port == 2000 || s.port == 2001);
        assert!(t.by_client(a, 1, 0, 20).is_none() || t.by_client(b, 1, 0, 20).is_none());
    }
}
