//! The dual-core estimate: what both cores would make of a bench, from one core's cycles.
//!
//! rp2040js emulates core 0 only, so the firmware's bench-split mode runs each step the forward
//! pass cuts between the cores (matrix-vector products by rows, attention by heads:
//! `starmind_engine::cores`) as its two parts one after the other on core 0 and times each
//! part. Per decoded token, two cores would then take
//!
//! ```text
//! serial + Σ max(part A, part B) + joins × handshake
//! ```
//!
//! where serial = the run's decode cycles − Σ (part A + part B): everything that is not cut
//! (sampling, norms, RoPE, the cache writes, the residual adds, and the split run's own timing
//! of the parts). The estimate is 125 MHz (the firmware's clock) over that, labelled an estimate
//! wherever it is shown, with [`ASSUMPTIONS`].

use serde_json::json;

/// Assumed cost of one join on the critical path, in core 0 cycles: core 0 writes the part's
/// address to the FIFO; core 1, polling its FIFO, reads it, loads the part's two-word pointer
/// and calls it; at the end core 1 writes its answer and core 0, polling, reads it. About 25
/// instructions on the two cores together; taken as 64.
pub const HANDSHAKE_CYCLES: u64 = 64;

/// What the estimate takes for granted (shown beside it).
pub const ASSUMPTIONS: [&str; 4] = [
    "an estimate, not a measurement: rp2040js runs core 0 only; each cut step's two parts ran one after the other on core 0, each timed with SysTick (`--mode bench-split`)",
    "two cores = serial cycles + the longer part of each cut step + 64 cycles of FIFO handshake per cut step (core 1 polling its FIFO)",
    "no contention between the cores: the SRAM banks, the XIP cache and the bus serve both at full speed (the zero-wait flash of rp2040js)",
    "serial cycles include the bench-split run's own timing of the parts (a few tens of cycles per cut step), so the estimate errs low",
];

/// The firmware's bench-split counts over the decode (`split_joins=`, `split_parts_cycles=`,
/// `split_longer_cycles=`) and that run's decode cycles per token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitRun {
    pub tokens: u64,
    pub decode_cycles_per_token: u64,
    pub joins: u64,
    pub parts_cycles: u64,
    pub longer_cycles: u64,
}

/// The dual-core estimate of one bench, per decoded token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DualCoreEstimate {
    /// Decode cycles outside the cut steps.
    pub serial_cycles: f64,
    /// Both parts of every cut step (what one core spends on them).
    pub parts_cycles: f64,
    /// The longer part of every cut step (what two cores would).
    pub longer_cycles: f64,
    pub joins: f64,
    pub handshake_cycles_per_join: u64,
    /// serial + longer + joins × handshake.
    pub cycles: f64,
    pub tok_per_s: f64,
}

/// The estimate from a bench-split run at `clock_hz` ([`HANDSHAKE_CYCLES`] per join).
pub fn estimate(run: &SplitRun, clock_hz: u64, handshake_cycles_per_join: u64) -> DualCoreEstimate {
    let tokens = run.tokens.max(1) as f64;
    let parts_cycles = run.parts_cycles as f64 / tokens;
    let longer_cycles = run.longer_cycles as f64 / tokens;
    let joins = run.joins as f64 / tokens;
    let serial_cycles = (run.decode_cycles_per_token as f64 - parts_cycles).max(0.0);
    let cycles = serial_cycles + longer_cycles + joins * handshake_cycles_per_join as f64;
    DualCoreEstimate {
        serial_cycles,
        parts_cycles,
        longer_cycles,
        joins,
        handshake_cycles_per_join,
        cycles,
        tok_per_s: clock_hz as f64 / cycles.max(1.0),
    }
}

impl DualCoreEstimate {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "estimate": true,
            "serial_cycles_per_token": self.serial_cycles,
            "parts_cycles_per_token": self.parts_cycles,
            "longer_part_cycles_per_token": self.longer_cycles,
            "joins_per_token": self.joins,
            "handshake_cycles_per_join": self.handshake_cycles_per_join,
            "cycles_per_token": self.cycles,
            "tok_per_s": self.tok_per_s,
            "assumptions": ASSUMPTIONS.to_vec(),
        })
    }

    /// The text report's lines.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "  dual-core ESTIMATE (not measured): {:.2} tok/s, {:.0} cycles/token = serial {:.0} + longer parts {:.0} (both parts {:.0} on one core) + {:.1} cut steps × {} handshake\n",
            self.tok_per_s,
            self.cycles,
            self.serial_cycles,
            self.longer_cycles,
            self.parts_cycles,
            self.joins,
            self.handshake_cycles_per_join
        );
        for assumption in ASSUMPTIONS {
            s += &format!("    - {assumption}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_serial_plus_the_longer_parts_plus_the_handshakes() {
        // 10 tokens at 1,000 cycles each; the cut steps took 600 of them, 5 joins a token, the
        // longer parts 350: two cores take 400 + 350 + 5 × 64 = 1,070 cycles a token.
        let run = SplitRun {
            tokens: 10,
            decode_cycles_per_token: 1_000,
            joins: 50,
            parts_cycles: 6_000,
            longer_cycles: 3_500,
        };
        let e = estimate(&run, 125_000_000, 64);
        assert_eq!(e.serial_cycles, 400.0);
        assert_eq!(e.parts_cycles, 600.0);
        assert_eq!(e.longer_cycles, 350.0);
        assert_eq!(e.joins, 5.0);
        assert_eq!(e.cycles, 1_070.0);
        assert_eq!(e.tok_per_s, 125e6 / 1_070.0);
        // Perfect halves and free joins: the cut part takes half the time.
        let free = estimate(
            &SplitRun {
                longer_cycles: 3_000,
                ..run
            },
            125_000_000,
            0,
        );
        assert_eq!(free.cycles, 700.0);
    }

    #[test]
    fn nothing_cut_estimates_the_one_core_figure() {
        let run = SplitRun {
            tokens: 4,
            decode_cycles_per_token: 2_500,
            joins: 0,
            parts_cycles: 0,
            longer_cycles: 0,
        };
        let e = estimate(&run, 125_000_000, HANDSHAKE_CYCLES);
        assert_eq!(e.cycles, 2_500.0);
        assert_eq!(e.tok_per_s, 50_000.0);
        assert!(e.to_text().contains("ESTIMATE"));
        assert_eq!(e.to_json()["estimate"], true);
    }

    #[test]
    fn zero_tokens_do_not_divide_by_zero() {
        let run = SplitRun {
            tokens: 0,
            decode_cycles_per_token: 0,
            joins: 0,
            parts_cycles: 0,
            longer_cycles: 0,
        };
        let e = estimate(&run, 125_000_000, HANDSHAKE_CYCLES);
        assert!(e.tok_per_s.is_finite());
    }
}
