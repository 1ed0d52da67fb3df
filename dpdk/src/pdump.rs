//! Packet capture support: lets `dpdk-dumpcap` (a secondary process) capture any port.
//! The RX/TX callbacks are installed only while a capture runs, so it costs nothing
//! otherwise.

use crate::{DpdkError, Result};

pub fn enable() -> Result<()> {
    // SAFETY: called once after EAL init in the primary.
    let rc = unsafe { dpdk_sys::rte_pdump_init() };
    if rc != 0 {
        return Err(DpdkError::new("rte_pdump_init", rc));
    }
    Ok(())
}
