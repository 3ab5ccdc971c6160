//! The named configs against the seed experiment's logs (`../shared/seeds/*.txt`).
//!
//! `configs/seed-models.csv` has one row per model name the logs mention: the dimensions its
//! config uses, the parameter count and tok/s the logs state, and every log line that names it.
//! [`table_matches_the_logs`] parses the logs themselves and checks each number a line states
//! about a model against its row; [`configs_match_the_table`] checks the config files against
//! the rows. Between them every dimension of every seed config is tied to the log's figures.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

const TABLE: &str = "configs/seed-models.csv";
const TABLE_COLUMNS: &str = "name,config,families,vocab,dim,hidden,layers,heads,head_size,\
                             claimed_params,seed_tok_s,other_tok_s,upstream,lines";

/// Configs that are ours, not the seed's.
const OURS: &[&str] = &["stories260k", "story-flagship"];

/// A speed a log line states beside a model's name that belongs to another model:
/// (model, line, tok/s, why).
const MISATTRIBUTED_SPEEDS: &[(&str, &str, &str, &str)] = &[(
    "story-ultra-2d-1k",
    "001:1788",
    "14.5",
    "'beats our previous 10K champion (14.5 tok/s)': chat-10k-ultra-fat-ffn's speed",
)];

/// One row of `configs/seed-models.csv`.
#[derive(Debug)]
struct Row {
    name: String,
    /// The config file the name loads: itself, an alias target, or empty (no config).
    config: String,
    families: Vec<Family>,
    vocab: usize,
    dim: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    head_size: Option<usize>,
    /// The log's most precise parameter figure: "1280" (exact) or "18.4K".
    claimed_params: String,
    seed_tok_s: String,
    other_tok_s: Vec<String>,
    /// Every log line naming the model, "001:1731", in file order.
    lines: Vec<String>,
}

impl Row {
    fn model(&self) -> ModelConfig {
        ModelConfig {
            vocab_size: self.vocab,
            dim: self.dim,
            hidden_dim: self.hidden,
            n_layers: self.layers,
            n_heads: self.heads,
            n_kv_heads: self.heads,
            head_size: self.head_size,
            seq_len: 64,
            ffn: Ffn::Plain,
            tied_embeddings: true,
            tokenizer: TokenizerKind::Char,
        }
    }
}

fn read_table() -> Vec<Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{TABLE}: {e}"));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(TABLE_COLUMNS), "{TABLE} header");
    let number = |s: &str, what: &str, name: &str| -> usize {
        s.parse()
            .unwrap_or_else(|_| panic!("{TABLE}: {name}: {what} '{s}' is not a number"))
    };
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 14, "{TABLE}: '{line}' has {} fields", f.len());
            let name = f[0];
            let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            Row {
                name: name.to_string(),
                config: f[1].to_string(),
                families: words(f[2])
                    .iter()
                    .map(|w| {
                        serde_json::from_value(serde_json::Value::String(w.clone()))
                            .unwrap_or_else(|_| panic!("{TABLE}: {name}: family '{w}'"))
                    })
                    .collect(),
                vocab: number(f[3], "vocab", name),
                dim: number(f[4], "dim", name),
                hidden: number(f[5], "hidden", name),
                layers: number(f[6], "layers", name),
                heads: number(f[7], "heads", name),
                head_size: (!f[8].is_empty()).then(|| number(f[8], "head_size", name)),
                claimed_params: f[9].to_string(),
                seed_tok_s: f[10].to_string(),
                other_tok_s: words(f[11]),
                lines: words(f[13]),
            }
        })
        .collect()
}

/// A parameter figure as the logs write it: "1,280" or "1280" (exact), "18.4K" (rounded to
/// its last digit) → (value, largest rounding error).
fn claimed_count(text: &str) -> (usize, usize) {
    match text.strip_suffix('K') {
        Some(thousands) => {
            let decimals = thousands.split_once('.').map_or(0, |(_, d)| d.len() as u32);
            let value: f64 = thousands.parse().expect("a number before K");
            (
                (value * 1000.0).round() as usize,
                500 / 10usize.pow(decimals),
            )
        }
        None => (text.replace(',', "").parse().expect("a count"), 0),
    }
}

// ---- Reading the logs --------------------------------------------------------------------

/// What a log line states about a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Params,
    Vocab,
    Dim,
    Hidden,
    Layers,
    Heads,
    /// FFN ratio hidden/dim ("64x FFN").
    Ratio,
    TokS,
}

/// A number a line states, as written ("1,280", "18.4K", "6", "15.2").
#[derive(Debug, Clone)]
struct Fact {
    kind: Kind,
    text: String,
}

/// A log line that names a model, and what it states about it.
#[derive(Debug)]
struct Mention {
    /// "001:1731": the log's number and the line.
    at: String,
    facts: Vec<Fact>,
}

/// The logs keyed by their number ("000" … "004"), or `None` when `../shared/seeds` is absent.
fn read_logs() -> Option<Vec<(String, String)>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds");
    if !dir.is_dir() {
        return None;
    }
    let mut logs: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (file[..3].to_string(), text)
        })
        .collect();
    logs.sort();
    assert!(
        logs.iter().any(|(n, _)| n == "000") && logs.iter().any(|(n, _)| n == "001"),
        "{} lacks the seed logs 000 and 001",
        dir.display()
    );
    Some(logs)
}

/// A lowercase letter or digit: the characters of a name segment.
fn name_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Byte ranges of the model names in `line`: `story-`, `chat-` or `assistant-` followed by
/// segments of lowercase letters and digits joined by single hyphens, not preceded by a name
/// character.
fn name_spans(line: &str) -> Vec<(usize, usize)> {
    let b = line.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let prefix = ["story-", "chat-", "assistant-"]
            .into_iter()
            .find(|p| b[i..].starts_with(p.as_bytes()));
        let free = i == 0 || !(name_char(b[i - 1]) || b[i - 1] == b'-');
        if let (Some(prefix), true) = (prefix, free) {
            let mut end = i + prefix.len();
            let first = end;
            while end < b.len() && name_char(b[end]) {
                end += 1;
            }
            if end > first {
                while end + 1 < b.len() && b[end] == b'-' && name_char(b[end + 1]) {
                    end += 1;
                    while end < b.len() && name_char(b[end]) {
                        end += 1;
                    }
                }
                spans.push((i, end));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    spans
}

/// `text[from..to]` with the names in it replaced by a space.
fn without_names(text: &str, spans: &[(usize, usize)], from: usize, to: usize) -> String {
    let mut out = String::new();
    let mut at = from;
    for &(start, end) in spans.iter().filter(|(s, e)| *s >= from && *e <= to) {
        out.push_str(&text[at..start]);
        out.push(' ');
        at = end;
    }
    out.push_str(&text[at..to]);
    out
}

/// A word character (letter, digit or underscore), as regular expressions' `\w`.
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `text` at byte `at` starts with `word` (ASCII, any case) followed by a non-word
/// character or the end.
fn word_at(text: &str, at: usize, word: &str) -> bool {
    starts_ci(text, at, word)
        && !text[at + word.len()..]
            .chars()
            .next()
            .is_some_and(word_char)
}

/// Like [`word_at`], but `unit` must match exactly ("6d", not "1D").
fn unit_at(text: &str, at: usize, unit: &str) -> bool {
    text[at..].starts_with(unit)
        && !text[at + unit.len()..]
            .chars()
            .next()
            .is_some_and(word_char)
}

/// `text[at..]` starts with `prefix`, ignoring ASCII case.
fn starts_ci(text: &str, at: usize, prefix: &str) -> bool {
    text.as_bytes()
        .get(at..at + prefix.len())
        .is_some_and(|bytes| bytes.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The numbers `text` states with a unit: "1,280 params", "18.4K parameters", "6d", "24h",
/// "4 heads", "1 head", "96 vocab", "2 layers", "64x FFN", "15.2 tok/s", and "vocab=32",
/// "dim=1", "hidden=64", "layers=1", "heads=1". A number directly after a word character or
/// one of `. , + ~ / < > -` is not a statement ("~12K", "<3 tok/s", "8-10 tok/s", "v1.0").
fn facts(text: &str) -> Vec<Fact> {
    let b = text.as_bytes();
    let digits_from = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut push = |kind, s: &str| {
        out.push(Fact {
            kind,
            text: s.to_string(),
        })
    };
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let before = text[..i].chars().next_back();
        let end = digits_from(i);
        let int = &text[i..end];
        for (key, kind) in [
            ("vocab=", Kind::Vocab),
            ("dim=", Kind::Dim),
            ("hidden=", Kind::Hidden),
            ("layers=", Kind::Layers),
            ("heads=", Kind::Heads),
        ] {
            let key_at = i.checked_sub(key.len());
            if key_at.is_some_and(|k| {
                text.get(k..i) == Some(key) && !text[..k].chars().next_back().is_some_and(word_char)
            }) {
                push(kind, int);
            }
        }
        if before.is_some_and(|c| word_char(c) || ".,+~/<>-".contains(c)) {
            i = end;
            continue;
        }
        // "1,280 params": 1–3 digits, then groups of three.
        let mut grouped = end;
        while end - i <= 3
            && b.get(grouped) == Some(&b',')
            && digits_from(grouped + 1) == grouped + 4
        {
            grouped += 4;
        }
        let params_after = |at: usize| {
            let spaces = text[at..].len() - text[at..].trim_start().len();
            spaces > 0 && starts_ci(text, at + spaces, "param")
        };
        if grouped > end && params_after(grouped) {
            push(Kind::Params, &text[i..grouped]);
        }
        // "18.4K params" and "15.2 tok/s".
        let mut decimal = end;
        if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
            decimal = digits_from(end + 1);
        }
        if b.get(decimal) == Some(&b'K') && params_after(decimal + 1) {
            push(Kind::Params, &text[i..=decimal]);
        }
        if text[decimal..].starts_with(" tok/s") {
            push(Kind::TokS, &text[i..decimal]);
        }
        if unit_at(text, end, "d") {
            push(Kind::Dim, int);
        }
        if unit_at(text, end, "h") {
            push(Kind::Hidden, int);
        }
        if b.get(end) == Some(&b' ') {
            let unit = end + 1;
            let heads = if starts_ci(text, unit, "attention ") {
                unit + "attention ".len()
            } else {
                unit
            };
            if word_at(text, heads, "heads") || word_at(text, heads, "head") {
                push(Kind::Heads, int);
            }
            if starts_ci(text, unit, "vocab") {
                push(Kind::Vocab, int);
            }
            if word_at(text, unit, "layers") || word_at(text, unit, "layer") {
                push(Kind::Layers, int);
            }
        }
        if starts_ci(text, end, "x ")
            && ["ffn", "hidden", "ratio"]
                .iter()
                .any(|w| starts_ci(text, end + 2, w))
        {
            push(Kind::Ratio, int);
        }
        i = end;
    }
    out
}

/// The columns of a markdown table header that hold bare numbers about the row's model.
fn column_kind(header: &str) -> Option<Kind> {
    match header {
        "params" | "parameters" => Some(Kind::Params),
        "vocab" => Some(Kind::Vocab),
        "dim" => Some(Kind::Dim),
        "layers" => Some(Kind::Layers),
        _ => None,
    }
}

/// A table cell that is only a number: "1,008", "96".
fn bare_number(cell: &str) -> bool {
    let groups: Vec<&str> = cell.split(',').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    groups.iter().all(|g| digits(g))
        && (groups.len() == 1 || (groups[0].len() <= 3 && groups[1..].iter().all(|g| g.len() == 3)))
}

/// Every model the logs name, with each line naming it and what that line states about it.
/// Markdown emphasis (`*`, `` ` ``) is dropped first. A line naming several models gives each
/// the text from its name to the next one (the first also what precedes it); a table row's
/// bare numbers count under a Params, Vocab, Dim or Layers column.
fn mentions(logs: &[(String, String)]) -> BTreeMap<String, Vec<Mention>> {
    let mut by_name: BTreeMap<String, Vec<Mention>> = BTreeMap::new();
    for (log, text) in logs {
        let raw: Vec<&str> = text.split('\n').collect();
        let mut header: Option<Vec<String>> = None;
        for (index, raw_line) in raw.iter().enumerate() {
            let line: String = raw_line
                .chars()
                .filter(|c| *c != '*' && *c != '`')
                .collect();
            if line.starts_with('|') {
                if raw
                    .get(index + 1)
                    .is_some_and(|next| next.starts_with("|-"))
                {
                    header = Some(cells(&line).map(|c| c.to_lowercase()).collect());
                    continue;
                }
                if line.starts_with("|-") {
                    continue;
                }
            } else {
                header = None;
            }
            let spans = name_spans(&line);
            if spans.is_empty() {
                continue;
            }
            let mut stated: BTreeMap<&str, Vec<Fact>> = BTreeMap::new();
            for (k, &(start, end)) in spans.iter().enumerate() {
                let (from, to) = if spans.len() == 1 {
                    (0, line.len())
                } else {
                    let from = if k == 0 { 0 } else { start };
                    (from, spans.get(k + 1).map_or(line.len(), |s| s.0))
                };
                let segment = without_names(&line, &spans, from, to);
                stated
                    .entry(&line[start..end])
                    .or_default()
                    .extend(facts(&segment));
            }
            if let (Some(header), [(start, end)]) = (&header, spans.as_slice()) {
                for (column, cell) in header.iter().zip(cells(&line)) {
                    if let (Some(kind), true) = (column_kind(column), bare_number(cell)) {
                        stated.entry(&line[*start..*end]).or_default().push(Fact {
                            kind,
                            text: cell.to_string(),
                        });
                    }
                }
            }
            for (name, facts) in stated {
                by_name.entry(name.to_string()).or_default().push(Mention {
                    at: format!("{log}:{}", index + 1),
                    facts,
                });
            }
        }
    }
    by_name
}

/// The cells of a markdown table row.
fn cells(line: &str) -> impl Iterator<Item = &str> {
    line.trim().trim_matches('|').split('|').map(str::trim)
}

// ---- The checks --------------------------------------------------------------------------

/// The text that must explain a config's disagreement with the log: its description.
fn description_of(row: &Row) -> String {
    read(&row.config)
        .map(|c| c.description)
        .unwrap_or_else(|e| panic!("{}: {e:#}", row.name))
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn fact_extraction_by_hand() {
    let kinds = |text: &str| -> Vec<(Kind, String)> {
        facts(text).into_iter().map(|f| (f.kind, f.text)).collect()
    };
    use Kind::*;
    assert_eq!(
        kinds(" : 12.0 tok/s (32d, 128h, 32 heads, 1.0K params)"),
        [
            (TokS, "12.0".into()),
            (Dim, "32".into()),
            (Hidden, "128".into()),
            (Heads, "32".into()),
            (Params, "1.0K".into())
        ]
    );
    assert_eq!(
        kinds("1,280 params, 1 head only, 1024 vocabulary, 10 LAYERS, 64x FFN ratio"),
        [
            (Params, "1,280".into()),
            (Heads, "1".into()),
            (Vocab, "1024".into()),
            (Layers, "10".into()),
            (Ratio, "64".into())
        ]
    );
    assert_eq!(
        kinds("'x': vocab=32, dim=1, hidden=64, layers=10, heads=1"),
        [
            (Vocab, "32".into()),
            (Dim, "1".into()),
            (Hidden, "64".into()),
            (Layers, "10".into()),
            (Heads, "1".into())
        ]
    );
    // Approximate, bounded or ranged figures, and digits inside words, state nothing.
    assert!(kinds("~12K parameters, <3 tok/s?, 8-10 tok/s, 12+ tok/s, v2d, 5x FASTER").is_empty());
    assert_eq!(
        name_spans("`story-1k-wide` → story-ultra-1d-1k, chat-8k- mystory-1k"),
        [(1, 14), (20, 37), (39, 46)]
    );
    assert!(bare_number("1,008") && bare_number("96") && !bare_number("~15KB"));
    assert!(!bare_number("1,00") && !bare_number(""));
}

/// Every number the logs state about a model matches its row of `configs/seed-models.csv`, and
/// the row lists exactly the lines naming it; the seed's parameter claims agree with the
/// dimensions within their rounding, or the config's description says they are inconsistent.
#[test]
fn table_matches_the_logs() {
    let Some(logs) = read_logs() else {
        eprintln!(
            "skipping: ../shared/seeds is absent, so configs/seed-models.csv cannot be checked \
             against the seed logs"
        );
        return;
    };
    let mentions = mentions(&logs);
    let rows = read_table();
    let in_logs: BTreeSet<&str> = mentions.keys().map(String::as_str).collect();
    let in_table: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        in_logs.difference(&in_table).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "models the logs name without a row in {TABLE}"
    );
    assert_eq!(
        in_table.difference(&in_logs).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "rows of {TABLE} the logs never name"
    );
    let mut misattributed_seen = BTreeSet::new();
    for row in &rows {
        let name = row.name.as_str();
        let seen = &mentions[name];
        let at: Vec<&str> = seen.iter().map(|m| m.at.as_str()).collect();
        assert_eq!(row.lines, at, "{name}: the log lines naming it");
        let has_config = !row.config.is_empty();
        let count = row.model().seed_param_count();
        let mut speeds = BTreeSet::new();
        let mut claims: Vec<&str> = Vec::new();
        for mention in seen {
            for fact in &mention.facts {
                let value = || -> usize { fact.text.parse().expect("an integer fact") };
                let here = format!(
                    "{name}: {} states {:?} {}",
                    mention.at, fact.kind, fact.text
                );
                match fact.kind {
                    Kind::Vocab => assert_eq!(value(), row.vocab, "{here}"),
                    Kind::Dim => assert_eq!(value(), row.dim, "{here}"),
                    Kind::Hidden => assert_eq!(value(), row.hidden, "{here}"),
                    Kind::Layers => assert_eq!(value(), row.layers, "{here}"),
                    Kind::Heads => assert_eq!(value(), row.heads, "{here}"),
                    Kind::Ratio => {
                        if has_config && row.hidden != value() * row.dim {
                            let explained = format!("'{}x FFN' is not", fact.text);
                            assert!(
                                description_of(row).contains(&explained),
                                "{here}, but hidden {} / dim {}; the description must say \
                                 \"{explained}\"",
                                row.hidden,
                                row.dim
                            );
                        }
                    }
                    Kind::Params => {
                        if !claims.contains(&fact.text.as_str()) {
                            claims.push(&fact.text);
                        }
                        let (claimed, rounding) = claimed_count(&fact.text);
                        if has_config && count.abs_diff(claimed) > rounding {
                            let description = description_of(row);
                            assert!(
                                description.contains("inconsistent in the log")
                                    && description.contains(&thousands(count)),
                                "{here}, but the dimensions give {count} (seed formula); the \
                                 description must call the claim inconsistent and give {}",
                                thousands(count)
                            );
                        }
                    }
                    Kind::TokS => {
                        let known = MISATTRIBUTED_SPEEDS.iter().position(|(n, line, speed, _)| {
                            *n == name && *line == mention.at && *speed == fact.text
                        });
                        match known {
                            Some(k) => {
                                misattributed_seen.insert(k);
                            }
                            None => {
                                speeds.insert(fact.text.clone());
                            }
                        }
                    }
                }
            }
        }
        let listed: BTreeSet<String> = std::iter::once(row.seed_tok_s.clone())
            .filter(|s| !s.is_empty())
            .chain(row.other_tok_s.iter().cloned())
            .collect();
        assert_eq!(
            listed, speeds,
            "{name}: seed_tok_s and other_tok_s must be the speeds the logs state"
        );
        assert!(
            !row.seed_tok_s.is_empty() || row.other_tok_s.is_empty(),
            "{name}: other_tok_s without seed_tok_s"
        );
        // The table keeps the most precise claim (an exact count before a rounded one).
        let best = claims
            .iter()
            .min_by_key(|c| claimed_count(c).1)
            .map(|c| c.replace(',', ""));
        assert_eq!(
            (!row.claimed_params.is_empty()).then(|| row.claimed_params.clone()),
            best,
            "{name}: claimed_params must be the logs' most precise figure"
        );
    }
    for (k, entry) in MISATTRIBUTED_SPEEDS.iter().enumerate() {
        assert!(
            misattributed_seen.contains(&k),
            "MISATTRIBUTED_SPEEDS entry {entry:?} no longer occurs in the logs"
        );
    }
}

/// The head size a seed variant gets: none where `heads` divides `dim`, else the seed's own
/// `head_dim = dim // n_heads`, at least 1 (configs/README.md).
fn expected_head_size(dim: usize, heads: usize) -> Option<usize> {
    (!dim.is_multiple_of(heads)).then(|| (dim / heads).max(1))
}

/// Every seed config equals its row of `configs/seed-models.csv` (dimensions, head size,
/// families, stated count); every row has a config, is an alias of one, or is listed with its
/// reason in `configs/README.md`.
#[test]
fn configs_match_the_table() {
    let rows = read_table();
    let readme =
        std::fs::read_to_string(configs_dir().join("README.md")).expect("configs/README.md");
    let (_, exceptions) = readme
        .split_once("## Seed models without a config")
        .expect("configs/README.md has a '## Seed models without a config' section");
    let configs = all().expect("configs/ reads");
    let by_name: BTreeMap<&str, &NamedConfig> =
        configs.iter().map(|c| (c.name.as_str(), c)).collect();
    for row in &rows {
        let name = row.name.as_str();
        assert_eq!(
            row.head_size,
            expected_head_size(row.dim, row.heads),
            "{name}: head_size"
        );
        // An alias has the families of the config it loads.
        let loads = if row.config.is_empty() {
            name
        } else {
            &row.config
        };
        assert_eq!(
            row.families,
            super::tests::families_by_name(loads),
            "{name}: families"
        );
        if row.config.is_empty() {
            assert!(
                exceptions.contains(&format!("`{name}`")),
                "{name} has no config and is not listed under 'Seed models without a config' in configs/README.md"
            );
            continue;
        }
        if row.config != row.name {
            assert!(
                ALIASES.contains(&(name, row.config.as_str())),
                "{name}: loads {} but is not in ALIASES",
                row.config
            );
            assert_eq!(read(name).expect("an alias reads").name, row.config);
            assert!(
                rows.iter()
                    .any(|r| r.name == row.config && r.config == row.config),
                "{name}: alias target {} has no row of its own",
                row.config
            );
            continue;
        }
        let config = by_name
            .get(name)
            .unwrap_or_else(|| panic!("configs/{name}.json is missing"));
        let m = &config.model;
        assert_eq!(
            (
                m.vocab_size,
                m.dim,
                m.hidden_dim,
                m.n_layers,
                m.n_heads,
                m.n_kv_heads
            ),
            (row.vocab, row.dim, row.hidden, row.layers, row.heads, row.heads),
            "{name}: vocab, dim, hidden, layers, heads, kv heads"
        );
        assert_eq!(m.head_size, row.head_size, "{name}: head_size");
        // Above 256 ids the seed's tokenizer added bigrams, trigrams and words; BPE stands in.
        let tokenizer = if row.vocab > 256 {
            TokenizerKind::Bpe
        } else {
            TokenizerKind::Char
        };
        assert_eq!(
            (m.ffn, m.tied_embeddings, m.tokenizer),
            (Ffn::Plain, true, tokenizer),
            "{name}: the seed's block (plain FFN, tied embedding; characters up to 256 ids, else BPE)"
        );
        assert_eq!(config.families, row.families, "{name}: families");
        let claimed = (!row.claimed_params.is_empty()).then(|| claimed_count(&row.claimed_params));
        assert_eq!(
            config.seed_params,
            claimed.map(|c| c.0),
            "{name}: seed_params must be the log's figure {}",
            row.claimed_params
        );
        if let Some((stated, rounding)) = claimed {
            let counted = m.seed_param_count();
            assert!(
                counted.abs_diff(stated) <= rounding
                    || config.description.contains("inconsistent in the log"),
                "{name}: seed formula {counted}, logs {} (±{rounding}), and the description does not call it inconsistent",
                row.claimed_params
            );
        }
        // Configs whose attention is not dim wide load for listing, not for training yet.
        if m.q_dim() == m.dim {
            load(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        } else {
            let err = format!("{:#}", load(name).unwrap_err());
            assert!(err.contains("do not support that yet"), "{name}: {err}");
        }
    }
    let rows_configs: BTreeSet<&str> = rows.iter().map(|r| r.config.as_str()).collect();
    for config in &configs {
        assert!(
            rows_configs.contains(config.name.as_str()) || OURS.contains(&config.name.as_str()),
            "configs/{}.json is neither a seed model of {TABLE} nor one of ours",
            config.name
        );
    }
}
