//! `starmind bench --kernels`: the firmware's kernel micro-benchmarks
//! (`starmind_engine::kernel_bench`), cycles per call and per multiply-add, from its
//! `STARMIND-KERNEL` lines.

use std::fmt::Write as _;

use anyhow::{ensure, Context as _};
use serde_json::json;

use super::{emulator, line_field, Args};
use crate::flash::{ModeArg, RunArgs};

/// One kernel case as the firmware timed it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRow {
    pub name: String,
    pub rows: u64,
    pub cols: u64,
    pub calls: u64,
    pub cycles: u64,
    /// Multiply-adds (elements, for element-wise kernels) per call.
    pub macs_per_call: u64,
}

impl KernelRow {
    pub fn cycles_per_call(&self) -> f64 {
        self.cycles as f64 / self.calls.max(1) as f64
    }
    pub fn cycles_per_mac(&self) -> f64 {
        self.cycles_per_call() / self.macs_per_call.max(1) as f64
    }
}

/// Parses one `STARMIND-KERNEL v1 name=… rows=… cols=… calls=… cycles=… macs_per_call=…` line.
pub fn parse_line(line: &str) -> anyhow::Result<KernelRow> {
    let number = |key: &str| -> anyhow::Result<u64> {
        line_field(line, key)
            .with_context(|| format!("kernel line has no {key}=: {line}"))?
            .parse()
            .with_context(|| format!("kernel line: bad {key}: {line}"))
    };
    Ok(KernelRow {
        name: line_field(line, "name")
            .with_context(|| format!("kernel line has no name=: {line}"))?
            .to_string(),
        rows: number("rows")?,
        cols: number("cols")?,
        calls: number("calls")?,
        cycles: number("cycles")?,
        macs_per_call: number("macs_per_call")?,
    })
}

/// Runs the kernels mode in rp2040js (zero-wait flash: the data lie in SRAM) and returns the rows.
pub fn measure(args: &Args) -> anyhow::Result<Vec<KernelRow>> {
    ensure!(
        args.emulator,
        "--kernels runs in the emulator: add --emulator (on a board: `starmind flash <any model> \
         --mode kernels`, then read the STARMIND-KERNEL lines over serial)"
    );
    let run = RunArgs {
        mode: ModeArg::Kernels,
        sampling: args.sampling.clone(),
    };
    let emulated = emulator::run_firmware(&[], &run, args.max_cycles, false, 0)?;
    let rows: Vec<KernelRow> = emulated
        .stdout
        .lines()
        .filter(|l| l.starts_with("STARMIND-KERNEL "))
        .map(parse_line)
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        !rows.is_empty(),
        "the firmware printed no STARMIND-KERNEL line"
    );
    check_lines(&emulated.stdout)?;
    Ok(rows)
}

/// Fails unless the firmware compared its fast kernels with their references
/// (`STARMIND-KERNEL-CHECK v1 name=… cases=… mismatches=…`) and every output agreed.
pub fn check_lines(stdout: &str) -> anyhow::Result<()> {
    let mut checks = 0;
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("STARMIND-KERNEL-CHECK "))
    {
        let number = |key: &str| -> anyhow::Result<u64> {
            line_field(line, key)
                .with_context(|| format!("kernel check line has no {key}=: {line}"))?
                .parse()
                .with_context(|| format!("kernel check line: bad {key}: {line}"))
        };
        let (cases, mismatches) = (number("cases")?, number("mismatches")?);
        ensure!(
            cases > 0 && mismatches == 0,
            "a fast kernel differs from its reference on the device: {line}"
        );
        checks += 1;
    }
    ensure!(
        checks > 0,
        "the firmware printed no STARMIND-KERNEL-CHECK line"
    );
    Ok(())
}

/// The rows as a markdown table.
pub fn markdown_table(rows: &[KernelRow]) -> String {
    let mut s = String::from(
        "| kernel | shape | calls | cycles/call | MACs (elements)/call | cycles/MAC (element) |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let shape = match r.name.as_str() {
            "attention" => format!("{} heads × {} positions", r.rows, r.cols),
            _ if r.rows == 1 => format!("{}", r.cols),
            _ => format!("{}×{}", r.rows, r.cols),
        };
        let _ = writeln!(
            s,
            "| {} | {shape} | {} | {:.0} | {} | {:.2} |",
            r.name,
            r.calls,
            r.cycles_per_call(),
            r.macs_per_call,
            r.cycles_per_mac()
        );
    }
    s
}

/// `starmind bench --kernels --emulator [--json]`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let rows = measure(args)?;
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "rows": r.rows, "cols": r.cols, "calls": r.calls,
                    "cycles": r.cycles, "macs_per_call": r.macs_per_call,
                    "cycles_per_call": r.cycles_per_call(), "cycles_per_mac": r.cycles_per_mac(),
                })
            })
            .collect();
        println!("{}", json!({ "target": "emulator", "kernels": list }));
    } else {
        println!(
            "kernel micro-benchmarks (rp2040js, core 0, 125 MHz, data in SRAM; every fast kernel \
             equals its reference on the device)\n"
        );
        print!("{}", markdown_table(&rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_line() {
        let row = parse_line(
            "STARMIND-KERNEL v1 name=matvec_i8 rows=64 cols=64 calls=40 cycles=819200 macs_per_call=4096",
        )
        .unwrap();
        assert_eq!(row.name, "matvec_i8");
        assert_eq!(row.cycles_per_call(), 20480.0);
        assert_eq!(row.cycles_per_mac(), 5.0);
        assert!(parse_line("STARMIND-KERNEL v1 name=x rows=1").is_err());
        assert!(markdown_table(&[row]).contains("| matvec_i8 | 64×64 | 40 | 20480 | 4096 | 5.00 |"));
    }

    #[test]
    fn a_device_mismatch_fails_the_bench() {
        let good = "STARMIND-KERNEL-CHECK v1 name=matvec_i8 cases=300 mismatches=0\r\n";
        assert!(check_lines(good).is_ok());
        let bad = "STARMIND-KERNEL-CHECK v1 name=matvec_i8 cases=300 mismatches=2\r\n";
        assert!(check_lines(&format!("{good}{bad}")).is_err());
        assert!(check_lines("STARMIND-KERNEL v1 name=x\n").is_err());
    }
}
