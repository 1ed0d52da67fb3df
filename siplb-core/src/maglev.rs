//! Weighted consistent hashing with a Maglev lookup table.
//!
//! The table is a pure function of (configured backends with weights, the subset that is
//! available), so independent balancer units with the same configuration build the
//! same table and agree on every key without talking to each other.
//!
//! 1. **Weighted Maglev fill** (Eisenbud et al., NSDI 2016, §3.4) over every configured
//!    backend with a weight: each backend walks its own permutation of the slots
//!    (offset and skip from two hashes of its identity) and claims the next free slot
//!    when its turn comes; turns are given in proportion to weight (credit scheme), so
//!    each backend gets its weight's share of slots to within one slot per round.
//! 2. **Unavailable backends' slots** (down, drained) are reassigned slot by slot to the
//!    available backends by weighted rendezvous hashing (highest random weight). A
//!    backend going down therefore moves exactly its own keys, spread over the
//!    survivors by weight; coming back restores exactly them.
//!
//! A change of the configured set (a backend added to or removed from the
//! configuration, or a weight changed) reruns step 1, which moves a few keys beyond the
//! changed backend's share (Maglev's "minimal disruption"); dialogs in progress are
//! unaffected because the dialog table, not the hash, keeps them.

use crate::hash::hash64_seeded;

pub const DEFAULT_TABLE_SIZE: usize = 65537;
/// Table entry meaning "no backend can take work".
pub const NO_BACKEND: u16 = u16::MAX;

/// One backend as the table builder sees it.
#[derive(Debug, Clone, Copy)]
pub struct MaglevBackend<'a> {
    /// Stable identity, e.g. `198.18.1.11:5060`.
    pub id: &'a [u8],
    pub weight: u32,
    /// Takes new work (up and not drained).
    pub available: bool,
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// A prime table size of at least 65537 and at least 100 slots per backend.
pub fn table_size_for(n_backends: usize) -> usize {
    let mut m = DEFAULT_TABLE_SIZE.max(100 * n_backends);
    while !is_prime(m) {
        m += 1;
    }
    m
}

/// The backend index for a key hash: `table[key % len]`. The table size is prime and
/// far smaller than 2^64, so the modulo bias is below 2^-47.
#[inline(always)]
pub fn lookup(table: &[u16], key_hash: u64) -> u16 {
    table[(key_hash % table.len() as u64) as usize]
}

/// Builds the lookup table of `size` slots (prime) for `backends`; entries index
/// `backends`. All entries are `NO_BACKEND` if no backend with a weight is available.
pub fn build(backends: &[MaglevBackend<'_>], size: usize) -> Vec<u16> {
    assert!(
        backends.len() < usize::from(NO_BACKEND),
        "too many backends"
    );
    assert!(is_prime(size), "the Maglev table size must be prime");
    let mut table = fill(backends, size);
    let available: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].available && backends[i].weight > 0)
        .collect();
    if available.len() == backends.iter().filter(|b| b.weight > 0).count() {
        return table;
    }
    for (slot, e) in table.iter_mut().enumerate() {
        let taken = *e != NO_BACKEND && available.contains(&usize::from(*e));
        if !taken {
            *e = rendezvous(backends, &available, slot as u64);
        }
    }
    table
}

/// Step 1: weighted Maglev over every backend with a weight.
fn fill(backends: &[MaglevBackend<'_>], size: usize) -> Vec<u16> {
    let mut table = vec![NO_BACKEND; size];
    let members: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].weight > 0)
        .collect();
    if members.is_empty() {
        return table;
    }
    let m = size as u64;
    let perm: Vec<(u64, u64)> = members
        .iter()
        .map(|&i| {
            let offset = hash64_seeded(backends[i].id, 0x6d61_676c_6576_3031) % m;
            let skip = hash64_seeded(backends[i].id, 0x736b_6970_0000_0002) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let max_w = members
        .iter()
        .map(|&i| backends[i].weight)
        .max()
        .unwrap_or(1) as u64;
    let mut next = vec![0u64; members.len()];
    let mut credit = vec![0u64; members.len()];
    let mut filled = 0;
    while filled < size {
        for (k, &i) in members.iter().enumerate() {
            credit[k] += u64::from(backends[i].weight);
            while credit[k] >= max_w && filled < size {
                credit[k] -= max_w;
                let (offset, skip) = perm[k];
                loop {
                    let slot = ((offset + next[k] * skip) % m) as usize;
                    next[k] += 1;
                    if table[slot] == NO_BACKEND {
                        table[slot] = i as u16;
                        filled += 1;
                        break;
                    }
                }
            }
        }
    }
    table
}

/// Step 2: weighted highest-random-weight choice among `available` for one slot. The
/// score -w/ln(u) makes a backend win with probability proportional to its weight.
fn rendezvous(backends: &[MaglevBackend<'_>], available: &[usize], slot: u64) -> u16 {
    let mut best = NO_BACKEND;
    let mut best_score = f64::NEG_INFINITY;
    for &i in available {
        let h = hash64_seeded(backends[i].id, slot ^ 0x7265_6e64_657a_766f);
        // u in (0, 1), from the top 53 bits.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(backends[i].weight) / ln(u);
        if score > best_score {
            best_score = score;
            best = i as u16;
        }
    }
    best
}

/// Natural logarithm from IEEE basic operations only (exact bit decomposition, then an
/// atanh series), so every machine computes bit-identical scores: libm's `ln` is not
/// guaranteed to round the same everywhere, and units must agree.
fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // m in [1, 2): ln m = 2 atanh(z), z = (m-1)/(m+1) in [0, 1/3).
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let mut term = z;
    let mut sum = 0.0;
    let mut k = 1.0;
    for _ in 0..24 {
        sum += term / k;
        term *= z2;
        k += 2.0;
    }
    2.0 * sum + exp as f64 * std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash64;

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("198.18.1.{}:5060", 11 + i))
            .collect()
    }

    fn backends<'a>(
        ids: &'a [String],
        weights: &[u32],
        available: &[bool],
    ) -> Vec<MaglevBackend<'a>> {
        ids.iter()
            .zip(weights)
            .zip(available)
            .map(|((id, w), a)| MaglevBackend {
                id: id.as_bytes(),
                weight: *w,
                available: *a,
            })
            .collect()
    }

    fn shares(table: &[u16], n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for e in table {
            c[usize::from(*e)] += 1;
        }
        c.iter().map(|x| *x as f64 / table.len() as f64).collect()
    }

    #[test]
    fn own_ln_matches_libm() {
        for x in [1e-300, 1e-9, 0.001, 0.25, 0.5, 0.7, 0.999_999, 1.0 - 1e-16] {
            assert!(
                (ln(x) - x.ln()).abs() <= 1e-12 * x.ln().abs().max(1.0),
                "{x}"
            );
        }
    }

    #[test]
    fn sizes_are_prime_and_big_enough() {
        assert_eq!(table_size_for(6), 65537);
        let m = table_size_for(1000);
        assert!(m >= 100_000 && is_prime(m));
    }

    #[test]
    fn weights_are_honoured_within_one_percent() {
        for weights in [
            vec![1, 1],
            vec![3, 1],
            vec![1, 2, 3, 4, 5, 6],
            vec![100, 1, 50],
            vec![7; 9],
        ] {
            let id = ids(weights.len());
            let b = backends(&id, &weights, &vec![true; weights.len()]);
            let t = build(&b, DEFAULT_TABLE_SIZE);
            let total: u32 = weights.iter().sum();
            let s = shares(&t, weights.len());
            for (i, w) in weights.iter().enumerate() {
                let want = f64::from(*w) / f64::from(total);
                assert!(
                    (s[i] - want).abs() < 0.01,
                    "weights {weights:?}: backend {i} has {:.4}, wants {want:.4}",
                    s[i]
                );
            }
            println!(
                "weights {weights:?}: shares {:?}",
                s.iter().map(|x| format!("{:.4}", x)).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn removing_one_of_six_moves_only_its_keys_spread_over_survivors() {
        let id = ids(6);
        let w = [1u32; 6];
        let before = build(&backends(&id, &w, &[true; 6]), DEFAULT_TABLE_SIZE);
        let mut avail = [true; 6];
        avail[2] = false;
        let after = build(&backends(&id, &w, &avail), DEFAULT_TABLE_SIZE);
        let mut moved_to = [0usize; 6];
        let mut moved = 0;
        for (a, b) in before.iter().zip(&after) {
            if a != b {
                assert_eq!(*a, 2, "a key that was not on the removed backend moved");
                moved += 1;
                moved_to[usize::from(*b)] += 1;
            }
        }
        assert!(after.iter().all(|e| *e != 2));
        let survivors: Vec<usize> = moved_to
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, n)| n)
            .collect();
        let (mx, mn) = (
            *survivors.iter().max().unwrap(),
            *survivors.iter().min().unwrap(),
        );
        println!(
            "1 of 6 removed: {moved} slots moved ({:.2}% of the table); survivors got {survivors:?}; max/min survivor share {:.3}",
            100.0 * moved as f64 / before.len() as f64,
            mx as f64 / mn as f64
        );
        assert!(
            mx as f64 / mn as f64 <= 1.1,
            "moved keys spread unevenly: {survivors:?}"
        );
        // Coming back restores exactly the old table.
        assert_eq!(
            build(&backends(&id, &w, &[true; 6]), DEFAULT_TABLE_SIZE),
            before
        );
    }

    #[test]
    fn moved_keys_follow_survivor_weights() {
        let id = ids(4);
        let w = [4u32, 2, 1, 1];
        let mut avail = [true; 4];
        avail[3] = false;
        let before = build(&backends(&id, &w, &[true; 4]), DEFAULT_TABLE_SIZE);
        let after = build(&backends(&id, &w, &avail), DEFAULT_TABLE_SIZE);
        let mut to = [0f64; 4];
        let mut n = 0.0;
        for (a, b) in before.iter().zip(&after) {
            if a != b {
                to[usize::from(*b)] += 1.0;
                n += 1.0;
            }
        }
        for (i, want) in [(0, 4.0 / 7.0), (1, 2.0 / 7.0), (2, 1.0 / 7.0)] {
            assert!(
                (to[i] / n - want).abs() < 0.03,
                "survivor {i}: {:.3} vs {want:.3}",
                to[i] / n
            );
        }
    }

    #[test]
    fn config_change_disruption_is_small() {
        let id = ids(6);
        let before = build(&backends(&id, &[1; 6], &[true; 6]), DEFAULT_TABLE_SIZE);
        let id5: Vec<String> = id
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, s)| s.clone())
            .collect();
        let after = build(&backends(&id5, &[1; 5], &[true; 5]), DEFAULT_TABLE_SIZE);
        // Compare by identity: indexes shift when a backend leaves the configuration.
        let name_before = |e: u16| id[usize::from(e)].as_str();
        let name_after = |e: u16| id5[usize::from(e)].as_str();
        let changed = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| name_before(**a) != name_after(**b))
            .count();
        let own = before.iter().filter(|e| **e == 2).count();
        println!(
            "backend removed from the configuration: {changed} slots changed, {own} were its own ({:.2}% extra)",
            100.0 * (changed - own) as f64 / before.len() as f64
        );
        assert!(changed >= own && changed < own * 2);
    }

    #[test]
    fn four_independent_units_agree_on_a_million_keys() {
        let id = ids(6);
        let w = [3u32, 1, 2, 1, 1, 2];
        let mut avail = [true; 6];
        for round in 0..2 {
            let tables: Vec<Vec<u16>> = (0..4)
                .map(|_| build(&backends(&id, &w, &avail), table_size_for(6)))
                .collect();
            let mut x = 0x1234_5678_u64;
            for _ in 0..1_000_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = hash64(&x.to_le_bytes());
                let first = lookup(&tables[0], key);
                assert!(
                    tables[1..].iter().all(|t| lookup(t, key) == first),
                    "round {round}"
                );
            }
            avail[4] = false;
        }
    }

    #[test]
    fn nothing_available_means_no_backend() {
        let id = ids(2);
        let t = build(&backends(&id, &[1, 1], &[false, false]), DEFAULT_TABLE_SIZE);
        assert!(t.iter().all(|e| *e == NO_BACKEND));
        let t = build(&backends(&id, &[0, 0], &[true, true]), DEFAULT_TABLE_SIZE);
        assert!(t.iter().all(|e| *e == NO_BACKEND));
        assert!(build(&[], DEFAULT_TABLE_SIZE)
            .iter()
            .all(|e| *e == NO_BACKEND));
    }
}
