//! Fused CPU kernels with their own backward passes, for the flex backend.
//!
//! burn runs each tensor operation eagerly and differentiates composed functions op by op, so a
//! GELU-tanh is nine passes over memory forward and more backward, and a filtered log-softmax +
//! gather over `N × V` logits is a dozen. Each function here does the same arithmetic in one pass
//! forward and one backward, vectorised (AVX2/FMA when the CPU has it, via `pulp`'s runtime
//! dispatch) and spread over the rayon pool. The composed burn version is each op's test oracle
//! (values and gradients to 1e-5 relative, `tests/it/ops.rs`) and its fallback on any tensor that
//! is not on the flex backend.
//!
//! One file per op: `gelu`, `nll` (filtered NLL and log-softmax), `digit_nll` (the valid bound's
//! digit terms), `dropout`, `attention` (rotary self-attention, tiled in `flash`), `norm`
//! (LayerNorm + adaLN modulation), `conv` (2-D "same" convolution as im2col + GEMM), `conv_relu`
//! (inference convolution + bias + ReLU, any stride and padding, for the FID Inception: forward
//! only), `group_norm` (GroupNorm + affine + optional SiLU), `pool` (inference max and average
//! pooling), `sum_squares` (a whole tensor's `Σ x²` in a fixed order, for the gradient norm:
//! forward only); this file holds what they share (the vectorised `exp`, SIMD dispatch, flex
//! primitives, recording an op).

mod attention;
mod conv;
mod conv_relu;
mod digit_nll;
mod dropout;
mod flash;
mod gelu;
mod group_norm;
mod nll;
mod norm;
mod pool;
mod sum_squares;

pub use attention::{Rope, rotary_attention, rotary_attention_composed};
pub use conv::{
    conv2d_module, conv2d_module_nhwc, conv2d_same, conv2d_same_composed, conv2d_same_nhwc,
};
pub use conv_relu::{Stride, conv2d_relu, conv2d_relu_composed};
pub use digit_nll::{DigitTargets, digit_nll_composed, digit_nll_fused};
pub use dropout::dropout;
pub use gelu::{gelu_tanh, gelu_tanh_composed};
pub use group_norm::{GN_EPS, group_norm_silu, group_norm_silu_composed};
pub use nll::{Allowed, DigitFilter, filtered_log_softmax, filtered_nll, filtered_nll_composed};
pub use norm::{LN_EPS, layer_norm_modulate, layer_norm_modulate_composed};
pub use pool::{Pool2d, Pooling, pool2d, pool2d_composed};
pub use sum_squares::{sum_squares, sum_squares_composed};

use burn::tensor::{Tensor, TensorData};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::ops::{Backward, NodeGuard, OpsKind};
use burn_flex::{Flex, FlexTensor};
use pulp::WithSimd;

type Ad = Autodiff<Flex>;

/// Elements per rayon task in element-wise kernels.
const GRAIN: usize = 1 << 15;
/// Independent accumulators in reductions (lets the compiler keep them in SIMD registers).
const LANES: usize = 16;

// ------------------------------------------------------------------------------------------------
// Scalar building blocks, written so that loops over them vectorise.

/// `e^x` for f32 without a libm call: Cody–Waite reduction `x = n·ln2 + r`, Cephes' degree-6
/// polynomial for `e^r` on `|r| ≤ ln2/2` (≈ 1 ulp), `2^n` by building the exponent bits.
/// Arguments are clamped to `[−87.3, 88]`, so the result is finite and ≥ 1.2e−38.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let n_bits = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n_bits + 127) << 23) as u32)
}

/// Runs `op` with the best SIMD instruction set of this CPU enabled.
#[inline(always)]
fn simd<Op: WithSimd>(op: Op) -> Op::Output {
    pulp::Arch::new().dispatch(op)
}

/// Rows per rayon task for `N × V` kernels (about `GRAIN` elements, at least one row).
fn rows_per_task(v: usize) -> usize {
    (GRAIN / v.max(1)).max(1)
}

// ------------------------------------------------------------------------------------------------
// Flex primitives.

/// A contiguous f32 view of `t` (copies only a strided view).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused ops take contiguous f32 tensors (the flex default float type)")
}

fn flex_from(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

fn shape_of(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().iter().copied().collect()
}

/// Runs a one-input op on flex: `forward(contiguous input) → (output, backward state)`. On an
/// autodiff tensor the output is recorded with `op`'s backward and the state; on a plain one only
/// the output is kept. `None` when `x` is not on flex (the caller falls back to the composed
/// version).
fn custom_unary<const D: usize, const E: usize, Op: Backward<Flex, 1>>(
    x: &Tensor<D>,
    op: Op,
    forward: impl FnOnce(FlexTensor) -> (FlexTensor, Op::State),
) -> Option<Tensor<E>> {
    if x.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    if x.is_autodiff() {
        let (prim, guard) = x.clone().try_into_primitive::<Ad>().ok()?.into_parts();
        let prep = op
            .prepare::<NoCheckpointing>([guard])
            .compute_bound()
            .stateful();
        let (out, state) = forward(contiguous(prim));
        let t = match prep {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Some(Tensor::from_primitive::<Ad>(t))
    } else {
        let prim = x.clone().try_into_primitive::<Flex>().ok()?;
        Some(Tensor::from_primitive::<Flex>(forward(contiguous(prim)).0))
    }
}

/// One input of a fused op, its rank erased: a contiguous flex primitive, with its autodiff node
/// when it has one.
enum Input {
    Tracked(FlexTensor, NodeGuard),
    Plain(FlexTensor),
}

/// `t` as an [`Input`]; `None` when it is not an f32 tensor on flex.
fn input<const D: usize>(t: &Tensor<D>) -> Option<Input> {
    if t.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    if t.is_autodiff() {
        let (prim, guard) = t.clone().try_into_primitive::<Ad>().ok()?.into_parts();
        Some(Input::Tracked(contiguous(prim), guard))
    } else {
        let prim = t.clone().try_into_primitive::<Flex>().ok()?;
        Some(Input::Plain(contiguous(prim)))
    }
}

/// Runs an `N`-input op on flex, as [`custom_unary`] does for one input: `forward(inputs) →
/// (output, backward state)`, recorded with `op` when every input is an autodiff tensor, output
/// only when none is. `None` when an input is not on flex or the inputs mix autodiff and plain
/// tensors (the caller falls back to the composed version).
fn custom_op<const N: usize, const E: usize, Op: Backward<Flex, N>>(
    inputs: [Option<Input>; N],
    op: Op,
    forward: impl FnOnce([FlexTensor; N]) -> (FlexTensor, Op::State),
) -> Option<Tensor<E>> {
    let inputs: Vec<Input> = inputs.into_iter().collect::<Option<_>>()?;
    if inputs.iter().all(|i| matches!(i, Input::Tracked(..))) {
        let (prims, guards): (Vec<FlexTensor>, Vec<NodeGuard>) = inputs
            .into_iter()
            .map(|i| match i {
                Input::Tracked(p, g) => (p, g),
                Input::Plain(_) => unreachable!("all inputs are tracked"),
            })
            .unzip();
        let guards: [NodeGuard; N] = guards.try_into().ok()?;
        let prims: [FlexTensor; N] = prims.try_into().ok()?;
        let prep = op
            .prepare::<NoCheckpointing>(guards)
            .compute_bound()
            .stateful();
        let (out, state) = forward(prims);
        let t = match prep {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Some(Tensor::from_primitive::<Ad>(t))
    } else if inputs.iter().all(|i| matches!(i, Input::Plain(_))) {
        let prims: Vec<FlexTensor> = inputs
            .into_iter()
            .map(|i| match i {
                Input::Plain(p) | Input::Tracked(p, _) => p,
            })
            .collect();
        let prims: [FlexTensor; N] = prims.try_into().ok()?;
        Some(Tensor::from_primitive::<Flex>(forward(prims).0))
    } else {
        None
    }
}

/// The backend's GEMM on flex primitives (strided views allowed), contiguous result.
pub(super) fn matmul(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    contiguous(burn_flex::ops::matmul::matmul(a.clone(), b.clone()))
}

/// `Σ f(x)` over a slice in `LANES` independent accumulators (so it vectorises).
#[inline(always)]
pub(super) fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    let mut acc = [0.0f32; LANES];
    for c in chunks {
        for k in 0..LANES {
            acc[k] += f(c[k]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1e30) > 0.0 && exp_f32(1e30).is_finite());
    }
}
