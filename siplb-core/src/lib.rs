//! The packet logic of siplb, free of DPDK: it works on `&[u8]` / `&mut [u8]` and on
//! tables laid over caller-provided memory, so it can be unit-tested, fuzzed and
//! benchmarked without a NIC. The `dataplane` crate wraps it around mbufs.

pub mod alg;
pub mod config;
pub mod control;
pub mod hash;
pub mod health;
pub mod lb;
pub mod maglev;
pub mod sip;
pub mod table;
pub mod wire;
