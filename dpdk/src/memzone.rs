//! Memzones: named, physically backed shared memory that secondary processes map at the
//! same address as the primary.

use crate::{DpdkError, Result};
use std::ffi::CString;

/// A reserved or looked-up memzone. Memzones are never freed while the process runs, so
/// the memory is valid for `'static`.
#[derive(Clone, Copy)]
pub struct Memzone {
    addr: *mut u8,
    len: usize,
}

// SAFETY: shared memory; what is stored there is made of atomics or is written before
// publication (see the users).
unsafe impl Send for Memzone {}
unsafe impl Sync for Memzone {}

impl Memzone {
    /// Reserves `len` bytes, zero-filled, aligned to `align` (a power of two).
    pub fn reserve(name: &str, len: usize, align: u32) -> Result<Memzone> {
        let cname = CString::new(name).expect("memzone name without NUL");
        // SAFETY: valid name; SOCKET_ID_ANY = -1; flags 0 = any page size.
        let mz =
            unsafe { dpdk_sys::rte_memzone_reserve_aligned(cname.as_ptr(), len, -1, 0, align) };
        if mz.is_null() {
            return Err(DpdkError::new(
                format!("rte_memzone_reserve({name}, {} MiB)", len >> 20),
                -1,
            ));
        }
        // SAFETY: a non-null memzone descriptor stays valid until freed (never, here).
        let (addr, len) = unsafe { ((*mz).__bindgen_anon_1.addr as *mut u8, (*mz).len) };
        // SAFETY: the zone is `len` bytes of writable memory that only we know about yet.
        unsafe { std::ptr::write_bytes(addr, 0, len) };
        Ok(Memzone { addr, len })
    }

    /// Finds a memzone the primary reserved.
    pub fn lookup(name: &str) -> Result<Memzone> {
        let cname = CString::new(name).expect("memzone name without NUL");
        // SAFETY: valid name; NULL if absent.
        let mz = unsafe { dpdk_sys::rte_memzone_lookup(cname.as_ptr()) };
        if mz.is_null() {
            return Err(DpdkError::new(format!("rte_memzone_lookup({name})"), -1));
        }
        // SAFETY: as in reserve.
        let (addr, len) = unsafe { ((*mz).__bindgen_anon_1.addr as *mut u8, (*mz).len) };
        Ok(Memzone { addr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn addr(&self) -> *mut u8 {
        self.addr
    }

    /// Views the zone as `n` values of `T` starting at byte `offset`.
    ///
    /// # Safety
    /// `T` must be valid for any bit pattern that can be in the zone (all-zero at first;
    /// then whatever `T`'s own methods wrote), be shareable across threads/processes
    /// (atomics), and `offset` must be aligned for `T` with `n` values fitting.
    pub unsafe fn slice<T>(&self, offset: usize, n: usize) -> &'static [T] {
        assert!(
            offset + n * std::mem::size_of::<T>() <= self.len,
            "memzone too small"
        );
        let p = self.addr.add(offset) as *const T;
        assert_eq!(
            p as usize % std::mem::align_of::<T>(),
            0,
            "misaligned memzone view"
        );
        std::slice::from_raw_parts(p, n)
    }
}
