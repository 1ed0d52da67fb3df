//! Dirty marks: one bit per group of [`GROUP`] slots of a shared table, set by the
//! writers of the dataplane and taken by the HA thread of the control plane, so the
//! replication of an HA pair reads only the groups that changed instead of scanning
//! every slot of every table each `sync_ms` (issue 13: a bounded cost per change).
//!
//! Writers: after the write that must reach the peer, [`DirtyMarks::mark`] loads the
//! group's word and sets the bit only when it is clear, so a busy group costs a load
//! of a line that stays shared, not a locked write per packet. The reader swaps every
//! non-zero word to zero and then reads the groups whose bits it took.
//!
//! Ordering: a writer's tracked write is a `SeqCst` operation (the CAS or store that
//! publishes the value), and `mark` loads the word `SeqCst`; the reader swaps `SeqCst`
//! and issues a `SeqCst` fence before it reads the slots. If the writer found the bit
//! set, its load precedes the reader's swap in the single total order, so its write
//! does too, and the reader's reads after the fence see it; if the writer sets the bit
//! itself, the reader takes it at this swap or the next. On x86 a `SeqCst` CAS or RMW
//! is the same locked instruction as a `Release` one, and a `SeqCst` load a plain load:
//! the marks cost writers nothing but the load and, once per group and sync, the OR.

use std::ops::Range;
use std::sync::atomic::{fence, AtomicU64, Ordering::SeqCst};

/// Slots per mark. For the flow tables: 4 buckets, 256 bytes, so a change costs the
/// reader four lines; a 2 M-slot table has 2,048 words of marks (16 KiB) to look at
/// per pass (bench/RESULTS.md, "HA sync").
pub const GROUP: usize = 16;

/// The marks of one table, over caller-provided words (a memzone in the dataplane).
#[derive(Clone, Copy)]
pub struct DirtyMarks<'m> {
    words: &'m [AtomicU64],
}

impl<'m> DirtyMarks<'m> {
    /// No marks: a table that is not replicated (`mark` does nothing, and a reader
    /// given these reads every group each time).
    pub const NONE: DirtyMarks<'static> = DirtyMarks { words: &[] };

    /// Whether marks are kept.
    pub fn is_on(&self) -> bool {
        !self.words.is_empty()
    }

    /// Words for a table of `slots` slots.
    pub const fn words_for(slots: usize) -> usize {
        slots.div_ceil(GROUP).div_ceil(64)
    }

    pub fn new(words: &'m [AtomicU64]) -> Self {
        Self { words }
    }

    /// Marks the group of `slot` changed. The caller's write of that slot was `SeqCst`
    /// (module notes). A slot beyond the marks' memory (or any, for `NONE`) is ignored.
    #[inline]
    pub fn mark(&self, slot: usize) {
        let g = slot / GROUP;
        if let Some(w) = self.words.get(g / 64) {
            let bit = 1u64 << (g % 64);
            if w.load(SeqCst) & bit == 0 {
                w.fetch_or(bit, SeqCst);
            }
        }
    }

    /// Moves every mark into `pending` (one bit per group, as many words as the marks)
    /// and clears it here. The slots of the groups taken may be read after it returns.
    pub fn take_into(&self, pending: &mut [u64]) {
        for (w, p) in self.words.iter().zip(pending.iter_mut()) {
            if w.load(SeqCst) != 0 {
                *p |= w.swap(0, SeqCst);
            }
        }
        fence(SeqCst);
    }
}

/// The reader's side: groups taken from the marks and not yet read, or all of them
/// (a full resync).
pub struct Pending {
    bits: Vec<u64>,
    slots: usize,
}

impl Pending {
    /// For a table of `slots` slots, with every group pending.
    pub fn new(slots: usize) -> Self {
        let mut p = Self {
            bits: vec![0; DirtyMarks::words_for(slots)],
            slots,
        };
        p.all();
        p
    }

    /// Every group pending (a full resync starts).
    pub fn all(&mut self) {
        let groups = self.slots.div_ceil(GROUP);
        for (i, w) in self.bits.iter_mut().enumerate() {
            let left = groups.saturating_sub(i * 64);
            *w = if left >= 64 { !0 } else { (1u64 << left) - 1 };
        }
    }

    pub fn take(&mut self, marks: &DirtyMarks<'_>) {
        marks.take_into(&mut self.bits);
    }

    /// Groups pending.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Calls `f` with the slot range of each pending group in order; a group whose
    /// `f` returns true is done (cleared), otherwise it stays pending and the walk
    /// stops (the reader ran out of room).
    pub fn drain(&mut self, mut f: impl FnMut(Range<usize>) -> bool) {
        for i in 0..self.bits.len() {
            while self.bits[i] != 0 {
                let b = self.bits[i].trailing_zeros() as usize;
                let g = i * 64 + b;
                if !f(g * GROUP..((g + 1) * GROUP).min(self.slots)) {
                    return;
                }
                self.bits[i] &= !(1u64 << b);
            }
        }
    }
}

/// What a replication sender keeps of one table: each slot's value as last queued
/// (`T`: whatever tells a change, e.g. key and raw value) and the groups still to read.
pub struct Changes<T> {
    shadow: Vec<T>,
    pending: Pending,
    /// Slots read so far (the cost of finding changes).
    pub read: u64,
}

impl<T: Copy + PartialEq + Default> Changes<T> {
    /// For a table of `slots` slots; the first `collect` reads every group.
    pub fn new(slots: usize) -> Self {
        Self {
            shadow: vec![T::default(); slots],
            pending: Pending::new(slots),
            read: 0,
        }
    }

    /// Forgets what was queued: the next `collect` queues every value again (a new
    /// stream's full resync).
    pub fn restart(&mut self) {
        self.shadow.iter_mut().for_each(|v| *v = T::default());
        self.pending.all();
    }

    /// Reads the groups marked since the last call (every group when `marks` are off:
    /// a table without marks is scanned whole each time). `group(range, take)` reads
    /// the slots of `range` and offers each value with `take(index, value)`, which says
    /// whether to queue it: true when it differs from the copy and `cost` fits in
    /// `budget` (the copy is updated then). A group whose values did not all fit stays
    /// pending and the walk stops; returns false then.
    pub fn collect<F>(
        &mut self,
        marks: &DirtyMarks<'_>,
        budget: &mut usize,
        cost: usize,
        mut group: F,
    ) -> bool
    where
        F: FnMut(Range<usize>, &mut dyn FnMut(usize, T) -> bool),
    {
        if marks.is_on() {
            self.pending.take(marks);
        } else {
            self.pending.all();
        }
        let Self {
            shadow,
            pending,
            read,
        } = self;
        let mut complete = true;
        pending.drain(|r| {
            *read += r.len() as u64;
            let mut fits = true;
            group(r, &mut |i, v| {
                let Some(s) = shadow.get_mut(i) else {
                    return false;
                };
                if *s == v {
                    return false;
                }
                if *budget < cost {
                    fits = false;
                    return false;
                }
                *budget -= cost;
                *s = v;
                true
            });
            complete &= fits;
            fits
        });
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn marks_name_the_groups_written_and_are_taken_once() {
        let slots = 64 * GROUP * 2 + 10; // 129 groups, 3 words
        let w = words(DirtyMarks::words_for(slots));
        assert_eq!(w.len(), 3);
        let m = DirtyMarks::new(&w);
        let mut p = Pending::new(slots);
        assert_eq!(p.count(), 129, "a new reader starts with a full pass");
        let mut seen = Vec::new();
        p.drain(|r| {
            seen.push(r);
            true
        });
        assert_eq!(seen.len(), 129);
        assert_eq!(
            seen.last(),
            Some(&(128 * GROUP..slots)),
            "the last group is short"
        );
        assert_eq!(p.count(), 0);
        for s in [0, 1, GROUP - 1, 5 * GROUP + 3, 128 * GROUP + 9] {
            m.mark(s);
        }
        m.mark(slots + 10_000); // beyond the table: ignored
        p.take(&m);
        let mut seen = Vec::new();
        p.drain(|r| {
            seen.push(r.start / GROUP);
            true
        });
        assert_eq!(seen, vec![0, 5, 128]);
        p.take(&m);
        assert_eq!(p.count(), 0, "taken marks are cleared");
    }

    #[test]
    fn a_group_not_done_stays_pending() {
        let slots = 10 * GROUP;
        let w = words(DirtyMarks::words_for(slots));
        let m = DirtyMarks::new(&w);
        let mut p = Pending::new(slots);
        p.drain(|_| true);
        m.mark(GROUP);
        m.mark(3 * GROUP);
        m.mark(7 * GROUP);
        p.take(&m);
        let mut n = 0;
        p.drain(|_| {
            n += 1;
            n < 2
        });
        assert_eq!(p.count(), 2, "the second and third stay");
        let mut next = None;
        p.drain(|r| {
            next.get_or_insert(r);
            false
        });
        assert_eq!(next, Some(3 * GROUP..4 * GROUP));
        p.all();
        assert_eq!(p.count(), 10);
    }

    #[test]
    fn changes_queue_each_changed_value_once_within_the_budget() {
        use crate::table::flow::{Entry, FlowTable, Slot};
        let slots: Vec<Slot> = (0..8 * GROUP).map(|_| Slot::default()).collect();
        let w = words(DirtyMarks::words_for(slots.len()));
        let t = FlowTable::new(&slots, 4).with_dirty(DirtyMarks::new(&w));
        let e = |p| {
            Some(Entry {
                payload: p,
                deadline: 100,
            })
        };
        for k in 1..=50u64 {
            t.upsert(k * 0x9e37_79b9, 0, |_| e(1)).unwrap();
        }
        let mut c: Changes<(u64, u64)> = Changes::new(slots.len());
        let run = |c: &mut Changes<(u64, u64)>, budget: usize| {
            let mut budget = budget;
            let mut out = Vec::new();
            let done = c.collect(t.dirty(), &mut budget, 1, |r, take| {
                t.for_each_slot_in(r, |i, k, v| {
                    if take(i, (k, v)) {
                        out.push(k);
                    }
                })
            });
            (done, out.len())
        };
        assert_eq!(
            run(&mut c, 30),
            (false, 30),
            "the first pass is a full one, cut by the budget"
        );
        assert_eq!(run(&mut c, 100), (true, 20), "the rest, and nothing twice");
        let read = c.read;
        assert_eq!(run(&mut c, 100), (true, 0));
        assert_eq!(c.read, read, "nothing marked: nothing read");
        t.upsert(7 * 0x9e37_79b9, 0, |_| e(2)).unwrap();
        assert_eq!(run(&mut c, 100), (true, 1), "one change, one entry");
        assert_eq!(c.read - read, GROUP as u64, "one group read");
        c.restart();
        assert_eq!(
            run(&mut c, 100),
            (true, 50),
            "a restart queues everything again"
        );
    }

    #[test]
    fn concurrent_writers_never_lose_a_mark_the_reader_has_not_taken() {
        // Each writer stores a new value (SeqCst) then marks; the reader takes marks
        // and reads the marked slots. At the end, after a last take, the reader's copy
        // equals every slot: no write went unseen.
        let slots = 4 * GROUP;
        let w = words(DirtyMarks::words_for(slots));
        let vals: Vec<AtomicU64> = (0..slots).map(|_| AtomicU64::new(0)).collect();
        let m = DirtyMarks::new(&w);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut copy = vec![0u64; slots];
        let mut p = Pending::new(slots);
        std::thread::scope(|sc| {
            let writers: Vec<_> = (0..3u64)
                .map(|t| {
                    let (m, vals) = (&m, &vals);
                    sc.spawn(move || {
                        for i in 1..=20_000u64 {
                            let s = ((i * 7919 + t * 31) % slots as u64) as usize;
                            vals[s].store(i << 2 | t, SeqCst);
                            m.mark(s);
                        }
                    })
                })
                .collect();
            let reader = sc.spawn(|| {
                while !stop.load(SeqCst) {
                    p.take(&m);
                    p.drain(|r| {
                        for s in r {
                            copy[s] = vals[s].load(SeqCst);
                        }
                        true
                    });
                }
                p.take(&m);
                p.drain(|r| {
                    for s in r {
                        copy[s] = vals[s].load(SeqCst);
                    }
                    true
                });
            });
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, SeqCst);
            reader.join().unwrap();
        });
        for s in 0..slots {
            assert_eq!(copy[s], vals[s].load(SeqCst), "slot {s}");
        }
    }
}
