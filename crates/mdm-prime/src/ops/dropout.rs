//! Dropout with a counter-based hash mask, recomputed in the backward pass.

use burn::tensor::{Distribution, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::Flex;
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{GRAIN, contiguous, custom_unary, f32s, flex_from, shape_of, simd};

/// A 32-bit integer hash with good avalanche (Wellons' "lowbias32"); vectorises (32-bit lanes).
#[inline(always)]
fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The dropout multiplier of element `i`: `1/(1 − p)` when kept (with probability `1 − p`), else 0.
#[inline(always)]
fn dropout_multiplier(i: u32, seed: (u32, u32), keep: f32, scale: f32) -> f32 {
    let h = hash32(hash32(i.wrapping_mul(0x9e37_79b9) ^ seed.0) ^ seed.1);
    let u = (h >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
    if u < keep { scale } else { 0.0 }
}

struct DropoutKernel<'a> {
    /// Index of the first element of this block.
    start: usize,
    seed: (u32, u32),
    keep: f32,
    values: &'a mut [f32],
}

impl WithSimd for DropoutKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let scale = 1.0 / self.keep;
        for (k, x) in self.values.iter_mut().enumerate() {
            *x *= dropout_multiplier((self.start + k) as u32, self.seed, self.keep, scale);
        }
    }
}

/// `values·mask` in place, the mask a function of `(seed, index)` only.
fn apply_dropout(values: &mut [f32], seed: (u32, u32), keep: f32) {
    values
        .par_chunks_mut(GRAIN)
        .enumerate()
        .for_each(|(c, values)| {
            simd(DropoutKernel {
                start: c * GRAIN,
                seed,
                keep,
                values,
            })
        });
}

#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    /// `(seed, keep probability)`: the mask is recomputed, not stored.
    type State = ((u32, u32), f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (seed, keep) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let shape = shape_of(&grad);
            let mut g = f32s(&contiguous(grad)).to_vec();
            apply_dropout(&mut g, seed, keep);
            flex_from(g, &shape)
        });
    }
}

/// Dropout as `burn::nn::Dropout::forward` (active only in training mode on an autodiff device;
/// kept elements scaled by `1/(1 − p)`), with the mask drawn by a counter-based hash in one
/// parallel, vectorised pass instead of one ChaCha draw per element, and recomputed in the
/// backward pass instead of stored. The hash is seeded from burn's generator, so a seeded run
/// repeats exactly.
pub fn dropout<const D: usize>(x: Tensor<D>, module: &burn::nn::Dropout) -> Tensor<D> {
    if !module.training.is_enabled() || !x.device().is_autodiff() || module.prob == 0.0 {
        return x;
    }
    let keep = (1.0 - module.prob) as f32;
    let device = x.device();
    let draws: Vec<f32> = Tensor::<1>::random([2], Distribution::Default, &device)
        .inner()
        .try_into_vec_as()
        .expect("two f32 draws");
    let seed = (
        (draws[0] * 16_777_216.0) as u32 ^ 0x5bd1_e995,
        (draws[1] * 16_777_216.0) as u32 ^ 0x27d4_eb2f,
    );
    custom_unary(&x, DropoutBackward, |prim| {
        let mut y = f32s(&prim).to_vec();
        apply_dropout(&mut y, seed, keep);
        (flex_from(y, &shape_of(&prim)), (seed, keep))
    })
    .unwrap_or_else(|| module.forward(x))
}
