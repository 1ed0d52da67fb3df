//! The dialog table: Call-ID hash → backend, farm and dialog state, with a deadline set
//! by the state's timer. The state machine follows the messages the balancer sees in
//! both directions (RFC 3261 §12, §13, §15).

use super::flow::{Entry, FlowTable, Replaced, TableFull};
use crate::sip::Method;
use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// Dialog timers, in seconds (per farm, `[farm.timers]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    /// A request sent, no answer yet (Timer B/F: 64×T1 = 32 s covers a transaction).
    pub transaction: u32,
    /// An INVITE answered provisionally (RFC 3261 Timer C: more than 3 minutes).
    pub early: u32,
    /// A confirmed dialog with no message for this long is forgotten (session timers
    /// refresh well inside it).
    pub confirmed_idle: u32,
    /// Kept after BYE or a final error, for retransmissions and the ACK (64×T1).
    pub linger: u32,
    /// Added to a registration's Expires before it is forgotten.
    pub registration_margin: u32,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            transaction: 32,
            early: 200,
            confirmed_idle: 7200,
            linger: 32,
            registration_margin: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DialogState {
    /// A dialog-creating request was sent; no answer yet.
    Trying = 0,
    /// A provisional answer to an INVITE.
    Early = 1,
    /// A 2xx to an INVITE (or SUBSCRIBE/REFER).
    Confirmed = 2,
    /// BYE seen or the INVITE failed: kept a little for retransmissions.
    Terminating = 3,
}

impl DialogState {
    fn from_u8(v: u8) -> DialogState {
        match v & 3 {
            0 => Self::Trying,
            1 => Self::Early,
            2 => Self::Confirmed,
            _ => Self::Terminating,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Trying => "trying",
            Self::Early => "early",
            Self::Confirmed => "confirmed",
            Self::Terminating => "terminating",
        }
    }

    /// How long a dialog in this state lives without news.
    pub fn lifetime(self, t: &Timers) -> u32 {
        match self {
            Self::Trying => t.transaction,
            Self::Early => t.early,
            Self::Confirmed => t.confirmed_idle,
            Self::Terminating => t.linger,
        }
    }

    /// The state after a request of this dialog passes.
    pub fn after_request(self, m: Method) -> DialogState {
        match m {
            Method::Bye => Self::Terminating,
            _ => self,
        }
    }

    /// The state after a response with `code` to a request with CSeq method `m`.
    pub fn after_response(self, m: Method, code: u16) -> DialogState {
        match (m, code) {
            (_, 100..=199) if self == Self::Trying && m == Method::Invite => Self::Early,
            (Method::Invite | Method::Subscribe | Method::Refer, 200..=299) => {
                if self == Self::Terminating {
                    self
                } else {
                    Self::Confirmed
                }
            }
            // A failed initial INVITE ends the dialog; a failed re-INVITE does not.
            (Method::Invite, 300..=699) if self != Self::Confirmed => Self::Terminating,
            (Method::Bye, 200..=699) => Self::Terminating,
            // Out-of-dialog transactions (OPTIONS, MESSAGE...) end with their final answer.
            (_, 200..=699) if self == Self::Trying => Self::Terminating,
            _ => self,
        }
    }
}

/// Bit of the payload's state byte: the entry holds one unit of its backend's live
/// dialog count (`lb::load`). Set on a dialog the balancer placed as new work; cleared,
/// and the unit released, by whichever CAS ends it: the state moving to `Terminating`,
/// a CANCEL, a replacement, or the expiry sweep (`DialogTable::release_expired`).
const COUNTED: u32 = 1 << 2;

/// A backend slot whose count unit an update released (at most two: the live entry
/// replaced and an expired one overwritten).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released([Option<u16>; 2]);

impl Released {
    fn of(r: Replaced) -> Self {
        let slot = |e: Option<Entry>| {
            e.filter(|e| e.payload & COUNTED != 0)
                .map(|e| (e.payload >> 16) as u16)
        };
        Self([slot(r.live), slot(r.expired)])
    }

    /// The backend slots to release, one per unit.
    pub fn slots(self) -> impl Iterator<Item = u16> {
        self.0.into_iter().flatten()
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub deadline: u32,
    /// No live entry was there.
    pub created: bool,
    pub released: Released,
}

/// What a state update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    /// The deadline in force (`now` if the dialog is unknown).
    pub deadline: u32,
    /// The backend slot whose count unit the update released.
    pub released: Option<u16>,
}

/// What the dialog table remembers about a Call-ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialog {
    /// Stable backend slot (see `lb::services::SlotRegistry`).
    pub backend: u16,
    pub farm: u8,
    pub state: DialogState,
}

impl Dialog {
    fn pack(self) -> u32 {
        (u32::from(self.backend) << 16) | (u32::from(self.farm) << 8) | self.state as u32
    }

    fn unpack(p: u32) -> Dialog {
        Dialog {
            backend: (p >> 16) as u16,
            farm: (p >> 8) as u8,
            state: DialogState::from_u8(p as u8),
        }
    }
}

#[derive(Clone, Copy)]
pub struct DialogTable<'m> {
    flow: FlowTable<'m>,
}

impl<'m> DialogTable<'m> {
    pub fn new(flow: FlowTable<'m>) -> Self {
        Self { flow }
    }

    pub fn flow(&self) -> &FlowTable<'m> {
        &self.flow
    }

    #[inline]
    pub fn get(&self, key: u64, now: u32) -> Option<Dialog> {
        self.flow
            .lookup(key, now)
            .map(|e| Dialog::unpack(e.payload))
    }

    /// The dialog and its deadline.
    pub fn get_entry(&self, key: u64, now: u32) -> Option<(Dialog, u32)> {
        self.flow
            .lookup(key, now)
            .map(|e| (Dialog::unpack(e.payload), e.deadline))
    }

    /// Records `d` for `key` (replacing what was there), holding a unit of its
    /// backend's count if `counted`; returns its deadline, whether the dialog is new,
    /// and the count units the entries it replaced held.
    pub fn insert(
        &self,
        key: u64,
        now: u32,
        d: Dialog,
        counted: bool,
        t: &Timers,
    ) -> Result<Inserted, TableFull> {
        let deadline = now.saturating_add(d.state.lifetime(t));
        let counted = if counted && d.state != DialogState::Terminating {
            COUNTED
        } else {
            0
        };
        let r = self.flow.upsert_replacing(key, now, |_| {
            Some(Entry {
                payload: d.pack() | counted,
                deadline,
            })
        })?;
        Ok(Inserted {
            deadline,
            created: r.live.is_none(),
            released: Released::of(r),
        })
    }

    /// Stores a dialog replicated from the HA peer (the raw value of its table),
    /// replacing what is there. Returns the count units the replaced entries held,
    /// and the backend slot whose unit the stored entry now holds (the caller takes
    /// it), so the standby's counts follow its table as the active's follow its own.
    /// An entry that arrives expired is stored without its unit.
    pub fn import(
        &self,
        key: u64,
        raw: u64,
        now: u32,
    ) -> Result<(Released, Option<u16>), TableFull> {
        let mut e = Entry {
            payload: raw as u32,
            deadline: (raw >> 32) as u32,
        };
        // 0 and 1 are a key never used and a slot being reused.
        if key == 0 || raw <= 1 {
            return Ok((Released::default(), None));
        }
        if e.deadline <= now {
            e.payload &= !COUNTED;
        }
        let r = self.flow.upsert_replacing(key, now, |_| Some(e))?;
        let held = (e.payload & COUNTED != 0).then_some((e.payload >> 16) as u16);
        Ok((Released::of(r), held))
    }

    /// Whether `key`'s live entry holds a unit of its backend's count.
    pub fn is_counted(&self, key: u64, now: u32) -> bool {
        self.flow
            .lookup(key, now)
            .is_some_and(|e| e.payload & COUNTED != 0)
    }

    /// Releases the count units of dialogs that expired while holding one, in the
    /// buckets `range` (the main lcore's sweep): `release` gets each one's backend slot.
    pub fn release_expired(
        &self,
        range: std::ops::Range<usize>,
        now: u32,
        mut release: impl FnMut(u16),
    ) {
        self.flow.claim_expired(
            range,
            now,
            |e| {
                (e.payload & COUNTED != 0).then_some(Entry {
                    payload: e.payload & !COUNTED,
                    deadline: e.deadline,
                })
            },
            |e| release((e.payload >> 16) as u16),
        );
    }

    /// Moves the dialog's state with `next` and refreshes its deadline; returns the
    /// deadline (`now` if the dialog is unknown). Writes only when the state changes or
    /// the deadline would move by a second or more, so a busy dialog does not bounce
    /// its cache line between cores on every packet.
    /// The count unit ends with the dialog (`Terminating`) and with a CANCEL, also
    /// one that loses the race with a 2xx (the call then goes uncounted: the count
    /// errs low for one call, and never drifts).
    pub fn advance(
        &self,
        key: u64,
        now: u32,
        t: &Timers,
        next: impl Fn(DialogState) -> DialogState,
        cancel: bool,
    ) -> Advanced {
        // The deadline in force after the update and the unit released, from the
        // closure's last run (it may run more than once under contention): no second
        // lookup.
        let result = Cell::new((now, None));
        let stored = self.flow.upsert(key, now, |old| {
            let Some(old) = old else {
                result.set((now, None));
                return None;
            };
            let mut d = Dialog::unpack(old.payload);
            let state = next(d.state);
            let deadline = now.saturating_add(state.lifetime(t));
            let counted = old.payload & COUNTED != 0;
            let keeps_unit = counted && !cancel && state != DialogState::Terminating;
            if state == d.state
                && counted == keeps_unit
                && deadline <= old.deadline.saturating_add(1)
                && deadline + 1 >= old.deadline
            {
                result.set((old.deadline, None));
                return None;
            }
            d.state = state;
            let released = (counted && !keeps_unit).then_some(d.backend);
            result.set((deadline, released));
            Some(Entry {
                payload: d.pack() | if keeps_unit { COUNTED } else { 0 },
                deadline,
            })
        });
        let (deadline, released) = result.get();
        Advanced {
            deadline,
            // Given up under contention: the last value computed was never stored.
            released: released.filter(|_| stored.is_ok()),
        }
    }

    /// A request of the dialog passed (either direction).
    pub fn on_request(&self, key: u64, now: u32, t: &Timers, m: Method) -> Advanced {
        self.advance(key, now, t, |s| s.after_request(m), m == Method::Cancel)
    }

    /// A response of the dialog passed (either direction).
    pub fn on_response(&self, key: u64, now: u32, t: &Timers, m: Method, code: u16) -> Advanced {
        self.advance(key, now, t, |s| s.after_response(m, code), false)
    }

    pub fn count_live(&self, now: u32) -> usize {
        self.flow.count_live(now)
    }

    /// Live dialogs per state: [trying, early, confirmed, terminating].
    pub fn count_by_state(&self, now: u32) -> [usize; 4] {
        let mut c = [0; 4];
        self.flow
            .for_each_live(now, |_, e| c[Dialog::unpack(e.payload).state as usize] += 1);
        c
    }
}

impl DialogTable<'_> {
    /// Calls `f` with every live dialog and its deadline (a scan; for stats).
    pub fn for_each_live(&self, now: u32, mut f: impl FnMut(u64, Dialog, u32)) {
        self.flow
            .for_each_live(now, |k, e| f(k, Dialog::unpack(e.payload), e.deadline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::flow::Slot;

    #[test]
    fn call_flow_moves_through_states_with_their_timers() {
        let slots: Vec<Slot> = (0..64).map(|_| Slot::default()).collect();
        let t = DialogTable::new(FlowTable::new(&slots, 4));
        let tm = Timers::default();
        let d = Dialog {
            backend: 3,
            farm: 1,
            state: DialogState::Trying,
        };
        assert_eq!(
            t.insert(42, 100, d, false, &tm)
                .map(|i| (i.deadline, i.created)),
            Ok((132, true))
        );
        assert_eq!(
            t.on_response(42, 101, &tm, Method::Invite, 180).deadline,
            101 + tm.early
        );
        assert_eq!(t.get(42, 101).unwrap().state, DialogState::Early);
        assert_eq!(
            t.on_response(42, 102, &tm, Method::Invite, 200).deadline,
            102 + tm.confirmed_idle
        );
        assert_eq!(
            t.get(42, 102).unwrap(),
            Dialog {
                backend: 3,
                farm: 1,
                state: DialogState::Confirmed
            }
        );
        // A failed re-INVITE keeps the dialog.
        t.on_response(42, 103, &tm, Method::Invite, 491);
        assert_eq!(t.get(42, 103).unwrap().state, DialogState::Confirmed);
        assert_eq!(
            t.on_request(42, 200, &tm, Method::Bye).deadline,
            200 + tm.linger
        );
        assert_eq!(t.get(42, 200).unwrap().state, DialogState::Terminating);
        assert_eq!(t.get(42, 200 + tm.linger), None);
        assert_eq!(t.count_by_state(200), [0, 0, 0, 1]);
    }

    #[test]
    fn state_rules() {
        use DialogState::*;
        assert_eq!(Trying.after_response(Method::Invite, 486), Terminating);
        assert_eq!(Early.after_response(Method::Invite, 487), Terminating);
        assert_eq!(Trying.after_response(Method::Options, 200), Terminating);
        assert_eq!(Trying.after_response(Method::Subscribe, 202), Confirmed);
        assert_eq!(Terminating.after_response(Method::Invite, 200), Terminating);
        assert_eq!(Confirmed.after_request(Method::Invite), Confirmed);
        assert_eq!(Confirmed.after_request(Method::Ack), Confirmed);
    }

    #[test]
    fn unchanged_state_within_a_second_is_not_rewritten() {
        let slots: Vec<Slot> = (0..64).map(|_| Slot::default()).collect();
        let t = DialogTable::new(FlowTable::new(&slots, 4));
        let tm = Timers::default();
        let d = Dialog {
            backend: 1,
            farm: 0,
            state: DialogState::Confirmed,
        };
        t.insert(5, 1000, d, false, &tm).unwrap();
        let e0 = t.get_entry(5, 1000).unwrap().1;
        assert_eq!(t.on_request(5, 1000, &tm, Method::Ack).deadline, e0);
        assert_eq!(
            t.on_request(5, 1010, &tm, Method::Info).deadline,
            1010 + tm.confirmed_idle
        );
    }

    /// Every count unit taken is released exactly once, whichever way its dialog
    /// ends: BYE, a final error, CANCEL, a move to another backend, the expiry sweep,
    /// or an expired slot overwritten before the sweep got there.
    #[test]
    fn count_units_are_released_once_however_a_dialog_ends() {
        let slots: Vec<Slot> = (0..8).map(|_| Slot::default()).collect();
        let t = DialogTable::new(FlowTable::new(&slots, 2));
        let tm = Timers::default();
        // Units held per backend slot, as the callers keep them.
        let mut live = [0i64; 4];
        let take = |live: &mut [i64; 4], key, backend: u16, now| {
            let d = Dialog {
                backend,
                farm: 0,
                state: DialogState::Trying,
            };
            let i = t.insert(key, now, d, true, &tm).unwrap();
            live[usize::from(backend)] += 1;
            for s in i.released.slots() {
                live[usize::from(s)] -= 1;
            }
        };
        let give = |live: &mut [i64; 4], a: Advanced| {
            if let Some(s) = a.released {
                live[usize::from(s)] -= 1;
            }
            a.released
        };
        // BYE (twice: the retransmission releases nothing).
        take(&mut live, 1, 0, 10);
        t.on_response(1, 10, &tm, Method::Invite, 200);
        assert!(t.is_counted(1, 10));
        assert_eq!(
            give(&mut live, t.on_request(1, 11, &tm, Method::Bye)),
            Some(0)
        );
        assert_eq!(give(&mut live, t.on_request(1, 11, &tm, Method::Bye)), None);
        // A final error; CANCEL (its 487 then releases nothing more).
        take(&mut live, 2, 1, 10);
        let a = t.on_response(2, 10, &tm, Method::Invite, 486);
        assert_eq!(give(&mut live, a), Some(1));
        take(&mut live, 3, 2, 10);
        let a = t.on_request(3, 10, &tm, Method::Cancel);
        assert_eq!(give(&mut live, a), Some(2));
        let a = t.on_response(3, 10, &tm, Method::Invite, 487);
        assert_eq!(give(&mut live, a), None);
        // Moved to another backend: the insert releases the old unit.
        take(&mut live, 4, 0, 10);
        take(&mut live, 4, 3, 10);
        assert_eq!(live, [0, 0, 0, 1]);
        // Expiry: the sweep releases it once, a second sweep nothing.
        take(&mut live, 5, 1, 10);
        let expired_at = 10 + tm.transaction;
        let mut swept = Vec::new();
        t.release_expired(0..t.flow().buckets(), expired_at, |s| swept.push(s));
        t.release_expired(0..t.flow().buckets(), expired_at, |s| swept.push(s));
        // Dialog 4 (backend 3) expired at the same time.
        swept.sort_unstable();
        assert_eq!(swept, vec![1, 3]);
        for s in swept {
            live[usize::from(s)] -= 1;
        }
        // An expired counted entry overwritten before the sweep got to it: the
        // insert releases it, the sweep then finds nothing.
        let later = 100;
        take(&mut live, 6, 2, later);
        take(&mut live, 6, 2, later + tm.transaction);
        let mut swept = 0;
        t.release_expired(0..t.flow().buckets(), later + tm.transaction, |_| {
            swept += 1
        });
        assert_eq!(swept, 0);
        // One unit left, dialog 6's, and the table agrees.
        assert_eq!(live, [0, 0, 1, 0]);
        let now = later + tm.transaction;
        let mut held = [0i64; 4];
        t.for_each_live(now, |k, d, _| {
            if t.is_counted(k, now) {
                held[usize::from(d.backend)] += 1;
            }
        });
        assert_eq!(held, live);
    }

    /// Replicated dialogs carry their count units to the standby: taken when a
    /// counted one arrives, given back when an update ends it or replaces it.
    #[test]
    fn imported_dialogs_move_their_count_units_along() {
        let a_mem: Vec<Slot> = (0..64).map(|_| Slot::default()).collect();
        let b_mem: Vec<Slot> = (0..64).map(|_| Slot::default()).collect();
        let (a, b) = (
            DialogTable::new(FlowTable::new(&a_mem, 4)),
            DialogTable::new(FlowTable::new(&b_mem, 4)),
        );
        let tm = Timers::default();
        let d = Dialog {
            backend: 7,
            farm: 0,
            state: DialogState::Trying,
        };
        let raw = |t: &DialogTable<'_>| {
            let mut v = None;
            t.flow().for_each_slot(|_, k, r| {
                if k == 9 {
                    v = Some(r);
                }
            });
            v.unwrap()
        };
        a.insert(9, 10, d, true, &tm).unwrap();
        let (released, held) = b.import(9, raw(&a), 10).unwrap();
        assert_eq!((released.slots().count(), held), (0, Some(7)));
        assert!(b.is_counted(9, 10));
        // The same entry again: its unit is given back and taken again.
        let (released, held) = b.import(9, raw(&a), 11).unwrap();
        assert_eq!(
            (released.slots().collect::<Vec<_>>(), held),
            (vec![7], Some(7))
        );
        // Ended on the active (BYE): the standby's copy gives its unit back.
        a.on_request(9, 12, &tm, Method::Bye);
        let (released, held) = b.import(9, raw(&a), 12).unwrap();
        assert_eq!(
            (released.slots().collect::<Vec<_>>(), held),
            (vec![7], None)
        );
        // A counted entry that arrives expired holds nothing.
        a.insert(10, 10, d, true, &tm).unwrap();
        let mut r10 = 0;
        a.flow().for_each_slot(|_, k, r| {
            if k == 10 {
                r10 = r;
            }
        });
        let (_, held) = b.import(10, r10, 10 + tm.transaction).unwrap();
        assert_eq!(held, None);
        let mut swept = 0;
        b.release_expired(0..b.flow().buckets(), 100, |_| swept += 1);
        assert_eq!(swept, 0);
    }
}
