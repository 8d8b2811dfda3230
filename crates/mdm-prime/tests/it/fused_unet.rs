//! The U-Net's fused ops (im2col + GEMM convolution, GroupNorm + SiLU) against burn's versions:
//! values and the gradients of every input to 1e-5 relative, on the autodiff device (training)
//! and the plain device (evaluation, sampling).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Tensor, TensorData};
use mdm_prime::ops::{
    conv2d_module, conv2d_module_nhwc, conv2d_same, conv2d_same_composed, conv2d_same_nhwc,
    group_norm_silu, group_norm_silu_composed,
};

use crate::common::{assert_close, median_ms, values};

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as().unwrap()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], d: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), d)
}

/// One convolution case: values and the gradients of x, weight and bias under a random
/// upstream gradient, fused vs burn's conv2d, with the output channels first and last; the
/// plain device's values too.
fn conv_case(b: usize, ci: usize, co: usize, h: usize, w: usize, k: usize) {
    let seed = (b * 1000 + ci * 100 + co * 10 + h + w + k) as u64;
    let xv = values(b * ci * h * w, seed, 1.0);
    let wv = values(co * ci * k * k, seed + 1, 0.5);
    let bv = values(co, seed + 2, 0.5);
    let up = values(b * co * h * w, seed + 3, 1.0);
    for nhwc in [false, true] {
        let what = format!("conv B{b} {ci}->{co} {h}x{w} k{k} nhwc {nhwc}");
        // The fused op, or burn's conv2d (permuted to channels last when `nhwc`).
        let conv = |fused: bool, x: Tensor<4>, wt: Tensor<4>, bias: Tensor<1>| match (fused, nhwc) {
            (true, false) => conv2d_same(x, wt, bias),
            (true, true) => conv2d_same_nhwc(x, wt, bias),
            (false, false) => conv2d_same_composed(x, wt, bias),
            (false, true) => conv2d_same_composed(x, wt, bias).permute([0, 2, 3, 1]),
        };
        let out_shape = if nhwc { [b, h, w, co] } else { [b, co, h, w] };
        let run = |fused: bool| {
            let d = Device::default().autodiff();
            let x = tensor(xv.clone(), [b, ci, h, w], &d).require_grad();
            let wt = tensor(wv.clone(), [co, ci, k, k], &d).require_grad();
            let bias = tensor(bv.clone(), [co], &d).require_grad();
            let y = conv(fused, x.clone(), wt.clone(), bias.clone());
            let g = (y.clone() * tensor(up.clone(), out_shape, &d))
                .sum()
                .backward();
            (
                vec_of(y.inner()),
                vec_of(x.grad(&g).unwrap()),
                vec_of(wt.grad(&g).unwrap()),
                vec_of(bias.grad(&g).unwrap()),
            )
        };
        let (y_f, dx_f, dw_f, db_f) = run(true);
        let (y_c, dx_c, dw_c, db_c) = run(false);
        assert_close(&y_f, &y_c, &format!("{what} value"));
        assert_close(&dx_f, &dx_c, &format!("{what} dx"));
        assert_close(&dw_f, &dw_c, &format!("{what} dweight"));
        assert_close(&db_f, &db_c, &format!("{what} dbias"));
        let d = Device::default();
        let y_p = conv(
            true,
            tensor(xv.clone(), [b, ci, h, w], &d),
            tensor(wv.clone(), [co, ci, k, k], &d),
            tensor(bv.clone(), [co], &d),
        );
        assert_close(&vec_of(y_p), &y_c, &format!("{what} value, plain device"));
    }
}

#[test]
fn fused_conv_equals_burn_conv2d_in_value_and_gradients() {
    for k in [1, 3] {
        for (b, ci, co, h, w) in [
            (1, 1, 1, 1, 1),
            (2, 3, 5, 7, 5),
            (3, 8, 16, 5, 7),
            (4, 16, 8, 6, 6),
            (1, 32, 64, 2, 3),
            (5, 24, 40, 9, 4),
        ] {
            conv_case(b, ci, co, h, w, k);
        }
    }
    conv_case(2, 4, 6, 8, 7, 5);
    // 64·9 rows × 24·24 columns: about 3 images per chunk, so 5 images take two chunks.
    conv_case(5, 64, 8, 24, 24, 3);
    // k = 1 over two chunks: 600 rows × 576 columns, 3 images per chunk.
    conv_case(5, 600, 2, 24, 24, 1);
}

/// `conv2d_module` is `Conv2d::forward` for the U-Net's convolutions (and falls back to it
/// for a strided one); `conv2d_module_nhwc` is the same, channels last.
#[test]
fn conv2d_module_equals_conv2d_forward() {
    let d = Device::default().autodiff();
    d.seed(3);
    for (k, stride) in [(1, 1), (3, 1), (3, 2)] {
        let p = k / 2;
        let conv = Conv2dConfig::new([6, 10], [k, k])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_stride([stride, stride])
            .init(&d);
        let x = tensor(values(2 * 6 * 9 * 7, 9, 1.0), [2, 6, 9, 7], &d);
        let got = vec_of(conv2d_module(&conv, x.clone()).inner());
        let want = conv.forward(x.clone());
        assert_close(
            &got,
            &vec_of(want.clone().inner()),
            &format!("module k{k} s{stride}"),
        );
        let got = vec_of(conv2d_module_nhwc(&conv, x).inner());
        let want = vec_of(want.permute([0, 2, 3, 1]).inner());
        assert_close(&got, &want, &format!("module nhwc k{k} s{stride}"));
    }
}

/// The fused convolution against burn's at the tiny U-Net's shapes: forward, and forward +
/// backward (all three gradients), median of 5, printed (never asserted).
/// `cargo test --release -p mdm-prime --test it time_fused_conv -- --ignored --nocapture`
#[test]
#[ignore]
fn time_fused_conv() {
    for (b, ci, co, hw, k) in [
        (32, 32, 32, 28, 3),
        (32, 96, 32, 28, 3),
        (32, 64, 64, 14, 3),
        (32, 32, 256, 28, 3),
        (32, 64, 192, 7, 1),
    ] {
        let d = Device::default().autodiff();
        let x = tensor(values(b * ci * hw * hw, 1, 1.0), [b, ci, hw, hw], &d).require_grad();
        let wt = tensor(values(co * ci * k * k, 2, 0.1), [co, ci, k, k], &d).require_grad();
        let bias = tensor(values(co, 3, 0.1), [co], &d).require_grad();
        let mut line = format!("conv{k}x{k} B{b} {ci}->{co} {hw}x{hw}:");
        for fused in [false, true] {
            let f = |x: Tensor<4>, w: Tensor<4>, bb: Tensor<1>| {
                if fused {
                    conv2d_same(x, w, bb)
                } else {
                    conv2d_same_composed(x, w, bb)
                }
            };
            let fwd = median_ms(5, || {
                let _ = f(x.clone(), wt.clone(), bias.clone())
                    .sum()
                    .into_scalar::<f32>();
            });
            let both = median_ms(5, || {
                let g = f(x.clone(), wt.clone(), bias.clone()).sum().backward();
                let s = x.grad(&g).unwrap().sum().into_scalar::<f32>()
                    + wt.grad(&g).unwrap().sum().into_scalar::<f32>()
                    + bias.grad(&g).unwrap().sum().into_scalar::<f32>();
                assert!(s.is_finite());
            });
            let name = if fused { "fused" } else { "burn" };
            line += &format!(" {name} fwd {fwd:.1} ms, fwd+bwd {both:.1} ms;");
        }
        println!("{line}");
    }
}

/// One GroupNorm case: values and the gradients of x, g and b, fused vs composed, with and
/// without the SiLU; the plain device's value too.
fn group_norm_case(b: usize, c: usize, h: usize, w: usize, groups: usize) {
    let seed = (b * 1000 + c * 10 + h + w + groups) as u64;
    // An offset mean per image, so the centring matters.
    let xv: Vec<f32> = values(b * c * h * w, seed, 2.0)
        .into_iter()
        .enumerate()
        .map(|(k, v)| v + (k / (c * h * w)) as f32)
        .collect();
    let gv: Vec<f32> = values(c, seed + 1, 0.5).iter().map(|v| 1.0 + v).collect();
    let bv = values(c, seed + 2, 1.0);
    let up = values(b * c * h * w, seed + 3, 1.0);
    for silu in [true, false] {
        let what = format!("group norm B{b} C{c} {h}x{w} G{groups} silu {silu}");
        let run = |fused: bool| {
            let d = Device::default().autodiff();
            let x = tensor(xv.clone(), [b, c, h, w], &d).require_grad();
            let g = tensor(gv.clone(), [c], &d).require_grad();
            let bb = tensor(bv.clone(), [c], &d).require_grad();
            let y = if fused {
                group_norm_silu(x.clone(), groups, g.clone(), bb.clone(), silu)
            } else {
                group_norm_silu_composed(x.clone(), groups, g.clone(), bb.clone(), silu)
            };
            let grads = (y.clone() * tensor(up.clone(), [b, c, h, w], &d))
                .sum()
                .backward();
            (
                vec_of(y.inner()),
                vec_of(x.grad(&grads).unwrap()),
                vec_of(g.grad(&grads).unwrap()),
                vec_of(bb.grad(&grads).unwrap()),
            )
        };
        let (y_f, dx_f, dg_f, db_f) = run(true);
        let (y_c, dx_c, dg_c, db_c) = run(false);
        assert_close(&y_f, &y_c, &format!("{what} value"));
        assert_close(&dx_f, &dx_c, &format!("{what} dx"));
        assert_close(&dg_f, &dg_c, &format!("{what} dg"));
        assert_close(&db_f, &db_c, &format!("{what} db"));
        let d = Device::default();
        let y_p = group_norm_silu(
            tensor(xv.clone(), [b, c, h, w], &d),
            groups,
            tensor(gv.clone(), [c], &d),
            tensor(bv.clone(), [c], &d),
            silu,
        );
        assert_close(&vec_of(y_p), &y_c, &format!("{what} value, plain device"));
    }
}

#[test]
fn fused_group_norm_silu_equals_composed_in_value_and_gradients() {
    for (b, c, h, w, groups) in [
        (1, 1, 1, 1, 1),
        (2, 8, 7, 5, 4),
        (3, 12, 5, 7, 3),
        (4, 32, 6, 6, 8),
        (2, 64, 9, 4, 8),
        (1, 6, 3, 1, 6),
    ] {
        group_norm_case(b, c, h, w, groups);
    }
}

/// The fused GroupNorm + SiLU against the composed version at the tiny U-Net's shapes (8
/// groups): forward, and forward + backward, median of 5, printed (never asserted).
/// `cargo test --release -p mdm-prime --test it time_fused_group_norm -- --ignored --nocapture`
#[test]
#[ignore]
fn time_fused_group_norm() {
    for (b, c, hw) in [(32, 32, 28), (32, 96, 28), (32, 64, 14)] {
        let d = Device::default().autodiff();
        let x = tensor(values(b * c * hw * hw, 1, 1.0), [b, c, hw, hw], &d).require_grad();
        let g = tensor(values(c, 2, 1.0), [c], &d).require_grad();
        let bb = tensor(values(c, 3, 1.0), [c], &d).require_grad();
        let mut line = format!("group norm + SiLU B{b} C{c} {hw}x{hw}:");
        for fused in [false, true] {
            let f = |x: Tensor<4>, g: Tensor<1>, bb: Tensor<1>| {
                if fused {
                    group_norm_silu(x, 8, g, bb, true)
                } else {
                    group_norm_silu_composed(x, 8, g, bb, true)
                }
            };
            let fwd = median_ms(5, || {
                let _ = f(x.clone(), g.clone(), bb.clone())
                    .sum()
                    .into_scalar::<f32>();
            });
            let both = median_ms(5, || {
                let gr = f(x.clone(), g.clone(), bb.clone()).sum().backward();
                let s = x.grad(&gr).unwrap().sum().into_scalar::<f32>()
                    + g.grad(&gr).unwrap().sum().into_scalar::<f32>();
                assert!(s.is_finite());
            });
            let name = if fused { "fused" } else { "composed" };
            line += &format!(" {name} fwd {fwd:.1} ms, fwd+bwd {both:.1} ms;");
        }
        println!("{line}");
    }
}
