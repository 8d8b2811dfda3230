//! Inference 2-D max and average pooling (square window, any stride and padding; forward only):
//! the FID Inception's pools.
//!
//! burn-flex pools through its 3-D kernel and divides an index per element, which made the
//! Inception's pools 24 % of its forward time under `perf`. Here each `[H, W]` plane is one rayon task,
//! pooled separably: per output row, the window's in-image rows are reduced column-wise into
//! one row (a vectorised pass), then each output column reduces its in-image window of that
//! row (the windows' bounds computed once).
//!
//! - max: `y[oy, ox] = max x[iy, ix]` over the window's in-image positions (padding never wins);
//! - average: `Σ x[iy, ix] / n`, with `n` the in-image positions when padding is excluded
//!   (PyTorch's `count_include_pad=False`) and `k²` otherwise (the padded window; PyTorch clips
//!   it to the padded image, which for `padding < k` is the whole window).
//!
//! [`pool2d_composed`] (burn's `max_pool2d` / `avg_pool2d`) is the oracle and the fallback for
//! autodiff tensors and other devices.

use burn::tensor::Tensor;
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use rayon::prelude::*;

use super::{Input, f32s, flex_from, input};

/// What a window reduces to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Max,
    /// The mean; `exclude_pad`: over the in-image positions only.
    Avg {
        exclude_pad: bool,
    },
}

/// One pool: a `kernel × kernel` window moved by `stride`, zero `padding` on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    pub pooling: Pooling,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// The window of output index `o` along one axis: in-image input indices `lo..hi`.
#[inline(always)]
fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).max(0) as usize).min(len);
    (lo, hi.max(lo))
}

/// One plane `[H, W]` → `[H_out, W_out]`, separably: per output row the window's rows are
/// reduced column-wise into one row (a vectorisable pass), then each output reduces its columns
/// of that row.
fn pool_plane(x: &[f32], y: &mut [f32], (h, w): (usize, usize), pooling: Pooling, kst: [usize; 3]) {
    let [k, s, p] = kst;
    let ow = (w + 2 * p - k) / s + 1;
    let cols: Vec<(usize, usize)> = (0..ow).map(|ox| window(ox, k, s, p, w)).collect();
    let mut row = vec![0.0f32; w];
    for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
        let (y0, y1) = window(oy, k, s, p, h);
        row.copy_from_slice(&x[y0 * w..(y0 + 1) * w]);
        for iy in y0 + 1..y1 {
            let src = &x[iy * w..(iy + 1) * w];
            match pooling {
                Pooling::Max => row.iter_mut().zip(src).for_each(|(r, &v)| *r = r.max(v)),
                Pooling::Avg { .. } => row.iter_mut().zip(src).for_each(|(r, &v)| *r += v),
            }
        }
        for (v, &(x0, x1)) in out.iter_mut().zip(&cols) {
            let part = &row[x0..x1];
            *v = match pooling {
                Pooling::Max => part.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
                Pooling::Avg { exclude_pad } => {
                    let n = if exclude_pad {
                        (y1 - y0) * (x1 - x0)
                    } else {
                        k * k
                    };
                    part.iter().sum::<f32>() / n.max(1) as f32
                }
            };
        }
    }
}

/// Pools `x` as `pool` says: the
/// plane kernel of the module documentation on plain f32 flex tensors, [`pool2d_composed`]
/// otherwise.
///
/// # Shapes
/// `x: [B, C, H, W]` → `[B, C, (H + 2p − k)/s + 1, (W + 2p − k)/s + 1]`.
pub fn pool2d(x: Tensor<4>, pool: Pool2d) -> Tensor<4> {
    let Pool2d {
        pooling,
        kernel,
        stride,
        padding,
    } = pool;
    let [b, c, h, w] = x.dims();
    assert!(
        kernel > 0
            && stride > 0
            && padding <= kernel / 2
            && h + 2 * padding >= kernel
            && w + 2 * padding >= kernel,
        "pool2d: a {kernel} × {kernel} window, stride {stride}, padding {padding} does not fit \
         x [{b}, {c}, {h}, {w}] (stride ≥ 1, padding ≤ kernel/2)"
    );
    let (oh, ow) = (
        (h + 2 * padding - kernel) / stride + 1,
        (w + 2 * padding - kernel) / stride + 1,
    );
    match input(&x) {
        Some(Input::Plain(px)) if b * c * h * w > 0 => {
            let xs = f32s(&px);
            let mut y = vec![0.0f32; b * c * oh * ow];
            y.par_chunks_mut(oh * ow)
                .zip(xs.par_chunks(h * w))
                .for_each(|(yp, xp)| {
                    pool_plane(xp, yp, (h, w), pooling, [kernel, stride, padding])
                });
            Tensor::from_primitive::<burn_flex::Flex>(flex_from(y, &[b, c, oh, ow]))
        }
        _ => pool2d_composed(x, pool),
    }
}

/// [`pool2d`] from burn's `max_pool2d` / `avg_pool2d`.
pub fn pool2d_composed(x: Tensor<4>, pool: Pool2d) -> Tensor<4> {
    let Pool2d {
        kernel,
        stride,
        padding,
        ..
    } = pool;
    match pool.pooling {
        Pooling::Max => max_pool2d(
            x,
            MaxPoolOptions::new([kernel; 2])
                .with_stride([stride; 2])
                .with_padding([padding; 2]),
        ),
        Pooling::Avg { exclude_pad } => avg_pool2d(
            x,
            AvgPoolOptions::new([kernel; 2])
                .with_stride([stride; 2])
                .with_padding([padding; 2])
                .with_count_include_pad(!exclude_pad),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_clip_to_the_image() {
        // k 3, s 1, p 1 over 5: the edges lose one position.
        let w: Vec<_> = (0..5).map(|o| window(o, 3, 1, 1, 5)).collect();
        assert_eq!(w, [(0, 2), (0, 3), (1, 4), (2, 5), (3, 5)]);
        // k 3, s 2, p 0 over 7: three whole windows.
        let w: Vec<_> = (0..3).map(|o| window(o, 3, 2, 0, 7)).collect();
        assert_eq!(w, [(0, 3), (2, 5), (4, 7)]);
    }

    #[test]
    fn plane_by_hand() {
        // 3 × 3 plane 1..9, 3 × 3 window, stride 1, padding 1.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut y = vec![0.0; 9];
        pool_plane(&x, &mut y, (3, 3), Pooling::Max, [3, 1, 1]);
        assert_eq!(y, [5., 6., 6., 8., 9., 9., 8., 9., 9.]);
        pool_plane(
            &x,
            &mut y,
            (3, 3),
            Pooling::Avg { exclude_pad: true },
            [3, 1, 1],
        );
        // Corner: (1 + 2 + 4 + 5)/4 = 3; centre: 45/9 = 5; top edge: (1+2+3+4+5+6)/6 = 3.5.
        assert_eq!((y[0], y[4], y[1]), (3.0, 5.0, 3.5));
        pool_plane(
            &x,
            &mut y,
            (3, 3),
            Pooling::Avg { exclude_pad: false },
            [3, 1, 1],
        );
        assert_eq!((y[0], y[4]), (12.0 / 9.0, 5.0));
    }
}
