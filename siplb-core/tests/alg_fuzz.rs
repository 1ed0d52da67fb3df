//! The ALG fuzz target's checks in CI: the promises `cargo fuzz run alg_rewrite`
//! checks (see `alg_support/fuzz_checks.rs`), over the ALG corpus, the scanner's
//! corpus, and random mutations of them. The long fuzz run itself is not part of CI;
//! `bench/RESULTS.md` says how it was run.

#[path = "alg_support/fuzz_checks.rs"]
mod fuzz_checks;

use fuzz_checks::check;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::path::Path;

fn files(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

fn all() -> Vec<Vec<u8>> {
    let mut all = files("alg_corpus");
    for d in ["valid", "torture", "invalid"] {
        all.extend(files(&format!("corpus/{d}")));
    }
    all
}

#[test]
fn corpora_keep_every_promise() {
    let alg = files("alg_corpus");
    assert!(alg.len() >= 7, "the ALG corpus is there");
    let all = all();
    assert!(all.len() > 100, "the scanner corpus is there");
    for buf in &all {
        check(buf);
    }
}

proptest! {
    // CI replays the same cases on every run, so that a run fails for the code and
    // not for the draw; `PROPTEST_RNG_SEED=<n>` (with `PROPTEST_CASES`) explores others.
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        rng_seed: std::env::var_os("PROPTEST_RNG_SEED")
            .map_or(RngSeed::Fixed(0x51b1_b000), |_| ProptestConfig::default().rng_seed),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_corpora_keep_every_promise(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..5), 1..10),
    ) {
        let files = files("alg_corpus");
        let mut buf = files[which.index(files.len())].clone();
        for (at, byte, op) in edits {
            let i = at.index(buf.len() + 1);
            match op {
                0 if i < buf.len() => buf[i] = byte,
                1 => buf.insert(i, byte),
                2 => buf.truncate(i),
                3 => {
                    let tail = buf[i..].to_vec();
                    buf.extend_from_slice(&tail);
                }
                _ => {
                    let piece = [&b"198.19.1.1"[..], b"198.19.0.100:1024", b";", b",", b"\r\n ", b"\"", b"198.18.0.100:5060;slbf=0123456789abc"];
                    let p = piece[usize::from(byte) % piece.len()];
                    buf.splice(i..i, p.iter().copied());
                }
            }
        }
        check(&buf);
    }
}
