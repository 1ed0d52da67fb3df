//! The project's key hash: 64 bits, fast on short keys (a Call-ID per packet), the same
//! on every machine and in every process (no random seed), never 0 (tables reserve 0
//! for "empty").
//!
//! The construction is the multiply-fold ("mum") family known from wyhash: each 16-byte
//! block is folded into the state by a 64×64→128-bit multiply whose halves are XORed.
//! Written here from that description.

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;

#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn read8(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[inline(always)]
fn read4(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

/// Hashes `bytes` with `seed`. Deterministic across machines and processes.
#[inline]
pub fn hash64_seeded(bytes: &[u8], seed: u64) -> u64 {
    let len = bytes.len();
    let mut s = seed ^ P0;
    let (a, b) = if len <= 16 {
        if len >= 4 {
            // Two overlapping 4-byte reads from each end cover 4..=16 bytes.
            let q = (len >> 3) << 2;
            (
                (read4(bytes, 0) << 32) | read4(bytes, q),
                (read4(bytes, len - 4) << 32) | read4(bytes, len - 4 - q),
            )
        } else if len > 0 {
            (
                (u64::from(bytes[0]) << 16)
                    | (u64::from(bytes[len >> 1]) << 8)
                    | u64::from(bytes[len - 1]),
                0,
            )
        } else {
            (0, 0)
        }
    } else {
        let mut i = 0;
        while len - i > 16 {
            s = mum(read8(bytes, i) ^ P1, read8(bytes, i + 8) ^ s);
            i += 16;
        }
        (read8(bytes, len - 16), read8(bytes, len - 8))
    };
    mum(P1 ^ len as u64, mum(a ^ P1, b ^ s) ^ P2)
}

/// The key hash of the hot path: `hash64_seeded(bytes, 0)`, with 0 mapped to 1.
#[inline]
pub fn hash64(bytes: &[u8]) -> u64 {
    match hash64_seeded(bytes, 0) {
        0 => 1,
        h => h,
    }
}

/// Combines two hashes into one key (order matters), never 0.
#[inline]
pub fn combine(a: u64, b: u64) -> u64 {
    match mum(a ^ P0, b ^ P1) {
        0 => 1,
        h => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_values_do_not_change() {
        // Units of one farm must agree across builds and machines: pin the outputs.
        let got: Vec<u64> = [
            "",
            "a",
            "abc",
            "1-12345@198.18.0.10",
            "a-call-id-longer-than-thirty-two-bytes@example.com",
        ]
        .iter()
        .map(|s| hash64(s.as_bytes()))
        .collect();
        let again: Vec<u64> = [
            "",
            "a",
            "abc",
            "1-12345@198.18.0.10",
            "a-call-id-longer-than-thirty-two-bytes@example.com",
        ]
        .iter()
        .map(|s| hash64(s.as_bytes()))
        .collect();
        assert_eq!(got, again);
        assert_eq!(
            got, GOLDEN,
            "hash64 changed: every deployed unit would disagree with a new one"
        );
    }

    const GOLDEN: [u64; 5] = [
        10874994732282882608,
        15752610655070539582,
        8914496139763650619,
        11930439325298996848,
        4932054327006167618,
    ];

    #[test]
    fn every_length_and_byte_matters() {
        let base: Vec<u8> = (0..64u8).collect();
        let mut seen = std::collections::HashSet::new();
        for len in 0..=64 {
            assert!(seen.insert(hash64(&base[..len])), "length {len} collides");
        }
        for len in 1..=64 {
            for i in 0..len {
                let mut v = base[..len].to_vec();
                v[i] ^= 0x01;
                assert_ne!(hash64(&v), hash64(&base[..len]), "len {len} byte {i}");
            }
        }
    }

    #[test]
    fn sequential_call_ids_spread_evenly() {
        // SIPp numbers Call-IDs 1-pid@ip, 2-pid@ip, ...: the low bits must still spread.
        let mut buckets = [0u32; 16];
        for i in 0..160_000 {
            let h = hash64(format!("{i}-4242@198.18.0.10").as_bytes());
            buckets[(h % 16) as usize] += 1;
        }
        for b in buckets {
            assert!((9_500..=10_500).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn never_zero() {
        assert_ne!(combine(0, 0), 0);
        assert_ne!(hash64(b""), 0);
    }
}
