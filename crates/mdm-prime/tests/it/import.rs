//! Importing official checkpoints (docs/import.md): the small official-layout fixtures of
//! `bench/official_fixtures.py` are imported into run directories, loaded back as any run is,
//! and must compute the logits (and log-probabilities) PyTorch computed from the same weights,
//! to 1e-4. Expected values come only from the fixtures' `*.expect.pt`.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime::checkpoint::{RunDir, load_module};
use mdm_prime::core::config::RunConfig;
use mdm_prime::core::import::{ImportOptions, read_official};
use mdm_prime::core::torch::TorchArchive;
use mdm_prime::model::{Denoiser, Network};
use mdm_prime::subtoken::PrimeTables;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/official")
        .join(name)
}

/// `name` of `<fixture>.expect.pt`: (shape, values).
fn expect(file: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let a = TorchArchive::open(fixture(file)).unwrap();
    let t = a.value()[name]
        .as_tensor()
        .unwrap_or_else(|| panic!("{file}: no {name}"));
    (t.shape.clone(), a.tensor_f32(t).unwrap())
}

fn temp_run(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mdm-prime-import-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Imports `ckpt` into a fresh run directory and loads its config, weights and EMA back from
/// the files (as `eval` and `train --resume` do).
fn import(ckpt: &str, opts: &ImportOptions) -> (RunConfig, Network, Network, PathBuf) {
    let d = Device::default();
    let imported = read_official(&fixture(ckpt), opts).unwrap();
    let dir = temp_run(ckpt);
    mdm_prime::import::write_run(&imported, &fixture(ckpt), &dir, &d).unwrap();
    let run = RunDir::new(&dir);
    let cfg = RunConfig::load(&run.config(), &[]).unwrap();
    let codec = cfg.codec().unwrap();
    let model = load_module(Network::init(&cfg, &codec, &d).unwrap(), &run.model()).unwrap();
    let ema = load_module(Network::init(&cfg, &codec, &d).unwrap(), &run.ema()).unwrap();
    (cfg, model, ema, dir)
}

fn ids(shape: [usize; 3], v: &[f32]) -> Tensor<3, Int> {
    let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(v, shape), &Device::default())
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.try_into_vec_as().unwrap()
}

/// Largest |ours − theirs| over the entries both hold, where ours keeps `keep` of every
/// `stride` official entries (the ℓ = 1 head drops the mask class).
fn max_diff(ours: &[f32], theirs: &[f32], keep: usize, stride: usize) -> f32 {
    assert_eq!(ours.len() / keep, theirs.len() / stride, "row counts");
    let mut worst = 0f32;
    for (r, row) in ours.chunks(keep).enumerate() {
        for (j, &o) in row.iter().enumerate() {
            worst = worst.max((o - theirs[r * stride + j]).abs());
        }
    }
    worst
}

/// Log-probabilities: −∞ here where the official code has −∞ or its −10⁶ stand-in (both give
/// probability 0), within 1e-4 elsewhere.
fn assert_log_probs(ours: &[f32], theirs: &[f32], keep: usize, stride: usize) {
    let mut worst = 0f32;
    for (r, row) in ours.chunks(keep).enumerate() {
        for (j, &o) in row.iter().enumerate() {
            let t = theirs[r * stride + j];
            if t < -1e5 {
                assert!(o < -1e5, "row {r} class {j}: official {t}, here {o}");
            } else {
                worst = worst.max((o - t).abs());
            }
        }
    }
    assert!(worst < 1e-4, "log-probs differ by {worst}");
}

/// A text fixture: both copies' logits and the EMA's log-probabilities.
fn check_text(ckpt: &str, expect_file: &str) {
    let (cfg, model, ema, dir) = import(ckpt, &ImportOptions::default());
    let ell = cfg.prime.ell;
    let (shape, yt) = expect(expect_file, "yt");
    let (b, l) = (shape[0], shape[1] / ell);
    let yt = ids([b, l, ell], &yt);
    let (_, t) = expect(expect_file, "t");
    let t: Vec<f64> = t.iter().map(|&x| x as f64).collect();
    let sigma = ema.sigma(&cfg.schedule, &t);
    let (_, want_sigma) = expect(expect_file, "sigma");
    for (s, w) in sigma.iter().zip(&want_sigma) {
        assert!(
            (s - w).abs() < 1e-6,
            "σ {sigma:?} vs official {want_sigma:?}"
        );
    }
    let v = cfg.codec().unwrap().vocab_size() as usize;
    for (tag, net) in [("model", &model), ("ema", &ema)] {
        let (oshape, want) = expect(expect_file, &format!("logits_{tag}"));
        let got = values(net.logits(yt.clone(), &sigma));
        let d = max_diff(&got, &want, v, oshape[2]);
        assert!(d < 1e-4, "{ckpt} {tag}: logits differ by {d}");
        eprintln!("{ckpt} {tag}: max |Δ logit| = {d:.2e}");
    }
    let (oshape, want) = expect(expect_file, "log_probs_ema");
    let tables = PrimeTables::new(&cfg.codec().unwrap(), &Device::default());
    let got = values(ema.log_probs(&tables, yt, &sigma, cfg.prime.carry_over));
    assert_log_probs(&got, &want, v, oshape[2]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mdlm_l1_checkpoint_reproduces_the_official_logits_and_subs() {
    // Building a network draws its initial weights from the process-wide generator.
    let _guard = crate::common::rng_lock();
    check_text("mdlm_l1.ckpt", "mdlm_l1.expect.pt");
}

#[test]
fn prime_l4_carry_over_checkpoint_reproduces_the_official_logits_and_filter() {
    // Building a network draws its initial weights from the process-wide generator.
    let _guard = crate::common::rng_lock();
    check_text("prime_l4_co.ckpt", "prime_l4_co.expect.pt");
}

#[test]
fn unet_l2_checkpoint_reproduces_the_official_logits() {
    // Building a network draws its initial weights from the process-wide generator.
    let _guard = crate::common::rng_lock();
    let opts = ImportOptions {
        unet_groups: 2,
        unet_head_channels: 6,
        ..ImportOptions::default()
    };
    let (cfg, model, ema, dir) = import("unet_l2.pth", &opts);
    let ell = cfg.prime.ell;
    let f = "unet_l2.expect.pt";
    // Official input [B, C·ℓ, H, W] (channel c·ℓ + j) → tokens in (H, W, C) order, ℓ digits each.
    let (shape, yt) = expect(f, "yt");
    let (b, cl, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let c = cl / ell;
    let yt = ids([b, cl, h * w], &yt)
        .swap_dims(1, 2)
        .reshape([b, h * w * c, ell]);
    // Official logits [B, C, H, W, V] → [B, H·W·C, V].
    let (_, want) = expect(f, "logits_ema");
    let v = 256;
    let want = Tensor::<1>::from_data(
        TensorData::new(want, [b * c * h * w * v]),
        &Device::default(),
    )
    .reshape([b, c, h * w, v])
    .swap_dims(1, 2)
    .reshape([b, h * w * c, v]);
    let sigma = vec![0.0; b];
    let got = values(ema.logits(yt.clone(), &sigma));
    let want = values(want);
    let d = max_diff(&got, &want, v, v);
    assert!(d < 1e-4, "EMA logits differ by {d}");
    eprintln!("unet_l2 ema: max |Δ logit| = {d:.2e}");
    // The training weights: the first pixel's C tokens.
    let (_, want) = expect(f, "logits_model_first_pixel");
    let got = values(model.logits(yt, &sigma));
    let d = max_diff(&got[..c * v], &want, v, v);
    assert!(d < 1e-4, "model logits differ by {d}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn importing_into_an_existing_run_is_refused() {
    // Building a network draws its initial weights from the process-wide generator.
    let _guard = crate::common::rng_lock();
    let d = Device::default();
    let imported = read_official(&fixture("prime_l4_co.ckpt"), &ImportOptions::default()).unwrap();
    let dir = temp_run("twice");
    mdm_prime::import::write_run(&imported, Path::new("x"), &dir, &d).unwrap();
    let err = mdm_prime::import::write_run(&imported, Path::new("x"), &dir, &d).unwrap_err();
    assert!(err.to_string().contains("already holds a run"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tensors_that_do_not_fit_the_network_are_named() {
    // Building a network draws its initial weights from the process-wide generator.
    let _guard = crate::common::rng_lock();
    let d = Device::default();
    let mut imported =
        read_official(&fixture("prime_l4_co.ckpt"), &ImportOptions::default()).unwrap();
    imported.model[0].name = "vocab_embed.extra".into();
    let err = mdm_prime::import::build(&imported, &imported.model, &d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no `vocab_embed.weight`"), "{err}");
    assert!(err.contains("no parameter `vocab_embed.extra`"), "{err}");
}
