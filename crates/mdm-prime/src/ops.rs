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
use burn::tensor::{Bool, Distribution, Int, Tensor, TensorData};
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
    p = p * r + 0.5;
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

// ------------------------------------------------------------------------------------------------
// GELU-tanh.

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

// ------------------------------------------------------------------------------------------------
// Filtered negative log-likelihood: −log softmax(logits masked to `allowed`)[target].

/// Which classes each row of an `N × V` block of logits may take (the carry-over filter).
#[derive(Debug, Clone)]
pub enum Allowed {
    /// Every class: no filter.
    All,
    /// `N·V` flags, row-major.
    Mask(Arc<Vec<bool>>),
    /// Class x is allowed in row r when every revealed sub-token of the row equals x's digit in
    /// that slot: the filter evaluated inside the kernels from the codec's digit table, without
    /// building an `N × V` mask.
    Digits(Arc<DigitFilter>),
}

/// The rows' sub-tokens and the codec's digit table, for [`Allowed::Digits`].
#[derive(Debug)]
pub struct DigitFilter {
    /// `columns[j][x]`: digit j of class x (ℓ columns of V).
    pub columns: Arc<Vec<Vec<u32>>>,
    /// The rows' sub-tokens, `N·ℓ`, token-major; `mask` marks a masked one.
    pub rows: Vec<u32>,
    /// The mask id (the base b).
    pub mask: u32,
}

/// One row's filter.
enum RowFilter<'a> {
    All,
    Mask(&'a [bool]),
    /// `(digit column, revealed value)` for each revealed slot (at least one).
    Digits(Vec<(&'a [u32], u32)>),
}

impl Allowed {
    /// The filter of row `r` (of V classes).
    fn row(&self, r: usize, v: usize) -> RowFilter<'_> {
        match self {
            Allowed::All => RowFilter::All,
            Allowed::Mask(a) => RowFilter::Mask(&a[r * v..(r + 1) * v]),
            Allowed::Digits(f) => {
                let ell = f.columns.len();
                let revealed: Vec<(&[u32], u32)> = f.rows[r * ell..(r + 1) * ell]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &y)| y != f.mask)
                    .map(|(j, &y)| (f.columns[j].as_slice(), y))
                    .collect();
                if revealed.is_empty() {
                    RowFilter::All
                } else {
                    RowFilter::Digits(revealed)
                }
            }
        }
    }

    /// Whether class `x` is allowed in row `r`.
    pub fn allows(&self, r: usize, x: usize, v: usize) -> bool {
        self.row(r, v).one(x)
    }

    /// Panics unless the filter describes `n` rows of `v` classes.
    fn check(&self, n: usize, v: usize) {
        match self {
            Allowed::All => {}
            Allowed::Mask(a) => assert_eq!(a.len(), n * v, "allowed must hold N·V flags"),
            Allowed::Digits(f) => {
                assert!(
                    f.columns.iter().all(|c| c.len() == v),
                    "digit columns must have V entries"
                );
                assert_eq!(
                    f.rows.len(),
                    n * f.columns.len(),
                    "one token (ℓ digits) per row"
                );
            }
        }
    }

    /// The filter as `N·V` flags, or `None` for [`Allowed::All`].
    pub fn to_mask(&self, n: usize, v: usize) -> Option<Vec<bool>> {
        match self {
            Allowed::All => None,
            Allowed::Mask(a) => Some(a.to_vec()),
            Allowed::Digits(_) => Some(
                (0..n)
                    .flat_map(|r| {
                        let f = self.row(r, v);
                        (0..v).map(move |x| f.one(x)).collect::<Vec<_>>()
                    })
                    .collect(),
            ),
        }
    }
}

impl RowFilter<'_> {
    /// Flags of classes `i..i + LANES`.
    #[inline(always)]
    fn chunk(&self, i: usize) -> [bool; LANES] {
        match self {
            RowFilter::All => [true; LANES],
            RowFilter::Mask(a) => {
                let mut ok = [false; LANES];
                ok.copy_from_slice(&a[i..i + LANES]);
                ok
            }
            RowFilter::Digits(d) => {
                let mut ok = [true; LANES];
                for (col, y) in d {
                    let c = &col[i..i + LANES];
                    for k in 0..LANES {
                        ok[k] &= c[k] == *y;
                    }
                }
                ok
            }
        }
    }

    /// The flag of class `x`.
    #[inline(always)]
    fn one(&self, x: usize) -> bool {
        match self {
            RowFilter::All => true,
            RowFilter::Mask(a) => a[x],
            RowFilter::Digits(d) => d.iter().all(|(col, y)| col[x] == *y),
        }
    }
}

/// `(m, log Σ exp(z − m))` over the allowed entries of one row, `m` their maximum (kept apart:
/// `m − z_t + log Σ` keeps the precision of a small nll, `m + log Σ` would round it away).
#[inline(always)]
fn row_lse(z: &[f32], f: &RowFilter) -> (f32, f32) {
    let full = z.len() / LANES * LANES;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut m = f32::NEG_INFINITY;
    for i in (0..full).step_by(LANES) {
        let ok = f.chunk(i);
        let c = &z[i..i + LANES];
        for k in 0..LANES {
            let x = if ok[k] { c[k] } else { f32::NEG_INFINITY };
            acc[k] = if x > acc[k] { x } else { acc[k] };
        }
    }
    for (i, &x) in z.iter().enumerate().skip(full) {
        if f.one(i) {
            m = m.max(x);
        }
    }
    let m = acc.iter().fold(m, |m, &x| m.max(x));
    let mut acc = [0.0f32; LANES];
    let mut tail = 0.0f32;
    for i in (0..full).step_by(LANES) {
        let ok = f.chunk(i);
        let c = &z[i..i + LANES];
        for k in 0..LANES {
            let e = exp_f32(c[k] - m);
            acc[k] += if ok[k] { e } else { 0.0 };
        }
    }
    for (i, &x) in z.iter().enumerate().skip(full) {
        if f.one(i) {
            tail += exp_f32(x - m);
        }
    }
    (m, (acc.iter().sum::<f32>() + tail).ln())
}

/// `out[x] = scale·exp(z[x] − m − log Σ)` where allowed, `fill` elsewhere (the softmax times
/// `scale` for the gradient; with `scale = None` the log-probabilities, `z − m − log Σ`).
#[inline(always)]
fn row_write(
    z: &[f32],
    f: &RowFilter,
    (m, log_sum): (f32, f32),
    scale: Option<f32>,
    fill: f32,
    out: &mut [f32],
) {
    let full = z.len() / LANES * LANES;
    let value = |x: f32| match scale {
        Some(g) => g * exp_f32((x - m) - log_sum),
        None => (x - m) - log_sum,
    };
    for i in (0..full).step_by(LANES) {
        let ok = f.chunk(i);
        let (c, o) = (&z[i..i + LANES], &mut out[i..i + LANES]);
        for k in 0..LANES {
            let y = value(c[k]);
            o[k] = if ok[k] { y } else { fill };
        }
    }
    for i in full..z.len() {
        out[i] = if f.one(i) { value(z[i]) } else { fill };
    }
}

/// Per-row `(m, log Σ)` of a block of rows starting at row `r0`.
struct RowLse<'a> {
    z: &'a [f32],
    allowed: &'a Allowed,
    r0: usize,
    v: usize,
    lse: &'a mut [(f32, f32)],
}

impl WithSimd for RowLse<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (r, lse) in self.lse.iter_mut().enumerate() {
            let f = self.allowed.row(self.r0 + r, self.v);
            *lse = row_lse(&self.z[r * self.v..(r + 1) * self.v], &f);
        }
    }
}

/// A block of rows of [`row_write`], starting at row `r0`; `g[r]` scales row r (gradient) or
/// `g = None` writes log-probabilities (−∞ where not allowed).
struct RowWrite<'a> {
    z: &'a [f32],
    allowed: &'a Allowed,
    r0: usize,
    v: usize,
    lse: &'a [(f32, f32)],
    g: Option<&'a [f32]>,
    out: &'a mut [f32],
}

impl WithSimd for RowWrite<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let v = self.v;
        for (r, out) in self.out.chunks_exact_mut(v).enumerate() {
            let f = self.allowed.row(self.r0 + r, v);
            let z = &self.z[r * v..(r + 1) * v];
            match self.g {
                Some(g) => row_write(z, &f, self.lse[r], Some(g[r]), 0.0, out),
                None => row_write(z, &f, self.lse[r], None, f32::NEG_INFINITY, out),
            }
        }
    }
}

/// Rows per rayon task for `N × V` kernels (about `GRAIN` elements, at least one row).
fn rows_per_task(v: usize) -> usize {
    (GRAIN / v.max(1)).max(1)
}

/// `(m, log Σ)` of every row of `zs` (`n` rows of `v`), in parallel.
fn all_lse(zs: &[f32], allowed: &Allowed, n: usize, v: usize) -> Vec<(f32, f32)> {
    let mut lse = vec![(0.0f32, 0.0f32); n];
    let rows = rows_per_task(v);
    lse.par_chunks_mut(rows).enumerate().for_each(|(c, lse)| {
        let r0 = c * rows;
        simd(RowLse {
            z: &zs[r0 * v..(r0 + lse.len()) * v],
            allowed,
            r0,
            v,
            lse,
        })
    });
    lse
}

/// [`RowWrite`] over all `n` rows of `zs`, in parallel.
fn all_rows(
    zs: &[f32],
    allowed: &Allowed,
    v: usize,
    lse: &[(f32, f32)],
    g: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0.0f32; zs.len()];
    let rows = rows_per_task(v);
    out.par_chunks_mut(rows * v)
        .enumerate()
        .for_each(|(c, out)| {
            let r0 = c * rows;
            let r1 = r0 + out.len() / v;
            simd(RowWrite {
                z: &zs[r0 * v..r1 * v],
                allowed,
                r0,
                v,
                lse: &lse[r0..r1],
                g: g.map(|g| &g[r0..r1]),
                out,
            })
        });
    out
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

    /// `grad[r, x] = g[r]·(p(x) − [x = target_r])`, `p` the filtered softmax.
    fn backward(self, ops: Ops<NllState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let g = contiguous(grad);
            let g = f32s(&g);
            let zs = f32s(&st.logits);
            let n = st.targets.len();
            let v = zs.len() / n;
            let mut out = all_rows(zs, &st.allowed, v, &st.lse, Some(g));
            for (r, &t) in st.targets.iter().enumerate() {
                out[r * v + t as usize] -= g[r];
            }
            flex_from(out, &[n, v])
        });
    }
}

/// `−log p(target_r)` per row, `p = softmax` of `logits [N, V]` restricted to the allowed
/// classes of each row: the carry-over filter, log-softmax and gather of the paper objective in
/// one pass forward and one backward, never materialising the log-probabilities.
///
/// # Panics
/// When a target is not below V or not allowed in its row (the loss would be infinite).
///
/// # Shapes
/// `logits: [N, V]`, `targets: N` → `[N]`.
pub fn filtered_nll(logits: Tensor<2>, allowed: Allowed, targets: Arc<Vec<u32>>) -> Tensor<1> {
    let [n, v] = logits.dims();
    assert_eq!(targets.len(), n, "one target per row");
    allowed.check(n, v);
    if let Some(bad) = targets.iter().position(|&t| t as usize >= v) {
        panic!(
            "filtered_nll: target {} of row {bad} is not below V = {v}",
            targets[bad]
        );
    }
    if let Some(bad) = (0..n).find(|&r| !allowed.allows(r, targets[r] as usize, v)) {
        panic!("filtered_nll: the target of row {bad} is not an allowed class");
    }
    if n == 0 {
        return filtered_nll_composed(logits, allowed, &targets);
    }
    custom_unary(&logits, NllBackward, |prim| {
        let zs = f32s(&prim);
        let lse = all_lse(zs, &allowed, n, v);
        let nll = (0..n)
            .map(|r| (lse[r].0 - zs[r * v + targets[r] as usize]) + lse[r].1)
            .collect();
        let state = NllState {
            logits: prim,
            lse: Arc::new(lse),
            allowed: allowed.clone(),
            targets: targets.clone(),
        };
        (flex_from(nll, &[n]), state)
    })
    .unwrap_or_else(|| filtered_nll_composed(logits, allowed, &targets))
}

/// `log p` over each row of `logits [N, V]`, `p = softmax` restricted to the row's allowed
/// classes (−∞ elsewhere), in one pass per row — forward only: `Some` for a plain (non-autodiff)
/// flex tensor, `None` otherwise (the caller composes `mask_fill` + `log_softmax`). A row with no
/// allowed class comes out all −∞ (the composed version gives NaN there).
pub fn filtered_log_softmax(logits: &Tensor<2>, allowed: &Allowed) -> Option<Tensor<2>> {
    if logits.is_autodiff() || logits.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let [n, v] = logits.dims();
    if n == 0 || v == 0 {
        return None;
    }
    allowed.check(n, v);
    let prim = contiguous(logits.clone().try_into_primitive::<Flex>().ok()?);
    let zs = f32s(&prim);
    let lse = all_lse(zs, allowed, n, v);
    let out = all_rows(zs, allowed, v, &lse, None);
    Some(Tensor::from_primitive::<Flex>(flex_from(out, &[n, v])))
}

/// [`filtered_nll`] from burn's differentiable primitives: `mask_fill(−∞)`, `log_softmax`,
/// `gather` (its test oracle and its fallback off flex).
pub fn filtered_nll_composed(logits: Tensor<2>, allowed: Allowed, targets: &[u32]) -> Tensor<1> {
    let [n, v] = logits.dims();
    let device = logits.device();
    let logits = match allowed.to_mask(n, v) {
        Some(a) => {
            let a = Tensor::<2, Bool>::from_data(TensorData::new(a, [n, v]), &device);
            logits.mask_fill(a.bool_not(), f32::NEG_INFINITY)
        }
        None => logits,
    };
    let idx: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [n, 1]), &device);
    -log_softmax(logits, 1).gather(1, idx).reshape([n])
}

// ------------------------------------------------------------------------------------------------
// LayerNorm + adaLN modulation.

/// LayerNorm's ε (PyTorch's default, and the model's `layer_norm`).
pub const LN_EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
struct LnState {
    /// `[B, L, D]` normalised input `x̂`.
    xhat: Arc<Vec<f32>>,
    /// `1/σ` per row, `B·L`.
    rstd: Arc<Vec<f32>>,
    gamma: Arc<Vec<f32>>,
    /// `[B, D]`.
    scale: Arc<Vec<f32>>,
    dims: [usize; 3],
}

/// Forward on host slices: the output and the backward state.
fn ln_mod_forward(
    x: &[f32],
    gamma: &[f32],
    shift: &[f32],
    scale: &[f32],
    [b, l, d]: [usize; 3],
) -> (Vec<f32>, LnState) {
    let mut out = vec![0.0f32; b * l * d];
    let mut xhat = vec![0.0f32; b * l * d];
    let mut rstd = vec![0.0f32; b * l];
    out.par_chunks_mut(d)
        .zip(xhat.par_chunks_mut(d))
        .zip(rstd.par_iter_mut())
        .enumerate()
        .for_each(|(row, ((out, xh), rs))| {
            let xs = &x[row * d..(row + 1) * d];
            let bi = row / l;
            let (sh, sc) = (&shift[bi * d..(bi + 1) * d], &scale[bi * d..(bi + 1) * d]);
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let r = (1.0 / (var + LN_EPS).sqrt()) as f32;
            let mean = mean as f32;
            for k in 0..d {
                let h = (xs[k] - mean) * r;
                xh[k] = h;
                out[k] = h * gamma[k] * (1.0 + sc[k]) + sh[k];
            }
            *rs = r;
        });
    let state = LnState {
        xhat: Arc::new(xhat),
        rstd: Arc::new(rstd),
        gamma: Arc::new(gamma.to_vec()),
        scale: Arc::new(scale.to_vec()),
        dims: [b, l, d],
    };
    (out, state)
}

/// Gradients `(dx, dγ, dshift, dscale)` from `dy`.
fn ln_mod_backward(st: &LnState, dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let [b, l, d] = st.dims;
    let (xhat, gamma, scale) = (&st.xhat, &st.gamma, &st.scale);
    let mut dx = vec![0.0f32; b * l * d];
    // One task per sequence: its dx rows, its dshift/dscale rows and a partial dγ.
    let per_seq: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(l * d)
        .enumerate()
        .map(|(bi, dx)| {
            let sc = &scale[bi * d..(bi + 1) * d];
            let (mut dshift, mut dscale, mut dgamma) =
                (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f32; d]);
            let mut dxhat = vec![0.0f32; d];
            for li in 0..l {
                let row = bi * l + li;
                let (g, h) = (&dy[row * d..(row + 1) * d], &xhat[row * d..(row + 1) * d]);
                let (mut mean_dh, mut mean_dh_h) = (0.0f32, 0.0f32);
                for k in 0..d {
                    dshift[k] += g[k];
                    dscale[k] += g[k] * h[k] * gamma[k];
                    dgamma[k] += g[k] * h[k] * (1.0 + sc[k]);
                    dxhat[k] = g[k] * gamma[k] * (1.0 + sc[k]);
                    mean_dh += dxhat[k];
                    mean_dh_h += dxhat[k] * h[k];
                }
                let (mean_dh, mean_dh_h) = (mean_dh / d as f32, mean_dh_h / d as f32);
                let r = st.rstd[row];
                let out = &mut dx[li * d..(li + 1) * d];
                for k in 0..d {
                    out[k] = r * (dxhat[k] - mean_dh - h[k] * mean_dh_h);
                }
            }
            (dshift, dscale, dgamma)
        })
        .collect();
    let mut dgamma = vec![0.0f32; d];
    let (mut dshift, mut dscale) = (Vec::with_capacity(b * d), Vec::with_capacity(b * d));
    for (sh, sc, g) in per_seq {
        dshift.extend(sh);
        dscale.extend(sc);
        dgamma.iter_mut().zip(g).for_each(|(a, v)| *a += v);
    }
    (dx, dgamma, dshift, dscale)
}

#[derive(Debug)]
struct LnBackward;

impl Backward<Flex, 4> for LnBackward {
    type State = LnState;

    fn backward(self, ops: Ops<LnState, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (dx, dgamma, dshift, dscale) = ln_mod_backward(&st, f32s(&dy));
        let [b, l, d] = st.dims;
        let [px, pg, ps, pc] = ops.parents;
        for (parent, grad, shape) in [
            (px, dx, vec![b, l, d]),
            (pg, dgamma, vec![d]),
            (ps, dshift, vec![b, 1, d]),
            (pc, dscale, vec![b, 1, d]),
        ] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex_from(grad, &shape));
            }
        }
    }
}

/// `modulate(LayerNorm(x)·γ, shift, scale) = x̂·γ·(1 + scale) + shift` with `x̂` the row
/// normalisation of x (biased variance, ε = [`LN_EPS`], no bias): the pre-norm of every DiT
/// block and of the final layer (spec §6.2) as one op forward and one backward (f32 on flex, all
/// four inputs on the same kind of device); [`layer_norm_modulate_composed`] otherwise.
///
/// # Shapes
/// `x: [B, L, D]`, `gamma: [D]`, `shift, scale: [B, 1, D]` → `[B, L, D]`.
pub fn layer_norm_modulate(
    x: Tensor<3>,
    gamma: Tensor<1>,
    shift: Tensor<3>,
    scale: Tensor<3>,
) -> Tensor<3> {
    let [b, l, d] = x.dims();
    assert!(
        gamma.dims() == [d] && shift.dims() == [b, 1, d] && scale.dims() == [b, 1, d],
        "layer_norm_modulate: x [{b}, {l}, {d}] needs gamma [{d}] and shift, scale [{b}, 1, {d}]"
    );
    let f32_all = [x.dtype(), gamma.dtype(), shift.dtype(), scale.dtype()]
        .iter()
        .all(|&t| t == burn::tensor::DType::F32);
    let ad = [
        x.is_autodiff(),
        gamma.is_autodiff(),
        shift.is_autodiff(),
        scale.is_autodiff(),
    ];
    if f32_all && ad.iter().all(|&a| a) {
        let prims = (
            x.clone().try_into_primitive::<Ad>(),
            gamma.clone().try_into_primitive::<Ad>(),
            shift.clone().try_into_primitive::<Ad>(),
            scale.clone().try_into_primitive::<Ad>(),
        );
        if let (Ok(px), Ok(pg), Ok(ps), Ok(pc)) = prims {
            let (px, gx) = px.into_parts();
            let (pg, gg) = pg.into_parts();
            let (ps, gs) = ps.into_parts();
            let (pc, gc) = pc.into_parts();
            let prep = LnBackward
                .prepare::<NoCheckpointing>([gx, gg, gs, gc])
                .compute_bound()
                .stateful();
            let (px, pg, ps, pc) = (
                contiguous(px),
                contiguous(pg),
                contiguous(ps),
                contiguous(pc),
            );
            let (out, state) =
                ln_mod_forward(f32s(&px), f32s(&pg), f32s(&ps), f32s(&pc), [b, l, d]);
            let out = flex_from(out, &[b, l, d]);
            let t = match prep {
                OpsKind::Tracked(prep) => prep.finish(state, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            };
            return Tensor::from_primitive::<Ad>(t);
        }
    } else if f32_all && ad.iter().all(|&a| !a) {
        let prims = (
            x.clone().try_into_primitive::<Flex>(),
            gamma.clone().try_into_primitive::<Flex>(),
            shift.clone().try_into_primitive::<Flex>(),
            scale.clone().try_into_primitive::<Flex>(),
        );
        if let (Ok(px), Ok(pg), Ok(ps), Ok(pc)) = prims {
            let (px, pg, ps, pc) = (
                contiguous(px),
                contiguous(pg),
                contiguous(ps),
                contiguous(pc),
            );
            let (out, _) = ln_mod_forward(f32s(&px), f32s(&pg), f32s(&ps), f32s(&pc), [b, l, d]);
            return Tensor::from_primitive::<Flex>(flex_from(out, &[b, l, d]));
        }
    }
    layer_norm_modulate_composed(x, gamma, shift, scale)
}

/// [`layer_norm_modulate`] from burn's `layer_norm` and tensor ops: `modulate(x̂·γ)` with
/// `modulate(y) = y·(1 + scale) + shift` (spec §6.2).
pub fn layer_norm_modulate_composed(
    x: Tensor<3>,
    gamma: Tensor<1>,
    shift: Tensor<3>,
    scale: Tensor<3>,
) -> Tensor<3> {
    let xn = burn::tensor::module::layer_norm(x, gamma, None, LN_EPS);
    xn.clone() * scale + xn + shift
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

// ------------------------------------------------------------------------------------------------
// Dropout.

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

// ------------------------------------------------------------------------------------------------
// Rotary self-attention.

/// Rotary tables for positions `0..L`, GPT-NeoX "rotate half" layout (`freqs` repeated twice),
/// base 10000 (spec §6.2), on the host and as `[L, hd]` tensors.
#[derive(Debug, Clone)]
pub struct Rope {
    pub seq_len: usize,
    pub head_dim: usize,
    cos_host: Arc<Vec<f32>>,
    sin_host: Arc<Vec<f32>>,
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
}

impl Rope {
    pub fn new(seq_len: usize, head_dim: usize, device: &burn::tensor::Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(seq_len * head_dim);
        let mut sin = Vec::with_capacity(seq_len * head_dim);
        for pos in 0..seq_len {
            let angles: Vec<f64> = (0..half)
                .map(|i| pos as f64 * 10000f64.powf(-((2 * i) as f64) / head_dim as f64))
                .collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos() as f32));
                sin.extend(angles.iter().map(|a| a.sin() as f32));
            }
        }
        let mk = |v: &Vec<f32>| {
            Tensor::from_data(TensorData::new(v.clone(), [seq_len, head_dim]), device)
        };
        Rope {
            seq_len,
            head_dim,
            cos: mk(&cos),
            sin: mk(&sin),
            cos_host: Arc::new(cos),
            sin_host: Arc::new(sin),
        }
    }
}

/// `x·cos + rotate_half(x)·sin` with `rotate_half([x1, x2]) = [−x2, x1]` on one row of hd.
#[inline(always)]
fn rotate_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        out[i] = x[i] * cos[i] - x[i + half] * sin[i];
        out[i + half] = x[i + half] * cos[i + half] + x[i] * sin[i + half];
    }
}

/// The adjoint of [`rotate_row`]: the gradient of its input from the gradient of its output.
#[inline(always)]
fn unrotate_row(g: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = g.len() / 2;
    for i in 0..half {
        out[i] = g[i] * cos[i] + g[i + half] * sin[i + half];
        out[i + half] = g[i + half] * cos[i + half] - g[i] * sin[i];
    }
}

/// Dimensions of one attention call.
#[derive(Debug, Clone, Copy)]
struct AttnDims {
    b: usize,
    l: usize,
    h: usize,
    hd: usize,
}

impl AttnDims {
    fn d(&self) -> usize {
        self.h * self.hd
    }
}

/// Splits `qkv [B, L, 3D]` into rotated q, rotated k and v, each `[B·H, L, hd]`.
fn split_heads(qkv: &[f32], dims: AttnDims, rope: &Rope) -> [Vec<f32>; 3] {
    let AttnDims { l, h, hd, .. } = dims;
    let d = dims.d();
    let block = l * hd;
    let mut out = [
        vec![0.0f32; dims.b * h * block],
        vec![0.0f32; dims.b * h * block],
        vec![0.0f32; dims.b * h * block],
    ];
    for (part, buf) in out.iter_mut().enumerate() {
        buf.par_chunks_mut(block).enumerate().for_each(|(bh, dst)| {
            let (bi, hi) = (bh / h, bh % h);
            for li in 0..l {
                let src = &qkv[(bi * l + li) * 3 * d + part * d + hi * hd..][..hd];
                let row = &mut dst[li * hd..(li + 1) * hd];
                if part == 2 {
                    row.copy_from_slice(src);
                } else {
                    let t = li * hd..(li + 1) * hd;
                    rotate_row(src, &rope.cos_host[t.clone()], &rope.sin_host[t], row);
                }
            }
        });
    }
    out
}

/// `[B·H, L, hd]` → `[B, L, H·hd]`.
fn merge_heads(x: &[f32], dims: AttnDims) -> Vec<f32> {
    let AttnDims { l, h, hd, .. } = dims;
    let d = dims.d();
    let mut out = vec![0.0f32; dims.b * l * d];
    out.par_chunks_mut(d).enumerate().for_each(|(bl, row)| {
        let (bi, li) = (bl / l, bl % l);
        for hi in 0..h {
            row[hi * hd..(hi + 1) * hd].copy_from_slice(&x[((bi * h + hi) * l + li) * hd..][..hd]);
        }
    });
    out
}

/// `[B, L, H·hd]` → `[B·H, L, hd]`.
fn split_grad(g: &[f32], dims: AttnDims) -> Vec<f32> {
    let AttnDims { l, h, hd, .. } = dims;
    let d = dims.d();
    let mut out = vec![0.0f32; dims.b * h * l * hd];
    out.par_chunks_mut(l * hd)
        .enumerate()
        .for_each(|(bh, dst)| {
            let (bi, hi) = (bh / h, bh % h);
            for li in 0..l {
                dst[li * hd..(li + 1) * hd]
                    .copy_from_slice(&g[(bi * l + li) * d + hi * hd..][..hd]);
            }
        });
    out
}

/// The maximum of a row.
#[inline(always)]
fn row_max(z: &[f32]) -> f32 {
    let chunks = z.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut acc = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for k in 0..LANES {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// Row softmax of `scale·s` in place.
struct SoftmaxRows<'a> {
    s: &'a mut [f32],
    n: usize,
    scale: f32,
}

impl WithSimd for SoftmaxRows<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for row in self.s.chunks_exact_mut(self.n) {
            let m = row_max(row);
            let mut acc = [0.0f32; LANES];
            let mut tail = 0.0f32;
            let mut chunks = row.chunks_exact_mut(LANES);
            for c in &mut chunks {
                for k in 0..LANES {
                    c[k] = exp_f32((c[k] - m) * self.scale);
                    acc[k] += c[k];
                }
            }
            for x in chunks.into_remainder() {
                *x = exp_f32((*x - m) * self.scale);
                tail += *x;
            }
            let inv = 1.0 / (acc.iter().sum::<f32>() + tail);
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

/// `ds = scale·p∘(dp − Σ_row dp∘p)` in place of `dp`.
struct SoftmaxGradRows<'a> {
    p: &'a [f32],
    dp: &'a mut [f32],
    n: usize,
    scale: f32,
}

impl WithSimd for SoftmaxGradRows<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (dp, p) in self
            .dp
            .chunks_exact_mut(self.n)
            .zip(self.p.chunks_exact(self.n))
        {
            let mut acc = [0.0f32; LANES];
            let mut tail = 0.0f32;
            let (dc, pc) = (dp.chunks_exact(LANES), p.chunks_exact(LANES));
            let (dr, pr) = (dc.remainder(), pc.remainder());
            for (a, b) in dc.zip(pc) {
                for k in 0..LANES {
                    acc[k] += a[k] * b[k];
                }
            }
            for (a, b) in dr.iter().zip(pr) {
                tail += a * b;
            }
            let dot = acc.iter().sum::<f32>() + tail;
            for (x, &q) in dp.iter_mut().zip(p) {
                *x = self.scale * q * (*x - dot);
            }
        }
    }
}

fn softmax_rows(s: &mut [f32], n: usize, scale: f32) {
    let rows = rows_per_task(n);
    s.par_chunks_mut(rows * n)
        .for_each(|s| simd(SoftmaxRows { s, n, scale }));
}

fn matmul(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    contiguous(burn_flex::ops::matmul::matmul(a.clone(), b.clone()))
}

/// Transposes the last two dims (a view).
fn t12(x: &FlexTensor) -> FlexTensor {
    x.transpose(1, 2)
}

#[derive(Debug, Clone)]
struct AttnState {
    dims: AttnDims,
    /// The rotary tables `[L, hd]` (host copies of [`Rope`]'s).
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    /// Attention probabilities `[B·H, L, L]`.
    p: FlexTensor,
}

/// Forward on flex primitives: the output `[B, L, D]` and what the backward pass needs.
fn attention_forward(qkv: &FlexTensor, dims: AttnDims, rope: &Rope) -> (FlexTensor, AttnState) {
    let AttnDims { b, l, h, hd } = dims;
    let [q, k, v] = split_heads(f32s(qkv), dims, rope);
    let shape = [b * h, l, hd];
    let (q, k, v) = (
        flex_from(q, &shape),
        flex_from(k, &shape),
        flex_from(v, &shape),
    );
    let mut p = f32s(&matmul(&q, &t12(&k))).to_vec();
    softmax_rows(&mut p, l, 1.0 / (hd as f32).sqrt());
    let p = flex_from(p, &[b * h, l, l]);
    let o = matmul(&p, &v);
    let out = flex_from(merge_heads(f32s(&o), dims), &[b, l, dims.d()]);
    (
        out,
        AttnState {
            dims,
            cos: rope.cos_host.clone(),
            sin: rope.sin_host.clone(),
            q,
            k,
            v,
            p,
        },
    )
}

#[derive(Debug)]
struct AttnBackward;

impl Backward<Flex, 1> for AttnBackward {
    type State = AttnState;

    fn backward(self, ops: Ops<AttnState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let dims = st.dims;
            let AttnDims { b, l, h, hd } = dims;
            let d = dims.d();
            let d_o = flex_from(split_grad(f32s(&contiguous(grad)), dims), &[b * h, l, hd]);
            let dv = matmul(&t12(&st.p), &d_o);
            let mut ds = f32s(&matmul(&d_o, &t12(&st.v))).to_vec();
            let (p, scale) = (f32s(&st.p), 1.0 / (hd as f32).sqrt());
            let rows = rows_per_task(l);
            ds.par_chunks_mut(rows * l)
                .zip(p.par_chunks(rows * l))
                .for_each(|(dp, p)| simd(SoftmaxGradRows { p, dp, n: l, scale }));
            let ds = flex_from(ds, &[b * h, l, l]);
            let dq = matmul(&ds, &st.k);
            let dk = matmul(&t12(&ds), &st.q);
            let (dq, dk, dv) = (f32s(&dq), f32s(&dk), f32s(&dv));
            // Back to [B, L, 3D], undoing the rotation of q and k.
            let mut out = vec![0.0f32; b * l * 3 * d];
            out.par_chunks_mut(3 * d).enumerate().for_each(|(bl, row)| {
                let (bi, li) = (bl / l, bl % l);
                let t = li * hd..(li + 1) * hd;
                let (cos, sin) = (&st.cos[t.clone()], &st.sin[t]);
                for hi in 0..h {
                    let src = ((bi * h + hi) * l + li) * hd;
                    unrotate_row(&dq[src..src + hd], cos, sin, &mut row[hi * hd..][..hd]);
                    unrotate_row(&dk[src..src + hd], cos, sin, &mut row[d + hi * hd..][..hd]);
                    row[2 * d + hi * hd..][..hd].copy_from_slice(&dv[src..src + hd]);
                }
            });
            flex_from(out, &[b, l, 3 * d])
        });
    }
}

/// Bidirectional multi-head self-attention with rotary q/k (spec §6.2) from the fused
/// projection `qkv [B, L, 3D]` (laid out `[3, H, hd]` in the last dim) to the heads' outputs
/// `[B, L, D]` (before the output projection): split into heads, rotate, `softmax(q·kᵀ/√hd)·v`,
/// merge heads — one op forward and one backward (the probabilities are kept, the scores are
/// not). [`rotary_attention_composed`] is its oracle and its fallback off flex.
pub fn rotary_attention(qkv: Tensor<3>, heads: usize, rope: &Rope) -> Tensor<3> {
    let [b, l, d3] = qkv.dims();
    assert!(
        d3 % (3 * heads) == 0 && l == rope.seq_len && d3 / 3 / heads == rope.head_dim,
        "qkv [{b}, {l}, {d3}] does not match {heads} heads and rotary tables [{}, {}]",
        rope.seq_len,
        rope.head_dim
    );
    let dims = AttnDims {
        b,
        l,
        h: heads,
        hd: d3 / 3 / heads,
    };
    custom_unary(&qkv, AttnBackward, |prim| {
        attention_forward(&prim, dims, rope)
    })
    .unwrap_or_else(|| rotary_attention_composed(qkv, heads, rope))
}

/// [`rotary_attention`] from burn's differentiable primitives.
pub fn rotary_attention_composed(qkv: Tensor<3>, heads: usize, rope: &Rope) -> Tensor<3> {
    let [b, l, d3] = qkv.dims();
    let (h, hd) = (heads, d3 / 3 / heads);
    let qkv = qkv.reshape([b, l, 3, h, hd]);
    let part = |i: usize| {
        qkv.clone()
            .narrow(2, i, 1)
            .reshape([b, l, h, hd])
            .swap_dims(1, 2)
    };
    let rotate = |x: Tensor<4>| {
        let half = hd / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![-x2, x1], 3);
        let cos = rope.cos.clone().reshape([1, 1, l, hd]);
        let sin = rope.sin.clone().reshape([1, 1, l, hd]);
        x * cos + rotated * sin
    };
    let q = rotate(part(0));
    let k = rotate(part(1));
    let v = part(2);
    let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt();
    burn::tensor::activation::softmax(scores, 3)
        .matmul(v)
        .swap_dims(1, 2)
        .reshape([b, l, h * hd])
}
