//! GroupNorm with a per-channel affine, optionally followed by SiLU, as one op with its backward.

use std::sync::Arc;

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{LANES, contiguous, custom_op, exp_f32, f32s, flex_from, input, lane_sum, simd};

/// GroupNorm's ε (PyTorch's default, used by ADM's `GroupNorm32`).
pub const GN_EPS: f64 = 1e-5;

/// Dimensions of one call: `G` groups of `cg` channels of `H·W` pixels.
#[derive(Debug, Clone, Copy)]
struct GnDims {
    c: usize,
    h: usize,
    w: usize,
    groups: usize,
    silu: bool,
}

impl GnDims {
    /// Channels per group.
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// Elements per (image, group) row: `cg·H·W`.
    fn m(&self) -> usize {
        self.cg() * self.hw()
    }
}

/// `σ(z) = 1/(1 + e^{−z})`.
#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-z))
}

/// Forward on one (image, group) row: its mean and `1/σ`, and `y = act(x̂·g_c + b_c)`.
struct GnRow<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    /// The group's `g, b` (`cg` each).
    g: &'a [f32],
    b: &'a [f32],
    silu: bool,
}

impl WithSimd for GnRow<'_> {
    /// `(mean, 1/σ)`.
    type Output = (f32, f32);
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> (f32, f32) {
        let (xs, m) = (self.x, self.x.len() as f32);
        let hw = xs.len() / self.g.len();
        let mean = lane_sum(xs, |x| x) / m;
        let var = lane_sum(xs, |x| (x - mean) * (x - mean)) / m;
        let rstd = 1.0 / (var + GN_EPS as f32).sqrt();
        for (c, (y, x)) in self
            .y
            .chunks_exact_mut(hw)
            .zip(xs.chunks_exact(hw))
            .enumerate()
        {
            let (g, b) = (self.g[c], self.b[c]);
            if self.silu {
                y.iter_mut().zip(x).for_each(|(y, &x)| {
                    let z = (x - mean) * rstd * g + b;
                    *y = z * sigmoid(z);
                });
            } else {
                y.iter_mut()
                    .zip(x)
                    .for_each(|(y, &x)| *y = (x - mean) * rstd * g + b);
            }
        }
        (mean, rstd)
    }
}

/// Backward on one (image, group) row: `dx` (in place of `dy`) and the group's partial
/// `dg, db` (`cg` each, added to).
struct GnRowGrad<'a> {
    x: &'a [f32],
    /// `dy` in, `dx` out.
    d: &'a mut [f32],
    g: &'a [f32],
    b: &'a [f32],
    dg: &'a mut [f32],
    db: &'a mut [f32],
    mean: f32,
    rstd: f32,
    silu: bool,
}

impl WithSimd for GnRowGrad<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let (mean, rstd, silu) = (self.mean, self.rstd, self.silu);
        let hw = self.x.len() / self.g.len();
        // Pass 1: dz = dy·act'(z), dg_c = Σ dz·x̂, db_c = Σ dz, d ← dx̂ = dz·g_c, and the row
        // sums Σ dx̂, Σ dx̂·x̂.
        let (mut s1, mut s2) = ([0.0f32; LANES], [0.0f32; LANES]);
        let (mut t1, mut t2) = (0.0f32, 0.0f32);
        for (c, (d, x)) in self
            .d
            .chunks_exact_mut(hw)
            .zip(self.x.chunks_exact(hw))
            .enumerate()
        {
            let (g, b) = (self.g[c], self.b[c]);
            let (mut ag, mut ab) = ([0.0f32; LANES], [0.0f32; LANES]);
            let (mut tg, mut tb) = (0.0f32, 0.0f32);
            let step = |d: &mut f32, x: f32| -> (f32, f32) {
                let xh = (x - mean) * rstd;
                let dz = if silu {
                    let z = xh * g + b;
                    let s = sigmoid(z);
                    *d * s * (1.0 + z * (1.0 - s))
                } else {
                    *d
                };
                *d = dz * g;
                (dz, xh)
            };
            let mut dc = d.chunks_exact_mut(LANES);
            let mut xc = x.chunks_exact(LANES);
            for (d, x) in (&mut dc).zip(&mut xc) {
                for k in 0..LANES {
                    let (dz, xh) = step(&mut d[k], x[k]);
                    ag[k] += dz * xh;
                    ab[k] += dz;
                    s1[k] += d[k];
                    s2[k] += d[k] * xh;
                }
            }
            for (d, &x) in dc.into_remainder().iter_mut().zip(xc.remainder()) {
                let (dz, xh) = step(d, x);
                tg += dz * xh;
                tb += dz;
                t1 += *d;
                t2 += *d * xh;
            }
            self.dg[c] += ag.iter().sum::<f32>() + tg;
            self.db[c] += ab.iter().sum::<f32>() + tb;
        }
        // Pass 2: dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂))/σ.
        let m = self.x.len() as f32;
        let m1 = (s1.iter().sum::<f32>() + t1) / m;
        let m2 = (s2.iter().sum::<f32>() + t2) / m;
        for (d, &x) in self.d.iter_mut().zip(self.x) {
            let xh = (x - mean) * rstd;
            *d = rstd * (*d - m1 - xh * m2);
        }
    }
}

#[derive(Debug, Clone)]
struct GnState {
    /// The input `[B, C, H, W]` (contiguous).
    x: FlexTensor,
    g: FlexTensor,
    b: FlexTensor,
    /// Mean and `1/σ` per (image, group), `B·G` each.
    stats: Arc<Vec<(f32, f32)>>,
    dims: GnDims,
}

fn gn_forward(x: &[f32], g: &[f32], b: &[f32], d: GnDims) -> (Vec<f32>, Vec<(f32, f32)>) {
    let (m, cg) = (d.m(), d.cg());
    let mut y = vec![0.0f32; x.len()];
    let stats = y
        .par_chunks_mut(m)
        .zip(x.par_chunks(m))
        .enumerate()
        .map(|(row, (y, x))| {
            let gi = row % d.groups;
            let ch = gi * cg..(gi + 1) * cg;
            simd(GnRow {
                x,
                y,
                g: &g[ch.clone()],
                b: &b[ch],
                silu: d.silu,
            })
        })
        .collect();
    (y, stats)
}

#[derive(Debug)]
struct GnBackward;

impl Backward<Flex, 3> for GnBackward {
    type State = GnState;

    fn backward(self, ops: Ops<GnState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let GnState {
            x,
            g,
            b,
            stats,
            dims: d,
        } = ops.state;
        let (m, cg, c) = (d.m(), d.cg(), d.c);
        // dx in place of dy (copied first only if dy is shared).
        let mut dx = contiguous(grads.consume::<Flex>(&ops.node));
        let (xs, gs, bs) = (f32s(&x), f32s(&g), f32s(&b));
        // Per (image, group): dx in place, and that group's partial dg, db.
        let parts: Vec<(Vec<f32>, Vec<f32>)> = dx
            .storage_mut::<f32>()
            .par_chunks_mut(m)
            .zip(xs.par_chunks(m))
            .enumerate()
            .map(|(row, (dd, x))| {
                let gi = row % d.groups;
                let ch = gi * cg..(gi + 1) * cg;
                let (mut dg, mut db) = (vec![0.0f32; cg], vec![0.0f32; cg]);
                let (mean, rstd) = stats[row];
                simd(GnRowGrad {
                    x,
                    d: dd,
                    g: &gs[ch.clone()],
                    b: &bs[ch],
                    dg: &mut dg,
                    db: &mut db,
                    mean,
                    rstd,
                    silu: d.silu,
                });
                (dg, db)
            })
            .collect();
        let (mut dg, mut db) = (vec![0.0f32; c], vec![0.0f32; c]);
        for (row, (pg, pb)) in parts.iter().enumerate() {
            let c0 = (row % d.groups) * cg;
            for k in 0..cg {
                dg[c0 + k] += pg[k];
                db[c0 + k] += pb[k];
            }
        }
        let [px, pg, pb] = ops.parents;
        if let Some(node) = px {
            grads.register::<Flex>(node.id, dx);
        }
        for (parent, grad) in [(pg, dg), (pb, db)] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex_from(grad, &[c]));
            }
        }
    }
}

/// `act(x̂·g + b)` with `x̂` GroupNorm's normalisation of x over each (image, group of `C/G`
/// channels) — biased variance, ε = [`GN_EPS`] — a per-channel affine `g, b` and `act` SiLU
/// (`z·σ(z)`) when `silu`, else the identity: one pass forward (two reads of x) and one
/// backward (f32 on flex, all three inputs on the same kind of device); the composed
/// [`group_norm_silu_composed`] otherwise.
///
/// # Shapes
/// `x: [B, C, H, W]`, `g, b: [C]` → `[B, C, H, W]` (`C` a multiple of `groups`).
pub fn group_norm_silu(
    x: Tensor<4>,
    groups: usize,
    g: Tensor<1>,
    b: Tensor<1>,
    silu: bool,
) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    assert!(
        groups > 0 && c % groups == 0 && g.dims() == [c] && b.dims() == [c],
        "group_norm_silu: x [{n}, {c}, {h}, {w}] needs C a multiple of groups ({groups}) and \
         g, b [{c}]"
    );
    if n * c * h * w == 0 {
        return group_norm_silu_composed(x, groups, g, b, silu);
    }
    let d = GnDims {
        c,
        h,
        w,
        groups,
        silu,
    };
    custom_op(
        [input(&x), input(&g), input(&b)],
        GnBackward,
        |[px, pg, pb]| {
            let (y, stats) = gn_forward(f32s(&px), f32s(&pg), f32s(&pb), d);
            let state = GnState {
                x: px,
                g: pg,
                b: pb,
                stats: Arc::new(stats),
                dims: d,
            };
            (flex_from(y, &[n, c, h, w]), state)
        },
    )
    .unwrap_or_else(|| group_norm_silu_composed(x, groups, g, b, silu))
}

/// [`group_norm_silu`] from burn tensor ops: centre and scale each `[C/G·H·W]` group, the
/// affine, then burn's `silu`.
pub fn group_norm_silu_composed(
    x: Tensor<4>,
    groups: usize,
    g: Tensor<1>,
    b: Tensor<1>,
    silu: bool,
) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let x = x.reshape([n, groups, (c / groups) * h * w]);
    let x = x.clone() - x.mean_dim(2);
    let var = x.clone().square().mean_dim(2);
    let x = (x / var.add_scalar(GN_EPS).sqrt()).reshape([n, c, h, w]);
    let y = x * g.reshape([1, c, 1, 1]) + b.reshape([1, c, 1, 1]);
    if silu {
        burn::tensor::activation::silu(y)
    } else {
        y
    }
}
