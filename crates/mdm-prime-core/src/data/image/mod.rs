//! Image data: images as token grids (pixel values are the tokens, V = 256).
//!
//! An image of height H, width W and C channels is `L = H·W·C` tokens in (H, W, C) order:
//!
//! `token index = (h·W + w)·C + c`, `0 ≤ h < H`, `0 ≤ w < W`, `0 ≤ c < C`.
//!
//! Sub-token digits are appended per token later (`Codec::encode`), so per pixel the flat digit
//! order is `[ch0 d0 … d(ℓ−1), ch1 d0 …]`.
//!
//! Readers (each gives [`Images`]: one flat `Vec<u8>`, image after image, in (H, W, C) order):
//! - `idx`: MNIST / Fashion-MNIST `*-images-idx3-ubyte` files, gzip-compressed or not;
//! - `cifar`: CIFAR-10 binary batches (`data_batch_*.bin`, `test_batch.bin`);
//! - `png`: a folder of 8-bit PNG files, and [`write_png_grid`] for samples.
//!
//! [`ImageSource`] names a data set and [`load_image_dataset`] turns it into a
//! [`Dataset`](crate::data::Dataset) whose blocks are images.

mod cifar;
mod idx;
mod png;
mod source;

pub use cifar::{CIFAR_RECORD_BYTES, read_cifar_batch};
pub use idx::{IDX_IMAGE_MAGIC, read_idx_images};
pub use png::{GRID_GAP, read_png, read_png_folder, write_png_grid};
pub use source::{FASHION_MNIST_DIR, ImageSource, load_image_dataset};
// The readers on bytes, for the fuzz targets (`crate::fuzz`).
pub(crate) use cifar::parse_cifar_batch;
pub(crate) use idx::parse_idx_images;
pub(crate) use png::decode_png;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Number of pixel values, the vocabulary of image tokens (8-bit channels).
pub const PIXEL_VOCAB: u32 = 256;

/// Height, width and channels of an image; its tokens are laid out (H, W, C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageShape {
    /// H, rows.
    pub height: usize,
    /// W, columns.
    pub width: usize,
    /// C, channels (1 gray, 3 RGB).
    pub channels: usize,
}

impl ImageShape {
    /// The shape `H × W × C`.
    pub fn new(height: usize, width: usize, channels: usize) -> Self {
        ImageShape {
            height,
            width,
            channels,
        }
    }

    /// `L = H·W·C`, the number of tokens of one image.
    pub fn tokens(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Token index of pixel (h, w), channel c: `(h·W + w)·C + c`.
    pub fn index(&self, h: usize, w: usize, c: usize) -> usize {
        (h * self.width + w) * self.channels + c
    }
}

impl std::fmt::Display for ImageShape {
    /// `H×W×C`, e.g. `28×28×1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}×{}", self.height, self.width, self.channels)
    }
}

/// `count` images of one shape, flat: image `i` is `pixels[i·L..(i+1)·L]`, in (H, W, C) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// The shape every image has.
    pub shape: ImageShape,
    /// Number of images.
    pub count: usize,
    /// `count · L` pixel values.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Images from token sequences (pixel values as `u32`, e.g. samples or data blocks), each
    /// `shape.tokens()` long. Errors naming the image: a wrong length or a value above 255.
    pub fn from_tokens<'a>(
        shape: ImageShape,
        images: impl IntoIterator<Item = &'a [u32]>,
    ) -> Result<Images> {
        let mut pixels = Vec::new();
        let mut count = 0;
        for (k, tokens) in images.into_iter().enumerate() {
            if tokens.len() != shape.tokens() {
                return Err(Error::Value(format!(
                    "image {k} has {} values, not {shape} = {}",
                    tokens.len(),
                    shape.tokens()
                )));
            }
            for &v in tokens {
                let v = u8::try_from(v)
                    .map_err(|_| Error::Value(format!("image {k} has the value {v}, above 255")))?;
                pixels.push(v);
            }
            count += 1;
        }
        Ok(Images {
            shape,
            count,
            pixels,
        })
    }

    /// Image `i` (`L` values). Panics when `i ≥ count`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let l = self.shape.tokens();
        &self.pixels[i * l..(i + 1) * l]
    }

    /// Keeps the first `n` images (all when `n ≥ count`).
    pub fn truncate(&mut self, n: usize) {
        self.count = self.count.min(n);
        self.pixels.truncate(self.count * self.shape.tokens());
    }

    /// Splits off the last `n` images (at most `count`) and returns them.
    pub fn split_off_last(&mut self, n: usize) -> Images {
        let n = n.min(self.count);
        self.count -= n;
        let tail = self.pixels.split_off(self.count * self.shape.tokens());
        Images {
            shape: self.shape,
            count: n,
            pixels: tail,
        }
    }

    /// The pixels as token ids (`u32`, each `< 256`).
    pub fn tokens(&self) -> Vec<u32> {
        self.pixels.iter().map(|&p| u32::from(p)).collect()
    }
}

/// Mirrors images left to right: pixel (h, w) moves to (h, W − 1 − w), channel order kept.
///
/// `out[(h·W + w)·C + c] = tokens[(h·W + (W − 1 − w))·C + c]`
///
/// # Shapes
/// `tokens: [N·H·W·C]` (any whole number of rows `W·C`, e.g. N images) → the same length.
///
/// # Panics
/// When `tokens.len()` is not a multiple of `W·C` (a caller bug: blocks are whole images).
pub fn flip_horizontal(tokens: &[u32], shape: ImageShape) -> Vec<u32> {
    let c = shape.channels;
    let row = shape.width * c;
    if row == 0 {
        return tokens.to_vec();
    }
    assert!(
        tokens.len().is_multiple_of(row),
        "flip_horizontal: {} tokens are not whole rows of W·C = {} ({shape})",
        tokens.len(),
        row
    );
    let mut out = Vec::with_capacity(tokens.len());
    for r in tokens.chunks_exact(row) {
        for pixel in r.chunks_exact(c).rev() {
            out.extend_from_slice(pixel);
        }
    }
    out
}

/// Checks that `images` (each `L` tokens) are pixel values `< 256`; errors name `path`.
pub(crate) fn check_pixels<T: AsRef<[u32]>>(
    path: &std::path::Path,
    images: &[T],
    shape: ImageShape,
) -> Result<()> {
    for (i, img) in images.iter().enumerate() {
        let img = img.as_ref();
        if img.len() != shape.tokens() {
            return Err(Error::data(
                path,
                format!(
                    "image {i} has {} tokens but the shape {shape} needs {}; pass whole images",
                    img.len(),
                    shape.tokens()
                ),
            ));
        }
        if let Some((j, v)) = img.iter().enumerate().find(|&(_, &v)| v >= PIXEL_VOCAB) {
            return Err(Error::data(
                path,
                format!(
                    "image {i}, token {j} is {v}, not a pixel value (0..=255); pass pixel tokens, \
                     not sub-token digits or mask ids"
                ),
            ));
        }
    }
    Ok(())
}

/// `n` images whose every value (pixel and channel) is drawn independently from `images`'
/// values at the same position: the per-pixel histogram model, the product of the data's
/// one-pixel marginals. Drawing a value from the empirical histogram at position `p` is
/// copying position `p` of a uniformly chosen image, which is what this does. Seeded.
///
/// Errors when `images` is empty.
pub fn pixel_histogram_draw(images: &Images, n: usize, seed: u64) -> Result<Images> {
    use rand::{RngExt, SeedableRng};
    if images.count == 0 {
        return Err(Error::Value(
            "the per-pixel histogram of an empty set of images is undefined; give at least one image"
                .into(),
        ));
    }
    let l = images.shape.tokens();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pixels = (0..n * l)
        .map(|k| images.pixels[rng.random_range(0..images.count) * l + k % l])
        .collect();
    Ok(Images {
        shape: images.shape,
        count: n,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subtoken::Codec;

    #[test]
    fn shape_index_is_hwc() {
        let s = ImageShape::new(2, 3, 2);
        assert_eq!(s.tokens(), 12);
        assert_eq!(s.index(0, 0, 1), 1);
        assert_eq!(s.index(0, 2, 0), 4); // (0·3 + 2)·2 + 0
        assert_eq!(s.index(1, 0, 1), 7); // (1·3 + 0)·2 + 1
        assert_eq!(s.to_string(), "2×3×2");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"height":2,"width":3,"channels":2}"#);
        assert_eq!(serde_json::from_str::<ImageShape>(&json).unwrap(), s);
    }

    #[test]
    fn flip_horizontal_2x3x2() {
        let s = ImageShape::new(2, 3, 2);
        // Pixel (h, w) holds channels [10·h + w, 100 + 10·h + w].
        #[rustfmt::skip]
        let img = vec![
            0, 100,   1, 101,   2, 102,
            10, 110,  11, 111,  12, 112,
        ];
        #[rustfmt::skip]
        let want = vec![
            2, 102,   1, 101,   0, 100,
            12, 112,  11, 111,  10, 110,
        ];
        assert_eq!(flip_horizontal(&img, s), want);
        assert_eq!(flip_horizontal(&flip_horizontal(&img, s), s), img);
        // Two images at once flip independently.
        let two: Vec<u32> = img.iter().chain(&want).copied().collect();
        let flipped: Vec<u32> = want.iter().chain(&img).copied().collect();
        assert_eq!(flip_horizontal(&two, s), flipped);
    }

    #[test]
    fn images_split_and_truncate() {
        let s = ImageShape::new(1, 2, 1);
        let mut a = Images {
            shape: s,
            count: 3,
            pixels: vec![1, 2, 3, 4, 5, 6],
        };
        let tail = a.split_off_last(1);
        assert_eq!((tail.count, tail.pixels), (1, vec![5, 6]));
        assert_eq!(a.image(1), &[3, 4]);
        a.truncate(1);
        assert_eq!((a.count, a.tokens()), (1, vec![1, 2]));
    }

    #[test]
    fn check_pixels_rejects_big_values() {
        let s = ImageShape::new(1, 2, 1);
        let p = std::path::Path::new("grid.png");
        assert!(check_pixels(p, &[vec![0, 255]], s).is_ok());
        let msg = check_pixels(p, &[vec![0, 255], vec![256, 0]], s)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("grid.png") && msg.contains("image 1, token 0 is 256"),
            "{msg}"
        );
        let msg = check_pixels(p, &[vec![0]], s).unwrap_err().to_string();
        assert!(
            msg.contains("1 tokens but the shape 1×2×1 needs 2"),
            "{msg}"
        );
    }

    #[test]
    fn pixel_sub_tokens() {
        // Smallest b with b^ℓ ≥ 256: 256, 16, 7 (7³ = 343), 4, 2.
        for (ell, base) in [(1, 256), (2, 16), (3, 7), (4, 4), (8, 2)] {
            assert_eq!(
                Codec::new(PIXEL_VOCAB, ell).unwrap().base(),
                base,
                "ell {ell}"
            );
        }
        let c2 = Codec::new(256, 2).unwrap();
        assert_eq!(c2.digits(255).unwrap(), &[15, 15]); // 15·16 + 15
        assert_eq!(c2.digits(128).unwrap(), &[8, 0]); // 8·16
        let c3 = Codec::new(256, 3).unwrap();
        assert_eq!(c3.digits(255).unwrap(), &[5, 1, 3]); // 5·49 + 1·7 + 3
        assert_eq!(c3.num_codes() - 256, 87); // 343 − 256 invalid codes
        assert_eq!(
            Codec::new(256, 4).unwrap().digits(255).unwrap(),
            &[3, 3, 3, 3]
        );
        assert_eq!(Codec::new(256, 8).unwrap().digits(255).unwrap(), &[1; 8]);
    }

    #[test]
    fn pixel_digit_layout_is_token_major() {
        // A 1×2×3 RGB image: pixel 0 = (R 0x12, G 0x34, B 0x56), pixel 1 = (0x78, 0x9a, 0xbc).
        let s = ImageShape::new(1, 2, 3);
        let img = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc];
        assert_eq!(img[s.index(0, 1, 0)], 0x78); // pixel (0, 1), channel R
        let digits = Codec::new(256, 2).unwrap().encode(&img).unwrap();
        // ℓ = 2, b = 16: the digits are the hex nibbles, pix0 ch0 d0, pix0 ch0 d1, pix0 ch1 d0, …
        assert_eq!(
            digits,
            vec![0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xa, 0xb, 0xc]
        );
    }

    #[test]
    fn images_from_tokens_check_length_and_range() {
        let shape = ImageShape::new(1, 2, 1);
        let ok = Images::from_tokens(shape, [&[0u32, 255][..], &[7, 8]]).unwrap();
        assert_eq!((ok.count, ok.pixels), (2, vec![0, 255, 7, 8]));
        assert!(Images::from_tokens(shape, [&[0u32][..]]).is_err());
        assert!(Images::from_tokens(shape, [&[0u32, 256][..]]).is_err());
    }

    #[test]
    fn pixel_histogram_draws_each_position_from_its_own_values() {
        // Two 1×3 gray images: position 0 is always 7, position 1 is 0 or 255, position 2 is
        // 1 or 2.
        let images = Images {
            shape: ImageShape::new(1, 3, 1),
            count: 2,
            pixels: vec![7, 0, 1, 7, 255, 2],
        };
        let out = pixel_histogram_draw(&images, 4000, 3).unwrap();
        assert_eq!(out.count, 4000);
        assert_eq!(out.pixels.len(), 4000 * 3);
        let column = |p: usize| out.pixels.iter().skip(p).step_by(3).copied();
        assert!(column(0).all(|v| v == 7));
        assert!(column(1).all(|v| v == 0 || v == 255));
        assert!(column(2).all(|v| v == 1 || v == 2));
        // Each of two equally frequent values about half the time (4000 draws: s.d. ≈ 32).
        let zeros = column(1).filter(|&v| v == 0).count();
        assert!((1850..2150).contains(&zeros), "{zeros}");
        // Independent across positions: (0, 1) together about a quarter of the time.
        let both = (0..4000)
            .filter(|&i| out.pixels[i * 3 + 1] == 0 && out.pixels[i * 3 + 2] == 1)
            .count();
        assert!((880..1120).contains(&both), "{both}");
        // Seeded.
        assert_eq!(
            pixel_histogram_draw(&images, 10, 3).unwrap().pixels,
            out.pixels[..30]
        );
        let empty = Images {
            shape: images.shape,
            count: 0,
            pixels: vec![],
        };
        assert!(pixel_histogram_draw(&empty, 1, 0).is_err());
    }
}
