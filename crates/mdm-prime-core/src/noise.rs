//! The forward (noising) process (design §3.1): every sub-token is masked independently with
//! probability `1 − α_t`, one t per sequence, the same t for all sub-tokens of that sequence.

use rand::{Rng, RngExt};

use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::subtoken::Codec;

/// Noises a batch of clean sub-token sequences.
///
/// Sub-token `k` of sequence `s` becomes the mask id `b` when `U(0,1) < 1 − α(t[s])`
/// (`text/diffusion.py::q_xt`), and is copied otherwise.
///
/// # Shapes
/// `y0: [B, L·ℓ]` (flat, token-major), `t: [B]` → `yt: [B, L·ℓ]`.
pub fn noise_batch(
    codec: &Codec,
    schedule: &Schedule,
    y0: &[u32],
    t: &[f64],
    rng: &mut impl Rng,
) -> Result<Vec<u32>> {
    if t.is_empty()
        || !y0.len().is_multiple_of(t.len())
        || !(y0.len() / t.len()).is_multiple_of(codec.ell())
    {
        return Err(Error::Value(format!(
            "noise_batch: {} sub-tokens do not split into {} sequences of whole tokens (ell = {})",
            y0.len(),
            t.len(),
            codec.ell()
        )));
    }
    let per_seq = y0.len() / t.len();
    let mut yt = y0.to_vec();
    for (seq, &ts) in yt.chunks_exact_mut(per_seq).zip(t) {
        let move_chance = schedule.mask_prob(ts);
        for y in seq.iter_mut() {
            if rng.random::<f64>() < move_chance {
                *y = codec.mask_id();
            }
        }
    }
    Ok(yt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{SAMPLING_EPS, sample_times};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn masks_only_with_the_mask_id_and_at_the_schedule_rate() {
        let codec = Codec::new(256, 4).unwrap();
        let s = Schedule::default();
        let mut rng = StdRng::seed_from_u64(3);
        let ids: Vec<u32> = (0..4096).map(|i| (i * 37 % 256) as u32).collect();
        let y0 = codec.encode(&ids).unwrap();
        let t = [0.0, 0.25, 1.0, 0.5];
        let yt = noise_batch(&codec, &s, &y0, &t, &mut rng).unwrap();
        let per = y0.len() / 4;
        for (k, &ts) in t.iter().enumerate() {
            let seq = &yt[k * per..(k + 1) * per];
            let clean = &y0[k * per..(k + 1) * per];
            // Every position is either the clean digit or the mask.
            assert!(
                seq.iter()
                    .zip(clean)
                    .all(|(&y, &c)| y == c || y == codec.mask_id())
            );
            let rate = seq.iter().filter(|&&y| y == codec.mask_id()).count() as f64 / per as f64;
            let p = s.mask_prob(ts);
            let sd = (p * (1.0 - p) / per as f64).sqrt();
            assert!(
                (rate - p).abs() <= 5.0 * sd + 1e-12,
                "t={ts}: rate {rate} vs {p}"
            );
        }
    }

    /// Monte-Carlo version of the weight fact (design §4.5), through the production time sampler,
    /// forward process and weight: E[w(t) · #masked] = ℓ (the ELBO's expected total weight),
    /// up to the ε cut-offs of training (t ≥ 1e-3, mask prob 0.999 t).
    #[test]
    fn expected_weighted_masked_count_is_ell() {
        let ell = 3;
        let codec = Codec::new(8, ell).unwrap();
        let s = Schedule::default();
        let mut rng = StdRng::seed_from_u64(11);
        let (b, seqs) = (64, 400);
        let y0 = codec.encode(&vec![5u32; 4 * b]).unwrap();
        let mut vals = Vec::new();
        for _ in 0..seqs {
            let t = sample_times(&mut rng, b, true, SAMPLING_EPS);
            let yt = noise_batch(&codec, &s, &y0, &t, &mut rng).unwrap();
            for (seq, &ts) in yt.chunks_exact(4 * ell).zip(&t) {
                let masked = seq.iter().filter(|&&y| y == codec.mask_id()).count() as f64;
                vals.push(s.loss_weight(ts) * masked / 4.0);
            }
        }
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // Exact value with the cut-offs: ∫_ε^1 (1/t)·0.999 t·ℓ dt / (1 − ε) = 0.999 ℓ.
        let expect = 0.999 * ell as f64;
        assert!(
            (mean - expect).abs() < 5.0 * (var / n).sqrt(),
            "{mean} vs {expect}"
        );
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let codec = Codec::new(256, 2).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        assert!(noise_batch(&codec, &Schedule::default(), &[0; 7], &[0.5], &mut rng).is_err());
        assert!(noise_batch(&codec, &Schedule::default(), &[0; 8], &[], &mut rng).is_err());
    }
}
