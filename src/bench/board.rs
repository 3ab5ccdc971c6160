//! A board running the bench: its output lines read over RTT (through the debug probe) or a
//! serial port (USB CDC or a UART adapter) until the `STARMIND-BENCH` line.

use std::io::Read as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Collects complete output lines from the board until the bench line; fails on an error or
/// fault line.
struct LineWatcher {
    partial: Vec<u8>,
}

impl LineWatcher {
    fn new() -> LineWatcher {
        LineWatcher {
            partial: Vec::new(),
        }
    }

    /// Feeds bytes; returns the bench line once it has arrived.
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<Option<String>> {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let text = line.trim();
            eprintln!("{text}");
            if text.starts_with("STARMIND-BENCH") {
                return Ok(Some(text.to_string()));
            } else if text.starts_with("STARMIND-ERROR") || text.starts_with("STARMIND-FAULT") {
                bail!("the board reported: {text}");
            }
        }
        Ok(None)
    }
}

/// Reads the firmware's RTT channel 0 through the probe until the bench line.
pub fn read_rtt(session: &mut probe_rs::Session, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut core = session.core(0)?;
    // The control block appears once the firmware has started: retry the scan for a while.
    let mut rtt = loop {
        match probe_rs::rtt::Rtt::attach(&mut core) {
            Ok(rtt) => break rtt,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).context("finding the firmware's RTT control block"),
        }
    };
    let channel = rtt
        .up_channel(0)
        .context("the firmware has no RTT up channel 0")?;
    let mut watcher = LineWatcher::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        let count = channel.read(&mut core, &mut buf).context("reading RTT")?;
        if let Some(line) = watcher.feed(&buf[..count])? {
            return Ok(line);
        }
        if count == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    bail!(
        "no STARMIND-BENCH line over RTT within {}s",
        timeout.as_secs()
    )
}

/// Reads lines from a serial port until the bench line (and the READY line before it).
pub fn read_serial(port: &str, timeout: Duration) -> anyhow::Result<String> {
    let port_handle = serialport::new(port, 115_200)
        .timeout(Duration::from_millis(500))
        .open()
        .with_context(|| format!("opening serial port {port}"))?;
    let mut port_handle = port_handle;
    let deadline = Instant::now() + timeout;
    let mut watcher = LineWatcher::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match port_handle.read(&mut buf) {
            Ok(count) => {
                if let Some(line) = watcher.feed(&buf[..count])? {
                    return Ok(line);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e).context("reading serial port"),
        }
    }
    bail!(
        "no STARMIND-BENCH line from {port} within {}s (flash with `starmind flash <model> --mode bench`, then reset the board)",
        timeout.as_secs()
    )
}
