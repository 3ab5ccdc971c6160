//! The seed's stated conclusions (seed 001's study log and seed 002's "Key Takeaways"), each
//! tested on a sweep's rows: does it hold for starmind's native int8 engine, and by how much.
//!
//! Two kinds of evidence, both computed from the rows:
//! - controlled pairs: two variants whose shapes (vocab, dim, hidden, layers, heads) differ in
//!   exactly one field, so the speed and quality change is that field's alone;
//! - a least-squares fit of log2(decode tok/s) on log2 of dim, FFN ratio (hidden/dim), layers,
//!   heads and vocab over every measured variant: `2^coefficient − 1` is the speed change per
//!   doubling of that factor with the others held — the very unit the seed's hierarchy uses
//!   ("40–50 % speed loss per doubling").

use super::front::pareto_front;
use super::Row;
use std::fmt::Write as _;

/// A shape factor the seed's conclusions talk about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Factor {
    Dim,
    FfnRatio,
    Layers,
    Heads,
    Vocab,
}

const FACTORS: [Factor; 5] = [
    Factor::Dim,
    Factor::FfnRatio,
    Factor::Layers,
    Factor::Heads,
    Factor::Vocab,
];

impl Factor {
    fn name(self) -> &'static str {
        match self {
            Factor::Dim => "dim (FFN ratio kept)",
            Factor::FfnRatio => "FFN ratio hidden/dim",
            Factor::Layers => "layers",
            Factor::Heads => "attention heads",
            Factor::Vocab => "vocabulary",
        }
    }

    fn value(self, r: &Row) -> f64 {
        match self {
            Factor::Dim => r.dim as f64,
            Factor::FfnRatio => r.hidden as f64 / r.dim as f64,
            Factor::Layers => r.layers as f64,
            Factor::Heads => r.heads as f64,
            Factor::Vocab => r.vocab as f64,
        }
    }
}

fn tok_s(r: &Row) -> f64 {
    r.decode_tok_per_s.unwrap_or(0.0)
}

fn bpb(r: &Row) -> f64 {
    r.val_bpb.unwrap_or(f64::NAN)
}

fn measured(rows: &[Row]) -> Vec<&Row> {
    rows.iter()
        .filter(|r| r.is_ok() && r.val_bpb.is_some() && r.decode_tok_per_s.is_some_and(|v| v > 0.0))
        .collect()
}

/// Least squares `y ≈ X·b` by the normal equations (Gaussian elimination, partial pivoting);
/// `None` when the factors cannot be told apart (too few rows, or collinear ones).
fn least_squares(x: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let k = x.first()?.len();
    if x.len() < k + 2 {
        return None;
    }
    let mut a = vec![vec![0.0; k + 1]; k];
    for (row, &target) in x.iter().zip(y) {
        for i in 0..k {
            for j in 0..k {
                a[i][j] += row[i] * row[j];
            }
            a[i][k] += row[i] * target;
        }
    }
    let scale = (0..k).map(|i| a[i][i].abs()).fold(0.0, f64::max).max(1e-12);
    for col in 0..k {
        let pivot = (col..k).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 * scale {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| a[i][k] / a[i][i]).collect())
}

/// The fit of log2(tok/s) (or log2 of any per-row figure) on the factors: (per-doubling change
/// of each factor in FACTORS order, rows used).
fn fit(rows: &[&Row], y: impl Fn(&Row) -> f64) -> Option<(Vec<f64>, usize)> {
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            std::iter::once(1.0)
                .chain(FACTORS.iter().map(|f| f.value(r).log2()))
                .collect()
        })
        .collect();
    let ys: Vec<f64> = rows.iter().map(|r| y(r)).collect();
    let b = least_squares(&x, &ys)?;
    Some((b[1..].to_vec(), rows.len()))
}

/// The speed change per doubling of each factor: `2^b − 1`.
fn speed_per_doubling(rows: &[&Row]) -> Option<(Vec<f64>, usize)> {
    let (b, n) = fit(rows, |r| tok_s(r).log2())?;
    Some((b.iter().map(|b| b.exp2() - 1.0).collect(), n))
}

/// Variant pairs whose shapes differ in `factor` alone: (smaller, larger).
fn controlled_pairs<'a>(rows: &[&'a Row], factor: Factor) -> Vec<(&'a Row, &'a Row)> {
    let shape = |r: &Row| [r.vocab, r.dim, r.hidden, r.layers, r.heads];
    let position = match factor {
        Factor::Vocab => 0,
        Factor::Dim => 1,
        Factor::FfnRatio => 2,
        Factor::Layers => 3,
        Factor::Heads => 4,
    };
    let mut pairs = Vec::new();
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let (sa, sb) = (shape(a), shape(b));
            let differs: Vec<usize> = (0..5).filter(|&k| sa[k] != sb[k]).collect();
            if differs == [position] {
                pairs.push(if sa[position] < sb[position] {
                    (*a, *b)
                } else {
                    (*b, *a)
                });
            }
        }
    }
    pairs.sort_by_key(|(a, b)| (a.name.clone(), b.name.clone()));
    pairs
}

fn percent(change: f64) -> String {
    format!("{:+.0} %", 100.0 * change)
}

fn pair_lines(pairs: &[(&Row, &Row)], factor: Factor) -> String {
    let mut s = String::new();
    for (small, large) in pairs.iter().take(6) {
        let _ = write!(
            s,
            "{} → {} ({} {} → {}): tok/s {:.1} → {:.1} ({}), bpb {:.3} → {:.3}; ",
            small.name,
            large.name,
            factor.name(),
            factor.value(small),
            factor.value(large),
            tok_s(small),
            tok_s(large),
            percent(tok_s(large) / tok_s(small) - 1.0),
            bpb(small),
            bpb(large)
        );
    }
    if pairs.len() > 6 {
        let _ = write!(s, "and {} more pairs; ", pairs.len() - 6);
    }
    s.trim_end_matches("; ").to_string()
}

/// How a conclusion fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    Partly,
    Fails,
    /// The rows have nothing that tests it.
    Untested,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Holds => "**holds**",
            Verdict::Partly => "**partly holds**",
            Verdict::Fails => "**does not hold**",
            Verdict::Untested => "not tested by these rows",
        }
    }
}

/// One conclusion of the seed and what the rows say about it.
pub struct Finding {
    pub claim: &'static str,
    /// Where the seed states it (file:line of ../shared/seeds, or seed 002's section).
    pub source: &'static str,
    pub verdict: Verdict,
    pub evidence: String,
}

/// Every conclusion tested on `rows`.
pub fn evaluate(rows: &[Row]) -> Vec<Finding> {
    let ok = measured(rows);
    let per_doubling = speed_per_doubling(&ok);
    let fitted = |f: Factor| {
        per_doubling.as_ref().map(|(v, _)| {
            let i = FACTORS.iter().position(|&g| g == f).unwrap_or(0);
            v[i]
        })
    };
    let fit_note = match &per_doubling {
        Some((v, n)) => format!(
            "fit over {n} variants, speed change per doubling: {}",
            FACTORS
                .iter()
                .zip(v)
                .map(|(f, c)| format!("{} {}", f.name(), percent(*c)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "too few or too alike variants to fit the factors apart".into(),
    };
    let mut findings = Vec::new();

    // 1. Dimension is the #1 speed killer.
    findings.push({
        let (verdict, evidence) = match &per_doubling {
            Some((v, _)) => {
                let dim = v[0];
                let worst = v
                    .iter()
                    .zip(FACTORS)
                    .min_by(|a, b| a.0.total_cmp(b.0))
                    .map(|(_, f)| f)
                    .unwrap_or(Factor::Dim);
                let verdict = match (worst == Factor::Dim, (-0.55..=-0.35).contains(&dim)) {
                    (true, true) => Verdict::Holds,
                    (true, false) => Verdict::Partly,
                    (false, _) => Verdict::Fails,
                };
                (
                    verdict,
                    format!(
                        "doubling dim changes decode speed by {} (seed: −40…−50 %); the costliest factor per doubling is {}. {fit_note}. Controlled pairs: {}",
                        percent(dim),
                        worst.name(),
                        or_none(pair_lines(&controlled_pairs(&ok, Factor::Dim), Factor::Dim))
                    ),
                )
            }
            None => (Verdict::Untested, fit_note.clone()),
        };
        Finding {
            claim: "Dimension is the #1 speed killer: 40–50 % speed loss per doubling",
            source: "002 Key Takeaways (Architecture Impact Hierarchy 1); 001:389, 001:444",
            verdict,
            evidence,
        }
    });

    // 2. Layers.
    findings.push({
        let pairs = controlled_pairs(&ok, Factor::Layers);
        // Per added layer from the controlled pairs: (t_small/t_large)^(1/Δlayers) − 1 is the
        // loss per layer if each layer cost the same fraction.
        let per_layer: Vec<f64> = pairs
            .iter()
            .map(|(a, b)| {
                let added = (b.layers - a.layers) as f64;
                1.0 - (tok_s(b) / tok_s(a)).powf(1.0 / added)
            })
            .collect();
        let one_to_two = pairs
            .iter()
            .find(|(a, b)| a.layers == 1 && b.layers == 2)
            .map(|(a, b)| 1.0 - tok_s(b) / tok_s(a));
        let doubling = fitted(Factor::Layers);
        let loss = one_to_two.or(doubling.map(|d| -d));
        let verdict = match loss {
            Some(l) if (0.15..=0.40).contains(&l) => Verdict::Holds,
            Some(l) if l > 0.05 => Verdict::Partly,
            Some(_) => Verdict::Fails,
            None => Verdict::Untested,
        };
        Finding {
            claim: "Each additional layer costs 25–40 % speed (002) / 15–25 % (001:257); multi-layer models are ~3× slower (001:141)",
            source: "002 Key Takeaways (Hierarchy 2); 001:141, 001:257",
            verdict,
            evidence: format!(
                "one layer → two: {}; doubling the layers in the fit: {}; per added layer in the controlled pairs (if each layer cost the same fraction): {}. Pairs: {}",
                one_to_two.map_or("no such pair".into(), |l| percent(-l)),
                doubling.map_or("–".into(), percent),
                if per_layer.is_empty() {
                    "–".to_string()
                } else {
                    per_layer.iter().map(|l| percent(-l)).collect::<Vec<_>>().join(", ")
                },
                or_none(pair_lines(&pairs, Factor::Layers))
            ),
        }
    });

    // 3. More heads = faster.
    findings.push({
        let pairs = controlled_pairs(&ok, Factor::Heads);
        let faster = pairs.iter().filter(|(a, b)| tok_s(b) > tok_s(a)).count();
        let verdict = if !pairs.is_empty() {
            match faster {
                0 => Verdict::Fails,
                n if n == pairs.len() => Verdict::Holds,
                _ => Verdict::Partly,
            }
        } else {
            match fitted(Factor::Heads) {
                Some(c) if c > 0.02 => Verdict::Holds,
                Some(_) => Verdict::Fails,
                None => Verdict::Untested,
            }
        };
        Finding {
            claim: "More attention heads make decoding faster",
            source: "001:244 (\"More attention heads IMPROVE speed\"); 002 RP2040 Optimization Principles",
            verdict,
            evidence: format!(
                "{} of {} controlled pairs got faster with more heads; doubling the heads in the fit: {}. Pairs: {}. (The seed's code never split heads: configs/README.md.)",
                faster,
                pairs.len(),
                fitted(Factor::Heads).map_or("–".into(), percent),
                or_none(pair_lines(&pairs, Factor::Heads))
            ),
        }
    });

    // 4. Fat FFN layers are more efficient.
    findings.push({
        // At a fixed parameter count, does a fatter FFN decode faster and learn better?
        let x: Vec<Vec<f64>> = ok
            .iter()
            .map(|r| {
                vec![
                    1.0,
                    (r.params_real as f64).log2(),
                    (r.hidden as f64 / r.dim as f64).log2(),
                ]
            })
            .collect();
        let speed = least_squares(&x, &ok.iter().map(|r| tok_s(r).log2()).collect::<Vec<_>>());
        let quality = least_squares(&x, &ok.iter().map(|r| bpb(r)).collect::<Vec<_>>());
        let verdict = match &speed {
            Some(b) if b[2] > 0.02 => Verdict::Holds,
            Some(_) => Verdict::Fails,
            None => Verdict::Untested,
        };
        Finding {
            claim: "Fat FFN layers (64×–256× ratios) are more efficient than thin ones",
            source: "001:250; 002 RP2040 Optimization Principles",
            verdict,
            evidence: format!(
                "at a fixed parameter count, doubling the FFN ratio changes decode speed by {} and val bpb by {} (fit over {} variants of log2 tok/s and bpb on log2 params and log2 ratio)",
                speed.as_ref().map_or("–".into(), |b| percent(b[2].exp2() - 1.0)),
                quality.as_ref().map_or("–".into(), |b| format!("{:+.3}", b[2])),
                ok.len()
            ),
        }
    });

    // 5. Vocabulary has minimal impact.
    findings.push({
        let pairs = controlled_pairs(&ok, Factor::Vocab);
        let verdict = match fitted(Factor::Vocab) {
            Some(c) if c.abs() <= 0.15 => Verdict::Holds,
            Some(c) if c.abs() <= 0.30 => Verdict::Partly,
            Some(_) => Verdict::Fails,
            None => Verdict::Untested,
        };
        Finding {
            claim: "Vocabulary size has minimal speed impact: 8–12 % loss per doubling",
            source: "002 Key Takeaways (Hierarchy 5); 001:264",
            verdict,
            evidence: format!(
                "doubling the vocabulary in the fit: {}. Pairs: {}",
                fitted(Factor::Vocab).map_or("–".into(), percent),
                or_none(pair_lines(&pairs, Factor::Vocab))
            ),
        }
    });

    // 6. 1-D models are the fastest.
    findings.push({
        let fastest = ok.iter().max_by(|a, b| tok_s(a).total_cmp(&tok_s(b)));
        let narrow: Vec<&&Row> = ok.iter().filter(|r| r.dim <= 2).collect();
        let best_bpb = ok.iter().map(|r| bpb(r)).fold(f64::INFINITY, f64::min);
        let narrow_best = narrow.iter().map(|r| bpb(r)).fold(f64::INFINITY, f64::min);
        let verdict = match fastest {
            _ if narrow.is_empty() => Verdict::Untested,
            Some(f) if f.dim == 1 => Verdict::Holds,
            Some(f) if f.dim <= 2 => Verdict::Partly,
            _ => Verdict::Fails,
        };
        Finding {
            claim: "1-D (and 2-D) models are the fastest of all",
            source: "002 Revolutionary Ultra-Narrow Architecture Discovery; 001:1752",
            verdict,
            evidence: match fastest {
                Some(f) if narrow.is_empty() => format!(
                    "no variant has ≤ 2 dims; the fastest is {} ({} dims, {:.1} tok/s)",
                    f.name,
                    f.dim,
                    tok_s(f)
                ),
                Some(f) => format!(
                    "fastest variant: {} ({} dims, {:.1} tok/s, val bpb {:.3}); the best val bpb of a ≤ 2-dim variant is {:.3} against {:.3} overall ({} such variants)",
                    f.name,
                    f.dim,
                    tok_s(f),
                    bpb(f),
                    narrow_best,
                    best_bpb,
                    narrow.len()
                ),
                None => "no measured variants".into(),
            },
        }
    });

    // 7. Mathematical ratios.
    findings.push(named_on_front(
        rows,
        &["fibonacci", "golden", "prime"],
        "Mathematical ratios (Fibonacci, golden ratio, primes) allocate parameters optimally",
        "001:269; 002 RP2040 Optimization Principles",
    ));

    // 8. Hybrids are the best.
    findings.push(named_on_front(
        rows,
        &["story-hybrid-256x-32h-1k"],
        "Hybrid designs (256× FFN + 32 heads) give the best performance",
        "001:2371, 001:2470",
    ));

    // 9. 48+ heads fail to load.
    findings.push({
        let many: Vec<&Row> = rows.iter().filter(|r| r.heads >= 48).collect();
        let ran: Vec<&Row> = many.iter().copied().filter(|r| r.is_ok()).collect();
        let verdict = match (many.len(), ran.len()) {
            (0, _) => Verdict::Untested,
            (_, 0) => Verdict::Holds,
            (m, r) if r < m => Verdict::Partly,
            _ => Verdict::Fails,
        };
        Finding {
            claim: "48 or more attention heads fail to load; 32 heads is the maximum",
            source: "001:2391, 001:2483",
            verdict,
            evidence: format!(
                "{} of {} variants with ≥ 48 heads ran: {}",
                ran.len(),
                many.len(),
                or_none(
                    ran.iter()
                        .map(|r| format!(
                            "{} ({} heads, {:.1} tok/s, {} B RAM)",
                            r.name,
                            r.heads,
                            tok_s(r),
                            r.ram_bytes.map_or("?".into(), |b| b.to_string())
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            ),
        }
    });

    // 10. ~10K parameters and 256 tokens are the limit.
    findings.push({
        let big: Vec<&Row> = rows
            .iter()
            .filter(|r| r.params_real > 10_000 || r.vocab > 256)
            .collect();
        let ran: Vec<&&Row> = big.iter().filter(|r| r.is_ok()).collect();
        let largest = ran.iter().max_by_key(|r| r.params_real);
        let verdict = match (big.len(), ran.len()) {
            (0, _) => Verdict::Untested,
            (_, 0) => Verdict::Holds,
            _ => Verdict::Fails,
        };
        Finding {
            claim: "~10K parameters and a 256-token vocabulary are the practical limits (memory)",
            source: "002 Memory Management is the Primary Constraint; 001:50",
            verdict,
            evidence: format!(
                "{} of {} variants above 10K parameters or 256 tokens ran{}",
                ran.len(),
                big.len(),
                largest.map_or(String::new(), |r| format!(
                    "; the largest, {}, has {} parameters, a {} B model file and peaks at {} B of RAM",
                    r.name,
                    r.params_real,
                    r.flash_bytes.map_or("?".into(), |b| b.to_string()),
                    r.ram_bytes.map_or("?".into(), |b| b.to_string())
                ))
            ),
        }
    });

    // 11. Larger models can be faster.
    findings.push({
        let mut faster = Vec::new();
        let mut pairs = 0usize;
        for a in &ok {
            for b in &ok {
                if b.params_real >= 2 * a.params_real {
                    pairs += 1;
                    if tok_s(b) > tok_s(a) {
                        faster.push((a, b));
                    }
                }
            }
        }
        faster.sort_by(|x, y| (tok_s(y.1) / tok_s(y.0)).total_cmp(&(tok_s(x.1) / tok_s(x.0))));
        let rho = spearman(
            &ok.iter().map(|r| r.params_real as f64).collect::<Vec<_>>(),
            &ok.iter().map(|r| tok_s(r)).collect::<Vec<_>>(),
        );
        let verdict = match (pairs, faster.len()) {
            (0, _) => Verdict::Untested,
            (_, 0) => Verdict::Fails,
            _ => Verdict::Holds,
        };
        Finding {
            claim: "Larger models can be faster than smaller ones with the right architecture",
            source: "002 Breakthrough Mindset; 001:1336",
            verdict,
            evidence: format!(
                "in {} of {} pairs where one variant has ≥ 2× the parameters, the larger decodes faster{}; rank correlation of parameters and tok/s: {}",
                faster.len(),
                pairs,
                faster.first().map_or(String::new(), |(a, b)| format!(
                    " (most: {} with {} parameters at {:.1} tok/s vs {} with {} at {:.1})",
                    b.name,
                    b.params_real,
                    tok_s(b),
                    a.name,
                    a.params_real,
                    tok_s(a)
                )),
                rho.map_or("–".into(), |r| format!("{r:+.2}"))
            ),
        }
    });

    // 12. Quantisation slows inference.
    findings.push({
        let mut speedups: Vec<f64> = ok
            .iter()
            .filter_map(|r| Some(tok_s(r) / r.seed_tok_per_s?))
            .collect();
        speedups.sort_by(f64::total_cmp);
        Finding {
            claim: "Quantization saves memory but slows inference (de-quantization overhead)",
            source: "002 Memory vs Speed Trade-offs",
            verdict: Verdict::Untested,
            evidence: if speedups.is_empty() {
                "no float engine runs on the device here, and no variant has a seed speed to compare".into()
            } else {
                format!(
                    "not separable here (no float engine runs on the device), but the integer-only int8 engine decodes {:.0}×–{:.0}× (median {:.0}×) the seed's CircuitPython speed on the {} variants both measured",
                    speedups[0],
                    speedups[speedups.len() - 1],
                    speedups[speedups.len() / 2],
                    speedups.len()
                )
            },
        }
    });
    findings
}

/// "X is on the front": holds when every named variant that ran is on the Pareto front.
fn named_on_front(
    rows: &[Row],
    patterns: &[&str],
    claim: &'static str,
    source: &'static str,
) -> Finding {
    let front = pareto_front(rows);
    let named: Vec<(usize, &Row)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok() && patterns.iter().any(|p| r.name.contains(p)))
        .collect();
    let on: Vec<&str> = named
        .iter()
        .filter(|(i, _)| front.contains(i))
        .map(|(_, r)| r.name.as_str())
        .collect();
    let ok = measured(rows);
    let rank = |r: &Row, key: &dyn Fn(&Row) -> f64| -> usize {
        1 + ok.iter().filter(|o| key(o) < key(r)).count()
    };
    let verdict = match (named.len(), on.len()) {
        (0, _) => Verdict::Untested,
        (_, 0) => Verdict::Fails,
        (n, m) if m == n => Verdict::Holds,
        _ => Verdict::Partly,
    };
    let details: Vec<String> = named
        .iter()
        .map(|(_, r)| {
            format!(
                "{}: {:.1} tok/s (speed rank {} of {}), val bpb {:.3} (quality rank {})",
                r.name,
                tok_s(r),
                rank(r, &|o| -tok_s(o)),
                ok.len(),
                bpb(r),
                rank(r, &bpb)
            )
        })
        .collect();
    Finding {
        claim,
        source,
        verdict,
        evidence: format!(
            "{} of {} such variants are on the speed/quality Pareto front{}",
            on.len(),
            named.len(),
            if details.is_empty() {
                String::new()
            } else {
                format!(": {}", details.join("; "))
            }
        ),
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "none in these rows".into()
    } else {
        s
    }
}

/// Spearman's rank correlation (ties get their mean rank).
fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 3 || a.len() != b.len() {
        return None;
    }
    let ranks = |v: &[f64]| -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
                j += 1;
            }
            for &k in &order[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (a.len() as f64 - 1.0) / 2.0;
    let cov: f64 = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| (x - mean) * (y - mean))
        .sum();
    let var_a: f64 = ra.iter().map(|x| (x - mean).powi(2)).sum();
    let var_b: f64 = rb.iter().map(|y| (y - mean).powi(2)).sum();
    (var_a > 0.0 && var_b > 0.0).then(|| cov / (var_a * var_b).sqrt())
}

/// The findings as a Markdown list.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "Each of the seed's stated conclusions (seed 001's log, seed 002's summary), tested on \
         the rows above for starmind's native int8 engine (speeds: emulated decode tok/s at \
         125 MHz; quality: val bpb after an equal training budget).\n\n",
    );
    for (i, f) in evaluate(rows).iter().enumerate() {
        let _ = writeln!(
            s,
            "{}. *{}* ({}): {}. {}\n",
            i + 1,
            f.claim,
            f.source,
            f.verdict.word(),
            f.evidence
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, shape: [usize; 5], tok_s: f64, bpb: f64) -> Row {
        let [vocab, dim, hidden, layers, heads] = shape;
        Row {
            name: name.into(),
            params_real: vocab * dim + layers * (4 * dim * dim + 2 * dim * hidden),
            params_claimed: None,
            params_seed_count: 0,
            vocab,
            dim,
            hidden,
            layers,
            heads,
            kv_heads: heads,
            head_size: (dim / heads).max(1),
            val_bpb: Some(bpb),
            decode_tok_per_s: Some(tok_s),
            cycles_per_token: None,
            flash_bytes: None,
            ram_bytes: None,
            seed_tok_per_s: None,
            float_val_bpb: None,
            unigram_bpb: None,
            bigram_bpb: None,
            board_estimate_tok_per_s: None,
            steps: None,
            train_seconds: None,
            bit_exact: None,
            status: "ok".into(),
        }
    }

    #[test]
    fn least_squares_recovers_a_plane_and_refuses_collinear_factors() {
        let x: Vec<Vec<f64>> = (0..10)
            .map(|i| vec![1.0, i as f64, ((i * 7) % 5) as f64])
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 2.0 - 0.5 * r[1] + 3.0 * r[2]).collect();
        let b = least_squares(&x, &y).unwrap();
        for (got, want) in b.iter().zip([2.0, -0.5, 3.0]) {
            assert!((got - want).abs() < 1e-9, "{b:?}");
        }
        let collinear: Vec<Vec<f64>> = (0..10)
            .map(|i| vec![1.0, i as f64, 2.0 * i as f64])
            .collect();
        assert!(least_squares(&collinear, &y).is_none());
    }

    #[test]
    fn speed_factors_come_out_of_synthetic_rows() {
        // tok/s = 1e4 · dim^-1 · ratio^-0.3 · layers^-0.5 · heads^0 · vocab^-0.1: per doubling
        // dim −50 %, layers −29 %, vocab −7 %.
        let mut rows = Vec::new();
        for (i, &(v, d, r, l, h)) in [
            (32, 2, 4, 1, 1),
            (64, 4, 8, 1, 2),
            (32, 8, 4, 2, 2),
            (128, 4, 16, 1, 4),
            (64, 8, 2, 4, 1),
            (16, 16, 4, 1, 8),
            (256, 2, 32, 2, 2),
            (32, 4, 4, 3, 1),
            (64, 16, 8, 2, 4),
            (128, 8, 2, 1, 2),
        ]
        .iter()
        .enumerate()
        {
            let t = 1e4
                * (d as f64).powf(-1.0)
                * (r as f64).powf(-0.3)
                * (l as f64).powf(-0.5)
                * (v as f64).powf(-0.1);
            rows.push(row(&format!("v{i}"), [v, d, d * r, l, h], t, 3.0));
        }
        let refs: Vec<&Row> = rows.iter().collect();
        let (per_doubling, n) = speed_per_doubling(&refs).unwrap();
        assert_eq!(n, 10);
        let want = [
            -0.5,
            0.5f64.powf(0.3) - 1.0,
            0.5f64.sqrt() - 1.0,
            0.0,
            0.5f64.powf(0.1) - 1.0,
        ];
        for (got, want) in per_doubling.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{per_doubling:?}");
        }
        let findings = evaluate(&rows);
        assert_eq!(
            findings[0].verdict,
            Verdict::Holds,
            "{}",
            findings[0].evidence
        );
        assert_eq!(
            findings[4].verdict,
            Verdict::Holds,
            "{}",
            findings[4].evidence
        );
    }

    #[test]
    fn controlled_pairs_and_head_verdicts() {
        let rows = vec![
            row("one-head", [64, 8, 32, 1, 1], 700.0, 3.0),
            row("two-heads", [64, 8, 32, 1, 2], 650.0, 2.9),
            row("eight-heads", [64, 8, 32, 1, 8], 500.0, 2.95),
            row("wider", [64, 16, 32, 1, 2], 300.0, 2.7),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let pairs = controlled_pairs(&refs, Factor::Heads);
        assert_eq!(pairs.len(), 3);
        assert!(pairs.iter().all(|(a, b)| a.heads < b.heads));
        assert_eq!(controlled_pairs(&refs, Factor::Dim).len(), 1);
        let findings = evaluate(&rows);
        assert_eq!(
            findings[2].verdict,
            Verdict::Fails,
            "{}",
            findings[2].evidence
        );
        assert!(findings[2].evidence.starts_with("0 of 3 controlled pairs"));
    }

    #[test]
    fn spearman_of_monotone_and_reversed() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }
}
