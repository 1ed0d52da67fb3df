//! Writing SIP text into a fixed buffer without allocating: bytes, decimal and
//! fixed-width hexadecimal numbers, dotted IPv4 addresses.

use std::net::Ipv4Addr;

/// A cursor over an output buffer. Writes past the end are dropped and remembered, so
/// a message that does not fit is refused once at the end (`finish`).
pub struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl<'a> Out<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out {
            buf,
            len: 0,
            overflow: false,
        }
    }

    #[inline]
    pub fn put(&mut self, b: &[u8]) -> &mut Self {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.overflow = true,
        }
        self
    }

    #[inline]
    pub fn byte(&mut self, c: u8) -> &mut Self {
        self.put(&[c])
    }

    /// `v` as exactly `digits` lower-case hex digits (the low ones).
    #[inline]
    pub fn hex(&mut self, v: u64, digits: usize) -> &mut Self {
        let mut tmp = [0u8; 16];
        let d = digits.min(16);
        for (i, t) in tmp[..d].iter_mut().enumerate() {
            *t = HEX[((v >> (4 * (d - 1 - i))) & 0xf) as usize];
        }
        self.put(&tmp[..d])
    }

    #[inline]
    pub fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&tmp[i..])
    }

    pub fn ip(&mut self, a: Ipv4Addr) -> &mut Self {
        let o = a.octets();
        self.dec(o[0].into()).byte(b'.').dec(o[1].into()).byte(b'.');
        self.dec(o[2].into()).byte(b'.').dec(o[3].into())
    }

    /// `n` copies of `c`.
    pub fn fill(&mut self, c: u8, n: usize) -> &mut Self {
        match self.buf.get_mut(self.len..self.len + n) {
            Some(dst) => {
                dst.fill(c);
                self.len += n;
            }
            None => self.overflow = true,
        }
        self
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Overwrites already written bytes at `at` (a length filled in afterwards).
    pub fn patch(&mut self, at: usize, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(at..at + b.len()) {
            dst.copy_from_slice(b);
        }
    }

    /// The length written, or `None` if something did not fit.
    pub fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.len)
    }
}

/// Parses lower- or upper-case hex digits; `None` on anything else or on overflow.
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = v << 4 | u64::from(d);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_numbers_and_addresses() {
        let mut b = [0u8; 64];
        let mut o = Out::new(&mut b);
        o.dec(0)
            .byte(b' ')
            .dec(4_294_967_295)
            .byte(b' ')
            .hex(0xab, 4)
            .byte(b' ');
        o.ip(Ipv4Addr::new(198, 18, 0, 10));
        let n = o.finish().unwrap();
        assert_eq!(&b[..n], b"0 4294967295 00ab 198.18.0.10");
        assert_eq!(parse_hex(b"00ab"), Some(0xab));
        assert_eq!(parse_hex(b"xyz"), None);
    }

    #[test]
    fn overflow_is_refused() {
        let mut b = [0u8; 4];
        let mut o = Out::new(&mut b);
        o.put(b"abc").put(b"de");
        assert_eq!(o.finish(), None);
    }
}
