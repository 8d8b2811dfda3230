//! IDX image files (MNIST, Fashion-MNIST: `*-images-idx3-ubyte`), plain or gzip-compressed.
//!
//! Format (big-endian): magic `0x00000803` (unsigned bytes, 3 dimensions), then u32 count,
//! rows, cols, then `count·rows·cols` bytes, image after image, row-major. One channel, so the
//! bytes already are (H, W, C) order with C = 1. Compression is detected by the gzip magic
//! `1f 8b`, not by the file name.

use std::fs;
use std::io::Read;
use std::path::Path;

use super::{ImageShape, Images};
use crate::error::{Error, Result};

/// Magic number of an IDX image file: type u8 (0x08), 3 dimensions.
pub const IDX_IMAGE_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX label file (MNIST `*-labels-idx1-ubyte`): named in the error.
const IDX_LABEL_MAGIC: u32 = 0x0000_0801;
/// Header bytes: magic, count, rows, cols (4 × u32).
const IDX_HEADER_LEN: usize = 16;
/// First two bytes of a gzip stream (RFC 1952).
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Gunzips an IDX file, expanding only what its header says it holds (plus one byte, to tell a
/// longer file): a header asking for more than the memory, or a gzip bomb, is refused before it
/// is expanded. Returns the bytes and whether more followed them. Errors name the path.
fn gunzip_idx(path: &Path, raw: &[u8]) -> Result<(Vec<u8>, bool)> {
    let corrupt = |e: std::io::Error| {
        Error::data(
            path,
            format!(
                "gzip data is corrupt or cut short ({e}); download the file again, or check it \
                 with `gzip -t`"
            ),
        )
    };
    let mut gz = flate2::read::MultiGzDecoder::new(raw);
    let mut out = Vec::with_capacity(IDX_HEADER_LEN);
    (&mut gz)
        .take(IDX_HEADER_LEN as u64)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() < IDX_HEADER_LEN || be_u32(&out, 0) != IDX_IMAGE_MAGIC {
        return Ok((out, false)); // the header checks of the caller name the problem
    }
    let [count, rows, cols] = [4, 8, 12].map(|at| u128::from(be_u32(&out, at)));
    let payload = count * rows * cols;
    crate::limits::check_fits(
        &format!(
            "{} (its IDX header says {count} images of {rows}×{cols})",
            path.display()
        ),
        payload,
        1,
    )?;
    let payload = payload as u64; // fits: checked against the memory just above
    out.reserve(payload as usize);
    (&mut gz)
        .take(payload + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    let longer = out.len() as u64 > IDX_HEADER_LEN as u64 + payload;
    Ok((out, longer))
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Reads an IDX image file (`*-images-idx3-ubyte`, or `.gz` of it): `count` images of
/// `rows × cols × 1`.
///
/// Errors ([`Error::Data`] naming the path): unreadable file, corrupt gzip, a header shorter
/// than 16 bytes, a magic number other than `0x00000803` (with the one found), zero images or a
/// zero dimension, and a payload of the wrong length ("truncated: expected N bytes, found M").
pub fn read_idx_images(path: &Path) -> Result<Images> {
    parse_idx_images(path, crate::fsutil::read_input(path)?)
}

/// [`read_idx_images`] on the bytes of the file at `path`.
pub(crate) fn parse_idx_images(path: &Path, raw: Vec<u8>) -> Result<Images> {
    let gz = raw.starts_with(&GZIP_MAGIC);
    let (bytes, longer) = if gz {
        gunzip_idx(path, &raw)?
    } else {
        (raw, false)
    };
    let what = if gz { " (after gunzip)" } else { "" };
    if bytes.len() < IDX_HEADER_LEN {
        return Err(Error::data(
            path,
            format!(
                "truncated IDX file: expected a 16-byte header, found {} bytes{what}; download \
                 the file again",
                bytes.len()
            ),
        ));
    }
    let magic = be_u32(&bytes, 0);
    if magic != IDX_IMAGE_MAGIC {
        let hint = if magic == IDX_LABEL_MAGIC {
            "this is an IDX label file; pass the images file (`*-images-idx3-ubyte`)"
        } else {
            "pass an MNIST-style `*-images-idx3-ubyte` file (plain or .gz)"
        };
        return Err(Error::data(
            path,
            format!(
                "not an IDX image file: magic number 0x{magic:08x}, expected \
                 0x{IDX_IMAGE_MAGIC:08x} (unsigned bytes, 3 dimensions); {hint}"
            ),
        ));
    }
    let [count, rows, cols] = [4, 8, 12].map(|at| be_u32(&bytes, at) as usize);
    if count == 0 || rows == 0 || cols == 0 {
        return Err(Error::data(
            path,
            format!(
                "zero images: the header says {count} images of {rows}×{cols}; pass a file that \
                 holds at least one image"
            ),
        ));
    }
    let expected = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .and_then(|n| n.checked_add(IDX_HEADER_LEN));
    if expected != Some(bytes.len()) {
        let kind = match expected {
            Some(n) if bytes.len() > n => "wrong length",
            _ => "truncated",
        };
        let expected =
            expected.map_or_else(|| "more than fits in memory".into(), |n| n.to_string());
        return Err(Error::data(
            path,
            format!(
                "{kind} IDX file: expected {expected} bytes for {count} images of {rows}×{cols}, \
                 found {}{}{what}; download the file again",
                if longer { "more than " } else { "" },
                bytes.len() - usize::from(longer)
            ),
        ));
    }
    let mut pixels = bytes;
    pixels.drain(..IDX_HEADER_LEN);
    Ok(Images {
        shape: ImageShape::new(rows, cols, 1),
        count,
        pixels,
    })
}

/// Whether `path` starts like an IDX image file (after gunzip when it is gzip): the first four
/// bytes are [`IDX_IMAGE_MAGIC`]. Reads only a few bytes; `false` when unreadable.
pub(crate) fn looks_like_idx(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 4];
    let mut reader = std::io::BufReader::new(file);
    let Ok(()) = reader.read_exact(&mut head[..2]) else {
        return false;
    };
    if head[..2] == GZIP_MAGIC {
        let Ok(file) = fs::File::open(path) else {
            return false;
        };
        let mut gz = flate2::read::MultiGzDecoder::new(file);
        return gz.read_exact(&mut head).is_ok() && u32::from_be_bytes(head) == IDX_IMAGE_MAGIC;
    }
    reader.read_exact(&mut head[2..]).is_ok() && u32::from_be_bytes(head) == IDX_IMAGE_MAGIC
}

/// An IDX image file in memory: header + pixels (for tests).
#[cfg(test)]
pub(crate) fn idx_bytes(images: &Images) -> Vec<u8> {
    let mut out = Vec::with_capacity(IDX_HEADER_LEN + images.pixels.len());
    for v in [
        IDX_IMAGE_MAGIC,
        images.count as u32,
        images.shape.height as u32,
        images.shape.width as u32,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::test_util::{TempDir, err_text};
    use std::io::Write;

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Two 2×3 images: image i, pixel (h, w) = 100·i + 10·h + w.
    pub(crate) fn two_images() -> Images {
        let pixels = (0..2u8)
            .flat_map(|i| (0..2u8).flat_map(move |h| (0..3u8).map(move |w| 100 * i + 10 * h + w)))
            .collect();
        Images {
            shape: ImageShape::new(2, 3, 1),
            count: 2,
            pixels,
        }
    }

    #[test]
    fn idx_round_trip_plain_and_gzip() {
        let dir = TempDir::new("idx");
        let imgs = two_images();
        let raw = idx_bytes(&imgs);
        assert_eq!(
            &raw[..16],
            &[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        let plain = dir.write("train-images-idx3-ubyte", &raw);
        // Compression is found by content: a gzip file without `.gz` reads too.
        let gz = dir.write("gz-without-suffix", &gzip(&raw));
        for p in [&plain, &gz] {
            let got = read_idx_images(p).unwrap();
            assert_eq!(got, imgs);
            assert_eq!(got.image(1), &[100, 101, 102, 110, 111, 112]);
            assert!(looks_like_idx(p));
        }
        assert_eq!(gunzip_idx(&gz, &gzip(&raw)).unwrap(), (raw, false));
    }

    #[test]
    fn idx_wrong_magic() {
        let dir = TempDir::new("idx-magic");
        let mut raw = idx_bytes(&two_images());
        raw[3] = 0x01; // a labels file
        let p = dir.write("labels", &raw);
        let msg = err_text(read_idx_images(&p));
        assert!(msg.contains("labels"), "{msg}");
        assert!(
            msg.contains("magic number 0x00000801, expected 0x00000803"),
            "{msg}"
        );
        assert!(msg.contains("label file"), "{msg}");
        assert!(!looks_like_idx(&p));
        let p = dir.write("text.gz", &gzip(b"hello world, not idx"));
        let msg = err_text(read_idx_images(&p));
        assert!(msg.contains("magic number 0x68656c6c"), "{msg}");
    }

    #[test]
    fn idx_truncated_and_corrupt() {
        let dir = TempDir::new("idx-trunc");
        let raw = idx_bytes(&two_images()); // 16 + 12 bytes
        let p = dir.write("cut", &raw[..27]);
        let msg = err_text(read_idx_images(&p));
        assert!(
            msg.contains("truncated IDX file: expected 28 bytes for 2 images of 2×3, found 27"),
            "{msg}"
        );
        let p = dir.write("cut.gz", &gzip(&raw[..20]));
        let msg = err_text(read_idx_images(&p));
        assert!(
            msg.contains("expected 28 bytes for 2 images of 2×3, found 20 (after gunzip)"),
            "{msg}"
        );
        let p = dir.write("header", &raw[..10]);
        let msg = err_text(read_idx_images(&p));
        assert!(
            msg.contains("expected a 16-byte header, found 10 bytes"),
            "{msg}"
        );
        let mut long = raw.clone();
        long.push(0);
        let msg = err_text(read_idx_images(&dir.write("long", &long)));
        assert!(
            msg.contains("wrong length") && msg.contains("found 29"),
            "{msg}"
        );
        // A gzip stream cut in half is corrupt, not a short IDX file.
        let z = gzip(&raw);
        let p = dir.write("broken.gz", &z[..z.len() / 2]);
        let msg = err_text(read_idx_images(&p));
        assert!(
            msg.contains("broken.gz") && msg.contains("gzip data is corrupt"),
            "{msg}"
        );
    }

    #[test]
    fn idx_zero_images() {
        let dir = TempDir::new("idx-zero");
        let empty = Images {
            shape: ImageShape::new(28, 28, 1),
            count: 0,
            pixels: Vec::new(),
        };
        let p = dir.write("empty", &idx_bytes(&empty));
        let msg = err_text(read_idx_images(&p));
        assert!(
            msg.contains("zero images: the header says 0 images of 28×28"),
            "{msg}"
        );
    }
}
