//! What one HA sync pass costs to find what changed, with the dataplane's dirty marks
//! against the whole-table scan they replaced (issue 13: a bounded cost per change).
//!
//!   cargo run --release -p bench --bin ha_sync -- [DIALOGS] [CHANGES]
//!                                                  (default 1000000 and 100)
//!
//! A dialog table sized as the dataplane sizes it for DIALOGS holds DIALOGS entries,
//! and a first pass has queued them all (a resync). Then, per round, CHANGES entries
//! change (the new and advanced dialogs of one `sync_ms` at a few thousand calls/s)
//! and one pass collects them, through `Changes::collect` as the HA thread does: once
//! with the marks (reads only the marked groups), once without (reads every slot:
//! the old pass). Both must find the same CHANGES entries; the times are medians of
//! 50 rounds each, measured in the same run.

use bench::dialog_slots;
use siplb_core::table::{Changes, DirtyMarks, Entry, FlowTable, Slot};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const ROUNDS: usize = 50;

fn key(k: u64) -> u64 {
    k.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// One pass: collects what changed; returns (entries queued, time taken).
fn pass(c: &mut Changes<(u64, u64)>, t: &FlowTable<'_>, marks: bool) -> (usize, Duration) {
    let start = Instant::now();
    let mut budget = usize::MAX;
    let mut n = 0;
    let marks = if marks { t.dirty() } else { &DirtyMarks::NONE };
    c.collect(marks, &mut budget, 1, |r, take| {
        t.for_each_slot_in(r, |i, k, v| {
            n += usize::from(take(i, (k, v)));
        })
    });
    (n, start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dialogs: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("DIALOGS is a number"));
    let changes: u64 = args
        .next()
        .map_or(100, |a| a.parse().expect("CHANGES is a number"));
    let n_slots = dialog_slots(dialogs as usize);
    println!(
        "ha_sync: {dialogs} dialogs in {n_slots} slots, {changes} changes per pass, load average {} at start",
        bench::load_average()
    );
    let slots: Vec<Slot> = (0..n_slots).map(|_| Slot::default()).collect();
    let words: Vec<AtomicU64> = (0..DirtyMarks::words_for(n_slots))
        .map(|_| AtomicU64::new(0))
        .collect();
    let t = FlowTable::new(&slots, 16).with_dirty(DirtyMarks::new(&words));
    for k in 1..=dialogs {
        t.upsert(key(k), 0, |_| {
            Some(Entry {
                payload: 1,
                deadline: 100,
            })
        })
        .expect("table sized for the dialogs");
    }
    let mut with_marks = Changes::new(n_slots);
    let mut whole = Changes::new(n_slots);
    let (first, _) = pass(&mut with_marks, &t, true);
    let (first_whole, _) = pass(&mut whole, &t, false);
    assert_eq!((first, first_whole), (dialogs as usize, dialogs as usize));
    let (mut marked, mut scanned) = (Vec::new(), Vec::new());
    let mut next = 1u64;
    for round in 0..2 * ROUNDS {
        // A new payload per round: every entry written changes.
        let payload = 2 + round as u32;
        for _ in 0..changes {
            t.upsert(key(next), 0, |_| {
                Some(Entry {
                    payload,
                    deadline: 100,
                })
            })
            .unwrap();
            next = next % dialogs + 1;
        }
        // Alternate which goes first, so neither always finds the lines warm.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for m in order {
            let (n, d) = if m {
                pass(&mut with_marks, &t, true)
            } else {
                pass(&mut whole, &t, false)
            };
            assert_eq!(n, changes as usize, "every change found once");
            if m {
                marked.push(d);
            } else {
                scanned.push(d);
            }
        }
    }
    let read_marked = with_marks.read - n_slots as u64;
    let read_whole = whole.read - n_slots as u64;
    let (m, s) = (median(marked), median(scanned));
    println!(
        "  with dirty marks: {:>10.1} µs per pass, {:>9.0} slots read per pass",
        m.as_secs_f64() * 1e6,
        read_marked as f64 / (2 * ROUNDS) as f64
    );
    println!(
        "  whole-table scan: {:>10.1} µs per pass, {:>9.0} slots read per pass",
        s.as_secs_f64() * 1e6,
        read_whole as f64 / (2 * ROUNDS) as f64
    );
    println!(
        "  ratio (scan / marks): {:.0}x; per change with marks: {:.2} µs",
        s.as_secs_f64() / m.as_secs_f64(),
        m.as_secs_f64() * 1e6 / changes as f64
    );
}
