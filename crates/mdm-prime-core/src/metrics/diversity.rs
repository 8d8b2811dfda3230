//! Diversity of generated text: the unigram entropy of each sample, the field's guard against
//! degenerate, repetitive samples that a judge scores as likely (low generative perplexity) —
//! a sample that repeats one token has entropy 0 (docs/genppl.md).

use std::collections::HashMap;

/// Entropy in nats of the empirical token distribution of one sequence:
/// `H = −Σ_v (c_v / n)·ln(c_v / n)`, with `c_v` the count of token v among the `n` tokens.
/// 0 for an empty sequence or one token repeated; `ln n` for n distinct tokens (the most a
/// sequence of n tokens can have).
///
/// # Shapes
/// `tokens: n` → a scalar.
pub fn unigram_entropy(tokens: &[u32]) -> f64 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for &t in tokens {
        *counts.entry(t).or_default() += 1;
    }
    let n = tokens.len() as f64;
    // Sum in a fixed order, so that the value does not depend on the hash map's.
    let mut c: Vec<usize> = counts.into_values().collect();
    c.sort_unstable();
    c.iter()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum::<f64>()
        .max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        assert_eq!(unigram_entropy(&[]), 0.0);
        assert_eq!(unigram_entropy(&[7; 50]), 0.0);
        for n in [1u32, 2, 5, 256] {
            let distinct: Vec<u32> = (0..n).collect();
            let h = unigram_entropy(&distinct);
            assert!((h - (n as f64).ln()).abs() < 1e-12, "{n}: {h}");
        }
        // [1, 1, 2, 3]: p = (1/2, 1/4, 1/4), H = ½ ln 2 + 2·¼ ln 4 = (3/2) ln 2 = 1.0397208.
        let h = unigram_entropy(&[1, 2, 1, 3]);
        assert!((h - 1.5 * std::f64::consts::LN_2).abs() < 1e-12, "{h}");
        assert!((h - 1.039_720_770_839_918).abs() < 1e-12);
        // Order does not matter, ids do not matter: only the counts.
        assert_eq!(unigram_entropy(&[9, 50256, 9, 0]), h);
        // Ten tokens, counts 5, 3, 2: −(.5 ln .5 + .3 ln .3 + .2 ln .2) = 1.0296530.
        let h = unigram_entropy(&[4, 4, 4, 4, 4, 8, 8, 8, 6, 6]);
        assert!((h - 1.029_653_014_064_573_7).abs() < 1e-12, "{h}");
    }
}
