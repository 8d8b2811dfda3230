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
/// (spec §6.2); after three optimiser steps every parameter tensor must get a non-zero gradient.
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
