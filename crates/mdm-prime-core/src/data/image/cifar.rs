//! CIFAR-10 binary batches (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`).
//!
//! Each record is 1 label byte + 3072 pixel bytes: the 1024 R values, then 1024 G, then 1024 B,
//! each plane row-major 32×32 (channel-planar, CHW). They are reordered to (H, W, C):
//!
//! `out[(h·32 + w)·3 + c] = record[1 + c·1024 + h·32 + w]`.
//!
//! Labels are dropped (the models here are unconditional).

use std::path::Path;

use super::{ImageShape, Images};
use crate::error::{Error, Result};

/// CIFAR-10 image side (32) and channels (3).
const SIDE: usize = 32;
const CHANNELS: usize = 3;
/// Bytes of one record: 1 label + 32·32·3 pixels = 3073.
pub const CIFAR_RECORD_BYTES: usize = 1 + SIDE * SIDE * CHANNELS;

/// Reads one CIFAR-10 binary batch: `file length / 3073` images of 32×32×3, in (H, W, C) order.
///
/// Errors ([`Error::Data`] naming the file): unreadable, empty (zero images), or a length that
/// is not a multiple of 3073 (the file is truncated).
pub fn read_cifar_batch(path: &Path) -> Result<Images> {
    parse_cifar_batch(path, &crate::fsutil::read_input(path)?)
}

/// [`read_cifar_batch`] on the bytes of the file at `path`.
pub(crate) fn parse_cifar_batch(path: &Path, bytes: &[u8]) -> Result<Images> {
    if bytes.is_empty() {
        return Err(Error::data(
            path,
            "zero images: the file is empty; pass a CIFAR-10 binary batch (data_batch_1.bin …)",
        ));
    }
    if !bytes.len().is_multiple_of(CIFAR_RECORD_BYTES) {
        let whole = bytes.len() / CIFAR_RECORD_BYTES;
        return Err(Error::data(
            path,
            format!(
                "truncated CIFAR-10 batch: {} bytes is not a multiple of {CIFAR_RECORD_BYTES} \
                 (1 label + 3072 pixel bytes per record); expected {} bytes for {} records, \
                 found {}; download the binary version again (cifar-10-binary.tar.gz)",
                bytes.len(),
                (whole + 1) * CIFAR_RECORD_BYTES,
                whole + 1,
                bytes.len()
            ),
        ));
    }
    let count = bytes.len() / CIFAR_RECORD_BYTES;
    let plane = SIDE * SIDE;
    let mut pixels = vec![0u8; count * plane * CHANNELS];
    for (record, out) in bytes
        .chunks_exact(CIFAR_RECORD_BYTES)
        .zip(pixels.chunks_exact_mut(plane * CHANNELS))
    {
        let planes = &record[1..];
        for (p, px) in out.chunks_exact_mut(CHANNELS).enumerate() {
            for (c, v) in px.iter_mut().enumerate() {
                *v = planes[c * plane + p];
            }
        }
    }
    Ok(Images {
        shape: ImageShape::new(SIDE, SIDE, CHANNELS),
        count,
        pixels,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::test_util::{TempDir, err_text};

    /// Record `i`: label i, R(h, w) = (h + w + i) mod 256, G = (2h + 3) · (i + 1) mod 256 (rows
    /// only), B = 255 − w − i.
    pub(crate) fn record(i: usize) -> Vec<u8> {
        let mut r = vec![i as u8];
        for c in 0..3 {
            for h in 0..32 {
                for w in 0..32 {
                    r.push(match c {
                        0 => ((h + w + i) % 256) as u8,
                        1 => (((2 * h + 3) * (i + 1)) % 256) as u8,
                        _ => (255 - w - i) as u8,
                    });
                }
            }
        }
        r
    }

    #[test]
    fn cifar_planes_become_hwc() {
        let dir = TempDir::new("cifar");
        let bytes: Vec<u8> = record(0).into_iter().chain(record(1)).collect();
        assert_eq!(bytes.len(), 2 * 3073);
        let p = dir.write("data_batch_1.bin", &bytes);
        let imgs = read_cifar_batch(&p).unwrap();
        assert_eq!((imgs.count, imgs.shape), (2, ImageShape::new(32, 32, 3)));
        let s = imgs.shape;
        let img0 = imgs.image(0);
        // Pixel (0, 0) of image 0: R 0, G 3, B 255 at tokens 0, 1, 2.
        assert_eq!(&img0[..3], &[0, 3, 255]);
        // Pixel (2, 5): index (2·32 + 5)·3 = 207; R 7, G 7, B 250.
        assert_eq!(&img0[207..210], &[7, 7, 250]);
        let img1 = imgs.image(1);
        // Image 1, pixel (31, 31): R 63, G (65·2) = 130, B 255 − 31 − 1 = 223.
        assert_eq!(s.index(31, 31, 0), 3069);
        assert_eq!(&img1[3069..3072], &[63, 130, 223]);
        // Pixel (1, 0), channel G of image 1: (2 + 3)·2 = 10, at (1·32 + 0)·3 + 1 = 97.
        assert_eq!(img1[97], 10);
    }

    #[test]
    fn cifar_truncated_and_empty() {
        let dir = TempDir::new("cifar-bad");
        let bytes: Vec<u8> = record(0).into_iter().chain(record(1)).collect();
        let p = dir.write("data_batch_2.bin", &bytes[..5000]);
        let msg = err_text(read_cifar_batch(&p));
        assert!(msg.contains("data_batch_2.bin"), "{msg}");
        assert!(
            msg.contains("truncated CIFAR-10 batch: 5000 bytes is not a multiple of 3073"),
            "{msg}"
        );
        assert!(
            msg.contains("expected 6146 bytes for 2 records, found 5000"),
            "{msg}"
        );
        let p = dir.write("test_batch.bin", b"");
        assert!(err_text(read_cifar_batch(&p)).contains("zero images"));
    }
}
