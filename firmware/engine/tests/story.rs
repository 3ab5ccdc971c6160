//! The story loop on the checked-in golden model (`tests/golden/story-1k.smb`, seq_len 64):
//! against the pinned golden run, against the steps it is documented to take, and at its edges.

use std::ops::ControlFlow;
use std::path::PathBuf;

use starmind_engine::forward::EngineError;
use starmind_engine::run_config::{Mode, RunConfig};
use starmind_engine::story::{self, End, Listener, Start, StoryConfig, StoryError, WhenFull};
use starmind_engine::{Model, Sampler, SamplerConfig, Session};

fn golden_file() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/story-1k.smb");
    std::fs::read(path).unwrap()
}

/// Keeps every id and counts the hooks.
#[derive(Default)]
struct Record {
    ids: Vec<u32>,
    prefills: usize,
    prefilled_tokens: usize,
    samples: usize,
}

impl Listener for Record {
    fn prefill_starts(&mut self) {
        self.prefills += 1;
    }
    fn prefilled(&mut self, prompt_tokens: usize) {
        self.prefilled_tokens = prompt_tokens;
    }
    fn sample_starts(&mut self) {
        self.samples += 1;
    }
    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.ids.push(id);
        ControlFlow::Continue(())
    }
}

fn tell(model: &Model, prompt: &[u8], config: &StoryConfig) -> (Record, story::Outcome) {
    let ctx = model.config().seq_len;
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
    let mut session = Session::new(model, ctx, &mut arena).unwrap();
    let mut ids = vec![0u32; config.ids_len(prompt.len(), ctx)];
    let mut record = Record::default();
    let outcome = story::tell(model, &mut session, prompt, config, &mut ids, &mut record).unwrap();
    (record, outcome)
}

const SAMPLER: SamplerConfig = SamplerConfig {
    temperature_q8: 205,
    top_k: 40,
    top_p_q16: 58_982,
    seed: 42,
};

#[test]
fn the_prompt_alone_until_full_is_the_pinned_golden_run() {
    let file = golden_file();
    let model = Model::parse(&file).unwrap();
    let expected = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/story-1k.expected.txt"),
    )
    .unwrap();
    let line = expected
        .lines()
        .find_map(|l| l.strip_prefix("greedy ids "))
        .unwrap();
    let golden: Vec<u32> = line
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|v| v.parse().unwrap())
        .collect();
    let config = StoryConfig {
        sampler: SamplerConfig::GREEDY,
        max_tokens: 1000,
        stop_at_end_of_text: false,
        start: Start::PromptOnly,
        when_full: WhenFull::Stop,
    };
    let (record, outcome) = tell(&model, b"Once upon a time", &config);
    assert_eq!(outcome.end, End::ContextFull);
    assert_eq!(outcome.prompt_tokens + golden.len(), 64);
    // The golden run stops once the context is full; the loop also passes on the token drawn
    // from the last logits (the device prints it), which it cannot feed.
    assert_eq!(record.ids.len(), golden.len() + 1);
    assert_eq!(&record.ids[..golden.len()], &golden[..]);
}

#[test]
fn a_bench_block_tells_the_documented_steps() {
    let file = golden_file();
    let model = Model::parse(&file).unwrap();
    let prompt = b"Once upon a time";
    let run = RunConfig::new(Mode::Bench, prompt, 20, SAMPLER, file.len() as u32).unwrap();
    let (record, outcome) = tell(&model, prompt, &run.story());

    // <|endoftext|> + the prompt prefilled at once, then sample and feed, 20 times.
    let ctx = model.config().seq_len;
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
    let mut session = Session::new(&model, ctx, &mut arena).unwrap();
    let mut ids = vec![model.eot_id(); 64];
    let n = 1 + model.encode(prompt, &mut ids[1..]).unwrap();
    let mut logits = session.prefill(&ids[..n]).unwrap().to_vec();
    let mut sampler = Sampler::new(SAMPLER);
    let mut want = Vec::new();
    for _ in 0..20 {
        let next = sampler.sample(&logits);
        want.push(next);
        logits = session.feed(next).unwrap().to_vec();
    }

    assert_eq!(record.ids, want);
    assert_eq!(outcome.end, End::TokenLimit);
    assert_eq!((outcome.prompt_tokens, outcome.generated), (n, 20));
    assert_eq!((record.prefills, record.prefilled_tokens), (1, n));
    assert_eq!(record.samples, 20);
}

/// The first step at which a story from `seed` draws `<|endoftext|>`, running on past it.
fn first_end_of_text(model: &Model, seed: u64) -> Option<usize> {
    let config = StoryConfig {
        sampler: SamplerConfig {
            temperature_q8: 400,
            top_k: 0,
            top_p_q16: 1 << 16,
            seed,
        },
        max_tokens: 1000,
        stop_at_end_of_text: false,
        start: Start::AfterEndOfText,
        when_full: WhenFull::Stop,
    };
    let (record, _) = tell(model, b"The end.", &config);
    record.ids.iter().position(|&id| id == model.eot_id())
}

#[test]
fn a_story_stops_at_end_of_text_without_passing_it_on() {
    let file = golden_file();
    let model = Model::parse(&file).unwrap();
    let (seed, at) = (0..500)
        .find_map(|seed| first_end_of_text(&model, seed).map(|at| (seed, at)))
        .expect("some seed draws <|endoftext|> within the context");
    let run = RunConfig::new(
        Mode::Story,
        b"The end.",
        1000,
        SamplerConfig {
            temperature_q8: 400,
            top_k: 0,
            top_p_q16: 1 << 16,
            seed,
        },
        1,
    )
    .unwrap();
    let (record, outcome) = tell(&model, b"The end.", &run.story());
    assert_eq!(outcome.end, End::EndOfText);
    assert_eq!(outcome.generated, at);
    assert!(!record.ids.contains(&model.eot_id()));
    assert_eq!(
        record.samples,
        at + 1,
        "the end-of-text draw is sampled too"
    );
}

#[test]
fn sliding_goes_past_the_context_as_generate_always_did() {
    let file = golden_file();
    let model = Model::parse(&file).unwrap();
    let prompt = b"Tom had a red ball.";
    let sampler = SamplerConfig {
        temperature_q8: 205,
        top_k: 0,
        top_p_q16: 1 << 16,
        seed: 9,
    };
    let config = StoryConfig {
        sampler,
        max_tokens: 150,
        stop_at_end_of_text: false,
        start: Start::PromptOnly,
        when_full: WhenFull::Slide,
    };
    let (record, outcome) = tell(&model, prompt, &config);
    assert_eq!((outcome.end, outcome.generated), (End::TokenLimit, 150));

    // `starmind generate` before the story loop: keep the last half of the context when full.
    let ctx = model.config().seq_len;
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
    let mut session = Session::new(&model, ctx, &mut arena).unwrap();
    let mut history = vec![0u32; prompt.len() + 1];
    let n = model.encode(prompt, &mut history).unwrap();
    history.truncate(n);
    let mut sampler = Sampler::new(sampler);
    let mut logits = session.prefill(&history).unwrap().to_vec();
    let mut want = Vec::new();
    for _ in 0..150 {
        let next = sampler.sample(&logits);
        want.push(next);
        history.push(next);
        if session.is_full() {
            history.drain(..history.len() - ctx / 2);
            session.reset();
            logits = session.prefill(&history).unwrap().to_vec();
        } else {
            logits = session.feed(next).unwrap().to_vec();
        }
    }
    assert_eq!(record.ids, want);
}

#[test]
fn a_prompt_longer_than_the_context() {
    let file = golden_file();
    let model = Model::parse(&file).unwrap();
    let prompt = [b'a'; 100];
    let mut config = StoryConfig {
        sampler: SamplerConfig::GREEDY,
        max_tokens: 5,
        stop_at_end_of_text: false,
        start: Start::PromptOnly,
        when_full: WhenFull::Slide,
    };
    let (_, outcome) = tell(&model, &prompt, &config);
    assert_eq!(outcome.prompt_tokens, 64, "sliding keeps the last 64 ids");
    assert_eq!(outcome.generated, 5);

    config.when_full = WhenFull::Stop;
    let ctx = model.config().seq_len;
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
    let mut session = Session::new(&model, ctx, &mut arena).unwrap();
    let mut ids = vec![0u32; config.ids_len(prompt.len(), ctx)];
    let err = story::tell(
        &model,
        &mut session,
        &prompt,
        &config,
        &mut ids,
        &mut Record::default(),
    )
    .unwrap_err();
    assert_eq!(err, StoryError::Prefill(EngineError::ContextFull));
    assert_eq!(err.to_string(), "prefill: context is full");
}

#[test]
fn small_buffers_are_errors_not_panics() {
    let file = golden_file();
    let model = Model::parse(&file).unwrap();
    let ctx = model.config().seq_len;
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
    let mut session = Session::new(&model, ctx, &mut arena).unwrap();
    let config = RunConfig::new(Mode::Story, b"x", 10, SAMPLER, 1)
        .unwrap()
        .story();
    for len in [0, 1, 5] {
        let mut ids = vec![0u32; len];
        let err = story::tell(
            &model,
            &mut session,
            b"Once upon a time",
            &config,
            &mut ids,
            &mut Record::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            StoryError::Prompt(EngineError::BufferTooSmall),
            "{len}"
        );
    }
}
