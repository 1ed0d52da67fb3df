//! Bytes per dialog with that many dialogs actually in the table (issue 7, part 2e).
//!
//!   cargo run --release -p bench --bin memory -- DIALOGS
//!
//! Sizes the dialog table for DIALOGS as the dataplane does (`[tables] dialogs`: twice
//! the capacity rounded up to a power of two, 16-byte slots), places DIALOGS confirmed
//! dialogs through `lb::process` (INVITE, then the backend's 200 OK), checks that
//! every one is live and none was refused, and prints the table's bytes per dialog
//! and the process's resident memory before and after.

use bench::{dialog_slots, place_dialogs, proc_status_kb, Bed, SLOT_BYTES};
use std::time::Instant;

const T0: u32 = 1000;

fn main() {
    let dialogs: u32 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("DIALOGS is a number"));
    let rss_start = proc_status_kb("VmRSS");
    let bed = Bed::new(dialogs as usize);
    let rss_tables = proc_status_kb("VmRSS");
    let t = Instant::now();
    // In chunks, so the per-dialog backend list stays small.
    let chunk = 1 << 20;
    let mut first = 0;
    while first < dialogs {
        let n = chunk.min(dialogs - first);
        drop(place_dialogs(&bed, first, n, T0));
        first += n;
    }
    let secs = t.elapsed().as_secs_f64();
    let rss_full = proc_status_kb("VmRSS");
    let tables = bed.tables();
    let live = tables.dialogs.count_live(T0);
    let states = tables.dialogs.count_by_state(T0);
    let refused = bed.counters.drops.iter().map(|c| c.get()).sum::<u64>();
    assert_eq!(live, dialogs as usize, "every dialog is live");
    assert_eq!(refused, 0, "nothing dropped (a full table drops)");
    let slots = dialog_slots(dialogs as usize);
    let bytes = slots * SLOT_BYTES;
    println!(
        "dialogs {dialogs}: placed in {secs:.1} s ({:.2} M messages/s), live {live}, by state {states:?}, dropped {refused}",
        2.0 * f64::from(dialogs) / secs / 1e6
    );
    println!(
        "dialog table: {slots} slots x {SLOT_BYTES} B = {} MiB, load {:.3}, {:.1} bytes per dialog",
        bytes >> 20,
        f64::from(dialogs) / slots as f64,
        bytes as f64 / f64::from(dialogs)
    );
    println!(
        "process RSS: {} MiB at start, {} MiB with the tables allocated, {} MiB with the dialogs placed; (RSS full - start) per dialog {:.1} bytes",
        rss_start >> 10,
        rss_tables >> 10,
        rss_full >> 10,
        (rss_full - rss_start) as f64 * 1024.0 / f64::from(dialogs)
    );
    println!(
        "csv,{dialogs},{slots},{bytes},{:.2},{},{},{}",
        bytes as f64 / f64::from(dialogs),
        rss_start,
        rss_tables,
        rss_full
    );
}
