//! Dense symmetric linear algebra in f64 for the image metrics: the eigendecomposition of a real
//! symmetric matrix (Householder reduction to tridiagonal form, then the implicit QL algorithm
//! with Wilkinson-style shifts: EISPACK's `tred2` + `tql2`, as in JAMA), and a matrix product.
//! O(n³). The working matrix is stored column-major (`at(i, j) = j·n + i`): every inner loop of
//! both routines then runs down a column, i.e. over contiguous memory (row-major, the QL
//! rotations and half of the reduction stride by `n` and a 2048 × 2048 covariance took
//! minutes instead of seconds).

/// `A = V · diag(λ) · Vᵀ` of a symmetric `n × n` matrix (row-major): eigenvalues ascending,
/// eigenvectors as the columns of `vectors` (row-major `n × n`).
#[derive(Debug, Clone)]
pub struct SymEigen {
    pub values: Vec<f64>,
    pub vectors: Vec<f64>,
    pub n: usize,
}

/// The eigendecomposition of the symmetric matrix `a` (`n × n`, row-major; only symmetric input
/// gives a meaningful answer). `None` when the QL iteration does not converge (non-finite
/// input).
pub fn sym_eigen(a: &[f64], n: usize) -> Option<SymEigen> {
    let (values, v) = decompose(a, n, true)?;
    Some(SymEigen {
        values,
        vectors: transpose(&v, n, n),
        n,
    })
}

/// The eigenvalues alone of the symmetric matrix `a`, ascending: [`sym_eigen`]'s values (the
/// same arithmetic on them, bit for bit) without accumulating the eigenvectors, about a third
/// of its work.
pub fn sym_eigenvalues(a: &[f64], n: usize) -> Option<Vec<f64>> {
    Some(decompose(a, n, false)?.0)
}

/// Eigenvalues and, when `vectors`, the column-major eigenvector matrix.
fn decompose(a: &[f64], n: usize, vectors: bool) -> Option<(Vec<f64>, Vec<f64>)> {
    assert_eq!(
        a.len(),
        n * n,
        "sym_eigen: {} values for {n} × {n}",
        a.len()
    );
    if n == 0 {
        return Some((vec![], vec![]));
    }
    if a.iter().any(|x| !x.is_finite()) {
        return None;
    }
    // Column-major working copy (the transpose of row-major `a`).
    let mut v = transpose(a, n, n);
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    tred2(&mut v, &mut d, &mut e, n, vectors);
    tql2(&mut v, &mut d, &mut e, n, vectors)?;
    Some((d, v))
}

/// Householder reduction of `v` (in: the matrix; out: the orthogonal transformation when
/// `vectors`, scratch otherwise) to tridiagonal form: diagonal `d`, subdiagonal `e[1..]`.
fn tred2(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize, vectors: bool) {
    let at = |i: usize, j: usize| j * n + i; // column-major
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
                v[at(j, i)] = 0.0;
            }
        } else {
            for dk in &mut d[..i] {
                *dk /= scale;
                h += *dk * *dk;
            }
            let f = d[i - 1];
            let g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                let f = d[j];
                v[at(j, i)] = f;
                let mut g = e[j] + v[at(j, j)] * f;
                for k in j + 1..i {
                    g += v[at(k, j)] * d[k];
                    e[k] += v[at(k, j)] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                for k in j..i {
                    v[at(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    if !vectors {
        // The reduced diagonal is left on v's diagonal (the accumulation below would move it
        // to the last row and read it back from there).
        for (j, dj) in d.iter_mut().enumerate() {
            *dj = v[at(j, j)];
        }
        e[0] = 0.0;
        return;
    }
    for i in 0..n - 1 {
        v[at(n - 1, i)] = v[at(i, i)];
        v[at(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[at(k, i + 1)] / h;
            }
            for j in 0..=i {
                let mut g = 0.0;
                for k in 0..=i {
                    g += v[at(k, i + 1)] * v[at(k, j)];
                }
                for k in 0..=i {
                    v[at(k, j)] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[at(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
        v[at(n - 1, j)] = 0.0;
    }
    v[at(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL on the tridiagonal (`d`, `e`), accumulating into `v`; eigenvalues sorted
/// ascending with their vectors. `None` after 100 iterations without convergence on one value.
fn tql2(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize, vectors: bool) -> Option<()> {
    let at = |i: usize, j: usize| j * n + i; // column-major
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iterations = 0;
            loop {
                iterations += 1;
                if iterations > 100 {
                    return None;
                }
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for di in &mut d[l + 2..n] {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    if vectors {
                        // Columns i and i + 1, contiguous (column-major): a loop that vectorises.
                        let (left, right) = v.split_at_mut(at(0, i + 1));
                        let col_i = &mut left[at(0, i)..];
                        for (a, b) in col_i.iter_mut().zip(&mut right[..n]) {
                            let h = *b;
                            *b = s * *a + c * h;
                            *a = c * *a - s * h;
                        }
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    // Sort ascending (selection sort: n swaps of columns at most).
    for i in 0..n.saturating_sub(1) {
        let k = (i..n).min_by(|&a, &b| d[a].total_cmp(&d[b]))?;
        if k != i {
            d.swap(i, k);
            if vectors {
                for j in 0..n {
                    v.swap(at(j, i), at(j, k));
                }
            }
        }
    }
    Some(())
}

/// Rows of `a` (and of the output) per parallel task of [`matmul`].
const MM_ROWS: usize = 32;
/// `k`-extent and `m`-extent of the tile of `b` a task streams over its rows: 128 × 256 f64 is
/// 256 KiB, which stays in L2 while the task's rows pass over it.
const MM_K: usize = 128;
const MM_M: usize = 256;

/// `a · b` for row-major `a: [n, k]`, `b: [k, m]` → `[n, m]`. Blocks of [`MM_ROWS`] output rows
/// in parallel, each sweeping `b` tile by tile ([`MM_K`] × [`MM_M`]) so that a tile is read
/// from cache by every row of the block (untiled, each output row streamed all of `b` from
/// memory: a 2048³ product moved 64 GB). Each output value is still summed over `p` in order.
pub fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    use rayon::prelude::*;
    assert!(a.len() == n * k && b.len() == k * m, "matmul: shapes");
    let mut out = vec![0.0; n * m];
    if n * k * m == 0 {
        return out;
    }
    out.par_chunks_mut(MM_ROWS * m)
        .zip(a.par_chunks(MM_ROWS * k))
        .for_each(|(rows, ar)| {
            for p0 in (0..k).step_by(MM_K) {
                let p1 = (p0 + MM_K).min(k);
                for j0 in (0..m).step_by(MM_M) {
                    let j1 = (j0 + MM_M).min(m);
                    for (row, arow) in rows.chunks_exact_mut(m).zip(ar.chunks_exact(k)) {
                        let row = &mut row[j0..j1];
                        for p in p0..p1 {
                            let x = arow[p];
                            if x != 0.0 {
                                let br = &b[p * m + j0..p * m + j1];
                                for (o, &y) in row.iter_mut().zip(br) {
                                    *o += x * y;
                                }
                            }
                        }
                    }
                }
            }
        });
    out
}

/// `V · diag(g(λ)) · Vᵀ`: a function of a symmetric matrix through its eigendecomposition.
pub fn sym_apply(eig: &SymEigen, g: impl Fn(f64) -> f64) -> Vec<f64> {
    let n = eig.n;
    // (V · diag(g)) row-major, then times Vᵀ.
    let mut vg = eig.vectors.clone();
    let gs: Vec<f64> = eig.values.iter().map(|&x| g(x)).collect();
    for row in vg.chunks_mut(n.max(1)) {
        for (x, &gj) in row.iter_mut().zip(&gs) {
            *x *= gj;
        }
    }
    let vt = transpose(&eig.vectors, n, n);
    matmul(&vg, &vt, n, n, n)
}

/// The transpose of row-major `a: [n, m]`.
pub fn transpose(a: &[f64], n: usize, m: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            t[j * n + i] = a[i * m + j];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn random_symmetric(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x: f64 = rng.random_range(-1.0..1.0);
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        a
    }

    #[test]
    fn closed_forms() {
        // [[2, 1], [1, 2]]: eigenvalues 1 and 3, vectors (1, −1)/√2 and (1, 1)/√2.
        let e = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
        assert!((e.values[0] - 1.0).abs() < 1e-14 && (e.values[1] - 3.0).abs() < 1e-14);
        let v0 = (e.vectors[0], e.vectors[2]);
        assert!((v0.0 + v0.1).abs() < 1e-14 && (v0.0.abs() - 0.5f64.sqrt()).abs() < 1e-14);
        // A diagonal matrix is its own decomposition, sorted.
        let e = sym_eigen(&[5.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 2.0], 3).unwrap();
        assert_eq!(e.values, vec![-1.0, 2.0, 5.0]);
        // 1 × 1, empty, and non-finite input.
        assert_eq!(sym_eigen(&[4.0], 1).unwrap().values, vec![4.0]);
        assert!(sym_eigen(&[], 0).unwrap().values.is_empty());
        assert!(sym_eigen(&[f64::NAN, 0.0, 0.0, 1.0], 2).is_none());
    }

    #[test]
    fn reconstructs_random_matrices_with_orthonormal_vectors() {
        for (n, seed) in [(3, 1), (17, 2), (64, 3)] {
            let a = random_symmetric(n, seed);
            let e = sym_eigen(&a, n).unwrap();
            let back = sym_apply(&e, |x| x);
            let err = a
                .iter()
                .zip(&back)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12, "n = {n}: |A − VΛVᵀ| = {err}");
            let vtv = matmul(&transpose(&e.vectors, n, n), &e.vectors, n, n, n);
            for i in 0..n {
                for j in 0..n {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((vtv[i * n + j] - want).abs() < 1e-12, "VᵀV ≠ I at n = {n}");
                }
            }
            assert!(e.values.windows(2).all(|w| w[0] <= w[1]), "sorted");
            // The trace is the sum of the eigenvalues.
            let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
            assert!((trace - e.values.iter().sum::<f64>()).abs() < 1e-12);
            // The values-only path does the same arithmetic on the values.
            assert_eq!(sym_eigenvalues(&a, n).unwrap(), e.values, "n = {n}");
        }
    }

    #[test]
    fn the_tiled_product_equals_the_plain_triple_loop() {
        // Sizes that leave partial tiles in every dimension (MM_ROWS, MM_K, MM_M).
        let (n, k, m) = (MM_ROWS + 5, MM_K * 2 + 3, MM_M + 7);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut draw =
            |len: usize| -> Vec<f64> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (a, b) = (draw(n * k), draw(k * m));
        let got = matmul(&a, &b, n, k, m);
        for i in 0..n {
            for j in 0..m {
                let mut want = 0.0;
                for p in 0..k {
                    want += a[i * k + p] * b[p * m + j];
                }
                assert_eq!(got[i * m + j], want, "({i}, {j})");
            }
        }
    }
}
