//! `starmind bench --host`, and the host half of `--check`: the firmware's bench story told by
//! the engine on this computer.

use std::ops::ControlFlow;
use std::time::Instant;

use starmind_engine::{story, Model, Session};

use super::{BenchResult, Target};
use crate::flash::{ModeArg, RunArgs};
use crate::sampling::SamplingArgs;

/// The firmware's bench on the host: the config block `starmind flash --mode bench` would
/// write, told by the engine's story loop (`<|endoftext|>` + prompt prefilled, then up to
/// `tokens` × (sample, feed)) in a session of `ctx` positions. Returns the ids and the prompt's
/// token count. `on_step` is called after the prefill (0) and after each step.
pub fn bench_ids(
    model: &Model,
    sampling: &SamplingArgs,
    ctx: usize,
    on_step: &mut dyn FnMut(usize),
) -> anyhow::Result<(Vec<u32>, usize)> {
    let run = RunArgs {
        mode: ModeArg::Bench,
        sampling: sampling.clone(),
    }
    .run_config(model.bytes().len())?;
    let story = run.story();
    let config = model.config();
    let mut arena = vec![0u8; Model::arena_bytes(&config, ctx)];
    let mut session = Session::new(model, ctx, &mut arena)?;
    let mut prompt = vec![0u32; story.ids_len(run.prompt().len(), ctx)];
    let mut recorder = Recorder {
        ids: Vec::new(),
        on_step,
    };
    let outcome = story::tell(
        model,
        &mut session,
        run.prompt(),
        &story,
        &mut prompt,
        &mut recorder,
    )?;
    Ok((recorder.ids, outcome.prompt_tokens))
}

/// Keeps the ids of a story and reports its progress.
struct Recorder<'f> {
    ids: Vec<u32>,
    on_step: &'f mut dyn FnMut(usize),
}

impl story::Listener for Recorder<'_> {
    fn prefilled(&mut self, _prompt_tokens: usize) {
        (self.on_step)(0);
    }

    fn token(&mut self, id: u32) -> ControlFlow<()> {
        self.ids.push(id);
        (self.on_step)(self.ids.len());
        ControlFlow::Continue(())
    }
}

/// `--host`: the bench story on this computer, timed by the wall clock (no cycle counts).
pub fn bench(model: &Model, sampling: &SamplingArgs) -> anyhow::Result<BenchResult> {
    let config = model.config();
    let start = Instant::now();
    let mut prefill_s = 0.0;
    let (ids, prompt_tokens) = bench_ids(model, sampling, config.seq_len, &mut |step| {
        if step == 0 {
            prefill_s = start.elapsed().as_secs_f64();
        }
    })?;
    let decode_s = start.elapsed().as_secs_f64() - prefill_s;
    Ok(BenchResult {
        decode_tok_per_s: ids.len() as f64 / decode_s.max(1e-9),
        prefill_tok_per_s: prompt_tokens as f64 / prefill_s.max(1e-9),
        arena_bytes: Model::arena_bytes(&config, config.seq_len) as u64,
        ..BenchResult::for_model(model, Target::Host, ids, prompt_tokens)
    })
}
