//! Raw bindings to the system DPDK 22.11 (bindgen output) plus the `shim_*` functions
//! that forward to DPDK's `static inline` API. Nothing else lives here: the safe layer is
//! in the `dataplane` crate.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]
#![allow(rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
