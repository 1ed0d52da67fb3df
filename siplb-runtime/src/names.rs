//! The names through which the siplb processes of a host meet: DPDK objects (named
//! per file prefix, like every DPDK object: the primary creates each under its name,
//! a secondary looks it up) and files. The file prefix and the run directory are inputs
//! here: the configuration resolves them.

use std::path::{Path, PathBuf};

/// The control channel (`dpdk::channel`): commands to the dataplane, replies back.
pub const COMMAND_RING: &str = "siplb_cmd";
pub const REPLY_RING: &str = "siplb_rsp";
/// Frames the dataplane's main lcore hands to worker 0 to send (ARP).
pub const INJECT_RING: &str = "siplb_inject";
/// The dataplane's packet pool.
pub const PACKET_POOL: &str = "siplb_pkt";

/// The memzones of the shared-memory layout (`shm`). A secondary finds the header
/// first and checks its layout version before it looks up the others.
pub const MZ_HEADER: &str = "siplb_header";
pub const MZ_COUNTERS: &str = "siplb_counters";
pub const MZ_DIALOGS: &str = "siplb_dialogs";
pub const MZ_REGISTRATIONS: &str = "siplb_registrations";
pub const MZ_SNAT_FWD: &str = "siplb_snat_fwd";
pub const MZ_SNAT_REV: &str = "siplb_snat_rev";
pub const MZ_NEIGHBOURS: &str = "siplb_neighbours";
pub const MZ_DIRECTORY: &str = "siplb_directory";
pub const MZ_CONNECTIONS: &str = "siplb_connections";
pub const MZ_RATES: &str = "siplb_rates";
pub const MZ_MEDIA: &str = "siplb_media";
pub const MZ_TCP_SEQ: &str = "siplb_tcp_seq";
pub const MZ_REQUEST_TIMES: &str = "siplb_request_times";
pub const MZ_DIRTY: &str = "siplb_dirty";
/// Live load per backend slot (`lb::load`).
pub const MZ_BACKEND_LOAD: &str = "siplb_backend_load";
/// New sources for the control plane's DNSBL lookups (`table::source_ring`).
pub const MZ_NEW_SOURCES: &str = "siplb_new_sources";
/// New INVITEs and REGISTERs held for failover (`lb::failover`).
pub const MZ_HELD: &str = "siplb_held";

/// The DPDK runtime directory of `prefix` as the EAL of a root process makes it (the
/// dataplane asks its EAL, `Eal::runtime_dir`; a process not yet attached uses this).
pub fn dpdk_runtime_dir(prefix: &str) -> PathBuf {
    Path::new("/var/run/dpdk").join(prefix)
}

/// Written by the dataplane into its DPDK runtime directory once its workers run;
/// holds its PID.
pub fn ready_file(dpdk_runtime_dir: &Path) -> PathBuf {
    dpdk_runtime_dir.join("siplb-dataplane.ready")
}

/// Held (`flock`) by the one `siplb run` of `prefix`; holds its PID.
pub fn lock_file(run_dir: &Path, prefix: &str) -> PathBuf {
    run_dir.join(format!("{prefix}.lock"))
}

/// The blocklist feeds' prefixes, written by the control daemon for the dataplane
/// (`lb::security::feed`).
pub fn feeds_file(run_dir: &Path, prefix: &str) -> PathBuf {
    run_dir.join(format!("{prefix}-feeds.bin"))
}

/// The control daemon's Unix socket, which the other `siplb` subcommands talk to.
pub fn socket_file(run_dir: &Path, prefix: &str) -> PathBuf {
    run_dir.join(format!("{prefix}.sock"))
}

/// The BIRD configuration the control daemon writes with `[bgp]` (unless
/// `bgp.config_file` names another).
pub fn bird_config_file(run_dir: &Path, prefix: &str) -> PathBuf {
    run_dir.join(format!("bird-{prefix}.conf"))
}

/// BIRD's control socket for `birdc` (unless `bgp.socket` names another).
pub fn bird_socket_file(run_dir: &Path, prefix: &str) -> PathBuf {
    run_dir.join(format!("bird-{prefix}.ctl"))
}
