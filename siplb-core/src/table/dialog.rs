//! The dialog table: Call-ID hash → backend, farm and dialog state, with a deadline set
//! by the state's timer. The state machine follows the messages the balancer sees in
//! both directions (RFC 3261 §12, §13, §15).

use super::flow::{Entry, FlowTable, TableFull};
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

    /// Records `d` for `key` (replacing what was there); returns its deadline and
    /// whether the dialog is new.
    pub fn insert(
        &self,
        key: u64,
        now: u32,
        d: Dialog,
        t: &Timers,
    ) -> Result<(u32, bool), TableFull> {
        let deadline = now.saturating_add(d.state.lifetime(t));
        let old = self.flow.upsert(key, now, |_| {
            Some(Entry {
                payload: d.pack(),
                deadline,
            })
        })?;
        Ok((deadline, old.is_none()))
    }

    /// Moves the dialog's state with `next` and refreshes its deadline; returns the
    /// deadline (`now` if the dialog is unknown). Writes only when the state changes or
    /// the deadline would move by a second or more, so a busy dialog does not bounce
    /// its cache line between cores on every packet.
    pub fn advance(
        &self,
        key: u64,
        now: u32,
        t: &Timers,
        next: impl Fn(DialogState) -> DialogState,
    ) -> u32 {
        // The deadline in force after the update, from the closure's last run (it may
        // run more than once under contention): no second lookup.
        let result = Cell::new(now);
        let _ = self.flow.upsert(key, now, |old| {
            let Some(old) = old else {
                result.set(now);
                return None;
            };
            let mut d = Dialog::unpack(old.payload);
            let state = next(d.state);
            let deadline = now.saturating_add(state.lifetime(t));
            if state == d.state
                && deadline <= old.deadline.saturating_add(1)
                && deadline + 1 >= old.deadline
            {
                result.set(old.deadline);
                return None;
            }
            d.state = state;
            result.set(deadline);
            Some(Entry {
                payload: d.pack(),
                deadline,
            })
        });
        result.get()
    }

    /// A request of the dialog passed (either direction).
    pub fn on_request(&self, key: u64, now: u32, t: &Timers, m: Method) -> u32 {
        self.advance(key, now, t, |s| s.after_request(m))
    }

    /// A response of the dialog passed (either direction).
    pub fn on_response(&self, key: u64, now: u32, t: &Timers, m: Method, code: u16) -> u32 {
        self.advance(key, now, t, |s| s.after_response(m, code))
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
        assert_eq!(t.insert(42, 100, d, &tm), Ok((132, true)));
        assert_eq!(
            t.on_response(42, 101, &tm, Method::Invite, 180),
            101 + tm.early
        );
        assert_eq!(t.get(42, 101).unwrap().state, DialogState::Early);
        assert_eq!(
            t.on_response(42, 102, &tm, Method::Invite, 200),
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
        assert_eq!(t.on_request(42, 200, &tm, Method::Bye), 200 + tm.linger);
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
        t.insert(5, 1000, d, &tm).unwrap();
        let e0 = t.get_entry(5, 1000).unwrap().1;
        assert_eq!(t.on_request(5, 1000, &tm, Method::Ack), e0);
        assert_eq!(
            t.on_request(5, 1010, &tm, Method::Info),
            1010 + tm.confirmed_idle
        );
    }
}
