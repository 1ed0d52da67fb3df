//! The neighbour table (IPv4 → MAC and port), shared by all workers, lock-free.
//!
//! Entries are learned from ARP and gleaned from IP frames of directly connected hosts,
//! and never removed (a host that moves is relearned; a stale entry is re-requested).
//! Slots are claimed with a CAS on the address; the MAC and port live in one 64-bit
//! word so a reader never sees half an update.

use crate::wire::MacAddr;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const VALID: u64 = 1 << 63;
const MAX_PROBE: usize = 32;

/// One neighbour. 32 bytes, so two share a cache line.
#[repr(C, align(32))]
#[derive(Default)]
pub struct NeighbourSlot {
    /// The IPv4 address, 0 = empty slot.
    ip: AtomicU32,
    /// Last time (s) the MAC was confirmed.
    seen: AtomicU32,
    /// Last time (s) an ARP request was sent for it (rate limit).
    requested: AtomicU32,
    _pad: u32,
    /// `VALID | port << 48 | mac`.
    mac_port: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: MacAddr,
    pub port: u8,
    pub seen: u32,
}

pub struct NeighbourTable<'m> {
    slots: &'m [NeighbourSlot],
    mask: usize,
}

impl<'m> NeighbourTable<'m> {
    /// `slots.len()` must be a power of two.
    pub fn new(slots: &'m [NeighbourSlot]) -> Self {
        assert!(
            slots.len().is_power_of_two(),
            "neighbour slots must be a power of two"
        );
        Self {
            slots,
            mask: slots.len() - 1,
        }
    }

    fn home(&self, ip: u32) -> usize {
        // Fibonacci hashing spreads consecutive addresses.
        (ip.wrapping_mul(0x9e37_79b9) as usize) & self.mask
    }

    fn find(&self, ip: u32) -> Option<&NeighbourSlot> {
        let h = self.home(ip);
        for i in 0..MAX_PROBE.min(self.slots.len()) {
            let s = &self.slots[(h + i) & self.mask];
            match s.ip.load(Ordering::Acquire) {
                x if x == ip => return Some(s),
                0 => return None,
                _ => {}
            }
        }
        None
    }

    fn find_or_claim(&self, ip: u32) -> Option<&NeighbourSlot> {
        let h = self.home(ip);
        for i in 0..MAX_PROBE.min(self.slots.len()) {
            let s = &self.slots[(h + i) & self.mask];
            match s.ip.load(Ordering::Acquire) {
                x if x == ip => return Some(s),
                0 => match s
                    .ip
                    .compare_exchange(0, ip, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Some(s),
                    Err(x) if x == ip => return Some(s),
                    Err(_) => {}
                },
                _ => {}
            }
        }
        None
    }

    /// Records that `ip` is at `mac` behind `port`. Returns false when the table is full
    /// around the address's home slot. Avoids writing when nothing changed this second,
    /// so gleaning on every packet does not bounce the line between cores.
    pub fn learn(&self, ip: Ipv4Addr, mac: MacAddr, port: u8, now: u32) -> bool {
        let ip = u32::from(ip);
        if ip == 0 {
            return false;
        }
        let Some(s) = self.find_or_claim(ip) else {
            return false;
        };
        let word = VALID | (u64::from(port) << 48) | mac.to_u64();
        if s.mac_port.load(Ordering::Relaxed) != word {
            s.mac_port.store(word, Ordering::Release);
        }
        if s.seen.load(Ordering::Relaxed) != now {
            s.seen.store(now, Ordering::Relaxed);
        }
        true
    }

    pub fn lookup(&self, ip: Ipv4Addr) -> Option<Neighbour> {
        let s = self.find(u32::from(ip))?;
        let w = s.mac_port.load(Ordering::Acquire);
        (w & VALID != 0).then(|| Neighbour {
            mac: MacAddr::from_u64(w & 0xffff_ffff_ffff),
            port: ((w >> 48) & 0xff) as u8,
            seen: s.seen.load(Ordering::Relaxed),
        })
    }

    /// True if the caller should send an ARP request for `ip` now: at most one request
    /// per address per `interval` seconds across all workers (a CAS decides who sends).
    pub fn should_request(&self, ip: Ipv4Addr, now: u32, interval: u32) -> bool {
        let Some(s) = self.find_or_claim(u32::from(ip)) else {
            return false;
        };
        let last = s.requested.load(Ordering::Relaxed);
        if last != 0 && now.wrapping_sub(last) < interval {
            return false;
        }
        s.requested
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Every resolved neighbour (for status output).
    pub fn entries(&self) -> impl Iterator<Item = (Ipv4Addr, Neighbour)> + '_ {
        self.slots.iter().filter_map(|s| {
            let ip = s.ip.load(Ordering::Acquire);
            let w = s.mac_port.load(Ordering::Acquire);
            (ip != 0 && w & VALID != 0).then(|| {
                (
                    Ipv4Addr::from(ip),
                    Neighbour {
                        mac: MacAddr::from_u64(w & 0xffff_ffff_ffff),
                        port: ((w >> 48) & 0xff) as u8,
                        seen: s.seen.load(Ordering::Relaxed),
                    },
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: usize) -> Vec<NeighbourSlot> {
        (0..n).map(|_| NeighbourSlot::default()).collect()
    }

    #[test]
    fn learn_lookup_update() {
        let s = slots(64);
        let t = NeighbourTable::new(&s);
        let ip = Ipv4Addr::new(198, 18, 1, 11);
        assert_eq!(t.lookup(ip), None);
        assert!(t.learn(ip, MacAddr([2, 0, 0, 0, 0, 1]), 1, 10));
        assert_eq!(t.lookup(ip).unwrap().mac, MacAddr([2, 0, 0, 0, 0, 1]));
        assert!(t.learn(ip, MacAddr([2, 0, 0, 0, 0, 9]), 0, 11));
        let n = t.lookup(ip).unwrap();
        assert_eq!(
            (n.mac, n.port, n.seen),
            (MacAddr([2, 0, 0, 0, 0, 9]), 0, 11)
        );
        assert_eq!(t.entries().count(), 1);
    }

    #[test]
    fn requests_are_rate_limited_and_pending_entries_are_not_resolved() {
        let s = slots(64);
        let t = NeighbourTable::new(&s);
        let ip = Ipv4Addr::new(198, 18, 1, 12);
        assert!(t.should_request(ip, 100, 1));
        assert!(!t.should_request(ip, 100, 1));
        assert!(t.should_request(ip, 101, 1));
        assert_eq!(
            t.lookup(ip),
            None,
            "a requested address is not resolved yet"
        );
    }

    #[test]
    fn full_neighbourhood_refuses_instead_of_looping() {
        let s = slots(32);
        let t = NeighbourTable::new(&s);
        let learned = (1..=40u32)
            .filter(|i| {
                t.learn(
                    Ipv4Addr::from(0xc612_0000 + i),
                    MacAddr([2, 0, 0, 0, 0, 1]),
                    0,
                    1,
                )
            })
            .count();
        assert_eq!(learned, 32);
    }

    #[test]
    fn concurrent_learners_agree() {
        let s = slots(1024);
        let t = NeighbourTable::new(&s);
        std::thread::scope(|sc| {
            for w in 0..4u8 {
                let t = &t;
                sc.spawn(move || {
                    for i in 0..500u32 {
                        t.learn(
                            Ipv4Addr::from(0xc612_0000 + i),
                            MacAddr([2, 0, 0, 0, w, 1]),
                            w,
                            i,
                        );
                    }
                });
            }
        });
        for i in 0..500u32 {
            let n = t.lookup(Ipv4Addr::from(0xc612_0000 + i)).unwrap();
            assert_eq!(n.mac.0[4], n.port, "MAC and port come from the same writer");
        }
        assert_eq!(t.entries().count(), 500);
    }
}
