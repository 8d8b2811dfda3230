//! The autoregressive baseline (`[model] kind = "ar"`): the causal mask holds, the NLL is the
//! brute-force sum of log-softmaxes over prefixes, training lowers the loss, and the sampler is
//! greedy as the temperature goes to 0, keeps to the nucleus and draws from p_θ(x_i | x_{<i}).

use burn::module::Module;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use mdm_prime::checkpoint::RunDir;
use mdm_prime::eval::{EvalSettings, evaluate, mean_stderr};
use mdm_prime::model::{Ar, Denoiser, Network};
use mdm_prime::params::map_params;
use mdm_prime::sampler::{CacheMode, SampleSettings, Template, sample};
use mdm_prime::subtoken::PrimeTables;
use mdm_prime::train::Trainer;
use mdm_prime_core::config::{DitConfig, ModelConfig, RunConfig};
use mdm_prime_core::sampling::NoisePrecision;

use crate::common::{rng_lock, temp_dir, tiny_config, tiny_data};

fn ar_config(extra: &[&str]) -> RunConfig {
    let mut o = vec!["model.kind=ar", "prime.ell=1", "model.dropout=0.0"];
    o.extend_from_slice(extra);
    tiny_config(&o)
}

/// A tiny AR model with every parameter perturbed (the head starts at zero), so its predictions
/// depend on the input; the perturbation is small enough that p_θ stays spread over many tokens
/// (logits of order 1).
fn random_ar(cfg: &RunConfig) -> (Ar, PrimeTables) {
    let _guard = rng_lock(); // the draws below use the process-wide generator
    let d = Device::default();
    d.seed(17);
    let codec = cfg.codec().unwrap();
    let model = Ar::init(cfg, &codec, &d).unwrap();
    let model = map_params(model, &mut |_, t| {
        let n = t.dims()[0];
        Some(t + Tensor::<1>::random([n], Distribution::Normal(0.0, 0.1), &d))
    })
    .valid();
    (model, PrimeTables::new(&codec, &d))
}

fn tokens(rows: &[Vec<u32>]) -> Tensor<2, Int> {
    let v: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    Tensor::from_data(
        TensorData::new(v, [rows.len(), rows[0].len()]),
        &Device::default(),
    )
}

/// Logits of `p_θ(· | prefix)` by running the network on the prefix alone: inputs
/// `[BOS, prefix…]`, the last row.
fn logits_after(model: &Ar, prefix: &[u32]) -> Vec<f64> {
    let mut inputs = vec![model.bos() as i64];
    inputs.extend(prefix.iter().map(|&x| x as i64));
    let n = inputs.len();
    let inputs =
        Tensor::<3, Int>::from_data(TensorData::new(inputs, [1, n, 1]), &Device::default());
    let h = model.features(inputs, &[0.0]).narrow(1, n - 1, 1);
    let z: Vec<f32> = model.head_logits(h).try_into_vec_as().unwrap();
    z.iter().map(|&x| x as f64).collect()
}

/// `log softmax(z)` in f64.
fn log_softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
    z.iter().map(|&x| x - lse).collect()
}

fn argmax(z: &[f64]) -> u32 {
    (0..z.len()).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap() as u32
}

fn some_rows(b: usize, l: usize, seed: u32) -> Vec<Vec<u32>> {
    (0..b)
        .map(|r| {
            (0..l)
                .map(|i| (i as u32 * 73 + r as u32 * 31 + seed * 7) % 256)
                .collect()
        })
        .collect()
}

#[test]
fn changing_token_t_plus_1_leaves_the_logits_at_t_and_before_unchanged() {
    let cfg = ar_config(&[]);
    let (model, _) = random_ar(&cfg);
    let l = cfg.data.seq_len;
    let rows = some_rows(2, l, 1);
    let base: Vec<f32> = model
        .next_token_logits(tokens(&rows))
        .try_into_vec_as()
        .unwrap();
    let v = base.len() / (2 * l);
    for t in [0usize, 5, l - 2] {
        let mut changed = rows.clone();
        for r in &mut changed {
            r[t + 1] = (r[t + 1] + 100) % 256;
        }
        let got: Vec<f32> = model
            .next_token_logits(tokens(&changed))
            .try_into_vec_as()
            .unwrap();
        for b in 0..2 {
            let row = |x: &[f32], i: usize| x[(b * l + i) * v..(b * l + i + 1) * v].to_vec();
            // Logits at i score x_i from x_{<i}: rows 0..=t+1 never see x_{t+1}.
            for i in 0..=t + 1 {
                assert_eq!(row(&got, i), row(&base, i), "t = {t}: row {i} moved");
            }
            if t + 2 < l {
                let diff: f32 = row(&got, t + 2)
                    .iter()
                    .zip(row(&base, t + 2))
                    .map(|(a, b)| (a - b).abs())
                    .sum();
                assert!(diff > 1e-3, "t = {t}: row {} ignores x_{}", t + 2, t + 1);
            }
        }
    }
}

#[test]
fn nll_is_the_brute_force_sum_of_log_softmax_over_prefixes() {
    let cfg = ar_config(&[]);
    let (model, tables) = random_ar(&cfg);
    let l = cfg.data.seq_len;
    let rows = some_rows(3, l, 2);
    // The oracle: the network on each prefix alone, log-softmax and the target's entry in f64.
    let brute: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            (0..l)
                .map(|i| -log_softmax(&logits_after(&model, &r[..i]))[r[i] as usize])
                .collect()
        })
        .collect();
    let host: Vec<u32> = rows.iter().flatten().copied().collect();
    let got: Vec<f32> = model
        .token_nll(tokens(&rows), &host)
        .try_into_vec_as()
        .unwrap();
    for (k, (g, w)) in got.iter().zip(brute.iter().flatten()).enumerate() {
        assert!(
            (*g as f64 - w).abs() < 1e-5 * w.max(1.0),
            "token {k}: {g} vs {w}"
        );
    }
    // The evaluator reports it as both columns, with one draw and the per-sequence s.e.
    let codec = cfg.codec().unwrap();
    let blocks: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let settings = EvalSettings {
        time_draws: 4,
        batch_size: 2,
        carry_over: true,
        sampling_eps: 1e-3,
        seed: 0,
    };
    let net = Network::Ar(model);
    let report = evaluate(
        &net,
        &tables,
        &codec,
        &cfg.schedule,
        &blocks,
        &settings,
        &Device::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let per_seq: Vec<f64> = brute
        .iter()
        .map(|r| r.iter().sum::<f64>() / l as f64)
        .collect();
    let (mean, se) = mean_stderr(&per_seq);
    assert_eq!(report.time_draws, 1);
    assert_eq!(report.tokens, (3 * l) as u64);
    assert!(
        (report.elbo_nats_per_token - mean).abs() < 1e-5,
        "{report:?} vs {mean}"
    );
    assert!((report.paper_objective_nats_per_token - mean).abs() < 1e-5);
    assert!(
        (report.elbo_stderr - se).abs() < 1e-5,
        "{} vs {se}",
        report.elbo_stderr
    );
    assert!((report.elbo_ppl - mean.exp()).abs() < 1e-4 * mean.exp());
}

#[test]
fn a_few_training_steps_lower_the_loss() {
    let _guard = rng_lock();
    let cfg = ar_config(&[
        "train.steps=30",
        "train.warmup_steps=3",
        "train.ema_decay=0",
    ]);
    let data = tiny_data(&cfg);
    let dir = temp_dir("ar-train");
    let mut tr = Trainer::open(&cfg, RunDir::new(&dir), false, &Device::default()).unwrap();
    assert_eq!(tr.model.kind(), "ar");
    let before = tr.validate(&data, 8).unwrap();
    // The zero-initialised head predicts the uniform distribution over V = 256 bytes.
    assert!(
        (before.elbo_nats_per_token - 256f64.ln()).abs() < 1e-4,
        "{before:?}"
    );
    let losses: Vec<f64> = (0..30).map(|_| tr.step(&data).unwrap().0).collect();
    let after = tr.validate(&data, 8).unwrap();
    let (first, last) = (losses[0], losses[25..].iter().sum::<f64>() / 5.0);
    assert!((first - 256f64.ln()).abs() < 1e-3, "first loss {first}");
    assert!(last < first - 1.0, "losses {losses:?}");
    assert!(
        after.elbo_nats_per_token < before.elbo_nats_per_token - 1.0,
        "validation NLL {} → {}",
        before.elbo_nats_per_token,
        after.elbo_nats_per_token
    );
    assert_eq!(
        after.elbo_nats_per_token, after.paper_objective_nats_per_token,
        "exact NLL in both columns"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn settings(cfg: &RunConfig, temperature: f64, top_p: f64, batch: usize) -> SampleSettings {
    SampleSettings {
        steps: cfg.data.seq_len,
        seq_len: cfg.data.seq_len,
        temperature,
        top_p,
        seed: 5,
        precision: NoisePrecision::F64,
        carry_over: true,
        cache: CacheMode::Sequence,
        batch_size: batch,
    }
}

fn prompt_template(cfg: &RunConfig, prompt: &[u32]) -> Template {
    let codec = cfg.codec().unwrap();
    let mut t = Template::free(cfg.data.seq_len, 1);
    t.fix_tokens(&codec, 0, prompt).unwrap();
    t
}

#[test]
fn temperature_to_zero_and_a_tiny_nucleus_are_greedy_and_keep_the_prompt() {
    let cfg = ar_config(&[]);
    let (model, tables) = random_ar(&cfg);
    let l = cfg.data.seq_len;
    let prompt = [10u32, 104, 101];
    // The oracle: greedy decoding by hand, one prefix at a time.
    let mut greedy = prompt.to_vec();
    while greedy.len() < l {
        greedy.push(argmax(&logits_after(&model, &greedy)));
    }
    let template = prompt_template(&cfg, &prompt);
    let net = Network::Ar(model);
    for (temperature, top_p) in [(1e-6, 1.0), (1.0, 1e-9)] {
        let (samples, timing) = sample(
            &net,
            &tables,
            &cfg.schedule,
            &settings(&cfg, temperature, top_p, 2),
            &template,
            3,
            0,
            &Device::default(),
            &mut |_, _| {},
        )
        .unwrap();
        for s in &samples {
            assert_eq!(s.tokens, greedy, "T = {temperature}, p = {top_p}");
            assert_eq!((s.nfe, s.idle_steps, s.invalid_codes), (l - 3, 0, 0));
        }
        assert_eq!(timing.head_rows, 3 * (l - 3));
    }
}

#[test]
fn draws_follow_the_model_and_stay_inside_the_nucleus() {
    // The default trunk's sizes (`DitConfig::default()`, D = 256, 4 layers): at the tiny sizes
    // the perturbed model spreads its mass too thinly for the frequency checks below to have
    // power.
    let mut cfg = ar_config(&["data.seq_len=4"]);
    cfg.model = ModelConfig::Ar(DitConfig {
        dropout: 0.0,
        ..DitConfig::default()
    });
    let (model, tables) = random_ar(&cfg);
    let prompt = [72u32, 105, 33];
    // One free position: x₃ ~ p_θ(· | prompt), by hand.
    let lp = log_softmax(&logits_after(&model, &prompt));
    let p: Vec<f64> = lp.iter().map(|x| x.exp()).collect();
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    // The test has power only if these tokens are likely (here about 0.34, 0.05, 0.04).
    assert!(p[order[0]] > 0.1 && p[order[2]] > 0.01, "{:?}", &order[..3]);
    let template = prompt_template(&cfg, &prompt);
    let net = Network::Ar(model);
    let draw = |top_p: f64, n: usize| -> Vec<u32> {
        let (samples, _) = sample(
            &net,
            &tables,
            &cfg.schedule,
            &settings(&cfg, 1.0, top_p, 500),
            &template,
            n,
            0,
            &Device::default(),
            &mut |_, _| {},
        )
        .unwrap();
        samples.iter().map(|s| s.tokens[3]).collect()
    };
    // Temperature 1, no nucleus: the frequency of each of the three likeliest tokens is within
    // 4σ of its probability.
    let n = 2000;
    let xs = draw(1.0, n);
    for &x in &order[..3] {
        let f = xs.iter().filter(|&&y| y as usize == x).count() as f64 / n as f64;
        let sigma = (p[x] * (1.0 - p[x]) / n as f64).sqrt();
        assert!(
            (f - p[x]).abs() < 4.0 * sigma + 1e-9,
            "token {x}: {f} vs {}",
            p[x]
        );
    }
    // A nucleus holding exactly the three likeliest tokens: nothing else is ever drawn, and
    // more than one of them is.
    let top3: f64 = order[..3].iter().map(|&x| p[x]).sum();
    let xs = draw(top3 + 1e-9, 600);
    assert!(
        xs.iter().all(|&x| order[..3].contains(&(x as usize))),
        "{xs:?}"
    );
    let distinct: std::collections::HashSet<u32> = xs.iter().copied().collect();
    assert!(distinct.len() > 1, "{distinct:?}");
}

#[test]
fn a_token_fixed_after_a_free_one_is_refused() {
    let cfg = ar_config(&[]);
    let (model, tables) = random_ar(&cfg);
    let codec = cfg.codec().unwrap();
    let mut t = Template::free(cfg.data.seq_len, 1);
    t.fix_tokens(&codec, 0, &[10]).unwrap();
    t.fix_tokens(&codec, 5, &[65]).unwrap();
    let err = sample(
        &Network::Ar(model),
        &tables,
        &cfg.schedule,
        &settings(&cfg, 1.0, 1.0, 2),
        &t,
        1,
        0,
        &Device::default(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("prefix") && err.contains("token 5"), "{err}");
}
