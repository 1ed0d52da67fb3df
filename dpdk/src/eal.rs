//! The Environment Abstraction Layer: initialised once per process, never retried.

use crate::{DpdkError, Result};
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is up in this process. Dropping it does not clean up: workers may
/// still be running; call `cleanup` explicitly at the very end.
pub struct Eal {
    _private: (),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessType {
    Primary,
    Secondary,
}

impl Eal {
    /// Initialises the EAL with `args` (argv[0] first). Fails cleanly, without touching
    /// DPDK, if called twice; DPDK itself cannot retry a failed init either.
    pub fn init(args: &[String]) -> Result<Eal> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError {
                what: "rte_eal_init".into(),
                code: libc::EALREADY,
                reason: "the EAL is already initialised in this process".into(),
            });
        }
        let cargs: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| DpdkError {
                what: "rte_eal_init".into(),
                code: libc::EINVAL,
                reason: "an EAL argument contains a NUL byte".into(),
            })?;
        let mut argv: Vec<*mut c_char> = cargs.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        // SAFETY: argv is a NULL-terminated array of valid C strings that outlive the
        // call (`cargs` lives until the end of this function); DPDK may permute the
        // pointers in argv but does not free or retain them past init (it copies what
        // it keeps). Called at most once per process (guarded above).
        let rc = unsafe { dpdk_sys::rte_eal_init(args.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError::new("rte_eal_init", rc));
        }
        Ok(Eal { _private: () })
    }

    pub fn process_type(&self) -> ProcessType {
        // SAFETY: valid after a successful init, which `self` proves.
        let t = unsafe { dpdk_sys::rte_eal_process_type() };
        if t == dpdk_sys::rte_proc_type_t_RTE_PROC_SECONDARY {
            ProcessType::Secondary
        } else {
            ProcessType::Primary
        }
    }

    /// The runtime directory of this process group (`/var/run/dpdk/<file-prefix>`).
    pub fn runtime_dir(&self) -> std::path::PathBuf {
        // SAFETY: valid after init; a static NUL-terminated string.
        let p = unsafe { std::ffi::CStr::from_ptr(dpdk_sys::rte_eal_get_runtime_dir()) };
        std::path::PathBuf::from(p.to_string_lossy().into_owned())
    }

    /// Number of Ethernet ports the EAL probed.
    pub fn port_count(&self) -> u16 {
        // SAFETY: valid after init.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// The worker lcores (every enabled lcore except the main one), in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut v = Vec::new();
        // SAFETY: plain queries of EAL state after init. rte_get_next_lcore with
        // skip_main=1 and wrap=0 returns RTE_MAX_LCORE when done.
        unsafe {
            let mut l = dpdk_sys::rte_get_next_lcore(u32::MAX, 1, 0);
            while l < dpdk_sys::RTE_MAX_LCORE {
                v.push(l);
                l = dpdk_sys::rte_get_next_lcore(l, 1, 0);
            }
        }
        v
    }

    /// Runs `f` on worker lcore `lcore`. The closure must be `'static` because the lcore
    /// thread outlives this call; join with `wait_all`.
    pub fn launch<F>(&self, lcore: u32, f: F) -> Result<()>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        type Job = Box<dyn FnOnce() -> i32 + Send>;
        extern "C" fn trampoline(arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the Box<Job> leaked by `launch` below, handed over exactly
            // once; we take ownership back here.
            let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
            // A panic must not unwind into C.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
        }
        let job: Box<Job> = Box::new(Box::new(f));
        let arg = Box::into_raw(job) as *mut c_void;
        // SAFETY: trampoline has the C signature DPDK expects; `arg` stays valid until
        // the trampoline consumes it. On failure DPDK did not take it, so we free it.
        let rc = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if rc != 0 {
            // SAFETY: the launch failed, so the job was never handed to the lcore.
            drop(unsafe { Box::from_raw(arg as *mut Job) });
            return Err(DpdkError::new(
                format!("rte_eal_remote_launch(lcore {lcore})"),
                rc,
            ));
        }
        Ok(())
    }

    /// Waits for every launched worker to return.
    pub fn wait_all(&self) {
        // SAFETY: valid after init; blocks until workers finish.
        unsafe { dpdk_sys::rte_eal_mp_wait_lcore() };
    }

    /// Releases EAL resources (hugepage files of a primary's memory included).
    pub fn cleanup(self) {
        // SAFETY: called once, after every worker returned and every DPDK object this
        // process uses is no longer touched.
        unsafe { dpdk_sys::rte_eal_cleanup() };
    }
}
