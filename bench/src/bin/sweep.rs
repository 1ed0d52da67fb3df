//! What one tick of the main lcore's table sweep costs, against the whole-table pass it
//! replaced (issue 11, item 7: the latency tail).
//!
//!   cargo run --release -p bench --bin sweep -- [DIALOGS]     (default 1000000)
//!
//! A dialog table sized as the dataplane sizes it for DIALOGS (`dialog_slots`) holds
//! DIALOGS entries whose deadlines spread over 50 s. For each step size, one `Sweep`
//! pass over it with every step timed; then the old once-a-second count
//! (`for_each_live` over the whole table) timed in one go. The main lcore may share a
//! worker's core: a packet that arrives while it runs waits that long.

use bench::{dialog_slots, SLOT_BYTES};
use siplb_core::table::{Entry, FlowTable, Slot, Sweep};
use std::time::{Duration, Instant};

const T0: u32 = 1000;

fn main() {
    let dialogs: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("DIALOGS is a number"));
    println!(
        "sweep: {dialogs} dialogs, load average {} at start",
        bench::load_average()
    );
    let slots: Vec<Slot> = (0..dialog_slots(dialogs as usize))
        .map(|_| Slot::default())
        .collect();
    let t = FlowTable::new(&slots, 16);
    let now = T0 + 25;
    let mut due = 0;
    for k in 1..=dialogs {
        due += u64::from(T0 + 1 + (k % 50) as u32 <= now);
        // Distinct, well-spread keys (the dataplane's are Call-ID hashes).
        let key = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        t.upsert(key, T0, |_| {
            Some(Entry {
                payload: 1,
                deadline: T0 + 1 + (k % 50) as u32,
            })
        })
        .expect("the table holds DIALOGS entries");
    }
    println!(
        "table {} slots ({} MiB), {} buckets of 64 bytes",
        t.capacity(),
        (t.capacity() * SLOT_BYTES) >> 20,
        t.buckets()
    );
    println!(
        "\n{:>16} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "buckets/step", "KiB", "steps", "median µs", "worst µs", "pass at 20 ms"
    );
    for per_step in [512, 1024, 2048, 4096, 8192, 16384] {
        let mut sw = Sweep::new(&t, T0);
        let mut times = Vec::new();
        let mut expired = 0;
        loop {
            let t0 = Instant::now();
            expired += sw.step(now, per_step);
            times.push(t0.elapsed());
            if !sw.in_pass() {
                break;
            }
        }
        assert_eq!(expired, due);
        assert_eq!(sw.live(), Some((dialogs - due) as usize));
        times.sort();
        println!(
            "{per_step:>16} {:>8} {:>10} {:>10.1} {:>10.1} {:>10.2} s",
            per_step * 64 / 1024,
            times.len(),
            us(times[times.len() / 2]),
            us(*times.last().unwrap()),
            times.len() as f64 * 0.02
        );
    }
    let mut whole = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut n = 0u64;
        t.for_each_live(T0, |_, e| n += u64::from(e.deadline <= now));
        whole.push(t0.elapsed());
        assert_eq!(n, due);
    }
    whole.sort();
    println!(
        "\nwhole table in one go (the old once-a-second count): median {:.0} µs, worst {:.0} µs",
        us(whole[2]),
        us(whole[4])
    );
    println!("load average {} at end", bench::load_average());
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
