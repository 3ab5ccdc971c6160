//! The integer forward pass against the float reference on random models of several shapes.

mod support;

use starmind_engine::format::{write_model, FfnKind, Quant};
use starmind_engine::quantize::quantize_model;
use starmind_engine::reference::FloatSession;
use starmind_engine::{Model, Session};
use support::{config, random_model, Rng};

/// Runs `steps` random tokens through both passes; returns (max |logit error|, logit std,
/// argmax agreement).
fn compare(cfg: starmind_engine::Config, quant: Quant, seed: u64, steps: usize) -> (f64, f64, f64) {
    let float = random_model(cfg, seed);
    let file = write_model(&quantize_model(&float, quant, 32)).expect("write");
    let model = Model::parse(&file).expect("parse");
    assert_eq!(
        model.config().head_size,
        cfg.head_size,
        "the header's head_size"
    );
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), cfg.seq_len)];
    let mut session = Session::new(&model, cfg.seq_len, &mut arena).expect("session");
    let mut reference = FloatSession::new(&float);
    let mut rng = Rng(seed + 99);
    let (mut max_err, mut var, mut agree, mut n) = (0f64, 0f64, 0usize, 0usize);
    for _ in 0..steps.min(cfg.seq_len) {
        let token = (rng.next_u64() % cfg.vocab_size as u64) as u32;
        let want = reference.feed(token);
        let got: Vec<f64> = session
            .feed(token)
            .unwrap()
            .iter()
            .map(|&l| l as f64 / 65536.0)
            .collect();
        for (g, w) in got.iter().zip(&want) {
            max_err = max_err.max((g - w).abs());
            var += w * w;
        }
        let argmax = |v: &[f64]| {
            v.iter()
                .enumerate()
                .fold((0, f64::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
                .0
        };
        agree += (argmax(&got) == argmax(&want)) as usize;
        n += 1;
    }
    (
        max_err,
        (var / (n * cfg.vocab_size) as f64).sqrt(),
        agree as f64 / n as f64,
    )
}

fn with_head_size(mut cfg: starmind_engine::Config, head_size: usize) -> starmind_engine::Config {
    cfg.head_size = Some(head_size);
    cfg
}

#[test]
fn int8_matches_float_reference() {
    let shapes = [
        config(64, 8, 32, 1, 2, 2, 64, FfnKind::Plain, true), // story-1k
        config(128, 16, 64, 2, 4, 4, 64, FfnKind::Plain, true), // chat-8k
        config(144, 18, 72, 2, 3, 3, 64, FfnKind::Plain, true), // chat-10k
        config(96, 64, 172, 3, 8, 4, 48, FfnKind::Swiglu, false), // stories260K-like, GQA
        config(32, 1, 64, 1, 1, 1, 16, FfnKind::Plain, true), // head size 1
        config(40, 6, 20, 1, 2, 1, 16, FfnKind::Swiglu, true), // odd head size 3
        // Explicit head sizes: 3 heads of 2 on 8 dims (story-1k-fibonacci), 32 heads of 1 on
        // 16 (story-heads-32), 8 query / 4 kv heads of 6 on 12 (wider than dim, GQA).
        with_head_size(config(55, 8, 21, 1, 3, 3, 32, FfnKind::Plain, true), 2),
        with_head_size(config(64, 16, 64, 1, 32, 32, 32, FfnKind::Plain, true), 1),
        with_head_size(config(48, 12, 24, 2, 8, 4, 24, FfnKind::Swiglu, false), 6),
    ];
    for (i, cfg) in shapes.iter().enumerate() {
        let (max_err, std, agree) = compare(*cfg, Quant::Int8, 1 + i as u64, 48);
        eprintln!(
            "shape {i}: max |Δlogit| {max_err:.4}, logit std {std:.3}, argmax agreement {agree:.3}"
        );
        assert!(
            max_err < 0.1 * std.max(1.0),
            "shape {i}: max error {max_err} vs std {std}"
        );
        assert!(agree >= 0.85, "shape {i}: agreement {agree}");
    }
}

#[test]
fn int4_is_close_to_float_reference() {
    let cfg = config(128, 64, 128, 2, 4, 4, 32, FfnKind::Swiglu, true);
    let (max_err, std, agree) = compare(cfg, Quant::Int4, 5, 32);
    eprintln!("int4: max |Δlogit| {max_err:.4}, logit std {std:.3}, argmax agreement {agree:.3}");
    assert!(agree >= 0.7, "agreement {agree}");
}

#[test]
fn context_and_token_errors_are_typed() {
    let cfg = config(64, 8, 32, 1, 2, 2, 4, FfnKind::Plain, true);
    let file = write_model(&quantize_model(&random_model(cfg, 3), Quant::Int8, 0)).unwrap();
    let model = Model::parse(&file).unwrap();
    let mut small = vec![0u8; 10];
    assert!(matches!(
        Session::new(&model, 4, &mut small),
        Err(starmind_engine::EngineError::ArenaTooSmall { .. })
    ));
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), 4)];
    assert!(Session::new(&model, 5, &mut arena).is_err());
    let mut s = Session::new(&model, 4, &mut arena).unwrap();
    assert_eq!(
        s.feed(64).unwrap_err(),
        starmind_engine::EngineError::TokenOutOfRange(64)
    );
    s.prefill(&[1, 2, 3, 4]).unwrap();
    assert_eq!(
        s.feed(1).unwrap_err(),
        starmind_engine::EngineError::ContextFull
    );
    assert!(s.prefill(&[]).is_err());
}

#[test]
fn a_model_without_tokenizer_runs_on_ids_and_refuses_text() {
    use starmind_engine::format::{TokenizerKind, NO_TOKEN};
    use starmind_engine::EngineError;
    let mut cfg = config(32, 8, 16, 1, 2, 1, 6, FfnKind::Swiglu, true);
    cfg.tokenizer = TokenizerKind::None;
    let mut float = random_model(cfg, 5);
    // llama2.c's convention: id 1 starts (and ends) a story; no token has text.
    float.config.eot_id = 1;
    float.config.unk_id = NO_TOKEN;
    float.token_bytes = vec![Vec::new(); 32];
    let file = write_model(&quantize_model(&float, Quant::Int8, 0)).unwrap();
    let model = Model::parse(&file).unwrap();
    assert_eq!(model.config().tokenizer, TokenizerKind::None);
    assert_eq!(model.eot_id(), 1);
    let mut ids = [0u32; 8];
    assert_eq!(model.encode(b"", &mut ids), Ok(0));
    for text in [&b"Once"[..], b"<|endoftext|>", b"\xff"] {
        assert_eq!(model.encode(text, &mut ids), Err(EngineError::NoTokenizer));
    }
    let mut arena = vec![0u8; Model::arena_bytes(&model.config(), 6)];
    let mut session = Session::new(&model, 6, &mut arena).unwrap();
    let logits = session.prefill(&[1, 5, 7]).unwrap();
    assert_eq!(logits.len(), 32);

    // A merge table makes no sense without a tokenizer: the writer's re-parse refuses it.
    float.merges = vec![(2, 3, 4)];
    assert!(write_model(&quantize_model(&float, Quant::Int8, 0)).is_err());
}

/// A copy of part of the file (the firmware's weights in SRAM) is read for the sections wholly
/// inside it, gives the same logits as the file alone, and a copy that is not the file's bytes
/// is refused.
#[test]
fn a_copy_of_part_of_the_file_is_read_and_changes_nothing() {
    let cfg = config(32, 16, 64, 3, 2, 1, 32, FfnKind::Swiglu, true);
    let float = random_model(cfg, 7);
    let file = write_model(&quantize_model(&float, Quant::Int8, 32)).expect("write");
    let model = Model::parse(&file).expect("parse");
    let room = file.len() / 3;
    let range = model.copy_range(room);
    assert!(
        !range.is_empty() && range.len() <= room,
        "{range:?} of {room}"
    );
    let copy = file[range.clone()].to_vec();
    let copied = model.with_copy(range.start, &copy);
    assert_eq!(copied.copied_bytes(), range.len());
    let mut wrong = copy.clone();
    wrong[range.len() / 2] ^= 1;
    assert_eq!(model.with_copy(range.start, &wrong).copied_bytes(), 0);
    // Some layer's weights are read from the copy, and none from outside it.
    let in_copy = |w: &[u8]| copy.as_ptr_range().contains(&w.as_ptr());
    let read_from_copy = (0..cfg.n_layers)
        .flat_map(|l| {
            let w = copied.layer(l);
            [
                w.wq.weights,
                w.wk.weights,
                w.w1.weights,
                w.w2.weights,
                w.w3.weights,
            ]
        })
        .filter(|w| in_copy(w))
        .count();
    assert!(read_from_copy > 0);
    assert!((0..cfg.n_layers).all(|l| !in_copy(model.layer(l).wq.weights)));
    let logits = |m: &Model| -> Vec<i32> {
        let mut arena = vec![0u8; Model::arena_bytes(&m.config(), cfg.seq_len)];
        let mut session = Session::new(m, cfg.seq_len, &mut arena).expect("session");
        (0..20u32)
            .flat_map(|t| {
                session
                    .feed((t * 5) % cfg.vocab_size as u32)
                    .expect("feed")
                    .to_vec()
            })
            .collect()
    };
    assert_eq!(logits(&copied), logits(&model));
}
