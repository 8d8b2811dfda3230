//! The GPT-2 judge: logits against `transformers` on the committed fixture (f32 with the
//! `transformer.` prefix, f16 without; bench/gpt2_fixture.py), bf16 and an untied head, files
//! that do not fit, and genppl's scores against a direct computation on a GPT-2 of the real
//! vocabulary size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime::genppl::{Judge, evaluate};
use mdm_prime::gpt2::Gpt2;
use mdm_prime_core::checkpoint::FloatTensors;
use mdm_prime_core::metrics::genppl::{SampleLine, Source};
use mdm_prime_core::{Tokenizer, TokenizerKind};
use safetensors::tensor::{Dtype, TensorView};

use crate::common::{temp_dir, values};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/gpt2")
}

struct Expect {
    ids: Vec<Vec<u32>>,
    logits: Vec<f32>,
    logits_f16: Vec<f32>,
}

fn expect() -> Expect {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expect.json")).unwrap()).unwrap();
    let flat = |key: &str| -> Vec<f32> {
        let mut out = Vec::new();
        for seq in v[key].as_array().unwrap() {
            for row in seq.as_array().unwrap() {
                out.extend(
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32),
                );
            }
        }
        out
    };
    let ids = v["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    Expect {
        ids,
        logits: flat("logits"),
        logits_f16: flat("logits_f16"),
    }
}

fn ids_tensor(rows: &[Vec<u32>]) -> Tensor<2, Int> {
    let v: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    Tensor::from_data(
        TensorData::new(v, [rows.len(), rows[0].len()]),
        &Device::default(),
    )
}

fn logits_of(dir: &Path, ids: &[Vec<u32>]) -> Vec<f32> {
    let model = Gpt2::load(dir, &Device::default()).unwrap();
    model.logits(ids_tensor(ids)).try_into_vec_as().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A folder with the fixture's config.json and `weights` as model.safetensors.
fn judge_dir(name: &str, weights: &[u8], config: Option<&str>) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    let config = match config {
        Some(c) => c.to_string(),
        None => std::fs::read_to_string(fixture().join("config.json")).unwrap(),
    };
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

/// The fixture's f32 tensors, by name as stored.
fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let path = fixture().join("model.safetensors");
    let file = FloatTensors::parse(&path, std::fs::read(&path).unwrap()).unwrap();
    file.shapes()
        .unwrap()
        .into_iter()
        .map(|(n, s)| {
            let v = file.f32(&n).unwrap();
            (n, s, v)
        })
        .collect()
}

/// Safetensors bytes of `tensors` in `dtype` (F32 or BF16, rounded to nearest even).
fn write(tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: Dtype) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::BF16 => v.iter().flat_map(|x| bf16(*x).to_le_bytes()).collect(),
            _ => unreachable!(),
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Round to the nearest bfloat16 (ties to even), as bits.
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

#[test]
fn gpt2_logits_match_transformers() {
    let e = expect();
    // f32, names with the `transformer.` prefix, no lm_head (tied): as GPT2LMHeadModel saves.
    let got = logits_of(&fixture(), &e.ids);
    let d32 = max_abs_diff(&got, &e.logits);
    // f16, names without the prefix: the layout of the released gpt2 files.
    let f16 = std::fs::read(fixture().join("model-f16.safetensors")).unwrap();
    let dir = judge_dir("gpt2-f16", &f16, None);
    let got16 = logits_of(&dir, &e.ids);
    let d16 = max_abs_diff(&got16, &e.logits_f16);
    eprintln!("GPT-2 fixture: max |Δ logits| f32 {d32:.3e}, f16 {d16:.3e}");
    assert!(d32 < 1e-4, "f32: max |Δ| = {d32}");
    assert!(d16 < 1e-4, "f16: max |Δ| = {d16}");
    // The two differ by the f16 rounding of the weights, so the comparison can fail.
    assert!(max_abs_diff(&e.logits, &e.logits_f16) > 1e-3);
    // Causal: a prefix gives the same rows.
    let prefix: Vec<Vec<u32>> = e.ids.iter().map(|r| r[..5].to_vec()).collect();
    let short = logits_of(&fixture(), &prefix);
    let v = 97;
    for (b, row) in short.chunks(5 * v).enumerate() {
        let full = &got[b * 8 * v..b * 8 * v + 5 * v];
        assert!(max_abs_diff(row, full) < 1e-5, "sequence {b}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bf16_weights_and_an_untied_head_load() {
    let e = expect();
    let tensors = fixture_tensors();
    // bf16 against the same rounded values written as f32: the same numbers in, the same out.
    let rounded: Vec<_> = tensors
        .iter()
        .map(|(n, s, v)| {
            let r = v
                .iter()
                .map(|&x| f32::from_bits(u32::from(bf16(x)) << 16))
                .collect();
            (n.clone(), s.clone(), r)
        })
        .collect();
    let a = judge_dir("gpt2-bf16", &write(&tensors, Dtype::BF16), None);
    let b = judge_dir("gpt2-bf16-as-f32", &write(&rounded, Dtype::F32), None);
    let (la, lb) = (logits_of(&a, &e.ids), logits_of(&b, &e.ids));
    assert_eq!(la, lb);
    assert!(
        max_abs_diff(&la, &e.logits) > 1e-3,
        "bf16 rounding must show"
    );
    // An lm_head.weight of its own is used instead of wte: 2·wte doubles the logits.
    let mut untied = tensors.clone();
    let (_, s, wte) = tensors
        .iter()
        .find(|(n, ..)| n == "transformer.wte.weight")
        .unwrap();
    untied.push((
        "lm_head.weight".into(),
        s.clone(),
        wte.iter().map(|x| 2.0 * x).collect(),
    ));
    let c = judge_dir("gpt2-untied", &write(&untied, Dtype::F32), None);
    let doubled: Vec<f32> = e.logits.iter().map(|x| 2.0 * x).collect();
    assert!(max_abs_diff(&logits_of(&c, &e.ids), &doubled) < 2e-4);
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn load_err(dir: &Path) -> String {
    match Gpt2::load(dir, &Device::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn files_that_do_not_fit_are_clear_errors() {
    let tensors = fixture_tensors();
    let good = write(&tensors, Dtype::F32);
    let config = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let mut cases: Vec<(PathBuf, Vec<&str>)> = Vec::new();
    // No config.json.
    let d = judge_dir("gpt2-noconfig", &good, None);
    std::fs::remove_file(d.join("config.json")).unwrap();
    cases.push((d, vec!["config.json", "not found", "save_pretrained"]));
    // A config with a third layer: its tensors are missing.
    let three = config.replace("\"n_layer\": 2", "\"n_layer\": 3");
    assert_ne!(three, config);
    let d = judge_dir("gpt2-layers", &good, Some(&three));
    cases.push((
        d,
        vec![
            "missing transformer.h.2.ln_1.weight [16]",
            "same model",
            "n_layer = 3",
        ],
    ));
    // Another vocabulary size: wte's shape differs.
    let vocab = config.replace("\"vocab_size\": 97", "\"vocab_size\": 98");
    let d = judge_dir("gpt2-vocab", &good, Some(&vocab));
    cases.push((
        d,
        vec!["transformer.wte.weight is [97, 16] in the file but [98, 16]"],
    ));
    // Another activation.
    let relu = config.replace("\"gelu_new\"", "\"relu\"");
    let d = judge_dir("gpt2-relu", &good, Some(&relu));
    cases.push((d, vec!["config.json", "`activation_function` is \"relu\""]));
    // A weight stored as integers; an unknown tensor; a truncated file.
    let ids = 3i64.to_le_bytes().repeat(16);
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    let f32s: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    for ((n, s, _), b) in tensors.iter().zip(&f32s) {
        if n == "transformer.ln_f.bias" {
            views.push((
                n.clone(),
                TensorView::new(Dtype::I64, s.clone(), &ids).unwrap(),
            ));
        } else {
            views.push((
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            ));
        }
    }
    let d = judge_dir(
        "gpt2-int",
        &safetensors::serialize(views, None).unwrap(),
        None,
    );
    cases.push((
        d,
        vec!["model.safetensors", "tensor transformer.ln_f.bias is I64"],
    ));
    let mut extra = tensors.clone();
    extra.push((
        "transformer.h.0.attn.rotary.inv_freq".into(),
        vec![4],
        vec![0.0; 4],
    ));
    let d = judge_dir("gpt2-extra", &write(&extra, Dtype::F32), None);
    cases.push((d, vec!["unexpected transformer.h.0.attn.rotary.inv_freq"]));
    let d = judge_dir("gpt2-truncated", &good[..good.len() / 2], None);
    cases.push((
        d,
        vec!["model.safetensors", "not a readable safetensors file"],
    ));
    for (dir, needles) in cases {
        let e = load_err(&dir);
        for n in needles {
            assert!(e.contains(n), "{}: no {n:?} in {e}", dir.display());
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    // The old causal-mask buffers of the released files are not weights and are skipped.
    let mut buffers = tensors.clone();
    buffers.push((
        "transformer.h.1.attn.bias".into(),
        vec![1, 1, 16, 16],
        vec![1.0; 256],
    ));
    let d = judge_dir("gpt2-buffers", &write(&buffers, Dtype::F32), None);
    assert!(Gpt2::load(&d, &Device::default()).is_ok());
    let _ = std::fs::remove_dir_all(d);
}

/// A random GPT-2 with the GPT-2 vocabulary (V = 50257), n_embd 8, one layer, 12 positions:
/// the sizes of the real vocabulary path at a test's cost.
fn random_gpt2_vocab(name: &str) -> PathBuf {
    let config = r#"{"model_type": "gpt2", "vocab_size": 50257, "n_positions": 12, "n_embd": 8,
        "n_layer": 1, "n_head": 2, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
        "bos_token_id": 50256, "eos_token_id": 50256}"#;
    let c = mdm_prime_core::gpt2::Gpt2Config::parse(Path::new("config.json"), config.as_bytes())
        .unwrap();
    let tensors: Vec<_> = c
        .shapes()
        .into_iter()
        .enumerate()
        .map(|(k, (n, s))| {
            let len = s.iter().product();
            (n, s, values(len, 100 + k as u64, 0.5))
        })
        .collect();
    judge_dir(name, &write(&tensors, Dtype::F32), Some(config))
}

/// `log softmax(z)[t]` in f64.
fn log_prob(z: &[f32], t: u32) -> f64 {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = m + z.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    z[t as usize] as f64 - lse
}

#[test]
fn genppl_on_the_gpt2_vocabulary_equals_a_direct_computation() {
    let dir = random_gpt2_vocab("gpt2-vocab-judge");
    let device = Device::default();
    let judge = Judge::load(&dir, &device).unwrap();
    assert_eq!(judge.context(), 12);
    let texts = [
        "Call me Ishmael. Some years ago, never mind how long precisely, having little money",
        "the sea<|endoftext|> and the whale",
        "Hi",
    ];
    let samples: Vec<SampleLine> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| SampleLine {
            line: i + 1,
            text: Some(t.to_string()),
            tokens: Some(vec![1, 2, 3]),
            tokenizer: Some("gpt2".into()),
            truncated: true,
        })
        .collect();
    let report = evaluate(
        &judge,
        Path::new("s.jsonl"),
        &samples,
        2,
        &device,
        &mut |_, _| {},
    )
    .unwrap();
    // Directly: each text in GPT-2 tokens after BOS 50256, windows of 12 sharing one token,
    // every token but EOS scored from the logits of its window.
    let tok = Tokenizer::new(TokenizerKind::Gpt2).unwrap();
    let model = Gpt2::load(&dir, &device).unwrap();
    let mut total = (0.0f64, 0usize);
    for (s, text) in report.per_sample.iter().zip(texts) {
        let mut seq = vec![50256u32];
        seq.extend(tok.encode_with_eos(text).unwrap());
        let (mut nll, mut n) = (0.0f64, 0usize);
        let mut start = 0;
        while start + 1 < seq.len() {
            let end = (start + 12).min(seq.len());
            let z: Vec<f32> = model
                .logits(ids_tensor(&[seq[start..end].to_vec()]))
                .try_into_vec_as()
                .unwrap();
            for j in start + 1..end {
                if seq[j] != 50256 {
                    nll -= log_prob(&z[(j - start - 1) * 50257..(j - start) * 50257], seq[j]);
                    n += 1;
                }
            }
            start += 11;
        }
        assert_eq!((s.source, s.tokens), (Source::Text, n));
        assert!(
            (s.nll - nll).abs() < 1e-4 * nll.max(1.0),
            "{} vs {nll}",
            s.nll
        );
        total.0 += nll;
        total.1 += n;
    }
    // The first text is longer than one window; the second has an EOS in it.
    assert!(report.per_sample[0].tokens > 11);
    assert_eq!(report.scored_tokens as usize, total.1);
    assert!((report.nll_per_token - total.0 / total.1 as f64).abs() < 1e-5);
    assert!((report.gen_ppl - (total.0 / total.1 as f64).exp()).abs() < 1e-4 * report.gen_ppl);
    // The head in chunks of 5 rows (of 2 × 11) gives the same numbers as in one piece.
    let ids: Vec<u32> = (0..24u32).map(|k| k * 7919 % 50257).collect();
    let t = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| x as i64).collect(), [2, 12]),
        &device,
    );
    let whole: Vec<f32> = judge.window_nll(t.clone(), &ids).try_into_vec_as().unwrap();
    let parts: Vec<f32> = judge
        .window_nll_in_chunks(t, &ids, 5)
        .try_into_vec_as()
        .unwrap();
    assert_eq!(whole.len(), 22);
    assert!(
        max_abs_diff(&whole, &parts) < 1e-5,
        "{whole:?} vs {parts:?}"
    );
    // A judge whose vocabulary is smaller than GPT-2's is refused.
    let e = Judge::load(&fixture(), &device).err().unwrap().to_string();
    assert!(
        e.contains("`vocab_size` = 97") && e.contains("does not match"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_fixture_holds_each_weight_once_in_conv1d_layout() {
    // Every weight of its config once, projections stored [in, out] (HF Conv1D).
    let names: HashMap<String, Vec<usize>> = fixture_tensors()
        .into_iter()
        .map(|(n, s, _)| (n, s))
        .collect();
    assert_eq!(names.len(), 2 + 2 * 12 + 2);
    assert_eq!(names["transformer.h.1.mlp.c_fc.weight"], vec![16, 64]);
}
