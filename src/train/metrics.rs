//! `metrics.csv` (one row per logged step) and the loss curve drawn from it (`loss.svg`).

use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::path::Path;

/// One row of metrics.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    pub step: usize,
    pub learning_rate: f64,
    /// Mean training loss (nats/token) since the previous row.
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_bpb: Option<f64>,
    pub tokens_seen: u64,
    pub elapsed_s: f64,
}

/// The first line of metrics.csv.
pub const METRICS_HEADER: &str =
    "step,learning_rate,train_loss,val_loss,val_bpb,tokens_seen,elapsed_s";

pub fn metrics_csv(rows: &[MetricsRow]) -> String {
    let mut s = format!("{METRICS_HEADER}\n");
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            s,
            "{},{:.6e},{:.6},{},{},{},{:.3}",
            r.step,
            r.learning_rate,
            r.train_loss,
            opt(r.val_loss),
            opt(r.val_bpb),
            r.tokens_seen,
            r.elapsed_s
        );
    }
    s
}

/// Reads metrics.csv (empty if missing).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let mut rows = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 7 {
            bail!("{}: malformed line {line:?}", path.display());
        }
        let opt = |s: &str| {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some)
            }
        };
        rows.push(MetricsRow {
            step: f[0].parse()?,
            learning_rate: f[1].parse()?,
            train_loss: f[2].parse()?,
            val_loss: opt(f[3])?,
            val_bpb: opt(f[4])?,
            tokens_seen: f[5].parse()?,
            elapsed_s: f[6].parse()?,
        });
    }
    Ok(rows)
}

/// A hand-written SVG of training loss (line) and validation loss (dots) against steps.
pub fn loss_svg(title: &str, rows: &[MetricsRow]) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 60.0, 20.0, 30.0, 45.0);
    let max_step = rows.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;
    let losses = rows
        .iter()
        .flat_map(|r| std::iter::once(r.train_loss).chain(r.val_loss))
        .filter(|v| v.is_finite());
    let (lo, hi) = losses.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (0.0, 1.0) };
    let x = |s: usize| left + (s as f64 / max_step) * (w - left - right);
    let y = |v: f64| top + (hi - v) / (hi - lo) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"18\" text-anchor=\"middle\">{} — loss (nats/token)</text>\n",
        w / 2.0,
        escape_xml(title)
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom,
        w - right,
        h - bottom
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom
    );
    for i in 0..=4 {
        let v = lo + (hi - lo) * i as f64 / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
            left - 5.0,
            y(v) + 4.0
        );
        let s = (max_step * i as f64 / 4.0).round() as usize;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{s}</text>",
            x(s),
            h - bottom + 16.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>",
        w / 2.0,
        h - 8.0
    );
    let points: Vec<String> = rows
        .iter()
        .filter(|r| r.train_loss.is_finite())
        .map(|r| format!("{:.1},{:.1}", x(r.step), y(r.train_loss)))
        .collect();
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>",
        points.join(" ")
    );
    for r in rows {
        if let Some(v) = r.val_loss.filter(|v| v.is_finite()) {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#d62728\"/>",
                x(r.step),
                y(v)
            );
        }
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" fill=\"#1f77b4\" text-anchor=\"end\">train</text>",
        w - right,
        top + 12.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" fill=\"#d62728\" text-anchor=\"end\">validation</text>",
        w - right,
        top + 26.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_round_trip() {
        let rows = vec![
            MetricsRow {
                step: 1,
                learning_rate: 1e-3,
                train_loss: 4.0,
                val_loss: None,
                val_bpb: None,
                tokens_seen: 64,
                elapsed_s: 0.5,
            },
            MetricsRow {
                step: 2,
                learning_rate: 2e-3,
                train_loss: 3.5,
                val_loss: Some(3.6),
                val_bpb: Some(5.0),
                tokens_seen: 128,
                elapsed_s: 1.0,
            },
        ];
        let dir = std::env::temp_dir().join(format!("starmind-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.csv");
        std::fs::write(&path, metrics_csv(&rows)).unwrap();
        assert_eq!(read_metrics(&path).unwrap(), rows);
        assert!(loss_svg("t<1>", &rows).contains("t&lt;1&gt;"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
