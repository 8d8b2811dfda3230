//! The sub-tokenizer `f`: token ids ⇄ ℓ base-b digits (design §2), the consistency filter
//! (§5.1, "carry-over") and digit marginals (§4.5).
//!
//! A token `x ∈ {0..V−1}` is written as ℓ digits in base `b`, most significant first:
//! `y[j] = floor(x / b^(ℓ−1−j)) mod b`, and `x = Σ_j y[j]·b^(ℓ−1−j)`. The base is the
//! smallest integer with `b^ℓ ≥ V`, found with integer arithmetic (the reference code's float
//! `ceil(V^(1/ℓ))` can be off by one at perfect powers). A masked digit has id `b` ([`Codec::mask_id`]).
//! Sequences are token-major: digit `j` of token `i` sits at `i·ℓ + j`.
//!
//! ℓ = 1 is plain MDLM: `b = V`, the digit is the token, and the mask id is `V`.

use crate::error::{Error, Result};

/// The base-b codec for a vocabulary of `V` tokens and `ℓ` digits per token.
///
/// Holds the V × ℓ digit table (design §14) that the tensor code gathers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    vocab_size: u32,
    ell: usize,
    base: u32,
    /// `digits[x·ℓ + j]` = digit j of token x.
    digits: Vec<u32>,
}

/// The smallest integer `b ≥ 2` with `b^ℓ ≥ V`, or an error if `b^ℓ` does not fit in a `u64`.
///
/// Binary search on `b` with checked integer powers: no float roots (design §2.1).
pub fn base_for(vocab_size: u64, ell: usize) -> Result<u32> {
    if vocab_size < 2 {
        return Err(Error::Codec(format!(
            "vocabulary size {vocab_size} is too small: need at least 2 tokens"
        )));
    }
    if ell == 0 {
        return Err(Error::Codec(
            "ell = 0 sub-tokens per token is impossible: use ell ≥ 1 (1 = plain MDLM)".into(),
        ));
    }
    if vocab_size > u32::MAX as u64 {
        return Err(Error::Codec(format!(
            "vocabulary size {vocab_size} exceeds the supported maximum {}",
            u32::MAX
        )));
    }
    let ell_u32 =
        u32::try_from(ell).map_err(|_| Error::Codec(format!("ell = {ell} is far too large")))?;
    // `reaches(b)`: b^ℓ ≥ V (saturating, so an overflowing power also "reaches").
    let reaches = |b: u64| b.saturating_pow(ell_u32) >= vocab_size;
    let (mut lo, mut hi) = (2u64, vocab_size.max(2));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if reaches(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if lo.checked_pow(ell_u32).is_none() {
        return Err(Error::Codec(format!(
            "base {lo} to the power ell = {ell} overflows 64 bits; use a smaller ell \
             (ell ≤ log2(V) keeps every digit useful; for V = {vocab_size} that is ell ≤ {})",
            63 - vocab_size.leading_zeros()
        )));
    }
    Ok(lo as u32)
}

impl Codec {
    /// Builds the codec and its digit table. Errors on V < 2, ℓ = 0 or an overflowing `b^ℓ`.
    pub fn new(vocab_size: u32, ell: usize) -> Result<Self> {
        let base = base_for(vocab_size as u64, ell)?;
        crate::limits::check_fits(
            &format!("the digit table of V = {vocab_size} tokens × ell = {ell}"),
            u128::from(vocab_size) * ell as u128,
            4,
        )?;
        let mut digits = vec![0u32; vocab_size as usize * ell];
        for (x, row) in digits.chunks_exact_mut(ell).enumerate() {
            let mut rest = x as u64;
            for d in row.iter_mut().rev() {
                *d = (rest % base as u64) as u32;
                rest /= base as u64;
            }
        }
        Ok(Codec {
            vocab_size,
            ell,
            base,
            digits,
        })
    }

    /// Number of token classes V.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Digits per token ℓ.
    pub fn ell(&self) -> usize {
        self.ell
    }

    /// The base b: the smallest integer with b^ℓ ≥ V.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// The id of a masked digit: `b` (mdm-prime `text/diffusion.py`, `mask_index_enc`).
    /// With ℓ = 1 this is `V`, MDLM's mask token.
    pub fn mask_id(&self) -> u32 {
        self.base
    }

    /// Number of codes `b^ℓ` (valid ones are `< V`).
    pub fn num_codes(&self) -> u64 {
        (self.base as u64).pow(self.ell as u32)
    }

    /// The V × ℓ digit table, row-major: `table[x·ℓ + j]` is digit j of token x.
    pub fn digit_table(&self) -> &[u32] {
        &self.digits
    }

    /// The ℓ digits of token `x`, most significant first (design §2.2).
    pub fn digits(&self, x: u32) -> Result<&[u32]> {
        self.check_token(x)?;
        let start = x as usize * self.ell;
        Ok(&self.digits[start..start + self.ell])
    }

    /// Encodes token ids into a token-major digit sequence of length `ids.len()·ℓ`.
    pub fn encode(&self, ids: &[u32]) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(ids.len() * self.ell);
        for &x in ids {
            out.extend_from_slice(self.digits(x)?);
        }
        Ok(out)
    }

    /// The integer code `Σ_j y[j]·b^(ℓ−1−j)` of one token's ℓ unmasked digits. May be ≥ V
    /// (an invalid code, possible only without carry-over, design §2.4).
    pub fn code(&self, digits: &[u32]) -> Result<u64> {
        self.check_len(digits)?;
        let mut code = 0u64;
        for (j, &d) in digits.iter().enumerate() {
            if d >= self.base {
                let what = if d == self.mask_id() {
                    "masked"
                } else {
                    "out of range"
                };
                return Err(Error::Value(format!(
                    "digit {j} is {d} ({what}); a decodable digit is < base {}",
                    self.base
                )));
            }
            code = code * self.base as u64 + d as u64;
        }
        Ok(code)
    }

    /// Decodes a token-major digit sequence back into token ids. Errors on a masked or
    /// out-of-range digit, on an invalid code ≥ V, or on a length that is not a multiple of ℓ.
    pub fn decode(&self, digits: &[u32]) -> Result<Vec<u32>> {
        if !digits.len().is_multiple_of(self.ell) {
            return Err(Error::Value(format!(
                "{} digits is not a whole number of tokens of ell = {} digits",
                digits.len(),
                self.ell
            )));
        }
        digits
            .chunks_exact(self.ell)
            .map(|tok| {
                let code = self.code(tok)?;
                if code >= self.vocab_size as u64 {
                    return Err(Error::Value(format!(
                        "digits {tok:?} form code {code}, which is not a token (V = {})",
                        self.vocab_size
                    )));
                }
                Ok(code as u32)
            })
            .collect()
    }

    /// Whether token `x` agrees with every revealed digit of the partially masked token `yt`
    /// (design §5.1): for all j, `yt[j] = mask` or `digit(x, j) = yt[j]`. `x` must be < V.
    #[inline]
    pub fn is_consistent(&self, x: u32, yt: &[u32]) -> bool {
        let row = &self.digits[x as usize * self.ell..(x as usize + 1) * self.ell];
        row.iter().zip(yt).all(|(&d, &y)| y == self.base || d == y)
    }

    /// The consistent set `V(yt)` of one partially masked token as a boolean mask over V.
    /// A fully masked token allows all V classes; a fully revealed valid token exactly one.
    pub fn allowed(&self, yt: &[u32]) -> Result<Vec<bool>> {
        self.check_masked_token(yt)?;
        Ok((0..self.vocab_size)
            .map(|x| self.is_consistent(x, yt))
            .collect())
    }

    /// [`Codec::allowed`] for a whole batch of partially masked tokens, written into `out`
    /// (`n·V` booleans for `yt` of `n·ℓ` digits), in parallel. Fully masked tokens allow
    /// everything and fully revealed ones a single class without scanning V; only partially
    /// revealed tokens compare digits. The tensor filter is built from this.
    pub fn allowed_batch(&self, yt: &[u32], out: &mut [bool]) -> Result<()> {
        use rayon::prelude::*;
        let (ell, v) = (self.ell, self.vocab_size as usize);
        if !yt.len().is_multiple_of(ell) || out.len() != yt.len() / ell * v {
            return Err(Error::Value(format!(
                "allowed_batch: {} digits and {} outputs do not match ell = {ell}, V = {v}",
                yt.len(),
                out.len()
            )));
        }
        if let Some(bad) = yt.iter().find(|&&d| d > self.base) {
            return Err(Error::Value(format!(
                "digit {bad} exceeds the mask id {}",
                self.base
            )));
        }
        out.par_chunks_mut(v)
            .zip(yt.par_chunks(ell))
            .for_each(|(row, tok)| {
                let masked = tok.iter().filter(|&&d| d == self.base).count();
                if masked == ell {
                    row.fill(true);
                } else if masked == 0 {
                    row.fill(false);
                    // A fully revealed token allows only itself (none if its code is invalid).
                    let code = tok
                        .iter()
                        .fold(0u64, |c, &d| c * self.base as u64 + d as u64);
                    if code < v as u64 {
                        row[code as usize] = true;
                    }
                } else {
                    for (x, a) in row.iter_mut().enumerate() {
                        *a = self.is_consistent(x as u32, tok);
                    }
                }
            });
        Ok(())
    }

    /// Sets the logits of tokens inconsistent with `yt` to −∞ (the carry-over filter, §5.1).
    pub fn filter_logits(&self, yt: &[u32], logits: &mut [f32]) -> Result<()> {
        self.check_masked_token(yt)?;
        if logits.len() != self.vocab_size as usize {
            return Err(Error::Value(format!(
                "{} logits given, the vocabulary has V = {}",
                logits.len(),
                self.vocab_size
            )));
        }
        for (x, l) in logits.iter_mut().enumerate() {
            if !self.is_consistent(x as u32, yt) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Digit marginals `p̄_j(v) = Σ_{x : digit(x, j) = v} p(x)` from token probabilities over V
    /// (design §4.5), by scatter-adding each probability into its digit's bin. O(V·ℓ).
    ///
    /// # Shapes
    /// `probs: [V]` → `[ℓ, b]`, row-major.
    pub fn digit_marginals(&self, probs: &[f64]) -> Result<Vec<f64>> {
        if probs.len() != self.vocab_size as usize {
            return Err(Error::Value(format!(
                "{} probabilities given, the vocabulary has V = {}",
                probs.len(),
                self.vocab_size
            )));
        }
        let b = self.base as usize;
        let mut out = vec![0.0; self.ell * b];
        for (row, &p) in self.digits.chunks_exact(self.ell).zip(probs) {
            for (j, &d) in row.iter().enumerate() {
                out[j * b + d as usize] += p;
            }
        }
        Ok(out)
    }

    /// Number of reachable per-token states (design §2.3): over all 2^ℓ mask patterns, the number
    /// of distinct revealed-digit tuples that some valid token produces. Enumerates 2^ℓ · V.
    pub fn count_states(&self) -> u64 {
        let mut total = 0u64;
        let mut seen = std::collections::HashSet::new();
        for pattern in 0u32..(1u32 << self.ell) {
            seen.clear();
            for row in self.digits.chunks_exact(self.ell) {
                // Pack the revealed digits (bit j of `pattern` set = digit j revealed).
                let mut key = 0u64;
                for (j, &d) in row.iter().enumerate() {
                    let v = if pattern >> j & 1 == 1 { d } else { self.base };
                    key = key * (self.base as u64 + 1) + v as u64;
                }
                seen.insert(key);
            }
            total += seen.len() as u64;
        }
        total
    }

    /// Checks that `x` is a token id (< V).
    pub fn check_token(&self, x: u32) -> Result<()> {
        if x >= self.vocab_size {
            return Err(Error::Value(format!(
                "token id {x} is out of range: the vocabulary has V = {} ids (0..{})",
                self.vocab_size,
                self.vocab_size - 1
            )));
        }
        Ok(())
    }

    fn check_len(&self, digits: &[u32]) -> Result<()> {
        if digits.len() != self.ell {
            return Err(Error::Value(format!(
                "{} digits given for one token, ell = {}",
                digits.len(),
                self.ell
            )));
        }
        Ok(())
    }

    /// Checks one partially masked token: ℓ digits, each < b or the mask id b.
    pub fn check_masked_token(&self, yt: &[u32]) -> Result<()> {
        self.check_len(yt)?;
        if let Some((j, &d)) = yt.iter().enumerate().find(|&(_, &d)| d > self.base) {
            return Err(Error::Value(format!(
                "digit {j} is {d}: a sub-token is a digit < {b} or the mask id {b}",
                b = self.base
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gpt2(ell: usize) -> Codec {
        Codec::new(50257, ell).unwrap()
    }

    #[test]
    fn base_table_of_spec_2_1() {
        // (V, ℓ, b, b^ℓ − V) from the design's table.
        let rows = [
            (50257, 2, 225, 368),
            (50257, 3, 37, 396),
            (50257, 4, 15, 368),
            (50257, 6, 7, 67392),
            (50257, 8, 4, 15279),
            (256, 2, 16, 0),
            (256, 3, 7, 87),
            (256, 4, 4, 0),
            (256, 8, 2, 0),
            (512, 2, 23, 17),
        ];
        for (v, ell, b, invalid) in rows {
            let c = Codec::new(v, ell).unwrap();
            assert_eq!(c.base(), b, "V={v} ell={ell}");
            assert_eq!(c.num_codes() - v as u64, invalid, "V={v} ell={ell}");
        }
        // Perfect powers, where a float root can be off by one.
        assert_eq!(base_for(256, 2).unwrap(), 16);
        assert_eq!(base_for(1 << 30, 3).unwrap(), 1024);
        assert_eq!(base_for(125, 3).unwrap(), 5);
        assert_eq!(base_for(126, 3).unwrap(), 6);
    }

    #[test]
    fn ell_one_is_plain_mdlm() {
        let c = gpt2(1);
        assert_eq!(c.base(), 50257);
        assert_eq!(c.mask_id(), 50257);
        assert_eq!(c.encode(&[50256, 0, 198]).unwrap(), vec![50256, 0, 198]);
    }

    #[test]
    fn encoding_vectors_of_spec_2_2() {
        assert_eq!(gpt2(2).digits(50256).unwrap(), &[223, 81]); // 223·225 + 81
        assert_eq!(gpt2(3).digits(50256).unwrap(), &[36, 26, 10]); // 36·37² + 26·37 + 10
        assert_eq!(gpt2(4).digits(50256).unwrap(), &[14, 13, 5, 6]);
        assert_eq!(gpt2(6).digits(50256).unwrap(), &[2, 6, 6, 3, 4, 3]);
        assert_eq!(gpt2(8).digits(50256).unwrap(), &[3, 0, 1, 0, 1, 1, 0, 0]);
        assert_eq!(gpt2(2).digits(198).unwrap(), &[0, 198]);
        assert_eq!(gpt2(3).digits(198).unwrap(), &[0, 5, 13]);
        assert_eq!(gpt2(4).digits(198).unwrap(), &[0, 0, 13, 3]);
        for ell in [1, 2, 3, 4, 6, 8] {
            assert!(gpt2(ell).digits(0).unwrap().iter().all(|&d| d == 0));
        }
        let px = |ell| Codec::new(256, ell).unwrap();
        assert_eq!(px(2).digits(255).unwrap(), &[15, 15]);
        assert_eq!(px(3).digits(255).unwrap(), &[5, 1, 3]); // 5·49 + 7 + 3
        assert_eq!(px(4).digits(255).unwrap(), &[3, 3, 3, 3]);
        assert_eq!(px(8).digits(255).unwrap(), &[1; 8]);
        assert_eq!(px(2).digits(128).unwrap(), &[8, 0]);
    }

    #[test]
    fn token_major_layout() {
        let c = gpt2(2);
        assert_eq!(c.encode(&[50256, 198]).unwrap(), vec![223, 81, 0, 198]);
        assert_eq!(c.decode(&[223, 81, 0, 198]).unwrap(), vec![50256, 198]);
    }

    #[test]
    fn state_counts_of_spec_2_3() {
        assert_eq!(Codec::new(4, 2).unwrap().count_states(), 9);
        assert_eq!(Codec::new(7, 3).unwrap().count_states(), 26);
        assert_eq!(Codec::new(256, 2).unwrap().count_states(), 289);
        assert_eq!(gpt2(2).count_states(), 50707);
    }

    #[test]
    fn filter_checks_of_spec_10_4() {
        let c = gpt2(2);
        let m = c.mask_id();
        let count = |yt: &[u32]| c.allowed(yt).unwrap().iter().filter(|&&a| a).count();
        assert_eq!(count(&[m, m]), 50257, "fully masked allows all V");
        assert_eq!(
            count(&[223, 81]),
            1,
            "fully revealed allows exactly one class"
        );
        assert_eq!(count(&[223, m]), 82, "codes 50175..50256");
        let allowed = c.allowed(&[223, m]).unwrap();
        assert!(allowed[50175] && allowed[50256] && !allowed[50174]);
        assert_eq!(count(&[0, m]), 225);
        // The −∞ form of the same filter.
        let mut logits = vec![0.5f32; 50257];
        c.filter_logits(&[223, m], &mut logits).unwrap();
        assert_eq!(logits.iter().filter(|l| l.is_finite()).count(), 82);
        assert_eq!(logits[50174], f32::NEG_INFINITY);
    }

    #[test]
    fn digit_marginals_scatter_add() {
        // V = 7, ℓ = 3, b = 2: tokens 0..6 = 000 001 010 011 100 101 110.
        let c = Codec::new(7, 3).unwrap();
        let p = [0.3, 0.05, 0.05, 0.2, 0.1, 0.1, 0.2];
        let m = c.digit_marginals(&p).unwrap();
        // digit 0 = 1 for tokens 4, 5, 6: 0.4; digit 1 = 1 for 2, 3, 6: 0.45; digit 2 = 1 for 1, 3, 5: 0.35.
        let expect = [0.6, 0.4, 0.55, 0.45, 0.65, 0.35];
        for (a, e) in m.iter().zip(expect) {
            assert!((a - e).abs() < 1e-12, "{m:?}");
        }
    }

    #[test]
    fn invalid_inputs_are_errors_not_panics() {
        assert!(
            Codec::new(1, 2)
                .unwrap_err()
                .to_string()
                .contains("at least 2")
        );
        assert!(Codec::new(0, 2).is_err());
        assert!(
            Codec::new(256, 0)
                .unwrap_err()
                .to_string()
                .contains("ell = 0")
        );
        let overflow = Codec::new(50257, 64).unwrap_err().to_string();
        assert!(overflow.contains("overflows"), "{overflow}");
        let c = gpt2(2);
        assert!(
            c.encode(&[50257])
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert!(
            c.decode(&[225, 0])
                .unwrap_err()
                .to_string()
                .contains("masked")
        );
        assert!(
            c.decode(&[300, 0])
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert!(
            c.decode(&[224, 224])
                .unwrap_err()
                .to_string()
                .contains("not a token")
        );
        assert!(c.decode(&[1, 2, 3]).is_err());
        assert!(c.allowed(&[226, 0]).is_err());
        assert!(c.allowed(&[0]).is_err());
        assert!(c.digit_marginals(&[1.0]).is_err());
        assert!(c.allowed_batch(&[0, 0, 0], &mut [false; 50257]).is_err());
        assert!(c.allowed_batch(&[226, 0], &mut vec![false; 50257]).is_err());
    }

    fn codec_strategy() -> impl Strategy<Value = Codec> {
        (2u32..3000, 1usize..7).prop_map(|(v, ell)| Codec::new(v, ell).unwrap())
    }

    proptest! {
        #[test]
        fn base_is_the_smallest_that_fits(v in 2u64..5_000_000, ell in 1usize..12) {
            let b = base_for(v, ell).unwrap() as u64;
            prop_assert!(b.pow(ell as u32) >= v);
            prop_assert!(b == 2 || (b - 1).pow(ell as u32) < v);
        }

        #[test]
        fn encode_decode_round_trip(
            c in codec_strategy(), raw in prop::collection::vec(any::<u32>(), 0..32)
        ) {
            let ids: Vec<u32> = raw.iter().map(|&x| x % c.vocab_size()).collect();
            let digits = c.encode(&ids).unwrap();
            prop_assert_eq!(digits.len(), ids.len() * c.ell());
            prop_assert!(digits.iter().all(|&d| d < c.base()));
            prop_assert_eq!(c.decode(&digits).unwrap(), ids);
        }

        #[test]
        fn filter_is_consistent_with_revealed_digits(
            c in codec_strategy(), x in any::<u32>(), pattern in any::<u32>()
        ) {
            let x = x % c.vocab_size();
            let mut yt = c.digits(x).unwrap().to_vec();
            for (j, y) in yt.iter_mut().enumerate() {
                if pattern >> j & 1 == 1 { *y = c.mask_id(); }
            }
            let allowed = c.allowed(&yt).unwrap();
            let mut batch = vec![false; c.vocab_size() as usize];
            c.allowed_batch(&yt, &mut batch).unwrap();
            prop_assert_eq!(&batch, &allowed);
            // The true token is always allowed, and every allowed token re-masked gives yt back.
            prop_assert!(allowed[x as usize]);
            for (z, &ok) in allowed.iter().enumerate() {
                let masked: Vec<u32> = c.digits(z as u32).unwrap().iter().zip(&yt)
                    .map(|(&d, &y)| if y == c.mask_id() { y } else { d }).collect();
                prop_assert_eq!(ok, masked == yt);
            }
            // Fully masked allows everything; fully revealed exactly one.
            let n_masked = yt.iter().filter(|&&y| y == c.mask_id()).count();
            let n_allowed = allowed.iter().filter(|&&a| a).count();
            if n_masked == c.ell() { prop_assert_eq!(n_allowed, c.vocab_size() as usize); }
            if n_masked == 0 { prop_assert_eq!(n_allowed, 1); }
        }
    }
}
