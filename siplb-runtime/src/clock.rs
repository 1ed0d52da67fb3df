//! The coarse clock the tables use: whole seconds since the Unix epoch as a u32, derived
//! from the TSC (no system call on the hot path). Every process attached to the
//! dataplane computes the same value from the calibration stored in shared memory.

use dpdk::lcore;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Clock {
    pub tsc0: u64,
    pub hz: u64,
    pub unix0: u64,
}

impl Clock {
    /// Calibrates against the system clock now (EAL must be up).
    pub fn calibrate() -> Clock {
        let unix0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Clock {
            tsc0: lcore::tsc(),
            hz: lcore::tsc_hz().max(1),
            unix0,
        }
    }

    /// Milliseconds since the calibration (the same on every process attached to the
    /// dataplane): for liveness stamps finer than the tables' seconds.
    #[inline]
    pub fn millis(&self) -> u64 {
        (u128::from(lcore::tsc().wrapping_sub(self.tsc0)) * 1000 / u128::from(self.hz)) as u64
    }

    /// Microseconds since the calibration: the backends' response times (read once
    /// per burst by the workers).
    #[inline]
    pub fn micros(&self) -> u64 {
        (u128::from(lcore::tsc().wrapping_sub(self.tsc0)) * 1_000_000 / u128::from(self.hz)) as u64
    }

    /// Seconds since the Unix epoch.
    #[inline(always)]
    pub fn now(&self) -> u32 {
        (self.unix0 + lcore::tsc().wrapping_sub(self.tsc0) / self.hz) as u32
    }
}
