//! Fuzzes the tokenizer file readers (`tokenizer.json`, llama2.c's `tokenizer.bin`):
//! [`bodies::tokenizer_files`].
#![no_main]

#[allow(dead_code)]
mod bodies {
    include!("bodies.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::tokenizer_files(data));
