//! Publication of read-mostly state to workers without locks (quiescent-state-based
//! reclamation). The main lcore swaps in a new `T` whole; each worker announces, once
//! per poll loop, that it holds no reference from before; an old `T` is freed when every
//! worker has announced since it was replaced.
//!
//! Readers pay two loads and a store per poll loop, not per packet.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;

/// A worker that will never read again (exited) announces this.
const OFFLINE: u64 = u64::MAX;

#[repr(align(64))]
struct ReaderEpoch(AtomicU64);

pub struct Published<T> {
    current: AtomicPtr<T>,
    epoch: AtomicU64,
    readers: Box<[ReaderEpoch]>,
    retired: Mutex<Vec<(u64, Box<T>)>>,
}

// SAFETY: `T` values are shared read-only between threads (`T: Sync`) and moved to
// the thread that frees them (`T: Send`).
unsafe impl<T: Send + Sync> Sync for Published<T> {}
unsafe impl<T: Send + Sync> Send for Published<T> {}

impl<T> Published<T> {
    pub fn new(value: T, readers: usize) -> Self {
        Self {
            current: AtomicPtr::new(Box::into_raw(Box::new(value))),
            epoch: AtomicU64::new(1),
            readers: (0..readers)
                .map(|_| ReaderEpoch(AtomicU64::new(0)))
                .collect(),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Called by reader `i` at a quiescent point (no reference obtained earlier is used
    /// after this call); returns the current value, valid until the next `read(i)` or
    /// `offline(i)` by the same reader.
    #[inline]
    pub fn read(&self, i: usize) -> &T {
        let e = self.epoch.load(SeqCst);
        self.readers[i].0.store(e, SeqCst);
        // SAFETY: the pointer was published by `new`/`publish` from a live Box and is
        // freed only after every reader announced an epoch >= the one at which it was
        // retired; this reader's announcement above precedes this load, so a swap that
        // retires this value happens-after and must wait for our next announcement.
        unsafe { &*self.current.load(SeqCst) }
    }

    /// The reader `i` stops reading for good.
    pub fn offline(&self, i: usize) {
        self.readers[i].0.store(OFFLINE, SeqCst);
    }

    /// Replaces the value; the old one is freed once no reader can hold it.
    pub fn publish(&self, value: T) {
        let old = self.current.swap(Box::into_raw(Box::new(value)), SeqCst);
        let e = self.epoch.fetch_add(1, SeqCst) + 1;
        // SAFETY: `old` came from Box::into_raw and is no longer reachable through
        // `current`; we own it now.
        let old = unsafe { Box::from_raw(old) };
        let mut r = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        r.push((e, old));
        drop(r);
        self.reclaim();
    }

    /// Frees retired values every reader has moved past. Returns how many remain.
    pub fn reclaim(&self) -> usize {
        let min = self
            .readers
            .iter()
            .map(|r| r.0.load(SeqCst))
            .min()
            .unwrap_or(OFFLINE);
        let mut r = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        r.retain(|(e, _)| *e > min);
        r.len()
    }
}

impl<T> Drop for Published<T> {
    fn drop(&mut self) {
        // SAFETY: &mut self: no reader or writer remains.
        drop(unsafe { Box::from_raw(*self.current.get_mut()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Tracked(u64, Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn old_values_wait_for_every_reader() {
        let freed = Arc::new(AtomicUsize::new(0));
        let p = Published::new(Tracked(1, freed.clone()), 2);
        assert_eq!(p.read(0).0, 1);
        assert_eq!(p.read(1).0, 1);
        p.publish(Tracked(2, freed.clone()));
        assert_eq!(freed.load(SeqCst), 0, "readers may still hold value 1");
        assert_eq!(p.read(0).0, 2);
        assert_eq!(p.reclaim(), 1, "reader 1 has not moved on");
        p.offline(1);
        assert_eq!(p.reclaim(), 0);
        assert_eq!(freed.load(SeqCst), 1);
    }

    #[test]
    fn readers_never_see_freed_values_under_churn() {
        let freed = Arc::new(AtomicUsize::new(0));
        let p = Arc::new(Published::new(Tracked(0, freed.clone()), 2));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|i| {
                let (p, stop) = (p.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut last = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let v = p.read(i);
                        // Values only grow; a freed value would read garbage here under
                        // Miri/ASan, and its counter would be out of order.
                        assert!(v.0 >= last);
                        last = v.0;
                    }
                    p.offline(i);
                })
            })
            .collect();
        for n in 1..2000 {
            p.publish(Tracked(n, freed.clone()));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(p.reclaim(), 0);
        assert_eq!(freed.load(SeqCst), 1999);
    }
}
