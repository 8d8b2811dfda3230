//! The image U-Net (design §6.3): shapes, the (H, W, C) token layout on both ends, gradients,
//! the paper's parameter count, config validation; `#[ignore]`d timings.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use mdm_prime::core::Codec;
use mdm_prime::model::unet::{Unet, UnetConfig};
use mdm_prime::params::{grads_by_path, map_params, named_params, params_by_path};

use crate::common::{median_ms, rng_lock};

/// A config small enough for a test: widths 8 and 16, one res-block per level, attention at
/// ds 2 and in the middle, 4 groups, no dropout.
fn tiny() -> UnetConfig {
    UnetConfig {
        embed_dim: 8,
        channels: 8,
        channel_mult: vec![1, 2],
        num_res_blocks: 1,
        attention_ds: vec![2],
        head_channels: 8,
        groups: 4,
        dropout: 0.0,
        scale_shift: true,
    }
}

/// A deterministic `[B, H·W·C, ℓ]` batch of sub-tokens, some of them the mask id.
fn tokens(codec: &Codec, b: usize, l: usize, device: &Device) -> Tensor<3, Int> {
    let x: Vec<u32> = (0..b * l).map(|k| (k * 37 % 256) as u32).collect();
    let mut y: Vec<i64> = codec
        .encode(&x)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    for (k, d) in y.iter_mut().enumerate() {
        if k % 5 == 0 {
            *d = codec.mask_id() as i64;
        }
    }
    Tensor::from_data(TensorData::new(y, [b, l, codec.ell()]), device)
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.try_into_vec_as().unwrap()
}

/// Every all-zero parameter (zero-initialised convs, GroupNorm biases) gets small random
/// values, so that every parameter influences the output.
fn perturb_zeros(model: Unet) -> Unet {
    map_params(model, &mut |_, t| {
        let zero = t.clone().abs().max().into_scalar::<f32>() == 0.0;
        zero.then(|| Tensor::random(t.dims(), Distribution::Normal(0.0, 0.1), &t.device()))
    })
}

#[test]
fn logits_are_b_l_v_and_zero_at_init() {
    let d = Device::flex();
    for channels in [1, 3] {
        for ell in [1, 2, 4] {
            let codec = Codec::new(256, ell).unwrap();
            let model = Unet::new(&tiny(), &codec, 4, 4, channels, &d);
            let l = 16 * channels;
            let out = model.logits(tokens(&codec, 2, l, &d));
            assert_eq!(out.dims(), [2, l, 256], "C = {channels}, ell = {ell}");
            let max = out.abs().max().into_scalar::<f32>();
            assert_eq!(
                max, 0.0,
                "zero-initialised head, C = {channels}, ell = {ell}"
            );
        }
    }
}

/// The embedding of token `(h·W + w)·C + c`, digit j, lies at pixel (h, w), channels
/// `(c·ℓ + j)·C₀/ℓ ..`, and is row `yt[.., j]` of the shared table.
#[test]
fn embedding_places_each_digit_at_its_pixel_and_channel_slot() {
    let d = Device::flex();
    let (hh, ww, cc, ell) = (2, 4, 3, 2);
    let codec = Codec::new(256, ell).unwrap();
    let cfg = tiny();
    let model = Unet::new(&cfg, &codec, hh, ww, cc, &d);
    let yt = tokens(&codec, 2, hh * ww * cc, &d);
    let digits: Vec<i64> = yt.clone().try_into_vec_as().unwrap();
    let x = model.embed_input(yt);
    assert_eq!(x.dims(), [2, cc * cfg.embed_dim, hh, ww]);
    let x: Vec<f32> = x.try_into_vec_as().unwrap();
    let table: Vec<f32> = params_by_path(&model)["embed.weight"]
        .clone()
        .try_into_vec_as()
        .unwrap();
    let s = cfg.embed_dim / ell;
    for b in 0..2 {
        for h in 0..hh {
            for w in 0..ww {
                for c in 0..cc {
                    let tok = (h * ww + w) * cc + c;
                    for j in 0..ell {
                        let row = digits[(b * hh * ww * cc + tok) * ell + j] as usize;
                        for e in 0..s {
                            let ch = (c * ell + j) * s + e;
                            let got = x[((b * cc * cfg.embed_dim + ch) * hh + h) * ww + w];
                            assert_eq!(got, table[row * s + e], "b{b} h{h} w{w} c{c} j{j} e{e}");
                        }
                    }
                }
            }
        }
    }
}

/// Output channel `c·V + v` at (h, w) is logit v of token `(h·W + w)·C + c`: checked on a
/// coded tensor, and end to end with the head's bias set to `1000·c + v`.
#[test]
fn output_channel_c_v_is_logit_v_of_token_hwc() {
    let d = Device::flex();
    let (hh, ww, cc, v) = (2, 2, 3, 256);
    let codec = Codec::new(256, 2).unwrap();
    let model = Unet::new(&tiny(), &codec, hh, ww, cc, &d);

    let code =
        |b: usize, ch: usize, h: usize, w: usize| (((b * 1000 + ch) * 10 + h) * 10 + w) as f32;
    let mut raw = Vec::new();
    for b in 0..2 {
        for ch in 0..cc * v {
            for h in 0..hh {
                for w in 0..ww {
                    raw.push(code(b, ch, h, w));
                }
            }
        }
    }
    let out = model.output_to_tokens(Tensor::from_data(
        TensorData::new(raw, [2, cc * v, hh, ww]),
        &d,
    ));
    assert_eq!(out.dims(), [2, hh * ww * cc, v]);
    let out = values(out);
    for b in 0..2 {
        for h in 0..hh {
            for w in 0..ww {
                for c in 0..cc {
                    let tok = (h * ww + w) * cc + c;
                    for x in [0, 1, 77, 255] {
                        let got = out[(b * hh * ww * cc + tok) * v + x];
                        assert_eq!(got, code(b, c * v + x, h, w));
                    }
                }
            }
        }
    }

    let model = map_params(model, &mut |path, t| {
        (path == "out_conv.bias").then(|| {
            let bias: Vec<f32> = (0..cc * v)
                .map(|k| (1000 * (k / v) + k % v) as f32)
                .collect();
            Tensor::from_data(TensorData::new(bias, [cc * v]), &t.device())
        })
    });
    let logits = values(model.logits(tokens(&codec, 2, hh * ww * cc, &d)));
    for (k, &got) in logits.iter().enumerate() {
        let (tok, x) = ((k / v) % (hh * ww * cc), k % v);
        assert_eq!(
            got,
            (1000 * (tok % cc) + x) as f32,
            "token {tok}, value {x}"
        );
    }
}

/// Changing the sub-tokens of one (pixel, channel) changes the embedding exactly in that
/// pixel's channel block, and changes the logits.
#[test]
fn changing_one_token_changes_its_embedding_block_and_the_logits() {
    let _guard = rng_lock();
    let d = Device::flex();
    d.seed(7);
    let (hh, ww, cc, ell) = (4, 4, 3, 2);
    let codec = Codec::new(256, ell).unwrap();
    let cfg = tiny();
    let model = perturb_zeros(Unet::new(&cfg, &codec, hh, ww, cc, &d));
    let l = hh * ww * cc;
    let yt = tokens(&codec, 1, l, &d);
    let (h0, w0, c0) = (2, 1, 1);
    let tok = (h0 * ww + w0) * cc + c0;
    let mut changed: Vec<i64> = yt.clone().try_into_vec_as().unwrap();
    for j in 0..ell {
        changed[tok * ell + j] = (changed[tok * ell + j] + 1) % (codec.mask_id() as i64 + 1);
    }
    let yt2 = Tensor::<3, Int>::from_data(TensorData::new(changed, [1, l, ell]), &d);

    let diff = (model.embed_input(yt.clone()) - model.embed_input(yt2.clone())).abs();
    let diff: Vec<f32> = diff.try_into_vec_as().unwrap();
    for ch in 0..cc * cfg.embed_dim {
        for h in 0..hh {
            for w in 0..ww {
                let inside = (h, w) == (h0, w0) && ch / cfg.embed_dim == c0;
                let moved = diff[(ch * hh + h) * ww + w] > 0.0;
                // A changed digit selects another table row, so the whole slot moves.
                assert_eq!(moved, inside, "channel {ch} at ({h}, {w})");
            }
        }
    }
    let a = values(model.logits(yt));
    let b = values(model.logits(yt2));
    let v = 256;
    let moved = |t: usize| (0..v).any(|x| a[t * v + x] != b[t * v + x]);
    assert!(moved(tok), "the changed token's logits");
}

/// One backward of a cross-entropy reaches every parameter once the zero-initialised layers are
/// perturbed (at init, conv₂ = 0 cuts the gradient into each res-block's first conv, and the
/// zero head cuts it into the whole body).
#[test]
fn every_parameter_gets_a_gradient() {
    let _guard = rng_lock();
    let d = Device::flex().autodiff();
    d.seed(11);
    let codec = Codec::new(256, 2).unwrap();
    let mut cfg = tiny();
    cfg.dropout = 0.1;
    // C·C₀ = 24 ≠ 8: the input projection is present.
    let model = perturb_zeros(Unet::new(&cfg, &codec, 4, 4, 3, &d));
    let (b, l) = (2, 48);
    let yt = tokens(&codec, b, l, &d);
    let x0: Vec<i64> = (0..b * l).map(|k| (k * 91 % 256) as i64).collect();
    let x0 = Tensor::<3, Int>::from_data(TensorData::new(x0, [b, l, 1]), &d);
    let loss = -log_softmax(model.logits(yt), 2).gather(2, x0).mean();
    let grads = grads_by_path(&model, &loss.backward());
    let params = named_params(&model);
    assert!(params.iter().any(|p| p.path == "input_proj.weight"));
    for p in params {
        let g = grads
            .get(&p.path)
            .unwrap_or_else(|| panic!("{} has no gradient", p.path));
        let norm: f32 = g.clone().abs().sum().into_scalar();
        assert!(norm > 0.0, "{} has a zero gradient", p.path);
    }
}

/// Fashion-MNIST size: 28 → 14 → 7 with three levels, attention at 7 × 7.
#[test]
fn three_levels_run_on_28_by_28() {
    let d = Device::flex();
    let codec = Codec::new(256, 2).unwrap();
    let cfg = UnetConfig {
        channel_mult: vec![1, 1, 2],
        attention_ds: vec![4],
        ..tiny()
    };
    let model = Unet::new(&cfg, &codec, 28, 28, 1, &d);
    let out = model.logits(tokens(&codec, 1, 784, &d));
    assert_eq!(out.dims(), [1, 784, 256]);
}

/// The paper's CIFAR-10 network for ℓ = 2 (b = 16), counted by hand from the layer shapes
/// (conv `k×k, i→o` = o·i·k² + o; GroupNorm(c) = 2c; scale-shift 2·out):
/// - embedding 17 × 48 = 816 (no input conv: 3·96 = 288 = 96·3);
/// - encoder: level 0, 5 × ResBlock(288 → 288) = 5 × 1,495,872; level 1, ResBlock(288 → 384)
///   2,329,728 (incl. the 1 × 1 skip 110,976) + 4 × ResBlock(384 → 384) 2,658,816 each, and
///   5 × Attention(384) = 5 × 591,360; level 2, 5 × 2,658,816. Total 36,788,928;
/// - middle: 2 × 2,658,816 + 591,360 = 5,906,688;
/// - decoder (6 stages per level on [h, skip]): 69,277,248;
/// - head: GroupNorm(288) 576 + conv 3×3 288 → 768 = 1,991,424, total 1,992,000.
///
/// Sum 113,965,680 (113,940,912 without the scale-shift vectors; ℓ = 1, b = 256: 113,989,536).
#[test]
fn paper_cifar10_network_has_113_965_680_parameters() {
    let d = Device::flex();
    let codec = Codec::new(256, 2).unwrap();
    let model = Unet::new(&UnetConfig::default(), &codec, 32, 32, 3, &d);
    let n = model.num_params();
    println!("paper CIFAR-10 U-Net, ell = 2: {n} parameters");
    assert_eq!(n, 113_965_680);
}

#[test]
fn validation_names_the_key() {
    let paper = UnetConfig::default();
    for ell in [1, 2, 3, 4, 8] {
        paper.validate(ell, 3, 32, 32).unwrap();
    }
    let err = |cfg: &UnetConfig, ell, h| cfg.validate(ell, 1, h, h).unwrap_err().to_string();
    assert!(err(&paper, 5, 32).contains("model.embed_dim"));
    let cfg = UnetConfig {
        groups: 5,
        ..tiny()
    };
    assert!(err(&cfg, 2, 8).contains("model.groups"));
    let cfg = UnetConfig {
        channel_mult: vec![],
        ..tiny()
    };
    assert!(err(&cfg, 2, 8).contains("model.channel_mult"));
    // 28 halves twice (28 → 14 → 7), not three times.
    let cfg = UnetConfig {
        channel_mult: vec![1, 1, 1],
        attention_ds: vec![],
        ..tiny()
    };
    cfg.validate(2, 1, 28, 28).unwrap();
    let cfg = UnetConfig {
        channel_mult: vec![1, 1, 1, 1],
        attention_ds: vec![],
        ..tiny()
    };
    assert!(err(&cfg, 2, 28).contains("model.channel_mult"));
    let cfg = UnetConfig {
        attention_ds: vec![3],
        ..tiny()
    };
    assert!(err(&cfg, 2, 8).contains("model.attention_ds"));
    let cfg = UnetConfig {
        head_channels: 6,
        ..tiny()
    };
    assert!(err(&cfg, 2, 8).contains("model.head_channels"));
    let cfg = UnetConfig {
        dropout: 1.0,
        ..tiny()
    };
    assert!(err(&cfg, 2, 8).contains("model.dropout"));
    let cfg = UnetConfig {
        num_res_blocks: 0,
        ..tiny()
    };
    assert!(err(&cfg, 2, 8).contains("model.num_res_blocks"));
}

#[test]
fn config_parses_with_defaults_and_rejects_unknown_keys() {
    let cfg: UnetConfig =
        serde_json::from_str(r#"{"channels": 32, "channel_mult": [1, 2]}"#).unwrap();
    assert_eq!(cfg.channels, 32);
    assert_eq!(cfg.embed_dim, 96);
    assert!(serde_json::from_str::<UnetConfig>(r#"{"chanels": 32}"#).is_err());
}

/// The tiny CPU preset (embed 32, widths 32/64/64, one res-block per level, attention at 7 × 7,
/// ℓ = 2): one training step (forward + backward of the cross-entropy) on 32 Fashion-MNIST-size
/// images, and one forward without autodiff.
/// `cargo test --release -p mdm-prime --test it time_tiny_unet -- --ignored --nocapture`
#[test]
#[ignore]
fn time_tiny_unet_step() {
    let cfg = UnetConfig {
        embed_dim: 32,
        channels: 32,
        channel_mult: vec![1, 2, 2],
        num_res_blocks: 1,
        attention_ds: vec![4],
        head_channels: 32,
        groups: 8,
        dropout: 0.1,
        scale_shift: true,
    };
    let codec = Codec::new(256, 2).unwrap();
    let (b, l) = (32, 784);
    let d = Device::flex().autodiff();
    let model = perturb_zeros(Unet::new(&cfg, &codec, 28, 28, 1, &d));
    println!("tiny U-Net: {} parameters", model.num_params());
    let yt = tokens(&codec, b, l, &d);
    let x0: Vec<i64> = (0..b * l).map(|k| (k * 91 % 256) as i64).collect();
    let x0 = Tensor::<3, Int>::from_data(TensorData::new(x0, [b, l, 1]), &d);
    let step = median_ms(5, || {
        let loss = -log_softmax(model.logits(yt.clone()), 2)
            .gather(2, x0.clone())
            .mean();
        let g = loss.backward();
        let _ = grads_by_path(&model, &g).len();
    });
    // One step by phase (forward spans; the backward is one call).
    mdm_prime::profile::enable();
    let s = std::time::Instant::now();
    let logits = model.logits(yt.clone());
    let t_fwd = s.elapsed().as_secs_f64();
    let loss = -log_softmax(logits, 2).gather(2, x0.clone()).mean();
    let t_loss = s.elapsed().as_secs_f64() - t_fwd;
    let s = std::time::Instant::now();
    let g = loss.backward();
    let t_bwd = s.elapsed().as_secs_f64();
    drop(g);
    let phases = mdm_prime::profile::take();
    println!("forward {:.0} ms: {phases:.3?}", t_fwd * 1e3);
    println!(
        "loss {:.0} ms, backward {:.0} ms",
        t_loss * 1e3,
        t_bwd * 1e3
    );
    let fwd_ad = median_ms(5, || {
        let _ = model.logits(yt.clone()).sum().into_scalar::<f32>();
    });
    let model = model.valid();
    let yt = yt.inner();
    let fwd = median_ms(5, || {
        let _ = model.logits(yt.clone()).sum().into_scalar::<f32>();
    });
    println!(
        "tiny U-Net B{b} 28x28x1 ell=2: train step {step:.0} ms, forward (autodiff) \
         {fwd_ad:.0} ms, forward (inference) {fwd:.0} ms"
    );
}
