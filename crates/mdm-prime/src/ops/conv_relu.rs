//! Inference 2-D convolution + bias + ReLU, any stride, padding and rectangular kernel, as
//! banded im2col + GEMM (the FID Inception's layers; forward only).
//!
//! `y[b, o, oy, ox] = max(0, bias[o] + Σ_{c, ky, kx} W[o, c, ky, kx]·x[b, c, oy·s + ky − p_h,
//! ox·s + kx − p_w])`, zero outside the image.
//!
//! burn-flex's general convolution transposes the input to channels-last, builds its columns
//! and transposes the result back, and the bias and the ReLU are two more passes. Here each
//! rayon task takes one image and walks it in bands of output rows whose columns
//! `[C_in·k_h·k_w, rows·W_out]` fill about [`BAND_BYTES`] (so they stay in the core's cache),
//! writes them straight from the `[C_in, H, W]` planes, multiplies `W [C_out, C_in·k_h·k_w]` by
//! them with the `gemm` crate (burn-flex's own GEMM) into the band's place in the
//! `[C_out, H_out·W_out]` output (row stride `H_out·W_out`, no copy), and adds the bias and
//! clamps while the band is hot. A 1 × 1,
//! stride-1, unpadded convolution skips the columns: the input planes are the right operand.
//!
//! [`conv2d_relu_composed`] (burn's `conv2d` then `relu`) is the oracle and the fallback for
//! autodiff tensors (no backward here) and other devices.

use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::ops::ConvOptions;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{Input, f32s, flex_from, input};

/// Target size of one band's columns (per task): about the L2 cache of one core.
const BAND_BYTES: usize = 512 << 10;

/// The geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geom {
    b: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    /// Rows of the columns: `C_in·k_h·k_w`.
    fn rows(&self) -> usize {
        self.ci * self.kh * self.kw
    }
    /// A 1 × 1, stride-1, unpadded convolution: the input planes are the columns.
    fn pointwise(&self) -> bool {
        (self.kh, self.kw, self.stride, self.ph, self.pw) == (1, 1, 1, 0, 0)
    }
    /// Output rows per band.
    fn band(&self) -> usize {
        if self.pointwise() {
            // No columns: bands only split the work (about BAND_BYTES of input each).
            return (BAND_BYTES / (4 * self.ci * self.ow).max(1)).clamp(1, self.oh);
        }
        (BAND_BYTES / (4 * self.rows() * self.ow).max(1)).clamp(1, self.oh)
    }
}

/// `dst[j] = src[j·s + off]` where that index lies in `src`, 0 elsewhere.
#[inline(always)]
fn gather_row(src: &[f32], dst: &mut [f32], s: usize, off: isize) {
    if s == 1 {
        // The in-range part is one contiguous copy.
        let n = dst.len() as isize;
        let lo = (-off).clamp(0, n) as usize;
        let hi = (src.len() as isize - off).clamp(lo as isize, n) as usize;
        dst[..lo].fill(0.0);
        if hi > lo {
            // lo + off ≥ 0 and hi + off ≤ src.len() by the clamps above.
            let start = (lo as isize + off) as usize;
            dst[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
        }
        dst[hi..].fill(0.0);
        return;
    }
    for (j, d) in dst.iter_mut().enumerate() {
        let i = (j * s) as isize + off;
        *d = if i >= 0 && (i as usize) < src.len() {
            src[i as usize]
        } else {
            0.0
        };
    }
}

/// The columns of output rows `oy0..oy0 + n` of one image `x: [C_in, H, W]`:
/// `cols[(c·k_h + ky)·k_w + kx, (oy − oy0)·W_out + ox] = x[c, oy·s + ky − p_h, ox·s + kx − p_w]`.
fn im2col_band(x: &[f32], cols: &mut [f32], g: Geom, oy0: usize, n: usize) {
    let (hw, ncols) = (g.h * g.w, n * g.ow);
    for (r, dst) in cols.chunks_exact_mut(ncols).enumerate() {
        let (c, ky, kx) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
        let plane = &x[c * hw..(c + 1) * hw];
        let off = kx as isize - g.pw as isize;
        for (j, out) in dst.chunks_exact_mut(g.ow).enumerate() {
            let iy = ((oy0 + j) * g.stride + ky) as isize - g.ph as isize;
            if iy < 0 || iy >= g.h as isize {
                out.fill(0.0);
            } else {
                let row = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                gather_row(row, out, g.stride, off);
            }
        }
    }
}

/// `dst[r·dst_rs + j] = Σ_k lhs[r·k_len + k]·rhs[k·rhs_rs + j]` for `r < m`, `j < n`: a GEMM
/// into a row-strided destination (`lhs` is `[m, k_len]` row-major, `rhs` `[k_len, n]` with row
/// stride `rhs_rs`), through the `gemm` crate; the bounds are checked here, so the call is safe.
#[allow(unsafe_code, clippy::too_many_arguments)]
fn gemm_strided(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    rhs: &[f32],
    rhs_rs: usize,
    (m, n, k_len): (usize, usize, usize),
    parallelism: gemm::Parallelism,
) {
    let last = |rows: usize, rs: usize| (rows.max(1) - 1) * rs + n;
    assert!(
        m * n * k_len > 0
            && dst_rs >= n
            && rhs_rs >= n
            && dst.len() >= last(m, dst_rs)
            && lhs.len() >= m * k_len
            && rhs.len() >= last(k_len, rhs_rs),
        "gemm_strided: operands too short for [{m}, {k_len}] × [{k_len}, {n}]"
    );
    // SAFETY: every element read or written lies inside the slices (checked above: the last
    // row of `dst` ends at (m − 1)·dst_rs + n, of `rhs` at (k_len − 1)·rhs_rs + n, `lhs` holds
    // m·k_len); `dst` is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k_len,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            1,
            k_len as isize,
            rhs.as_ptr(),
            1,
            rhs_rs as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The forward pass: `x: [B, C_in, H, W]`, `wt: [C_out, C_in·k_h·k_w]`, `bias: [C_out]` →
/// `[B, C_out, H_out, W_out]`, row-major. Images in parallel, each band by band; with fewer
/// images than twice the threads the GEMM itself is spread over the pool instead.
fn forward(x: &[f32], wt: &[f32], bias: &[f32], g: Geom) -> Vec<f32> {
    let (ohw, rows, band, hw) = (g.oh * g.ow, g.rows(), g.band(), g.h * g.w);
    let mut y = vec![0.0f32; g.b * g.co * ohw];
    let parallelism = if g.b >= 2 * rayon::current_num_threads() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    y.par_chunks_mut(g.co * ohw)
        .zip(x.par_chunks(g.ci * hw))
        .for_each_init(Vec::new, |cols: &mut Vec<f32>, (yi, xi)| {
            for oy0 in (0..g.oh).step_by(band) {
                let n = band.min(g.oh - oy0);
                let ncols = n * g.ow;
                // The right operand [rows, ncols] and its row stride.
                let (rhs, rhs_rs) = if g.pointwise() {
                    (&xi[oy0 * g.w..], hw)
                } else {
                    cols.resize(rows * ncols, 0.0);
                    im2col_band(xi, cols, g, oy0, n);
                    (&cols[..], ncols)
                };
                let col0 = oy0 * g.ow;
                let dims = (g.co, ncols, rows);
                gemm_strided(&mut yi[col0..], ohw, wt, rhs, rhs_rs, dims, parallelism);
                for (o, &bo) in bias.iter().enumerate() {
                    let dst = &mut yi[o * ohw + col0..][..ncols];
                    dst.iter_mut().for_each(|v| *v = (*v + bo).max(0.0));
                }
            }
        });
    y
}

/// Where a convolution's window goes: the `stride` (both axes) and the zero `padding`
/// `[p_h, p_w]` on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stride {
    pub stride: usize,
    pub padding: [usize; 2],
}

/// `relu(conv2d(x, W, b))` with `at.stride` and zero padding `at.padding = [p_h, p_w]`: the
/// banded kernel of the module documentation on plain f32 flex tensors, [`conv2d_relu_composed`]
/// otherwise (autodiff tensors, other devices).
///
/// # Shapes
/// `x: [B, C_in, H, W]`, `weight: [C_out, C_in, k_h, k_w]`, `bias: [C_out]` →
/// `[B, C_out, (H + 2p_h − k_h)/s + 1, (W + 2p_w − k_w)/s + 1]`.
pub fn conv2d_relu(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, at: Stride) -> Tensor<4> {
    let Stride { stride, padding } = at;
    let [b, ci, h, w] = x.dims();
    let [co, ci_w, kh, kw] = weight.dims();
    let [ph, pw] = padding;
    assert!(
        ci_w == ci && bias.dims() == [co] && stride > 0 && h + 2 * ph >= kh && w + 2 * pw >= kw,
        "conv2d_relu: x [{b}, {ci}, {h}, {w}] needs weight [C_out, {ci}, k_h, k_w] with the \
         kernel inside the padded image, bias [C_out] and stride ≥ 1; got weight {:?}, bias {:?}, \
         stride {stride}, padding {padding:?}",
        weight.dims(),
        bias.dims()
    );
    let g = Geom {
        b,
        ci,
        h,
        w,
        co,
        kh,
        kw,
        stride,
        ph,
        pw,
        oh: (h + 2 * ph - kh) / stride + 1,
        ow: (w + 2 * pw - kw) / stride + 1,
    };
    let plain = |t: Option<Input>| match t {
        Some(Input::Plain(p)) => Some(p),
        _ => None,
    };
    let inputs = (plain(input(&x)), plain(input(&weight)), plain(input(&bias)));
    match inputs {
        (Some(px), Some(pw_), Some(pb)) if b * co * g.oh * g.ow * ci > 0 => {
            let y = forward(f32s(&px), f32s(&pw_), f32s(&pb), g);
            let y: FlexTensor = flex_from(y, &[b, co, g.oh, g.ow]);
            Tensor::from_primitive::<burn_flex::Flex>(y)
        }
        _ => conv2d_relu_composed(x, weight, bias, at),
    }
}

/// [`conv2d_relu`] from burn's `conv2d` and `relu`.
pub fn conv2d_relu_composed(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    at: Stride,
) -> Tensor<4> {
    relu(burn::tensor::module::conv2d(
        x,
        weight,
        Some(bias),
        ConvOptions::new([at.stride; 2], at.padding, [1, 1], 1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_row_matches_the_definition() {
        let src: Vec<f32> = (1..=7).map(|v| v as f32).collect();
        for s in 1..=3 {
            for off in -4..=8isize {
                for n in 0..=6 {
                    let mut dst = vec![f32::NAN; n];
                    gather_row(&src, &mut dst, s, off);
                    let want: Vec<f32> = (0..n)
                        .map(|j| {
                            let i = (j * s) as isize + off;
                            if (0..7).contains(&i) {
                                src[i as usize]
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    assert_eq!(dst, want, "s {s} off {off} n {n}");
                }
            }
        }
    }
}
