//! `Sweep`: a pass over a whole table spread over many short steps, for housekeeping
//! that counts expiries and live entries without holding a core for a whole-table scan.
//! The dataplane's main lcore may share a worker's core, and a packet that arrives
//! while it scans 2^21 slots (32 MiB, milliseconds) waits until the scan ends.
//!
//! A pass visits every unit of the table (a `FlowTable` bucket, a SNAT port) once, at
//! most `max_units` per step, and counts as expired the entries whose deadline lies in
//! the pass's window `(from, to]`: `to` is the clock when the pass began, `from` the
//! previous pass's `to`. The windows of successive passes tile time, so a deadline lies
//! in exactly one of them, and entries never move between units, so each expiry is
//! counted at most once: by the pass whose window holds its deadline, when that pass
//! reaches the entry's unit. A pass begins only after the clock passed the last one's
//! `to`, so every deadline in its window has passed when any unit is visited.
//!
//! What is not counted, as with the whole-table pass this replaces (which ran once a
//! second, with the window since the previous second): an entry removed (deadline 0);
//! one written with a deadline that had already passed when its unit was visited; one
//! revived (a later deadline) or whose slot went to another key after it expired but
//! before the pass reached it. A live entry whose deadline moves forward mid-pass, on
//! either side of the cursor, is counted once, at the deadline it finally keeps.

use std::ops::Range;

/// What a step found in the units it visited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Entries whose deadline lies in the window asked for.
    pub expired: u64,
    /// Entries live at the step's clock.
    pub live: usize,
}

/// A table a `Sweep` walks a few units at a time.
pub trait Sweepable {
    /// Units in the table (the sweep's cursor runs over `0..units()`).
    fn units(&self) -> usize;
    /// Over the units `range`: entries whose deadline lies in `(expired_in.0,
    /// expired_in.1]`, and entries live at `now`. Visits only those units.
    fn tally(&self, range: Range<usize>, expired_in: (u32, u32), now: u32) -> Tally;
}

/// Where the passes over one table stand.
pub struct Sweep<'t, T: Sweepable> {
    table: &'t T,
    /// Next unit of the pass in progress; `table.units()` when none is in progress.
    next: usize,
    /// Deadlines counted as expired by the pass in progress: `(from, to]`.
    from: u32,
    to: u32,
    /// Live entries the pass in progress has seen so far.
    live: usize,
    /// Live entries the last complete pass saw.
    last_live: Option<usize>,
}

impl<'t, T: Sweepable> Sweep<'t, T> {
    /// A sweep of `table` that counts the expiries of deadlines after `now`.
    pub fn new(table: &'t T, now: u32) -> Self {
        Self {
            table,
            next: table.units(),
            from: now,
            to: now,
            live: 0,
            last_live: None,
        }
    }

    /// Visits the next `max_units` units (at least one) of the pass in progress, or
    /// begins a pass when the last one is done and the clock moved past its window.
    /// Returns the expiries counted.
    pub fn step(&mut self, now: u32, max_units: usize) -> u64 {
        let units = self.table.units();
        if self.next >= units {
            if now <= self.to {
                return 0;
            }
            (self.from, self.to) = (self.to, now);
            self.next = 0;
            self.live = 0;
        }
        let end = units.min(self.next + max_units.max(1));
        let t = self.table.tally(self.next..end, (self.from, self.to), now);
        self.next = end;
        self.live += t.live;
        if end == units {
            self.last_live = Some(self.live);
        }
        t.expired
    }

    /// Live entries as the last complete pass counted them (each unit at the clock of
    /// its visit); `None` before the first pass ends.
    pub fn live(&self) -> Option<usize> {
        self.last_live
    }

    /// Whether a pass is in progress.
    pub fn in_pass(&self) -> bool {
        self.next < self.table.units()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash64;
    use crate::table::flow::{Entry, FlowTable, Slot};
    use std::collections::HashMap;

    fn slots(n: usize) -> Vec<Slot> {
        (0..n).map(|_| Slot::default()).collect()
    }

    fn put(t: &FlowTable, key: u64, now: u32, deadline: u32) {
        t.upsert(key, now, |_| {
            Some(Entry {
                payload: 1,
                deadline,
            })
        })
        .unwrap();
    }

    /// The old whole-table count of one second: deadlines in `(from, to]`.
    fn whole_pass(t: &FlowTable, from: u32, to: u32) -> u64 {
        let mut n = 0;
        t.for_each_live(from, |_, e| n += u64::from(e.deadline <= to));
        n
    }

    #[test]
    fn a_step_visits_at_most_its_bound_and_a_pass_covers_the_table() {
        let s = slots(64); // 16 buckets
        let t = FlowTable::new(&s, 4);
        for k in 1..=40u64 {
            put(&t, hash64(&k.to_le_bytes()), 100, 105);
        }
        let mut sw = Sweep::new(&t, 100);
        assert_eq!(sw.step(100, 3), 0, "the clock has not moved: no pass");
        assert!(!sw.in_pass());
        let mut steps = 0;
        let mut expired = 0;
        sw.step(101, 3);
        steps += 1;
        while sw.in_pass() {
            expired += sw.step(101, 3);
            steps += 1;
        }
        assert_eq!(steps, 6, "16 buckets, 3 per step");
        assert_eq!(expired, 0);
        assert_eq!(sw.live(), Some(40));
        // All 40 expire at 105: the pass that begins at 106 counts them, once.
        let mut total = 0;
        for now in 102..=110 {
            for _ in 0..6 {
                total += sw.step(now, 3);
            }
        }
        assert_eq!(total, 40);
        assert_eq!(sw.live(), Some(0));
    }

    #[test]
    fn a_pass_longer_than_a_second_counts_every_expiry_once() {
        // Two buckets per step and one step per second over 256 buckets: each pass
        // spans 128 seconds, while entries expire every second.
        let s = slots(1024);
        let t = FlowTable::new(&s, 16);
        let mut sw = Sweep::new(&t, 1000);
        for k in 1..=300u64 {
            put(
                &t,
                hash64(&k.to_le_bytes()),
                1000,
                1000 + (k as u32 % 250) + 1,
            );
        }
        let mut total = 0;
        for now in 1001..1600 {
            total += sw.step(now, 2);
        }
        assert_eq!(total, 300);
    }

    /// Random traffic against an oracle that knows each expiry: entries extended while
    /// live (revived mid-pass, on either side of the cursor), removed, and created again
    /// under the same key once their expiry had been counted; passes that take several
    /// seconds, several steps per second. Every key is inserted first, so each keeps its
    /// slot (a new key may take an expired slot, and that expiry is then not counted).
    #[test]
    fn every_expiry_is_counted_exactly_once_across_steps() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for (table_slots, per_step, steps_per_s) in [(256, 1, 3), (1024, 5, 2), (4096, 64, 4)] {
            let s = slots(table_slots);
            let t = FlowTable::new(&s, 16);
            let buckets = table_slots / 4;
            let start = 10_000u32;
            let mut sw = Sweep::new(&t, start);
            let pass_s = buckets.div_ceil(per_step * steps_per_s) as u32 + 1;
            // An expiry is counted at most two passes after its deadline.
            let counted_by = 2 * pass_s + 1;
            let quiet = 21 + counted_by;
            let end = start + 8 * pass_s + quiet + 40;
            // key -> (deadline, removed)
            let mut model: HashMap<u64, (u32, bool)> = HashMap::new();
            for i in 1..=(table_slots / 4) as u64 {
                let k = hash64(&i.to_le_bytes());
                let d = start + 1 + rand(20) as u32;
                put(&t, k, start, d);
                model.insert(k, (d, false));
            }
            let keys: Vec<u64> = model.keys().copied().collect();
            let (mut oracle, mut counted, mut revived_live) = (0u64, 0u64, 0u64);
            for now in start + 1..end {
                oracle += model
                    .values()
                    .filter(|(d, removed)| *d == now && !removed)
                    .count() as u64;
                for _ in 0..steps_per_s {
                    counted += sw.step(now, per_step);
                    if now + quiet >= end {
                        continue; // let everything expire and be counted
                    }
                    for _ in 0..4 {
                        let k = keys[rand(keys.len() as u64) as usize];
                        let nd = now + 1 + rand(20) as u32;
                        match model[&k] {
                            (d, false) if d > now && rand(8) == 0 => {
                                t.remove(k, now);
                                model.insert(k, (d, true));
                            }
                            (d, false) if d > now => {
                                put(&t, k, now, nd.max(d));
                                model.insert(k, (nd.max(d), false));
                                revived_live += 1;
                            }
                            (d, _) if now < d + counted_by => {}
                            _ => {
                                put(&t, k, now, nd);
                                model.insert(k, (nd, false));
                            }
                        }
                    }
                }
            }
            assert!(
                oracle > 100 && revived_live > 100,
                "{oracle} {revived_live}"
            );
            assert!(model.values().all(|(d, _)| *d < end - 1));
            assert_eq!(
                counted, oracle,
                "{table_slots} slots, {per_step} buckets per step, {steps_per_s} steps/s"
            );
        }
    }

    #[test]
    fn counts_match_the_whole_table_pass_it_replaces() {
        let s = slots(1 << 12);
        let t = FlowTable::new(&s, 16);
        let mut sw = Sweep::new(&t, 500);
        let (mut chunked, mut whole) = (0, 0);
        for now in 501..600u32 {
            for i in 0..20u64 {
                let k = hash64(&(u64::from(now) * 100 + i).to_le_bytes());
                put(&t, k, now, now + 1 + (i as u32 % 7));
            }
            whole += whole_pass(&t, now - 1, now);
            // 1024 buckets in 4 steps of 256: one pass a second.
            for _ in 0..4 {
                chunked += sw.step(now, 256);
            }
        }
        assert!(whole > 1000);
        assert_eq!(chunked, whole);
    }
}
