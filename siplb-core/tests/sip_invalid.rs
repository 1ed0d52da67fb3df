//! The invalid corpus: each message must be rejected with the reason listed in
//! `corpus/invalid/EXPECTED` (RFC 4475 §3.1.2 cases and this project's own), never
//! accepted and never a panic.

mod sip_support;

use sip_support::{corpus, corpus_dir};
use siplb_core::sip::{Limits, SipError, SipMessage};
use std::collections::BTreeMap;

fn expected() -> BTreeMap<String, String> {
    std::fs::read_to_string(corpus_dir("invalid").join("EXPECTED"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (file, err) = l.split_once(' ').expect("`file error` per line");
            (file.to_string(), err.trim().to_string())
        })
        .collect()
}

#[test]
fn every_invalid_message_fails_with_its_reason() {
    let want = expected();
    let files = corpus("invalid");
    let names: Vec<_> = files.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        names,
        want.keys().cloned().collect::<Vec<_>>(),
        "EXPECTED and the files differ"
    );
    let mut failures = Vec::new();
    for (name, buf) in &files {
        let got = SipMessage::parse(buf, &Limits::default())
            .map(|_| ())
            .map_err(SipError::name);
        if got != Err(want[name].as_str()) {
            failures.push(format!("{name}: want {}, got {got:?}", want[name]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_listed_reason_exists() {
    for err in expected().values() {
        assert!(
            SipError::ALL.iter().any(|e| e.name() == err),
            "EXPECTED names an unknown reason {err}"
        );
    }
}
