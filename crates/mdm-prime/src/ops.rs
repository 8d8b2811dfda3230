//! Fused CPU kernels with their own backward passes, for the flex backend.
//!
//! burn runs each tensor operation eagerly and differentiates composed functions op by op, so a
//! GELU-tanh is nine passes over memory forward and more backward, and a filtered log-softmax +
//! gather over `N × V` logits is a dozen. Each function here does the same arithmetic in one pass
//! forward and one backward, vectorised (AVX2/FMA when the CPU has it, via `pulp`'s runtime
//! dispatch) and spread over the rayon pool. The composed burn version is each op's test oracle
//! (values and gradients to 1e-5 relative, `tests/it/ops.rs`) and its fallback on any tensor that
//! is not on the flex backend.

use std::sync::Arc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn_flex::{Flex, FlexTensor};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

type Ad = Autodiff<Flex>;

/// Elements per rayon task in element-wise kernels.
const GRAIN: usize = 1 << 15;
/// Independent accumulators in reductions (lets the compiler keep them in SIMD registers).
const LANES: usize = 16;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

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
    p = p * r + 5.000_000_1e-1;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n_bits + 127) << 23) as u32)
}

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

/// Runs `op` with the best SIMD instruction set of this CPU enabled.
#[inline(always)]
fn simd<Op: WithSimd>(op: Op) -> Op::Output {
    pulp::Arch::new().dispatch(op)
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

// ------------------------------------------------------------------------------------------------
// GELU-tanh.

struct GeluForward<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
}

impl WithSimd for GeluForward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (y, &x) in self.y.iter_mut().zip(self.x) {
            *y = gelu_and_slope(x).0;
        }
    }
}

struct GeluBackwardKernel<'a> {
    x: &'a [f32],
    g: &'a mut [f32],
}

impl WithSimd for GeluBackwardKernel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (g, &x) in self.g.iter_mut().zip(self.x) {
            *g *= gelu_and_slope(x).1;
        }
    }
}

fn gelu_values(x: &FlexTensor) -> FlexTensor {
    let xs = f32s(x);
    let mut y = vec![0.0f32; xs.len()];
    y.par_chunks_mut(GRAIN)
        .zip(xs.par_chunks(GRAIN))
        .for_each(|(y, x)| simd(GeluForward { x, y }));
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
            g.par_chunks_mut(GRAIN)
                .zip(f32s(&x).par_chunks(GRAIN))
                .for_each(|(g, x)| simd(GeluBackwardKernel { x, g }));
            flex_from(g, &shape)
        });
    }
}

/// GELU with the tanh approximation, `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))` (PyTorch's
/// `approximate="tanh"`), fused forward and backward on flex; [`gelu_tanh_composed`] elsewhere.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.is_autodiff() {
        if let Ok(ad) = x.clone().try_into_primitive::<Ad>() {
            let (prim, guard) = ad.into_parts();
            let prim = contiguous(prim);
            let out = gelu_values(&prim);
            let t = match GeluBackward
                .prepare::<NoCheckpointing>([guard])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(prim, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            };
            return Tensor::from_primitive::<Ad>(t);
        }
    } else if let Ok(prim) = x.clone().try_into_primitive::<Flex>() {
        return Tensor::from_primitive::<Flex>(gelu_values(&contiguous(prim)));
    }
    gelu_tanh_composed(x)
}

/// GELU-tanh from burn's differentiable primitives (the oracle of [`gelu_tanh`]).
pub fn gelu_tanh_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone() * x.clone() * x.clone() * GELU_A as f64)
        * (2.0 / std::f64::consts::PI).sqrt();
    (inner.tanh() + 1.0) * x * 0.5
}

// ------------------------------------------------------------------------------------------------
// Filtered negative log-likelihood: −log softmax(logits masked to `allowed`)[target].

/// Which classes each row may take: `None` = all of them.
pub type Allowed = Option<Arc<Vec<bool>>>;

/// Per-row `(m, log Σ exp(z − m))` over the allowed entries, `m` their maximum (kept apart:
/// `m − z_t + log Σ` keeps the precision of a small nll, `m + log Σ` would round it away).
struct RowLse<'a> {
    z: &'a [f32],
    allowed: Option<&'a [bool]>,
    v: usize,
    lse: &'a mut [(f32, f32)],
}

#[inline(always)]
fn masked_max(z: &[f32], a: Option<&[bool]>) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut tail = f32::NEG_INFINITY;
    let zc = z.chunks_exact(LANES);
    let zr = zc.remainder();
    match a {
        None => {
            for c in zc {
                for k in 0..LANES {
                    acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
                }
            }
            for &x in zr {
                tail = tail.max(x);
            }
        }
        Some(a) => {
            let ac = a.chunks_exact(LANES);
            let ar = ac.remainder();
            for (c, m) in zc.zip(ac) {
                for k in 0..LANES {
                    let x = if m[k] { c[k] } else { f32::NEG_INFINITY };
                    acc[k] = if x > acc[k] { x } else { acc[k] };
                }
            }
            for (&x, &ok) in zr.iter().zip(ar) {
                if ok {
                    tail = tail.max(x);
                }
            }
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

#[inline(always)]
fn masked_sum_exp(z: &[f32], a: Option<&[bool]>, shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut tail = 0.0f32;
    let zc = z.chunks_exact(LANES);
    let zr = zc.remainder();
    match a {
        None => {
            for c in zc {
                for k in 0..LANES {
                    acc[k] += exp_f32(c[k] - shift);
                }
            }
            for &x in zr {
                tail += exp_f32(x - shift);
            }
        }
        Some(a) => {
            let ac = a.chunks_exact(LANES);
            let ar = ac.remainder();
            for (c, m) in zc.zip(ac) {
                for k in 0..LANES {
                    let e = exp_f32(c[k] - shift);
                    acc[k] += if m[k] { e } else { 0.0 };
                }
            }
            for (&x, &ok) in zr.iter().zip(ar) {
                if ok {
                    tail += exp_f32(x - shift);
                }
            }
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl WithSimd for RowLse<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (r, lse) in self.lse.iter_mut().enumerate() {
            let z = &self.z[r * self.v..(r + 1) * self.v];
            let a = self.allowed.map(|a| &a[r * self.v..(r + 1) * self.v]);
            let m = masked_max(z, a);
            *lse = (m, masked_sum_exp(z, a, m).ln());
        }
    }
}

/// `grad[r, x] = g[r]·(p(x) − [x = target_r])`, `p` the filtered softmax, one row block.
struct RowGrad<'a> {
    z: &'a [f32],
    allowed: Option<&'a [bool]>,
    v: usize,
    lse: &'a [(f32, f32)],
    g: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for RowGrad<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let v = self.v;
        for (r, out) in self.out.chunks_exact_mut(v).enumerate() {
            let z = &self.z[r * v..(r + 1) * v];
            let ((m, log_sum), g) = (self.lse[r], self.g[r]);
            match self.allowed.map(|a| &a[r * v..(r + 1) * v]) {
                None => {
                    for (o, &x) in out.iter_mut().zip(z) {
                        *o = g * exp_f32((x - m) - log_sum);
                    }
                }
                Some(a) => {
                    for ((o, &x), &ok) in out.iter_mut().zip(z).zip(a) {
                        let p = exp_f32((x - m) - log_sum);
                        *o = if ok { g * p } else { 0.0 };
                    }
                }
            }
        }
    }
}

/// Rows per rayon task for `N × V` kernels (about `GRAIN` elements, at least one row).
fn rows_per_task(v: usize) -> usize {
    (GRAIN / v.max(1)).max(1)
}

/// `(nll[N], (m, log Σ)[N])` of `logits [N, V]`.
fn nll_values(
    z: &FlexTensor,
    allowed: Option<&[bool]>,
    targets: &[u32],
) -> (Vec<f32>, Vec<(f32, f32)>) {
    let zs = f32s(z);
    let n = targets.len();
    let v = zs.len() / n.max(1);
    let mut lse = vec![(0.0f32, 0.0f32); n];
    let rows = rows_per_task(v);
    lse.par_chunks_mut(rows).enumerate().for_each(|(c, lse)| {
        let r0 = c * rows;
        let r1 = r0 + lse.len();
        simd(RowLse {
            z: &zs[r0 * v..r1 * v],
            allowed: allowed.map(|a| &a[r0 * v..r1 * v]),
            v,
            lse,
        })
    });
    let nll = (0..n)
        .map(|r| (lse[r].0 - zs[r * v + targets[r] as usize]) + lse[r].1)
        .collect();
    (nll, lse)
}

#[derive(Debug, Clone)]
struct NllState {
    logits: FlexTensor,
    lse: Arc<Vec<(f32, f32)>>,
    allowed: Allowed,
    targets: Arc<Vec<u32>>,
}

#[derive(Debug)]
struct NllBackward;

impl Backward<Flex, 1> for NllBackward {
    type State = NllState;

    fn backward(self, ops: Ops<NllState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let g = contiguous(grad);
            let g = f32s(&g);
            let zs = f32s(&st.logits);
            let n = st.targets.len();
            let v = zs.len() / n.max(1);
            let allowed = st.allowed.as_deref().map(|a| a.as_slice());
            let mut out = vec![0.0f32; n * v];
            let rows = rows_per_task(v);
            out.par_chunks_mut(rows * v)
                .enumerate()
                .for_each(|(c, out)| {
                    let r0 = c * rows;
                    let r1 = r0 + out.len() / v;
                    simd(RowGrad {
                        z: &zs[r0 * v..r1 * v],
                        allowed: allowed.map(|a| &a[r0 * v..r1 * v]),
                        v,
                        lse: &st.lse[r0..r1],
                        g: &g[r0..r1],
                        out,
                    });
                    for r in r0..r1 {
                        out[(r - r0) * v + st.targets[r] as usize] -= g[r];
                    }
                });
            flex_from(out, &[n, v])
        });
    }
}

/// `−log p(target_r)` per row, `p = softmax` of `logits [N, V]` restricted to the allowed
/// classes of each row (`allowed`: `N·V` flags, row-major; `None` = all): the carry-over filter,
/// log-softmax and gather of the paper objective in one pass forward and one backward, never
/// materialising the log-probabilities. Each target must be allowed in its row.
///
/// # Shapes
/// `logits: [N, V]`, `targets: N` → `[N]`.
pub fn filtered_nll(logits: Tensor<2>, allowed: Allowed, targets: Arc<Vec<u32>>) -> Tensor<1> {
    let [n, v] = logits.dims();
    assert_eq!(targets.len(), n, "one target per row");
    if let Some(a) = &allowed {
        assert_eq!(a.len(), n * v, "allowed must hold N·V flags");
    }
    debug_assert!(targets.iter().all(|&t| (t as usize) < v));
    if logits.is_autodiff() {
        if let Ok(ad) = logits.clone().try_into_primitive::<Ad>() {
            let (prim, guard) = ad.into_parts();
            let prim = contiguous(prim);
            let (nll, lse) = nll_values(&prim, allowed.as_deref().map(|a| a.as_slice()), &targets);
            let out = flex_from(nll, &[n]);
            let t = match NllBackward
                .prepare::<NoCheckpointing>([guard])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(
                    NllState {
                        logits: prim,
                        lse: Arc::new(lse),
                        allowed,
                        targets,
                    },
                    out,
                ),
                OpsKind::UnTracked(prep) => prep.finish(out),
            };
            return Tensor::from_primitive::<Ad>(t);
        }
    } else if let Ok(prim) = logits.clone().try_into_primitive::<Flex>() {
        let prim = contiguous(prim);
        let (nll, _) = nll_values(&prim, allowed.as_deref().map(|a| a.as_slice()), &targets);
        return Tensor::from_primitive::<Flex>(flex_from(nll, &[n]));
    }
    filtered_nll_composed(logits, allowed, &targets)
}

/// [`filtered_nll`] from burn's differentiable primitives: `mask_fill(−∞)`, `log_softmax`,
/// `gather` (its test oracle and its fallback off flex).
pub fn filtered_nll_composed(logits: Tensor<2>, allowed: Allowed, targets: &[u32]) -> Tensor<1> {
    let [n, v] = logits.dims();
    let device = logits.device();
    let logits = match allowed {
        Some(a) => {
            let a = Tensor::<2, Bool>::from_data(TensorData::new(a.to_vec(), [n, v]), &device);
            logits.mask_fill(a.bool_not(), f32::NEG_INFINITY)
        }
        None => logits,
    };
    let idx: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [n, 1]), &device);
    -log_softmax(logits, 1).gather(1, idx).reshape([n])
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
