#![no_main]
//! `make fuzz`: the body is `tollgate_tests::fuzz::management` (replayed on stable by `make test`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_tests::fuzz::management(data));
