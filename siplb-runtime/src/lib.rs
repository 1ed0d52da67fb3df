//! What the siplb processes of one host share, so that the dataplane (the DPDK
//! primary), the control plane (a secondary) and the generator agree on it by
//! construction: the shared-memory layout (`shm`), the clock computed from it (`clock`),
//! and the names of the rings, memzones and files through which they meet (`names`);
//! and what each of them would otherwise write again: the stop flag its signals set
//! (`stop`) and the runner of iproute2's `ip` (`ip`, also used by the test bed).

pub mod clock;
pub mod ip;
pub mod names;
pub mod shm;
pub mod stop;
