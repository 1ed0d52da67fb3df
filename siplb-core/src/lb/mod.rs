//! The load balancer proper: the per-packet decision (`balancer`), the snapshot of
//! services it reads (`services`), the shared tables it writes besides the dialog and
//! registration tables (`neighbour`, `snat`), and the counters it keeps.

pub mod balancer;
pub mod counters;
pub mod neighbour;
pub mod reassembly;
pub mod security;
pub mod services;
pub mod sim;
pub mod snat;
pub mod tcp;
