//! cargo fuzz target `wasm_gateway`: see `wasm_driver` for the input format.
#![no_main]

#[path = "../../../filter/fuzz/drivers.rs"]
mod drivers;
#[path = "../wasm_driver.rs"]
mod wasm_driver;

libfuzzer_sys::fuzz_target!(
    init: wasm_driver::warm_up(),
    |data: &[u8]| wasm_driver::wasm_gateway(data)
);
