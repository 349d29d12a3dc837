//! cargo fuzz target `redact`: see `drivers::redact` for the input format.
#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::redact(data));
