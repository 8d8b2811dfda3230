//! Seeds for independent random streams, derived from the run seed: the trainer, the evaluator
//! and the sampler each draw from generators seeded by `(seed, index, stream)`, so a resumed run,
//! a different batch size or a different thread count gives the same draws.

/// A seed for item `index` (a training step, a sequence) of stream `stream`: SplitMix64's
/// finaliser of the mixed triple.
pub fn step_seed(seed: u64, index: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ stream.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_repeat() {
        assert_eq!(step_seed(1, 2, 3), step_seed(1, 2, 3));
        let seeds: std::collections::HashSet<u64> = (0..4)
            .flat_map(|i| (0..4).map(move |s| step_seed(7, i, s)))
            .collect();
        assert_eq!(seeds.len(), 16);
    }
}
