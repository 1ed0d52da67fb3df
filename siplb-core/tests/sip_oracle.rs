//! rsip as oracle: every field the scanner returns for the corpus agrees with rsip's
//! full parse. rsip knows neither compact forms, folding nor white space before a
//! colon, so the torture cases are compared through a long-form twin
//! (`NAME.twin.sip`): the scanner must read the original and the twin alike, and
//! rsip must read the twin like the scanner.

mod sip_support;

use sip_support::{corpus, oracle, read, scan};

/// Runs `check` on every case and reports all failures at once.
fn all_pass(cases: Vec<(String, Vec<u8>)>, check: impl Fn(&str, &[u8]) -> Result<(), String>) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, buf)| check(name, buf).err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn valid_corpus_agrees_with_rsip() {
    let files = corpus("valid");
    assert!(files.len() >= 40, "corpus/valid has {} files", files.len());
    all_pass(files, |_, buf| {
        let (ours, theirs) = (scan(buf), oracle(buf)?);
        if ours != theirs {
            return Err(format!("\n scanner {ours:?}\n rsip    {theirs:?}"));
        }
        Ok(())
    });
}

#[test]
fn torture_cases_agree_with_their_long_form_twins_and_rsip() {
    let twins: Vec<_> = corpus("torture")
        .into_iter()
        .filter_map(|(n, b)| n.strip_suffix(".twin").map(|s| (s.to_string(), b)))
        .collect();
    assert!(twins.len() >= 10, "only {} twins", twins.len());
    all_pass(twins, |name, twin| {
        let (original, twin_fields) = (scan(&read("torture", name)), scan(twin));
        if original != twin_fields {
            return Err(format!(
                "\n original {original:?}\n twin     {twin_fields:?}"
            ));
        }
        let theirs = oracle(twin)?;
        if twin_fields != theirs {
            return Err(format!("\n scanner {twin_fields:?}\n rsip    {theirs:?}"));
        }
        Ok(())
    });
}
