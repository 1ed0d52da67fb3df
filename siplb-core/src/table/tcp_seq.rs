//! `SeqTable`: per TCP connection, how the SIP ALG's rewrites moved the byte stream in
//! each direction, so that every later segment's sequence number, acknowledgment and
//! SACK edges can be mapped (the job of the kernel's `nf_ct_seqadj`).
//!
//! # Model
//!
//! A direction's [`Correction`] is the kernel's: the position of the last rewrite (the
//! sequence number of the segment it changed, in the sender's numbering) and the
//! offsets of the data up to it and after it. A retransmission of data before the last
//! rewrite, of the rewritten segment itself, or of data after it maps right; data
//! before the rewrite *before* the last one maps with the wrong offset, as in the
//! kernel (rewrites are a round trip or more apart, so that data was acknowledged long
//! ago). Offsets are kept modulo 2^32, as sequence numbers are.
//!
//! A connection gets its slot when its SYN passes (or, for one that began before the
//! balancer knew it, on its first rewrite); a connection whose slot is absent or
//! expired has no correction. Slots expire with their connection (the caller passes
//! the connection's deadline on every segment) and are reused in place.
//!
//! # Concurrency protocol
//!
//! A slot's two directions are written by the workers that receive them (RSS keeps a
//! direction on one queue) and read by both: the sender's worker maps sequence numbers,
//! the other acknowledgments. Each slot is a seqlock:
//! - *write* (open, record): CAS `version` even → odd (Acquire) then a Release fence;
//!   write the key, deadline and corrections (Relaxed); `version` + 1 (Release). A
//!   writer that finds the slot odd spins a bounded number of times, then gives up
//!   ([`SeqError::Busy`]).
//! - *read*: `version` (Acquire, even), the words (Relaxed), an Acquire fence,
//!   `version` again: a change means a write overlapped, and the read is retried.
//! - The deadline is refreshed outside the lock by `fetch_max`, at most once a second
//!   per connection; a refresh landing on a slot just reused for another key only
//!   moves that slot's deadline by the difference of two connections' lifetimes.
//!
//! Race accepted, as in [`FlowTable`](super::flow::FlowTable): two workers claiming a
//! slot for the *same new* key at the same moment can claim two different slots if a
//! slot on the path expires between their probes; the second slot's corrections would
//! then be lost. Claims happen on a connection's SYN, which one worker sees; the race
//! needs a connection unknown to the table whose two directions are both rewritten
//! for the first time in the same instant.
//!
//! # Memory
//!
//! 64 bytes (a cache line) per slot; the dataplane sizes the table like the connection
//! table (twice `[tables] tcp_connections`, a power of two): 8 MiB for 65,536
//! connections.

use std::sync::atomic::{
    fence, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

/// Directions of a connection: [`FROM_CLIENT`] and [`FROM_BACKEND`].
pub const DIRS: usize = 2;
pub const FROM_CLIENT: usize = 0;
pub const FROM_BACKEND: usize = 1;
/// Bounded spins on a slot another worker is writing.
const SPINS: usize = 64;

/// `a` comes after `b` in sequence space (RFC 9293 §3.4, modulo 2^32).
#[inline]
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// One direction's correction: the data of this direction up to and including `pos`
/// (the sequence number of the last rewritten segment, in the sender's numbering)
/// moved by `before` bytes, the data after it by `after` (modulo 2^32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Correction {
    pub pos: u32,
    pub before: u32,
    pub after: u32,
}

impl Correction {
    /// No correction: the stream is as the sender wrote it.
    pub fn is_identity(&self) -> bool {
        self.before == 0 && self.after == 0
    }

    /// A sequence number of the sender, in the receiver's numbering.
    #[inline]
    pub fn seq(&self, seq: u32) -> u32 {
        let off = if seq_after(seq, self.pos) {
            self.after
        } else {
            self.before
        };
        seq.wrapping_add(off)
    }

    /// An acknowledgment (or SACK edge) of the receiver, in the sender's numbering.
    #[inline]
    pub fn ack(&self, ack: u32) -> u32 {
        let off = if seq_after(ack.wrapping_sub(self.before), self.pos) {
            self.after
        } else {
            self.before
        };
        ack.wrapping_sub(off)
    }

    /// Notes that the segment at `seq` changed length by `delta` bytes. A second
    /// rewrite of the same segment (a retransmission) changes nothing.
    fn record(&mut self, seq: u32, delta: i32) {
        if self.before == self.after || seq_after(seq, self.pos) {
            self.pos = seq;
            self.before = self.after;
            self.after = self.after.wrapping_add(delta as u32);
        }
    }
}

/// One connection's slot; all-zero memory is an empty slot.
#[repr(C, align(64))]
#[derive(Default)]
pub struct SeqSlot {
    key: AtomicU64,
    /// Seqlock sequence: odd while a writer holds the slot.
    version: AtomicU32,
    /// The connection's deadline (seconds); the slot is free once it passed.
    deadline: AtomicU32,
    /// `pos`, `before`, `after` of each direction.
    words: [AtomicU32; 3 * DIRS],
}

impl SeqSlot {
    fn try_lock(&self) -> Option<u32> {
        let v = self.version.load(Relaxed);
        if v & 1 == 1 {
            return None;
        }
        self.version
            .compare_exchange(v, v.wrapping_add(1), Acquire, Relaxed)
            .ok()?;
        fence(Release);
        Some(v)
    }

    fn unlock(&self, v: u32) {
        self.version.store(v.wrapping_add(2), Release);
    }

    fn load(&self, dir: usize) -> Correction {
        let w = &self.words[3 * dir..3 * dir + 3];
        Correction {
            pos: w[0].load(Relaxed),
            before: w[1].load(Relaxed),
            after: w[2].load(Relaxed),
        }
    }

    fn store(&self, dir: usize, c: Correction) {
        let w = &self.words[3 * dir..3 * dir + 3];
        w[0].store(c.pos, Relaxed);
        w[1].store(c.before, Relaxed);
        w[2].store(c.after, Relaxed);
    }
}

/// Why a correction could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SeqError {
    #[error("no free slot on the connection's probe path")]
    Full,
    #[error("another worker held the slot for longer than the bounded wait")]
    Busy,
}

#[derive(Clone, Copy)]
pub struct SeqTable<'m> {
    slots: &'m [SeqSlot],
    mask: usize,
    max_probe: usize,
}

impl<'m> SeqTable<'m> {
    /// A table over `slots` (a power of two), probing at most `max_probe` slots.
    pub fn new(slots: &'m [SeqSlot], max_probe: usize) -> Self {
        assert!(
            slots.len().is_power_of_two(),
            "slot count must be a power of two"
        );
        Self {
            slots,
            mask: slots.len() - 1,
            max_probe: max_probe.clamp(1, slots.len()),
        }
    }

    /// Slot indexes on `key`'s probe path, in triangular steps (as `FlowTable`).
    #[inline]
    fn path(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let home = key as usize;
        (0..self.max_probe).map(move |i| home.wrapping_add(i * (i + 1) / 2) & self.mask)
    }

    /// The corrections of connection `key` in both directions (identities when it has
    /// none), pushing its slot's deadline to `deadline`.
    #[inline]
    pub fn get(&self, key: u64, now: u32, deadline: u32) -> Result<[Correction; DIRS], SeqError> {
        debug_assert_ne!(key, 0);
        'probe: for i in self.path(key) {
            let s = &self.slots[i];
            let k = s.key.load(Acquire);
            if k == 0 {
                break;
            }
            if k != key {
                continue;
            }
            for _ in 0..SPINS {
                let v = s.version.load(Acquire);
                if v & 1 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                let k = s.key.load(Relaxed);
                let d = s.deadline.load(Relaxed);
                let c = [s.load(FROM_CLIENT), s.load(FROM_BACKEND)];
                fence(Acquire);
                if s.version.load(Relaxed) != v {
                    std::hint::spin_loop();
                    continue;
                }
                if k != key {
                    continue 'probe;
                }
                if d <= now {
                    break 'probe;
                }
                if deadline > d {
                    s.deadline.fetch_max(deadline, Relaxed);
                }
                return Ok(c);
            }
            return Err(SeqError::Busy);
        }
        Ok([Correction::default(); DIRS])
    }

    /// Starts connection `key` (its SYN) with no correction, live until `deadline`;
    /// whatever an earlier connection of the same key left is forgotten.
    pub fn open(&self, key: u64, now: u32, deadline: u32) -> Result<(), SeqError> {
        let (s, v) = self.claim(key, now, deadline)?;
        for dir in 0..DIRS {
            s.store(dir, Correction::default());
        }
        s.unlock(v);
        Ok(())
    }

    /// Records that this direction's segment at `seq` (sender's numbering) changed
    /// length by `delta` bytes, the connection living until `deadline`; returns the
    /// direction's correction after it.
    pub fn record(
        &self,
        key: u64,
        now: u32,
        deadline: u32,
        dir: usize,
        seq: u32,
        delta: i32,
    ) -> Result<Correction, SeqError> {
        let (s, v) = self.claim(key, now, deadline)?;
        let mut c = s.load(dir);
        c.record(seq, delta);
        s.store(dir, c);
        s.unlock(v);
        Ok(c)
    }

    /// Finds `key`'s slot, or takes an empty or expired one for it (its corrections
    /// reset), and locks it; its deadline is at least `deadline`.
    fn claim(&self, key: u64, now: u32, deadline: u32) -> Result<(&SeqSlot, u32), SeqError> {
        debug_assert_ne!(key, 0);
        for _ in 0..SPINS {
            let mut found = None;
            for i in self.path(key) {
                let s = &self.slots[i];
                let k = s.key.load(Acquire);
                if k == key {
                    found = Some(s);
                    break;
                }
                if k == 0 {
                    found.get_or_insert(s);
                    break;
                }
                if found.is_none() && s.deadline.load(Relaxed) <= now {
                    found = Some(s);
                }
            }
            let s = found.ok_or(SeqError::Full)?;
            let Some(v) = s.try_lock() else {
                std::hint::spin_loop();
                continue;
            };
            let k = s.key.load(Relaxed);
            let live = s.deadline.load(Relaxed) > now;
            if k == key && live {
                if deadline > s.deadline.load(Relaxed) {
                    s.deadline.store(deadline, Relaxed);
                }
                return Ok((s, v));
            }
            if k == key || k == 0 || !live {
                s.key.store(key, Relaxed);
                s.deadline.store(deadline, Relaxed);
                for dir in 0..DIRS {
                    s.store(dir, Correction::default());
                }
                return Ok((s, v));
            }
            // Taken by another connection since the probe.
            s.version.store(v, Release);
        }
        Err(SeqError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: usize) -> Vec<SeqSlot> {
        (0..n).map(|_| SeqSlot::default()).collect()
    }

    #[test]
    fn corrections_map_data_before_and_after_the_last_rewrite() {
        // The kernel's example: +10 at 1000, then +5 at 3000.
        let mut c = Correction::default();
        assert!(c.is_identity());
        c.record(1000, 10);
        assert_eq!(
            c,
            Correction {
                pos: 1000,
                before: 0,
                after: 10
            }
        );
        assert_eq!(c.seq(500), 500, "data before the rewrite");
        assert_eq!(c.seq(1000), 1000, "the rewritten segment itself");
        assert_eq!(c.seq(1500), 1510, "data after it");
        c.record(1000, 10);
        assert_eq!(c.after, 10, "a retransmission rewritten again counts once");
        c.record(3000, 5);
        assert_eq!((c.pos, c.before, c.after), (3000, 10, 15));
        assert_eq!(c.seq(2000), 2010);
        assert_eq!(c.seq(3000), 3010);
        assert_eq!(c.seq(3100), 3115);
        // The receiver acknowledges in its numbering; mapped back to the sender's.
        assert_eq!(c.ack(3010), 3000);
        assert_eq!(c.ack(3115), 3100);
        assert_eq!(c.ack(2010), 2000);
        // Shrinking, across the wrap of sequence space.
        let mut c = Correction::default();
        c.record(u32::MAX - 5, -7);
        assert_eq!(c.seq(10), 3);
        assert_eq!(c.ack(3), 10);
        assert_eq!(c.seq(u32::MAX - 10), u32::MAX - 10);
    }

    #[test]
    fn open_record_get_and_expiry() {
        let mem = slots(64);
        let t = SeqTable::new(&mem, 8);
        assert_eq!(t.get(7, 100, 200), Ok([Correction::default(); DIRS]));
        t.open(7, 100, 200).unwrap();
        let c = t.record(7, 101, 200, FROM_BACKEND, 5000, 12).unwrap();
        assert_eq!(c.after, 12);
        let got = t.get(7, 102, 300).unwrap();
        assert!(got[FROM_CLIENT].is_identity());
        assert_eq!(got[FROM_BACKEND], c);
        // Refreshed to 300 by the get: still there at 250, gone at 300.
        assert_eq!(t.get(7, 250, 0).unwrap()[FROM_BACKEND], c);
        assert!(t.get(7, 300, 0).unwrap()[FROM_BACKEND].is_identity());
        // A new SYN of the same key starts over.
        t.record(7, 102, 400, FROM_CLIENT, 1, 3).unwrap();
        t.open(7, 103, 400).unwrap();
        assert_eq!(t.get(7, 104, 400), Ok([Correction::default(); DIRS]));
    }

    #[test]
    fn a_full_path_refuses_and_expired_slots_are_reused() {
        let mem = slots(8);
        let t = SeqTable::new(&mem, 2);
        // Keys with the same home slot: the path holds two.
        let keys = [8u64, 16, 24];
        t.open(keys[0], 10, 20).unwrap();
        t.open(keys[1], 10, 20).unwrap();
        assert_eq!(t.open(keys[2], 10, 20), Err(SeqError::Full));
        t.record(keys[1], 11, 20, FROM_CLIENT, 9, 4).unwrap();
        // After the deadline the first slot is reused; the second keeps its key.
        t.record(keys[2], 20, 40, FROM_CLIENT, 1, 2).unwrap();
        assert_eq!(t.get(keys[2], 21, 0).unwrap()[FROM_CLIENT].after, 2);
        assert!(t.get(keys[0], 21, 0).unwrap()[FROM_CLIENT].is_identity());
    }

    #[test]
    fn concurrent_writers_and_readers_see_whole_corrections() {
        // One writer per direction, two readers: every read pairs `pos` with the
        // offsets written with it (after = 3 * pos, before = after of the last one).
        let mem = slots(16);
        let t = SeqTable::new(&mem, 4);
        t.open(5, 0, 1000).unwrap();
        std::thread::scope(|sc| {
            for dir in 0..DIRS {
                sc.spawn(move || {
                    for i in 1..20_000u32 {
                        // Busy while the other writer holds the slot: try again.
                        let c = loop {
                            if let Ok(c) = t.record(5, 1, 1000, dir, i, 3) {
                                break c;
                            }
                        };
                        assert_eq!(c.after, 3 * i);
                    }
                });
            }
            for _ in 0..2 {
                sc.spawn(move || {
                    let mut reads = 0;
                    while reads < 20_000 {
                        let Ok(c) = t.get(5, 1, 1000) else { continue };
                        for d in c {
                            assert_eq!(d.after, 3 * d.pos, "{d:?}");
                            assert_eq!(d.before, d.after.saturating_sub(3), "{d:?}");
                        }
                        reads += 1;
                    }
                });
            }
        });
    }
}
