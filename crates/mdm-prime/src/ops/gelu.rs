//! GELU with the tanh approximation, one pass forward and one backward.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::{Flex, FlexTensor};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{GRAIN, contiguous, custom_unary, exp_f32, f32s, flex_from, shape_of, simd};

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

/// GELU-tanh and its derivative at x. With `u = √(2/π)(x + 0.044715x³)`,
/// `0.5·x·(1 + tanh u) = x·σ(2u)`: one exponential, no cancellation for negative x.
#[inline(always)]
fn gelu_and_slope(x: f32) -> (f32, f32) {
    let u = SQRT_2_OVER_PI * (x + GELU_A * x * x * x);
    let e = exp_f32(-2.0 * u);
    let s = 1.0 / (1.0 + e);
    // d/dx x·σ(2u) = σ + x·σ(1 − σ)·2u', σ(1 − σ) = σ²·e.
    let du = 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_A * x * x);
    (x * s, s + x * s * s * e * du)
}

/// Forward: `y = gelu(x)`. Backward: `y ← y·gelu'(x)` (y holds the upstream gradient).
struct GeluKernel<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    backward: bool,
}

impl WithSimd for GeluKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let pairs = self.y.iter_mut().zip(self.x);
        if self.backward {
            pairs.for_each(|(g, &x)| *g *= gelu_and_slope(x).1);
        } else {
            pairs.for_each(|(y, &x)| *y = gelu_and_slope(x).0);
        }
    }
}

/// Runs [`GeluKernel`] over `x` and `y` in parallel blocks.
fn gelu_pass(x: &[f32], y: &mut [f32], backward: bool) {
    y.par_chunks_mut(GRAIN)
        .zip(x.par_chunks(GRAIN))
        .for_each(|(y, x)| simd(GeluKernel { x, y, backward }));
}

fn gelu_values(x: &FlexTensor) -> FlexTensor {
    let xs = f32s(x);
    let mut y = vec![0.0f32; xs.len()];
    gelu_pass(xs, &mut y, false);
    flex_from(y, &shape_of(x))
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The input x.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let shape = shape_of(&grad);
            let mut g = f32s(&contiguous(grad)).to_vec();
            gelu_pass(f32s(&x), &mut g, true);
            flex_from(g, &shape)
        });
    }
}

/// GELU with the tanh approximation, `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))` (PyTorch's
/// `approximate="tanh"`), fused forward and backward on flex; [`gelu_tanh_composed`] elsewhere.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    custom_unary(&x, GeluBackward, |x| (gelu_values(&x), x))
        .unwrap_or_else(|| gelu_tanh_composed(x))
}

/// GELU-tanh from burn's differentiable primitives (the oracle of [`gelu_tanh`]).
pub fn gelu_tanh_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone() * x.clone() * x.clone() * GELU_A as f64)
        * (2.0 / std::f64::consts::PI).sqrt();
    (inner.tanh() + 1.0) * x * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_slope_is_the_derivative() {
        for &x in &[-6.0f32, -2.0, -0.7, -0.01, 0.0, 0.3, 1.0, 4.0] {
            let h = 1e-3f64;
            let f = |x: f64| {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            };
            let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            let (y, s) = gelu_and_slope(x);
            assert!(
                (y as f64 - f(x as f64)).abs() < 1e-6 * (1.0 + f(x as f64).abs()),
                "x={x}"
            );
            assert!((s as f64 - fd).abs() < 1e-5, "x={x}: {s} vs {fd}");
        }
    }
}
