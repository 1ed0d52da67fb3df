//! Checks made before the EAL starts, so a missing privilege or hugepage mount is a
//! clear sentence instead of an EAL failure that cannot be retried.

use anyhow::{bail, Result};

/// Fails with what to do when the process is not root or hugepages are missing
/// (`--no-huge` in the EAL arguments skips the hugepage check).
pub fn check(eal_args: &[String]) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("siplb needs root: DPDK ports (af_packet, TAP, PCI), hugepages and shared memory need it. Run it with sudo or as root.");
    }
    if eal_args.iter().any(|a| a == "--no-huge") {
        return Ok(());
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo_value(&meminfo, "HugePages_Total:");
    let free = meminfo_value(&meminfo, "HugePages_Free:");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
    if total == Some(0) || total.is_none() {
        bail!("no hugepages are reserved: run `ci/setup-host.sh`, or `echo 512 > /proc/sys/vm/nr_hugepages` (2 MiB pages), then start again");
    }
    if !mounted {
        bail!("no hugetlbfs is mounted: run `ci/setup-host.sh`, or `mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages`");
    }
    if free == Some(0) {
        bail!("all {} hugepages are in use (another DPDK process, or files left in the hugetlbfs mount): stop it or remove its stale files, or reserve more pages", total.unwrap_or(0));
    }
    Ok(())
}

fn meminfo_value(meminfo: &str, key: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_values() {
        let m = "MemTotal: 1 kB\nHugePages_Total:     256\nHugePages_Free:      200\n";
        assert_eq!(meminfo_value(m, "HugePages_Total:"), Some(256));
        assert_eq!(meminfo_value(m, "HugePages_Free:"), Some(200));
        assert_eq!(meminfo_value(m, "Nope:"), None);
    }
}
