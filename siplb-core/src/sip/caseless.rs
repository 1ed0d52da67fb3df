//! Case-insensitive matching of the names SIP compares without regard to case (header
//! names, RFC 3261 §7.3.1; parameter names and the `SIP/2.0` of Via, §25.1), eight
//! bytes at a time instead of one: the scanner meets a dozen of them per message.

/// A name folded to ASCII lower case, packed into little-endian words at compile time,
/// with the case bit (0x20) of each of its letters: a byte matches a letter when, with
/// that bit set, it equals the lower-case letter (which only the letter in either case
/// does), and any other byte must match exactly. Two operations per word.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name {
    words: [u64; 3],
    fold: [u64; 3],
    /// The bytes of each word that belong to the name.
    mask: [u64; 3],
    len: usize,
}

impl Name {
    /// `name` must be at most 24 bytes; letters may be in any case.
    pub(crate) const fn new(name: &[u8]) -> Self {
        assert!(name.len() <= 24);
        let mut words = [0u64; 3];
        let mut fold = [0u64; 3];
        let mut mask = [0u64; 3];
        let mut i = 0;
        while i < name.len() {
            let c = name[i];
            words[i / 8] |= (c.to_ascii_lowercase() as u64) << (8 * (i % 8));
            if c.is_ascii_alphabetic() {
                fold[i / 8] |= 0x20 << (8 * (i % 8));
            }
            mask[i / 8] |= 0xff << (8 * (i % 8));
            i += 1;
        }
        Self {
            words,
            fold,
            mask,
            len: name.len(),
        }
    }

    /// The name's length in bytes.
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Whether `hay[at..at + len]` is this name, ignoring ASCII case. Reads whole
    /// words from `hay` where it can, so pass the buffer the name lies in rather than
    /// the name alone.
    #[inline(always)]
    pub(crate) fn eq_at(&self, hay: &[u8], at: usize, len: usize) -> bool {
        len == self.len && self.matches_at(hay, at)
    }

    /// Whether `hay[at..]` starts with this name, ignoring ASCII case.
    #[inline(always)]
    pub(crate) fn is_at(&self, hay: &[u8], at: usize) -> bool {
        self.matches_at(hay, at)
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
        for k in 0..3 {
            let i = 8 * k;
            if i >= self.len {
                break;
            }
            let w = match hay.get(at + i..).and_then(|r| r.first_chunk::<8>()) {
                Some(&w) => u64::from_le_bytes(w) & self.mask[k],
                // Near the end of the buffer.
                None => load(hay, at + i, (self.len - i).min(8)),
            };
            if w | self.fold[k] != self.words[k] {
                return false;
            }
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
    fn every_byte_matches_as_eq_ignore_ascii_case() {
        for n in [
            b'a', b'Z', b'm', b'-', b'9', b':', b'/', b'_', b'@', b'`', b'{',
        ] {
            let name = Name::new(&[n]);
            for c in 0..=255u8 {
                assert_eq!(
                    name.eq_at(&[c], 0, 1),
                    c.eq_ignore_ascii_case(&n),
                    "{n} {c}"
                );
            }
        }
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
