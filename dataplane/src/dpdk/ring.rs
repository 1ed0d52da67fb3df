//! `rte_ring`s: lock-free FIFOs of pointers, shared between lcores and processes.

use super::{DpdkError, Result};
use dpdk_sys::rte_ring;
use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr::NonNull;

#[derive(Clone, Copy)]
pub struct Ring(NonNull<rte_ring>);

// SAFETY: rings are MP/MC safe unless created single-producer/consumer, and the users
// of such rings keep to one producer/consumer thread (documented where created).
unsafe impl Send for Ring {}
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates a ring of `count` (power of two) slots. `single` makes it
    /// single-producer/single-consumer.
    pub fn create(name: &str, count: u32, single: bool) -> Result<Ring> {
        let cname = CString::new(name).expect("ring name without NUL");
        let flags = if single {
            dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ
        } else {
            0
        };
        // SAFETY: valid name; DPDK validates count and flags.
        let p = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), count, -1, flags) };
        NonNull::new(p)
            .map(Ring)
            .ok_or_else(|| DpdkError::new(format!("rte_ring_create({name})"), -1))
    }

    pub fn lookup(name: &str) -> Result<Ring> {
        let cname = CString::new(name).expect("ring name without NUL");
        // SAFETY: valid name; NULL if absent.
        let p = unsafe { dpdk_sys::rte_ring_lookup(cname.as_ptr()) };
        NonNull::new(p)
            .map(Ring)
            .ok_or_else(|| DpdkError::new(format!("rte_ring_lookup({name})"), -1))
    }

    /// Enqueues as many of `objs` as fit; returns how many.
    #[inline]
    pub fn enqueue_burst(&self, objs: &[*mut c_void]) -> usize {
        // SAFETY: objs is a valid array of len pointers; the ring copies the pointer
        // values. Ownership of what they point to passes to the consumer (caller's
        // contract for the enqueued prefix).
        unsafe {
            dpdk_sys::shim_rte_ring_enqueue_burst(
                self.0.as_ptr(),
                objs.as_ptr(),
                objs.len() as u32,
                std::ptr::null_mut(),
            ) as usize
        }
    }

    /// Dequeues up to `out.len()` pointers.
    #[inline]
    pub fn dequeue_burst(&self, out: &mut [*mut c_void]) -> usize {
        // SAFETY: out is a valid writable array of len pointers.
        unsafe {
            dpdk_sys::shim_rte_ring_dequeue_burst(
                self.0.as_ptr(),
                out.as_mut_ptr(),
                out.len() as u32,
                std::ptr::null_mut(),
            ) as usize
        }
    }

    pub fn count(&self) -> usize {
        // SAFETY: reads ring indexes.
        unsafe { dpdk_sys::shim_rte_ring_count(self.0.as_ptr()) as usize }
    }
}
