//! Rotary multi-head self-attention as one op with its backward.

use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::{Flex, FlexTensor};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{
    LANES, contiguous, custom_unary, exp_f32, f32s, flex_from, matmul, rows_per_task, simd,
};

/// Rotary tables for positions `0..L`, GPT-NeoX "rotate half" layout (`freqs` repeated twice),
/// base 10000 (design §6.2), on the host and as `[L, hd]` tensors.
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

/// Bidirectional multi-head self-attention with rotary q/k (design §6.2) from the fused
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
