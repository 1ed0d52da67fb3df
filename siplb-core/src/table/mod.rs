//! Lock-free tables that all workers (and the control plane, in another process) share:
//! laid over caller-provided memory (a DPDK memzone in the dataplane, a Vec in tests),
//! bounded work per operation, no allocation, no locks.

pub mod connection;
pub mod dialog;
pub mod dirty;
pub mod flow;
pub mod media;
pub mod registration;
pub mod source_ring;
pub mod sweep;
pub mod tcp_seq;

pub use connection::{ConnState, Connection, ConnectionTable};
pub use dialog::{Dialog, DialogState, DialogTable, Timers};
pub use dirty::{Changes, DirtyMarks, Pending};
pub use flow::{Entry, FlowTable, Slot, TableFull};
pub use registration::{Registration, RegistrationTable};
pub use sweep::{Sweep, Sweepable, Tally};
pub use tcp_seq::{Correction, SeqTable};
