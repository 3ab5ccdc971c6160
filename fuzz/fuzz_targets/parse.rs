//! Fuzzes the model file reader and everything a parsed model lets the device do: a raw parse,
//! then (CRC fixed up, so mutations reach the deeper checks) parse, encode, token bytes, a few
//! forward steps and sampling. Any panic is a bug: bad bytes must give a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starmind_engine::format::fix_crc;
use starmind_engine::{Model, Sampler, SamplerConfig, Session};

fuzz_target!(|data: &[u8]| {
    let _ = Model::parse(data);
    let mut fixed = data.to_vec();
    fix_crc(&mut fixed);
    let Ok(model) = Model::parse(&fixed) else { return };
    let config = model.config();
    let mut ids = [0u32; 64];
    let _ = model.encode(data.get(..64).unwrap_or(data), &mut ids);
    for id in 0..config.vocab_size.min(300) as u32 + 2 {
        let _ = model.token_bytes(id);
    }
    let ctx = config.seq_len.min(4);
    let arena_bytes = Model::arena_bytes(&config, ctx);
    if arena_bytes > 4 << 20 {
        return;
    }
    let mut arena = vec![0u8; arena_bytes];
    let Ok(mut session) = Session::new(&model, ctx, &mut arena) else { return };
    let mut sampler = Sampler::new(SamplerConfig { temperature_q8: 200, top_k: 5, top_p_q16: 60_000, seed: 1 });
    let mut token = config.eot_id;
    for _ in 0..ctx {
        let Ok(logits) = session.feed(token) else { return };
        token = sampler.sample(logits);
    }
});
