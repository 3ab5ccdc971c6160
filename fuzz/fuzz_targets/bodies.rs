// What each fuzz target does with one input, shared (`include!`) by the targets in this folder and
// by `tests/fuzz_corpora.rs`, which replays every committed corpus file on each `cargo test`.
// Any panic is a bug: bad bytes must give an error.

/// The config file reader (`configs/*.json`, a checkpoint's `config.json`) and everything
/// derived from a config that passed it: shape checks, parameter counts, the engine's header
/// config and the memory budget.
pub fn config_json(data: &[u8]) {
    use starmind::{budget, config};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(named) = config::parse(text) else { return };
    let m = &named.model;
    let _ = m.validate();
    let _ = (m.param_count(), m.seed_param_count(), m.q_dim(), m.kv_dim());
    let _ = m.engine_config(named.eot_id(), None).validate_shape();
    let _ = named.stop_ids();
    let t = &named.train;
    let _ = budget::train_memory(m, t.batch_size, m.seq_len).total_bytes();
    let tokens = budget::eval_tokens_in_flight(256, m.seq_len);
    let _ = budget::eval_memory(m, tokens).total_bytes();
    let _ = serde_json::to_string(&named);
}

/// The tokenizer file readers: `tokenizer.json` (Hugging Face format, as `starmind train` writes
/// it or a Llama import brings it) when the first byte is even, llama2.c's `tokenizer.bin` (of
/// 259 + first byte / 2 tokens) when it is odd; then encoding, decoding and re-serialising with
/// what was read.
pub fn tokenizer_files(data: &[u8]) {
    use starmind::import::llama2c;
    use starmind::tokenizer::Tokenizer;
    let Some((&which, rest)) = data.split_first() else { return };
    let tokenizer = if which & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        let Ok(tokenizer) = Tokenizer::from_json(text) else { return };
        tokenizer
    } else {
        let vocab = 259 + (which as usize >> 1);
        let Ok(pieces) = llama2c::parse_tokenizer_bin(rest, vocab) else { return };
        let Ok(json) = llama2c::tokenizer_json(&pieces) else { return };
        let Ok(tokenizer) = Tokenizer::from_json(&json) else { return };
        tokenizer
    };
    let sample = "Once upon a time, <|endoftext|> a \u{1F600} zebra\n\u{FFFD}";
    if tokenizer.can_encode() {
        let ids = tokenizer.encode(sample);
        let _ = tokenizer.decode(&ids);
        let _ = tokenizer.encode_with_source_bytes(sample);
    }
    for id in 0..tokenizer.vocab_size().min(300) as u32 + 2 {
        let _ = tokenizer.token_bytes(id);
    }
    let _ = (tokenizer.merges(), tokenizer.unk_id(), tokenizer.eot_id());
    let _ = tokenizer.to_json();
}
