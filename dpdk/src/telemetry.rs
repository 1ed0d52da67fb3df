//! DPDK telemetry: commands answered with a flat dictionary of u64 values, so
//! `dpdk-telemetry.py` (and anything speaking its socket protocol) reads siplb's
//! counters. The callback runs on DPDK's telemetry thread.

use crate::{DpdkError, Result};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::sync::OnceLock;

/// A source of (name, value) pairs for one telemetry command.
pub type Source = Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

static SOURCES: OnceLock<std::sync::Mutex<Vec<(CString, Source)>>> = OnceLock::new();

unsafe extern "C" fn callback(
    cmd: *const c_char,
    _params: *const c_char,
    d: *mut dpdk_sys::rte_tel_data,
) -> c_int {
    // SAFETY: DPDK passes the NUL-terminated command it matched.
    let cmd = unsafe { CStr::from_ptr(cmd) };
    let Some(sources) = SOURCES.get() else {
        return -1;
    };
    let sources = sources.lock().unwrap_or_else(|p| p.into_inner());
    let Some((_, f)) = sources.iter().find(|(c, _)| c.as_c_str() == cmd) else {
        return -1;
    };
    // SAFETY: `d` is the reply object DPDK handed us for this call.
    unsafe { dpdk_sys::rte_tel_data_start_dict(d) };
    for (name, value) in f() {
        let Ok(n) = CString::new(name) else { continue };
        // SAFETY: valid dict and NUL-terminated name; DPDK copies the name.
        unsafe { dpdk_sys::rte_tel_data_add_dict_u64(d, n.as_ptr(), value) };
    }
    0
}

/// Registers `cmd` (e.g. `/siplb/stats`) answered by `source`.
pub fn register(cmd: &str, help: &str, source: Source) -> Result<()> {
    let c = CString::new(cmd).expect("command without NUL");
    let h = CString::new(help).expect("help without NUL");
    SOURCES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((c.clone(), source));
    // SAFETY: static callback with the expected signature; DPDK copies the strings.
    let rc =
        unsafe { dpdk_sys::rte_telemetry_register_cmd(c.as_ptr(), Some(callback), h.as_ptr()) };
    if rc != 0 {
        return Err(DpdkError::new(
            format!("rte_telemetry_register_cmd({cmd})"),
            rc,
        ));
    }
    Ok(())
}
