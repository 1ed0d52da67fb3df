//! Live load per backend in shared memory, one `BackendLoad` per backend slot: the
//! dialogs each backend carries (for `max_dialogs`), the hold a 503 with Retry-After
//! asks for, the share of new dialogs an RFC 7339 `oc` value sheds, and the passive
//! health marks. `load.rs` reads them to choose backends for new work and writes them
//! from the backends' answers; the control plane reads them for status and metrics.
//!
//! Concurrency: plain atomics.
//! - `dialogs` is taken by `try_take` (a CAS loop that refuses at `max_dialogs`, so
//!   workers never overshoot the cap together) and given back by whoever ends the
//!   dialog's entry in the dialog table: the count unit is a bit of the entry
//!   (`table::dialog::COUNTED`) that only one CAS can clear (a BYE, a final error, a
//!   CANCEL, a replacement, or the main lcore's expiry sweep), so the count follows the
//!   table and cannot drift. Atomics in shared memory rather than per-worker counts:
//!   the cap must be checked against the sum at the moment of the choice, and the
//!   control plane reads the same numbers.
//! - Retry-After, `oc` and passive marks are last-writer-wins words: the backend's
//!   latest message decides, and two workers writing at once write values from the
//!   same backend. They live on their own cache line, read on every new dialog and
//!   written rarely, away from the line the counts bounce on.

use crate::table::dialog::Released;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// The longest hold a backend's Retry-After can ask for, in seconds; a larger value
/// is taken as this (a misconfigured server must not disappear for a day).
pub const MAX_RETRY_AFTER_S: u64 = 300;
/// RFC 7339 §5.2: an `oc` value without `oc-validity` holds for 500 ms.
pub(super) const DEFAULT_OC_VALIDITY_MS: u64 = 500;

/// Written per new dialog and per backend message.
#[repr(C, align(64))]
#[derive(Default)]
pub(super) struct Hot {
    /// Dialogs holding a count unit.
    pub(super) dialogs: AtomicU32,
    /// Dialog-creating requests sent since the backend's last message.
    pub(super) unanswered: AtomicU32,
    /// `Clock::millis` when the first of them was sent.
    pub(super) unanswered_since: AtomicU64,
}

/// Read per new dialog, written when a backend signals overload or health changes.
#[repr(C, align(64))]
#[derive(Default)]
pub(super) struct Cold {
    /// No new dialogs before this `Clock::millis` (Retry-After).
    pub(super) hold_until: AtomicU64,
    /// `oc` percentage (top byte) and the `Clock::millis` it holds until.
    pub(super) oc: AtomicU64,
    /// The `oc-seq` of the value in force (integer part × 10^5 + fraction).
    pub(super) oc_seq: AtomicU64,
    /// `Clock::millis` + 1 when the backend was marked down passively; 0: not.
    pub(super) passive_down: AtomicU64,
    /// Times it was marked down passively.
    pub(super) passive_marks: AtomicU64,
}

/// One backend slot's live load. Zeroed memory is a backend with no load.
#[repr(C)]
#[derive(Default)]
pub struct BackendLoad {
    pub(super) hot: Hot,
    pub(super) cold: Cold,
}

/// A snapshot of one backend's load, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadView {
    pub dialogs: u32,
    /// Milliseconds (clock of `Clock::millis`) until which Retry-After holds it.
    pub hold_until_ms: u64,
    pub oc_percent: u8,
    pub oc_until_ms: u64,
    /// When it was marked down passively, if it is.
    pub passive_down_ms: Option<u64>,
    pub passive_marks: u64,
}

impl BackendLoad {
    /// Takes a count unit unless `max` (0: none) is reached.
    #[inline]
    pub(super) fn try_take(&self, max: u32) -> bool {
        self.hot
            .dialogs
            .fetch_update(Relaxed, Relaxed, |n| (max == 0 || n < max).then_some(n + 1))
            .is_ok()
    }

    /// Gives a unit back; never below zero (an entry replicated from the HA peer may
    /// end here without having been counted here).
    #[inline]
    pub(super) fn give_back(&self) {
        let _ = self
            .hot
            .dialogs
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    pub fn view(&self) -> LoadView {
        let oc = self.cold.oc.load(Relaxed);
        let down = self.cold.passive_down.load(Relaxed);
        LoadView {
            dialogs: self.hot.dialogs.load(Relaxed),
            hold_until_ms: self.cold.hold_until.load(Relaxed),
            oc_percent: (oc >> 56) as u8,
            oc_until_ms: oc & OC_UNTIL,
            passive_down_ms: (down != 0).then(|| down - 1),
            passive_marks: self.cold.passive_marks.load(Relaxed),
        }
    }

    /// Ends a passive mark (the control plane, when active checks pass again).
    pub fn clear_passive(&self) {
        self.cold.passive_down.store(0, Relaxed);
        self.hot.unanswered.store(0, Relaxed);
    }

    /// Marks the backend down now, unless it already is; a mark lasts `hold` ms
    /// (`Farm::passive_hold_ms`) unless the control plane ends it first.
    pub(super) fn mark_down(&self, now_ms: u64, hold: u64) -> bool {
        let cur = self.cold.passive_down.load(Relaxed);
        if is_down(cur, now_ms, hold) {
            return false;
        }
        let marked = self
            .cold
            .passive_down
            .compare_exchange(cur, now_ms + 1, Relaxed, Relaxed)
            .is_ok();
        if marked {
            self.cold.passive_marks.fetch_add(1, Relaxed);
        }
        marked
    }

    /// Marked down passively now (a mark older than `hold` ms has lapsed).
    #[inline]
    pub fn passive_down(&self, now_ms: u64, hold: u64) -> bool {
        is_down(self.cold.passive_down.load(Relaxed), now_ms, hold)
    }

    /// Why the backend takes no new dialog now (`key` decides which dialogs an `oc`
    /// value sheds), if it takes none.
    #[inline]
    pub(super) fn refuses(&self, now_ms: u64, key: u64, hold: u64) -> Option<Refusal> {
        if self.passive_down(now_ms, hold) {
            return Some(Refusal::Down);
        }
        if self.cold.hold_until.load(Relaxed) > now_ms {
            return Some(Refusal::Held);
        }
        let oc = self.cold.oc.load(Relaxed);
        let pct = oc >> 56;
        // Spread by bits of the key the Maglev lookup does not use alone.
        if pct > 0 && oc & OC_UNTIL > now_ms && (key >> 33) % 100 < pct {
            return Some(Refusal::Shed);
        }
        None
    }
}

pub(super) const OC_UNTIL: u64 = (1 << 56) - 1;

/// Whether a `passive_down` word is a mark younger than `hold` ms.
#[inline]
pub(super) fn is_down(word: u64, now_ms: u64, hold: u64) -> bool {
    word != 0 && now_ms.saturating_sub(word - 1) < hold
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Down,
    Held,
    Shed,
    Full,
}

/// Every backend slot's load (`MAX_BACKENDS` of them), over caller-provided memory.
#[derive(Clone, Copy)]
pub struct LoadTable<'m> {
    slots: &'m [BackendLoad],
}

impl<'m> LoadTable<'m> {
    pub fn new(slots: &'m [BackendLoad]) -> Self {
        Self { slots }
    }

    /// The load of backend slot `slot` (a slot past the table reads as slot 0's; slots
    /// come from `SlotRegistry`, bounded by `MAX_BACKENDS`, the table's length).
    #[inline]
    pub fn get(&self, slot: u16) -> &'m BackendLoad {
        self.slots.get(usize::from(slot)).unwrap_or(&self.slots[0])
    }

    /// Takes one count unit of backend slot `slot` whatever its cap (a dialog
    /// replicated from the HA peer, counted there).
    #[inline]
    pub fn take(&self, slot: u16) {
        self.get(slot).hot.dialogs.fetch_add(1, Relaxed);
    }

    /// Gives back one count unit of backend slot `slot`.
    #[inline]
    pub fn give_back(&self, slot: u16) {
        self.get(slot).give_back();
    }

    /// Gives back the count units an update of the dialog table released.
    #[inline]
    pub fn release(&self, r: Released) {
        for s in r.slots() {
            self.get(s).give_back();
        }
    }
}
