//! 2-D convolution (stride 1, "same" padding, no groups, with bias) as im2col + GEMM, forward
//! and backward.
//!
//! burn-flex's conv2d backward computes the weight gradient as a convolution of the swapped input
//! with the whole output gradient as its kernel, several times slower than the GEMM it amounts
//! to. Here the batch is taken in chunks of `n` images whose columns
//! `cols_i = im2col(x_i)`, `[C_in·k², H·W]` per image, fill about 4 MiB (one buffer, reused):
//! - forward `y_i = W·cols_i + b` (`[C_out, H·W]`, channels first), or `cols_iᵀ·Wᵀ + b`
//!   (`[H·W, C_out]`, channels last) — one batched GEMM per chunk, `W` broadcast;
//! - backward `dW = Σ_i dy_i·cols_iᵀ`, `dx_i = col2im(Wᵀ·dy_i)`, `db = Σ dy`, one GEMM each per
//!   chunk. `cols` is rebuilt from the kept input rather than stored (k² times the input).
//!
//! A batch-wide im2col (`[C_in·k², B·H·W]`, one GEMM) was memory-bound: 2.6× slower than burn's
//! tiled forward at 96 channels.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{Shape, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::{contiguous, custom_op, f32s, flex_from, input, matmul};

/// Dimensions of one convolution.
#[derive(Debug, Clone, Copy)]
struct ConvDims {
    b: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    /// Kernel size (odd); the padding is `k / 2`.
    k: usize,
    /// Output laid out `[B, H, W, C_out]` (channels last) instead of `[B, C_out, H, W]`.
    nhwc: bool,
}

impl ConvDims {
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// Rows of `cols`: `C_in·k²`.
    fn rows(&self) -> usize {
        self.ci * self.k * self.k
    }
}

/// `dst[x] = src[x + s]` where `0 ≤ x + s < len` (the rest of `dst` untouched).
#[inline(always)]
fn shifted_copy(src: &[f32], dst: &mut [f32], s: isize) {
    let w = src.len();
    let m = s.unsigned_abs();
    if m >= w {
        return;
    }
    if s >= 0 {
        dst[..w - m].copy_from_slice(&src[m..]);
    } else {
        dst[m..].copy_from_slice(&src[..w - m]);
    }
}

/// `dst[x + s] += src[x]` where `0 ≤ x + s < len`: the adjoint of [`shifted_copy`].
#[inline(always)]
fn shifted_add(src: &[f32], dst: &mut [f32], s: isize) {
    let w = src.len();
    let m = s.unsigned_abs();
    if m >= w {
        return;
    }
    let (d, s) = if s >= 0 {
        (&mut dst[m..], &src[..w - m])
    } else {
        (&mut dst[..w - m], &src[m..])
    };
    d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
}

/// Images per chunk: the chunk's `cols` stays about 4 MiB (cache-sized), at least one image.
fn chunk_images(d: ConvDims) -> usize {
    ((1 << 20) / (d.rows() * d.hw()).max(1)).clamp(1, d.b)
}

/// `cols[i, (c·k + ky)·k + kx, y·W + x] = x[i, c, y + ky − p, x + kx − p]`, 0 outside the image
/// (p = k/2), for the images `i` of a chunk; every element of `cols` is written.
///
/// # Shapes
/// `x: [n, C_in, H, W]` → `cols: [n, C_in·k², H·W]`.
fn im2col(x: &[f32], cols: &mut [f32], d: ConvDims) {
    let ConvDims { ci, h, w, k, .. } = d;
    let (hw, rows, p) = (d.hw(), d.rows(), (k / 2) as isize);
    cols.par_chunks_mut(hw)
        .with_min_len(8)
        .enumerate()
        .for_each(|(ir, dst)| {
            let (i, r) = (ir / rows, ir % rows);
            let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            let (dy, dx) = (ky as isize - p, kx as isize - p);
            let plane = &x[(i * ci + c) * hw..][..hw];
            for (y, out) in dst.chunks_exact_mut(w).enumerate() {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    out.fill(0.0);
                } else {
                    shifted_copy(&plane[sy as usize * w..][..w], out, dx);
                }
            }
        });
}

/// A reusable `[n, C_in·k², H·W]` buffer for [`im2col`] over chunks of `n` images (allocated
/// once per call rather than once per chunk).
struct Cols {
    buf: FlexTensor,
    d: ConvDims,
}

impl Cols {
    fn new(d: ConvDims) -> Self {
        let nb = chunk_images(d);
        Cols {
            buf: flex_from(
                vec![0.0f32; nb * d.rows() * d.hw()],
                &[nb, d.rows(), d.hw()],
            ),
            d,
        }
    }

    /// `im2col` of the images `i0..i0 + n` of `x: [B, C_in, H, W]`, as a `[n, C_in·k², H·W]`
    /// view of the buffer.
    fn fill(&mut self, x: &[f32], i0: usize, n: usize) -> FlexTensor {
        let d = self.d;
        let len = n * d.rows() * d.hw();
        let per_image = d.ci * d.hw();
        im2col(
            &x[i0 * per_image..(i0 + n) * per_image],
            &mut self.buf.storage_mut::<f32>()[..len],
            d,
        );
        self.buf.narrow(0, 0, n)
    }
}

/// The adjoint of [`im2col`]: `dx[i, c, y + ky − p, x + kx − p] += dcols[i, (c·k + ky)·k + kx,
/// y·W + x]`.
///
/// # Shapes
/// `dcols: [n, C_in·k², H·W]` → `dx: [n, C_in, H, W]` (added to: pass zeros).
fn col2im(dcols: &[f32], dx: &mut [f32], d: ConvDims) {
    let ConvDims { ci, h, w, k, .. } = d;
    let (hw, p) = (d.hw(), (k / 2) as isize);
    dx.par_chunks_mut(hw)
        .with_min_len(4)
        .enumerate()
        .for_each(|(ic, plane)| {
            let (i, c) = (ic / ci, ic % ci);
            for ky in 0..k {
                for kx in 0..k {
                    let r = (c * k + ky) * k + kx;
                    let src = &dcols[(i * d.rows() + r) * hw..][..hw];
                    let (dy, dxs) = (ky as isize - p, kx as isize - p);
                    for y in 0..h {
                        let sy = y as isize + dy;
                        if sy < 0 || sy >= h as isize {
                            continue;
                        }
                        let dst = &mut plane[sy as usize * w..][..w];
                        shifted_add(&src[y * w..][..w], dst, dxs);
                    }
                }
            }
        });
}

/// The images `i0..i0 + n` of `t: [B, C, HW]` (a view).
fn images(t: &FlexTensor, i0: usize, n: usize) -> FlexTensor {
    t.narrow(0, i0, n)
}

/// `[A, B, C]` as a flex shape.
fn shape3(a: usize, b: usize, c: usize) -> Shape {
    Shape::from(vec![a, b, c])
}

/// The forward pass, a chunk of images at a time: `W·im2col(x_i) + b` (`[C_out, HW]` per
/// image), or its transpose `im2col(x_i)ᵀ·Wᵀ + b` (`[HW, C_out]`) for channels-last output.
fn conv_forward(x: &FlexTensor, w: &FlexTensor, bias: &[f32], d: ConvDims) -> FlexTensor {
    let (hw, nb) = (d.hw(), chunk_images(d));
    let xs = f32s(x);
    let w3 = w.reshape(shape3(1, d.co, d.rows()));
    let mut cols = Cols::new(d);
    let mut out: Vec<f32> = Vec::new();
    let shape = if d.nhwc {
        [d.b, d.h, d.w, d.co]
    } else {
        [d.b, d.co, d.h, d.w]
    };
    for i0 in (0..d.b).step_by(nb) {
        let n = nb.min(d.b - i0);
        let cols = cols.fill(xs, i0, n);
        let mut y = if d.nhwc {
            matmul(&cols.transpose(1, 2), &w3.transpose(1, 2))
        } else {
            matmul(&w3, &cols)
        };
        drop(cols);
        let ys = y.storage_mut::<f32>();
        if d.nhwc {
            ys.par_chunks_mut(d.co).with_min_len(64).for_each(|px| {
                px.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            });
        } else {
            ys.par_chunks_mut(hw).enumerate().for_each(|(io, v)| {
                let bo = bias[io % d.co];
                v.iter_mut().for_each(|v| *v += bo);
            });
        }
        if n == d.b {
            return y.reshape(Shape::from(shape.to_vec()));
        }
        if out.is_empty() {
            out.reserve_exact(d.b * d.co * hw);
        }
        out.extend_from_slice(f32s(&y));
    }
    flex_from(out, &shape)
}

#[derive(Debug, Clone)]
struct ConvState {
    /// The input `[B, C_in, H, W]` (contiguous).
    x: FlexTensor,
    /// The weight `[C_out, C_in, k, k]` (contiguous).
    w: FlexTensor,
    dims: ConvDims,
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let ConvState { x, w, dims: d } = ops.state;
        let (hw, nb, rows) = (d.hw(), chunk_images(d), d.rows());
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        // [B, C_out, HW], or [B, HW, C_out] for channels-last output.
        let dy = if d.nhwc {
            dy.reshape(shape3(d.b, hw, d.co))
        } else {
            dy.reshape(shape3(d.b, d.co, hw))
        };
        let [px, pw, pb] = ops.parents;
        let (xs, wt) = (f32s(&x), w.reshape(shape3(1, d.co, rows)).transpose(1, 2));
        let mut dw = vec![0.0f32; d.co * rows];
        let mut dx = vec![0.0f32; if px.is_some() { x_len(d) } else { 0 }];
        let mut cols = pw.as_ref().map(|_| Cols::new(d));
        for i0 in (0..d.b).step_by(nb) {
            let n = nb.min(d.b - i0);
            // [n, C_out, HW] (a transposed view for channels-last).
            let dy_i = images(&dy, i0, n);
            let dy_i = if d.nhwc { dy_i.transpose(1, 2) } else { dy_i };
            if let Some(cols) = cols.as_mut() {
                let cols = cols.fill(xs, i0, n);
                // [n, C_out, HW] × [n, HW, rows], summed over the images.
                let part = matmul(&dy_i, &cols.transpose(1, 2));
                for p in f32s(&part).chunks_exact(d.co * rows) {
                    dw.iter_mut().zip(p).for_each(|(a, v)| *a += v);
                }
            }
            if px.is_some() {
                let dcols = matmul(&wt, &dy_i);
                let dst = &mut dx[i0 * d.ci * hw..(i0 + n) * d.ci * hw];
                col2im(f32s(&dcols), dst, d);
            }
        }
        if let Some(node) = pw {
            grads.register::<Flex>(node.id, flex_from(dw, &[d.co, d.ci, d.k, d.k]));
        }
        if let Some(node) = px {
            grads.register::<Flex>(node.id, flex_from(dx, &[d.b, d.ci, d.h, d.w]));
        }
        if let Some(node) = pb {
            let dys = f32s(&dy);
            let db: Vec<f32> = if d.nhwc {
                let mut db = vec![0.0f64; d.co];
                for px in dys.chunks_exact(d.co) {
                    db.iter_mut().zip(px).for_each(|(a, &v)| *a += v as f64);
                }
                db.into_iter().map(|v| v as f32).collect()
            } else {
                (0..d.co)
                    .into_par_iter()
                    .map(|o| {
                        (0..d.b)
                            .map(|i| dys[(i * d.co + o) * hw..][..hw].iter().sum::<f32>() as f64)
                            .sum::<f64>() as f32
                    })
                    .collect()
            };
            grads.register::<Flex>(node.id, flex_from(db, &[d.co]));
        }
    }
}

fn x_len(d: ConvDims) -> usize {
    d.b * d.ci * d.hw()
}

/// `y[b, o] = bias[o] + Σ_{c, ky, kx} W[o, c, ky, kx]·x[b, c, · + ky − p, · + kx − p]`: a 2-D
/// convolution, stride 1, zero "same" padding `p = k/2` (k odd), no groups, as im2col + GEMM
/// forward and backward (f32 on flex, all three inputs on the same kind of device);
/// [`conv2d_same_composed`] otherwise.
///
/// # Shapes
/// `x: [B, C_in, H, W]`, `weight: [C_out, C_in, k, k]`, `bias: [C_out]` → `[B, C_out, H, W]`.
pub fn conv2d_same(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    conv_op(x, weight, bias, false)
}

/// [`conv2d_same`] with the output channels last: `conv2d_same(x, W, b).permute([0, 2, 3, 1])`
/// without the permutation (the GEMM writes `[H·W, C_out]` per image).
///
/// # Shapes
/// `x: [B, C_in, H, W]`, `weight: [C_out, C_in, k, k]`, `bias: [C_out]` → `[B, H, W, C_out]`.
pub fn conv2d_same_nhwc(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    conv_op(x, weight, bias, true)
}

fn conv_op(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, nhwc: bool) -> Tensor<4> {
    let [b, ci, h, w] = x.dims();
    let [co, ci_w, k, k2] = weight.dims();
    assert!(
        ci_w == ci && k == k2 && k % 2 == 1 && bias.dims() == [co],
        "conv2d_same: x [{b}, {ci}, {h}, {w}] needs weight [C_out, {ci}, k, k] (k odd) and \
         bias [C_out], got weight {:?} and bias {:?}",
        weight.dims(),
        bias.dims()
    );
    let d = ConvDims {
        b,
        ci,
        co,
        h,
        w,
        k,
        nhwc,
    };
    let composed = |x, weight, bias| {
        let y = conv2d_same_composed(x, weight, bias);
        if nhwc { y.permute([0, 2, 3, 1]) } else { y }
    };
    if b * ci * co * h * w == 0 {
        return composed(x, weight, bias);
    }
    custom_op(
        [input(&x), input(&weight), input(&bias)],
        ConvBackward,
        |[px, pw, pb]| {
            let out = conv_forward(&px, &pw, f32s(&pb), d);
            (
                out,
                ConvState {
                    x: px,
                    w: pw,
                    dims: d,
                },
            )
        },
    )
    .unwrap_or_else(|| composed(x, weight, bias))
}

/// [`conv2d_same`] from burn's `conv2d`.
pub fn conv2d_same_composed(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    let p = weight.dims()[2] / 2;
    burn::tensor::module::conv2d(
        x,
        weight,
        Some(bias),
        burn::tensor::ops::ConvOptions::new([1, 1], [p, p], [1, 1], 1),
    )
}

/// `conv.forward(x)` through [`conv2d_same`] when the module is a stride-1, undilated,
/// ungrouped convolution with a bias and explicit "same" padding (square odd kernel); burn's
/// own forward otherwise.
///
/// # Shapes
/// `x: [B, C_in, H, W]` → `[B, C_out, H, W]`.
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match same_conv_bias(conv) {
        Some(bias) => conv2d_same(x, conv.weight.val(), bias),
        None => conv.forward(x),
    }
}

/// [`conv2d_module`] with the output channels last ([`conv2d_same_nhwc`]).
///
/// # Shapes
/// `x: [B, C_in, H, W]` → `[B, H, W, C_out]`.
pub fn conv2d_module_nhwc(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match same_conv_bias(conv) {
        Some(bias) => conv2d_same_nhwc(x, conv.weight.val(), bias),
        None => conv.forward(x).permute([0, 2, 3, 1]),
    }
}

/// The bias of a stride-1, undilated, ungrouped, "same"-padded square odd-kernel conv with a
/// bias; `None` for any other.
fn same_conv_bias(conv: &Conv2d) -> Option<Tensor<1>> {
    let [kh, kw] = conv.kernel_size;
    let p = kh / 2;
    let same = matches!(conv.padding, PaddingConfig2d::Explicit(a, b, c, d)
        if [a, b, c, d] == [p, p, p, p]);
    let plain = conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1;
    match &conv.bias {
        Some(bias) if same && kh == kw && kh % 2 == 1 && plain => Some(bias.val()),
        _ => None,
    }
}
