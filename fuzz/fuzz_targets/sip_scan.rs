//! Fuzzes the SIP scanner. The checks live with the scanner's tests
//! (`siplb-core/tests/sip_support/fuzz_checks.rs`) so CI runs them too, over the corpus
//! (`siplb-core/tests/sip_fuzz.rs`).

#![no_main]

#[path = "../../siplb-core/tests/sip_support/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check(data));
