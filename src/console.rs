//! The firmware's console as the host reads it (docs/memory-map.md): `STARMIND-… key=value`
//! lines among the text, and what the interactive mode (`flash --mode interactive`) prints
//! around each story. `bench` reads the bench line, `chat` the rest.

/// The value of `key=value` in a console line.
pub fn line_field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The byte that stops the story the board is telling (Ctrl-C; firmware/rp2040/src/app.rs).
pub const STOP_BYTE: u8 = 0x03;
/// What the interactive mode prints when it waits for a prompt line.
const PROMPT: &[u8] = b"prompt> ";
/// Every line for the host starts with this.
const MARKER: &[u8] = b"STARMIND-";

/// A `STARMIND-STORY` line: one story told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoryLine {
    pub tokens: u64,
    /// Cycles from the first sample to the end (sampling, forward passes, console output).
    pub decode_cycles: u64,
    pub clock_hz: u64,
    /// Why it ended: `tokens` (the limit), `end_of_text`, `context_full`, `stopped` (Ctrl-C),
    /// `error`.
    pub end: String,
}

impl StoryLine {
    /// Parses `STARMIND-STORY tokens=… decode_cycles=… clock_hz=… end=…`.
    pub fn parse(line: &str) -> Option<StoryLine> {
        let number = |key| line_field(line, key)?.parse().ok();
        Some(StoryLine {
            tokens: number("tokens")?,
            decode_cycles: number("decode_cycles")?,
            clock_hz: number("clock_hz")?,
            end: line_field(line, "end")?.to_string(),
        })
    }

    /// Seconds the story took on the board (from its clock).
    pub fn seconds(&self) -> f64 {
        self.decode_cycles as f64 / self.clock_hz.max(1) as f64
    }

    /// Generated tokens per second on the board.
    pub fn tokens_per_s(&self) -> f64 {
        match self.decode_cycles {
            0 => 0.0,
            _ => self.tokens as f64 / self.seconds(),
        }
    }
}

/// What the board said, as a chat needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    /// `STARMIND-READY mode=…`: the board has booted.
    Ready { mode: String },
    /// The board waits for a prompt line.
    Prompt,
    /// Story text as it streams (the echo of the prompt is not passed on).
    Text(Vec<u8>),
    /// A story ended.
    Story(StoryLine),
    /// A `STARMIND-ERROR` or `STARMIND-FAULT` line (its text): inside a story that story's
    /// error, else the board's.
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Lines (boot, between stories) until the prompt.
    Lines,
    /// The prompt was printed: the echo of the line sent, up to its end.
    Echo,
    /// Story text until a `STARMIND-` line.
    Story,
}

/// Splits the interactive mode's output into [`Said`] pieces, from chunks as they arrive.
pub struct Interactive {
    state: State,
    held: Vec<u8>,
}

impl Default for Interactive {
    fn default() -> Self {
        Interactive::new()
    }
}

impl Interactive {
    pub fn new() -> Interactive {
        Interactive {
            state: State::Lines,
            held: Vec::new(),
        }
    }

    /// Treats the board as waiting at its prompt (a serial board whose prompt was printed
    /// before the host connected): what comes next is the echo of a line.
    pub fn at_prompt(&mut self) {
        self.state = State::Echo;
        self.held.clear();
    }

    /// Feeds received bytes; returns what they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Said> {
        self.held.extend_from_slice(bytes);
        let mut said = Vec::new();
        loop {
            match self.state {
                State::Lines => {
                    let prompt = find(&self.held, PROMPT);
                    let newline = self.held.iter().position(|&b| b == b'\n');
                    match (prompt, newline) {
                        (Some(p), n) if n.is_none_or(|n| p < n) => {
                            self.held.drain(..p + PROMPT.len());
                            self.state = State::Echo;
                            said.push(Said::Prompt);
                        }
                        (_, Some(n)) => {
                            let line: Vec<u8> = self.held.drain(..=n).collect();
                            said.extend(marker_line(&String::from_utf8_lossy(&line)));
                        }
                        _ => break,
                    }
                }
                State::Echo => match self.held.iter().position(|&b| b == b'\n') {
                    Some(n) => {
                        self.held.drain(..=n);
                        self.state = State::Story;
                    }
                    None => break,
                },
                State::Story => match find(&self.held, MARKER) {
                    Some(m) => {
                        let Some(n) = self.held[m..].iter().position(|&b| b == b'\n') else {
                            // The marker line is not complete yet: pass the text before it on.
                            let text: Vec<u8> = self.held.drain(..m).collect();
                            push_text(&mut said, trim_line_end(&text));
                            break;
                        };
                        let text: Vec<u8> = self.held.drain(..m).collect();
                        push_text(&mut said, trim_line_end(&text));
                        let line: Vec<u8> = self.held.drain(..=n).collect();
                        if let Some(piece) = marker_line(&String::from_utf8_lossy(&line)) {
                            if matches!(piece, Said::Story(_)) {
                                self.state = State::Lines;
                            }
                            said.push(piece);
                        }
                    }
                    None => {
                        // Hold back what may be the start of "\r\nSTARMIND-".
                        let keep = partial_marker_len(&self.held);
                        let text: Vec<u8> = self.held.drain(..self.held.len() - keep).collect();
                        push_text(&mut said, &text);
                        break;
                    }
                },
            }
        }
        said
    }
}

/// A console line that means something to a chat.
fn marker_line(line: &str) -> Option<Said> {
    let line = line.trim();
    if line.starts_with("STARMIND-READY") {
        let mode = line_field(line, "mode").unwrap_or("").to_string();
        Some(Said::Ready { mode })
    } else if line.starts_with("STARMIND-STORY") {
        StoryLine::parse(line).map(Said::Story)
    } else if line.starts_with("STARMIND-ERROR") || line.starts_with("STARMIND-FAULT") {
        Some(Said::Error(line.to_string()))
    } else {
        None
    }
}

fn push_text(said: &mut Vec<Said>, text: &[u8]) {
    if !text.is_empty() {
        said.push(Said::Text(text.to_vec()));
    }
}

/// `text` without the `\r\n` the firmware writes before a marker line.
fn trim_line_end(text: &[u8]) -> &[u8] {
    text.strip_suffix(b"\r\n").unwrap_or(text)
}

/// The length of the longest end of `bytes` that begins `\r\nSTARMIND-`.
fn partial_marker_len(bytes: &[u8]) -> usize {
    const START: &[u8] = b"\r\nSTARMIND-";
    (1..START.len().min(bytes.len() + 1))
        .rev()
        .find(|&k| bytes.ends_with(&START[..k]))
        .unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &[u8] = b"STARMIND-BOOT v1 clock_hz=125000000\r\n\
        STARMIND-READY mode=interactive model_bytes=4184 ctx=64 arena_bytes=3651\r\n\
        \r\nprompt> The cat\r\n. sarred\nsmint\r\n\
        STARMIND-STORY tokens=9 prompt_tokens=8 decode_cycles=1250000 clock_hz=125000000 end=tokens\r\n\
        \r\n\r\nprompt> x\r\n\r\nSTARMIND-ERROR prompt: token buffer too small\r\n\
        \r\nSTARMIND-STORY tokens=0 prompt_tokens=0 decode_cycles=40 clock_hz=125000000 end=error\r\n\
        \r\n\r\nprompt> ";

    /// What a session says, with adjacent text pieces joined.
    fn said(chunks: &[&[u8]]) -> Vec<Said> {
        let mut reader = Interactive::new();
        let mut out: Vec<Said> = Vec::new();
        for chunk in chunks {
            for piece in reader.feed(chunk) {
                match (out.last_mut(), piece) {
                    (Some(Said::Text(a)), Said::Text(b)) => a.extend(b),
                    (_, piece) => out.push(piece),
                }
            }
        }
        out
    }

    #[test]
    fn a_session_splits_into_ready_prompts_text_and_stories() {
        let first = StoryLine {
            tokens: 9,
            decode_cycles: 1_250_000,
            clock_hz: 125_000_000,
            end: "tokens".into(),
        };
        assert_eq!(first.tokens_per_s(), 900.0);
        let want = vec![
            Said::Ready {
                mode: "interactive".into(),
            },
            Said::Prompt,
            Said::Text(b". sarred\nsmint".to_vec()),
            Said::Story(first),
            Said::Prompt,
            Said::Error("STARMIND-ERROR prompt: token buffer too small".into()),
            Said::Story(StoryLine {
                tokens: 0,
                decode_cycles: 40,
                clock_hz: 125_000_000,
                end: "error".into(),
            }),
            Said::Prompt,
        ];
        assert_eq!(said(&[SESSION]), want);
        // However the bytes are cut, the same comes out.
        for size in [1, 2, 3, 7, 10, 64] {
            let chunks: Vec<&[u8]> = SESSION.chunks(size).collect();
            assert_eq!(said(&chunks), want, "chunks of {size}");
        }
    }

    #[test]
    fn a_board_already_at_its_prompt_starts_with_the_echo() {
        let mut reader = Interactive::new();
        reader.at_prompt();
        let got = reader.feed(b"Hi\r\nthere\r\nSTARMIND-STO");
        assert_eq!(got, vec![Said::Text(b"there".to_vec())]);
        let got = reader.feed(b"RY tokens=1 decode_cycles=5 clock_hz=5 end=stopped\r\n");
        assert!(matches!(&got[..], [Said::Story(s)] if s.end == "stopped" && s.seconds() == 1.0));
    }
}
