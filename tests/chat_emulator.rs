//! `starmind chat --emulator`: prompts piped in, stories streamed back from the committed
//! firmware in rp2040js (interactive mode over UART0), each equal to the story the host engine
//! tells with the same config block; Ctrl-C (SIGINT to the chat) stops the story being told and
//! the chat goes on.
//!
//! Needs `npm ci --prefix scripts/emulator` (skipped without, unless STARMIND_REQUIRE_EMULATOR=1).

mod bench_common;
use bench_common::*;

use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use starmind::flash::{ModeArg, RunArgs};
use starmind::sampling::{SamplingArgs, StoryArgs};
use starmind_engine::story::{self, Listener};
use starmind_engine::{Model, Session};

/// The story the board tells for `prompt` as the `seed_offset`-th story of a chat (seeds count
/// up from `--seed`), told by the host engine from the same config block.
fn host_story(model_bytes: &[u8], story: &StoryArgs, prompt: &str, seed_offset: u64) -> Vec<u8> {
    let run = RunArgs {
        mode: ModeArg::Interactive,
        sampling: SamplingArgs {
            prompt: String::new(),
            story: story.clone(),
        },
    };
    let mut config = run.run_config(model_bytes.len()).unwrap().story();
    config.sampler.seed += seed_offset;
    let model = Model::parse(model_bytes).unwrap();
    // The firmware's context: the model's whole seq_len (these models fit the RAM).
    let ctx = model.config().seq_len;
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), ctx)];
    let mut session = Session::new(&model, ctx, &mut arena).unwrap();
    let mut ids = vec![0u32; config.ids_len(prompt.len(), ctx)];
    struct Text<'m>(&'m Model<'m>, Vec<u8>);
    impl Listener for Text<'_> {
        fn token(&mut self, id: u32) -> ControlFlow<()> {
            self.1.extend_from_slice(self.0.token_bytes(id));
            ControlFlow::Continue(())
        }
    }
    let mut text = Text(&model, Vec::new());
    story::tell(
        &model,
        &mut session,
        prompt.as_bytes(),
        &config,
        &mut ids,
        &mut text,
    )
    .unwrap();
    text.1
}

fn story_args(tokens: u32, temperature: f64) -> StoryArgs {
    StoryArgs {
        tokens: Some(tokens),
        seed: 42,
        temperature,
        top_k: 40,
        top_p: 0.9,
    }
}

/// `starmind chat --emulator model` with `story`'s length and temperature, every stream piped.
fn spawn_chat(dir: &Path, model: &Path, story: &StoryArgs) -> Child {
    starmind()
        .current_dir(dir)
        .arg("chat")
        .arg("--emulator")
        .arg(model)
        .args(["-n", &story.tokens.unwrap().to_string()])
        .args(["--temperature", &story.temperature.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_piped_prompts_come_back_as_the_host_engines_stories() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("chat_piped");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/story-1k.smb");
    let bytes = std::fs::read(&model).unwrap();
    let story = story_args(40, 0.8);
    let mut chat = spawn_chat(&dir, &model, &story);
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"The cat\nOnce upon a time\n")
        .unwrap();
    let output = chat.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let want = [
        b"The cat".to_vec(),
        host_story(&bytes, &story, "The cat", 0),
        b"\nOnce upon a time".to_vec(),
        host_story(&bytes, &story, "Once upon a time", 1),
        b"\n".to_vec(),
    ]
    .concat();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&want)
    );
    let summaries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tokens/s on the emulated board"))
        .collect();
    assert_eq!(summaries.len(), 2, "{stderr}");
}

/// What a child has written so far, read on a thread.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    seen
}

/// Waits until `what` holds for the bytes seen (at most a minute).
fn wait_for(seen: &Mutex<Vec<u8>>, what: impl Fn(&[u8]) -> bool, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !what(&seen.lock().unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupt(chat: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &chat.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn ctrl_c_stops_the_story_not_the_chat() {
    if !emulator_available() {
        return;
    }
    let dir = scratch("chat_ctrl_c");
    // PRNG weights, a 512-token context and greedy decoding: stories long enough to interrupt.
    let bytes = model_file(64, 32, 64, 2, 2, 512);
    let model = dir.join("long.smb");
    std::fs::write(&model, &bytes).unwrap();
    let story = story_args(2000, 0.0);
    let whole = [
        host_story(&bytes, &story, "ab", 0),
        host_story(&bytes, &story, "b", 1),
    ];
    assert!(
        whole.iter().all(|s| s.len() > 300),
        "the test needs long stories"
    );
    let mut chat = spawn_chat(&dir, &model, &story);
    let mut input = chat.stdin.take().unwrap();
    let stdout = collect(chat.stdout.take().unwrap());
    let stderr = collect(chat.stderr.take().unwrap());
    let summaries = |n: usize| {
        move |seen: &[u8]| String::from_utf8_lossy(seen).matches("tokens/s").count() >= n
    };

    input.write_all(b"ab\n").unwrap();
    wait_for(&stdout, |s| s.len() >= 2 + 20, "the first story's text");
    interrupt(&chat);
    wait_for(&stderr, summaries(1), "the first story's end");
    // chat ends the story's line on stdout before it writes the summary on stderr, but the two
    // pipes are read by different threads: wait for that newline before cutting the output.
    wait_for(&stdout, |s| s.ends_with(b"\n"), "the first story's newline");
    let first_len = stdout.lock().unwrap().len();
    input.write_all(b"b\n").unwrap();
    wait_for(
        &stdout,
        |s| s.len() >= first_len + 1 + 20,
        "the second story's text",
    );
    interrupt(&chat);
    wait_for(&stderr, summaries(2), "the second story's end");
    drop(input);
    let status = chat.wait().unwrap();
    let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr.matches("ended at Ctrl-C").count(), 2, "{stderr}");

    // Each story is the start of the host's, cut short.
    let out = stdout.lock().unwrap().clone();
    let (first, second) = out.split_at(first_len);
    let first = first
        .strip_prefix(b"ab")
        .and_then(|s| s.strip_suffix(b"\n"))
        .unwrap();
    let second = second
        .strip_prefix(b"b")
        .and_then(|s| s.strip_suffix(b"\n"))
        .unwrap();
    for (told, host) in [(first, &whole[0]), (second, &whole[1])] {
        assert!(
            told.len() >= 20 && told.len() < host.len(),
            "{}",
            told.len()
        );
        assert_eq!(told, &host[..told.len()]);
    }
}

#[test]
fn a_missing_board_or_model_is_a_clear_error() {
    let dir = scratch("chat_errors");
    let output = run_in(&dir, &["chat", "--serial", "/nonexistent/ttyACM9"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("opening serial port /nonexistent/ttyACM9"),
        "{}",
        stderr(&output)
    );
    let output = run_in(&dir, &["chat", "--emulator"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("the default models/story-flagship.smb is not there"),
        "{}",
        stderr(&output)
    );
    let output = run_in(&dir, &["chat", "--emulator", "missing.smb"]);
    assert!(
        stderr(&output).contains("missing.smb"),
        "{}",
        stderr(&output)
    );
    let output = run_in(&dir, &["chat"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--serial"), "{}", stderr(&output));
}
