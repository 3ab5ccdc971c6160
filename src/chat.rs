//! `starmind chat`: the host side of the firmware's interactive mode. Each prompt line (typed,
//! or read from stdin when it is not a terminal) goes to the board — over a serial port, or to
//! an emulated board over its UART0 (`scripts/emulator/run.mjs --interactive`) — and the story
//! streams back as the board tells it, then its speed from the board's own clock (the
//! `STARMIND-STORY` line, [`crate::console`]). Ctrl-C stops the story being told (the chat sends
//! [`STOP_BYTE`], which the firmware's story loop reads between tokens), not the chat; the end
//! of input (Ctrl-D) ends it.

use std::collections::VecDeque;
use std::io::{BufRead as _, IsTerminal as _, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use starmind_engine::run_config::MAX_PROMPT_BYTES;

use crate::console::{Interactive, Said, StoryLine, STOP_BYTE};
use crate::flash::{self, ModeArg, RunArgs};
use crate::sampling::{SamplingArgs, StoryArgs};
use crate::uf2::{self, Board};

/// Arguments of `starmind chat`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The board's serial port (USB CDC, or a UART adapter on GP0/GP1 at 115200 baud); flash it
    /// first with `starmind flash <model> --mode interactive`.
    #[arg(
        long,
        value_name = "PORT",
        conflicts_with = "emulator",
        required_unless_present = "emulator"
    )]
    pub serial: Option<String>,
    /// Chat with an emulated board (rp2040js) running this model file [default:
    /// models/story-flagship.smb].
    #[arg(long, value_name = "MODEL", num_args = 0..=1)]
    pub emulator: Option<Option<PathBuf>>,
    /// With --emulator: the story length and sampler (a board uses those it was flashed with).
    /// Each story's seed counts up from --seed, as on the board.
    #[command(flatten)]
    pub story: StoryArgs,
}

/// The model `--emulator` runs when none is given.
const DEFAULT_MODEL: &str = "models/story-flagship.smb";
/// How long a board may stay silent after a prompt line before the chat gives up (the echo of
/// the line comes at once; a slow prefill comes after it).
const ECHO_TIMEOUT: Duration = Duration::from_secs(20);

/// Set by SIGINT (Ctrl-C); the chat loop turns it into [`STOP_BYTE`].
static CTRL_C: AtomicBool = AtomicBool::new(false);

/// What the chat loop waits for.
enum Event {
    Board(Vec<u8>),
    /// The board's output ended (the emulator exited, the port failed): why.
    BoardGone(String),
    Line(String),
    InputEnd,
}

/// A board to talk to: where its bytes go, and the emulator process when it is one.
struct Link {
    to_board: Box<dyn Write + Send>,
    emulator: Option<Emulator>,
    name: String,
}

struct Emulator {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Holds the UF2 image until the driver has exited.
    _dir: crate::emulator::RunDir,
}

/// `starmind chat`.
pub fn run(args: Args) -> Result<()> {
    let (events, inbox) = mpsc::channel();
    let mut link = match (&args.serial, &args.emulator) {
        (Some(port), _) => open_serial(port, events.clone())?,
        (None, Some(model)) => start_emulator(model.as_ref(), &args.story, events.clone())?,
        (None, None) => bail!("give --serial <port> or --emulator [model.smb]"),
    };
    let terminal = std::io::stdin().is_terminal();
    read_prompts(events);
    catch_ctrl_c();
    if terminal {
        eprintln!("Type a prompt and Enter; Ctrl-C stops a story, Ctrl-D ends the chat.");
    }
    let result = converse(&mut link, &inbox, terminal);
    match (result, close(link)) {
        // The emulator driver's own words say why the board went away.
        (Err(chat), Err(driver)) => Err(driver.context(format!("{chat:#}"))),
        (result, closed) => result.and(closed),
    }
}

/// The chat loop: a prompt line goes out when the board waits for one; its story streams to
/// stdout and its speed to stderr.
fn converse(link: &mut Link, inbox: &mpsc::Receiver<Event>, terminal: bool) -> Result<()> {
    let mut board = Interactive::new();
    let mut lines: VecDeque<String> = VecDeque::new();
    let mut input_ended = false;
    let mut at_prompt = false;
    // Since when a prompt line has had no answer; None while the board is talking.
    let mut sent_at: Option<Instant> = None;
    let mut in_story = false;
    let mut asked = false;
    if link.emulator.is_none() {
        // A serial board printed its prompt before we came: stop a story it may be telling,
        // then take it to be waiting.
        let said = settle(link, inbox, &mut board, &mut lines, &mut input_ended)?;
        if said.iter().any(|s| matches!(s, Said::Story(_)))
            && !said.iter().any(|s| matches!(s, Said::Prompt))
        {
            bail!(
                "{} tells stories on its own: flash it with `starmind flash <model> --mode interactive`",
                link.name
            );
        }
        if !said.iter().any(|s| matches!(s, Said::Prompt)) {
            board.at_prompt();
        }
        at_prompt = true;
    }
    let stdout = std::io::stdout();
    loop {
        if at_prompt && !in_story {
            if let Some(line) = lines.pop_front() {
                if line.len() > MAX_PROMPT_BYTES {
                    eprintln!(
                        "[prompt of {} bytes skipped: the board takes at most {MAX_PROMPT_BYTES}]",
                        line.len()
                    );
                    continue;
                }
                if !terminal {
                    print!("{line}");
                }
                send(link, format!("{line}\n").as_bytes())?;
                (at_prompt, in_story, asked) = (false, true, false);
                sent_at = Some(Instant::now());
                CTRL_C.store(false, Ordering::SeqCst);
            } else if input_ended {
                return Ok(());
            } else if terminal && !asked {
                eprint!("> ");
                asked = true;
            }
        }
        let event = match inbox.recv_timeout(Duration::from_millis(50)) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => bail!("{}: the connection ended", link.name),
        };
        if CTRL_C.swap(false, Ordering::SeqCst) {
            if in_story {
                send(link, &[STOP_BYTE])?;
            } else if terminal {
                eprint!("\n(Ctrl-C stops a story; Ctrl-D ends the chat)\n> ");
            }
        }
        if sent_at.is_some_and(|t| t.elapsed() > ECHO_TIMEOUT) {
            bail!(
                "no answer from {} within {} s: is it running `starmind flash <model> --mode interactive`?",
                link.name,
                ECHO_TIMEOUT.as_secs()
            );
        }
        match event {
            None => {}
            Some(Event::Line(line)) => lines.push_back(line),
            Some(Event::InputEnd) => input_ended = true,
            Some(Event::BoardGone(why)) => bail!("{}: {why}", link.name),
            Some(Event::Board(bytes)) => {
                sent_at = None;
                for said in board.feed(&bytes) {
                    match said {
                        Said::Ready { mode } if mode != "interactive" => bail!(
                            "{} runs mode={mode}: flash it with `starmind flash <model> --mode interactive`",
                            link.name
                        ),
                        Said::Ready { .. } => {}
                        Said::Prompt => at_prompt = true,
                        Said::Text(text) => {
                            let mut out = stdout.lock();
                            out.write_all(&text)?;
                            out.flush()?;
                        }
                        Said::Error(error) if in_story => eprintln!("[{error}]"),
                        Said::Error(error) => bail!("{}: {error}", link.name),
                        Said::Story(story) => {
                            println!();
                            eprintln!("[{}]", story_summary(&story, link.emulator.is_some()));
                            in_story = false;
                        }
                    }
                }
            }
        }
    }
}

/// One story's figures, from the board's clock.
fn story_summary(story: &StoryLine, emulated: bool) -> String {
    let why = match story.end.as_str() {
        "tokens" => "the token limit",
        "end_of_text" => "the end of the story",
        "context_full" => "a full context",
        "stopped" => "Ctrl-C",
        "error" => "an error",
        other => other,
    };
    format!(
        "{} tokens in {:.2} s, {:.1} tokens/s on the {}board; ended at {why}",
        story.tokens,
        story.seconds(),
        story.tokens_per_s(),
        if emulated { "emulated " } else { "" }
    )
}

/// Sends Ctrl-C to a serial board and collects what it says for half a second (prompt lines
/// that arrive meanwhile are kept).
fn settle(
    link: &mut Link,
    inbox: &mpsc::Receiver<Event>,
    board: &mut Interactive,
    lines: &mut VecDeque<String>,
    input_ended: &mut bool,
) -> Result<Vec<Said>> {
    send(link, &[STOP_BYTE])?;
    let until = Instant::now() + Duration::from_millis(500);
    let mut said = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match inbox.recv_timeout(left) {
            Ok(Event::Board(bytes)) => said.extend(board.feed(&bytes)),
            Ok(Event::BoardGone(why)) => bail!("{}: {why}", link.name),
            Ok(Event::Line(line)) => lines.push_back(line),
            Ok(Event::InputEnd) => *input_ended = true,
            Err(_) => break,
        }
    }
    Ok(said)
}

fn send(link: &mut Link, bytes: &[u8]) -> Result<()> {
    link.to_board
        .write_all(bytes)
        .and_then(|()| link.to_board.flush())
        .with_context(|| format!("writing to {}", link.name))
}

/// Opens `port` and reads it on a thread.
fn open_serial(port: &str, events: Sender<Event>) -> Result<Link> {
    let handle = serialport::new(port, 115_200)
        .timeout(Duration::from_millis(100))
        .open()
        .with_context(|| format!("opening serial port {port}"))?;
    let mut reader = handle
        .try_clone()
        .with_context(|| format!("serial port {port}"))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    if events.send(Event::Board(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => {
                    let _ = events.send(Event::BoardGone(format!("reading: {e}")));
                    return;
                }
            }
        }
    });
    Ok(Link {
        to_board: Box::new(handle),
        emulator: None,
        name: format!("the board on {port}"),
    })
}

/// Boots `model` in interactive mode in the emulator (the UF2 image `starmind flash --uf2`
/// writes for a 16 MB board) and reads its UART0 on a thread.
fn start_emulator(
    model: Option<&PathBuf>,
    story: &StoryArgs,
    events: Sender<Event>,
) -> Result<Link> {
    let path = model
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    if model.is_none() && !path.is_file() {
        bail!(
            "no model: give one (`--emulator model.smb`); the default {DEFAULT_MODEL} is not there"
        );
    }
    let bytes = crate::model_file::read(&path)?;
    let run = RunArgs {
        mode: ModeArg::Interactive,
        sampling: SamplingArgs {
            prompt: String::new(),
            story: story.clone(),
        },
    };
    let segments = flash::segments(&bytes, &run, Board::Pico16Mb)?;
    let dir = crate::emulator::RunDir::new("chat")?;
    let image = dir.path().join("chat.uf2");
    std::fs::write(&image, uf2::write(&segments))
        .with_context(|| format!("writing {}", image.display()))?;
    let mut command = crate::emulator::driver()?;
    command
        .arg("--uf2")
        .arg(&image)
        .arg("--interactive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group: Ctrl-C in the terminal is the chat's to forward, not node's.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().with_context(crate::emulator::not_started)?;
    let to_board = child.stdin.take().context("the emulator's stdin")?;
    let mut from_board = child.stdout.take().context("the emulator's stdout")?;
    let mut errors = child.stderr.take().context("the emulator's stderr")?;
    let stderr = Arc::new(Mutex::new(String::new()));
    let collected = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = errors.read_to_string(&mut text);
        *collected.lock().unwrap_or_else(|e| e.into_inner()) = text;
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        loop {
            match from_board.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = events.send(Event::BoardGone("the emulator stopped".into()));
                    return;
                }
                Ok(n) => {
                    if events.send(Event::Board(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(Link {
        to_board: Box::new(to_board),
        emulator: Some(Emulator {
            child,
            stderr,
            _dir: dir,
        }),
        name: format!("the emulated board ({})", path.display()),
    })
}

/// Reads prompt lines from stdin on a thread.
fn read_prompts(events: Sender<Event>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r').to_string();
            if events.send(Event::Line(line)).is_err() {
                return;
            }
        }
        let _ = events.send(Event::InputEnd);
    });
}

/// Ends the emulator: its input closes, so the driver finishes its last story and exits (it is
/// killed after a few seconds otherwise). Reports what the driver said if it failed.
fn close(link: Link) -> Result<()> {
    let Link {
        to_board, emulator, ..
    } = link;
    drop(to_board);
    let Some(mut emulator) = emulator else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        match emulator.child.try_wait()? {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => break None,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let Some(status) = status else {
        let _ = emulator.child.kill();
        let _ = emulator.child.wait();
        return Ok(());
    };
    if !status.success() {
        // Give the stderr thread a moment to collect the driver's last words.
        std::thread::sleep(Duration::from_millis(100));
        let stderr = emulator
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        bail!("the emulator driver failed ({status}): {}", stderr.trim());
    }
    Ok(())
}

/// Ctrl-C sets [`CTRL_C`] instead of ending the process (unix; elsewhere it ends the chat).
fn catch_ctrl_c() {
    #[cfg(unix)]
    {
        extern "C" fn on_sigint(_: libc::c_int) {
            CTRL_C.store(true, Ordering::SeqCst);
        }
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                libc::SIGINT,
                on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}
