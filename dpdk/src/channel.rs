//! Byte messages between processes: each message is copied into the shared DPDK heap
//! (`rte_malloc`, visible at the same address in every process of the prefix), and its
//! pointer travels over an `rte_ring`. The receiver copies it out and frees it.

use crate::ring::RawRing;
use crate::{DpdkError, Result};
use std::os::raw::c_void;

/// One direction pair: we send on `tx` and receive on `rx`.
#[derive(Clone, Copy)]
pub struct Channel {
    tx: RawRing,
    rx: RawRing,
}

const MAX_MESSAGE: usize = 16 << 20;

impl Channel {
    /// The primary creates both rings: `commands` (any process → primary) and
    /// `replies` (primary → whoever asked); it receives commands and sends replies.
    pub fn create(commands: &str, replies: &str) -> Result<Channel> {
        let cmd = RawRing::create(commands, 64, false)?;
        let rsp = RawRing::create(replies, 64, false)?;
        Ok(Channel { tx: rsp, rx: cmd })
    }

    /// A secondary finds the rings and sends commands, receives replies. The names
    /// must be those the primary gave `create`: every pointer on them is a message.
    pub fn attach(commands: &str, replies: &str) -> Result<Channel> {
        Ok(Channel {
            tx: RawRing::lookup(commands)?,
            rx: RawRing::lookup(replies)?,
        })
    }

    /// Sends `msg`; fails if the ring is full or the shared heap has no room.
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        if msg.len() > MAX_MESSAGE {
            return Err(DpdkError {
                what: "control message".into(),
                code: libc::EMSGSIZE,
                reason: format!(
                    "{} bytes is more than the {MAX_MESSAGE}-byte limit",
                    msg.len()
                ),
            });
        }
        // SAFETY: rte_malloc returns NULL or a block of the requested size in the
        // shared heap, aligned to 8; the name is a static C string.
        let p = unsafe { dpdk_sys::rte_malloc(c"siplb_msg".as_ptr(), msg.len() + 8, 8) } as *mut u8;
        if p.is_null() {
            return Err(DpdkError::new("rte_malloc(control message)", -1));
        }
        // SAFETY: p points to msg.len() + 8 writable bytes that only we know about.
        unsafe {
            (p as *mut u64).write(msg.len() as u64);
            std::ptr::copy_nonoverlapping(msg.as_ptr(), p.add(8), msg.len());
        }
        if self.tx.enqueue_burst(&[p as *mut c_void]) != 1 {
            // SAFETY: not enqueued, so still ours.
            unsafe { dpdk_sys::rte_free(p as *mut c_void) };
            return Err(DpdkError {
                what: "control ring".into(),
                code: libc::ENOBUFS,
                reason: "full: the other side is not reading".into(),
            });
        }
        Ok(())
    }

    /// A received message, if any.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        let mut slot = [std::ptr::null_mut::<c_void>(); 1];
        // SAFETY: one writable slot for one pointer.
        if unsafe { self.rx.dequeue_burst(slot.as_mut_ptr(), 1) } != 1 || slot[0].is_null() {
            return None;
        }
        let p = slot[0] as *mut u8;
        // SAFETY: every pointer on these rings was made by `send`: an 8-byte length
        // followed by that many bytes, in the shared heap; the sender gave it up.
        let msg = unsafe {
            let len = (p as *const u64).read() as usize;
            let v = std::slice::from_raw_parts(p.add(8), len.min(MAX_MESSAGE)).to_vec();
            dpdk_sys::rte_free(p as *mut c_void);
            v
        };
        Some(msg)
    }
}
