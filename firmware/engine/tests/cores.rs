//! The forward pass cut between two cores ([`starmind_engine::cores`]) gives the bits of one
//! core: logits and sampled tokens, on two host threads and cut on one thread, for the golden
//! model and random models of several shapes (GQA, SwiGLU, int4, row counts that are not a
//! multiple of 8, a single row quad, a streamed vocabulary).

mod support;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use starmind_engine::cores::{Part, Serial, Threads};
use starmind_engine::format::{write_model, FfnKind, Quant};
use starmind_engine::forward::{streams_logits, STREAMED_VOCAB};
use starmind_engine::quantize::quantize_model;
use starmind_engine::story::{self, Listener, Start, StoryConfig, WhenFull};
use starmind_engine::{Config, Cores, Model, SamplerConfig, Session};
use support::{config, random_model, Rng};

/// [`Serial`], counting its joins and the joins whose two parts both did work.
#[derive(Default)]
struct Counting {
    joins: AtomicUsize,
}

impl Cores for Counting {
    fn join(&self, first: Part, second: Part) {
        self.joins.fetch_add(1, Ordering::Relaxed);
        Serial.join(first, second)
    }
}

/// Every logit of `steps` random tokens (the whole context at most) with `cores`.
fn logits_with(model: &Model, cores: Option<&dyn Cores>, steps: usize, seed: u64) -> Vec<i32> {
    let c = model.config();
    let mut arena = vec![0u8; Model::arena_bytes(&c, c.seq_len)];
    let mut session = Session::new(model, c.seq_len, &mut arena).unwrap();
    session.set_cores(cores);
    let mut rng = Rng(seed);
    let mut logits = vec![0i32; c.vocab_size];
    let mut all = Vec::new();
    for _ in 0..steps.min(c.seq_len) {
        let token = (rng.next_u64() % c.vocab_size as u64) as u32;
        session.feed_token(token).unwrap();
        session.logits_into(&mut logits);
        all.extend_from_slice(&logits);
    }
    all
}

struct Ids(Vec<u32>);

impl Listener for Ids {
    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.0.push(id);
        ControlFlow::Continue(())
    }
}

/// The ids of one sampled story (temperature, top-k and top-p; the context slides) with `cores`.
fn story_with(model: &Model, cores: Option<&dyn Cores>, tokens: usize) -> Vec<u32> {
    let c = model.config();
    let mut arena = vec![0u8; Model::arena_bytes(&c, c.seq_len)];
    let mut session = Session::new(model, c.seq_len, &mut arena).unwrap();
    session.set_cores(cores);
    let config = StoryConfig {
        sampler: SamplerConfig {
            temperature_q8: 230,
            top_k: 20,
            top_p_q16: 60_000,
            seed: 5,
        },
        max_tokens: tokens,
        stop_at_end_of_text: false,
        start: Start::AfterEndOfText,
        when_full: WhenFull::Slide,
    };
    let prompt = b"";
    let mut ids = vec![0u32; config.ids_len(prompt.len(), c.seq_len)];
    let mut listener = Ids(Vec::new());
    story::tell(
        model,
        &mut session,
        prompt,
        &config,
        &mut ids,
        &mut listener,
    )
    .unwrap();
    listener.0
}

/// Two threads, and the cut on one thread, against one core; returns the joins of one pass
/// over `steps` tokens.
fn check_model(name: &str, file: &[u8], steps: usize) -> usize {
    let model = Model::parse(file).unwrap();
    let one = logits_with(&model, None, steps, 7);
    assert_eq!(
        logits_with(&model, Some(&Threads), steps, 7),
        one,
        "{name}: two threads' logits"
    );
    let counting = Counting::default();
    assert_eq!(
        logits_with(&model, Some(&counting), steps, 7),
        one,
        "{name}: the cut pass on one thread"
    );
    let tokens = 2 * model.config().seq_len + 3;
    let ids = story_with(&model, None, tokens);
    assert_eq!(ids.len(), tokens);
    assert_eq!(
        story_with(&model, Some(&Threads), tokens),
        ids,
        "{name}: two threads' sampled tokens"
    );
    counting.joins.load(Ordering::Relaxed)
}

fn model_file(cfg: Config, quant: Quant, seed: u64) -> Vec<u8> {
    write_model(&quantize_model(&random_model(cfg, seed), quant, 32)).unwrap()
}

#[test]
fn two_threads_give_the_golden_models_bits() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    for name in ["story-1k.smb", "story-1k-int4.smb"] {
        let file = std::fs::read(dir.join(name)).unwrap();
        let joins = check_model(name, &file, 64);
        assert!(joins > 0, "{name}: nothing was cut");
    }
}

#[test]
fn two_threads_give_one_cores_bits_on_random_models() {
    let shapes: [(&str, Config, Quant); 8] = [
        // story-1k's shape: 8 rows (two quads), 2 heads.
        (
            "story-1k shape",
            config(64, 8, 32, 1, 2, 2, 24, FfnKind::Plain, true),
            Quant::Int8,
        ),
        // stories260k's layout at a test's size: GQA (8 heads over 4), SwiGLU, 86 hidden rows
        // (21 quads and 2 rows).
        (
            "GQA SwiGLU",
            config(96, 32, 86, 2, 8, 4, 20, FfnKind::Swiglu, true),
            Quant::Int8,
        ),
        // Rows not a multiple of 8 (12 = 3 quads, 20 = 5), 3 heads sharing 1 key/value head:
        // the heads are not cut (one group), the rows are.
        (
            "odd rows, multi-query",
            config(70, 12, 20, 2, 3, 1, 16, FfnKind::Swiglu, false),
            Quant::Int8,
        ),
        // 6 rows: one quad and 2 tail rows; 3 heads of 2.
        (
            "a quad and a tail",
            config(38, 6, 18, 1, 3, 3, 12, FfnKind::Plain, true),
            Quant::Int8,
        ),
        // A single quad everywhere but the classifier: nothing of it is cut.
        (
            "a single quad",
            config(40, 4, 4, 2, 2, 1, 10, FfnKind::Plain, true),
            Quant::Int8,
        ),
        // Head size 16 (the any-size attention path), 4 heads over 2.
        (
            "head size 16",
            config(50, 64, 100, 1, 4, 2, 12, FfnKind::Swiglu, false),
            Quant::Int8,
        ),
        (
            "int4 GQA",
            config(80, 16, 44, 2, 4, 2, 16, FfnKind::Swiglu, true),
            Quant::Int4,
        ),
        // A context longer than the vocabulary: the late positions' attention is not cut (the
        // second core's scores live in the logits buffer).
        (
            "context beyond the vocabulary",
            config(20, 8, 24, 1, 2, 2, 40, FfnKind::Plain, true),
            Quant::Int8,
        ),
    ];
    for (seed, (name, cfg, quant)) in shapes.into_iter().enumerate() {
        let file = model_file(cfg, quant, 100 + seed as u64);
        let joins = check_model(name, &file, cfg.seq_len);
        assert!(joins > 0, "{name}: nothing was cut");
    }
}

#[test]
fn two_threads_give_one_cores_bits_on_a_streamed_vocabulary() {
    let cfg = config(
        STREAMED_VOCAB + 41,
        8,
        20,
        1,
        2,
        1,
        12,
        FfnKind::Swiglu,
        false,
    );
    assert!(streams_logits(&cfg));
    let file = model_file(cfg, Quant::Int8, 9);
    check_model("streamed", &file, cfg.seq_len);
}
