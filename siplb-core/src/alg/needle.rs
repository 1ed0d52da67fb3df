//! A rule's address text and a substring finder for it, built once when the rule is
//! added: `memchr::memmem::find` builds its searcher on every call, which costs more
//! than searching a SIP header section. On x86-64 the finder is memchr's SIMD "packed
//! pair" searcher (AVX2, else SSE2); elsewhere, and for haystacks shorter than it
//! accepts, `memmem::find`.

use super::edit::Text;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Needle {
    text: Text,
    #[cfg(target_arch = "x86_64")]
    simd: Option<Simd>,
}

#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
enum Simd {
    Avx2(memchr::arch::x86_64::avx2::packedpair::Finder),
    Sse2(memchr::arch::x86_64::sse2::packedpair::Finder),
}

impl Needle {
    pub(crate) fn new(text: Text) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use memchr::arch::all::packedpair::Pair;
            use memchr::arch::x86_64::{avx2, sse2};
            let t = text.as_bytes();
            // The first and last bytes: ranking the needle's bytes by frequency costs
            // more than it saves on a header section.
            let last = u8::try_from(t.len().saturating_sub(1)).unwrap_or(0);
            let simd = Pair::with_indices(t, 0, last).and_then(|pair| {
                avx2::packedpair::Finder::with_pair(t, pair)
                    .map(Simd::Avx2)
                    .or_else(|| sse2::packedpair::Finder::with_pair(t, pair).map(Simd::Sse2))
            });
            Self { text, simd }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self { text }
    }

    pub(crate) fn text(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The first occurrence in `hay` at or after `from`.
    #[inline]
    pub(crate) fn find(&self, hay: &[u8], from: usize) -> Option<usize> {
        let rest = hay.get(from..)?;
        let needle = self.text.as_bytes();
        #[cfg(target_arch = "x86_64")]
        match &self.simd {
            Some(Simd::Avx2(f)) if rest.len() >= f.min_haystack_len() => {
                return f.find(rest, needle).map(|p| from + p)
            }
            Some(Simd::Sse2(f)) if rest.len() >= f.min_haystack_len() => {
                return f.find(rest, needle).map(|p| from + p)
            }
            _ => {}
        }
        memchr::memmem::find(rest, needle).map(|p| from + p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_occurrence_in_short_and_long_haystacks() {
        let needle = Needle::new(Text::try_from(&b"198.19.1.1"[..]).unwrap());
        for pad in [0, 5, 40, 200] {
            let mut hay = vec![b'x'; pad];
            hay.extend_from_slice(b"198.19.1.1:5060 198.19.1.10 ");
            hay.extend(std::iter::repeat_n(b'y', pad));
            hay.extend_from_slice(b"198.19.1.1");
            let mut hits = vec![];
            let mut from = 0;
            while let Some(h) = needle.find(&hay, from) {
                hits.push(h);
                from = h + 1;
            }
            assert_eq!(hits, [pad, pad + 16, hay.len() - 10], "pad {pad}");
        }
        assert_eq!(needle.find(b"198.19.1", 0), None);
        assert_eq!(needle.find(b"198.19.1.1", 11), None);
    }
}
