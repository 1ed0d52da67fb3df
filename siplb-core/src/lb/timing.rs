//! What operators ask of each backend first: how it answers (response classes, 503s)
//! and how fast (request → first response, INVITE → final response).
//!
//! `RequestTimes` remembers when a client's request left for its backend. It is a
//! direct-mapped table over shared memory, one `AtomicU64` per slot, keyed by the
//! transaction (Call-ID hash, CSeq number and method): the worker that forwards the
//! request stamps it, and the worker that sees the backend's answer (often another:
//! the answer is another flow) reads it. One word holds a tag (31 bits of the key),
//! whether the first answer was timed, and the send time in microseconds (a wrapping
//! u32, so times up to ~35 minutes are right), so a reader never sees half an entry.
//!
//! Races it accepts: a transaction whose slot another live transaction holds is not
//! timed (counted, `request_times_full`); a retransmitted request keeps the first
//! send's stamp; two workers that see answers of one transaction at the same instant
//! (a retransmitted response) may both time it as the first.
//!
//! Times go into `LatencyCounters`: fixed log-scale buckets per worker and backend
//! (a few instructions per answer), which the control plane merges over workers and
//! exports as Prometheus histograms.

use super::counter::Counter;
use crate::sip::Method;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The fewest slots of the table (512 KiB).
pub const REQUEST_TIME_SLOTS: usize = 1 << 16;

/// Slots of the table for a dialog table of `dialog_capacity` entries: a quarter of it
/// (INVITEs awaiting their final answer are a small part of the dialogs), a power of
/// two between 2^16 and 2^20 (8 MiB). Direct-mapped: a transaction whose slot a live one
/// holds goes untimed, so at most about live transactions / slots of them are.
pub fn request_time_slots(dialog_capacity: u64) -> usize {
    let quarter = usize::try_from(dialog_capacity / 4).unwrap_or(usize::MAX);
    quarter
        .checked_next_power_of_two()
        .unwrap_or(1 << 20)
        .clamp(REQUEST_TIME_SLOTS, 1 << 20)
}

/// A stamp older than this (RFC 3261 Timer B/F, 64×T1) belongs to a transaction that
/// ended without an answer: its slot may be taken.
const STALE_US: u32 = 32_000_000;

const ANSWERED: u64 = 1 << 32;

/// The key of a request's transaction: its Call-ID hash, CSeq number and method (a
/// CANCEL and its INVITE are two transactions).
#[inline]
pub fn transaction_key(call_key: u64, seq: u32, method: Method) -> u64 {
    let m = method as u64;
    call_key ^ ((u64::from(seq) << 8) | m).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[derive(Clone, Copy)]
pub struct RequestTimes<'m> {
    slots: &'m [AtomicU64],
}

/// How long a backend took to answer, from the request's first send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub elapsed_us: u32,
    /// The transaction's first answer timed (provisional or final).
    pub first: bool,
}

impl<'m> RequestTimes<'m> {
    /// Over `slots` (a power of two in length).
    pub fn new(slots: &'m [AtomicU64]) -> Self {
        debug_assert!(slots.len().is_power_of_two());
        Self { slots }
    }

    #[inline]
    fn slot(&self, key: u64) -> (&AtomicU64, u64) {
        let i = key as usize & (self.slots.len() - 1);
        // Never zero: an empty slot reads 0.
        let tag = ((key >> 33) | 1) << 33;
        (&self.slots[i], tag)
    }

    /// Stamps a request sent at `now_us`. Returns false when another transaction's
    /// live stamp holds the slot (the request is not timed).
    #[inline]
    pub fn sent(&self, key: u64, now_us: u32) -> bool {
        let (slot, tag) = self.slot(key);
        let old = slot.load(Relaxed);
        if old != 0 {
            if old & !(ANSWERED | u64::from(u32::MAX)) == tag {
                // A retransmission: times count from the first send.
                return true;
            }
            if now_us.wrapping_sub(old as u32) < STALE_US {
                return false;
            }
        }
        slot.store(tag | u64::from(now_us), Relaxed);
        true
    }

    /// A backend's answer at `now_us` to the transaction `key`: how long it took, if
    /// the request was stamped. A final answer frees the slot.
    #[inline]
    pub fn answered(&self, key: u64, now_us: u32, is_final: bool) -> Option<Answered> {
        let (slot, tag) = self.slot(key);
        let old = slot.load(Relaxed);
        if old & !(ANSWERED | u64::from(u32::MAX)) != tag {
            return None;
        }
        let first = old & ANSWERED == 0;
        let next = if is_final { 0 } else { old | ANSWERED };
        if next != old {
            // Another worker's answer of the same transaction won: it timed it.
            slot.compare_exchange(old, next, Relaxed, Relaxed).ok()?;
        }
        Some(Answered {
            elapsed_us: now_us.wrapping_sub(old as u32),
            first,
        })
    }
}

/// Buckets of `LatencyCounters` below the overflow: upper bounds 250 µs × 2^i, from
/// 250 µs to 32.768 s.
pub const LATENCY_BUCKETS: usize = 18;
const FIRST_BUCKET_US: u32 = 250;

/// One latency histogram of one worker: counts per log-scale bucket (the last one
/// beyond `LATENCY_BUCKETS`' bounds) and the sum, for Prometheus' `_bucket`, `_sum`
/// and `_count`.
#[derive(Default)]
#[repr(C)]
pub struct LatencyCounters {
    pub buckets: [Counter; LATENCY_BUCKETS + 1],
    pub sum_us: Counter,
}

impl LatencyCounters {
    /// The bucket of `us`: the first whose upper bound is at least `us`.
    #[inline]
    pub fn bucket(us: u32) -> usize {
        let q = us.saturating_sub(1) / FIRST_BUCKET_US;
        ((u32::BITS - q.leading_zeros()) as usize).min(LATENCY_BUCKETS)
    }

    /// The upper bound of bucket `i` in microseconds; `None` for the overflow.
    pub fn upper_us(i: usize) -> Option<u64> {
        (i < LATENCY_BUCKETS).then(|| u64::from(FIRST_BUCKET_US) << i)
    }

    #[inline]
    pub fn record(&self, us: u32) {
        self.buckets[Self::bucket(us)].inc();
        self.sum_us.add(u64::from(us));
    }
}

/// One backend's answers as one worker saw them.
#[derive(Default)]
#[repr(C)]
pub struct ResponseCounters {
    /// By class: 1xx at 0 ... 6xx at 5.
    pub classes: [Counter; 6],
    pub service_unavailable: Counter,
    /// Request → the transaction's first answer (provisional or final).
    pub first_response: LatencyCounters,
    /// INVITE → its final answer.
    pub invite_final: LatencyCounters,
}

impl ResponseCounters {
    /// Counts an answer with `code`, and its time if the request was stamped.
    #[inline]
    pub fn answer(&self, code: u16, method: Method, time: Option<Answered>) {
        if let Some(c) = self.classes.get(usize::from(code / 100).wrapping_sub(1)) {
            c.inc();
        }
        if code == 503 {
            self.service_unavailable.inc();
        }
        if let Some(t) = time {
            if t.first {
                self.first_response.record(t.elapsed_us);
            }
            if method == Method::Invite && code >= 200 {
                self.invite_final.record(t.elapsed_us);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash64;

    #[test]
    fn the_table_grows_with_the_dialog_table_within_bounds() {
        assert_eq!(request_time_slots(1024), 1 << 16);
        assert_eq!(request_time_slots(1 << 20), 1 << 18);
        assert_eq!(request_time_slots(3_000_000), 1 << 20);
        assert_eq!(request_time_slots(1 << 30), 1 << 20);
    }

    #[test]
    fn buckets_are_log_scale_and_bounded() {
        assert_eq!(LatencyCounters::bucket(0), 0);
        assert_eq!(LatencyCounters::bucket(250), 0);
        assert_eq!(LatencyCounters::bucket(251), 1);
        assert_eq!(LatencyCounters::bucket(500), 1);
        assert_eq!(LatencyCounters::bucket(501), 2);
        assert_eq!(LatencyCounters::bucket(1000), 2);
        assert_eq!(LatencyCounters::bucket(32_768_000), LATENCY_BUCKETS - 1);
        assert_eq!(LatencyCounters::bucket(32_768_001), LATENCY_BUCKETS);
        assert_eq!(LatencyCounters::bucket(u32::MAX), LATENCY_BUCKETS);
        for us in [1, 249, 250, 777, 9_999, 1_000_000, 30_000_000] {
            let i = LatencyCounters::bucket(us);
            assert!(u64::from(us) <= LatencyCounters::upper_us(i).unwrap());
            assert!(i == 0 || u64::from(us) > LatencyCounters::upper_us(i - 1).unwrap());
        }
        assert_eq!(LatencyCounters::upper_us(LATENCY_BUCKETS), None);
    }

    #[test]
    fn a_transaction_is_timed_from_its_first_send_to_its_answers() {
        let mem: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(0)).collect();
        let t = RequestTimes::new(&mem);
        let k = transaction_key(77, 1, Method::Invite);
        assert!(t.sent(k, 1_000));
        assert!(t.sent(k, 1_500), "a retransmission");
        let first = t.answered(k, 3_000, false).unwrap();
        assert_eq!(
            first,
            Answered {
                elapsed_us: 2_000,
                first: true
            }
        );
        let ringing = t.answered(k, 4_000, false).unwrap();
        assert!(!ringing.first);
        let fin = t.answered(k, 9_000, true).unwrap();
        assert_eq!(
            fin,
            Answered {
                elapsed_us: 8_000,
                first: false
            }
        );
        assert_eq!(t.answered(k, 9_500, true), None, "the slot is free");
        assert!(mem.iter().all(|s| s.load(Relaxed) == 0));
    }

    #[test]
    fn a_live_slot_is_not_taken_a_stale_one_is() {
        let mem: Vec<AtomicU64> = (0..1).map(|_| AtomicU64::new(0)).collect();
        let t = RequestTimes::new(&mem);
        let (a, b) = (
            transaction_key(hash64(b"a@x"), 1, Method::Invite),
            transaction_key(hash64(b"b@x"), 1, Method::Invite),
        );
        assert!(t.sent(a, 0));
        assert!(!t.sent(b, 10), "a's stamp is live");
        assert_eq!(t.answered(b, 20, true), None);
        assert!(t.sent(b, STALE_US + 1), "a's stamp went stale");
        assert_eq!(t.answered(b, STALE_US + 11, true).unwrap().elapsed_us, 10);
    }

    #[test]
    fn answers_are_counted_by_class_and_invites_timed_to_the_final() {
        let c = ResponseCounters::default();
        let t = |first| {
            Some(Answered {
                elapsed_us: 600,
                first,
            })
        };
        c.answer(100, Method::Invite, t(true));
        c.answer(180, Method::Invite, t(false));
        c.answer(503, Method::Invite, t(false));
        c.answer(200, Method::Options, t(true));
        c.answer(99, Method::Options, None);
        c.answer(700, Method::Options, None);
        let classes: Vec<u64> = c.classes.iter().map(Counter::get).collect();
        assert_eq!(classes, [2, 1, 0, 0, 1, 0]);
        assert_eq!(c.service_unavailable.get(), 1);
        let count = |l: &LatencyCounters| l.buckets.iter().map(Counter::get).sum::<u64>();
        assert_eq!(count(&c.first_response), 2);
        assert_eq!(c.first_response.buckets[2].get(), 2);
        assert_eq!(count(&c.invite_final), 1);
        assert_eq!(c.invite_final.sum_us.get(), 600);
    }
}
