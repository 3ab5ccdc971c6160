//! Fuzzes the config file reader: [`bodies::config_json`].
#![no_main]

#[allow(dead_code)]
mod bodies {
    include!("bodies.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::config_json(data));
