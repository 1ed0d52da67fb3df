//! The safe layer over DPDK: the only place in siplb that calls the FFI. Every `unsafe`
//! block says why it is sound. Above this layer code handles `Mbuf`s, `Port`s, `Ring`s
//! and `Memzone`s and never a raw pointer.

pub mod channel;
pub mod eal;
pub mod lcore;
pub mod mbuf;
pub mod mempool;
pub mod memzone;
pub mod pdump;
pub mod port;
pub mod ring;
pub mod telemetry;

use std::ffi::CStr;

/// Prefetches the first cache line of `r` (a table entry the next packets will use), as
/// `rte_prefetch0` does.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    // SAFETY: a prefetch has no architectural effect and never faults; the address is
    // that of a live reference.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch(
            (r as *const T).cast::<i8>(),
            std::arch::x86_64::_MM_HINT_T0,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// A DPDK call failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason} (errno {code})")]
pub struct DpdkError {
    pub what: String,
    pub code: i32,
    pub reason: String,
}

impl DpdkError {
    /// Builds an error from a negative return code, or from `rte_errno` when `code` is
    /// not an errno (`-1` or a NULL return).
    pub fn new(what: impl Into<String>, code: i32) -> Self {
        let code = if code < -1 { -code } else { errno() };
        DpdkError {
            what: what.into(),
            code,
            reason: strerror(code),
        }
    }
}

/// The calling thread's `rte_errno`.
pub fn errno() -> i32 {
    // SAFETY: reads a thread-local through a C getter; no arguments, no shared state.
    unsafe { dpdk_sys::shim_rte_errno() }
}

/// DPDK's text for an error code (covers its own codes as well as libc's).
pub fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated
    // string that stays valid until the next call on this thread; we copy it at once.
    unsafe {
        let p = dpdk_sys::rte_strerror(code);
        if p.is_null() {
            return format!("error {code}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

pub type Result<T> = std::result::Result<T, DpdkError>;
