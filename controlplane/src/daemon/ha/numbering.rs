//! What both units of a pair must number alike for replicated entries to mean the
//! same thing on both: farm indexes (dialogs name their farm by index), backend slots
//! (and their backend), SNAT address slots (reverse indexes) and media port pools.
//! Each part is hashed separately so a mismatch can be named.

use runtime::shm::DirEntry;
use siplb_core::config::Config;
use siplb_core::hash::hash64;
use std::fmt::Write;

pub const PARTS: [&str; 4] = [
    "farms (order, VIP, port, NAT mode)",
    "backend slots (farm, address, port)",
    "SNAT address pools",
    "media port pools",
];

pub type Digests = [u64; 4];

pub fn digests(cfg: &Config, directory: &[DirEntry]) -> Digests {
    let mut parts = [String::new(), String::new(), String::new(), String::new()];
    for f in &cfg.farms {
        let _ = write!(parts[0], "{} {}:{} {:?};", f.name, f.vip, f.port, f.nat);
        let _ = write!(parts[2], "{}: {:?};", f.name, f.snat_pool());
        let _ = write!(parts[3], "{}: {:?};", f.name, f.media_ports());
    }
    for (i, e) in directory.iter().enumerate() {
        if let Some((farm, addr, port)) = e.get() {
            let _ = write!(parts[1], "{i} {farm} {addr}:{port};");
        }
    }
    parts.map(|p| hash64(p.as_bytes()))
}

/// None when both agree, else the parts that differ, for the log and `siplb status`.
pub fn differs(ours: &Digests, peer: &Digests) -> Option<String> {
    let parts: Vec<&str> = (0..4)
        .filter(|&i| ours[i] != peer[i])
        .map(|i| PARTS[i])
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "peer's farm/backend numbering differs: {} (apply the same configuration and backend changes, in the same order, to both units)",
            parts.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_names_its_part() {
        let a = [1, 2, 3, 4];
        assert_eq!(differs(&a, &a), None);
        let m = differs(&a, &[1, 9, 3, 5]).unwrap();
        assert!(
            m.starts_with("peer's farm/backend numbering differs: backend slots"),
            "{m}"
        );
        assert!(m.contains("media port pools") && !m.contains("SNAT"), "{m}");
    }
}
