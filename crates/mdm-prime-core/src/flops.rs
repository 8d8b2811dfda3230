//! Analytic forward FLOPs of the denoisers (matmuls and convolutions only, 2 per multiply-add),
//! for the benchmarks' GFLOP/s and model FLOP utilisation.

use crate::config::{DitConfig, ModelConfig, UnetConfig};
use crate::data::image::ImageShape;

/// Forward FLOPs of one sequence, split as the sampler and the loss use the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForwardFlops {
    /// Everything before the per-position head, for one sequence of L tokens.
    pub body: f64,
    /// The per-position head, for one position (0 when the network has none).
    pub head: f64,
}

/// The forward FLOPs of `model` on sequences of `seq_len` tokens over `vocab` classes; images
/// need their shape (`None` gives NaN for a U-Net).
pub fn forward_flops(
    model: &ModelConfig,
    seq_len: usize,
    vocab: u32,
    image: Option<ImageShape>,
) -> ForwardFlops {
    match model {
        ModelConfig::Dit(c) | ModelConfig::Ar(c) => dit(c, seq_len, vocab),
        ModelConfig::Unet(c) => ForwardFlops {
            body: image.map_or(f64::NAN, |s| unet(c, s, vocab)),
            head: 0.0,
        },
    }
}

/// Per layer 24·D² per token (qkv 6D², out 2D², MLP 4·mlp_ratio·D² with ratio 4) + attention
/// 4·L·D per token; the head 2·D·V per position.
fn dit(c: &DitConfig, seq_len: usize, vocab: u32) -> ForwardFlops {
    let (d, l, n, r) = (
        c.d_model as f64,
        seq_len as f64,
        c.n_layers as f64,
        c.mlp_ratio as f64,
    );
    ForwardFlops {
        body: l * n * ((8.0 + 4.0 * r) * d * d + 4.0 * l * d),
        head: 2.0 * d * vocab as f64,
    }
}

/// Walks the U-Net as `Unet::new` builds it: 3 × 3 convolutions `2·HW·C_in·C_out·9`, 1 × 1 skips
/// and attention projections, attention `4·(HW)²·C`, the input projection when present and the
/// 3 × 3 output convolution to `C·V`.
fn unet(c: &UnetConfig, s: ImageShape, vocab: u32) -> f64 {
    let widths: Vec<f64> = c
        .channel_mult
        .iter()
        .map(|&m| (m * c.channels) as f64)
        .collect();
    let levels = widths.len();
    let hw = |level: usize| (s.height >> level) as f64 * (s.width >> level) as f64;
    let conv = |px: f64, cin: f64, cout: f64, k: f64| 2.0 * px * cin * cout * k * k;
    let res = |px: f64, cin: f64, cout: f64| {
        conv(px, cin, cout, 3.0)
            + conv(px, cout, cout, 3.0)
            + if cin != cout {
                conv(px, cin, cout, 1.0)
            } else {
                0.0
            }
    };
    let attn =
        |px: f64, ch: f64| conv(px, ch, 3.0 * ch, 1.0) + 4.0 * px * px * ch + conv(px, ch, ch, 1.0);
    let has_attn = |level: usize| c.attention_ds.contains(&(1 << level));
    let c_embed = (s.channels * c.embed_dim) as f64;
    let mut total = if c_embed != widths[0] {
        conv(hw(0), c_embed, widths[0], 3.0)
    } else {
        0.0
    };
    let mut skips = vec![widths[0]];
    let mut ch = widths[0];
    for (level, &w) in widths.iter().enumerate() {
        for _ in 0..c.num_res_blocks {
            total += res(hw(level), ch, w)
                + if has_attn(level) {
                    attn(hw(level), w)
                } else {
                    0.0
                };
            ch = w;
            skips.push(ch);
        }
        if level + 1 < levels {
            skips.push(ch);
        }
    }
    let deep = hw(levels - 1);
    total += 2.0 * res(deep, ch, ch) + attn(deep, ch);
    for (level, &w) in widths.iter().enumerate().rev() {
        for _ in 0..=c.num_res_blocks {
            let skip = skips.pop().unwrap_or(0.0);
            total += res(hw(level), ch + skip, w)
                + if has_attn(level) {
                    attn(hw(level), w)
                } else {
                    0.0
                };
            ch = w;
        }
    }
    total + conv(hw(0), widths[0], (s.channels as u32 * vocab) as f64, 3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dit_matches_the_hand_count() {
        // D = 256, 4 layers, ratio 4, L = 128: 128·4·(24·65536 + 4·128·256) = 872,415,232.
        let f = forward_flops(&ModelConfig::default(), 128, 256, None);
        assert_eq!(f.body, 872_415_232.0);
        assert_eq!(f.head, 2.0 * 256.0 * 256.0);
    }

    #[test]
    fn smallest_unet_by_hand() {
        // One level of width 4 on a 2 × 2 gray image, embed 4 (no projection), one res-block,
        // no attention but the middle's: encoder res 2·(2·4·4·4·9) = 2·1152; middle 2 res + attn
        // (qkv 2·4·4·12 = 384, scores 4·16·4 = 256, proj 2·4·4·4 = 128); decoder 2 res-blocks on
        // 8 → 4 channels (3×3: 2·4·8·4·9 = 2304, 2·4·4·4·9 = 1152, skip 2·4·8·4 = 256); output
        // 2·4·4·256·9 = 73,728.
        let c = UnetConfig {
            embed_dim: 4,
            channels: 4,
            channel_mult: vec![1],
            num_res_blocks: 1,
            attention_ds: vec![],
            head_channels: 4,
            groups: 1,
            dropout: 0.0,
            scale_shift: false,
        };
        let f = forward_flops(
            &ModelConfig::Unet(c),
            4,
            256,
            Some(ImageShape::new(2, 2, 1)),
        );
        let res_same = 2.0 * 1152.0;
        let res_cat = 2304.0 + 1152.0 + 256.0;
        let expect = res_same + 2.0 * res_same + (384.0 + 256.0 + 128.0) + 2.0 * res_cat + 73_728.0;
        assert_eq!(f.body, expect);
        assert_eq!(f.head, 0.0);
    }
}
