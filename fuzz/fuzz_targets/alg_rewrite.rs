//! Fuzzes the SIP ALG: the SDP view, the rewriter and in-place edits. The checks live
//! with the ALG's tests (`siplb-core/tests/alg_support/fuzz_checks.rs`) so CI runs
//! them too, over the corpora (`siplb-core/tests/alg_fuzz.rs`).

#![no_main]

#[path = "../../siplb-core/tests/alg_support/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check(data));
