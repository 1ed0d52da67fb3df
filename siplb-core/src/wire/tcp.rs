//! TCP headers (RFC 9293): ports, sequence numbers, flags, SACK blocks (RFC 2018), and
//! checksum maintenance for NAT. The SIP ALG may change the byte stream's length; the
//! sequence numbers and SACK edges are then mapped with incremental checksum updates.

use super::checksum;
use super::ipv4;
use super::{get_u16, get_u32, set_u16, set_u32, WireError};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;
const SRC_PORT: usize = 0;
const DST_PORT: usize = 2;
const SEQ: usize = 4;
const ACK_NUM: usize = 8;
const DATA_OFF: usize = 12;
const FLAGS: usize = 13;
const CHECKSUM: usize = 16;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Option kinds (RFC 9293 §3.1, RFC 2018 §3).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_SACK: u8 = 5;

/// A view over a TCP segment whose header length was checked against the buffer.
pub struct TcpSegment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    pub fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = usize::from(b[DATA_OFF] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if hl > b.len() {
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

    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[FLAGS]
    }

    /// The header's length with its options (the data offset), as checked.
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[DATA_OFF] >> 4) * 4
    }

    pub fn seq(&self) -> u32 {
        get_u32(self.buf.as_ref(), SEQ)
    }

    pub fn ack(&self) -> u32 {
        get_u32(self.buf.as_ref(), ACK_NUM)
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), CHECKSUM)
    }

    /// Verifies the checksum over the pseudo-header and the whole segment.
    pub fn verify(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buf.as_ref();
        let acc = ipv4::pseudo_header_sum(src, dst, ipv4::PROTO_TCP, b.len() as u16);
        checksum::fold(checksum::sum(acc, b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    #[inline]
    fn patch(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = f(self.checksum());
        set_u16(self.buf.as_mut(), CHECKSUM, c);
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

    /// Sets the sequence number, updating the checksum.
    pub fn set_seq(&mut self, v: u32) {
        let old = self.seq();
        self.patch(|c| checksum::update32(c, old, v));
        set_u32(self.buf.as_mut(), SEQ, v);
    }

    /// Sets the acknowledgment number, updating the checksum.
    pub fn set_ack(&mut self, v: u32) {
        let old = self.ack();
        self.patch(|c| checksum::update32(c, old, v));
        set_u32(self.buf.as_mut(), ACK_NUM, v);
    }

    /// Maps every edge of the SACK blocks in the options through `f`, updating the
    /// checksum; returns how many edges it mapped. Options after a malformed one are
    /// left alone (the receiver ignores them too).
    pub fn map_sack(&mut self, f: impl Fn(u32) -> u32) -> usize {
        let hl = self.header_len().min(self.buf.as_ref().len());
        let mut at = MIN_HEADER_LEN;
        let mut mapped = 0;
        while at < hl {
            let kind = self.buf.as_ref()[at];
            if kind == OPT_END {
                break;
            }
            if kind == OPT_NOP {
                at += 1;
                continue;
            }
            let len = match self.buf.as_ref().get(at + 1) {
                Some(&l) if l >= 2 && at + usize::from(l) <= hl => usize::from(l),
                _ => break,
            };
            if kind == OPT_SACK {
                // Blocks of two 32-bit edges after kind and length.
                let mut e = at + 2;
                while e + 4 <= at + len {
                    let old = get_u32(self.buf.as_ref(), e);
                    let new = f(old);
                    if new != old {
                        self.patch(|c| checksum::update32(c, old, new));
                        set_u32(self.buf.as_mut(), e, new);
                    }
                    mapped += 1;
                    e += 4;
                }
            }
            at += len;
        }
        mapped
    }

    /// Accounts for an IPv4 address of the pseudo-header changing.
    #[inline]
    pub fn pseudo_addr_changed(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        self.patch(|c| checksum::update32(c, old.into(), new.into()));
    }

    /// Computes the checksum from scratch (tests, segments the balancer builds).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        set_u16(self.buf.as_mut(), CHECKSUM, 0);
        let b = self.buf.as_ref();
        let acc = ipv4::pseudo_header_sum(src, dst, ipv4::PROTO_TCP, b.len() as u16);
        let c = !checksum::fold(checksum::sum(acc, b));
        set_u16(self.buf.as_mut(), CHECKSUM, c);
    }
}

/// Writes a 20-byte TCP header with the given flags (checksum zero).
pub fn write_header(out: &mut [u8], src_port: u16, dst_port: u16, seq: u32, ack: u32, flags: u8) {
    out[..MIN_HEADER_LEN].fill(0);
    set_u16(out, SRC_PORT, src_port);
    set_u16(out, DST_PORT, dst_port);
    out[4..8].copy_from_slice(&seq.to_be_bytes());
    out[8..12].copy_from_slice(&ack.to_be_bytes());
    out[DATA_OFF] = 5 << 4;
    out[FLAGS] = flags;
    set_u16(out, 14, 65535);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_rewrite_keeps_the_checksum_valid() {
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 2));
        let mut seg = vec![0u8; 20 + 11];
        write_header(&mut seg, 40000, 5060, 7, 0, SYN);
        seg[20..].copy_from_slice(b"OPTIONS sip");
        let mut t = TcpSegment::new_checked(&mut seg[..]).unwrap();
        t.fill_checksum(a, b);
        assert!(t.verify(a, b));
        let backend = Ipv4Addr::new(198, 18, 1, 11);
        t.pseudo_addr_changed(b, backend);
        t.set_dst_port(5080);
        assert!(t.verify(a, backend));
        assert_eq!(t.flags(), SYN);
    }

    #[test]
    fn seq_ack_and_sack_edges_move_with_the_checksum_valid() {
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 2));
        // Header with NOP, NOP, SACK of two blocks (20 bytes of options), then data.
        let mut seg = vec![0u8; 40 + 5];
        write_header(&mut seg, 40000, 5060, 7, 9, ACK);
        seg[DATA_OFF] = 10 << 4;
        seg[20..24].copy_from_slice(&[OPT_NOP, OPT_NOP, OPT_SACK, 18]);
        for (i, edge) in [100u32, 200, 300, 400].iter().enumerate() {
            seg[24 + 4 * i..28 + 4 * i].copy_from_slice(&edge.to_be_bytes());
        }
        seg[40..].copy_from_slice(b"hello");
        let mut t = TcpSegment::new_checked(&mut seg[..]).unwrap();
        t.fill_checksum(a, b);
        assert_eq!(t.header_len(), 40);
        t.set_seq(u32::MAX);
        t.set_ack(12345);
        assert_eq!(t.map_sack(|e| e.wrapping_sub(7)), 4);
        assert!(t.verify(a, b));
        assert_eq!((t.seq(), t.ack()), (u32::MAX, 12345));
        let edges: Vec<u32> = (0..4).map(|i| get_u32(&seg, 24 + 4 * i)).collect();
        assert_eq!(edges, [93, 193, 293, 393]);
        // A malformed option stops the walk.
        seg[22..24].copy_from_slice(&[OPT_SACK, 1]);
        let mut t = TcpSegment::new_checked(&mut seg[..]).unwrap();
        assert_eq!(t.map_sack(|e| e + 1), 0);
    }

    #[test]
    fn bad_data_offset_is_rejected() {
        let mut seg = [0u8; 20];
        write_header(&mut seg, 1, 2, 0, 0, ACK);
        seg[12] = 4 << 4;
        assert!(TcpSegment::new_checked(&seg[..]).is_err());
        seg[12] = 15 << 4;
        assert_eq!(
            TcpSegment::new_checked(&seg[..]).err(),
            Some(WireError::Truncated)
        );
    }
}
