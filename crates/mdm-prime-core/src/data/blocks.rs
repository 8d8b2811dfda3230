//! MDLM block wrapping of a token stream and the deterministic train / validation split
//! (design §8.1).

use crate::error::{Error, Result};

/// The number of blocks of `seq_len` that [`wrap_blocks`] makes from `n_tokens` tokens:
/// `⌊N / (L − 2)⌋`, or 0 when `L < 3`.
pub fn n_blocks(n_tokens: usize, seq_len: usize) -> usize {
    if seq_len < 3 {
        0
    } else {
        n_tokens / (seq_len - 2)
    }
}

/// MDLM wrapping (design §8.1). `doc_tokens` is the stream of
/// [`tokenize_documents`](super::tokenize_documents) (EOS already after each document). It is
/// cut into chunks of `L − 2` tokens, the last partial chunk is dropped, and each chunk becomes
/// `[eos] + chunk + [eos]` (BOS = EOS). Returns the `K = ⌊N / (L − 2)⌋` blocks flat (`K · L`
/// ids). `L < 3` leaves no room for a token and gives no blocks
/// ([`load_dataset`](super::load_dataset) rejects it with an error).
pub fn wrap_blocks(doc_tokens: &[u32], seq_len: usize, eos: u32) -> Vec<u32> {
    if seq_len < 3 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n_blocks(doc_tokens.len(), seq_len) * seq_len);
    for chunk in doc_tokens.chunks_exact(seq_len - 2) {
        out.push(eos);
        out.extend_from_slice(chunk);
        out.push(eos);
    }
    out
}

/// The number of validation blocks out of `n_blocks ≥ 2`: `⌈K · val_fraction⌉`, at least 1 and
/// at most `K − 1` (so both splits are non-empty). The ceiling ignores float dust
/// (10 × 0.3 gives 3, not 4).
pub fn n_val_blocks(n_blocks: usize, val_fraction: f64) -> usize {
    let x = n_blocks as f64 * val_fraction;
    let n_val = (x - x.abs() * 1e-12).ceil().max(0.0) as usize;
    n_val.clamp(1, n_blocks.saturating_sub(1).max(1))
}

pub(super) fn check_seq_len(seq_len: usize) -> Result<()> {
    if seq_len < 3 {
        return Err(Error::config(
            "seq_len",
            format!(
                "{seq_len} is too short: a block is [BOS] + at least one token + [EOS], so \
                 seq_len must be at least 3 (the paper uses 1024)"
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_val_fraction(val_fraction: f64) -> Result<()> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(Error::config(
            "val_fraction",
            format!("{val_fraction} is outside (0, 1); use e.g. 0.05 (the last 5% of blocks)"),
        ));
    }
    Ok(())
}

/// Deterministic split of wrapped blocks (`K · L` ids, flat): the last
/// [`n_val_blocks`]`(K, val_fraction)` blocks are validation, the rest train. Returns
/// `(train, val)`. `n_tokens` (the stream length before wrapping) is only for the message.
///
/// Errors when `L < 3`, when `val_fraction` is not in (0, 1), or when there are fewer than 2
/// blocks ("sequence length L is longer than the data allows ...").
pub fn split_blocks(
    mut blocks: Vec<u32>,
    seq_len: usize,
    val_fraction: f64,
    n_tokens: usize,
) -> Result<(Vec<u32>, Vec<u32>)> {
    check_seq_len(seq_len)?;
    check_val_fraction(val_fraction)?;
    let n_blocks = blocks.len() / seq_len;
    if n_blocks < 2 {
        return Err(Error::config(
            "seq_len",
            format!(
                "sequence length {seq_len} is longer than the data allows: the corpus has \
                 {n_tokens} tokens, which makes {n_blocks} blocks of {seq_len} (at least 2 are \
                 needed: one to train on, one to validate); use a smaller seq_len or a larger \
                 corpus"
            ),
        ));
    }
    blocks.truncate(n_blocks * seq_len);
    let n_val = n_val_blocks(n_blocks, val_fraction);
    let val = blocks.split_off((n_blocks - n_val) * seq_len);
    Ok((blocks, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_blocks_by_hand() {
        // Documents [1,2,3], [4,5], [6,7] with EOS = 9 after each: N = 10.
        let stream = [1, 2, 3, 9, 4, 5, 9, 6, 7, 9];
        // L = 5: chunks of 3, three of them, the tail [9] is dropped.
        let blocks = wrap_blocks(&stream, 5, 9);
        #[rustfmt::skip]
        assert_eq!(blocks, vec![
            9, 1, 2, 3, 9,
            9, 9, 4, 5, 9,
            9, 9, 6, 7, 9,
        ]);
        assert_eq!(n_blocks(stream.len(), 5), 3);
        // L = 7: chunks of 5, exactly two, nothing dropped.
        assert_eq!(
            wrap_blocks(&stream, 7, 9),
            vec![9, 1, 2, 3, 9, 4, 9, 9, 5, 9, 6, 7, 9, 9]
        );
        // L = 3: one token per block; every block is BOS x EOS.
        assert_eq!(wrap_blocks(&[4, 9], 3, 9), vec![9, 4, 9, 9, 9, 9]);
        // Too short for one chunk, or L < 3: no blocks.
        assert!(wrap_blocks(&stream, 13, 9).is_empty());
        assert!(wrap_blocks(&stream, 2, 9).is_empty());
        assert_eq!(n_blocks(10, 2), 0);
    }

    #[test]
    fn split_sizes() {
        assert_eq!(n_val_blocks(10, 0.1), 1);
        assert_eq!(n_val_blocks(10, 0.3), 3); // 10 × 0.3 = 3.0000000000000004 in f64
        assert_eq!(n_val_blocks(10, 0.05), 1); // ⌈0.5⌉
        assert_eq!(n_val_blocks(1000, 0.001), 1); // at least 1
        assert_eq!(n_val_blocks(100, 0.25), 25);
        assert_eq!(n_val_blocks(101, 0.25), 26);
        assert_eq!(n_val_blocks(2, 0.9), 1); // at most K − 1
        assert_eq!(n_val_blocks(3, 0.5), 2);

        // Five blocks of 3: [b, b, b] with b = block index.
        let blocks: Vec<u32> = (0..5).flat_map(|b| [b; 3]).collect();
        let (train, val) = split_blocks(blocks, 3, 0.2, 99).unwrap();
        assert_eq!(train, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        assert_eq!(val, vec![4, 4, 4]);
        let blocks: Vec<u32> = (0..5).flat_map(|b| [b; 3]).collect();
        let (train, val) = split_blocks(blocks, 3, 0.5, 99).unwrap();
        assert_eq!((train.len(), val.len()), (2 * 3, 3 * 3));
    }
}
