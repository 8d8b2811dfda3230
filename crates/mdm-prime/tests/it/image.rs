//! Images end to end through the seams: a U-Net run trains and resumes exactly (flips included),
//! imputation never changes what is observed, pixel codes stay valid with carry-over, and the
//! per-digit-marginal solver runs on image grids.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use mdm_prime::checkpoint::RunDir;
use mdm_prime::model::{Denoiser, Network};
use mdm_prime::params::{map_params, named_params};
use mdm_prime::sampler::{CacheMode, SampleSettings, Template, sample, sample_each};
use mdm_prime::subtoken::PrimeTables;
use mdm_prime::train::Trainer;
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::data::Dataset;
use mdm_prime_core::data::image::ImageShape;
use mdm_prime_core::observe::{Observe, observed_slots};
use mdm_prime_core::sampling::NoisePrecision;
use mdm_prime_core::solver::DrawMode;
use rand::SeedableRng;

use crate::common::{rng_lock, temp_dir};

const SHAPE: ImageShape = ImageShape {
    height: 8,
    width: 8,
    channels: 1,
};

/// A tiny image run: 8 × 8 gray images, a two-level U-Net, polynomial schedule.
fn image_config(overrides: &[&str]) -> RunConfig {
    let mut o: Vec<String> = [
        "data.kind=image",
        "data.seq_len=64",
        "data.image={height=8,width=8,channels=1}",
        "data.flip=true",
        "model.kind=unet",
        "model.embed_dim=8",
        "model.channels=8",
        "model.channel_mult=[1,2]",
        "model.num_res_blocks=1",
        "model.attention_ds=[2]",
        "model.head_channels=8",
        "model.groups=4",
        "model.dropout=0.1",
        "schedule.kind=polynomial",
        "train.objective=cross_entropy",
        "train.batch_size=4",
        "train.steps=6",
        "train.warmup_steps=2",
        "train.lr=1e-2",
        "train.eval_sequences=4",
        "train.checkpoint_every=100",
        "eval.time_draws=2",
        "eval.batch_size=4",
        "sample.time_warp=[1.0,1.0,0.0]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(overrides.iter().map(|s| s.to_string()));
    RunConfig::from_toml_str("", "tiny-image", &o).unwrap()
}

/// 24 synthetic 8 × 8 images: bars whose position depends on the index.
fn image_data() -> Dataset {
    let img = |k: usize| -> Vec<u32> {
        (0..64)
            .map(|p| {
                let (h, w) = (p / 8, p % 8);
                if w == k % 8 || h == (k / 3) % 8 {
                    250 - (k as u32 % 7) * 10
                } else {
                    (h * 8 + w) as u32 % 40
                }
            })
            .collect()
    };
    let train: Vec<u32> = (0..20).flat_map(img).collect();
    let val: Vec<u32> = (20..24).flat_map(img).collect();
    Dataset {
        seq_len: 64,
        vocab_size: 256,
        n_tokens: train.len() + val.len(),
        train,
        val,
        n_documents: 24,
        source: "synthetic bars".into(),
        from_cache: false,
        image: Some(SHAPE),
    }
}

fn weights(tr: &Trainer) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> = named_params(&tr.model)
        .into_iter()
        .chain(named_params(&tr.ema))
        .map(|p| (p.path, p.value.try_into_vec_as().unwrap()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn unet_run_trains_and_resumes_exactly() {
    let _guard = rng_lock();
    let cfg = image_config(&[]);
    let data = image_data();
    let d = Device::default();
    let dir_a = temp_dir("image-straight");
    let mut a = Trainer::open(&cfg, RunDir::new(&dir_a), false, &d).unwrap();
    assert_eq!(a.model.kind(), "unet");
    let mut losses = Vec::new();
    for _ in 0..4 {
        losses.push(a.step(&data).unwrap().0);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let dir_b = temp_dir("image-resumed");
    let mut b = Trainer::open(&cfg, RunDir::new(&dir_b), false, &d).unwrap();
    b.step(&data).unwrap();
    b.step(&data).unwrap();
    b.save().unwrap();
    drop(b);
    let mut b = Trainer::open(&cfg, RunDir::new(&dir_b), true, &d).unwrap();
    b.step(&data).unwrap();
    b.step(&data).unwrap();
    assert_eq!(weights(&a), weights(&b), "resumed image run differs");
    // Tensor names are the U-Net's own (no enum level), e.g. `embed.weight`.
    assert!(
        named_params(&a.model)
            .iter()
            .any(|p| p.path == "embed.weight")
    );
    let report = a.validate(&data, 4).unwrap();
    assert!(report.elbo_nats_per_token.is_finite() && report.elbo_nats_per_token > 0.0);
    for dir in [dir_a, dir_b] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// An untrained U-Net with every parameter perturbed, so its output depends on the input.
fn random_unet(cfg: &RunConfig) -> (Network, PrimeTables) {
    let d = Device::default();
    d.seed(5);
    let codec = cfg.codec().unwrap();
    let model = map_params(Network::init(cfg, &codec, &d).unwrap(), &mut |_, t| {
        let n = t.dims()[0];
        Some(t + Tensor::<1>::random([n], Distribution::Normal(0.0, 0.3), &d))
    })
    .valid();
    (model, PrimeTables::new(&codec, &d))
}

fn settings(cfg: &RunConfig, steps: usize, temperature: f64) -> SampleSettings {
    SampleSettings {
        steps,
        seq_len: 64,
        temperature,
        top_p: 1.0,
        seed: 9,
        precision: NoisePrecision::F64,
        carry_over: cfg.prime.carry_over,
        cache: CacheMode::Sequence,
        batch_size: 8,
    }
}

#[test]
fn imputation_never_changes_observed_pixels_or_digits() {
    let _guard = rng_lock();
    for draw in ["joint", "marginals"] {
        let cfg = image_config(&[&format!("sample.draw={draw}"), "prime.carry_over=false"]);
        let (model, tables) = random_unet(&cfg);
        let codec = tables.codec().clone();
        let data = image_data();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let observed = observed_slots(
            &[Observe::LeftHalf, Observe::Digits(vec![0])],
            SHAPE,
            2,
            &mut rng,
        )
        .unwrap();
        let templates: Vec<Template> = (0..4)
            .map(|i| {
                let y0 = codec.encode(data.val_block(i)).unwrap();
                Template {
                    fixed: y0
                        .iter()
                        .zip(&observed)
                        .map(|(&d, &o)| o.then_some(d))
                        .collect(),
                }
            })
            .collect();
        let (out, _) = sample_each(
            &model,
            &tables,
            cfg.solver(),
            &settings(&cfg, 12, 2.0),
            &templates,
            0,
            &Device::default(),
            &mut |_, _| {},
        )
        .unwrap();
        let mut free_changed = 0;
        for (s, t) in out.iter().zip(&templates) {
            let y = codec.encode(&s.tokens).unwrap();
            for (k, f) in t.fixed.iter().enumerate() {
                match f {
                    Some(v) => assert_eq!(y[k], *v, "{draw}: observed sub-token {k} changed"),
                    None => free_changed += 1,
                }
            }
        }
        assert!(free_changed > 0);
        // The right half's least significant digits were generated, not copied.
        let differs = out
            .iter()
            .enumerate()
            .any(|(i, s)| s.tokens[4..8] != data.val_block(i)[4..8]);
        assert!(differs, "{draw}: the unobserved pixels equal the originals");
    }
}

#[test]
fn pixel_codes_stay_valid_with_carry_over_and_marginals_run_on_grids() {
    let _guard = rng_lock();
    // ℓ = 3 on pixels: b = 7, 343 codes for 256 values (87 invalid). With the filter and joint
    // draws every code is a valid pixel.
    let on = image_config(&["prime.ell=3", "model.embed_dim=9", "model.channels=12"]);
    let (model, tables) = random_unet(&on);
    let free = Template::free(64, 3);
    let hot = settings(&on, 16, 4.0);
    let (s, _) = sample(
        &model,
        &tables,
        on.solver(),
        &hot,
        &free,
        8,
        0,
        &Device::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(s.iter().map(|x| x.invalid_codes).sum::<usize>(), 0);
    assert!(s.iter().all(|x| x.tokens.iter().all(|&v| v < 256)));
    // Without the filter, per-digit marginal draws can form codes ≥ 256 (design §2.4); they
    // are counted and replaced, never passed on.
    let mut off = on.clone();
    off.prime.carry_over = false;
    off.sample.draw = DrawMode::Marginals;
    let (s, _) = sample(
        &model,
        &tables,
        off.solver(),
        &settings(&off, 16, 4.0),
        &free,
        8,
        0,
        &Device::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let invalid: usize = s.iter().map(|x| x.invalid_codes).sum();
    assert!(
        invalid > 0,
        "hot marginal draws over 512 pixels never formed an invalid code"
    );
    // The image grid ends at t = 0, so nothing is left for noise removal: NFE ≤ T.
    assert!(s.iter().all(|x| x.nfe <= 16 && x.steps == 16));
}

#[test]
fn text_and_image_configs_do_not_mix() {
    let e = RunConfig::from_toml_str("", "t", &["model.kind=unet".to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.kind") && e.contains("image"), "{e}");
    let e = RunConfig::from_toml_str(
        "",
        "t",
        &["model.kind=unet".into(), "model.d_model=64".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("d_model"), "{e}");
    // A DiT config has no image shape: the U-Net refuses to build without one.
    let mut cfg = image_config(&[]);
    cfg.data.image = None;
    let e = Network::init(&cfg, &cfg.codec().unwrap(), &Device::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.image"), "{e}");
}

#[test]
fn image_runs_train_under_every_objective() {
    let _guard = rng_lock();
    let data = image_data();
    for (objective, carry_over) in [
        ("elbo", "true"),
        ("paper", "true"),
        ("cross_entropy", "false"),
    ] {
        let cfg = image_config(&[
            &format!("train.objective={objective}"),
            &format!("prime.carry_over={carry_over}"),
        ]);
        let dir = temp_dir(&format!("image-{objective}"));
        let mut tr = Trainer::open(&cfg, RunDir::new(&dir), false, &Device::default()).unwrap();
        let losses: Vec<f64> = (0..3).map(|_| tr.step(&data).unwrap().0).collect();
        assert!(
            losses.iter().all(|l| l.is_finite() && *l > 0.0),
            "{objective}: {losses:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
