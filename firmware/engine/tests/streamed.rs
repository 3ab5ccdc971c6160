//! A vocabulary above `STREAMED_VOCAB` (Tiny-LLM's 32000 on the 16 MB board): the classifier
//! runs chunk by chunk and the sampler consumes the chunks. Its logits against the float
//! reference, and its stories against sampling the whole logits vector.

mod support;

use std::ops::ControlFlow;

use starmind_engine::format::{write_model, FfnKind, Quant};
use starmind_engine::forward::{streams_logits, EngineError, LOGITS_CHUNK_ROWS, STREAMED_VOCAB};
use starmind_engine::quantize::quantize_model;
use starmind_engine::reference::FloatSession;
use starmind_engine::story::{self, Listener, Start, StoryConfig, WhenFull};
use starmind_engine::{Config, Model, Sampler, SamplerConfig, Session};
use support::{config, random_model, Rng};

/// Untied, GQA, SwiGLU, one layer: Tiny-LLM's layout at a test's size; the vocabulary is not
/// a multiple of the chunk, so the last chunk is short.
fn streamed_config() -> Config {
    let vocab = STREAMED_VOCAB + LOGITS_CHUNK_ROWS + 37;
    config(vocab, 16, 48, 1, 2, 1, 32, FfnKind::Swiglu, false)
}

fn model_file(cfg: Config, seed: u64) -> Vec<u8> {
    write_model(&quantize_model(&random_model(cfg, seed), Quant::Int8, 0)).expect("write")
}

#[test]
fn streamed_logits_match_the_float_reference() {
    let cfg = streamed_config();
    assert!(streams_logits(&cfg));
    let float = random_model(cfg, 3);
    let file = write_model(&quantize_model(&float, Quant::Int8, 0)).unwrap();
    let model = Model::parse(&file).unwrap();
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), cfg.seq_len)];
    let mut session = Session::new(&model, cfg.seq_len, &mut arena).unwrap();
    let mut reference = FloatSession::new(&float);
    let mut rng = Rng(11);
    let mut logits = vec![0i32; cfg.vocab_size];
    let (mut max_err, mut var, mut agree) = (0f64, 0f64, 0usize);
    let steps = 16;
    for _ in 0..steps {
        let token = (rng.next_u64() % cfg.vocab_size as u64) as u32;
        let want = reference.feed(token);
        session.feed_token(token).unwrap();
        session.logits_into(&mut logits);
        let got: Vec<f64> = logits.iter().map(|&l| l as f64 / 65536.0).collect();
        for (g, w) in got.iter().zip(&want) {
            max_err = max_err.max((g - w).abs());
            var += w * w;
        }
        let argmax = |v: &[f64]| {
            v.iter()
                .enumerate()
                .fold((0, f64::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
                .0
        };
        agree += (argmax(&got) == argmax(&want)) as usize;
    }
    let std = (var / (steps * cfg.vocab_size) as f64).sqrt();
    eprintln!("streamed: max |Δlogit| {max_err:.4}, logit std {std:.3}, agreement {agree}/{steps}");
    assert!(
        max_err < 0.1 * std.max(1.0),
        "max error {max_err} vs std {std}"
    );
    assert!(agree * 100 >= steps * 85, "agreement {agree}/{steps}");
}

#[test]
fn the_arena_holds_one_chunk_of_logits() {
    let cfg = streamed_config();
    let small = Config {
        vocab_size: STREAMED_VOCAB,
        ..cfg
    };
    // One more vocabulary entry past the limit costs fewer bytes than the whole logits vector:
    // the arena shrinks by (STREAMED_VOCAB − LOGITS_CHUNK_ROWS) words.
    let bigger = Config {
        vocab_size: STREAMED_VOCAB + 1,
        ..cfg
    };
    assert_eq!(
        Model::arena_bytes(&small, 32) - Model::arena_bytes(&bigger, 32),
        4 * (STREAMED_VOCAB - LOGITS_CHUNK_ROWS)
    );
}

#[test]
fn feed_refuses_a_streamed_vocabulary_with_a_typed_error() {
    let cfg = streamed_config();
    let file = model_file(cfg, 5);
    let model = Model::parse(&file).unwrap();
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), 8)];
    let mut session = Session::new(&model, 8, &mut arena).unwrap();
    assert_eq!(session.feed(0).err(), Some(EngineError::LogitsStreamed));
    assert_eq!(
        session.feed_token(cfg.vocab_size as u32).err(),
        Some(EngineError::TokenOutOfRange(cfg.vocab_size as u32))
    );
    // Nothing fed yet: sampling is defined (token 0), not a panic.
    assert_eq!(session.sample(&mut Sampler::new(SamplerConfig::GREEDY)), 0);
}

struct Ids(Vec<u32>);

impl Listener for Ids {
    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.0.push(id);
        ControlFlow::Continue(())
    }
}

/// The story loop on the streamed path against a loop that materialises every logit and
/// samples the whole vector with `Sampler::sample`: the same ids for every sampler mode.
#[test]
fn streamed_stories_equal_sampling_the_whole_vector() {
    let cfg = streamed_config();
    let file = model_file(cfg, 7);
    let model = Model::parse(&file).unwrap();
    let ctx = 24;
    let samplers = [
        SamplerConfig::GREEDY,
        SamplerConfig {
            temperature_q8: 256,
            top_k: 0,
            top_p_q16: 1 << 16,
            seed: 3,
        },
        SamplerConfig {
            temperature_q8: 200,
            top_k: 40,
            top_p_q16: 1 << 16,
            seed: 4,
        },
        SamplerConfig {
            temperature_q8: 300,
            top_k: 0,
            top_p_q16: 58_982,
            seed: 5,
        },
        SamplerConfig {
            temperature_q8: 256,
            top_k: 10,
            top_p_q16: 45_000,
            seed: 6,
        },
    ];
    for sampler_config in samplers {
        let story_config = StoryConfig {
            sampler: sampler_config,
            max_tokens: 20,
            stop_at_end_of_text: false,
            start: Start::PromptOnly,
            when_full: WhenFull::Stop,
        };
        let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
        let mut session = Session::new(&model, ctx, &mut arena).unwrap();
        let mut ids = vec![0u32; story_config.ids_len(0, ctx)];
        let mut told = Ids(Vec::new());
        story::tell(
            &model,
            &mut session,
            b"",
            &story_config,
            &mut ids,
            &mut told,
        )
        .unwrap();

        let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
        let mut session = Session::new(&model, ctx, &mut arena).unwrap();
        let mut sampler = Sampler::new(sampler_config);
        let mut logits = vec![0i32; cfg.vocab_size];
        let mut want = Vec::new();
        session.feed_token(model.eot_id()).unwrap();
        for _ in 0..20 {
            session.logits_into(&mut logits);
            let next = sampler.sample(&logits);
            want.push(next);
            session.feed_token(next).unwrap();
        }
        assert_eq!(told.0, want, "{sampler_config:?}");
        let distinct = want.iter().collect::<std::collections::BTreeSet<_>>().len();
        eprintln!("{sampler_config:?}: {distinct} distinct ids of 20");
    }
}
