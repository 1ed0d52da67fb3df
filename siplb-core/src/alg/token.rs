//! Flow tokens: how another client's SNAT flow is shown to a phone without naming the
//! balancer's back-side network, and found again on the way in.
//!
//! In `snat` a backend writes the balancer's SNAT address and port of a client flow
//! wherever that client's own transport address stood (its Via, its Contact, the
//! Request-URI of requests to it). When a proxy forwards phone A's request to phone
//! B, B receives A's Via and Contact naming A's flow. Toward B the rewriter writes
//! instead the VIP and its SIP port with the URI (or Via) parameter
//! `slbf=<token>`, the token being a checked, keyed encoding of the flow's (address,
//! port); toward a backend it turns `VIP;slbf=<token>` back into the flow, so the
//! backend's loose routing and Via matching see exactly what it sent.
//!
//! The token: 64 bits — the address (32), the port (16) and a 16-bit keyed check of
//! both — through a four-round Feistel network keyed by [`TokenKey`], written as 13
//! characters of base32 (RFC 4648 §7 "extended hex" alphabet, lower case; read in
//! either case, as URI parameters compare without case). Without the key a token
//! reads as noise and says nothing about the back-side network; a token that was
//! not made with the key fails its check (2^-16 of random ones pass it, and must then
//! also name one of the farm's SNAT addresses, [`AddrSet`]). The key hides addresses
//! from the phones; it is no secret from whoever knows the configuration it is
//! derived from.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The parameter that carries a token, in URIs and Via values.
pub const PARAM: &[u8] = b"slbf";

/// Characters of a token: 64 bits in base32, the first character holding 4.
pub const TOKEN_LEN: usize = 13;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
const ROUNDS: usize = 4;

/// The key of a farm's tokens: Feistel round keys and the check's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenKey {
    round: [u32; ROUNDS],
    check: u64,
}

/// SplitMix64 (Steele, Lea, Flood, OOPSLA 2014): spreads one seed over the keys.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The Feistel round function: the 32-bit finaliser of MurmurHash3 over `x ^ k`.
#[inline]
fn round(x: u32, k: u32) -> u32 {
    let mut h = x ^ k;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

impl TokenKey {
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        let mut round = [0u32; ROUNDS];
        for r in &mut round {
            *r = splitmix(&mut s) as u32;
        }
        Self {
            round,
            check: splitmix(&mut s),
        }
    }

    /// 16 bits of a keyed hash of the flow.
    #[inline]
    fn check_of(&self, flow: u64) -> u64 {
        let mut s = flow ^ self.check;
        splitmix(&mut s) >> 48
    }

    /// The token of the flow `addr`.
    pub fn encode(&self, addr: SocketAddrV4) -> [u8; TOKEN_LEN] {
        let flow = u64::from(u32::from(*addr.ip())) << 16 | u64::from(addr.port());
        let block = flow << 16 | self.check_of(flow);
        let (mut l, mut r) = ((block >> 32) as u32, block as u32);
        for k in self.round {
            (l, r) = (r, l ^ round(r, k));
        }
        let v = u64::from(l) << 32 | u64::from(r);
        let mut out = [0u8; TOKEN_LEN];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 5 * (TOKEN_LEN - 1 - i);
            *c = ALPHABET[((v >> shift) & 31) as usize];
        }
        out
    }

    /// The flow a token names, if it is one of this key's.
    pub fn decode(&self, text: &[u8]) -> Option<SocketAddrV4> {
        if text.len() != TOKEN_LEN {
            return None;
        }
        let mut v = 0u64;
        for (i, &c) in text.iter().enumerate() {
            let d = match c | 0x20 {
                d @ b'0'..=b'9' => d - b'0',
                d @ b'a'..=b'v' => d - b'a' + 10,
                _ => return None,
            };
            // The first character carries the top 4 bits only.
            if i == 0 && d >= 16 {
                return None;
            }
            v = v << 5 | u64::from(d);
        }
        let (mut l, mut r) = ((v >> 32) as u32, v as u32);
        for k in self.round.iter().rev() {
            (l, r) = (r ^ round(l, *k), l);
        }
        let block = u64::from(l) << 32 | u64::from(r);
        let flow = block >> 16;
        (block & 0xffff == self.check_of(flow))
            .then(|| SocketAddrV4::new(Ipv4Addr::from((flow >> 16) as u32), flow as u16))
    }
}

/// Disjoint address ranges a set holds at most.
pub const MAX_RANGES: usize = 4;

/// A farm's SNAT addresses, as at most [`MAX_RANGES`] inclusive ranges: pools are
/// written as ranges and prefixes and take consecutive addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrSet {
    ranges: [(u32, u32); MAX_RANGES],
    len: usize,
}

impl AddrSet {
    pub const fn new() -> Self {
        Self {
            ranges: [(0, 0); MAX_RANGES],
            len: 0,
        }
    }

    /// Adds `ip`; `false` when it would need a range past [`MAX_RANGES`] (it is then
    /// not in the set).
    pub fn insert(&mut self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        // Pools come in order: the last range nearly always takes the next address.
        for (lo, hi) in self.ranges.iter_mut().take(self.len).rev() {
            if (*lo..=*hi).contains(&a) {
                return true;
            }
            if hi.checked_add(1) == Some(a) {
                *hi = a;
                return true;
            }
            if lo.checked_sub(1) == Some(a) {
                *lo = a;
                return true;
            }
        }
        match self.ranges.get_mut(self.len) {
            Some(slot) => {
                *slot = (a, a);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Keeps the ranges `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut((u32, u32)) -> bool) {
        let mut n = 0;
        for i in 0..self.len {
            if let Some(&r) = self.ranges.get(i) {
                if keep(r) {
                    self.ranges[n] = r;
                    n += 1;
                }
            }
        }
        self.len = n;
    }

    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.ranges()
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&a))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn ranges(&self) -> &[(u32, u32)] {
        self.ranges.get(..self.len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(a: [u8; 4], p: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), p)
    }

    #[test]
    fn tokens_round_trip_and_read_as_noise() {
        let key = TokenKey::new(0x5eed);
        let mut seen = std::collections::HashSet::new();
        for (a, p) in [
            ([198, 18, 1, 1], 1024),
            ([198, 18, 1, 1], 1025),
            ([198, 18, 1, 100], 32767),
            ([0, 0, 0, 0], 0),
            ([255, 255, 255, 255], 65535),
        ] {
            let f = flow(a, p);
            let t = key.encode(f);
            let text = std::str::from_utf8(&t).unwrap();
            assert!(
                text.bytes().all(|c| ALPHABET.contains(&c)),
                "{text}: URI and Via parameter characters only"
            );
            assert_eq!(key.decode(&t), Some(f), "{text}");
            assert_eq!(key.decode(text.to_uppercase().as_bytes()), Some(f));
            // Not the address in plain sight, in decimal or hex.
            let ip = Ipv4Addr::from(a);
            assert!(!text.contains(&format!("{:08x}", u32::from(ip))), "{text}");
            assert!(seen.insert(t), "{text} twice");
        }
        // Neighbouring flows share no visible structure: most characters differ.
        let t1 = key.encode(flow([198, 18, 1, 1], 1024));
        let t2 = key.encode(flow([198, 18, 1, 1], 1026));
        let same = t1.iter().zip(&t2).filter(|(a, b)| a == b).count();
        assert!(same <= 4, "{same} equal characters");
    }

    #[test]
    fn garbled_and_foreign_tokens_are_refused() {
        let key = TokenKey::new(1);
        let f = flow([198, 18, 1, 1], 4000);
        let t = key.encode(f);
        // Another farm's key.
        assert_eq!(TokenKey::new(2).decode(&t), None);
        // Every single-character change, every truncation and extension.
        let mut refused = 0;
        for i in 0..TOKEN_LEN {
            for c in ALPHABET.iter().copied().filter(|c| *c != t[i]) {
                let mut g = t;
                g[i] = c;
                if key.decode(&g).is_none() {
                    refused += 1;
                }
            }
        }
        // A change of the first character past 4 bits is refused by the length
        // check; the rest by the keyed check (2^-16 may pass).
        assert!(refused >= TOKEN_LEN * 31 - 1, "{refused}");
        assert_eq!(key.decode(&t[..TOKEN_LEN - 1]), None);
        let mut long = t.to_vec();
        long.push(b'0');
        assert_eq!(key.decode(&long), None);
        assert_eq!(key.decode(b"zzzzzzzzzzzzz"), None);
        assert_eq!(key.decode(b"g000000000000"), None);
        assert_eq!(key.decode(b""), None);
        // Random tokens of the right shape: about 2^-16 pass the check.
        let mut s = 7u64;
        let passed = (0..100_000)
            .filter(|_| {
                let v = splitmix(&mut s);
                let mut g = [0u8; TOKEN_LEN];
                for (i, c) in g.iter_mut().enumerate() {
                    *c = ALPHABET[((v >> (5 * (TOKEN_LEN - 1 - i))) & 31) as usize];
                }
                key.decode(&g).is_some()
            })
            .count();
        assert!(passed <= 10, "{passed} of 100000 random tokens passed");
    }

    #[test]
    fn address_sets_merge_pools_into_ranges() {
        let mut s = AddrSet::new();
        assert!(s.is_empty() && !s.contains(Ipv4Addr::new(198, 18, 1, 1)));
        for k in 100..132u8 {
            assert!(s.insert(Ipv4Addr::new(198, 18, 1, k)));
        }
        assert!(s.insert(Ipv4Addr::new(198, 18, 1, 99)));
        assert!(s.insert(Ipv4Addr::new(198, 18, 1, 1)));
        assert!(s.insert(Ipv4Addr::new(198, 18, 1, 1)));
        assert_eq!(s.ranges().len(), 2);
        assert!(s.contains(Ipv4Addr::new(198, 18, 1, 131)));
        assert!(s.contains(Ipv4Addr::new(198, 18, 1, 99)));
        assert!(!s.contains(Ipv4Addr::new(198, 18, 1, 132)));
        assert!(!s.contains(Ipv4Addr::new(198, 18, 1, 11)));
        assert!(s.insert(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(s.insert(Ipv4Addr::new(10, 0, 0, 3)));
        assert!(!s.insert(Ipv4Addr::new(10, 0, 0, 5)), "a fifth range");
        assert!(!s.contains(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(s.insert(Ipv4Addr::new(10, 0, 0, 2)), "joins a range");
        assert!(!s.contains(Ipv4Addr::BROADCAST));
        let mut top = AddrSet::new();
        assert!(top.insert(Ipv4Addr::BROADCAST) && top.insert(Ipv4Addr::new(255, 255, 255, 254)));
        assert_eq!(top.ranges(), &[(u32::MAX - 1, u32::MAX)]);
    }
}
