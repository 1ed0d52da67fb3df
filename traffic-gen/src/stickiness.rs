//! The responder's check that the balancer keeps a dialog on one backend: per Call-ID
//! hash, the backend that saw it first, and the Call-IDs later seen at another one.
//!
//! A fixed table allocated once: 4-way buckets, and when a bucket is full the oldest
//! call is forgotten (calls end; the table only has to outlive the calls in flight).
//! Keys are full 64-bit hashes, so a forgotten call can hide a split but never invent
//! one.

const WAYS: usize = 4;

#[derive(Clone, Copy, Default)]
struct Entry {
    key: u64,
    backend: u16,
    split: bool,
    /// Insertion order, to evict the oldest of a full bucket.
    stamp: u32,
}

pub struct Stickiness {
    entries: Vec<Entry>,
    mask: usize,
    clock: u32,
    /// Call-IDs seen at more than one backend.
    pub split_dialogs: u64,
    /// Messages that arrived at a backend other than their Call-ID's first one.
    pub split_messages: u64,
    /// Call-IDs recorded (first sightings).
    pub call_ids: u64,
}

impl Stickiness {
    /// Room for about `capacity` calls (rounded up to a power of two of buckets).
    pub fn new(capacity: usize) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Stickiness {
            entries: vec![Entry::default(); buckets * WAYS],
            mask: buckets - 1,
            clock: 0,
            split_dialogs: 0,
            split_messages: 0,
            call_ids: 0,
        }
    }

    /// Records that a message of the Call-ID with hash `key` (never 0) reached
    /// `backend`; returns false if that is not the Call-ID's first backend.
    pub fn record(&mut self, key: u64, backend: u16) -> bool {
        let b = (key as usize & self.mask) * WAYS;
        self.clock = self.clock.wrapping_add(1);
        let bucket = &mut self.entries[b..b + WAYS];
        if let Some(e) = bucket.iter_mut().find(|e| e.key == key) {
            if e.backend == backend {
                return true;
            }
            self.split_messages += 1;
            if !e.split {
                e.split = true;
                self.split_dialogs += 1;
            }
            return false;
        }
        let clock = self.clock;
        let victim = bucket
            .iter_mut()
            .min_by_key(|e| match e.key {
                0 => (0u8, 0u32),
                _ => (1, u32::MAX - clock.wrapping_sub(e.stamp)),
            })
            .expect("WAYS > 0");
        *victim = Entry {
            key,
            backend,
            split: false,
            stamp: clock,
        };
        self.call_ids += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_id_at_two_backends_is_one_split_dialog() {
        let mut s = Stickiness::new(64);
        assert!(s.record(11, 0));
        assert!(s.record(11, 0));
        assert!(s.record(12, 1));
        assert!(!s.record(11, 2));
        assert!(!s.record(11, 1));
        assert_eq!((s.split_dialogs, s.split_messages, s.call_ids), (1, 2, 2));
    }

    #[test]
    fn a_full_bucket_forgets_its_oldest_call() {
        let mut s = Stickiness::new(4); // one bucket
        for k in 1..=4 {
            s.record(k, 0);
        }
        s.record(1, 0); // a sighting does not refresh: 1 is still the oldest insert
        s.record(5, 1); // evicts 1
        assert!(s.record(2, 0) && s.record(5, 1));
        // 1 was forgotten: seen again elsewhere it counts as a new call, not a split.
        assert!(s.record(1, 3));
        assert_eq!(s.split_dialogs, 0);
        assert_eq!(s.call_ids, 6);
    }
}
