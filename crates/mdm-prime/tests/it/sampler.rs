//! Sampler invariants (design §7.1): caching never changes results, fixed sub-tokens stay fixed,
//! carry-over never produces an invalid code, NFE follows the idle steps, ISR matches §10.1.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use mdm_prime::model::Dit;
use mdm_prime::params::map_params;
use mdm_prime::sampler::{CacheMode, Sample, SampleSettings, Template, sample};
use mdm_prime::subtoken::PrimeTables;
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::sampling::{NoisePrecision, isr_closed_form};

use crate::common::{rng_lock, tiny_config};

/// A tiny untrained model with every parameter perturbed, so its predictions depend on the input.
fn random_model(cfg: &RunConfig) -> (Dit, PrimeTables) {
    let _guard = rng_lock(); // the draws below use the process-wide generator
    let d = Device::default();
    d.seed(11); // the same model in every run
    let codec = cfg.codec().unwrap();
    let model = Dit::new(&cfg.model, &codec, &d);
    let model = map_params(model, &mut |_, t| {
        let n = t.dims()[0];
        Some(t + Tensor::<1>::random([n], Distribution::Normal(0.0, 0.3), &d))
    })
    .valid();
    (model, PrimeTables::new(&codec, &d))
}

fn settings(cfg: &RunConfig, steps: usize, cache: CacheMode, batch: usize) -> SampleSettings {
    SampleSettings {
        steps,
        seq_len: cfg.data.seq_len,
        temperature: 1.0,
        top_p: 1.0,
        seed: 3,
        precision: NoisePrecision::F64,
        carry_over: cfg.prime.carry_over,
        cache,
        batch_size: batch,
    }
}

fn run(
    cfg: &RunConfig,
    m: &(Dit, PrimeTables),
    s: &SampleSettings,
    t: &Template,
    n: usize,
) -> Vec<Sample> {
    sample(
        &m.0,
        &m.1,
        &cfg.schedule,
        s,
        t,
        n,
        0,
        &Device::default(),
        &mut |_, _| {},
    )
    .unwrap()
    .0
}

#[test]
fn caching_and_batching_never_change_the_output() {
    let cfg = tiny_config(&[]);
    let m = random_model(&cfg);
    let free = Template::free(cfg.data.seq_len, 2);
    // T = 64 > L·ℓ / few: many idle steps, so the cache is really used.
    let base = run(&cfg, &m, &settings(&cfg, 64, CacheMode::Off, 5), &free, 5);
    for (cache, batch) in [
        (CacheMode::Sequence, 5),
        (CacheMode::Batch, 5),
        (CacheMode::Sequence, 2),
    ] {
        let other = run(&cfg, &m, &settings(&cfg, 64, cache, batch), &free, 5);
        for (a, b) in base.iter().zip(&other) {
            assert_eq!(
                a.tokens, b.tokens,
                "{cache:?} batch {batch} changed a sample"
            );
            assert_eq!(a.idle_at, b.idle_at);
        }
        if cache == CacheMode::Sequence {
            let saved: usize = base.iter().zip(&other).map(|(a, b)| a.nfe - b.nfe).sum();
            assert!(saved > 0, "the cache saved no evaluation");
        }
    }
}

#[test]
fn nfe_is_one_plus_non_idle_steps_and_isr_matches_closed_form() {
    let cfg = tiny_config(&[]);
    let m = random_model(&cfg);
    let (steps, l) = (48, cfg.data.seq_len);
    let free = Template::free(l, 2);
    let samples = run(
        &cfg,
        &m,
        &settings(&cfg, steps, CacheMode::Sequence, 16),
        &free,
        64,
    );
    let mut ratios = Vec::new();
    for s in &samples {
        let non_idle_before_last = s.idle_at[..steps - 1].iter().filter(|&&i| !i).count();
        let nfe = 1 + non_idle_before_last;
        // Noise removal costs one more evaluation only if something was still masked and the
        // last step changed the sequence; it is rare at t = 1e-5, so allow either.
        assert!(
            s.nfe == nfe || s.nfe == nfe + 1,
            "NFE {} vs 1 + {non_idle_before_last}",
            s.nfe
        );
        assert_eq!(s.idle_steps, s.idle_at.iter().filter(|&&i| i).count());
        ratios.push(s.idle_steps as f64 / steps as f64);
    }
    let n = ratios.len() as f64;
    let mean = ratios.iter().sum::<f64>() / n;
    let se = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
    let cf = isr_closed_form(&cfg.schedule, steps, l * 2);
    assert!(
        (mean - cf).abs() < 5.0 * se,
        "ISR {mean} ± {se} vs closed form {cf}"
    );
}

#[test]
fn fixed_sub_tokens_are_never_changed() {
    let cfg = tiny_config(&[]);
    let m = random_model(&cfg);
    let codec = cfg.codec().unwrap();
    let mut t = Template::free(cfg.data.seq_len, 2);
    t.fix_tokens(&codec, 0, &[0, 67, 97, 108]).unwrap();
    t.fix_digit(&codec, 9, 0, 7).unwrap();
    t.fix_digit(&codec, 12, 1, 3).unwrap();
    for s in run(&cfg, &m, &settings(&cfg, 16, CacheMode::Sequence, 8), &t, 8) {
        assert_eq!(&s.tokens[..4], &[0, 67, 97, 108]);
        assert_eq!(s.tokens[9] / 16, 7, "digit 0 of token 9");
        assert_eq!(s.tokens[12] % 16, 3, "digit 1 of token 12");
    }
    assert!(
        t.fix_digit(&codec, 0, 2, 1).is_err(),
        "ell = 2 has no digit 2"
    );
    assert!(
        t.fix_digit(&codec, 0, 0, 16).is_err(),
        "16 is not a base-16 digit"
    );
}

#[test]
fn carry_over_never_produces_an_invalid_code() {
    // Bytes with ℓ = 3: b = 7, 343 codes for 256 tokens, so 87 invalid codes exist.
    let on = tiny_config(&["prime.ell=3", "model.d_model=48", "model.n_heads=2"]);
    let off = tiny_config(&[
        "prime.ell=3",
        "model.d_model=48",
        "model.n_heads=2",
        "prime.carry_over=false",
    ]);
    let m = random_model(&on);
    let free = Template::free(on.data.seq_len, 3);
    // Tempered towards uniform, the draws at one position disagree often, so revealing their
    // digits at different steps mixes codes (how invalid ones arise without carry-over).
    let hot = |cfg: &RunConfig| SampleSettings {
        temperature: 4.0,
        ..settings(cfg, 16, CacheMode::Sequence, 32)
    };
    let with: usize = run(&on, &m, &hot(&on), &free, 64)
        .iter()
        .map(|s| s.invalid_codes)
        .sum();
    assert_eq!(with, 0, "carry-over produced invalid codes");
    let without: usize = run(&off, &m, &hot(&off), &free, 64)
        .iter()
        .map(|s| s.invalid_codes)
        .sum();
    assert!(
        without > 0,
        "without carry-over, mixed digits should sometimes form invalid codes"
    );
}

#[test]
fn ell_one_mdlm_samples_through_the_same_code() {
    let cfg = tiny_config(&["prime.ell=1"]);
    let m = random_model(&cfg);
    let free = Template::free(cfg.data.seq_len, 1);
    let a = run(
        &cfg,
        &m,
        &settings(&cfg, 24, CacheMode::Sequence, 4),
        &free,
        4,
    );
    let b = run(&cfg, &m, &settings(&cfg, 24, CacheMode::Off, 4), &free, 4);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.tokens, y.tokens);
        assert_eq!(x.invalid_codes, 0);
        assert!(x.tokens.iter().all(|&t| t < 256));
        assert!(x.nfe >= 1 && x.nfe <= 25);
    }
}
