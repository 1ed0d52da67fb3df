//! Case-insensitive matching of the names SIP compares without regard to case (header
//! names, RFC 3261 §7.3.1; parameter names and the `SIP/2.0` of Via, §25.1), eight
//! bytes at a time instead of one: the scanner meets a dozen of them per message.

/// A name folded to ASCII lower case, packed into little-endian words at compile time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name {
    words: [u64; 3],
    len: usize,
}

impl Name {
    /// `name` must be at most 24 bytes; letters may be in any case.
    pub(crate) const fn new(name: &[u8]) -> Self {
        assert!(name.len() <= 24);
        let mut words = [0u64; 3];
        let mut i = 0;
        while i < name.len() {
            words[i / 8] |= (name[i].to_ascii_lowercase() as u64) << (8 * (i % 8));
            i += 1;
        }
        Self {
            words,
            len: name.len(),
        }
    }

    /// Whether `hay[at..at + len]` is this name, ignoring ASCII case. Reads whole
    /// words from `hay` where it can, so pass the buffer the name lies in rather than
    /// the name alone.
    #[inline(always)]
    pub(crate) fn eq_at(&self, hay: &[u8], at: usize, len: usize) -> bool {
        len == self.len && self.matches_at(hay, at)
    }

    /// Whether `s` starts with this name, ignoring ASCII case.
    #[inline(always)]
    pub(crate) fn is_prefix_of(&self, s: &[u8]) -> bool {
        self.matches_at(s, 0)
    }

    #[inline(always)]
    fn matches_at(&self, hay: &[u8], at: usize) -> bool {
        if hay.len() < at.saturating_add(self.len) {
            return false;
        }
        let mut i = 0;
        while i < self.len {
            let n = (self.len - i).min(8);
            if lower(load(hay, at + i, n)) != self.words[i / 8] {
                return false;
            }
            i += 8;
        }
        true
    }
}

/// `n` (1..=8) bytes of `s` from `i` as a little-endian word, zero above them. The
/// caller guarantees `i + n <= s.len()`.
#[inline(always)]
fn load(s: &[u8], i: usize, n: usize) -> u64 {
    if let Some(&w) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let w = u64::from_le_bytes(w);
        return if n >= 8 {
            w
        } else {
            w & ((1u64 << (8 * n)) - 1)
        };
    }
    // Near the end of the buffer.
    let mut w = [0u8; 8];
    if let Some(tail) = s.get(i..).and_then(|r| r.get(..n.min(r.len()))) {
        if let Some(dst) = w.get_mut(..tail.len()) {
            dst.copy_from_slice(tail);
        }
    }
    u64::from_le_bytes(w)
}

/// Every ASCII upper-case letter of `w` in lower case; other bytes unchanged.
#[inline(always)]
const fn lower(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low = w & LOW7;
    // High bit of each byte: byte >= 'A', byte > 'Z' (no carries: each sum < 0x100).
    let ge_a = low + 0x3f3f_3f3f_3f3f_3f3f;
    let gt_z = low + 0x2525_2525_2525_2525;
    let upper = ge_a & !gt_z & !w & HIGH;
    w | (upper >> 2)
}

/// The index of the first `c` in `s` at or after `i`, looking at eight bytes per step
/// (for the short spans where a `memchr` call costs more than it saves).
#[inline(always)]
pub(crate) fn find(s: &[u8], mut i: usize, c: u8) -> Option<usize> {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let pattern = 0x0101_0101_0101_0101 * u64::from(c);
    while let Some(&w) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let v = u64::from_le_bytes(w) ^ pattern;
        // High bit of each byte that is zero, exactly (no borrows between bytes).
        let hit = !(((v & LOW7) + LOW7) | v | LOW7);
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s.iter().skip(i).position(|&x| x == c).map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_changes_letters_only() {
        let all: Vec<u8> = (0..=255).collect();
        for chunk in all.chunks(8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap());
            let want: Vec<u8> = chunk.iter().map(u8::to_ascii_lowercase).collect();
            assert_eq!(lower(w).to_le_bytes().to_vec(), want);
        }
    }

    fn eq(n: &Name, s: &[u8]) -> bool {
        n.eq_at(s, 0, s.len())
    }

    #[test]
    fn names_match_in_any_case_only_whole() {
        const CL: Name = Name::new(b"Content-Length");
        assert!(eq(&CL, b"content-length") && eq(&CL, b"CONTENT-LENGTH"));
        assert!(!eq(&CL, b"Content-Lengtx") && !eq(&CL, b"Content_Length"));
        assert!(!eq(&CL, b"Content\rLength") && !eq(&CL, b"Content-Lengt"));
        assert!(!eq(&CL, b"Content-Lengths"));
        assert!(CL.is_prefix_of(b"content-length: 0\r\n"));
        const VIA: Name = Name::new(b"SIP/2.0/");
        assert!(VIA.is_prefix_of(b"sip/2.0/UDP host") && !VIA.is_prefix_of(b"SIP/2.1/UDP"));
        assert!(!VIA.is_prefix_of(b"SIP/2.0"));
        const T: Name = Name::new(b"tag");
        assert!(eq(&T, b"TaG") && !eq(&T, b"ta") && !eq(&T, b"tag=") && !eq(&T, b"t\x01g"));
        assert!(T.eq_at(b";TAG=1", 1, 3) && !T.eq_at(b";TAG=1", 1, 4) && !T.eq_at(b";TA", 1, 3));
    }

    #[test]
    fn find_finds_the_first() {
        let s = b"Content-Length : 0";
        assert_eq!(find(s, 0, b':'), Some(15));
        assert_eq!(find(s, 15, b':'), Some(15));
        assert_eq!(find(s, 16, b':'), None);
        assert_eq!(find(b"abcdefghijk", 0, b':'), None);
        assert_eq!(find(b"abcdefghij:", 0, b':'), Some(10));
        assert_eq!(find(b"ab", 5, b':'), None);
        for n in 0..20 {
            let mut v = vec![b'x'; 20];
            v[n] = 0x80 | b':';
            assert_eq!(find(&v, 0, b':'), None);
            v[n] = b':';
            assert_eq!(find(&v, 0, b':'), Some(n));
            v[n] = b';';
            assert_eq!(find(&v, 0, b':'), None);
        }
    }
}
