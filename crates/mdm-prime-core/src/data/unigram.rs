//! The unigram baseline: what a model that only knows token frequencies would score.

/// Unigram baseline: the mean negative log-likelihood (nats/token) of `eval` under add-one
/// smoothed unigram frequencies counted on `train` over a vocabulary of `V` ids:
///
/// `p(x) = (count(x) + 1) / (N + V)`, returned as `−(1/|eval|) Σ_{x ∈ eval} ln p(x)`,
///
/// where N counts the train ids `< V` (ids `≥ V` are not counted, and in `eval` they get
/// `p = 1/(N + V)`). An empty `eval` gives NaN. A model that beats this has learned more than
/// token frequencies.
pub fn unigram_nll(train: &[u32], eval: &[u32], vocab_size: u32) -> f64 {
    if eval.is_empty() {
        return f64::NAN;
    }
    let mut counts = vec![0u64; vocab_size as usize];
    let mut n = 0u64;
    for &x in train {
        if let Some(c) = counts.get_mut(x as usize) {
            *c += 1;
            n += 1;
        }
    }
    let log_denominator = ((n + u64::from(vocab_size)) as f64).ln();
    let total: f64 = eval
        .iter()
        .map(|&x| {
            let c = counts.get(x as usize).copied().unwrap_or(0);
            log_denominator - ((c + 1) as f64).ln()
        })
        .sum();
    total / eval.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unigram_nll_by_hand() {
        // Train counts: 0 → 2, 1 → 1, 2 → 0; N = 3, V = 3, so p(0) = 3/6, p(2) = 1/6.
        // Mean of −ln(1/2) and −ln(1/6) = ln(12) / 2.
        let nll = unigram_nll(&[0, 0, 1], &[0, 2], 3);
        assert!((nll - 12f64.ln() / 2.0).abs() < 1e-12, "{nll}");
        assert!((nll - 1.242_453_324_894).abs() < 1e-9);
        // Train id 7 ≥ V is not counted (N stays 3); eval id 7 gets 1/(N+V).
        let nll = unigram_nll(&[0, 0, 1, 7], &[7], 3);
        assert!((nll - 6f64.ln()).abs() < 1e-12);
        // Empty train: uniform over V.
        assert!((unigram_nll(&[], &[1, 2], 4) - 4f64.ln()).abs() < 1e-12);
        assert!(unigram_nll(&[0], &[], 3).is_nan());
    }
}
