//! LayerNorm + adaLN modulation as one op with its backward.

use std::sync::Arc;

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::Flex;
use rayon::prelude::*;

use pulp::{Simd, WithSimd};

use super::{Ad, contiguous, f32s, flex_from, lane_sum, rows_per_task, simd};

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

/// A block of rows of the forward pass, from row `row0`: `out`, `1/σ`, and `x̂` when kept.
struct LnRows<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    shift: &'a [f32],
    scale: &'a [f32],
    row0: usize,
    l: usize,
    out: &'a mut [f32],
    rstd: &'a mut [f32],
    xhat: Option<&'a mut [f32]>,
}

impl WithSimd for LnRows<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let d = self.gamma.len();
        let mut xhat = self.xhat;
        for (r, out) in self.out.chunks_exact_mut(d).enumerate() {
            let xs = &self.x[r * d..(r + 1) * d];
            let bi = (self.row0 + r) / self.l;
            let (sh, sc) = (
                &self.shift[bi * d..(bi + 1) * d],
                &self.scale[bi * d..(bi + 1) * d],
            );
            let mean = lane_sum(xs, |x| x) / d as f32;
            let var = lane_sum(xs, |x| (x - mean) * (x - mean)) / d as f32;
            let rs = 1.0 / (var + LN_EPS as f32).sqrt();
            self.rstd[r] = rs;
            for k in 0..d {
                out[k] = (xs[k] - mean) * rs * self.gamma[k] * (1.0 + sc[k]) + sh[k];
            }
            if let Some(xh) = xhat.as_deref_mut() {
                for (h, &x) in xh[r * d..(r + 1) * d].iter_mut().zip(xs) {
                    *h = (x - mean) * rs;
                }
            }
        }
    }
}

/// Forward on host slices: `(output, x̂, 1/σ)`, with `x̂` empty unless `keep` (autodiff).
fn ln_mod_forward(
    x: &[f32],
    gamma: &[f32],
    shift: &[f32],
    scale: &[f32],
    [b, l, d]: [usize; 3],
    keep: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut out = vec![0.0f32; b * l * d];
    let mut xhat = if keep {
        vec![0.0f32; b * l * d]
    } else {
        Vec::new()
    };
    let mut rstd = vec![0.0f32; b * l];
    let rows = rows_per_task(d);
    let mut xhat_blocks: Vec<Option<&mut [f32]>> = if keep {
        xhat.chunks_mut(rows * d).map(Some).collect()
    } else {
        (0..(b * l).div_ceil(rows)).map(|_| None).collect()
    };
    out.par_chunks_mut(rows * d)
        .zip(rstd.par_chunks_mut(rows))
        .zip(xhat_blocks.par_iter_mut())
        .enumerate()
        .for_each(|(c, ((out, rstd), xhat))| {
            let row0 = c * rows;
            simd(LnRows {
                x: &x[row0 * d..(row0 + rstd.len()) * d],
                gamma,
                shift,
                scale,
                row0,
                l,
                out,
                rstd,
                xhat: xhat.take(),
            })
        });
    (out, xhat, rstd)
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
/// block and of the final layer (design §6.2) as one op forward and one backward (f32 on flex, all
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
        .all(|&t| t == burn::tensor::DType::F32)
        && b * l * d > 0; // empty shapes take the composed path
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
            let keep = matches!(prep, OpsKind::Tracked(_));
            let (out, xhat, rstd) =
                ln_mod_forward(f32s(&px), f32s(&pg), f32s(&ps), f32s(&pc), [b, l, d], keep);
            let out = flex_from(out, &[b, l, d]);
            let t = match prep {
                OpsKind::Tracked(prep) => {
                    let state = LnState {
                        xhat: Arc::new(xhat),
                        rstd: Arc::new(rstd),
                        gamma: Arc::new(f32s(&pg).to_vec()),
                        scale: Arc::new(f32s(&pc).to_vec()),
                        dims: [b, l, d],
                    };
                    prep.finish(state, out)
                }
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
            let (out, _, _) =
                ln_mod_forward(f32s(&px), f32s(&pg), f32s(&ps), f32s(&pc), [b, l, d], false);
            return Tensor::from_primitive::<Flex>(flex_from(out, &[b, l, d]));
        }
    }
    layer_norm_modulate_composed(x, gamma, shift, scale)
}

/// [`layer_norm_modulate`] from burn's `layer_norm` and tensor ops: `modulate(x̂·γ)` with
/// `modulate(y) = y·(1 + scale) + shift` (design §6.2).
pub fn layer_norm_modulate_composed(
    x: Tensor<3>,
    gamma: Tensor<1>,
    shift: Tensor<3>,
    scale: Tensor<3>,
) -> Tensor<3> {
    let xn = burn::tensor::module::layer_norm(x, gamma, None, LN_EPS);
    xn.clone() * scale + xn + shift
}
