//! The requests `lb::failover` holds until their final answer.
//!
//! `HeldStore` is a direct-mapped, 4-way table over shared memory, keyed by the
//! transaction (`timing::transaction_key`): the worker that forwards the request holds
//! it, and the worker that sees the answer (usually another: the answer is another
//! flow) or the first worker whose timeout scan finds it due acts on it. A slot's
//! state word is its owner's licence: `READY` (held, waiting) or `BUSY` (one worker
//! reads or writes the body); the body is touched only under `BUSY`, taken by a CAS
//! (Acquire) and given back by a store (Release). A slot's body is a plain struct in shared memory (no atomics): `Ticket`, which only
//! the worker that won the CAS has, is the proof that it may be touched.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering::*};

/// Backends one call may try, the first included (`[farm.failover] tries`).
pub const MAX_TRIES: usize = 8;
/// The largest request held (its whole frame); a larger one goes without failover.
pub const HELD_BYTES: usize = 3648;
/// Room for the Request-URI as sent to the backend (for the ACK of its failure).
pub(super) const RURI_BYTES: usize = 256;
/// A held request nobody answered is forgotten after a client's INVITE timeout
/// (64×T1); one that got a provisional answer, after Timer C (3 minutes).
const UNANSWERED_MS: u64 = 32_000;
pub(super) const ANSWERED_MS: u64 = 180_000;
/// Slots looked at per timeout scan (each worker loop).
pub(super) const SCAN_PER_POLL: usize = 64;

const READY: u64 = 1;
const BUSY: u64 = 2;
const STATE: u64 = 0xff;

/// What one held request keeps besides its state.
#[repr(C)]
pub struct HeldBody {
    pub(super) len: u16,
    pub(super) in_port: u8,
    pub(super) farm: u8,
    pub(super) tries: u8,
    pub(super) register: bool,
    /// The next backend's count unit was taken for the re-send and is not yet held
    /// by its dialog.
    pub(super) unit_pending: bool,
    pub(super) ruri_len: u16,
    /// Backend slot that has the request now, and the one it goes to next.
    pub(super) current: u16,
    pub(super) next: u16,
    pub(super) tried: [u16; MAX_TRIES],
    /// What placed it: the Call-ID's hash (INVITE) or the AOR's (REGISTER).
    pub(super) key: u64,
    pub(super) ruri: [u8; RURI_BYTES],
    pub(super) frame: [u8; HELD_BYTES],
}

/// One held request: 4 KiB.
#[repr(C, align(64))]
pub struct HeldSlot {
    /// 0: free; else the transaction's tag (its key without the low byte) and
    /// `READY` or `BUSY`.
    state: AtomicU64,
    /// When the request goes on unanswered (`Clock::millis`); 0: answered or done.
    pub(super) due_ms: AtomicU64,
    /// When a `READY` slot may be taken by another transaction.
    pub(super) expires_ms: AtomicU64,
    /// The caller sent CANCEL: no failover any more.
    pub(super) cancelled: AtomicU64,
    body: UnsafeCell<HeldBody>,
}

// SAFETY: the body is only read or written by the worker that moved `state` to BUSY
// (CAS, Acquire) until it stores READY or 0 (Release); the rest are atomics.
unsafe impl Sync for HeldSlot {}

impl Default for HeldSlot {
    fn default() -> Self {
        // SAFETY: every field of HeldBody is an integer or an array of integers, for
        // which all-zero bytes are a valid value (the free slot of shared memory).
        let body = unsafe { std::mem::zeroed::<HeldBody>() };
        Self {
            state: AtomicU64::new(0),
            due_ms: AtomicU64::new(0),
            expires_ms: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            body: UnsafeCell::new(body),
        }
    }
}

/// A slot this worker holds `BUSY`: it alone reads and writes the body until it
/// gives the ticket back (`ready`, `free`).
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    index: u32,
    tag: u64,
}

/// What holding a request came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    Held(Ticket),
    /// The transaction is held already (a retransmission).
    Already,
    /// Its slots hold other live requests.
    Full,
}

#[derive(Clone, Copy)]
pub struct HeldStore<'m> {
    slots: &'m [HeldSlot],
}

const WAYS: usize = 4;

#[inline]
fn tag_of(txn: u64) -> u64 {
    // Never 0, which reads as a free slot.
    (txn & !STATE).max(STATE + 1)
}

impl<'m> HeldStore<'m> {
    /// Over `slots` (a power of two in length, at least `WAYS`).
    pub fn new(slots: &'m [HeldSlot]) -> Self {
        debug_assert!(slots.len().is_power_of_two() && slots.len() >= WAYS);
        Self { slots }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn ways(&self, txn: u64) -> impl Iterator<Item = usize> {
        let mask = self.slots.len() - 1;
        let first = ((txn >> 32) ^ txn) as usize;
        (0..WAYS).map(move |k| first.wrapping_add(k) & mask)
    }

    /// Holds the transaction `txn` in a free or expired slot, `BUSY` for the caller.
    pub fn hold(&self, txn: u64, now_ms: u64) -> Hold {
        let tag = tag_of(txn);
        let mut free = None;
        for i in self.ways(txn) {
            let s = &self.slots[i];
            let w = s.state.load(Acquire);
            if w & !STATE == tag {
                return Hold::Already;
            }
            let expired = w & STATE == READY && s.expires_ms.load(Relaxed) <= now_ms;
            if free.is_none() && (w == 0 || expired) {
                free = Some((i, w));
            }
        }
        let Some((i, w)) = free else {
            return Hold::Full;
        };
        let s = &self.slots[i];
        if s.state
            .compare_exchange(w, tag | BUSY, Acquire, Relaxed)
            .is_err()
        {
            return Hold::Full;
        }
        s.due_ms.store(0, Relaxed);
        s.cancelled.store(0, Relaxed);
        s.expires_ms.store(now_ms + UNANSWERED_MS, Relaxed);
        Hold::Held(Ticket {
            index: i as u32,
            tag,
        })
    }

    /// Takes the held transaction `txn` for the caller, if it is held and no other
    /// worker has it now.
    pub fn take(&self, txn: u64) -> Option<Ticket> {
        let tag = tag_of(txn);
        self.ways(txn).find_map(|i| {
            self.slots[i]
                .state
                .compare_exchange(tag | READY, tag | BUSY, Acquire, Relaxed)
                .ok()
                .map(|_| Ticket {
                    index: i as u32,
                    tag,
                })
        })
    }

    /// Notes the caller's CANCEL of the held transaction `txn`, if held.
    pub fn cancel(&self, txn: u64) {
        let tag = tag_of(txn);
        for i in self.ways(txn) {
            let s = &self.slots[i];
            if s.state.load(Acquire) & !STATE == tag {
                s.cancelled.store(1, Relaxed);
            }
        }
    }

    /// The body of a slot the caller holds.
    #[allow(clippy::mut_from_ref)]
    pub(super) fn body(&self, t: &Ticket) -> &mut HeldBody {
        // SAFETY: the ticket proves this worker moved the slot to BUSY: no one else
        // touches the body until the ticket is given back (module docs). A ticket is
        // neither Copy nor Clone, and the reference lives no longer than the borrow
        // the callers keep of it within one function.
        unsafe { &mut *self.slots[t.index as usize].body.get() }
    }

    pub(super) fn slot(&self, t: &Ticket) -> &HeldSlot {
        &self.slots[t.index as usize]
    }

    /// Gives the slot back, held: it goes on unanswered at `due_ms` (0: never).
    pub fn ready(&self, t: Ticket, due_ms: u64) {
        let s = self.slot(&t);
        s.due_ms.store(due_ms, Relaxed);
        s.state.store(t.tag | READY, Release);
    }

    /// Frees the slot.
    pub fn free(&self, t: Ticket) {
        let s = self.slot(&t);
        s.due_ms.store(0, Relaxed);
        s.state.store(0, Release);
    }

    /// Takes up to `SCAN_PER_POLL` slots from `*cursor` on whose answer is overdue at
    /// `now_ms`, calling `f` with each.
    pub fn take_due(&self, cursor: &mut usize, now_ms: u64, mut f: impl FnMut(Ticket)) {
        let mask = self.slots.len() - 1;
        for _ in 0..SCAN_PER_POLL.min(self.slots.len()) {
            let i = *cursor & mask;
            *cursor = cursor.wrapping_add(1);
            let s = &self.slots[i];
            let due = s.due_ms.load(Relaxed);
            if due == 0 || due > now_ms {
                continue;
            }
            let w = s.state.load(Relaxed);
            if w & STATE != READY {
                continue;
            }
            if s.state
                .compare_exchange(w, (w & !STATE) | BUSY, Acquire, Relaxed)
                .is_err()
            {
                continue;
            }
            let t = Ticket {
                index: i as u32,
                tag: w & !STATE,
            };
            // Answered between the two loads: not due after all.
            if s.due_ms.load(Relaxed) == 0 {
                self.ready(t, 0);
                continue;
            }
            f(t);
        }
    }

    /// Held requests now (for the control plane: a scan of state words).
    pub fn held(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state.load(Relaxed) != 0)
            .count()
    }
}

/// Held requests to send again, after the packet that decided it (`lb::process_resend`).
#[derive(Debug, Default)]
pub struct Resends {
    items: [Option<Ticket>; 8],
    len: usize,
}

impl Resends {
    pub(super) fn push(&mut self, t: Ticket) -> Result<(), Ticket> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(t);
                self.len += 1;
                Ok(())
            }
            None => Err(t),
        }
    }

    /// The next ticket to send again.
    pub fn pop(&mut self) -> Option<Ticket> {
        self.len = self.len.checked_sub(1)?;
        self.items[self.len].take()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(n: usize) -> Vec<HeldSlot> {
        (0..n).map(|_| HeldSlot::default()).collect()
    }

    #[test]
    fn a_slot_is_held_taken_and_freed_by_one_worker_at_a_time() {
        let mem = store(16);
        let s = HeldStore::new(&mem);
        let Hold::Held(t) = s.hold(0xabcd_0000_1234, 10) else {
            panic!("not held")
        };
        // Busy: neither a retransmission nor an answer gets it.
        assert_eq!(s.hold(0xabcd_0000_1234, 10), Hold::Already);
        assert!(s.take(0xabcd_0000_1234).is_none());
        s.ready(t, 500);
        let t = s.take(0xabcd_0000_1234).expect("ready");
        assert!(s.take(0xabcd_0000_1234).is_none());
        s.free(t);
        assert!(s.take(0xabcd_0000_1234).is_none());
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn a_full_set_of_ways_refuses_until_a_slot_expires() {
        let mem = store(4);
        let s = HeldStore::new(&mem);
        for k in 1..=4u64 {
            let Hold::Held(t) = s.hold(k << 8, 0) else {
                panic!("way {k} not free")
            };
            s.ready(t, 0);
        }
        assert_eq!(s.hold(5 << 8, 1), Hold::Full);
        // Unanswered slots expire after 64×T1; then they are taken again.
        assert!(matches!(s.hold(5 << 8, UNANSWERED_MS + 1), Hold::Held(_)));
    }

    #[test]
    fn the_timeout_scan_takes_only_overdue_requests() {
        let mem = store(64);
        let s = HeldStore::new(&mem);
        for (k, due) in [(1u64, 100u64), (2, 300), (3, 0)] {
            let Hold::Held(t) = s.hold(k << 20, 0) else {
                panic!()
            };
            s.ready(t, due);
        }
        let mut cursor = 0;
        let mut got = Vec::new();
        s.take_due(&mut cursor, 200, |t| got.push(t));
        assert_eq!(got.len(), 1, "only the one due at 100 ms");
        for t in got {
            s.free(t);
        }
        let mut got = Vec::new();
        s.take_due(&mut cursor, 400, |t| got.push(t));
        assert_eq!(
            got.len(),
            1,
            "then the one due at 300 ms; never the answered one"
        );
    }
}
