//! `rte_ring`s: lock-free FIFOs of pointers, shared between lcores and processes.
//!
//! `Ring` carries mbufs, and their ownership, by value. The control channel's rings
//! carry messages instead (`channel.rs`); both sit on the crate-private `RawRing`, so a
//! caller outside this crate never puts a pointer on a ring nor takes one off.

use crate::mbuf::{Burst, Mbuf};
use crate::{DpdkError, Result};
use dpdk_sys::rte_ring;
use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr::NonNull;

/// A ring of untyped pointers: what they point to is its user's contract.
#[derive(Clone, Copy)]
pub(crate) struct RawRing(NonNull<rte_ring>);

// SAFETY: rings are MP/MC safe unless created single-producer/consumer, and the users
// of such rings keep to one producer/consumer thread (documented where created).
unsafe impl Send for RawRing {}
unsafe impl Sync for RawRing {}

impl RawRing {
    /// Creates a ring of `count` (power of two) slots. `single` makes it
    /// single-producer/single-consumer.
    pub(crate) fn create(name: &str, count: u32, single: bool) -> Result<RawRing> {
        let cname = CString::new(name).expect("ring name without NUL");
        let flags = if single {
            dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ
        } else {
            0
        };
        // SAFETY: valid name; DPDK validates count and flags.
        let p = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), count, -1, flags) };
        NonNull::new(p)
            .map(RawRing)
            .ok_or_else(|| DpdkError::new(format!("rte_ring_create({name})"), -1))
    }

    pub(crate) fn lookup(name: &str) -> Result<RawRing> {
        let cname = CString::new(name).expect("ring name without NUL");
        // SAFETY: valid name; NULL if absent.
        let p = unsafe { dpdk_sys::rte_ring_lookup(cname.as_ptr()) };
        NonNull::new(p)
            .map(RawRing)
            .ok_or_else(|| DpdkError::new(format!("rte_ring_lookup({name})"), -1))
    }

    /// Enqueues as many of `objs` as fit; returns how many. What the enqueued prefix
    /// points to now belongs to the consumer.
    #[inline]
    pub(crate) fn enqueue_burst(&self, objs: &[*mut c_void]) -> usize {
        // SAFETY: objs is a valid array of len pointers; the ring copies the values.
        unsafe {
            dpdk_sys::shim_rte_ring_enqueue_burst(
                self.0.as_ptr(),
                objs.as_ptr(),
                objs.len() as u32,
                std::ptr::null_mut(),
            ) as usize
        }
    }

    /// Dequeues up to `n` pointers into `out`; returns how many.
    ///
    /// # Safety
    /// `out` must have room for `n` pointers.
    #[inline]
    pub(crate) unsafe fn dequeue_burst(&self, out: *mut *mut c_void, n: usize) -> usize {
        // SAFETY: the caller gives `n` writable pointer slots.
        unsafe {
            dpdk_sys::shim_rte_ring_dequeue_burst(
                self.0.as_ptr(),
                out,
                n as u32,
                std::ptr::null_mut(),
            ) as usize
        }
    }
}

/// A ring of mbufs: enqueuing gives an mbuf to whoever dequeues it.
#[derive(Clone, Copy)]
pub struct Ring(RawRing);

impl Ring {
    /// Creates a ring of `count` (power of two) slots. `single` makes it
    /// single-producer/single-consumer. The name must be new to the file prefix: only
    /// this handle (and its copies) ever reach the ring, so it carries nothing but mbufs.
    pub fn create(name: &str, count: u32, single: bool) -> Result<Ring> {
        RawRing::create(name, count, single).map(Ring)
    }

    /// Hands `m` to the consumer; gives it back when the ring is full.
    #[inline]
    pub fn enqueue(&self, m: Mbuf) -> std::result::Result<(), Mbuf> {
        let p = m.into_raw();
        if self.0.enqueue_burst(&[p.as_ptr() as *mut c_void]) == 1 {
            Ok(())
        } else {
            // SAFETY: not enqueued, so still ours.
            Err(unsafe { Mbuf::from_raw(p) })
        }
    }

    /// Hands over the packets of `burst`, in order, as far as the ring has room;
    /// returns how many went. The rest stay in `burst`.
    pub fn enqueue_burst<const N: usize>(&self, burst: &mut Burst<N>) -> usize {
        let n = self.0.enqueue_burst(burst.packets_raw());
        burst.given_away(n);
        n
    }

    /// Dequeues up to N mbufs into an empty `burst`; returns how many.
    #[inline]
    pub fn dequeue_burst<const N: usize>(&self, burst: &mut Burst<N>) -> usize {
        // SAFETY: the burst's slots are N writable pointer slots. Only `enqueue` and
        // `enqueue_burst` put pointers on a `Ring`, each an mbuf given up by its owner,
        // so what DPDK writes there are owned mbufs, ownership passing to the burst.
        let n = unsafe {
            self.0
                .dequeue_burst(burst.raw_slots() as *mut *mut c_void, N)
        };
        burst.set_len(n);
        n
    }
}
