//! UDP headers (RFC 768) with checksum maintenance over the IPv4 pseudo-header.

use super::checksum;
use super::ipv4;
use super::{get_u16, set_u16, WireError};
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 8;
const SRC_PORT: usize = 0;
const DST_PORT: usize = 2;
const LENGTH: usize = 4;
const CHECKSUM: usize = 6;

/// A view over a UDP datagram whose length field was checked against the buffer.
pub struct UdpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view over a buffer already validated by `new_checked` (accessors may panic
    /// on a buffer that was not).
    pub fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(get_u16(b, LENGTH));
        if len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buf })
    }

    pub fn src_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), DST_PORT)
    }

    pub fn len(&self) -> usize {
        usize::from(get_u16(self.buf.as_ref(), LENGTH))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.len()]
    }

    /// Verifies the checksum (a zero checksum means "none" for UDP over IPv4).
    pub fn verify(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let b = &self.buf.as_ref()[..self.len()];
        let acc = ipv4::pseudo_header_sum(src, dst, ipv4::PROTO_UDP, b.len() as u16);
        checksum::fold(checksum::sum(acc, b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Applies a checksum delta unless the sender sent none (0), which stays none; a
    /// computed 0 is sent as 0xffff (RFC 768).
    #[inline]
    fn patch(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = self.checksum();
        if c == 0 {
            return;
        }
        let n = f(c);
        set_u16(self.buf.as_mut(), CHECKSUM, if n == 0 { 0xffff } else { n });
    }

    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        let old = self.src_port();
        self.patch(|c| checksum::update16(c, old, p));
        set_u16(self.buf.as_mut(), SRC_PORT, p);
    }

    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        let old = self.dst_port();
        self.patch(|c| checksum::update16(c, old, p));
        set_u16(self.buf.as_mut(), DST_PORT, p);
    }

    /// Accounts for an IPv4 address of the pseudo-header changing from `old` to `new`.
    #[inline]
    pub fn pseudo_addr_changed(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        self.patch(|c| checksum::update32(c, old.into(), new.into()));
    }

    /// Swaps the ports (for replies); the checksum is unchanged by a swap.
    pub fn swap_ports(&mut self) {
        let (s, d) = (self.src_port(), self.dst_port());
        let b = self.buf.as_mut();
        set_u16(b, SRC_PORT, d);
        set_u16(b, DST_PORT, s);
    }

    /// Computes the checksum from scratch (for datagrams the balancer builds itself).
    /// Sets the length field (header included); the checksum is not updated.
    pub fn set_len(&mut self, len: u16) {
        set_u16(self.buf.as_mut(), LENGTH, len);
    }

    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = self.len();
        set_u16(self.buf.as_mut(), CHECKSUM, 0);
        let b = &self.buf.as_ref()[..len];
        let acc = ipv4::pseudo_header_sum(src, dst, ipv4::PROTO_UDP, len as u16);
        let c = !checksum::fold(checksum::sum(acc, b));
        set_u16(self.buf.as_mut(), CHECKSUM, if c == 0 { 0xffff } else { c });
    }
}

/// Writes a UDP header for `payload_len` bytes of payload, checksum zero.
pub fn write_header(out: &mut [u8], src_port: u16, dst_port: u16, payload_len: usize) {
    set_u16(out, SRC_PORT, src_port);
    set_u16(out, DST_PORT, dst_port);
    set_u16(out, LENGTH, (HEADER_LEN + payload_len) as u16);
    set_u16(out, CHECKSUM, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_rewrite_keeps_checksum_valid() {
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 2));
        let payload = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
        let mut d = vec![0u8; HEADER_LEN + payload.len()];
        write_header(&mut d, 5060, 5060, payload.len());
        d[HEADER_LEN..].copy_from_slice(payload);
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.fill_checksum(a, b);
        assert!(u.verify(a, b));
        let backend = Ipv4Addr::new(198, 19, 1, 11);
        u.pseudo_addr_changed(b, backend);
        u.set_dst_port(5080);
        assert!(u.verify(a, backend));
        u.swap_ports();
        assert!(u.verify(a, backend));
        assert_eq!(u.src_port(), 5080);
    }

    #[test]
    fn zero_checksum_stays_zero() {
        let mut d = [0u8; 8];
        write_header(&mut d, 1, 2, 0);
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        u.set_dst_port(5060);
        assert_eq!(u.checksum(), 0);
    }

    #[test]
    fn length_longer_than_buffer_is_truncated() {
        let mut d = [0u8; 12];
        write_header(&mut d, 1, 2, 10);
        assert_eq!(
            UdpPacket::new_checked(&d[..]).err(),
            Some(WireError::Truncated)
        );
    }
}
