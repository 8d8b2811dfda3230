//! LayerNorm + adaLN modulation as one op with its backward.

use std::sync::Arc;

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::Flex;
use rayon::prelude::*;

use super::{Ad, contiguous, f32s, flex_from};

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
