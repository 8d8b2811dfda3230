//! 2-D convolution (stride 1, "same" padding, no groups, with bias) as im2col + one GEMM per
//! product, forward and backward.
//!
//! burn-flex's conv2d backward computes the weight gradient as a convolution of the swapped input
//! with the whole output gradient as its kernel, several times slower than the GEMM it amounts
//! to. Here, with `cols = im2col(x)` laid out `[C_in·k², B·H·W]` (batch folded into the columns):
//! - forward `y = W·cols + b` (one GEMM `[C_out, C_in·k²] × [C_in·k², B·H·W]`, then a pass that
//!   puts the batch back in front and adds the bias);
//! - backward `dW = dy·colsᵀ`, `dx = col2im(Wᵀ·dy)`, `db = Σ dy` with `dy` as `[C_out, B·H·W]`
//!   (one pass to lay it out, which also sums `db`). `cols` is rebuilt from the kept input
//!   rather than stored (it is k² times the input).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
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
}

impl ConvDims {
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// Rows of `cols`: `C_in·k²`.
    fn rows(&self) -> usize {
        self.ci * self.k * self.k
    }
    /// Columns of `cols`: `B·H·W`.
    fn cols(&self) -> usize {
        self.b * self.hw()
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

/// `cols[(c·k + ky)·k + kx, b·HW + y·W + x] = x[b, c, y + ky − p, x + kx − p]`, 0 outside the
/// image (p = k/2).
///
/// # Shapes
/// `x: [B, C_in, H, W]` → `[C_in·k², B·H·W]`.
fn im2col(x: &[f32], d: ConvDims) -> Vec<f32> {
    let ConvDims { b, ci, h, w, k, .. } = d;
    let (hw, n, p) = (d.hw(), d.cols(), (k / 2) as isize);
    let mut cols = vec![0.0f32; d.rows() * n];
    cols.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let (dy, dx) = (ky as isize - p, kx as isize - p);
        for bi in 0..b {
            let plane = &x[(bi * ci + c) * hw..][..hw];
            let dst = &mut row[bi * hw..][..hw];
            for y in 0..h {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                let src = &plane[sy as usize * w..][..w];
                shifted_copy(src, &mut dst[y * w..][..w], dx);
            }
        }
    });
    cols
}

/// The adjoint of [`im2col`]: `dx[b, c, y + ky − p, x + kx − p] += dcols[(c·k + ky)·k + kx,
/// b·HW + y·W + x]`.
///
/// # Shapes
/// `dcols: [C_in·k², B·H·W]` → `[B, C_in, H, W]`.
fn col2im(dcols: &[f32], d: ConvDims) -> Vec<f32> {
    let ConvDims { b, ci, h, w, k, .. } = d;
    let (hw, n, p) = (d.hw(), d.cols(), (k / 2) as isize);
    let mut dx = vec![0.0f32; b * ci * hw];
    dx.par_chunks_mut(ci * hw).enumerate().for_each(|(bi, img)| {
        for c in 0..ci {
            let plane = &mut img[c * hw..][..hw];
            for ky in 0..k {
                for kx in 0..k {
                    let r = (c * k + ky) * k + kx;
                    let src = &dcols[r * n + bi * hw..][..hw];
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
        }
    });
    dx
}

/// The forward pass: `W·im2col(x)` with the batch moved back in front, plus the bias.
fn conv_forward(x: &FlexTensor, w: &FlexTensor, bias: &[f32], d: ConvDims) -> FlexTensor {
    let (hw, n) = (d.hw(), d.cols());
    let cols = flex_from(im2col(f32s(x), d), &[d.rows(), n]);
    let w2 = flex_from(f32s(w).to_vec(), &[d.co, d.rows()]);
    let y2 = matmul(&w2, &cols);
    let y2 = f32s(&y2);
    let mut out = vec![0.0f32; d.b * d.co * hw];
    out.par_chunks_mut(d.co * hw)
        .enumerate()
        .for_each(|(bi, img)| {
            for (o, plane) in img.chunks_exact_mut(hw).enumerate() {
                let src = &y2[o * n + bi * hw..][..hw];
                let bo = bias[o];
                plane.iter_mut().zip(src).for_each(|(v, s)| *v = s + bo);
            }
        });
    flex_from(out, &[d.b, d.co, d.h, d.w])
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
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (dy, hw, n) = (f32s(&dy), d.hw(), d.cols());
        // dy as [C_out, B·HW], and db = its row sums.
        let mut dy2 = vec![0.0f32; d.co * n];
        let db: Vec<f32> = dy2
            .par_chunks_mut(n)
            .enumerate()
            .map(|(o, row)| {
                let mut sum = 0.0f64;
                for bi in 0..d.b {
                    let src = &dy[(bi * d.co + o) * hw..][..hw];
                    row[bi * hw..][..hw].copy_from_slice(src);
                    sum += src.iter().sum::<f32>() as f64;
                }
                sum as f32
            })
            .collect();
        let dy2 = flex_from(dy2, &[d.co, n]);
        let [px, pw, pb] = ops.parents;
        if let Some(node) = pw {
            let cols = flex_from(im2col(f32s(&x), d), &[d.rows(), n]);
            let dw = matmul(&dy2, &cols.transpose(0, 1));
            let dw = flex_from(f32s(&dw).to_vec(), &[d.co, d.ci, d.k, d.k]);
            grads.register::<Flex>(node.id, dw);
        }
        if let Some(node) = px {
            let w2 = flex_from(f32s(&w).to_vec(), &[d.co, d.rows()]);
            let dcols = matmul(&w2.transpose(0, 1), &dy2);
            let dx = col2im(f32s(&dcols), d);
            grads.register::<Flex>(node.id, flex_from(dx, &[d.b, d.ci, d.h, d.w]));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, flex_from(db, &[d.co]));
        }
    }
}

/// `y[b, o] = bias[o] + Σ_{c, ky, kx} W[o, c, ky, kx]·x[b, c, · + ky − p, · + kx − p]`: a 2-D
/// convolution, stride 1, zero "same" padding `p = k/2` (k odd), no groups, as im2col + GEMM
/// forward and backward (f32 on flex, all three inputs on the same kind of device);
/// [`conv2d_same_composed`] otherwise.
///
/// # Shapes
/// `x: [B, C_in, H, W]`, `weight: [C_out, C_in, k, k]`, `bias: [C_out]` → `[B, C_out, H, W]`.
pub fn conv2d_same(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
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
    };
    if b * ci * co * h * w == 0 {
        return conv2d_same_composed(x, weight, bias);
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
    .unwrap_or_else(|| conv2d_same_composed(x, weight, bias))
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
    let [kh, kw] = conv.kernel_size;
    let p = kh / 2;
    let same = matches!(conv.padding, PaddingConfig2d::Explicit(a, b, c, d)
        if [a, b, c, d] == [p, p, p, p]);
    match &conv.bias {
        Some(bias)
            if same
                && kh == kw
                && kh % 2 == 1
                && conv.stride == [1, 1]
                && conv.dilation == [1, 1]
                && conv.groups == 1 =>
        {
            conv2d_same(x, conv.weight.val(), bias.val())
        }
        _ => conv.forward(x),
    }
}
