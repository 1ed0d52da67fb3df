//! The fuzz target's checks in CI: the same promises `cargo fuzz run sip_scan` checks
//! (see `sip_support/fuzz_checks.rs`), over every corpus message, over streams made
//! of them, and over random mutations of them. The long fuzz run itself is not part of
//! CI; `bench/RESULTS.md` says how it was run.

mod sip_support;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use sip_support::corpus;
use sip_support::fuzz_checks::check;

fn all_corpus() -> Vec<Vec<u8>> {
    ["valid", "torture", "invalid"]
        .iter()
        .flat_map(|d| corpus(d))
        .map(|(_, b)| b)
        .collect()
}

#[test]
fn corpus_messages_keep_every_promise() {
    for buf in all_corpus() {
        check(&buf);
    }
}

#[test]
fn streams_of_corpus_messages_keep_every_promise() {
    let valid: Vec<_> = corpus("valid").into_iter().map(|(_, b)| b).collect();
    for (i, a) in valid.iter().enumerate() {
        let b = &valid[(i + 1) % valid.len()];
        for glue in [&b""[..], b"\r\n", b"\r\n\r\n"] {
            check(&[a.as_slice(), glue, b.as_slice()].concat());
        }
    }
}

proptest! {
    // CI replays the same cases on every run, so that a run fails for the code and
    // not for the draw; `PROPTEST_RNG_SEED=<n>` (with `PROPTEST_CASES`) explores others.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        rng_seed: std::env::var_os("PROPTEST_RNG_SEED")
            .map_or(RngSeed::Fixed(0x51b1_b000), |_| ProptestConfig::default().rng_seed),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_corpus_keeps_every_promise(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..10),
    ) {
        let files = all_corpus();
        let mut buf = files[which.index(files.len())].clone();
        for (at, byte, op) in edits {
            let i = at.index(buf.len() + 1);
            match op {
                0 if i < buf.len() => buf[i] = byte,
                1 => buf.insert(i, byte),
                2 => buf.truncate(i),
                _ => {
                    let dup = buf[i..].to_vec();
                    buf.extend_from_slice(&dup);
                }
            }
        }
        check(&buf);
    }
}
