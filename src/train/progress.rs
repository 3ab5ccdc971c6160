//! Progress output of the training loop: an indicatif bar on a terminal, periodic lines
//! otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::time::Instant;

/// Progress output: an indicatif bar on a terminal, periodic lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    total: usize,
}

impl Progress {
    /// A bar (or line log) over `total` steps, at `start` already.
    pub fn new(total: usize, start: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} step {pos}/{len} {msg} ETA {eta}",
                )
                .expect("valid template"),
            );
            bar.set_position(start as u64);
            bar
        });
        Progress {
            bar,
            last_line: Instant::now(),
            total,
        }
    }

    /// Shows `step` with `message`; without a bar, a line every 10 s (and when forced).
    pub fn update(&mut self, step: usize, message: &str, eta_s: f64, force_line: bool) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(message.to_string());
            }
            None => {
                if force_line
                    || self.last_line.elapsed().as_secs_f64() >= 10.0
                    || step == self.total
                {
                    eprintln!("step {step}/{} {message} ETA {eta_s:.0} s", self.total);
                    self.last_line = Instant::now();
                }
            }
        }
    }

    /// A line above the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
