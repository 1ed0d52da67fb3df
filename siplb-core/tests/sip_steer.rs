//! The light scan for steering (`SteerView::scan`) against the full parser on the
//! corpus: it accepts every message the full parser accepts with the same fields, and
//! of the invalid messages it accepts exactly those whose fault lies in a field it does
//! not read (`sip_support::fuzz_checks::check_steer` says how that is checked).

mod sip_support;

use sip_support::corpus;
use sip_support::fuzz_checks::check_steer;
use siplb_core::sip::{Limits, SipMessage, SteerView};

#[test]
fn valid_and_torture_corpus_scan_to_the_full_parsers_fields() {
    let l = Limits::default();
    let mut n = 0;
    for sub in ["valid", "torture"] {
        for (name, buf) in corpus(sub) {
            let full = SipMessage::parse(&buf, &l);
            assert!(full.is_ok(), "{sub}/{name}");
            assert!(check_steer(&buf, &l, full), "{sub}/{name}");
            n += 1;
        }
    }
    assert!(n >= 70, "only {n} corpus messages");
}

#[test]
fn invalid_corpus_is_refused_unless_the_fault_is_in_an_unread_field() {
    let l = Limits::default();
    let mut accepted = Vec::new();
    let files = corpus("invalid");
    for (name, buf) in &files {
        let full = SipMessage::parse(buf, &l);
        assert!(full.is_err(), "{name}");
        if check_steer(buf, &l, full) {
            accepted.push(name.as_str());
        }
    }
    // The faults in From, Via, Contact, Max-Forwards, Expires, Content-Length and
    // header names; every other invalid message is refused.
    assert_eq!(
        accepted,
        [
            "content_length_hex",
            "content_length_overflow",
            "expires_negative",
            "from_two_values",
            "header_without_colon",
            "max_forwards_junk",
            "missing_from",
            "register_contact_garbage",
            "rfc4475_badinv01",
            "rfc4475_clerr",
            "rfc4475_mcl01",
            "rfc4475_ncl",
            "rfc4475_regbadct",
            "scalar_contact_expires_overflow",
            "scalar_expires_overflow",
            "scalar_max_forwards_300",
            "via_bad_port",
            "via_bad_rport",
            "via_no_sent_by",
        ],
        "of {} invalid messages",
        files.len()
    );
}

#[test]
fn corpus_responses_and_requests_alike() {
    let l = Limits::default();
    let (mut requests, mut responses) = (0, 0);
    for (name, buf) in corpus("valid") {
        let v = SteerView::scan(&buf, &l).unwrap_or_else(|e| panic!("{name}: {e}"));
        match v.status() {
            Some(code) => {
                assert!((100..700).contains(&code), "{name}");
                responses += 1;
            }
            None => requests += 1,
        }
    }
    assert!(requests >= 20 && responses >= 10, "{requests} {responses}");
}
