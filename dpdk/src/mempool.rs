//! Packet mempools.

use crate::mbuf::Mbuf;
use crate::{DpdkError, Result};
use dpdk_sys::rte_mempool;
use std::ffi::CString;
use std::ptr::NonNull;

/// A handle to a packet mempool. Mempools live until the process (primary) ends; the
/// handle is a plain pointer that any thread may use (mempool get/put is thread-safe).
#[derive(Clone, Copy)]
pub struct Mempool(NonNull<rte_mempool>);

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe.
unsafe impl Send for Mempool {}
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes each (headroom included).
    /// `cache` is the per-lcore cache (0 for pools shared with non-EAL threads).
    pub fn create(name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        let cname = CString::new(name).expect("pool name without NUL");
        // SAFETY: valid NUL-terminated name; numeric arguments checked by DPDK.
        let p = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket)
        };
        NonNull::new(p).map(Mempool).ok_or_else(|| {
            DpdkError::new(format!("rte_pktmbuf_pool_create({name}, {n} mbufs)"), -1)
        })
    }

    /// Finds a pool created by the primary (for secondaries).
    pub fn lookup(name: &str) -> Result<Mempool> {
        let cname = CString::new(name).expect("pool name without NUL");
        // SAFETY: valid name; returns NULL if absent.
        let p = unsafe { dpdk_sys::rte_mempool_lookup(cname.as_ptr()) };
        NonNull::new(p)
            .map(Mempool)
            .ok_or_else(|| DpdkError::new(format!("rte_mempool_lookup({name})"), -1))
    }

    pub(crate) fn as_ptr(&self) -> *mut rte_mempool {
        self.0.as_ptr()
    }

    /// One mbuf, or None if the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the process's life.
        let p = unsafe { dpdk_sys::shim_rte_pktmbuf_alloc(self.0.as_ptr()) };
        // SAFETY: a freshly allocated mbuf is owned by nobody else.
        NonNull::new(p).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// Free mbufs in the pool (approximate under concurrency).
    pub fn available(&self) -> u32 {
        // SAFETY: a read of pool counters.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.0.as_ptr()) }
    }
}
