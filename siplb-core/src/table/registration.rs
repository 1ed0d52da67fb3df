//! The registration table: AOR hash → backend and farm, until the binding expires
//! (the backend's 2xx gives Expires; a margin is added).

use super::flow::{Entry, FlowTable, TableFull};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// Stable backend slot.
    pub backend: u16,
    pub farm: u8,
}

impl Registration {
    fn pack(self) -> u32 {
        (u32::from(self.backend) << 16) | (u32::from(self.farm) << 8)
    }

    fn unpack(p: u32) -> Registration {
        Registration {
            backend: (p >> 16) as u16,
            farm: (p >> 8) as u8,
        }
    }
}

#[derive(Clone, Copy)]
pub struct RegistrationTable<'m> {
    flow: FlowTable<'m>,
}

impl<'m> RegistrationTable<'m> {
    pub fn new(flow: FlowTable<'m>) -> Self {
        Self { flow }
    }

    pub fn flow(&self) -> &FlowTable<'m> {
        &self.flow
    }

    #[inline]
    pub fn get(&self, aor: u64, now: u32) -> Option<Registration> {
        self.flow
            .lookup(aor, now)
            .map(|e| Registration::unpack(e.payload))
    }

    pub fn get_entry(&self, aor: u64, now: u32) -> Option<(Registration, u32)> {
        self.flow
            .lookup(aor, now)
            .map(|e| (Registration::unpack(e.payload), e.deadline))
    }

    /// Points the AOR at `reg` and keeps it at least until `min_deadline` (a REGISTER on
    /// its way: the binding's own lifetime comes with the 2xx). Returns the deadline and
    /// whether the AOR was new.
    pub fn refresh(
        &self,
        aor: u64,
        now: u32,
        reg: Registration,
        min_deadline: u32,
    ) -> Result<(u32, bool), TableFull> {
        let old = self.flow.upsert(aor, now, |old| {
            let deadline = old.map_or(min_deadline, |o| o.deadline.max(min_deadline));
            let new = Entry {
                payload: reg.pack(),
                deadline,
            };
            (old != Some(new)).then_some(new)
        })?;
        Ok((
            old.map_or(min_deadline, |o| o.deadline.max(min_deadline)),
            old.is_none(),
        ))
    }

    /// Sets the AOR's binding to `reg` until `until` exactly (a 2xx to REGISTER).
    pub fn set(&self, aor: u64, now: u32, reg: Registration, until: u32) -> Result<(), TableFull> {
        self.flow
            .upsert(aor, now, |_| {
                Some(Entry {
                    payload: reg.pack(),
                    deadline: until,
                })
            })
            .map(|_| ())
    }

    pub fn count_live(&self, now: u32) -> usize {
        self.flow.count_live(now)
    }
}

impl RegistrationTable<'_> {
    /// Calls `f` with every live registration and its deadline (a scan; for stats).
    pub fn for_each_live(&self, now: u32, mut f: impl FnMut(u64, Registration, u32)) {
        self.flow.for_each_live(now, |k, e| {
            f(k, Registration::unpack(e.payload), e.deadline)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::flow::Slot;

    #[test]
    fn register_challenge_refresh_and_expiry() {
        let slots: Vec<Slot> = (0..64).map(|_| Slot::default()).collect();
        let t = RegistrationTable::new(FlowTable::new(&slots, 4));
        let r = Registration {
            backend: 7,
            farm: 2,
        };
        assert_eq!(t.refresh(9, 100, r, 132), Ok((132, true)));
        // The challenged REGISTER finds it and does not shorten it.
        assert_eq!(t.get(9, 110), Some(r));
        assert_eq!(t.refresh(9, 110, r, 120), Ok((132, false)));
        // The 200 OK sets the binding's life.
        t.set(9, 111, r, 111 + 3600 + 30).unwrap();
        assert_eq!(t.get_entry(9, 200), Some((r, 3741)));
        assert_eq!(t.get(9, 3741), None);
        assert_eq!(t.count_live(200), 1);
    }
}
