//! Source lists at scale (issue 14 item 3): the DIR-24-8 `PrefixSet` against the
//! binary searches it replaced, with 1 M random prefixes, same run.
//!
//!   cargo run --release -p bench --bin lpm [-- PREFIXES [LOOKUPS]]
//!
//! Prints, for the empty set, the old sets and the new one:
//! - ns per lookup of independent addresses (as the packets of a burst: the CPU
//!   overlaps their cache misses), random ones and ones inside listed prefixes;
//! - build time and memory of 1 M prefixes;
//! - what the prefixes weigh on the way from the control plane: JSON inside the
//!   desired state against the binary file the dataplane reads (encode, decode);
//! - a reload: a worker thread looks up bursts of 32 while the main thread builds a
//!   new 1 M set aside and swaps it in (epoch reclamation as the dataplane's `rcu`):
//!   the worker's largest gap between bursts, with and without the reload.

use siplb_core::config::Ipv4Net;
use siplb_core::lb::security::PrefixSet;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// The sets this replaced: one binary search per prefix length in use.
struct OldSet {
    by_len: Vec<(u32, Vec<u32>)>,
}

impl OldSet {
    fn new(prefixes: &[Ipv4Net]) -> Self {
        let mut by_len: Vec<(u32, Vec<u32>)> = Vec::new();
        for p in prefixes {
            let net = u32::from(p.addr) & p.mask();
            match by_len.iter_mut().find(|(m, _)| *m == p.mask()) {
                Some((_, v)) => v.push(net),
                None => by_len.push((p.mask(), vec![net])),
            }
        }
        for (_, v) in &mut by_len {
            v.sort_unstable();
            v.dedup();
        }
        by_len.sort_by_key(|(m, _)| std::cmp::Reverse(*m));
        Self { by_len }
    }

    #[inline]
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.by_len
            .iter()
            .any(|(mask, nets)| nets.binary_search(&(a & mask)).is_ok())
    }
}

/// xorshift64*: reproducible random numbers without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

/// A blocklist's mix: 70 % single addresses, 20 % /24s, 10 % anything /20 to /31
/// (together about 2 % of the address space).
fn random_prefixes(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| {
            let len = match r.next() % 10 {
                0..=6 => 32,
                7 | 8 => 24,
                _ => 20 + (r.next() % 12) as u8,
            };
            Ipv4Net {
                addr: Ipv4Addr::from(r.next()),
                len,
            }
        })
        .collect()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// ns per lookup.
fn time(addrs: &[u32], contains: impl Fn(Ipv4Addr) -> bool) -> f64 {
    let t = Instant::now();
    let mut hits = 0u32;
    for &a in addrs {
        hits += u32::from(contains(Ipv4Addr::from(a)));
    }
    black_box(hits);
    t.elapsed().as_nanos() as f64 / addrs.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What the worker saw in a phase: bursts, gaps between bursts over 100 us, the
/// largest gap.
struct Gaps {
    bursts: u64,
    over_100us: u64,
    largest: Duration,
}

/// A worker's bursts against a set published through an epoch, as the dataplane's
/// `rcu::Published`, for 2 s while `work` runs on this thread (the main lcore).
fn gaps(first: PrefixSet, addrs: &[u32], work: impl FnOnce(&dyn Fn(PrefixSet))) -> Gaps {
    let current = AtomicPtr::new(Box::into_raw(Box::new(first)));
    let epoch = AtomicU64::new(1);
    let seen = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let g = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut g = Gaps {
                bursts: 0,
                over_100us: 0,
                largest: Duration::ZERO,
            };
            let mut last = Instant::now();
            let mut i = 0;
            while !stop.load(SeqCst) {
                seen.store(epoch.load(SeqCst), SeqCst);
                // SAFETY: freed only after this thread announced a later epoch.
                let set = unsafe { &*current.load(SeqCst) };
                let mut hits = 0;
                for _ in 0..32 {
                    hits += u32::from(set.contains(Ipv4Addr::from(addrs[i % addrs.len()])));
                    i += 1;
                }
                black_box(hits);
                let now = Instant::now();
                let gap = now - last;
                g.bursts += 1;
                g.over_100us += u64::from(gap > Duration::from_micros(100));
                g.largest = g.largest.max(gap);
                last = now;
            }
            g
        });
        std::thread::sleep(Duration::from_millis(200));
        work(&|new: PrefixSet| {
            let old = current.swap(Box::into_raw(Box::new(new)), SeqCst);
            let e = epoch.fetch_add(1, SeqCst) + 1;
            while seen.load(SeqCst) < e {
                std::hint::spin_loop();
            }
            // SAFETY: swapped out and the worker has moved past it.
            drop(unsafe { Box::from_raw(old) });
        });
        std::thread::sleep(Duration::from_secs(2).saturating_sub(start.elapsed()));
        stop.store(true, SeqCst);
        worker.join().expect("worker")
    });
    // SAFETY: the worker has stopped.
    drop(unsafe { Box::from_raw(current.load(SeqCst)) });
    g
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("PREFIXES [LOOKUPS]: numbers"))
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let lookups = args.get(1).copied().unwrap_or(2_000_000);
    let prefixes = random_prefixes(n, 0x5eed);
    println!("{n} random prefixes (70 % /32, 20 % /24, 10 % /20../31), {lookups} lookups a pass, medians of 5");

    let rss0 = rss_kib();
    let t = Instant::now();
    let new = PrefixSet::new(&prefixes);
    let build_new = t.elapsed();
    let rss_new = rss_kib() - rss0;
    let t = Instant::now();
    let old = OldSet::new(&prefixes);
    let build_old = t.elapsed();
    println!(
        "build: new {:.0} ms ({} distinct prefixes, {:.1} MiB: 64 MiB top table + 32 B a /24 with longer prefixes; RSS +{:.1} MiB), old {:.0} ms ({} lengths)",
        build_new.as_secs_f64() * 1e3,
        new.len(),
        new.memory_bytes() as f64 / 1048576.0,
        rss_new as f64 / 1024.0,
        build_old.as_secs_f64() * 1e3,
        old.by_len.len()
    );

    let mut r = Rng(0xadd);
    let random: Vec<u32> = (0..lookups).map(|_| r.next()).collect();
    let listed: Vec<u32> = (0..lookups)
        .map(|_| {
            let p = prefixes[r.next() as usize % prefixes.len()];
            (u32::from(p.addr) & p.mask()) | (r.next() & !p.mask())
        })
        .collect();
    let empty = PrefixSet::default();
    for (what, addrs) in [("random sources", &random), ("listed sources", &listed)] {
        let mut rows: [Vec<f64>; 3] = Default::default();
        for _ in 0..5 {
            rows[0].push(time(addrs, |a| empty.contains(a)));
            // A tenth of the addresses: the old sets are slow.
            rows[1].push(time(&addrs[..addrs.len() / 10], |a| old.contains(a)));
            rows[2].push(time(addrs, |a| new.contains(a)));
        }
        let [e, o, w] = rows.map(median);
        println!("{what}: ns/lookup");
        println!("  empty set (no lookup)  {e:8.2}");
        println!("  old binary searches    {o:8.2}");
        println!("  DIR-24-8               {w:8.2}   new/old {:.4}", w / o);
        let some = &addrs[..addrs.len() / 10];
        let hits = some
            .iter()
            .filter(|&&a| new.contains(Ipv4Addr::from(a)))
            .count();
        assert_eq!(
            hits,
            some.iter()
                .filter(|&&a| old.contains(Ipv4Addr::from(a)))
                .count(),
            "the two sets disagree"
        );
        println!(
            "  ({:.1} % of them listed)",
            hits as f64 * 100.0 / some.len() as f64
        );
    }

    // The way there: JSON strings in the desired state against 8 bytes a prefix.
    let t = Instant::now();
    let json = serde_json::to_vec(&prefixes).expect("prefixes serialise");
    let enc = t.elapsed();
    let t = Instant::now();
    let back: Vec<Ipv4Net> = serde_json::from_slice(&json).expect("prefixes parse");
    let dec = t.elapsed();
    assert_eq!(back.len(), n);
    let t = Instant::now();
    let bin: Vec<u8> = prefixes
        .iter()
        .flat_map(|p| {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&p.addr.octets());
            b[4] = p.len;
            b
        })
        .collect();
    let benc = t.elapsed();
    let t = Instant::now();
    let bback: Vec<Ipv4Net> = bin
        .chunks_exact(8)
        .map(|c| Ipv4Net {
            addr: Ipv4Addr::new(c[0], c[1], c[2], c[3]),
            len: c[4],
        })
        .collect();
    let bdec = t.elapsed();
    assert_eq!(bback, prefixes);
    println!(
        "transport: JSON {:.1} MB (encode {:.0} ms, decode {:.0} ms; the control channel takes 16 MiB a message), binary {:.1} MB (encode {:.0} ms, decode {:.0} ms)",
        json.len() as f64 / 1e6,
        enc.as_secs_f64() * 1e3,
        dec.as_secs_f64() * 1e3,
        bin.len() as f64 / 1e6,
        benc.as_secs_f64() * 1e3,
        bdec.as_secs_f64() * 1e3
    );

    // A reload while a worker looks up: the build runs on this thread, the worker
    // only sees the pointer change.
    let quiet = gaps(new.clone(), &random, |_| {});
    let other = random_prefixes(n, 0x5eed + 1);
    let reload = gaps(new.clone(), &random, |swap| {
        let t = Instant::now();
        let s = PrefixSet::new(&other);
        let built = t.elapsed();
        swap(s);
        println!(
            "reload: built aside in {:.0} ms, swapped and the old one freed in {:.1} ms",
            built.as_secs_f64() * 1e3,
            (t.elapsed() - built).as_secs_f64() * 1e3
        );
    });
    for (what, g) in [("quiet", quiet), ("across the reload", reload)] {
        println!(
            "worker, 2 s {what}: {} bursts of 32, {} gaps over 100 us, largest {:.1} us",
            g.bursts,
            g.over_100us,
            g.largest.as_secs_f64() * 1e6
        );
    }
}
