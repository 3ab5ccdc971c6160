//! The speed/quality Pareto front of a sweep's rows: which variants no other beats on both
//! decode speed and bits per byte. The report and the findings both rank by it.

use super::Row;

/// Rows that ran to the end with a quality and a speed figure.
pub fn measured(rows: &[Row]) -> Vec<&Row> {
    rows.iter().filter(|r| is_measured(r)).collect()
}

fn is_measured(r: &Row) -> bool {
    r.is_ok() && r.val_bpb.is_some() && r.decode_tok_per_s.is_some()
}

pub fn tok_s(r: &Row) -> f64 {
    r.decode_tok_per_s.unwrap_or(0.0)
}

pub fn bpb(r: &Row) -> f64 {
    r.val_bpb.unwrap_or(f64::INFINITY)
}

/// Whether `a` is at least as fast and as good as `b`, and better in one.
fn dominates(a: &Row, b: &Row) -> bool {
    tok_s(a) >= tok_s(b) && bpb(a) <= bpb(b) && (tok_s(a) > tok_s(b) || bpb(a) < bpb(b))
}

/// Indices (into `rows`) of the measured rows no other measured row dominates: the
/// speed/quality Pareto front, fastest first.
pub fn pareto_front(rows: &[Row]) -> Vec<usize> {
    let ok: Vec<usize> = (0..rows.len()).filter(|&i| is_measured(&rows[i])).collect();
    let mut front: Vec<usize> = ok
        .iter()
        .copied()
        .filter(|&i| !ok.iter().any(|&j| dominates(&rows[j], &rows[i])))
        .collect();
    front.sort_by(|&a, &b| tok_s(&rows[b]).total_cmp(&tok_s(&rows[a])));
    front
}

/// The three "Pareto-best" rows: front members ranked by how many measured rows each
/// dominates (ties: lower bpb first).
pub fn pareto_top(rows: &[Row], n: usize) -> Vec<(usize, usize)> {
    let ok = measured(rows);
    let mut ranked: Vec<(usize, usize)> = pareto_front(rows)
        .into_iter()
        .map(|i| {
            let count = ok.iter().filter(|r| dominates(&rows[i], r)).count();
            (i, count)
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| bpb(&rows[a.0]).total_cmp(&bpb(&rows[b.0])))
    });
    ranked.truncate(n);
    ranked
}
