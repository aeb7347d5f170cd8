#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hybridboot::fuzz_entry::signed_manifest(data);
});
