//! The carry-over filter, log-softmax and gather fused: the paper objective's NLL (with its
//! backward) and the log-probabilities of sampling and evaluation.

use std::sync::Arc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::{Flex, FlexTensor};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{LANES, contiguous, custom_unary, exp_f32, f32s, flex_from, rows_per_task, simd};

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
pub(super) enum RowFilter<'a> {
    All,
    Mask(&'a [bool]),
    /// `(digit column, revealed value)` for each revealed slot (at least one).
    Digits(Vec<(&'a [u32], u32)>),
}

impl Allowed {
    /// The filter of row `r` (of V classes).
    pub(super) fn row(&self, r: usize, v: usize) -> RowFilter<'_> {
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
    pub(super) fn check(&self, n: usize, v: usize) {
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

    /// Panics (naming `op`) unless every target is below V and allowed in its row: the loss
    /// would be infinite.
    pub(super) fn check_targets(&self, targets: &[u32], v: usize, op: &str) {
        if let Some(bad) = targets.iter().position(|&t| t as usize >= v) {
            panic!(
                "{op}: target {} of row {bad} is not below V = {v}",
                targets[bad]
            );
        }
        if let Some(bad) = (0..targets.len()).find(|&r| !self.allows(r, targets[r] as usize, v)) {
            panic!("{op}: the target of row {bad} is not an allowed class");
        }
    }

    /// `logits [N, V]` with −∞ on the classes this filter excludes (the composed versions').
    pub(super) fn mask_logits(&self, logits: Tensor<2>) -> Tensor<2> {
        let [n, v] = logits.dims();
        match self.to_mask(n, v) {
            Some(a) => {
                let a = Tensor::<2, Bool>::from_data(TensorData::new(a, [n, v]), &logits.device());
                logits.mask_fill(a.bool_not(), f32::NEG_INFINITY)
            }
            None => logits,
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
    pub(super) fn chunk(&self, i: usize) -> [bool; LANES] {
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
    pub(super) fn one(&self, x: usize) -> bool {
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
pub(super) fn row_lse(z: &[f32], f: &RowFilter) -> (f32, f32) {
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
    let value = |x: f32| match scale {
        Some(g) => g * exp_f32((x - m) - log_sum),
        None => (x - m) - log_sum,
    };
    row_map(z, f, value, |_, y, ok| if ok { y } else { fill }, out);
}

/// `out[x] = combine(out[x], value(z[x]), allowed(x))` over one row, 16 classes at a time (the
/// loop [`row_write`] and the digit kernel's accumulation share).
#[inline(always)]
pub(super) fn row_map(
    z: &[f32],
    f: &RowFilter,
    value: impl Fn(f32) -> f32,
    combine: impl Fn(f32, f32, bool) -> f32,
    out: &mut [f32],
) {
    let full = z.len() / LANES * LANES;
    for i in (0..full).step_by(LANES) {
        let ok = f.chunk(i);
        let (c, o) = (&z[i..i + LANES], &mut out[i..i + LANES]);
        for k in 0..LANES {
            o[k] = combine(o[k], value(c[k]), ok[k]);
        }
    }
    for i in full..z.len() {
        out[i] = combine(out[i], value(z[i]), f.one(i));
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
    allowed.check_targets(&targets, v, "filtered_nll");
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
    let [n, _] = logits.dims();
    let device = logits.device();
    let logits = allowed.mask_logits(logits);
    let idx: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [n, 1]), &device);
    -log_softmax(logits, 1).gather(1, idx).reshape([n])
}
