//! The load balancer proper, split by concern:
//!
//! - `dispatch`: `process`, the per-packet entry — Ethernet, ARP, the IPv4 checks that
//!   build a `Flow` (`packet`), and which stage handles the packet;
//! - `udp`: SIP over UDP, balanced per dialog (placement, tables, translation);
//! - `tcp`: SIP over TCP and TLS, balanced per connection; `alg_tcp`: the SIP ALG on
//!   TCP segments, with the connection's sequence corrections;
//! - `nat`: SNAT source, L3/L4 rewrite with incremental checksums, next hop;
//! - `media`: RTP/RTCP through the VIP (the SDP side for the ALG, and the forwarding
//!   of datagrams to media ports);
//! - `context`: what they all share (`Verdict`, `Tables`, `WorkerCtx`, the per-packet
//!   `Ctx`);
//!
//! and the state they read and write: the services snapshot (`services`), the
//! neighbour and SNAT tables, reassembly, the security policy, the counters and the
//! backends' response times (`timing`).

mod alg_rules;
mod alg_tcp;
mod backend_load;
mod context;
mod counter;
mod dispatch;
pub mod failover;
mod held;
pub mod load;
mod media;
mod nat;
mod packet;
mod tcp;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_failover;
#[cfg(test)]
mod tests_load;
#[cfg(test)]
mod tests_media;
#[cfg(test)]
mod tests_obs;
#[cfg(test)]
mod tests_security;
#[cfg(test)]
mod tests_tcp_alg;
mod udp;

pub mod counters;
pub mod neighbour;
pub mod reassembly;
pub mod security;
pub mod services;
pub mod sim;
pub mod snat;
pub mod timing;

pub use context::{ArpRequests, Tables, Verdict, WorkerCtx};
pub use counters::TcpAlgSkip;
pub use dispatch::{process, process_in};
pub use failover::{failover_poll, process_resend, resends_pending};
pub use media::media_leg;
pub use nat::{write_arp_request, write_gratuitous_arp};
pub use packet::Flow;
pub use udp::aor_key_of;
