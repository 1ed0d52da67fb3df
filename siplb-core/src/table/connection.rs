//! The TCP connection table: (client address and port, VIP and port) hash → backend,
//! farm and state. TCP and TLS are balanced per connection: everything on one
//! connection goes to one backend (the balancer does not read the stream).

use super::dialog::Timers;
use super::flow::{Entry, FlowTable, TableFull};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// A SYN passed; the handshake has not finished.
    Opening = 0,
    Established = 1,
    /// FIN or RST seen: kept a little for the last segments.
    Closing = 2,
}

impl ConnState {
    fn from_u8(v: u8) -> ConnState {
        match v {
            0 => Self::Opening,
            1 => Self::Established,
            _ => Self::Closing,
        }
    }

    /// How long a connection in this state lives without a segment.
    pub fn lifetime(self, t: &Timers) -> u32 {
        match self {
            Self::Opening => t.transaction,
            Self::Established => t.confirmed_idle,
            Self::Closing => t.linger,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// Stable backend slot.
    pub backend: u16,
    pub farm: u8,
    pub state: ConnState,
}

impl Connection {
    fn pack(self) -> u32 {
        (u32::from(self.backend) << 16) | (u32::from(self.farm) << 8) | self.state as u32
    }

    fn unpack(p: u32) -> Connection {
        Connection {
            backend: (p >> 16) as u16,
            farm: (p >> 8) as u8,
            state: ConnState::from_u8(p as u8),
        }
    }
}

#[derive(Clone, Copy)]
pub struct ConnectionTable<'m> {
    flow: FlowTable<'m>,
}

impl<'m> ConnectionTable<'m> {
    pub fn new(flow: FlowTable<'m>) -> Self {
        Self { flow }
    }

    pub fn flow(&self) -> &FlowTable<'m> {
        &self.flow
    }

    #[inline]
    pub fn get(&self, key: u64, now: u32) -> Option<Connection> {
        self.flow
            .lookup(key, now)
            .map(|e| Connection::unpack(e.payload))
    }

    /// Records `c` (state and backend), refreshing its deadline; writes only when
    /// something changes or the deadline moves by a second or more. Returns whether the
    /// connection is new.
    pub fn record(&self, key: u64, now: u32, c: Connection, t: &Timers) -> Result<bool, TableFull> {
        let deadline = now.saturating_add(c.state.lifetime(t));
        let old = self.flow.upsert(key, now, |old| {
            let new = Entry {
                payload: c.pack(),
                deadline,
            };
            match old {
                Some(o) if o.payload == new.payload && o.deadline.abs_diff(deadline) <= 1 => None,
                _ => Some(new),
            }
        })?;
        Ok(old.is_none())
    }

    pub fn count_live(&self, now: u32) -> usize {
        self.flow.count_live(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::flow::Slot;

    #[test]
    fn open_establish_close() {
        let slots: Vec<Slot> = (0..64).map(|_| Slot::default()).collect();
        let t = ConnectionTable::new(FlowTable::new(&slots, 4));
        let tm = Timers::default();
        let mut c = Connection {
            backend: 4,
            farm: 1,
            state: ConnState::Opening,
        };
        assert_eq!(t.record(9, 100, c, &tm), Ok(true));
        c.state = ConnState::Established;
        assert_eq!(t.record(9, 101, c, &tm), Ok(false));
        assert_eq!(t.get(9, 101 + tm.confirmed_idle - 1), Some(c));
        c.state = ConnState::Closing;
        t.record(9, 200, c, &tm).unwrap();
        assert_eq!(t.get(9, 200 + tm.linger), None);
    }
}
