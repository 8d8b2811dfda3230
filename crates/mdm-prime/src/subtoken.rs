//! The sub-tokenizer on tensors: the consistency filter ("carry-over", design §5.1), the filtered
//! log-probabilities that the loss and the sampler share, and digit log-marginals (§4.5).
//!
//! Everything is built from the core crate's [`Codec`] digit table, so the tensor and the slice
//! versions cannot drift apart (and are tested against each other).

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use std::sync::Arc;

use mdm_prime_core::Codec;

use crate::ops::{Allowed, DigitFilter};

/// The codec's V × ℓ digit table as a device tensor, plus the scalars the filter needs.
#[derive(Debug, Clone)]
pub struct PrimeTables {
    codec: Codec,
    /// Digit j of token x, as `[ℓ, 1, 1, V]` rows ready to broadcast against `[B, L, V]`.
    digit_rows: Vec<Tensor<1, Int>>,
    /// `columns[j][x]`: digit j of token x on the host (the fused kernels' filter).
    columns: Arc<Vec<Vec<u32>>>,
}

impl PrimeTables {
    /// Uploads the digit table of `codec` to `device`.
    pub fn new(codec: &Codec, device: &Device) -> Self {
        let (v, ell) = (codec.vocab_size() as usize, codec.ell());
        let table = codec.digit_table();
        let digit_rows = (0..ell)
            .map(|j| {
                let col: Vec<i64> = (0..v).map(|x| table[x * ell + j] as i64).collect();
                Tensor::<1, Int>::from_data(TensorData::new(col, [v]), device)
            })
            .collect();
        let columns = (0..ell)
            .map(|j| (0..v).map(|x| table[x * ell + j]).collect())
            .collect();
        PrimeTables {
            codec: codec.clone(),
            digit_rows,
            columns: Arc::new(columns),
        }
    }

    /// The carry-over filter of `rows` (`N·ℓ` sub-tokens, token-major) for the fused kernels,
    /// evaluated on the fly from the digit table ([`Allowed::Digits`]).
    pub fn digit_filter(&self, rows: Vec<u32>) -> Allowed {
        Allowed::Digits(Arc::new(DigitFilter {
            columns: self.columns.clone(),
            rows,
            mask: self.codec.mask_id(),
        }))
    }

    /// [`Self::digit_filter`] of `rows` with `carry_over`, else every class ([`Allowed::All`]).
    pub fn filter(&self, rows: Vec<u32>, carry_over: bool) -> Allowed {
        match carry_over {
            true => self.digit_filter(rows),
            false => Allowed::All,
        }
    }

    /// The digit table on the host, `columns[j][x]` = digit j of token x (the fused kernels').
    pub fn digit_columns(&self) -> Arc<Vec<Vec<u32>>> {
        self.columns.clone()
    }

    /// The scalar codec these tables were built from.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Digit `j` of every token, broadcast to `[B, L, V]`.
    fn digit_plane(&self, j: usize, dims: [usize; 3]) -> Tensor<3, Int> {
        self.digit_rows[j]
            .clone()
            .reshape([1, 1, dims[2]])
            .expand(dims)
    }

    /// The clean digits `y₀ = f(x₀)` of a batch of tokens, gathered from the digit table.
    ///
    /// # Shapes
    /// `x0: [B, L]` → `[B, L, ℓ]`.
    pub fn clean_digits(&self, x0: Tensor<2, Int>) -> Tensor<3, Int> {
        let [b, l] = x0.dims();
        let flat = x0.reshape([b * l]);
        let cols = self
            .digit_rows
            .iter()
            .map(|row| row.clone().select(0, flat.clone()).reshape([b, l, 1]))
            .collect();
        Tensor::cat(cols, 2)
    }

    /// `allowed[b, i, x]`: token x agrees with every revealed digit of `yt[b, i, :]` (§5.1).
    ///
    /// Built on the host by [`Codec::allowed_batch`] (the digits are few, the mask is B·L·V) and
    /// uploaded: measured faster than ℓ rounds of broadcast compares on tensors.
    ///
    /// # Shapes
    /// `yt: [B, L, ℓ]` → `[B, L, V]`.
    pub fn consistent(&self, yt: Tensor<3, Int>) -> Tensor<3, Bool> {
        let [b, l, _] = yt.dims();
        let v = self.codec.vocab_size() as usize;
        let device = yt.device();
        let allowed = self.allowed_host(yt);
        Tensor::from_data(TensorData::new(allowed, [b, l, v]), &device)
    }

    /// [`Self::consistent`] on the host: `B·L·V` flags, row-major.
    fn allowed_host(&self, yt: Tensor<3, Int>) -> Vec<bool> {
        let [b, l, ell] = yt.dims();
        assert_eq!(
            ell,
            self.codec.ell(),
            "yt has {ell} digits per token, codec ell = {}",
            self.codec.ell()
        );
        let v = self.codec.vocab_size() as usize;
        let digits = host_digits(yt);
        let mut allowed = vec![false; b * l * v];
        self.codec
            .allowed_batch(&digits, &mut allowed)
            .expect("digits come from this codec");
        allowed
    }

    /// The one place logits become log-probabilities: `log p_θ(x | y_t)` over V (§5.1).
    ///
    /// With `carry_over`, tokens inconsistent with the revealed digits get −∞ before the
    /// log-softmax, so a fully revealed token has log-probability exactly 0 on its own class.
    /// Without it, a plain log-softmax over all V.
    ///
    /// # Shapes
    /// `logits: [B, L, V]`, `yt: [B, L, ℓ]` → `[B, L, V]`.
    pub fn log_probs(&self, logits: Tensor<3>, yt: Tensor<3, Int>, carry_over: bool) -> Tensor<3> {
        let _span = crate::profile::span("filter+log_softmax");
        if !logits.is_autodiff() {
            // Inference (sampling, evaluation): one fused pass, `ops::filtered_log_softmax`.
            let [b, l, v] = logits.dims();
            let allowed = self.filter(host_digits(yt.clone()), carry_over);
            let flat = logits.clone().reshape([b * l, v]);
            if let Some(lp) = crate::ops::filtered_log_softmax(&flat, &allowed) {
                return lp.reshape([b, l, v]);
            }
        }
        let logits = if carry_over {
            logits.mask_fill(self.consistent(yt).bool_not(), f32::NEG_INFINITY)
        } else {
            logits
        };
        log_softmax(logits, 2)
    }

    /// `log p̄_j(y0[b,i,j] | y_t)`: the log-marginal of each digit at its clean value (§4.5),
    /// `log Σ_{x : digit(x, j) = y0_j} p(x)`, as a log-sum-exp over the tokens with that digit.
    ///
    /// # Shapes
    /// `log_probs: [B, L, V]`, `y0: [B, L, ℓ]` (clean digits) → `[B, L, ℓ]`.
    pub fn digit_log_marginals_at(&self, log_probs: Tensor<3>, y0: Tensor<3, Int>) -> Tensor<3> {
        let [b, l, ell] = y0.dims();
        let dims = [b, l, self.codec.vocab_size() as usize];
        let cols: Vec<Tensor<3>> = (0..ell)
            .map(|j| {
                let other = self
                    .digit_plane(j, dims)
                    .not_equal(y0.clone().narrow(2, j, 1).expand(dims));
                logsumexp_last(log_probs.clone().mask_fill(other, f32::NEG_INFINITY))
            })
            .collect();
        Tensor::cat(cols, 2)
    }
}

/// The sub-tokens of `yt` on the host, token-major.
fn host_digits(yt: Tensor<3, Int>) -> Vec<u32> {
    yt.try_into_vec_as::<i64>()
        .expect("int readback")
        .into_iter()
        .map(|d| d as u32)
        .collect()
}

/// `log Σ_k exp(x[.., k])` over the last dim, kept as size 1, stable for −∞ entries
/// (at least one entry of each row must be finite).
pub fn logsumexp_last(x: Tensor<3>) -> Tensor<3> {
    let max = x.clone().max_dim(2).detach();
    (x - max.clone()).exp().sum_dim(2).log() + max
}
