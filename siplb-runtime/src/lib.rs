//! What the siplb processes of one host share, so that the dataplane (the DPDK
//! primary), the control plane (a secondary) and the generator agree on it by
//! construction: the shared-memory layout (`shm`), the clock computed from it (`clock`),
//! and the names of the rings, memzones and files through which they meet (`names`).

pub mod clock;
pub mod names;
pub mod shm;
