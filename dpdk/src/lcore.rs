//! Lcore identity and the TSC clock.

/// The calling thread's lcore id (`u32::MAX` for threads DPDK does not know).
#[inline]
pub fn id() -> u32 {
    // SAFETY: reads a thread-local.
    unsafe { dpdk_sys::shim_rte_lcore_id() }
}

/// The time-stamp counter.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: rdtsc has no memory effects.
    unsafe { dpdk_sys::shim_rte_rdtsc() }
}

/// TSC ticks per second, as the EAL measured it.
pub fn tsc_hz() -> u64 {
    // SAFETY: valid after EAL init; a plain read.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

#[inline(always)]
pub fn pause() {
    // SAFETY: the `pause` instruction.
    unsafe { dpdk_sys::shim_rte_pause() }
}
