//! The stop flag of a siplb process (the dataplane, the control daemon, the
//! generator): SIGINT and SIGTERM set it once `on_signals` has run, the process may set
//! it itself (a `Shutdown` command), and its loops wind down when they see it.

use std::sync::atomic::{AtomicBool, Ordering};

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set `STOP` from now on.
pub fn on_signals() {
    // SAFETY: installing async-signal-safe handlers (they only store an atomic).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}
