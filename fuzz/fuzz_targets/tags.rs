#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    axum_cachex::__fuzz::tags(data);
});
