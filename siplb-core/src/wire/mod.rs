//! Zero-copy views over the frames the balancer handles: Ethernet, ARP, IPv4, UDP,
//! ICMP, plus the Internet checksum. Each view validates lengths once in `new_checked`
//! and then reads and writes fields at named offsets (the smoltcp `wire` idea), so the
//! hot path never copies a payload.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;

pub use ethernet::MacAddr;

/// A frame was too short, or a length field disagreed with the bytes present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame truncated")]
    Truncated,
    #[error("malformed header")]
    Malformed,
}

#[inline(always)]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
