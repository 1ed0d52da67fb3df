//! The counter every statistic of the dataplane is made of (its own module so that
//! the modules whose counters `counters.rs` gathers can use it without a cycle).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter with one writer: `add` is a relaxed load and store (a plain `add` on x86),
/// never a locked read-modify-write.
#[derive(Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline(always)]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}
