//! Left-to-right sampling for the autoregressive baseline ([`crate::model::Ar`]).
//!
//! A template's fixed tokens must form a prefix (the prompt); every later token `x_i` is drawn
//! from `p_θ(x_i | x_{<i})`, tempered and nucleus-truncated exactly as the diffusion sampler's
//! tokens are ([`super::tempered`]; temperature → 0 is greedy decoding), by an exponential race
//! from the sequence's own generator. Position i costs one network evaluation on the prefix of
//! i + 1 inputs (causal attention: the output at i does not depend on what follows, so the
//! prefix is all it needs; there is no key/value cache yet). NFE per sequence = the number of
//! tokens drawn; there are no idle steps.

use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime_core::rng::step_seed;
use mdm_prime_core::sampling::exponential_race;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Sample, SampleSettings, SamplerTiming, tempered};
use crate::Result;
use crate::model::{Ar, Denoiser, Templates};

/// Where the prompt of a template ends: the number of leading fixed tokens. A token fixed after
/// a free one is an error (the model cannot look ahead).
fn prefix_len(fixed: &[Option<u32>]) -> Result<usize> {
    let prefix = fixed.iter().take_while(|f| f.is_some()).count();
    match fixed[prefix..].iter().position(Option::is_some) {
        None => Ok(prefix),
        Some(k) => Err(mdm_prime_core::Error::Value(format!(
            "the autoregressive sampler conditions on a prefix only, but token {} is fixed after \
             the free token {prefix}; use --prompt (infilling and --fix need a diffusion run)",
            prefix + k
        ))
        .into()),
    }
}

/// Generates `templates.0` sequences of `settings.seq_len` tokens left to right,
/// `settings.batch_size` at a time. `progress(i, L)` is called after each position.
pub(crate) fn run(
    model: &Ar,
    settings: &SampleSettings,
    (n, template): Templates<'_, '_>,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<Sample>, SamplerTiming)> {
    let l = settings.seq_len;
    let started = std::time::Instant::now();
    let mut timing = SamplerTiming::default();
    let mut samples = Vec::with_capacity(n);
    let order: Vec<usize> = (0..n).collect();
    for chunk in order.chunks(settings.batch_size.max(1)) {
        let mut seqs = Vec::with_capacity(chunk.len());
        for &b in chunk {
            let fixed = &template(b).fixed;
            assert_eq!(fixed.len(), l, "template length {} ≠ L = {l}", fixed.len());
            let prefix = prefix_len(fixed)?;
            let tokens: Vec<u32> = fixed.iter().map(|f| f.unwrap_or(0)).collect();
            let rng = StdRng::seed_from_u64(step_seed(settings.seed, b as u64, 7));
            seqs.push((tokens, prefix, rng, 0usize));
        }
        let start = seqs.iter().map(|s| s.1).min().unwrap_or(l);
        for i in start..l {
            let t0 = std::time::Instant::now();
            // Inputs [BOS, x₀, …, x_{i−1}] for every sequence of the chunk: i + 1 positions.
            let inputs: Vec<i64> = seqs
                .iter()
                .flat_map(|s| {
                    std::iter::once(model.bos() as i64).chain(s.0[..i].iter().map(|&x| x as i64))
                })
                .collect();
            let c = seqs.len();
            let inputs =
                Tensor::<3, Int>::from_data(TensorData::new(inputs, [c, i + 1, 1]), device);
            let h = model.features(inputs, &vec![0.0; c]).narrow(1, i, 1);
            let t_head = std::time::Instant::now();
            let logits: Vec<f32> = model
                .head_logits(h)
                .try_into_vec_as()
                .map_err(|e| mdm_prime_core::Error::Value(format!("reading logits: {e:?}")))?;
            timing.head_s += t_head.elapsed().as_secs_f64();
            timing.network_s += t0.elapsed().as_secs_f64();
            let v = logits.len() / c;
            for (k, seq) in seqs.iter_mut().enumerate() {
                if i < seq.1 {
                    continue; // part of the prompt
                }
                let probs = tempered(
                    &logits[k * v..(k + 1) * v],
                    settings.temperature,
                    settings.top_p,
                );
                seq.0[i] = exponential_race(&probs, settings.precision, &mut seq.2) as u32;
                seq.3 += 1;
                timing.head_rows += 1;
            }
            progress(i + 1, l);
        }
        samples.extend(seqs.into_iter().map(|(tokens, _, _, nfe)| Sample {
            tokens,
            invalid_codes: 0,
            nfe,
            idle_steps: 0,
            steps: l,
            idle_at: vec![false; l],
        }));
    }
    timing.other_s = started.elapsed().as_secs_f64() - timing.network_s;
    Ok((samples, timing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_prefix_may_be_fixed() {
        assert_eq!(prefix_len(&[Some(1), Some(2), None, None]).unwrap(), 2);
        assert_eq!(prefix_len(&[None, None]).unwrap(), 0);
        assert_eq!(prefix_len(&[Some(1), Some(2)]).unwrap(), 2);
        let err = prefix_len(&[Some(1), None, Some(3), None])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token 2 is fixed after the free token 1") && err.contains("--prompt"),
            "{err}"
        );
    }
}
