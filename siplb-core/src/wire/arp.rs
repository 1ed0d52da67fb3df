//! ARP for IPv4 over Ethernet (RFC 826).

use super::ethernet::{self, EthernetFrame, MacAddr, ETHERTYPE_ARP};
use super::{get_u16, get_u32, set_u16, set_u32, WireError};
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;
const HTYPE: usize = 0;
const PTYPE: usize = 2;
const HLEN: usize = 4;
const PLEN: usize = 5;
const OPER: usize = 6;
const SHA: usize = 8;
const SPA: usize = 14;
const THA: usize = 18;
const TPA: usize = 24;

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A view over an ARP packet for IPv4 over Ethernet (the only kind the balancer answers).
pub struct ArpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if get_u16(b, HTYPE) != 1 || get_u16(b, PTYPE) != 0x0800 || b[HLEN] != 6 || b[PLEN] != 4 {
            return Err(WireError::Malformed);
        }
        Ok(Self { buf })
    }

    pub fn operation(&self) -> u16 {
        get_u16(self.buf.as_ref(), OPER)
    }

    pub fn sender_mac(&self) -> MacAddr {
        MacAddr(self.buf.as_ref()[SHA..SHA + 6].try_into().unwrap())
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        get_u32(self.buf.as_ref(), SPA).into()
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        get_u32(self.buf.as_ref(), TPA).into()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Turns a request into the reply that says `target_ip` is at `our_mac`, in place.
    pub fn make_reply(&mut self, our_mac: MacAddr) {
        let b = self.buf.as_mut();
        let (sha, spa) = (
            <[u8; 6]>::try_from(&b[SHA..SHA + 6]).unwrap(),
            get_u32(b, SPA),
        );
        let tpa = get_u32(b, TPA);
        set_u16(b, OPER, OP_REPLY);
        b[THA..THA + 6].copy_from_slice(&sha);
        set_u32(b, TPA, spa);
        b[SHA..SHA + 6].copy_from_slice(&our_mac.0);
        set_u32(b, SPA, tpa);
    }
}

/// Writes a complete Ethernet + ARP frame into `out` (at least 42 bytes; frames are
/// padded to the 60-byte minimum when `out` allows) and returns its length.
pub fn write_frame(
    out: &mut [u8],
    op: u16,
    src_mac: MacAddr,
    sender_ip: Ipv4Addr,
    dst_mac: MacAddr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> usize {
    let len = (ethernet::HEADER_LEN + PACKET_LEN).max(out.len().min(60));
    out[..len].fill(0);
    let mut eth = EthernetFrame::new_checked(&mut out[..len]).expect("caller gives >= 42 bytes");
    eth.set_dst(dst_mac);
    eth.set_src(src_mac);
    eth.set_ethertype(ETHERTYPE_ARP);
    let a = &mut out[ethernet::HEADER_LEN..];
    set_u16(a, HTYPE, 1);
    set_u16(a, PTYPE, 0x0800);
    a[HLEN] = 6;
    a[PLEN] = 4;
    set_u16(a, OPER, op);
    a[SHA..SHA + 6].copy_from_slice(&src_mac.0);
    set_u32(a, SPA, sender_ip.into());
    a[THA..THA + 6].copy_from_slice(&target_mac.0);
    set_u32(a, TPA, target_ip.into());
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_becomes_reply() {
        let mut f = [0u8; 60];
        let client = MacAddr([2, 0, 0, 0, 0, 1]);
        let ours = MacAddr([2, 0, 0, 0, 0, 2]);
        let n = write_frame(
            &mut f,
            OP_REQUEST,
            client,
            Ipv4Addr::new(198, 18, 0, 10),
            MacAddr::BROADCAST,
            MacAddr::ZERO,
            Ipv4Addr::new(198, 18, 0, 2),
        );
        assert_eq!(n, 60);
        let eth = etherparse::Ethernet2HeaderSlice::from_slice(&f).unwrap();
        assert_eq!(eth.ether_type(), etherparse::EtherType::ARP);
        let mut arp = ArpPacket::new_checked(&mut f[14..]).unwrap();
        assert_eq!(arp.operation(), OP_REQUEST);
        assert_eq!(arp.target_ip(), Ipv4Addr::new(198, 18, 0, 2));
        arp.make_reply(ours);
        assert_eq!(arp.operation(), OP_REPLY);
        assert_eq!(arp.sender_mac(), ours);
        assert_eq!(arp.sender_ip(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(arp.target_ip(), Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(&f[14 + THA..14 + THA + 6], &client.0);
    }

    #[test]
    fn non_ethernet_arp_is_malformed() {
        let mut f = [0u8; 28];
        f[1] = 6; // htype 6 (IEEE 802)
        assert_eq!(
            ArpPacket::new_checked(&f[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
