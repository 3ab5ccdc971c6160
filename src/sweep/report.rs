//! A sweep's report: `results.csv` (the rows, also what a resumed sweep reads back),
//! `README.md` (table, Pareto front, findings on the seed's conclusions) and three SVG plots per
//! family directory, and the cross-family `README.md` above them. Everything here is computed
//! from the rows: rerunning [`write_family`] / [`write_index`] on the same rows gives the same
//! files.

use super::front::{bpb, measured, pareto_front, pareto_top, tok_s};
use super::{Row, Settings};
use crate::fsio;
use crate::plot::{Axis, Chart, Marker, Point, Scale, Series};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The rows of one report directory.
pub const RESULTS_FILE: &str = "results.csv";
/// The settings those rows were made with.
pub const SETTINGS_FILE: &str = "settings.json";

/// `results.csv` columns, in order: the interface first, then what else a row holds.
pub const COLUMNS: [&str; 27] = [
    "name",
    "params_real",
    "params_claimed",
    "vocab",
    "dim",
    "hidden",
    "layers",
    "heads",
    "head_size",
    "val_bpb",
    "decode_tok_per_s",
    "cycles_per_token",
    "flash_bytes",
    "ram_bytes",
    "seed_tok_per_s",
    "params_seed_count",
    "kv_heads",
    "float_val_bpb",
    "unigram_bpb",
    "bigram_bpb",
    "board_estimate_tok_per_s",
    "steps",
    "train_seconds",
    "bit_exact",
    "status",
    "speedup_vs_seed",
    "pareto",
];

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

fn float(v: Option<f64>, digits: usize) -> String {
    v.map_or(String::new(), |v| format!("{v:.digits$}"))
}

/// The CSV line of a row (`pareto`: whether it is on its report's front).
fn csv_line(r: &Row, on_front: bool) -> String {
    let speedup = match (r.decode_tok_per_s, r.seed_tok_per_s) {
        (Some(ours), Some(seed)) if seed > 0.0 => Some(ours / seed),
        _ => None,
    };
    [
        r.name.clone(),
        r.params_real.to_string(),
        opt(r.params_claimed),
        r.vocab.to_string(),
        r.dim.to_string(),
        r.hidden.to_string(),
        r.layers.to_string(),
        r.heads.to_string(),
        r.head_size.to_string(),
        float(r.val_bpb, 4),
        float(r.decode_tok_per_s, 2),
        opt(r.cycles_per_token),
        opt(r.flash_bytes),
        opt(r.ram_bytes),
        opt(r.seed_tok_per_s),
        r.params_seed_count.to_string(),
        r.kv_heads.to_string(),
        float(r.float_val_bpb, 4),
        float(r.unigram_bpb, 4),
        float(r.bigram_bpb, 4),
        float(r.board_estimate_tok_per_s, 2),
        opt(r.steps),
        float(r.train_seconds, 1),
        opt(r.bit_exact),
        r.status.replace([',', '\n', '\r'], " "),
        float(speedup, 1),
        on_front.to_string(),
    ]
    .join(",")
}

/// Writes `results.csv` (header and one line per row, in the given order) atomically.
pub fn write_results(path: &Path, rows: &[Row]) -> Result<()> {
    let front = pareto_front(rows);
    let mut text = COLUMNS.join(",") + "\n";
    for (i, row) in rows.iter().enumerate() {
        text += &csv_line(row, front.contains(&i));
        text.push('\n');
    }
    fsio::write_atomic(path, text.as_bytes())
}

/// Reads a `results.csv` back (empty when the file does not exist).
pub fn read_results(path: &Path) -> Result<Vec<Row>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let at = |name: &str| -> Result<&str> {
            let i = header
                .iter()
                .position(|h| *h == name)
                .with_context(|| format!("{}: no column {name}", path.display()))?;
            fields
                .get(i)
                .copied()
                .with_context(|| format!("{} line {}: too few fields", path.display(), n + 2))
        };
        let context = |name: &str| format!("{} line {}: column {name}", path.display(), n + 2);
        let some = |name: &str| -> Result<Option<f64>> {
            match at(name)? {
                "" => Ok(None),
                v => Ok(Some(v.parse().with_context(|| context(name))?)),
            }
        };
        let int =
            |name: &str| -> Result<usize> { at(name)?.parse().with_context(|| context(name)) };
        let some_int = |name: &str| -> Result<Option<u64>> {
            match at(name)? {
                "" => Ok(None),
                v => Ok(Some(v.parse().with_context(|| context(name))?)),
            }
        };
        rows.push(Row {
            name: at("name")?.to_string(),
            params_real: int("params_real")?,
            params_claimed: some_int("params_claimed")?.map(|v| v as usize),
            params_seed_count: int("params_seed_count")?,
            vocab: int("vocab")?,
            dim: int("dim")?,
            hidden: int("hidden")?,
            layers: int("layers")?,
            heads: int("heads")?,
            kv_heads: int("kv_heads")?,
            head_size: int("head_size")?,
            val_bpb: some("val_bpb")?,
            decode_tok_per_s: some("decode_tok_per_s")?,
            cycles_per_token: some_int("cycles_per_token")?,
            flash_bytes: some_int("flash_bytes")?,
            ram_bytes: some_int("ram_bytes")?,
            seed_tok_per_s: some("seed_tok_per_s")?,
            float_val_bpb: some("float_val_bpb")?,
            unigram_bpb: some("unigram_bpb")?,
            bigram_bpb: some("bigram_bpb")?,
            board_estimate_tok_per_s: some("board_estimate_tok_per_s")?,
            steps: some_int("steps")?.map(|v| v as usize),
            train_seconds: some("train_seconds")?,
            bit_exact: match at("bit_exact")? {
                "" => None,
                v => Some(v == "true"),
            },
            status: at("status")?.to_string(),
        });
    }
    Ok(rows)
}

/// Reads `settings.json` (`None` when absent).
pub fn read_settings(path: &Path) -> Result<Option<Settings>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Models the seed recommended, with the log line that does (file:line in ../shared/seeds).
pub const SEED_PICKS: [(&str, &str); 21] = [
    ("story-1k", "001:155 maximum speed"),
    ("chat-8k", "001:50 optimal"),
    ("story-1k-head-hydra", "001:319"),
    ("story-1k-mega-hidden", "001:320"),
    ("story-1k-fibonacci", "001:321"),
    ("story-3k-super-narrow", "001:374"),
    ("story-3k-vocab-heavy", "001:375"),
    ("story-3k-powers-of-two", "001:376"),
    ("story-5k-super-narrow", "001:707"),
    ("story-5k-triple-layer", "001:708"),
    ("story-5k-ultra-hidden", "001:709"),
    ("story-7k-mega-deep", "001:1096"),
    ("story-7k-ultra-deep", "001:1097"),
    ("story-7k-ultra-hidden", "001:1098"),
    ("chat-10k-ultra-fat-ffn", "001:1343"),
    ("story-ultra-1d-1k", "001:1752"),
    ("story-ultra-2d-1k", "001:1753"),
    ("story-ultra-1d-3k", "001:1754"),
    ("story-ffn-256x-1k", "001:2107"),
    ("story-hybrid-256x-32h-1k", "001:2407"),
    ("story-attn-32h-1k", "001:2412"),
];

fn is_seed_pick(name: &str) -> bool {
    SEED_PICKS.iter().any(|(n, _)| *n == name)
}

fn label_if(r: &Row, yes: bool) -> Option<&str> {
    yes.then_some(r.name.as_str())
}

fn point(x: f64, y: f64, label: Option<&str>) -> Point {
    Point {
        x,
        y,
        label: label.map(String::from),
    }
}

fn log_axis(label: &str) -> Axis {
    Axis {
        label: label.into(),
        scale: Scale::Log,
    }
}

fn linear_axis(label: &str) -> Axis {
    Axis {
        label: label.into(),
        scale: Scale::Linear,
    }
}

/// The three plots of a set of rows: (file name, SVG).
fn plots(title: &str, rows: &[Row]) -> Vec<(&'static str, String)> {
    let ok = measured(rows);
    let front = pareto_front(rows);
    let on_front = |r: &Row| front.iter().any(|&i| rows[i].name == r.name);
    let speed = Chart {
        title: format!("{title}: decode tok/s vs parameters"),
        x: log_axis("parameters (all weights)"),
        y: log_axis("decode tok/s"),
        series: vec![
            Series {
                name: "starmind (int8 engine)".into(),
                colour: "#d62728",
                marker: Marker::Dot,
                points: ok
                    .iter()
                    .map(|r| {
                        let y = tok_s(r);
                        point(r.params_real as f64, y, label_if(r, on_front(r)))
                    })
                    .collect(),
            },
            Series {
                name: "seed, CircuitPython on a Pico".into(),
                colour: "#1f77b4",
                marker: Marker::Dot,
                points: rows
                    .iter()
                    .filter_map(|r| Some(point(r.params_real as f64, r.seed_tok_per_s?, None)))
                    .collect(),
            },
        ],
    };
    let quality = Chart {
        title: format!("{title}: validation bits per byte (int8 model file) vs parameters"),
        x: log_axis("parameters (all weights)"),
        y: linear_axis("val bpb (lower is better)"),
        series: vec![Series {
            name: "variants (Pareto front labelled)".into(),
            colour: "#2ca02c",
            marker: Marker::Dot,
            points: ok
                .iter()
                .map(|r| point(r.params_real as f64, bpb(r), label_if(r, on_front(r))))
                .collect(),
        }],
    };
    let pareto = Chart {
        title: format!("{title}: speed vs quality, Pareto front and the seed's picks"),
        x: log_axis("decode tok/s"),
        y: linear_axis("val bpb (lower is better)"),
        series: vec![
            Series {
                name: "variants".into(),
                colour: "#999999",
                marker: Marker::Dot,
                points: ok.iter().map(|r| point(tok_s(r), bpb(r), None)).collect(),
            },
            Series {
                name: "Pareto front".into(),
                colour: "#d62728",
                marker: Marker::Line,
                points: front
                    .iter()
                    .map(|&i| point(tok_s(&rows[i]), bpb(&rows[i]), Some(&rows[i].name)))
                    .collect(),
            },
            Series {
                name: "the seed's recommended picks".into(),
                colour: "#ff7f0e",
                marker: Marker::Ring,
                points: ok
                    .iter()
                    .filter(|r| is_seed_pick(&r.name))
                    .map(|r| point(tok_s(r), bpb(r), (!on_front(r)).then_some(r.name.as_str())))
                    .collect(),
            },
        ],
    };
    vec![
        ("tok_per_s_vs_params.svg", speed.svg()),
        ("bpb_vs_params.svg", quality.svg()),
        ("pareto.svg", pareto.svg()),
    ]
}

/// The command that makes a report with these settings.
fn command(selection: &str, settings: &Settings) -> String {
    let mut c = format!(
        "starmind sweep {selection} --max-seconds {} --eval-bytes {} --bench-tokens {}",
        settings.max_seconds, settings.eval_bytes, settings.bench_tokens
    );
    for d in &settings.data {
        let _ = write!(c, " --data {d}");
    }
    if let Some(v) = &settings.valid {
        let _ = write!(c, " --valid {v}");
    }
    match settings.bench.as_str() {
        "host" => c += " --host",
        "board" => c += " --probe",
        _ => {}
    }
    c
}

/// The table cells a config alone fills: params (the seed's claim), vocab, dim, hidden, layers,
/// heads×head size.
fn shape_cells(r: &Row) -> String {
    format!(
        "{} ({}) | {} | {} | {} | {} | {}×{}",
        r.params_real,
        r.params_claimed.map_or("–".into(), |c| c.to_string()),
        r.vocab,
        r.dim,
        r.hidden,
        r.layers,
        r.heads,
        r.head_size
    )
}

fn table(rows: &[Row]) -> String {
    let front = pareto_front(rows);
    let mut s = String::from(
        "| config | params (seed's claim) | vocab | dim | hidden | layers | heads×size | val bpb (float) | decode tok/s | cycles/token | flash B | RAM B | seed tok/s | steps |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, r) in rows.iter().enumerate() {
        let mark = match (front.contains(&i), is_seed_pick(&r.name)) {
            (true, true) => " ◆★",
            (true, false) => " ◆",
            (false, true) => " ★",
            (false, false) => "",
        };
        if !r.is_ok() {
            let _ = writeln!(
                s,
                "| {}{mark} | {} | {} | | | | | {} | |",
                r.name,
                shape_cells(r),
                r.status,
                opt(r.seed_tok_per_s)
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {}{mark} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
            r.name,
            shape_cells(r),
            float(r.val_bpb, 3),
            float(r.float_val_bpb, 3),
            float(r.decode_tok_per_s, 1),
            opt(r.cycles_per_token),
            opt(r.flash_bytes),
            opt(r.ram_bytes),
            opt(r.seed_tok_per_s),
            opt(r.steps)
        );
    }
    s += "\n◆ on the speed/quality Pareto front (no other variant is both faster and better); \
          ★ recommended by the seed (its log line in `SEED_PICKS`, src/sweep/report.rs).\n";
    s
}

fn top_lines(rows: &[Row]) -> String {
    let mut s = String::new();
    for (rank, (i, dominated)) in pareto_top(rows, 3).into_iter().enumerate() {
        let r = &rows[i];
        let _ = writeln!(
            s,
            "{}. **{}** — val bpb {:.3}, {:.1} tok/s ({} cycles/token), {} parameters; dominates {dominated} of the {} measured variants",
            rank + 1,
            r.name,
            bpb(r),
            tok_s(r),
            opt(r.cycles_per_token),
            r.params_real,
            measured(rows).len()
        );
    }
    if s.is_empty() {
        s = "(no variant has both a quality and a speed figure yet)\n".into();
    }
    s
}

/// Writes a family's `README.md` and plots from its rows (`results.csv` is written as rows
/// finish, by the sweep).
pub fn write_family(
    dir: &Path,
    name: &str,
    selection: &str,
    rows: &[Row],
    settings: &Settings,
) -> Result<()> {
    write_results(&dir.join(RESULTS_FILE), rows)?;
    let plots = plots(name, rows);
    for (file, svg) in &plots {
        fsio::write_atomic(&dir.join(file), svg.as_bytes())?;
    }
    let ok = measured(rows);
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.is_ok()).collect();
    let mut s = format!("# Sweep `{name}`: {} variants\n\n", rows.len());
    let _ = writeln!(
        s,
        "Generated by `{}` (`results.csv` holds every figure; rerunning the command continues an \
         unfinished sweep). Each variant trained for the same wall-clock budget, {} s of its \
         training loop, on this machine's shared 2 cores (so the step counts vary with its load), \
         then was exported to an int8 model file, scored by the integer engine on the first {} \
         bytes of the validation text (val bpb; the float checkpoint's in brackets) and benched \
         ({}, bit-exact against the host engine: `bit_exact` column). {} of {} variants have both \
         figures{}.\n",
        command(selection, settings),
        settings.max_seconds,
        settings.eval_bytes,
        match settings.bench.as_str() {
            "emulator" => "rp2040js emulator, core 0 at 125 MHz, one story of the default prompt",
            "board" => "on the attached board",
            _ => "on this computer: no cycle counts",
        },
        ok.len(),
        rows.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; {} failed (below)", failed.len())
        }
    );
    s += "## The three Pareto-best variants\n\n";
    s += &top_lines(rows);
    s += "\n## Plots\n\n";
    for (file, _) in &plots {
        let _ = writeln!(s, "![{file}]({file})\n");
    }
    s += "## Findings: the seed's conclusions against this engine\n\n";
    s += &super::findings::markdown(rows);
    s += "\n## All variants\n\n";
    s += &table(rows);
    if !failed.is_empty() {
        s += "\n## Failed variants\n\n\
              Killed by signal 9 is, on Linux, usually the kernel's out-of-memory killer (the \
              trainer's memory grows with layers × heads × seq_len²); the variant's log is \
              `<runs>/<name>/log.txt`.\n\n";
        for r in failed {
            let _ = writeln!(s, "- `{}`: {}", r.name, r.status);
        }
    }
    fsio::write_atomic(&dir.join("README.md"), s.as_bytes())
}

/// Writes `<out>/README.md` (and its Pareto plot) from every family directory's `results.csv`:
/// per-family summaries, the Pareto-best variants over all of them, and the findings over all
/// rows.
pub fn write_index(out: &Path) -> Result<()> {
    let mut families: BTreeMap<String, (Vec<Row>, Option<Settings>)> = BTreeMap::new();
    if out.is_dir() {
        for entry in std::fs::read_dir(out).with_context(|| format!("listing {}", out.display()))? {
            let path = entry?.path();
            if path.join(RESULTS_FILE).is_file() {
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let rows = read_results(&path.join(RESULTS_FILE))?;
                let settings = read_settings(&path.join(SETTINGS_FILE))?;
                families.insert(name, (rows, settings));
            }
        }
    }
    // Every variant once (a config of two families, e.g. 1k and attn, counts once).
    let mut union: Vec<Row> = Vec::new();
    for (rows, _) in families.values() {
        for r in rows {
            if !union.iter().any(|u| u.name == r.name) {
                union.push(r.clone());
            }
        }
    }
    let mut s = String::from("# Sweeps: the seed's architecture study with quality\n\n");
    s += "Each family directory holds one `starmind sweep --family F` run: its `results.csv`, \
          `README.md` (table, plots, findings) and SVG plots. This page combines them; a variant \
          that belongs to two families counts once. Quality (val bpb of the int8 model file, \
          lower is better) compares fairly within a family (one training budget); across \
          families only where the budgets below are equal.\n\n";
    s += "| family | variants | measured | failed | training budget (s) | best val bpb | fastest (tok/s) |\n\
          |---|---:|---:|---:|---:|---|---|\n";
    for (name, (rows, settings)) in &families {
        let ok = measured(rows);
        let best = ok.iter().min_by(|a, b| bpb(a).total_cmp(&bpb(b)));
        let fastest = ok.iter().max_by(|a, b| tok_s(a).total_cmp(&tok_s(b)));
        let _ = writeln!(
            s,
            "| [{name}]({name}/README.md) | {} | {} | {} | {} | {} | {} |",
            rows.len(),
            ok.len(),
            rows.iter().filter(|r| !r.is_ok()).count(),
            settings
                .as_ref()
                .map_or("?".to_string(), |s| s.max_seconds.to_string()),
            best.map_or("–".into(), |r| format!("{} ({:.3})", r.name, bpb(r))),
            fastest.map_or("–".into(), |r| format!("{} ({:.1})", r.name, tok_s(r)))
        );
    }
    s += "\n## The three Pareto-best variants over all families\n\n";
    s += &top_lines(&union);
    let plots = plots("all sweeps", &union);
    if let Some((file, svg)) = plots.iter().find(|(f, _)| *f == "pareto.svg") {
        fsio::write_atomic(&out.join(file), svg.as_bytes())?;
        let _ = writeln!(s, "\n![{file}]({file})\n");
    }
    s += "\n## Findings over all families\n\n";
    s += &super::findings::markdown(&union);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    fsio::write_atomic(&out.join("README.md"), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(name: &str, tok_s: f64, bpb: f64) -> Row {
        Row {
            name: name.into(),
            params_real: 1000,
            params_claimed: Some(1280),
            params_seed_count: 980,
            vocab: 64,
            dim: 8,
            hidden: 32,
            layers: 1,
            heads: 2,
            kv_heads: 2,
            head_size: 4,
            val_bpb: Some(bpb),
            decode_tok_per_s: Some(tok_s),
            cycles_per_token: Some((125e6 / tok_s) as u64),
            flash_bytes: Some(3000),
            ram_bytes: Some(40_000),
            seed_tok_per_s: None,
            float_val_bpb: Some(bpb - 0.01),
            unigram_bpb: Some(4.4),
            bigram_bpb: Some(3.3),
            board_estimate_tok_per_s: Some(tok_s),
            steps: Some(100),
            train_seconds: Some(10.0),
            bit_exact: Some(true),
            status: "ok".into(),
        }
    }

    #[test]
    fn pareto_front_and_top() {
        let rows = vec![
            row("fast-bad", 1000.0, 3.5),
            row("slow-good", 100.0, 2.5),
            row("dominated", 90.0, 3.6),
            row("middle", 500.0, 3.0),
            row("also-dominated", 400.0, 3.1),
            Row {
                status: "failed: x".into(),
                ..row("failed", 5000.0, 1.0)
            },
        ];
        let names =
            |ix: Vec<usize>| -> Vec<&str> { ix.iter().map(|&i| rows[i].name.as_str()).collect() };
        assert_eq!(
            names(pareto_front(&rows)),
            ["fast-bad", "middle", "slow-good"]
        );
        let top = pareto_top(&rows, 3);
        // middle dominates both dominated rows; slow-good and fast-bad one each (the tie goes
        // to the lower bpb).
        assert_eq!(
            top.iter()
                .map(|&(i, n)| (rows[i].name.as_str(), n))
                .collect::<Vec<_>>(),
            [("middle", 2), ("slow-good", 1), ("fast-bad", 1)]
        );
    }

    #[test]
    fn results_round_trip() {
        let dir =
            std::env::temp_dir().join(format!("starmind-sweep-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(RESULTS_FILE);
        let rows = vec![
            row("a", 100.0, 3.0),
            Row {
                status: "failed: exit 1: Error: x".into(),
                val_bpb: None,
                decode_tok_per_s: None,
                cycles_per_token: None,
                ..row("b", 1.0, 1.0)
            },
        ];
        write_results(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("name,params_real,params_claimed,vocab,dim,hidden,layers,heads,head_size,val_bpb,decode_tok_per_s,"));
        let back = read_results(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], rows[1]);
        assert_eq!(back[0].val_bpb, Some(3.0));
        assert_eq!(back[0].cycles_per_token, rows[0].cycles_per_token);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
