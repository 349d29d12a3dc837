//! cargo fuzz target `config`: see `drivers::config` for the input format.
#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::config(data));
