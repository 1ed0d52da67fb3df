//! The test bed for siplb's end-to-end tests and demo: namespaces and veth pairs in
//! 198.18.0.0/15, the real binaries started in them, real SIPp peers, and parsers for
//! what SIPp logged. Everything made here is removed on drop, also when a test panics.

pub mod bed;
pub mod bins;
pub mod capture;
pub mod ecmp;
pub mod kamailio;
pub mod netns;
pub mod pair;
pub mod phone_bed;
pub mod process;
pub mod rtp;
pub mod rtpengine;
pub mod siplb;
pub mod sipp;
pub mod softphone;
pub mod topology;

/// A short tag unique to this process and call, for names of namespaces, files and
/// DPDK file prefixes.
pub fn unique_tag(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{:x}{}",
        std::process::id() % 0xffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Skips nothing: the tests need root, and say so instead of passing silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "end-to-end tests need root (namespaces, DPDK): run ci/test.sh as root"
    );
}

/// Polls `ok` every 50 ms until it holds; panics naming `what` after `limit`. Prints
/// and returns how long it took.
pub fn wait_until(
    what: &str,
    limit: std::time::Duration,
    mut ok: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let took = start.elapsed();
    println!("{what}: {took:?}");
    took
}
