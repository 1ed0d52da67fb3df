//! The dataplane's stop flag: set by SIGINT/SIGTERM or a `Shutdown` command, read by
//! the workers and the main lcore's loop, which then wind down.

use std::sync::atomic::{AtomicBool, Ordering};

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set `STOP`.
pub fn on_signals() {
    // SAFETY: installing async-signal-safe handlers (they only store an atomic).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}
