//! `Σ x²` over a whole tensor, summed in an order that depends on its length alone.
//!
//! burn-flex sums a contiguous f32 tensor of at least 4 Mi elements with rayon's
//! `par_chunks(..).map(..).sum()`, whose reduction tree follows rayon's work stealing: which
//! chunk sums are added to which depends on whether an idle worker stole a half in time. The
//! result then differs in its last bits from run to run, and through the global gradient norm
//! and its clipping factor that reaches every weight. Only tensors of that size take the path —
//! at GPT-2's vocabulary the head and the input embedding (V × D = 9.6 M floats at D = 192) —
//! so byte-level runs were bit-reproducible while GPT-2 runs of one binary were not
//! (docs/burn-0.22-notes.md §13). Here the blocks are fixed (`GRAIN` elements each, summed in
//! 16 f32 lanes), their sums are kept in block order and added in f64 on one thread: the same
//! bits on any number of threads and under any scheduling.

use burn::tensor::{Tensor, TensorData};
use burn_flex::Flex;
use rayon::prelude::*;

use super::{GRAIN, contiguous, f32s, lane_sum};

/// `Σ x²` of a slice: `GRAIN`-element blocks in parallel, added in block order in f64.
fn sum_squares_slice(xs: &[f32]) -> f64 {
    let blocks: Vec<f32> = xs
        .par_chunks(GRAIN)
        .map(|b| lane_sum(b, |x| x * x))
        .collect();
    blocks.iter().map(|&s| s as f64).sum()
}

/// `Σ x²` over every element of `x`, as a one-element tensor on `x`'s device.
///
/// On flex the order of the additions depends only on the number of elements (module doc): the
/// result is bit-identical on any thread count and run to run. Elsewhere it is burn's
/// `square().sum()` (its fallback and test oracle). Not differentiable: for gradient norms.
///
/// # Shapes
/// `[..]` → `[1]`.
pub fn sum_squares<const D: usize>(x: &Tensor<D>) -> Tensor<1> {
    let fused = (!x.is_autodiff() && x.dtype() == burn::tensor::DType::F32)
        .then(|| x.clone().try_into_primitive::<Flex>().ok())
        .flatten()
        .map(|prim| {
            let s = sum_squares_slice(f32s(&contiguous(prim))) as f32;
            Tensor::<1>::from_data(TensorData::new(vec![s], [1]), &x.device())
        });
    fused.unwrap_or_else(|| sum_squares_composed(x))
}

/// [`sum_squares`] from burn's primitives: `square().sum()`.
pub fn sum_squares_composed<const D: usize>(x: &Tensor<D>) -> Tensor<1> {
    x.clone().square().sum()
}
