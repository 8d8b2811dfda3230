//! Token blocks → a noised batch of tensors (design §3): x₀, y_t, t and the loss weights.

use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime_core::noise::noise_batch;
use mdm_prime_core::{Codec, Schedule};
use rand::Rng;

use crate::Result;

/// One noised batch on a device.
#[derive(Debug, Clone)]
pub struct NoisedBatch {
    /// Clean tokens `[B, L]`.
    pub x0: Tensor<2, Int>,
    /// Noised sub-tokens `[B, L, ℓ]`.
    pub yt: Tensor<3, Int>,
    /// One time per sequence.
    pub t: Vec<f64>,
    /// `w(t)` per sequence, `[B]`.
    pub weight: Tensor<1>,
    /// Flat indices `b·L + i` of the tokens with at least one masked sub-token.
    pub masked_positions: Vec<usize>,
    /// `x0` on the host, `B·L` tokens.
    pub x0_host: Vec<u32>,
    /// `yt` on the host, `B·L·ℓ` digits.
    pub yt_host: Vec<u32>,
}

/// Encodes `blocks` (each L tokens), masks each sub-token with probability `1 − α(t[s])`, and
/// uploads the result.
pub fn noised_batch(
    codec: &Codec,
    schedule: &Schedule,
    blocks: &[&[u32]],
    t: Vec<f64>,
    rng: &mut impl Rng,
    device: &Device,
) -> Result<NoisedBatch> {
    let (b, l) = (blocks.len(), blocks.first().map_or(0, |x| x.len()));
    let x0: Vec<u32> = blocks.concat();
    let y0 = codec.encode(&x0)?;
    let yt = noise_batch(codec, schedule, &y0, &t, rng)?;
    let ell = codec.ell();
    let masked_positions = (0..b * l)
        .filter(|&k| yt[k * ell..(k + 1) * ell].contains(&codec.mask_id()))
        .collect();
    let to_i64 = |v: Vec<u32>| v.into_iter().map(i64::from).collect::<Vec<_>>();
    Ok(NoisedBatch {
        x0: Tensor::from_data(TensorData::new(to_i64(x0.clone()), [b, l]), device),
        yt: Tensor::from_data(
            TensorData::new(to_i64(yt.clone()), [b, l, codec.ell()]),
            device,
        ),
        x0_host: x0,
        yt_host: yt,
        weight: loss_weights(schedule, &t, device),
        t,
        masked_positions,
    })
}

/// The loss weights `w(t) = −α'_t/(1 − α_t)` of a batch of times, as a device tensor `[B]`.
pub fn loss_weights(schedule: &Schedule, t: &[f64], device: &Device) -> Tensor<1> {
    let w: Vec<f32> = t.iter().map(|&t| schedule.loss_weight(t) as f32).collect();
    Tensor::from_data(TensorData::new(w, [t.len()]), device)
}
