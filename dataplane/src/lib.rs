//! The siplb dataplane: the DPDK primary process that owns the ports and runs one
//! pinned worker per RX queue over the packet logic of `siplb-core`.
//!
//! `dpdk` is the only module with FFI calls; the rest is plain Rust over it.

pub mod app;
pub mod clock;
pub mod dpdk;
pub mod housekeeping;
pub mod preflight;
pub mod rcu;
pub mod shm;
pub mod worker;
