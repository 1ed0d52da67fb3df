//! A bounded multi-producer, single-consumer ring of IPv4 addresses in shared memory:
//! the workers push sources the DNSBL has not judged yet, the control plane pops them.
//!
//! Protocol (D. Vyukov's bounded queue, one word per cell): `words[0]` is the
//! producers' ticket (the next position to write), `words[1]` the consumer's position,
//! and each cell holds a sequence number (upper 32 bits) and an address (lower 32).
//! Cell `p % n` is free for position `p` when its sequence is `p`; a producer that wins
//! the ticket (compare-and-swap) writes the address with sequence `p + 1`, which
//! publishes it; the consumer takes position `p` when it reads sequence `p + 1` and
//! frees the cell for position `p + n`. A producer that finds the cell of its position
//! still holding position `p - n`'s address finds the ring full and gives up: pushing
//! never waits. Sequences compare modulo 2^32, ample for a ring of far fewer cells.
//! All-zero memory is not a valid empty ring (cell `i` must hold sequence `i`): the
//! creator calls `init` once before anyone else sees the memory.

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

pub struct SourceRing<'m> {
    words: &'m [AtomicU64],
}

impl<'m> SourceRing<'m> {
    /// The words to lay out a ring of `cells` (a power of two) cells.
    pub fn words_for(cells: usize) -> usize {
        2 + cells
    }

    /// A ring over `words` (`words_for` of a power of two).
    pub fn new(words: &'m [AtomicU64]) -> SourceRing<'m> {
        debug_assert!((words.len() - 2).is_power_of_two());
        SourceRing { words }
    }

    /// Makes the memory an empty ring (its creator, before publishing it).
    pub fn init(&self) {
        self.words[0].store(0, Relaxed);
        self.words[1].store(0, Relaxed);
        for (i, c) in self.cells().iter().enumerate() {
            c.store((i as u64) << 32, Release);
        }
    }

    fn cells(&self) -> &[AtomicU64] {
        &self.words[2..]
    }

    /// Pushes `src`; false when the ring is full (the caller counts it).
    #[inline]
    pub fn push(&self, src: Ipv4Addr) -> bool {
        let cells = self.cells();
        let mask = cells.len() as u64 - 1;
        let ticket = &self.words[0];
        let mut pos = ticket.load(Relaxed);
        loop {
            let cell = &cells[(pos & mask) as usize];
            let seq = (cell.load(Acquire) >> 32) as u32;
            match seq.wrapping_sub(pos as u32) as i32 {
                0 => match ticket.compare_exchange_weak(pos, pos + 1, Relaxed, Relaxed) {
                    Ok(_) => {
                        let next = u64::from((pos as u32).wrapping_add(1));
                        cell.store(next << 32 | u64::from(u32::from(src)), Release);
                        return true;
                    }
                    Err(now) => pos = now,
                },
                d if d < 0 => return false,
                _ => pos = ticket.load(Relaxed),
            }
        }
    }

    /// Pops the oldest address (the one consumer: the control plane's DNSBL thread).
    pub fn pop(&self) -> Option<Ipv4Addr> {
        let cells = self.cells();
        let pos = self.words[1].load(Relaxed);
        let cell = &cells[(pos as usize) & (cells.len() - 1)];
        let v = cell.load(Acquire);
        if (v >> 32) as u32 != (pos as u32).wrapping_add(1) {
            return None;
        }
        let free = u64::from((pos as u32).wrapping_add(cells.len() as u32));
        cell.store(free << 32, Release);
        self.words[1].store(pos + 1, Relaxed);
        Some(Ipv4Addr::from(v as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn memory(cells: usize) -> Vec<AtomicU64> {
        (0..SourceRing::words_for(cells))
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    #[test]
    fn fifo_full_and_wraps() {
        let m = memory(4);
        let r = SourceRing::new(&m);
        r.init();
        assert_eq!(r.pop(), None);
        for round in 0..10u32 {
            for i in 0..4 {
                assert!(r.push(Ipv4Addr::from(round * 10 + i)));
            }
            assert!(!r.push(Ipv4Addr::from(99)), "full");
            for i in 0..4 {
                assert_eq!(r.pop(), Some(Ipv4Addr::from(round * 10 + i)));
            }
            assert_eq!(r.pop(), None);
        }
    }

    #[test]
    fn producers_on_threads_lose_nothing_they_were_told_was_pushed() {
        let m: Arc<Vec<AtomicU64>> = Arc::new(memory(64));
        SourceRing::new(&m).init();
        let pushed: Vec<_> = (0..4u32)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let r = SourceRing::new(&m);
                    (0..1000u32)
                        .filter(|i| r.push(Ipv4Addr::from(t << 16 | i)))
                        .count()
                })
            })
            .collect();
        let r = SourceRing::new(&m);
        let mut got = Vec::new();
        let mut done = false;
        while !done {
            done = pushed.iter().all(|h| h.is_finished());
            while let Some(a) = r.pop() {
                got.push(u32::from(a));
            }
        }
        let n: usize = pushed.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(got.len(), n);
        // Each producer's addresses come out in its order.
        for t in 0..4u32 {
            let mine: Vec<u32> = got.iter().filter(|a| *a >> 16 == t).copied().collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{t}");
        }
        assert!(n >= 64, "{n}: an empty ring takes its capacity");
    }
}
