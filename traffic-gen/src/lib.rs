//! `siplb-gen`: a testpmd-style SIP generator and stateless responder on DPDK.
//!
//! The packet logic is plain Rust over byte slices and is tested here without DPDK:
//! `text` and `frame` write and read the bytes, `scan` reads SIP lean, `request` builds
//! what the client sends, `responder` answers as N backends and keeps the stickiness
//! account, `client` is the per-call state machine with its `pacer`, `media` the RTP
//! streams of `--rtp-streams`, `flood` the spoofed requests of `--mode flood`, `stats` the counters, histogram and summaries. `app`
//! puts them on DPDK ports (the only module that touches mbufs).

pub mod app;
pub mod client;
pub mod flood;
pub mod frame;
pub mod media;
pub mod options;
pub mod pacer;
pub mod request;
pub mod responder;
pub mod scan;
pub mod stats;
pub mod stickiness;
pub mod text;
