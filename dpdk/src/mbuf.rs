//! Packet buffers. An `Mbuf` owns one `rte_mbuf` (chain) and frees it on drop; handing it
//! to TX or a ring gives ownership to DPDK.

use dpdk_sys::rte_mbuf;
use std::ptr::NonNull;

/// An owned packet buffer. `#[repr(transparent)]` over a non-null pointer, so
/// `[Option<Mbuf>; N]` has the layout of `[*mut rte_mbuf; N]` and bursts need no copy.
#[repr(transparent)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an mbuf is plain memory in a shared pool; ownership moves between threads
// (worker → TX, main → worker's ring) and only the owner touches it.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `p` must be a valid mbuf that nobody else owns or will free.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(p: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf(p)
    }

    /// Gives up ownership (to TX, a ring, or DPDK).
    #[inline(always)]
    pub(crate) fn into_raw(self) -> NonNull<rte_mbuf> {
        let p = self.0;
        std::mem::forget(self);
        p
    }

    #[inline(always)]
    fn raw(&self) -> &rte_mbuf {
        // SAFETY: we own a valid mbuf.
        unsafe { self.0.as_ref() }
    }

    #[inline(always)]
    fn raw_mut(&mut self) -> &mut rte_mbuf {
        // SAFETY: we own a valid mbuf, exclusively.
        unsafe { self.0.as_mut() }
    }

    /// Bytes in the first segment.
    #[inline(always)]
    pub fn data_len(&self) -> usize {
        usize::from(self.raw().data_len)
    }

    /// Bytes in the whole chain.
    #[inline(always)]
    pub fn pkt_len(&self) -> usize {
        self.raw().pkt_len as usize
    }

    #[inline(always)]
    pub fn segments(&self) -> u16 {
        self.raw().nb_segs
    }

    /// The port the packet arrived on (or should leave by, for injected packets).
    #[inline(always)]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    #[inline(always)]
    pub fn set_port(&mut self, p: u16) {
        self.raw_mut().port = p;
    }

    /// The first segment's data (`rte_pktmbuf_mtod`).
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's buffer by the
        // mbuf invariants; we own the mbuf so nobody writes it concurrently.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw();
        // SAFETY: as in `data`, and `&mut self` makes the access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Room for data in the first segment from `data_off` to the end of the buffer.
    pub fn capacity(&self) -> usize {
        let m = self.raw();
        usize::from(m.buf_len) - usize::from(m.data_off)
    }

    /// Sets the length of a single-segment mbuf; false if it does not fit.
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.capacity() || self.segments() != 1 {
            return false;
        }
        let m = self.raw_mut();
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        true
    }

    /// Prefetches the first cache line of packet data.
    #[inline(always)]
    pub fn prefetch(&self) {
        let m = self.raw();
        let p = (m.buf_addr as *const u8).wrapping_add(usize::from(m.data_off));
        // SAFETY: prefetch has no architectural effect and never faults.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; freeing returns the whole chain to its pool.
        unsafe { dpdk_sys::shim_rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// A burst of mbufs: filled by `Port::rx_burst` or `Ring::dequeue_burst`, or packet by
/// packet with `push` for `Ring::enqueue_burst`.
pub struct Burst<const N: usize> {
    slots: [Option<Mbuf>; N],
    len: usize,
}

impl<const N: usize> Default for Burst<N> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| None),
            len: 0,
        }
    }
}

impl<const N: usize> Burst<N> {
    /// Raw view for rx_burst / ring dequeue to fill; the burst must be empty.
    pub(crate) fn raw_slots(&mut self) -> *mut *mut rte_mbuf {
        debug_assert!(self.slots.iter().all(Option::is_none));
        self.slots.as_mut_ptr() as *mut *mut rte_mbuf
    }

    pub(crate) fn set_len(&mut self, n: usize) {
        self.len = n.min(N);
    }

    /// The packets still in the burst moved to its front, in order, and seen as the
    /// raw pointers DPDK takes (`Option<Mbuf>` has the layout of a pointer).
    pub(crate) fn packets_raw(&mut self) -> &[*mut std::os::raw::c_void] {
        let mut kept = 0;
        for i in 0..self.len {
            if self.slots[i].is_some() {
                self.slots.swap(i, kept);
                kept += 1;
            }
        }
        self.len = kept;
        // SAFETY: the first `kept` slots are `Some`, i.e. non-null mbuf pointers, and
        // the borrow of `self` keeps them in place while the slice lives.
        unsafe {
            std::slice::from_raw_parts(
                self.slots.as_ptr() as *const *mut std::os::raw::c_void,
                kept,
            )
        }
    }

    /// The first `n` packets (after `packets_raw`) now belong to DPDK: forget them.
    pub(crate) fn given_away(&mut self, n: usize) {
        for s in &mut self.slots[..n.min(self.len)] {
            if let Some(m) = s.take() {
                let _ = m.into_raw();
            }
        }
    }

    /// Appends `m`; gives it back when the burst is full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.is_full() {
            return Err(m);
        }
        self.slots[self.len] = Some(m);
        self.len += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_full(&self) -> bool {
        self.len == N
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Prefetch the data of packet `i` if present.
    #[inline(always)]
    pub fn prefetch(&self, i: usize) {
        if let Some(Some(m)) = self.slots[..self.len].get(i) {
            m.prefetch();
        }
    }

    /// Packet `i`, if present and not taken.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&Mbuf> {
        self.slots[..self.len].get(i)?.as_ref()
    }

    /// Takes packet `i` out of the burst.
    #[inline(always)]
    pub fn take(&mut self, i: usize) -> Option<Mbuf> {
        if i < self.len {
            self.slots[i].take()
        } else {
            None
        }
    }

    /// Empties the burst so it can be refilled: packets not taken out are freed.
    pub fn clear(&mut self) {
        for s in &mut self.slots[..self.len] {
            drop(s.take());
        }
        self.len = 0;
    }
}

impl<const N: usize> Drop for Burst<N> {
    fn drop(&mut self) {
        self.clear();
    }
}
