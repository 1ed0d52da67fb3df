//! The siplb dataplane: the DPDK primary process that owns the ports and runs one
//! pinned worker per RX queue over the packet logic of `siplb-core`.
//!
//! The `dpdk` crate is its only way to DPDK; the rest is plain Rust over it.

pub mod app;
pub mod housekeeping;
pub mod limits;
pub mod preflight;
pub mod rcu;
pub mod sweeps;
pub mod worker;
