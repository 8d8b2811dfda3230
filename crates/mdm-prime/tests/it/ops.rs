//! The fused ops against their composed burn versions: values and gradients to 1e-5 relative,
//! on the autodiff device (training) and the plain device (evaluation, sampling).

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use mdm_prime::ops::{
    Allowed, DigitTargets, Pool2d, Pooling, Stride, conv2d_relu, conv2d_relu_composed,
    digit_nll_composed, digit_nll_fused, filtered_nll, filtered_nll_composed, gelu_tanh,
    gelu_tanh_composed, pool2d, pool2d_composed, sum_squares, sum_squares_composed,
};

use crate::common::{assert_close, values};

fn ad() -> Device {
    Device::default().autodiff()
}

#[test]
fn fused_gelu_equals_composed_in_value_and_gradient() {
    // 3·1000 elements (not a multiple of the SIMD width), values up to ±8 (both tails).
    let x = values(3000, 1, 8.0);
    let up = values(3000, 2, 1.0); // upstream gradient
    let run = |fused: bool| {
        let d = ad();
        let xt =
            Tensor::<3>::from_data(TensorData::new(x.clone(), [3, 10, 100]), &d).require_grad();
        let y = if fused {
            gelu_tanh(xt.clone())
        } else {
            gelu_tanh_composed(xt.clone())
        };
        let w = Tensor::<3>::from_data(TensorData::new(up.clone(), [3, 10, 100]), &d);
        let grads = (y.clone() * w).sum().backward();
        let g: Vec<f32> = xt.grad(&grads).unwrap().try_into_vec_as().unwrap();
        let y: Vec<f32> = y.inner().try_into_vec_as().unwrap();
        (y, g)
    };
    let (y_f, g_f) = run(true);
    let (y_c, g_c) = run(false);
    assert_close(&y_f, &y_c, "gelu value");
    assert_close(&g_f, &g_c, "gelu gradient");
    // The plain device (no autodiff) takes the same kernel.
    let plain = Tensor::<3>::from_data(TensorData::new(x, [3, 10, 100]), &Device::default());
    let y_p: Vec<f32> = gelu_tanh(plain).try_into_vec_as().unwrap();
    assert_close(&y_p, &y_c, "gelu value, plain device");
}

/// Rows of `v` logits with allowed sets of every kind: everything, a strict subset, a single
/// class (a fully revealed token: nll 0, gradient 0), and a row whose allowed set avoids the
/// row maximum.
/// `n` rows (100 rows of V = 1000 span several parallel blocks, the last one short).
fn nll_case(v: usize) -> (Vec<f32>, Vec<bool>, Vec<u32>) {
    let n = if v >= 1000 { 100 } else { 6 };
    let logits = values(n * v, 3, 6.0);
    let mut allowed = vec![true; n * v];
    let mut targets = vec![0u32; n];
    for r in 0..n {
        let row = &mut allowed[r * v..(r + 1) * v];
        match r {
            0 => {}
            1 => row
                .iter_mut()
                .enumerate()
                .for_each(|(x, a)| *a = x % 3 == 1),
            2 => row
                .iter_mut()
                .enumerate()
                .for_each(|(x, a)| *a = x == v / 2),
            _ => row
                .iter_mut()
                .enumerate()
                .for_each(|(x, a)| *a = (x * 7 + r) % 5 < 2),
        }
        targets[r] = (0..v as u32).rev().find(|&x| row[x as usize]).unwrap();
    }
    (logits, allowed, targets)
}

/// `f` of `logits [N, V]` on the autodiff device (one value per row), and the gradient of
/// `Σ_r up[r]·f(z)[r]` with respect to the logits.
fn rows_and_grad(
    logits: &[f32],
    [n, v]: [usize; 2],
    up: &[f32],
    f: impl Fn(Tensor<2>) -> Tensor<1>,
) -> (Vec<f32>, Vec<f32>) {
    let d = ad();
    let z = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [n, v]), &d).require_grad();
    let out = f(z.clone());
    let w = Tensor::<1>::from_data(TensorData::new(up.to_vec(), [n]), &d);
    let grads = (out.clone() * w).sum().backward();
    let g: Vec<f32> = z.grad(&grads).unwrap().try_into_vec_as().unwrap();
    let out: Vec<f32> = out.inner().try_into_vec_as().unwrap();
    (out, g)
}

#[test]
fn fused_filtered_nll_equals_composed_in_value_and_gradient() {
    for v in [7usize, 50, 1000] {
        let (logits, allowed, targets) = nll_case(v);
        let n = targets.len();
        let up = values(n, 4, 2.0);
        for allowed in [Allowed::Mask(Arc::new(allowed.clone())), Allowed::All] {
            let run = |fused: bool| {
                rows_and_grad(&logits, [n, v], &up, |z| match fused {
                    true => filtered_nll(z, allowed.clone(), Arc::new(targets.clone())),
                    false => filtered_nll_composed(z, allowed.clone(), &targets),
                })
            };
            let filtered = matches!(allowed, Allowed::Mask(_));
            let what = format!("V = {v}, filtered = {filtered}");
            let (nll_f, g_f) = run(true);
            let (nll_c, g_c) = run(false);
            assert_close(&nll_f, &nll_c, &format!("nll, {what}"));
            assert_close(&g_f, &g_c, &format!("gradient, {what}"));
            if filtered {
                assert_eq!(nll_f[2], 0.0, "a single allowed class has probability 1");
                assert!(g_f[2 * v..3 * v].iter().all(|&g| g == 0.0));
            }
            let plain =
                Tensor::<2>::from_data(TensorData::new(logits.clone(), [n, v]), &Device::default());
            let nll_p: Vec<f32> = filtered_nll(plain, allowed.clone(), Arc::new(targets.clone()))
                .try_into_vec_as()
                .unwrap();
            assert_close(&nll_p, &nll_c, &format!("nll plain device, {what}"));
        }
    }
}

#[test]
fn fused_rotary_attention_equals_composed_in_value_and_gradient() {
    // D = 24 (H = 3, hd = 8); L = 12 (below the 16-lane width) and L = 130 (8·16 + 2, and
    // B·H·L = 780 rows of 130 span several parallel blocks, the last one short).
    for (b, l) in [(2usize, 12usize), (2, 130)] {
        for causal in [false, true] {
            attention_case(b, l, 3, 8, causal);
        }
    }
}

/// The tiled attention (64-row query and key blocks, online softmax) at lengths that exercise
/// its edges: L = 1, L below one tile, exactly one tile, a short last tile, several tiles with
/// one sequence (a head's keys split over backward tasks); hd = 24 is not a multiple of the
/// 16-column register tile, hd = 64 is the bench shape.
#[test]
fn tiled_rotary_attention_equals_composed_at_partial_tiles() {
    for (b, l, h, hd) in [
        (3usize, 1usize, 2usize, 8usize),
        (2, 37, 4, 8),
        (2, 64, 2, 24),
        (1, 129, 2, 24),
        (1, 200, 1, 64),
    ] {
        for causal in [false, true] {
            attention_case(b, l, h, hd, causal);
        }
    }
}

fn attention_case(b: usize, l: usize, h: usize, hd: usize, causal: bool) {
    use mdm_prime::ops::{Rope, rotary_attention, rotary_attention_composed};
    let n = b * l * 3 * h * hd;
    let qkv = values(n, 5, 2.0);
    let up = values(b * l * h * hd, 6, 1.0);
    let run = |fused: bool| {
        let d = ad();
        let rope = Rope::new(l, hd, &d);
        let x = Tensor::<3>::from_data(TensorData::new(qkv.clone(), [b, l, 3 * h * hd]), &d)
            .require_grad();
        let y = if fused {
            rotary_attention(x.clone(), h, &rope, causal)
        } else {
            rotary_attention_composed(x.clone(), h, &rope, causal)
        };
        let w = Tensor::<3>::from_data(TensorData::new(up.clone(), [b, l, h * hd]), &d);
        let grads = (y.clone() * w).sum().backward();
        let g: Vec<f32> = x.grad(&grads).unwrap().try_into_vec_as().unwrap();
        let y: Vec<f32> = y.inner().try_into_vec_as().unwrap();
        (y, g)
    };
    let (y_f, g_f) = run(true);
    let (y_c, g_c) = run(false);
    let what = format!("L = {l}, causal = {causal}");
    assert_close(&y_f, &y_c, &format!("attention value, {what}"));
    assert_close(&g_f, &g_c, &format!("attention gradient, {what}"));
    let d = Device::default();
    let plain = Tensor::<3>::from_data(TensorData::new(qkv, [b, l, 3 * h * hd]), &d);
    let y_p: Vec<f32> = rotary_attention(plain, h, &Rope::new(l, hd, &d), causal)
        .try_into_vec_as()
        .unwrap();
    assert_close(&y_p, &y_c, "attention value, plain device");
}

#[test]
fn fused_dropout_keeps_the_right_fraction_and_its_gradient_is_the_mask() {
    use burn::module::Module;
    use burn::nn::DropoutConfig;
    let _guard = crate::common::rng_lock(); // the seed comes from the process-wide generator
    let d = ad();
    let p = 0.1;
    let module = DropoutConfig::new(p).init();
    let n = 200_000;
    let x = Tensor::<1>::from_data(TensorData::new(vec![1.0f32; n], [n]), &d).require_grad();
    let y = mdm_prime::ops::dropout(x.clone(), &module);
    let w = values(n, 7, 1.0);
    let grads = (y.clone() * Tensor::<1>::from_data(TensorData::new(w.clone(), [n]), &d))
        .sum()
        .backward();
    let y: Vec<f32> = y.inner().try_into_vec_as().unwrap();
    let g: Vec<f32> = x.grad(&grads).unwrap().try_into_vec_as().unwrap();
    let scale = 1.0 / (1.0 - p as f32);
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    // Binomial(200000, 0.9): sd ≈ 134; allow 5 sd.
    assert!(
        (kept as f64 - 0.9 * n as f64).abs() < 670.0,
        "kept {kept} of {n}"
    );
    for k in 0..n {
        assert!(
            y[k] == 0.0 || (y[k] - scale).abs() < 1e-6,
            "y[{k}] = {}",
            y[k]
        );
        // Gradient of Σ w·dropout(x) is w·mask/(1 − p): the same mask as the forward pass.
        assert!((g[k] - w[k] * y[k]).abs() < 1e-6, "g[{k}]");
    }
    // Each parallel block has its own mask (the hash takes the flat index).
    let block = 1 << 15;
    assert_ne!(y[..block], y[block..2 * block]);
    // Consecutive calls draw different masks; evaluation mode and plain devices are identities.
    let y2: Vec<f32> = mdm_prime::ops::dropout(
        Tensor::<1>::from_data(TensorData::new(vec![1.0f32; n], [n]), &d),
        &module,
    )
    .inner()
    .try_into_vec_as()
    .unwrap();
    assert_ne!(y, y2);
    let x3 = Tensor::<1>::from_data(TensorData::new(vec![1.0f32; 10], [10]), &d);
    let off: Vec<f32> = mdm_prime::ops::dropout(x3, &module.valid())
        .try_into_vec_as()
        .unwrap();
    assert_eq!(off, vec![1.0; 10]);
}

#[test]
fn fused_filtered_log_softmax_equals_composed() {
    use burn::tensor::Bool;
    use burn::tensor::activation::log_softmax;
    use mdm_prime::ops::filtered_log_softmax;
    let d = Device::default();
    for v in [7usize, 50, 1000] {
        let (logits, allowed, _) = nll_case(v);
        let n = logits.len() / v;
        let z = Tensor::<2>::from_data(TensorData::new(logits, [n, v]), &d);
        for filter in [true, false] {
            let a = if filter {
                Allowed::Mask(Arc::new(allowed.clone()))
            } else {
                Allowed::All
            };
            let got: Vec<f32> = filtered_log_softmax(&z, &a)
                .expect("plain flex tensor")
                .try_into_vec_as()
                .unwrap();
            let masked = if filter {
                let keep =
                    Tensor::<2, Bool>::from_data(TensorData::new(allowed.clone(), [n, v]), &d);
                z.clone().mask_fill(keep.bool_not(), f32::NEG_INFINITY)
            } else {
                z.clone()
            };
            let want: Vec<f32> = log_softmax(masked, 1).try_into_vec_as().unwrap();
            let finite = |x: &[f32]| {
                x.iter()
                    .map(|&y| if y.is_finite() { y } else { 0.0 })
                    .collect::<Vec<_>>()
            };
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.is_finite(),
                    w.is_finite(),
                    "V = {v}, filtered = {filter}, [{k}]: {g} vs {w}"
                );
            }
            assert_close(
                &finite(&got),
                &finite(&want),
                &format!("log-probs, V = {v}, filtered = {filter}"),
            );
        }
    }
    // Autodiff tensors are left to the composed version.
    let z = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 4], [1, 4]), &ad());
    assert!(filtered_log_softmax(&z, &Allowed::All).is_none());
}

#[test]
#[should_panic(expected = "not an allowed class")]
fn filtered_nll_refuses_a_target_outside_its_allowed_set() {
    let z = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 4], [1, 4]), &Device::default());
    let allowed = Allowed::Mask(Arc::new(vec![true, false, true, true]));
    let _ = filtered_nll(z, allowed, Arc::new(vec![1]));
}

#[test]
#[should_panic(expected = "not below V")]
fn filtered_nll_refuses_a_target_beyond_v() {
    let z = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 4], [1, 4]), &Device::default());
    let _ = filtered_nll(z, Allowed::All, Arc::new(vec![4]));
}

/// `n` spread-out tokens of `codec`'s vocabulary and their sub-tokens with every mask pattern of
/// ℓ digits, cycling over rows (fully revealed ones included): `(targets, N·ℓ sub-tokens)`.
fn every_mask_pattern(codec: &mdm_prime_core::Codec, n: usize) -> (Vec<u32>, Vec<u32>) {
    let (v, ell) = (codec.vocab_size() as usize, codec.ell());
    let targets: Vec<u32> = (0..n).map(|r| ((r * 7919 + 13) % v) as u32).collect();
    let mut rows = codec.encode(&targets).unwrap();
    for r in 0..n {
        for j in 0..ell {
            if (r % (1 << ell)) >> j & 1 == 1 {
                rows[r * ell + j] = codec.mask_id();
            }
        }
    }
    (targets, rows)
}

/// The on-the-fly digit filter gives exactly what the `N × V` mask of `Codec::allowed_batch`
/// gives, in the NLL (value and gradient) and the log-probabilities, for every mask pattern.
#[test]
fn digit_filter_equals_the_host_mask() {
    use mdm_prime::ops::filtered_log_softmax;
    use mdm_prime::subtoken::PrimeTables;
    use mdm_prime_core::Codec;
    let d = ad();
    for (v, ell) in [(1000u32, 3usize), (50, 2), (37, 1)] {
        let codec = Codec::new(v, ell).unwrap();
        let tables = PrimeTables::new(&codec, &Device::default());
        let n = 90;
        let v = v as usize;
        let (targets, rows) = every_mask_pattern(&codec, n);
        let mut mask = vec![false; n * v];
        codec.allowed_batch(&rows, &mut mask).unwrap();
        let logits = values(n * v, 8, 5.0);
        let run = |allowed: Allowed| {
            let z =
                Tensor::<2>::from_data(TensorData::new(logits.clone(), [n, v]), &d).require_grad();
            let nll = filtered_nll(z.clone(), allowed.clone(), Arc::new(targets.clone()));
            let grads = nll.clone().sum().backward();
            let g: Vec<f32> = z.grad(&grads).unwrap().try_into_vec_as().unwrap();
            let nll: Vec<f32> = nll.inner().try_into_vec_as().unwrap();
            let plain =
                Tensor::<2>::from_data(TensorData::new(logits.clone(), [n, v]), &Device::default());
            let lp: Vec<f32> = filtered_log_softmax(&plain, &allowed)
                .unwrap()
                .try_into_vec_as()
                .unwrap();
            (nll, g, lp)
        };
        let by_mask = run(Allowed::Mask(Arc::new(mask)));
        let by_digits = run(tables.digit_filter(rows.clone()));
        assert_eq!(by_mask.0, by_digits.0, "nll, V = {v}, ell = {ell}");
        assert_eq!(by_mask.1, by_digits.1, "gradient, V = {v}, ell = {ell}");
        assert_eq!(by_mask.2, by_digits.2, "log-probs, V = {v}, ell = {ell}");
    }
}

#[test]
fn fused_layer_norm_modulate_equals_burn_layer_norm_then_modulate() {
    // A single block; then 1200 rows of 64 (blocks of 512 rows end inside sequences of 100).
    for (b, l, d) in [(3usize, 5usize, 40usize), (12, 100, 64)] {
        layer_norm_case(b, l, d);
    }
}

fn layer_norm_case(b: usize, l: usize, d: usize) {
    use burn::nn::LayerNormConfig;
    use mdm_prime::ops::{LN_EPS, layer_norm_modulate};
    let x = values(b * l * d, 9, 3.0);
    let gamma: Vec<f32> = values(d, 10, 0.5).iter().map(|g| 1.0 + g).collect();
    let shift = values(b * d, 11, 0.3);
    let scale = values(b * d, 12, 0.3);
    let up = values(b * l * d, 13, 1.0);
    let run = |fused: bool| {
        let dev = ad();
        let t3 = |v: &Vec<f32>, s: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(v.clone(), s), &dev).require_grad()
        };
        // shift and scale as the model gets them: two halves of one [B, 1, 2D] tensor.
        let both: Vec<f32> = (0..b)
            .flat_map(|i| {
                shift[i * d..(i + 1) * d]
                    .iter()
                    .chain(&scale[i * d..(i + 1) * d])
            })
            .copied()
            .collect();
        let both = t3(&both, [b, 1, 2 * d]);
        let [sh, sc]: [Tensor<3>; 2] = both.clone().chunk(2, 2).try_into().unwrap();
        let xt = t3(&x, [b, l, d]);
        let mut norm = LayerNormConfig::new(d)
            .with_bias(false)
            .with_epsilon(LN_EPS)
            .init(&dev);
        norm.gamma = burn::module::Param::from_tensor(
            Tensor::<1>::from_data(TensorData::new(gamma.clone(), [d]), &dev).require_grad(),
        );
        let g = norm.gamma.val();
        let y = if fused {
            layer_norm_modulate(xt.clone(), g.clone(), sh.clone(), sc.clone())
        } else {
            // The oracle: burn's LayerNorm module, then modulate by hand.
            let xn = norm.forward(xt.clone());
            xn.clone() * sc.clone() + xn + sh.clone()
        };
        let w = Tensor::<3>::from_data(TensorData::new(up.clone(), [b, l, d]), &dev);
        let grads = (y.clone() * w).sum().backward();
        let v = |t: Option<Tensor<3>>| -> Vec<f32> { t.unwrap().try_into_vec_as().unwrap() };
        // The gradient of [B, 1, 2D]: d shift and d scale side by side per sequence.
        let g_both = v(both.grad(&grads));
        let half = |k: usize| -> Vec<f32> {
            (0..b)
                .flat_map(|i| g_both[i * 2 * d + k * d..i * 2 * d + (k + 1) * d].to_vec())
                .collect()
        };
        let dgamma: Vec<f32> = norm
            .gamma
            .val()
            .grad(&grads)
            .unwrap()
            .try_into_vec_as()
            .unwrap();
        (
            y.inner().try_into_vec_as::<f32>().unwrap(),
            v(xt.grad(&grads)),
            dgamma,
            half(0),
            half(1),
        )
    };
    let f = run(true);
    let c = run(false);
    let what = |s: &str| format!("{s}, B = {b}, L = {l}, D = {d}");
    assert_close(&f.0, &c.0, &what("value"));
    assert_close(&f.1, &c.1, &what("dx"));
    assert_close(&f.2, &c.2, &what("dgamma"));
    assert_close(&f.3, &c.3, &what("dshift"));
    assert_close(&f.4, &c.4, &what("dscale"));
    // Plain device: the same forward.
    let dev = Device::default();
    let t =
        |v: &Vec<f32>, s: [usize; 3]| Tensor::<3>::from_data(TensorData::new(v.clone(), s), &dev);
    let y: Vec<f32> = layer_norm_modulate(
        t(&x, [b, l, d]),
        Tensor::<1>::from_data(TensorData::new(gamma.clone(), [d]), &dev),
        t(&shift, [b, 1, d]),
        t(&scale, [b, 1, d]),
    )
    .try_into_vec_as()
    .unwrap();
    assert_close(&y, &c.0, &what("value, plain device"));
}

/// The inference convolution + bias + ReLU (the FID Inception's layers) against burn's
/// `conv2d` + `relu`, on every geometry the network has — stride 2 unpadded, "same" 3 × 3 and
/// 5 × 5, 1 × 7 and 7 × 1 with one-sided padding, 1 × 1 — plus odd sizes, one image (the GEMM
/// spread over the pool) and enough images to run them in parallel, with bands both whole and
/// split (a 147-wide image's columns exceed one band). An autodiff input takes the composed
/// path and keeps its gradient.
#[test]
fn conv_relu_equals_burn_conv2d_then_relu() {
    // (B, C_in, C_out, [k_h, k_w], [p_h, p_w], stride, H = W)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], usize, usize);
    let cases: &[Case] = &[
        (1, 3, 8, [3, 3], [0, 0], 2, 31),
        (5, 3, 8, [3, 3], [0, 0], 2, 30),
        (4, 5, 6, [3, 3], [1, 1], 1, 17),
        (3, 6, 4, [5, 5], [2, 2], 1, 9),
        (4, 7, 5, [1, 7], [0, 3], 1, 11),
        (4, 7, 5, [7, 1], [3, 0], 1, 11),
        (5, 9, 7, [1, 1], [0, 0], 1, 13),
        (1, 9, 7, [1, 1], [0, 0], 1, 8),
        (2, 16, 4, [3, 3], [1, 1], 1, 147),
        (4, 12, 3, [3, 3], [0, 0], 2, 23),
    ];
    for (n, &(b, ci, co, [kh, kw], pad, s, hw)) in cases.iter().enumerate() {
        let seed = 100 + 10 * n as u64;
        let x = values(b * ci * hw * hw, seed, 1.0);
        let w = values(co * ci * kh * kw, seed + 1, 0.5);
        let bias = values(co, seed + 2, 0.5);
        let d = Device::default();
        let t =
            |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [b, ci, hw, hw]), &d);
        let wt = Tensor::<4>::from_data(TensorData::new(w, [co, ci, kh, kw]), &d);
        let bt = Tensor::<1>::from_data(TensorData::new(bias, [co]), &d);
        let at = Stride {
            stride: s,
            padding: pad,
        };
        let got = conv2d_relu(t(&x), wt.clone(), bt.clone(), at);
        let want = conv2d_relu_composed(t(&x), wt, bt, at);
        let what = format!("conv_relu case {n}: B{b} {ci}->{co} k{kh}x{kw} p{pad:?} s{s} {hw}²");
        assert_eq!(got.dims(), want.dims(), "{what}: shape");
        let (got, want): (Vec<f32>, Vec<f32>) = (
            got.try_into_vec_as().unwrap(),
            want.try_into_vec_as().unwrap(),
        );
        assert!(
            want.contains(&0.0) && want.iter().any(|&v| v > 0.0),
            "{what}: ReLU exercised"
        );
        assert_close(&got, &want, &what);
    }
    // Autodiff: the composed path, gradient intact.
    let d = ad();
    let x = Tensor::<4>::from_data(
        TensorData::new(values(2 * 3 * 5 * 5, 7, 1.0), [2, 3, 5, 5]),
        &d,
    )
    .require_grad();
    let w = Tensor::<4>::from_data(TensorData::new(values(4 * 3 * 9, 8, 0.5), [4, 3, 3, 3]), &d);
    let bias = Tensor::<1>::from_data(TensorData::new(vec![0.1; 4], [4]), &d);
    let grads = conv2d_relu(
        x.clone(),
        w,
        bias,
        Stride {
            stride: 1,
            padding: [1, 1],
        },
    )
    .sum()
    .backward();
    assert!(
        x.grad(&grads).is_some(),
        "autodiff input keeps its gradient"
    );
}

/// The inference pools against burn's `max_pool2d` / `avg_pool2d`: the Inception's four (3 × 3
/// stride-1 average without the padding, 3 × 3 stride-2 max, 3 × 3 stride-1 max, 8 × 8 average)
/// and odd sizes, average with the padding counted too. Values include negatives (a max over
/// padding must not return 0). An autodiff input takes the composed path.
#[test]
fn pools_equal_burn_pools() {
    let cases: &[(Pooling, usize, usize, usize, [usize; 4])] = &[
        (Pooling::Avg { exclude_pad: true }, 3, 1, 1, [3, 5, 35, 35]),
        (Pooling::Max, 3, 2, 0, [2, 4, 147, 147]),
        (Pooling::Max, 3, 2, 0, [2, 3, 16, 17]),
        (Pooling::Max, 3, 1, 1, [2, 6, 8, 8]),
        (Pooling::Avg { exclude_pad: false }, 8, 8, 0, [3, 7, 8, 8]),
        (Pooling::Avg { exclude_pad: false }, 3, 2, 1, [2, 3, 9, 10]),
        (Pooling::Avg { exclude_pad: true }, 5, 2, 2, [1, 2, 11, 7]),
    ];
    for (n, &(pooling, kernel, stride, padding, shape)) in cases.iter().enumerate() {
        let pool = Pool2d {
            pooling,
            kernel,
            stride,
            padding,
        };
        let len: usize = shape.iter().product();
        let x = values(len, 300 + n as u64, 2.0)
            .iter()
            .map(|v| v - 1.5)
            .collect::<Vec<_>>();
        let t = || Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &Device::default());
        let (got, want) = (pool2d(t(), pool), pool2d_composed(t(), pool));
        let what = format!("pool case {n}: {pool:?} {shape:?}");
        assert_eq!(got.dims(), want.dims(), "{what}: shape");
        let (got, want): (Vec<f32>, Vec<f32>) = (
            got.try_into_vec_as().unwrap(),
            want.try_into_vec_as().unwrap(),
        );
        assert_close(&got, &want, &what);
    }
    let d = ad();
    let x = Tensor::<4>::from_data(TensorData::new(values(2 * 9 * 9, 9, 1.0), [1, 2, 9, 9]), &d)
        .require_grad();
    let grads = pool2d(
        x.clone(),
        Pool2d {
            pooling: Pooling::Avg { exclude_pad: true },
            kernel: 3,
            stride: 1,
            padding: 1,
        },
    )
    .sum()
    .backward();
    assert!(
        x.grad(&grads).is_some(),
        "autodiff input keeps its gradient"
    );
}

/// The valid bound's fused digit terms equal the composed version in value and gradient, on
/// both devices, for every mask pattern, with the carry-over filter and without, when V fills
/// the ℓ digits exactly (16 = 2⁴) and when it leaves invalid codes (901 < 10³, over several
/// parallel blocks; 37 < 7²), including a masked row whose filter leaves one class; and the
/// values equal an f64 brute force over the classes, so the oracle is checked too.
#[test]
fn fused_digit_nll_equals_composed_and_brute_force() {
    use mdm_prime::subtoken::PrimeTables;
    use mdm_prime_core::Codec;
    for (v, ell) in [(901u32, 3usize), (16, 4), (37, 2), (50, 1)] {
        let codec = Codec::new(v, ell).unwrap();
        let tables = PrimeTables::new(&codec, &Device::default());
        let v = v as usize;
        let n = 70;
        let (mut targets, mut rows) = every_mask_pattern(&codec, n);
        if v == 901 {
            // Row 0: the target 900 with only its digit 9 revealed — no other class of V = 901
            // has that digit, so the filter leaves one class and two digits are masked.
            targets[0] = 900;
            let y = codec.encode(&[900]).unwrap();
            for (j, &d) in y.iter().enumerate() {
                rows[j] = if d == 9 { d } else { codec.mask_id() };
            }
            assert_eq!(rows[..ell].iter().filter(|&&d| d == 9).count(), 1);
        }
        let masked: Vec<bool> = rows.iter().map(|&y| y == codec.mask_id()).collect();
        let digits = Arc::new(DigitTargets {
            columns: tables.digit_columns(),
            targets: targets.clone(),
            masked: masked.clone(),
        });
        let logits = values(n * v, 11, 6.0);
        let up = values(n, 12, 2.0);
        for carry_over in [true, false] {
            let what = format!("V = {v}, ell = {ell}, carry-over {carry_over}");
            let allowed = match carry_over {
                true => tables.digit_filter(rows.clone()),
                false => Allowed::All,
            };
            let run = |fused: bool| {
                rows_and_grad(&logits, [n, v], &up, |z| match fused {
                    true => digit_nll_fused(&z, &allowed, &digits).expect("fused on flex"),
                    false => digit_nll_composed(z, allowed.clone(), &digits),
                })
            };
            let (nll_f, g_f) = run(true);
            let (nll_c, g_c) = run(false);
            assert_close(&nll_f, &nll_c, &format!("digit nll, {what}"));
            assert_close(&g_f, &g_c, &format!("digit nll gradient, {what}"));
            let plain =
                Tensor::<2>::from_data(TensorData::new(logits.clone(), [n, v]), &Device::default());
            let nll_p: Vec<f32> = digit_nll_fused(&plain, &allowed, &digits)
                .expect("fused on flex")
                .try_into_vec_as()
                .unwrap();
            assert_close(&nll_p, &nll_c, &format!("digit nll plain device, {what}"));
            // f64 brute force: −Σ_{j masked} log(Σ_{x ∈ A, digit_j(x) = digit_j(x₀)} p(x)).
            let table = codec.digit_table();
            for r in 0..n {
                let z = &logits[r * v..(r + 1) * v];
                let ok = |x: usize| allowed.allows(r, x, v);
                let total: f64 = (0..v).filter(|&x| ok(x)).map(|x| (z[x] as f64).exp()).sum();
                let x0 = targets[r] as usize;
                let want: f64 = (0..ell)
                    .filter(|&j| masked[r * ell + j])
                    .map(|j| {
                        let same: f64 = (0..v)
                            .filter(|&x| ok(x) && table[x * ell + j] == table[x0 * ell + j])
                            .map(|x| (z[x] as f64).exp())
                            .sum();
                        -(same / total).ln()
                    })
                    .sum();
                let got = nll_f[r] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs() + 1e-5,
                    "row {r}, {what}: fused {got} vs brute force {want}"
                );
                let one_class = carry_over && (0..v).filter(|&x| ok(x)).count() == 1;
                if !masked[r * ell..(r + 1) * ell].contains(&true) || one_class {
                    assert_eq!(nll_f[r], 0.0, "row {r}: nothing to predict, {what}");
                    assert!(g_f[r * v..(r + 1) * v].iter().all(|&g| g == 0.0));
                }
            }
        }
        if v == 901 {
            let ok0 = |x: usize| tables.digit_filter(rows.clone()).allows(0, x, v);
            assert_eq!((0..v).filter(|&x| ok0(x)).count(), 1, "row 0 has one class");
        }
        // A row mask is not fused (the caller keeps its tensor path); the oracle gives the
        // digit filter's values with it.
        let mut mask = vec![false; n * v];
        codec.allowed_batch(&rows, &mut mask).unwrap();
        let by_mask = Allowed::Mask(Arc::new(mask));
        let z = Tensor::<2>::from_data(TensorData::new(logits.clone(), [n, v]), &Device::default());
        assert!(digit_nll_fused(&z, &by_mask, &digits).is_none());
        let by_mask: Vec<f32> = digit_nll_composed(z.clone(), by_mask, &digits)
            .try_into_vec_as()
            .unwrap();
        let by_digits: Vec<f32> = digit_nll_fused(&z, &tables.digit_filter(rows.clone()), &digits)
            .unwrap()
            .try_into_vec_as()
            .unwrap();
        assert_close(
            &by_mask,
            &by_digits,
            &format!("row mask, V = {v}, ell = {ell}"),
        );
    }
}

#[test]
#[should_panic(expected = "not an allowed class")]
fn digit_nll_refuses_a_target_outside_its_allowed_set() {
    use mdm_prime::subtoken::PrimeTables;
    use mdm_prime_core::Codec;
    let codec = Codec::new(4, 2).unwrap();
    let tables = PrimeTables::new(&codec, &Device::default());
    // Row: digit 0 revealed as 1, digit 1 masked; target 0 has digit 0 = 0.
    let rows = vec![1, codec.mask_id()];
    let z = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 4], [1, 4]), &Device::default());
    let digits = DigitTargets {
        columns: tables.digit_columns(),
        targets: vec![0],
        masked: vec![false, true],
    };
    let _ = digit_nll_fused(&z, &tables.digit_filter(rows), &Arc::new(digits));
}

#[test]
fn sum_squares_gives_the_same_bits_on_any_thread_count() {
    // 5 Mi elements, over burn-flex's 4 Mi threshold for a rayon-parallel sum: one square of
    // 1e8 and 5 Mi of about 5e-5, i.e. about 3 per 64 Ki block. In f32 a block's 3 added to 1e8
    // rounds away (the spacing there is 8), so the result depends on which blocks are added
    // together before they meet the big one: on the order of the additions.
    let n = 5 << 20;
    let mut x: Vec<f32> = values(n, 11, 0.1)
        .into_iter()
        .map(|u| 0.00677 * (1.0 + u))
        .collect();
    x[0] = 1e4;
    let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let t = Tensor::<1>::from_data(TensorData::new(x.clone(), [n]), &Device::default());
    let on = |threads: usize, f: &(dyn Fn() -> Tensor<1> + Sync)| -> u32 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| f().into_scalar::<f32>().to_bits())
    };
    let fused: Vec<u32> = [1, 2, 3, 5, 8]
        .iter()
        .map(|&k| on(k, &|| sum_squares(&t)))
        .collect();
    assert!(fused.iter().all(|&b| b == fused[0]), "{fused:x?}");
    let got = f32::from_bits(fused[0]) as f64;
    assert!(((got - want) / want).abs() < 1e-7, "{got} against {want}");
    // burn's sum (the oracle and fallback) agrees in value, whatever its order.
    let composed = sum_squares_composed(&t).into_scalar::<f32>() as f64;
    assert!(
        ((composed - want) / want).abs() < 1e-5,
        "{composed} against {want}"
    );
    // Off flex's plain path (here an autodiff tensor) burn's sum answers.
    let ad_t = Tensor::<1>::from_data(TensorData::new(x, [n]), &ad());
    let via_ad = sum_squares(&ad_t).into_scalar::<f32>() as f64;
    assert!(
        ((via_ad - want) / want).abs() < 1e-5,
        "{via_ad} against {want}"
    );
}
