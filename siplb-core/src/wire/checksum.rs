//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624, eqn. 3:
//! `HC' = ~(~HC + ~m + m')`), so a NAT rewrite touches only the changed words.

/// One's-complement sum of `data` as big-endian 16-bit words, added to `acc`, unfolded.
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    fold_carries(acc)
}

/// Folds the carries of a 32-bit accumulator into 16 bits (not complemented).
#[inline]
pub fn fold(acc: u32) -> u16 {
    fold_carries(acc) as u16
}

#[inline]
fn fold_carries(mut acc: u32) -> u32 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// The checksum of `data` (RFC 1071): the complement of its one's-complement sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Updates checksum `csum` for one 16-bit word changing from `old` to `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!csum) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// Updates checksum `csum` for a 32-bit field (an IPv4 address) changing.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let acc = u32::from(!csum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            checksum(&[0x12, 0x34, 0x56]),
            checksum(&[0x12, 0x34, 0x56, 0x00])
        );
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data: Vec<u8> = (0u8..40)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        data[10] = 0;
        data[11] = 0;
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&data), 0);
        for (at, new) in [(4usize, 0xc612_0001u32), (16, 0xffff_ffff), (20, 0)] {
            let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            let c = u16::from_be_bytes([data[10], data[11]]);
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            data[10..12].copy_from_slice(&update32(c, old, new).to_be_bytes());
            assert_eq!(checksum(&data), 0, "after rewriting offset {at}");
        }
        let old = u16::from_be_bytes([data[30], data[31]]);
        let c = u16::from_be_bytes([data[10], data[11]]);
        data[30..32].copy_from_slice(&5060u16.to_be_bytes());
        data[10..12].copy_from_slice(&update16(c, old, 5060).to_be_bytes());
        assert_eq!(checksum(&data), 0);
    }
}
