//! Tiled attention with an online softmax (the flash-attention algorithm, Dao et al. 2022;
//! FlashAttention-2's loop order), forward and backward, on host slices.
//!
//! Heads are `[N, L, hd]` row-major (`N` = batch × heads). The forward pass walks key blocks of
//! [`BLOCK`] rows for each block of [`BLOCK`] query rows, keeping per row the running maximum `m`
//! and sum `ℓ` of `exp(scale·s − m)`, and rescales the output accumulator when `m` grows. It stores
//! only `O` and the log-sum-exp `lse = m + ln ℓ` per row (`N·L` floats) for the backward pass,
//! which recomputes each score tile, `P = exp(scale·S − lse)`, and accumulates
//! `dV += Pᵀ·dO`, `dS = scale·P∘(dO·Vᵀ − D)` with `D = rowsum(dO∘O)`, `dK += dSᵀ·Q`,
//! `dQ += dS·K`. No `L × L` buffer exists at any point: the largest scratch is one
//! `BLOCK × BLOCK` tile per task.
//!
//! The products are one register-tiled kernel ([`gemm`]: `C (+)= A·B`, row-major, [`MR`] rows ×
//! two SIMD vectors of accumulators) in `pulp`'s explicit SIMD (AVX2/FMA here). The
//! forward pass is parallel over (sequence·head, query block); the backward over
//! (sequence·head, key chunk), each task summing its share of `dQ` into its own buffer when a
//! head is split (only when there are fewer than [`TASKS`] heads; the split follows the shape,
//! not the thread count, so the results have the same bits on any number of threads).

use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{LANES, exp_f32, simd};

/// Query and key rows per tile.
pub(super) const BLOCK: usize = 64;
/// Rows of the register tile of [`gemm`].
const MR: usize = 6;
/// Fewest tasks of the backward pass when a head's keys can be split: two per thread on up to
/// 8 threads. A fixed number, not one from the thread count, so that the dQ shares (one per
/// task) are added in the same order everywhere. A split costs a `dQ`-sized buffer per task and
/// a pass adding them: at the L = 1024 bench shape (8 heads, 2 key chunks each) the backward's
/// CPU time was within the noise of the unsplit one; with 32 (4 chunks) it was about 10 %
/// slower (`tiled_attention_timing`, six alternating runs each, docs/performance.md).
const TASKS: usize = 16;

/// Sizes of one attention call on `[n, l, hd]` heads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    pub n: usize,
    pub l: usize,
    pub hd: usize,
    /// Key `j` is hidden from query `i` when `j > i` (the autoregressive baseline,
    /// `[model] kind = "ar"`).
    pub causal: bool,
}

impl Heads {
    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// Keys `[0, end)` that query rows `[i0, i0 + br)` may see.
    fn keys_for(&self, i0: usize, br: usize) -> usize {
        if self.causal { i0 + br } else { self.l }
    }

    /// Queries `[start, l)` that key rows `[j0, ..)` may be seen by.
    fn queries_for(&self, j0: usize) -> usize {
        if self.causal { j0 / BLOCK * BLOCK } else { 0 }
    }
}

/// `[rows, cols]` → `[cols, rows]`, both row-major.
fn transpose(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    for (r, row) in x.chunks_exact(cols).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
}

/// Per head `[l, hd]` → per block of [`BLOCK`] rows `[hd, bc]`: block `j0` (of `bc` rows)
/// transposed, at `j0·hd` with row stride `bc`. Blocks rather than the whole `[hd, l]`, so that
/// a tile's rows are `bc` floats apart, not `l` (a stride of 4 KiB and more maps every row to
/// the same L1 cache set).
fn transpose_blocks(x: &[f32], h: Heads) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(h.l * h.hd)
        .zip(x.par_chunks(h.l * h.hd))
        .for_each(|(dst, src)| {
            for (dst, src) in dst.chunks_mut(BLOCK * h.hd).zip(src.chunks(BLOCK * h.hd)) {
                transpose(src, src.len() / h.hd, h.hd, dst);
            }
        });
    out
}

/// `C[m×n] = A[m×k]·B[k×n]` (`accumulate`: `C += A·B`), row-major with row strides `lda`,
/// `ldb`, `ldc`. Register tiles of [`MR`] rows × two SIMD vectors (16 columns under AVX2),
/// fused multiply-adds; the columns past the last full tile take a scalar loop. `zeros` holds
/// at least `k` zeros (the rows past `m` of a short last tile). Inlined into the callers'
/// `with_simd`.
#[allow(clippy::too_many_arguments)] // a BLAS-shaped signature: (m, n, k), three operands with strides
#[inline(always)]
fn gemm<S: Simd>(
    simd: S,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    zeros: &[f32],
) {
    let nr = 2 * S::F32_LANES;
    let full_n = n / nr * nr;
    for i0 in (0..m).step_by(MR) {
        let mr = MR.min(m - i0);
        // A's rows i0..i0+mr, and zeros in place of the rows past m.
        let rows: [&[f32]; MR] = std::array::from_fn(|r| {
            if r < mr {
                &a[(i0 + r) * lda..][..k]
            } else {
                &zeros[..k]
            }
        });
        for j0 in (0..full_n).step_by(nr) {
            let zero = simd.splat_f32s(0.0);
            let mut acc = [[zero; 2]; MR];
            for p in 0..k {
                let (bv, _) = S::as_simd_f32s(&b[p * ldb + j0..][..nr]);
                let (b0, b1) = (bv[0], bv[1]);
                for r in 0..MR {
                    let av = simd.splat_f32s(rows[r][p]);
                    acc[r][0] = simd.mul_add_e_f32s(av, b0, acc[r][0]);
                    acc[r][1] = simd.mul_add_e_f32s(av, b1, acc[r][1]);
                }
            }
            for (r, acc) in acc.iter().enumerate().take(mr) {
                let (dst, _) = S::as_mut_simd_f32s(&mut c[(i0 + r) * ldc + j0..][..nr]);
                for (d, &x) in dst.iter_mut().zip(acc) {
                    *d = if accumulate { simd.add_f32s(*d, x) } else { x };
                }
            }
        }
        for j in full_n..n {
            let mut acc = [0.0f32; MR];
            for p in 0..k {
                let bv = b[p * ldb + j];
                for r in 0..MR {
                    acc[r] += rows[r][p] * bv;
                }
            }
            for (r, &x) in acc.iter().enumerate().take(mr) {
                let d = &mut c[(i0 + r) * ldc + j];
                *d = if accumulate { *d + x } else { x };
            }
        }
    }
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

/// `x ← exp(scale·x − shift)` over a row; returns the row's new sum.
#[inline(always)]
fn exp_row(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut tail = 0.0f32;
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            c[k] = exp_f32(c[k] * scale - shift);
            acc[k] += c[k];
        }
    }
    for v in chunks.into_remainder() {
        *v = exp_f32(*v * scale - shift);
        tail += *v;
    }
    acc.iter().sum::<f32>() + tail
}

/// Hides keys `j0 + c > i0 + r` (causal) by setting their scores to −∞.
fn mask_future(s: &mut [f32], (i0, br): (usize, usize), (j0, bc): (usize, usize)) {
    for r in 0..br {
        let first_hidden = (i0 + r + 1).saturating_sub(j0).min(bc);
        s[r * bc + first_hidden..(r + 1) * bc].fill(f32::NEG_INFINITY);
    }
}

/// The forward pass of one (head, query block): `o` (`[br, hd]`) and `lse` (`[br]`).
struct ForwardTile<'a> {
    h: Heads,
    q: &'a [f32],
    kt: &'a [f32],
    v: &'a [f32],
    i0: usize,
    o: &'a mut [f32],
    lse: &'a mut [f32],
}

impl WithSimd for ForwardTile<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Heads { l, hd, .. } = self.h;
        let (i0, br, scale) = (self.i0, self.lse.len(), self.h.scale());
        let mut s = vec![0.0f32; BLOCK * BLOCK];
        let zeros = vec![0.0f32; BLOCK.max(hd)];
        let mut m = [f32::NEG_INFINITY; BLOCK];
        let mut sum = [0.0f32; BLOCK];
        self.o.fill(0.0);
        let q = &self.q[i0 * hd..(i0 + br) * hd];
        for j0 in (0..self.h.keys_for(i0, br)).step_by(BLOCK) {
            let bc = BLOCK.min(l - j0);
            let s = &mut s[..br * bc];
            // S = Q·Kᵀ for keys j0..j0+bc (kt holds this block as [hd, bc]).
            let kt = &self.kt[j0 * hd..];
            gemm(simd, (br, bc, hd), q, hd, kt, bc, s, bc, false, &zeros);
            if self.h.causal && j0 + bc > i0 + 1 {
                mask_future(s, (i0, br), (j0, bc));
            }
            for r in 0..br {
                let row = &mut s[r * bc..(r + 1) * bc];
                let m_new = m[r].max(scale * row_max(row));
                if m_new == f32::NEG_INFINITY {
                    row.fill(0.0); // every key so far hidden: nothing to add
                    continue;
                }
                let alpha = if m[r] == f32::NEG_INFINITY {
                    0.0
                } else {
                    exp_f32(m[r] - m_new)
                };
                sum[r] = sum[r] * alpha + exp_row(row, scale, m_new);
                m[r] = m_new;
                if alpha != 1.0 {
                    self.o[r * hd..(r + 1) * hd]
                        .iter_mut()
                        .for_each(|x| *x *= alpha);
                }
            }
            // O += P·V for keys j0..j0+bc.
            let v = &self.v[j0 * hd..(j0 + bc) * hd];
            gemm(simd, (br, hd, bc), s, bc, v, hd, self.o, hd, true, &zeros);
        }
        for r in 0..br {
            let inv = 1.0 / sum[r];
            self.o[r * hd..(r + 1) * hd]
                .iter_mut()
                .for_each(|x| *x *= inv);
            self.lse[r] = m[r] + sum[r].ln();
        }
    }
}

/// Forward pass: `softmax(scale·q·kᵀ)·v` per head, `[n, l, hd]` each; returns the output
/// `[n, l, hd]` and the log-sum-exp of each query row's scaled scores, `[n, l]`.
pub(super) fn forward(q: &[f32], k: &[f32], v: &[f32], h: Heads) -> (Vec<f32>, Vec<f32>) {
    let Heads { n, l, hd, .. } = h;
    let kt = transpose_blocks(k, h);
    let mut o = vec![0.0f32; n * l * hd];
    let mut lse = vec![0.0f32; n * l];
    o.par_chunks_mut(l * hd)
        .zip(lse.par_chunks_mut(l))
        .enumerate()
        .flat_map(|(head, (o, lse))| {
            o.par_chunks_mut(BLOCK * hd)
                .zip(lse.par_chunks_mut(BLOCK))
                .enumerate()
                .map(move |(blk, (o, lse))| (head, blk, o, lse))
        })
        .for_each(|(head, blk, o, lse)| {
            let at = head * l * hd..(head + 1) * l * hd;
            simd(ForwardTile {
                h,
                q: &q[at.clone()],
                kt: &kt[at.clone()],
                v: &v[at],
                i0: blk * BLOCK,
                o,
                lse,
            })
        });
    (o, lse)
}

/// One head's tensors for the backward pass, each `[l, hd]` unless marked.
struct HeadGrad<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    d_o: &'a [f32],
    /// Qᵀ and dOᵀ by blocks ([`transpose_blocks`]).
    qt: &'a [f32],
    dot: &'a [f32],
    /// Log-sum-exp and `D = rowsum(dO∘O)` per query, `[l]`.
    lse: &'a [f32],
    delta: &'a [f32],
}

/// The backward pass of one (head, key chunk): `dk`, `dv` of the chunk's keys and the chunk's
/// share of `dq` (`[l, hd]`, accumulated).
struct BackwardChunk<'a> {
    h: Heads,
    g: HeadGrad<'a>,
    j_start: usize,
    dk: &'a mut [f32],
    dv: &'a mut [f32],
    dq: &'a mut [f32],
}

impl WithSimd for BackwardChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Heads { l, hd, .. } = self.h;
        let (g, scale) = (&self.g, self.h.scale());
        let tile = BLOCK * BLOCK;
        let (mut pt, mut dpt, mut ds) = (vec![0.0f32; tile], vec![0.0f32; tile], vec![0.0; tile]);
        let zeros = vec![0.0f32; BLOCK.max(hd)];
        self.dk.fill(0.0);
        self.dv.fill(0.0);
        let rows = self.dk.len() / hd;
        for jb in (0..rows).step_by(BLOCK) {
            let (j0, bc) = (self.j_start + jb, BLOCK.min(rows - jb));
            let k = &g.k[j0 * hd..(j0 + bc) * hd];
            let v = &g.v[j0 * hd..(j0 + bc) * hd];
            let dk = &mut self.dk[jb * hd..(jb + bc) * hd];
            let dv = &mut self.dv[jb * hd..(jb + bc) * hd];
            for i0 in (self.h.queries_for(j0)..l).step_by(BLOCK) {
                let br = BLOCK.min(l - i0);
                let (pt, dpt, ds) = (&mut pt[..bc * br], &mut dpt[..bc * br], &mut ds[..br * bc]);
                // Sᵀ = K·Qᵀ, then Pᵀ = exp(scale·Sᵀ − lse) column by column.
                let qt = &g.qt[i0 * hd..];
                gemm(simd, (bc, br, hd), k, hd, qt, br, pt, br, false, &zeros);
                let lse = &g.lse[i0..i0 + br];
                for (c, row) in pt.chunks_exact_mut(br).enumerate() {
                    for (x, &s) in row.iter_mut().zip(lse) {
                        *x = exp_f32(*x * scale - s);
                    }
                    if self.h.causal {
                        // key j0 + c is hidden from queries i0 + r < j0 + c
                        let visible_from = (j0 + c).saturating_sub(i0).min(br);
                        row[..visible_from].fill(0.0);
                    }
                }
                // dV += Pᵀ·dO.
                let d_o = &g.d_o[i0 * hd..(i0 + br) * hd];
                gemm(simd, (bc, hd, br), pt, br, d_o, hd, dv, hd, true, &zeros);
                // dPᵀ = V·dOᵀ, then dSᵀ = scale·Pᵀ∘(dPᵀ − D).
                let dot = &g.dot[i0 * hd..];
                gemm(simd, (bc, br, hd), v, hd, dot, br, dpt, br, false, &zeros);
                let delta = &g.delta[i0..i0 + br];
                for (dp, p) in dpt.chunks_exact_mut(br).zip(pt.chunks_exact(br)) {
                    for ((x, &p), &d) in dp.iter_mut().zip(p).zip(delta) {
                        *x = scale * p * (*x - d);
                    }
                }
                // dK += dSᵀ·Q; dQ += dS·K.
                let q = &g.q[i0 * hd..(i0 + br) * hd];
                gemm(simd, (bc, hd, br), dpt, br, q, hd, dk, hd, true, &zeros);
                transpose(dpt, bc, br, ds);
                let dq = &mut self.dq[i0 * hd..(i0 + br) * hd];
                gemm(simd, (br, hd, bc), ds, bc, k, hd, dq, hd, true, &zeros);
            }
        }
    }
}

/// Backward pass of [`forward`]: from `d_o` (`[n, l, hd]`), the inputs and what the forward
/// pass returned, the gradients `[dq, dk, dv]`, each `[n, l, hd]`.
pub(super) fn backward(
    [q, k, v]: [&[f32]; 3],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    h: Heads,
) -> [Vec<f32>; 3] {
    let Heads { n, l, hd, .. } = h;
    let head = l * hd;
    let qt = transpose_blocks(q, h);
    let dot = transpose_blocks(d_o, h);
    let delta: Vec<f32> = d_o
        .par_chunks(hd)
        .zip(o.par_chunks(hd))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
        .collect();
    // Split each head's keys into `chunks` tasks so that there are at least [`TASKS`] in all; a
    // split head sums its tasks' dQ shares afterwards, in task order. The split depends on the
    // shape only, never on the thread count, so the gradients have the same bits on any machine
    // (of one instruction set) and any `RAYON_NUM_THREADS`.
    let blocks = l.div_ceil(BLOCK);
    let chunks = TASKS.div_ceil(n).clamp(1, blocks);
    let chunk_rows = blocks.div_ceil(chunks) * BLOCK;
    let chunks = l.div_ceil(chunk_rows);
    let (mut dk, mut dv) = (vec![0.0f32; n * head], vec![0.0f32; n * head]);
    let mut dq_parts = vec![0.0f32; n * chunks * head];
    dk.par_chunks_mut(head)
        .zip(dv.par_chunks_mut(head))
        .zip(dq_parts.par_chunks_mut(chunks * head))
        .enumerate()
        .flat_map(|(hi, ((dk, dv), dq))| {
            dk.par_chunks_mut(chunk_rows * hd)
                .zip(dv.par_chunks_mut(chunk_rows * hd))
                .zip(dq.par_chunks_mut(head))
                .enumerate()
                .map(move |(c, ((dk, dv), dq))| (hi, c, dk, dv, dq))
        })
        .for_each(|(hi, c, dk, dv, dq)| {
            let at = hi * head..(hi + 1) * head;
            let g = HeadGrad {
                q: &q[at.clone()],
                k: &k[at.clone()],
                v: &v[at.clone()],
                d_o: &d_o[at.clone()],
                qt: &qt[at.clone()],
                dot: &dot[at],
                lse: &lse[hi * l..(hi + 1) * l],
                delta: &delta[hi * l..(hi + 1) * l],
            };
            let j_start = c * chunk_rows;
            simd(BackwardChunk {
                h,
                g,
                j_start,
                dk,
                dv,
                dq,
            })
        });
    let dq = if chunks == 1 {
        dq_parts
    } else {
        let mut dq = vec![0.0f32; n * head];
        dq.par_chunks_mut(head)
            .zip(dq_parts.par_chunks(chunks * head))
            .for_each(|(dq, parts)| {
                for part in parts.chunks_exact(head) {
                    dq.iter_mut().zip(part).for_each(|(d, &x)| *d += x);
                }
            });
        dq
    };
    [dq, dk, dv]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded uniform values in [−scale, scale).
    fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-scale..scale)).collect()
    }

    /// `[q, k, v]` in [−2, 2) and `dO` in [−1, 1) for `h`, from seeds `seed .. seed + 4`.
    fn inputs(h: Heads, seed: u64) -> ([Vec<f32>; 3], Vec<f32>) {
        let len = h.n * h.l * h.hd;
        let qkv = [0, 1, 2].map(|i| values(len, seed + i, 2.0));
        (qkv, values(len, seed + 3, 1.0))
    }

    /// Attention by the textbook, in f64, with the whole `L × L` matrix: `[o, lse, dq, dk, dv]`.
    fn naive(q: &[f32], k: &[f32], v: &[f32], d_o: &[f32], h: Heads) -> [Vec<f64>; 5] {
        let Heads { n, l, hd, causal } = h;
        let scale = 1.0 / (hd as f64).sqrt();
        let at = |x: &[f32], hi: usize, i: usize, d: usize| x[(hi * l + i) * hd + d] as f64;
        let mut out = [
            vec![0.0; n * l * hd],
            vec![0.0; n * l],
            vec![0.0; n * l * hd],
            vec![0.0; n * l * hd],
            vec![0.0; n * l * hd],
        ];
        for hi in 0..n {
            let mut p = vec![0.0f64; l * l];
            for i in 0..l {
                let seen = if causal { i + 1 } else { l };
                for j in 0..seen {
                    p[i * l + j] = scale
                        * (0..hd)
                            .map(|d| at(q, hi, i, d) * at(k, hi, j, d))
                            .sum::<f64>();
                }
                let m = p[i * l..i * l + seen]
                    .iter()
                    .fold(f64::MIN, |a, &b| a.max(b));
                let z: f64 = p[i * l..i * l + seen].iter().map(|s| (s - m).exp()).sum();
                out[1][hi * l + i] = m + z.ln();
                for j in 0..l {
                    p[i * l + j] = if j < seen {
                        (p[i * l + j] - m).exp() / z
                    } else {
                        0.0
                    };
                }
            }
            for i in 0..l {
                for d in 0..hd {
                    out[0][(hi * l + i) * hd + d] =
                        (0..l).map(|j| p[i * l + j] * at(v, hi, j, d)).sum();
                }
            }
            // dP = dO·Vᵀ, dS = scale·P∘(dP − rowsum(dP∘P)).
            let mut ds = vec![0.0f64; l * l];
            for i in 0..l {
                for j in 0..l {
                    ds[i * l + j] = (0..hd).map(|d| at(d_o, hi, i, d) * at(v, hi, j, d)).sum();
                }
                let dot: f64 = (0..l).map(|j| ds[i * l + j] * p[i * l + j]).sum();
                for j in 0..l {
                    ds[i * l + j] = scale * p[i * l + j] * (ds[i * l + j] - dot);
                }
            }
            for i in 0..l {
                for d in 0..hd {
                    let x = (hi * l + i) * hd + d;
                    out[2][x] = (0..l).map(|j| ds[i * l + j] * at(k, hi, j, d)).sum();
                    out[3][x] = (0..l).map(|j| ds[j * l + i] * at(q, hi, j, d)).sum();
                    out[4][x] = (0..l).map(|j| p[j * l + i] * at(d_o, hi, j, d)).sum();
                }
            }
        }
        out
    }

    /// `|got − want| ≤ 1e-5·|want| + 1e-6·max|want|` (as `tests/it/common.rs`).
    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-5 * w.abs() + 1e-6 * scale;
            assert!((g as f64 - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn tiled_attention_equals_the_textbook_in_value_and_gradient() {
        // L = 1 and L below one block; L = 130 = 2·64 + 2 (a short last tile), hd = 24 (not a
        // multiple of the 16-column register tile); one head of L = 200 (its keys split over
        // several backward tasks, whose dQ shares are summed).
        for (n, l, hd) in [
            (2, 1, 8),
            (3, 13, 8),
            (2, 64, 16),
            (2, 130, 24),
            (1, 200, 64),
        ] {
            for causal in [false, true] {
                let h = Heads { n, l, hd, causal };
                let ([q, k, v], d_o) = inputs(h, 1);
                let (o, lse) = forward(&q, &k, &v, h);
                let [dq, dk, dv] = backward([&q, &k, &v], &o, &lse, &d_o, h);
                let want = naive(&q, &k, &v, &d_o, h);
                let what = |s: &str| format!("{s}, n = {n}, L = {l}, hd = {hd}, causal = {causal}");
                assert_close(&o, &want[0], &what("o"));
                assert_close(&lse, &want[1], &what("lse"));
                assert_close(&dq, &want[2], &what("dq"));
                assert_close(&dk, &want[3], &what("dk"));
                assert_close(&dv, &want[4], &what("dv"));
            }
        }
    }

    #[test]
    fn backward_gives_the_same_bits_on_any_thread_count() {
        // Two heads of L = 512: split into key chunks (dQ summed from shares) whatever the
        // pool; the split used to follow the thread count (one chunk on 1 or 2 threads, eight
        // on 8), and with it the order of the dQ additions.
        for causal in [false, true] {
            let h = Heads {
                n: 2,
                l: 512,
                hd: 32,
                causal,
            };
            let ([q, k, v], d_o) = inputs(h, 5);
            let bits = |threads: usize| -> Vec<Vec<u32>> {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let (o, lse) = forward(&q, &k, &v, h);
                    let [dq, dk, dv] = backward([&q, &k, &v], &o, &lse, &d_o, h);
                    [o, dq, dk, dv]
                        .iter()
                        .map(|x| x.iter().map(|f| f.to_bits()).collect())
                        .collect()
                })
            };
            let one = bits(1);
            for threads in [2, 3, 8, 16] {
                let got = bits(threads);
                for (name, (a, b)) in ["o", "dq", "dk", "dv"].iter().zip(one.iter().zip(&got)) {
                    assert!(
                        a == b,
                        "{name} on {threads} threads differs from 1 thread (causal = {causal})"
                    );
                }
            }
        }
    }

    /// CPU seconds of this process so far (user + system, from /proc/self/stat).
    fn cpu_s() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        (f[11] + f[12]) / 100.0
    }

    /// Timing of one forward + backward at the L = 1024 bench shape (B = 2, H = 4, hd = 64), in
    /// CPU time (robust to other load on the machine), next to burn's GEMM on `q·kᵀ` of the same
    /// shape as a yardstick.
    #[test]
    #[ignore = "timing: run with --ignored --nocapture"]
    fn tiled_attention_timing() {
        let h = Heads {
            n: 8,
            l: 1024,
            hd: 64,
            causal: false,
        };
        let ([q, k, v], d_o) = inputs(h, 1);
        let mm = 2.0 * (h.n * h.l * h.l * h.hd) as f64;
        let reps = 10;
        let (qf, kf) = (
            super::super::flex_from(q.clone(), &[h.n, h.l, h.hd]),
            super::super::flex_from(k.clone(), &[h.n, h.l, h.hd]),
        );
        let t = cpu_s();
        for _ in 0..reps {
            let _ = super::super::matmul(&qf, &kf.transpose(1, 2));
        }
        let g = (cpu_s() - t) / reps as f64;
        let (o, lse) = forward(&q, &k, &v, h);
        let t = cpu_s();
        for _ in 0..reps {
            let _ = forward(&q, &k, &v, h);
        }
        let f = (cpu_s() - t) / reps as f64;
        let t = cpu_s();
        for _ in 0..reps {
            let _ = backward([&q, &k, &v], &o, &lse, &d_o, h);
        }
        let b = (cpu_s() - t) / reps as f64;
        println!(
            "CPU GFLOP per CPU-second: burn GEMM {:.0}, forward {:.0} ({:.1} ms), backward {:.0} ({:.1} ms)",
            mm / g / 1e9,
            2.0 * mm / f / 1e9,
            f * 1e3,
            5.0 * mm / b / 1e9,
            b * 1e3
        );
    }
}
