//! IPv4 headers (RFC 791): the fields a load balancer reads and rewrites.

use super::checksum;
use super::{get_u16, get_u32, set_u16, set_u32, WireError};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;
const VER_IHL: usize = 0;
const TOTAL_LEN: usize = 2;
const IDENT: usize = 4;
const FLAGS_FRAG: usize = 6;
const TTL: usize = 8;
const PROTOCOL: usize = 9;
const CHECKSUM: usize = 10;
const SRC: usize = 12;
const DST: usize = 16;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view over an IPv4 packet whose header and total length were checked against the
/// buffer: the header is complete, its checksum verifies, and `total_len` bytes exist
/// (trailing Ethernet padding beyond `total_len` is allowed and ignored).
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view over a buffer already validated by `new_checked` (accessors may panic
    /// on a buffer that was not).
    pub fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let hl = usize::from(b[VER_IHL] & 0x0f) * 4;
        let total = usize::from(get_u16(b, TOTAL_LEN));
        if hl < MIN_HEADER_LEN || total < hl {
            return Err(WireError::Malformed);
        }
        if b.len() < total {
            return Err(WireError::Truncated);
        }
        if checksum::checksum(&b[..hl]) != 0 {
            return Err(WireError::Malformed);
        }
        Ok(Self { buf })
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[VER_IHL] & 0x0f) * 4
    }

    pub fn total_len(&self) -> usize {
        usize::from(get_u16(self.buf.as_ref(), TOTAL_LEN))
    }

    pub fn ident(&self) -> u16 {
        get_u16(self.buf.as_ref(), IDENT)
    }

    pub fn dont_fragment(&self) -> bool {
        get_u16(self.buf.as_ref(), FLAGS_FRAG) & FLAG_DF != 0
    }

    pub fn more_fragments(&self) -> bool {
        get_u16(self.buf.as_ref(), FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(get_u16(self.buf.as_ref(), FLAGS_FRAG) & OFFSET_MASK) * 8
    }

    pub fn is_fragment(&self) -> bool {
        get_u16(self.buf.as_ref(), FLAGS_FRAG) & (FLAG_MF | OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[PROTOCOL]
    }

    pub fn src(&self) -> Ipv4Addr {
        get_u32(self.buf.as_ref(), SRC).into()
    }

    pub fn dst(&self) -> Ipv4Addr {
        get_u32(self.buf.as_ref(), DST).into()
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), CHECKSUM)
    }

    /// The bytes after the header, up to `total_len`.
    pub fn payload(&self) -> &[u8] {
        let (hl, total) = (self.header_len(), self.total_len());
        &self.buf.as_ref()[hl..total]
    }

    /// The header bytes (options included).
    pub fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn set_checksum(&mut self, c: u16) {
        set_u16(self.buf.as_mut(), CHECKSUM, c);
    }

    /// Rewrites the source address, updating the header checksum incrementally.
    #[inline]
    pub fn set_src(&mut self, a: Ipv4Addr) {
        let (old, new) = (u32::from(self.src()), u32::from(a));
        let c = checksum::update32(self.checksum(), old, new);
        set_u32(self.buf.as_mut(), SRC, new);
        self.set_checksum(c);
    }

    /// Rewrites the destination address, updating the header checksum incrementally.
    #[inline]
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        let (old, new) = (u32::from(self.dst()), u32::from(a));
        let c = checksum::update32(self.checksum(), old, new);
        set_u32(self.buf.as_mut(), DST, new);
        self.set_checksum(c);
    }

    /// Swaps source and destination (for replies); the checksum is unchanged by a swap.
    pub fn swap_addrs(&mut self) {
        let b = self.buf.as_mut();
        let (s, d) = (get_u32(b, SRC), get_u32(b, DST));
        set_u32(b, SRC, d);
        set_u32(b, DST, s);
    }

    /// Decrements TTL, returning false (and leaving it) when it would reach zero.
    #[inline]
    pub fn decrement_ttl(&mut self) -> bool {
        let ttl = self.ttl();
        if ttl <= 1 {
            return false;
        }
        // TTL shares its 16-bit word with the protocol byte.
        let old = get_u16(self.buf.as_ref(), TTL);
        self.buf.as_mut()[TTL] = ttl - 1;
        let new = get_u16(self.buf.as_ref(), TTL);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
        true
    }

    /// Sets the total length, updating the header checksum incrementally (RFC 1624).
    pub fn set_total_len(&mut self, len: u16) {
        let old = get_u16(self.buf.as_ref(), TOTAL_LEN);
        set_u16(self.buf.as_mut(), TOTAL_LEN, len);
        let c = checksum::update16(self.checksum(), old, len);
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), self.total_len());
        &mut self.buf.as_mut()[hl..total]
    }
}

/// Writes a 20-byte IPv4 header (no options) with a fresh checksum into `out`.
#[allow(clippy::too_many_arguments)]
pub fn write_header(
    out: &mut [u8],
    total_len: u16,
    ident: u16,
    more_fragments: bool,
    frag_offset_bytes: usize,
    ttl: u8,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) {
    out[VER_IHL] = 0x45;
    out[1] = 0;
    set_u16(out, TOTAL_LEN, total_len);
    set_u16(out, IDENT, ident);
    let mut ff = ((frag_offset_bytes / 8) as u16) & OFFSET_MASK;
    if more_fragments {
        ff |= FLAG_MF;
    }
    set_u16(out, FLAGS_FRAG, ff);
    out[TTL] = ttl;
    out[PROTOCOL] = protocol;
    set_u16(out, CHECKSUM, 0);
    set_u32(out, SRC, src.into());
    set_u32(out, DST, dst.into());
    let c = checksum::checksum(&out[..MIN_HEADER_LEN]);
    set_u16(out, CHECKSUM, c);
}

/// Sets the fragment fields of an existing header and recomputes its checksum (used
/// when cutting a datagram into fragments, where each header is written anyway).
pub fn set_fragment(hdr: &mut [u8], total_len: u16, more: bool, offset_bytes: usize) {
    let keep_df = get_u16(hdr, FLAGS_FRAG) & FLAG_DF;
    let mut ff = keep_df | (((offset_bytes / 8) as u16) & OFFSET_MASK);
    if more {
        ff |= FLAG_MF;
    }
    set_u16(hdr, FLAGS_FRAG, ff);
    set_u16(hdr, TOTAL_LEN, total_len);
    set_u16(hdr, CHECKSUM, 0);
    let hl = usize::from(hdr[VER_IHL] & 0x0f) * 4;
    let c = checksum::checksum(&hdr[..hl]);
    set_u16(hdr, CHECKSUM, c);
}

/// The one's-complement sum of the pseudo-header that UDP and TCP checksums cover.
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let (s, d) = (u32::from(src), u32::from(dst));
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(protocol) + u32::from(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 28];
        write_header(
            &mut b,
            28,
            7,
            false,
            0,
            64,
            PROTO_UDP,
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 2),
        );
        b
    }

    #[test]
    fn written_header_verifies_and_parses_with_etherparse() {
        let b = sample();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.src(), Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(p.payload().len(), 8);
        let (h, _) = etherparse::Ipv4Header::from_slice(&b).unwrap();
        assert_eq!(h.calc_header_checksum(), p.checksum());
    }

    #[test]
    fn rewrites_keep_the_checksum_valid() {
        let mut b = sample();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_dst(Ipv4Addr::new(198, 19, 1, 11));
        p.set_src(Ipv4Addr::new(198, 18, 255, 254));
        assert!(p.decrement_ttl());
        assert_eq!(checksum::checksum(p.header()), 0);
        assert_eq!(p.ttl(), 63);
        p.swap_addrs();
        assert_eq!(checksum::checksum(p.header()), 0);
    }

    #[test]
    fn bad_lengths_and_checksum_are_rejected() {
        let b = sample();
        assert_eq!(
            Ipv4Packet::new_checked(&b[..27]).err(),
            Some(WireError::Truncated)
        );
        let mut c = b.clone();
        c[0] = 0x44; // IHL 16 bytes
        assert!(Ipv4Packet::new_checked(&c[..]).is_err());
        let mut d = b.clone();
        d[8] ^= 1;
        assert_eq!(
            Ipv4Packet::new_checked(&d[..]).err(),
            Some(WireError::Malformed)
        );
        let mut e = b;
        e[3] = 10; // total length shorter than the header
        assert!(Ipv4Packet::new_checked(&e[..]).is_err());
    }

    #[test]
    fn fragment_fields() {
        let mut b = sample();
        set_fragment(&mut b[..20], 28, true, 1480);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_fragment() && p.more_fragments());
        assert_eq!(p.frag_offset(), 1480);
    }
}
