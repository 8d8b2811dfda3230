//! The valid bound's loss fused (design §4.5): the carry-over filter, the log-softmax and the
//! digit log-marginals of every masked sub-token, row by row, never materialising the
//! log-probabilities.
//!
//! Per row r with logits z over V, allowed set A (the carry-over filter) and clean token x₀:
//! `S_j = {x ∈ A : digit_j(x) = digit_j(x₀)}`, and the row's loss is
//!
//! ```text
//! Σ_{j masked} −log p̄_j = Σ_{j masked} (lse_A(z) − lse_{S_j}(z)),   lse_S(z) = log Σ_{x ∈ S} e^{z_x}
//! ∂/∂z_x = Σ_{j masked} (p_A(x) − [x ∈ S_j]·e^{z_x − lse_{S_j}}),     p_A = softmax over A.
//! ```
//!
//! The composed version ([`digit_nll_composed`]: mask_fill, log_softmax, one masked log-sum-exp
//! per digit, as [`crate::subtoken::PrimeTables::digit_log_marginals_at`] does on `[B, L, V]`) is
//! the test oracle; off flex the callers keep their tensor path. At GPT-2's V = 50,257 and ℓ = 4 the composed one materialises a dozen `N × V`
//! tensors forward and more backward, most of them on one core (`mdm-prime bench --objective
//! elbo --profile`, docs/performance.md).

use std::sync::Arc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::{Flex, FlexTensor};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::nll::{RowFilter, row_lse, row_map};
use super::{Allowed, contiguous, custom_unary, exp_f32, f32s, flex_from, rows_per_task, simd};

/// The clean tokens of N rows and which of their ℓ sub-tokens are masked (the terms that count).
#[derive(Debug)]
pub struct DigitTargets {
    /// `columns[j][x]`: digit j of class x (ℓ columns of V), the codec's digit table.
    pub columns: Arc<Vec<Vec<u32>>>,
    /// The clean token x₀ of each row (N).
    pub targets: Vec<u32>,
    /// `N·ℓ` flags, token-major: digit j of row r is masked, so its term counts.
    pub masked: Vec<bool>,
}

impl DigitTargets {
    fn ell(&self) -> usize {
        self.columns.len()
    }

    /// The digit columns and clean values of row r's masked digits.
    fn masked_digits(&self, r: usize) -> impl Iterator<Item = (&[u32], u32)> {
        let (ell, x0) = (self.ell(), self.targets[r] as usize);
        (0..ell)
            .filter(move |&j| self.masked[r * ell + j])
            .map(move |j| (self.columns[j].as_slice(), self.columns[j][x0]))
    }
}

/// `f` further restricted to the classes whose digit in `col` is `y` (a digit filter or none:
/// [`digit_nll_fused`] does not take row masks).
fn restrict<'a>(f: &RowFilter<'a>, col: &'a [u32], y: u32) -> RowFilter<'a> {
    match f {
        RowFilter::All => RowFilter::Digits(vec![(col, y)]),
        RowFilter::Digits(d) => {
            let mut d = d.clone();
            d.push((col, y));
            RowFilter::Digits(d)
        }
        RowFilter::Mask(_) => unreachable!("digit_nll_fused refuses row masks"),
    }
}

/// `out[x] += scale·e^{z_x − m − log Σ}` on the classes `f` allows.
#[inline(always)]
fn row_add(z: &[f32], f: &RowFilter, (m, log_sum): (f32, f32), scale: f32, out: &mut [f32]) {
    let value = |x: f32| scale * exp_f32((x - m) - log_sum);
    row_map(z, f, value, |o, y, ok| o + if ok { y } else { 0.0 }, out);
}

/// Per row: `lse_A` and `lse_{S_j}` of each masked digit j in order, as `(m, log Σ)` pairs.
type RowLses = Vec<(f32, f32)>;

/// A block of rows' log-sum-exps, starting at row `r0`.
struct Lses<'a> {
    z: &'a [f32],
    allowed: &'a Allowed,
    digits: &'a DigitTargets,
    r0: usize,
    v: usize,
    out: &'a mut [RowLses],
}

impl WithSimd for Lses<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (i, out) in self.out.iter_mut().enumerate() {
            let r = self.r0 + i;
            let z = &self.z[i * self.v..(i + 1) * self.v];
            let f = self.allowed.row(r, self.v);
            out.push(row_lse(z, &f));
            for (col, y) in self.digits.masked_digits(r) {
                out.push(row_lse(z, &restrict(&f, col, y)));
            }
        }
    }
}

/// A block of rows of the gradient, starting at row `r0`: `g[r]·(k·p_A − Σ_j p_{S_j})`.
struct Grads<'a> {
    z: &'a [f32],
    allowed: &'a Allowed,
    digits: &'a DigitTargets,
    lses: &'a [RowLses],
    g: &'a [f32],
    r0: usize,
    v: usize,
    out: &'a mut [f32],
}

impl WithSimd for Grads<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let v = self.v;
        for (i, out) in self.out.chunks_exact_mut(v).enumerate() {
            let r = self.r0 + i;
            let (z, lse, g) = (&self.z[i * v..(i + 1) * v], &self.lses[i], self.g[i]);
            let k = lse.len() - 1;
            if k == 0 || g == 0.0 {
                continue;
            }
            let f = self.allowed.row(r, v);
            row_add(z, &f, lse[0], g * k as f32, out);
            for ((col, y), &lse_j) in self.digits.masked_digits(r).zip(&lse[1..]) {
                row_add(z, &restrict(&f, col, y), lse_j, -g, out);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct DigitNllState {
    logits: FlexTensor,
    lses: Arc<Vec<RowLses>>,
    allowed: Allowed,
    digits: Arc<DigitTargets>,
}

#[derive(Debug)]
struct DigitNllBackward;

impl Backward<Flex, 1> for DigitNllBackward {
    type State = DigitNllState;

    fn backward(self, ops: Ops<DigitNllState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let g = contiguous(grad);
            let g = f32s(&g);
            let zs = f32s(&st.logits);
            let n = st.lses.len();
            let v = zs.len() / n;
            let mut out = vec![0.0f32; zs.len()];
            let rows = rows_per_task(v);
            out.par_chunks_mut(rows * v)
                .enumerate()
                .for_each(|(c, out)| {
                    let r0 = c * rows;
                    let r1 = r0 + out.len() / v;
                    simd(Grads {
                        z: &zs[r0 * v..r1 * v],
                        allowed: &st.allowed,
                        digits: &st.digits,
                        lses: &st.lses[r0..r1],
                        g: &g[r0..r1],
                        r0,
                        v,
                        out,
                    })
                });
            flex_from(out, &[n, v])
        });
    }
}

/// `Σ_{j masked} −log p̄_j(digit_j(x₀))` per row: the valid bound's unweighted terms (design
/// §4.5) from logits `[N, V]`, `p` the softmax restricted to each row's allowed classes and `p̄_j`
/// its marginal on digit j. Fused: on an f32 flex tensor (with autodiff: its backward recorded)
/// and a digit filter or none, two passes over each row per set `A`, `S_j` forward (maximum,
/// then sum) and one per set backward, rows in parallel. `None` otherwise (another device, a
/// row-mask filter, no rows): the caller keeps its tensor path
/// ([`crate::subtoken::PrimeTables::digit_log_marginals_at`], digits compared on the device).
///
/// # Panics
/// When a target is not below V or not allowed in its row (the loss would be infinite), or the
/// shapes disagree.
///
/// # Shapes
/// `logits: [N, V]`, `digits`: N targets, `N·ℓ` flags → `[N]`.
pub fn digit_nll_fused(
    logits: &Tensor<2>,
    allowed: &Allowed,
    digits: &Arc<DigitTargets>,
) -> Option<Tensor<1>> {
    let [n, v] = logits.dims();
    check(n, v, allowed, digits);
    if n == 0 || matches!(allowed, Allowed::Mask(_)) {
        return None;
    }
    custom_unary(logits, DigitNllBackward, |prim| {
        let _span = crate::profile::span("filter+log_softmax+digit marginals (fused)");
        let (nll, lses) = forward(f32s(&prim), allowed, digits, n, v);
        let state = DigitNllState {
            logits: prim,
            lses: Arc::new(lses),
            allowed: allowed.clone(),
            digits: digits.clone(),
        };
        (flex_from(nll, &[n]), state)
    })
}

/// The forward pass over `n` rows of `v` logits, rows in parallel: each row's loss and its
/// log-sum-exps (what the backward needs).
fn forward(
    zs: &[f32],
    allowed: &Allowed,
    digits: &DigitTargets,
    n: usize,
    v: usize,
) -> (Vec<f32>, Vec<RowLses>) {
    let mut lses: Vec<RowLses> = vec![Vec::new(); n];
    let rows = rows_per_task(v);
    lses.par_chunks_mut(rows).enumerate().for_each(|(c, out)| {
        let r0 = c * rows;
        simd(Lses {
            z: &zs[r0 * v..(r0 + out.len()) * v],
            allowed,
            digits,
            r0,
            v,
            out,
        })
    });
    // (m_A − m_j) + (log Σ_A − log Σ_j): the maxima apart keeps a small term's precision.
    let nll = lses
        .iter()
        .map(|l| {
            l[1..]
                .iter()
                .map(|lj| (l[0].0 - lj.0) + (l[0].1 - lj.1))
                .sum()
        })
        .collect();
    (nll, lses)
}

/// Panics unless the filter, the targets and the flags describe `n` rows of `v` classes, every
/// target below V and allowed in its row.
fn check(n: usize, v: usize, allowed: &Allowed, digits: &DigitTargets) {
    allowed.check(n, v);
    let ell = digits.ell();
    assert!(
        digits.columns.iter().all(|c| c.len() == v),
        "digit_nll: the digit columns must have V = {v} entries"
    );
    assert_eq!(digits.targets.len(), n, "digit_nll: one target per row");
    assert_eq!(
        digits.masked.len(),
        n * ell,
        "digit_nll: ℓ masked flags per row"
    );
    allowed.check_targets(&digits.targets, v, "digit_nll");
}

/// [`digit_nll_fused`] from burn's differentiable primitives: `mask_fill(−∞)` and `log_softmax`
/// over the allowed classes, then per digit a `mask_fill` to the classes sharing the target's
/// digit (masks built on the host) and a log-sum-exp: its test oracle, for any filter.
pub fn digit_nll_composed(logits: Tensor<2>, allowed: Allowed, digits: &DigitTargets) -> Tensor<1> {
    let [n, v] = logits.dims();
    let device = logits.device();
    let lp = log_softmax(allowed.mask_logits(logits), 1);
    let ell = digits.ell();
    let mut total = Tensor::<1>::zeros([n], &device);
    for j in 0..ell {
        let col = &digits.columns[j];
        let other: Vec<bool> = digits
            .targets
            .iter()
            .flat_map(|&t| col.iter().map(move |&d| d != col[t as usize]))
            .collect();
        let other = Tensor::<2, Bool>::from_data(TensorData::new(other, [n, v]), &device);
        let x = lp.clone().mask_fill(other, f32::NEG_INFINITY);
        let max = x.clone().max_dim(1).detach();
        let marg = ((x - max.clone()).exp().sum_dim(1).log() + max).reshape([n]);
        let masked: Vec<f32> = (0..n)
            .map(|r| f32::from(u8::from(digits.masked[r * ell + j])))
            .collect();
        let masked = Tensor::<1>::from_data(TensorData::new(masked, [n]), &device);
        total = total - marg * masked;
    }
    total
}
