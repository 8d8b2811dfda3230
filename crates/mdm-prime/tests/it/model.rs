//! The denoiser: every parameter learns, ℓ = 1 is MDLM's shape, fully revealed tokens cost 0.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime::checkpoint::RunDir;
use mdm_prime::model::Dit;
use mdm_prime::params::{grads_by_path, named_params};
use mdm_prime::subtoken::PrimeTables;
use mdm_prime::train::Trainer;

use crate::common::{rng_lock, temp_dir, tiny_config, tiny_data};

/// The modulations and the head start at zero, so the first steps only reach some parameters
/// (design §6.2); after three optimiser steps every parameter tensor must get a non-zero gradient.
#[test]
fn every_parameter_receives_a_gradient() {
    let _guard = rng_lock();
    for tc in ["false", "true"] {
        let cfg = tiny_config(&[
            "model.dropout=0.0",
            &format!("model.time_conditioning={tc}"),
        ]);
        let data = tiny_data(&cfg);
        let dir = temp_dir(&format!("grad-{tc}"));
        let mut tr = Trainer::open(&cfg, RunDir::new(&dir), false, &Device::default()).unwrap();
        for _ in 0..3 {
            tr.step(&data).unwrap();
        }
        // One more forward/backward by hand on a batch with masked and revealed digits.
        let codec = cfg.codec().unwrap();
        let d = Device::default();
        let (b, l) = (2, 16);
        let x0: Vec<i64> = (0..b * l).map(|k| (k * 37 % 256) as i64).collect();
        let y0 = codec
            .encode(&x0.iter().map(|&x| x as u32).collect::<Vec<_>>())
            .unwrap();
        let yt: Vec<i64> = y0
            .iter()
            .enumerate()
            .map(|(k, &y)| {
                if k % 3 == 0 {
                    codec.mask_id() as i64
                } else {
                    y as i64
                }
            })
            .collect();
        let yt = Tensor::<3, Int>::from_data(TensorData::new(yt, [b, l, 2]), &d);
        let x0 = Tensor::<2, Int>::from_data(TensorData::new(x0, [b, l]), &d);
        let lp = tr.model.log_probs(&tr.tables, yt, &[0.3, 0.7], true);
        let loss = -lp.gather(2, x0.reshape([b, l, 1])).mean();
        let grads = grads_by_path(&tr.model, &loss.backward());
        let params = named_params(&tr.model);
        assert!(params.len() > 10);
        for p in params {
            let g = grads
                .get(&p.path)
                .unwrap_or_else(|| panic!("{} has no gradient", p.path));
            let norm: f32 = g.clone().abs().sum().into_scalar();
            // The time MLP only matters when the time enters the network.
            assert!(
                norm > 0.0,
                "time_conditioning={tc}: {} has a zero gradient",
                p.path
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// ℓ = 1 is MDLM: a (V+1)-row embedding with mask id V, a V-way head, and with carry-over a
/// revealed token gets log-probability exactly 0.
#[test]
fn ell_one_is_mdlm_and_revealed_tokens_are_certain() {
    let _guard = rng_lock(); // initialisation draws from the process-wide generator
    let cfg = tiny_config(&["prime.ell=1"]);
    let codec = cfg.codec().unwrap();
    let d = Device::default();
    let model = Dit::new(&cfg.model, &codec, &d);
    let shapes: Vec<_> = named_params(&model)
        .into_iter()
        .map(|p| (p.path, p.shape))
        .collect();
    assert!(
        shapes.contains(&("vocab_embed.weight".into(), vec![257, 32])),
        "{shapes:?}"
    );
    assert!(shapes.contains(&("head.weight".into(), vec![32, 256])));
    let tables = PrimeTables::new(&codec, &d);
    let yt = Tensor::<3, Int>::from_data(TensorData::new(vec![65i64, 256, 66, 256], [1, 4, 1]), &d);
    let lp: Vec<f32> = model
        .valid()
        .log_probs(&tables, yt, &[0.0], true)
        .try_into_vec_as()
        .unwrap();
    assert_eq!(lp[65], 0.0);
    assert_eq!(lp[2 * 256 + 66], 0.0);
    // A masked position is a full distribution (uniform at init: zero head).
    assert!((lp[256 + 7] + (256f32).ln()).abs() < 1e-5);
}

/// A tiny DiT of `cfg` on `device` with N(0, 0.3) noise added to every parameter, so the head and
/// the modulations are not their zero initialisation (which gives uniform logits).
fn perturbed_dit(cfg: &mdm_prime_core::config::RunConfig, device: &Device) -> Dit {
    use burn::tensor::Distribution;
    let codec = cfg.codec().unwrap();
    let plain = Device::default();
    mdm_prime::params::map_params(Dit::new(&cfg.model, &codec, device), &mut |_, t| {
        let n = t.dims()[0];
        Some(t + Tensor::<1>::random([n], Distribution::Normal(0.0, 0.3), &plain))
    })
}

/// Running the head, filter and loss only on masked positions gives the full computation's
/// value and gradients (paper objective with carry-over, and the ELBO with and without, through
/// the fused `ops::digit_nll`), for ℓ = 1, 2 and 4.
#[test]
fn masked_positions_only_loss_equals_the_full_loss() {
    use mdm_prime::batch::noised_batch;
    use mdm_prime::objective::masked_batch_loss;
    use mdm_prime_core::Objective;
    use rand::SeedableRng;

    let _guard = rng_lock(); // Tensor::random draws from the process-wide generator
    for ell in ["1", "2", "4"] {
        let cfg = tiny_config(&[&format!("prime.ell={ell}"), "model.dropout=0.0"]);
        let codec = cfg.codec().unwrap();
        let d = Device::default();
        let ad = d.clone().autodiff();
        let model = perturbed_dit(&cfg, &ad);
        let tables = PrimeTables::new(&codec, &d);
        let data = tiny_data(&cfg);
        let blocks: Vec<&[u32]> = (0..4).map(|i| data.train_block(i)).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let batch = noised_batch(
            &codec,
            &cfg.schedule,
            &blocks,
            vec![0.2, 0.5, 0.7, 0.95],
            &mut rng,
            &d,
        )
        .unwrap();
        assert!(
            batch.masked_positions.len() < 4 * 16,
            "some positions must be fully revealed"
        );
        let sigma = model.sigma(&cfg.schedule, &batch.t);
        // The ELBO's terms are exactly 0 on revealed tokens with and without carry-over.
        let cases = [
            (Objective::Paper, true),
            (Objective::Elbo, true),
            (Objective::Elbo, false),
        ];
        for (obj, carry) in cases {
            let full = masked_batch_loss(&model, &tables, obj, &batch, &sigma, carry, false);
            let sel = masked_batch_loss(&model, &tables, obj, &batch, &sigma, carry, true);
            let (a, b): (f32, f32) = (full.clone().into_scalar(), sel.clone().into_scalar());
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "ell={ell} {obj} carry-over {carry}: {a} vs {b}"
            );
            let ga = grads_by_path(&model, &full.backward());
            let gb = grads_by_path(&model, &sel.backward());
            for (path, g) in &ga {
                let x: Vec<f32> = g.clone().try_into_vec_as().unwrap();
                let y: Vec<f32> = gb[path].clone().try_into_vec_as().unwrap();
                let scale = x.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                for (u, v) in x.iter().zip(&y) {
                    assert!(
                        (u - v).abs() <= 1e-4 * scale,
                        "ell={ell} {obj} carry-over {carry} {path}: {u} vs {v}"
                    );
                }
            }
        }
    }
}

/// Evaluation's terms (valid bound and paper objective), fused from the logits on the plain
/// device, equal the composed ones from the log-probabilities ([`token_terms`]), with and
/// without carry-over, for ℓ = 1, 2 and 4.
#[test]
fn evaluation_terms_equal_the_composed_objectives() {
    use mdm_prime::batch::noised_batch;
    use mdm_prime::model::Denoiser;
    use mdm_prime::objective::{eval_terms_fused, token_terms};
    use mdm_prime_core::Objective;
    use rand::SeedableRng;

    let _guard = rng_lock(); // Tensor::random draws from the process-wide generator
    for ell in ["1", "2", "4"] {
        let cfg = tiny_config(&[&format!("prime.ell={ell}"), "model.dropout=0.0"]);
        let codec = cfg.codec().unwrap();
        let d = Device::default();
        let model = perturbed_dit(&cfg, &d);
        let tables = PrimeTables::new(&codec, &d);
        let data = tiny_data(&cfg);
        let blocks: Vec<&[u32]> = (0..4).map(|i| data.train_block(i)).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let t = vec![0.1, 0.4, 0.8, 0.99];
        let batch = noised_batch(&codec, &cfg.schedule, &blocks, t, &mut rng, &d).unwrap();
        let sigma = model.sigma(&cfg.schedule, &batch.t);
        for carry in [true, false] {
            // The fused path runs here (else this would compare the composed terms with
            // themselves).
            let logits = model.logits(batch.yt.clone(), &sigma);
            assert!(eval_terms_fused(&tables, &logits, &batch, carry).is_some());
            let [elbo, paper] = model.eval_terms(&tables, &batch, &sigma, carry);
            let lp = model.log_probs(&tables, batch.yt.clone(), &sigma, carry);
            let composed = |obj| -> Vec<f32> {
                let w = batch.weight.clone();
                let terms = token_terms(
                    obj,
                    &tables,
                    lp.clone(),
                    batch.yt.clone(),
                    batch.x0.clone(),
                    w,
                );
                terms.try_into_vec_as().unwrap()
            };
            let what = format!("ell={ell} carry-over {carry}");
            let elbo: Vec<f32> = elbo.try_into_vec_as().unwrap();
            let paper: Vec<f32> = paper.try_into_vec_as().unwrap();
            crate::common::assert_close(
                &elbo,
                &composed(Objective::Elbo),
                &format!("elbo, {what}"),
            );
            crate::common::assert_close(
                &paper,
                &composed(Objective::Paper),
                &format!("paper, {what}"),
            );
            assert!(
                elbo.iter().any(|&e| e > 0.0),
                "some token is masked, {what}"
            );
        }
    }
}
