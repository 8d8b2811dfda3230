//! PNG files: reading one or a folder of them as pixel tokens, and writing a grid of samples.
//!
//! Reading accepts 8-bit gray, gray + alpha, RGB and RGBA (palette and low-bit-depth gray
//! files are expanded to 8 bits by the decoder). Alpha is dropped: gray stays one channel, RGB
//! three. 16-bit files are rejected (convert them to 8 bits).

use std::path::{Path, PathBuf};

use ::image::codecs::png::PngEncoder;
use ::image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat};

use super::{ImageShape, Images, check_pixels};
use crate::error::{Error, Result};

/// Pixels between tiles in [`write_png_grid`].
pub const GRID_GAP: usize = 2;
/// Value of the gap pixels (white).
const GAP_VALUE: u8 = 255;

/// Reads one PNG file: its shape (C = 1 for gray and gray + alpha, 3 for RGB and RGBA) and
/// its pixels in (H, W, C) order.
///
/// Errors ([`Error::Data`] naming the path): unreadable, not a PNG, or not 8 bits per channel.
pub fn read_png(path: &Path) -> Result<(ImageShape, Vec<u8>)> {
    decode_png(path, &crate::fsutil::read_input(path)?)
}

/// [`read_png`] on the bytes of the file at `path`.
pub(crate) fn decode_png(path: &Path, bytes: &[u8]) -> Result<(ImageShape, Vec<u8>)> {
    let img = ::image::load_from_memory_with_format(bytes, ImageFormat::Png).map_err(|e| {
        Error::data(
            path,
            format!("not a readable PNG ({e}); pass 8-bit gray or RGB(A) .png files"),
        )
    })?;
    let (h, w) = (img.height() as usize, img.width() as usize);
    match img {
        DynamicImage::ImageLuma8(buf) => Ok((ImageShape::new(h, w, 1), buf.into_raw())),
        DynamicImage::ImageRgb8(buf) => Ok((ImageShape::new(h, w, 3), buf.into_raw())),
        DynamicImage::ImageLumaA8(buf) => {
            let gray = buf.into_raw().chunks_exact(2).map(|p| p[0]).collect();
            Ok((ImageShape::new(h, w, 1), gray))
        }
        DynamicImage::ImageRgba8(buf) => {
            let rgb = buf
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            Ok((ImageShape::new(h, w, 3), rgb))
        }
        other => Err(Error::data(
            path,
            format!(
                "{:?} PNG: only 8 bits per channel are supported; convert it, e.g. \
                 `convert IN -depth 8 OUT`",
                other.color()
            ),
        )),
    }
}

/// The `*.png` files of `dir` (extension compared case-insensitively, not recursive), sorted by
/// file name. Errors when the folder cannot be listed.
pub(crate) fn list_png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    crate::fsutil::list_files(dir, "png").map_err(|e| {
        Error::data(
            dir,
            format!("cannot list the folder ({e}); check that it is readable"),
        )
    })
}

/// Reads every `*.png` file of `dir`, sorted by name, as one [`Images`].
///
/// Errors ([`Error::Data`]): no `.png` files (naming the folder), a file [`read_png`] rejects,
/// and images of mixed sizes or channel counts (naming the first file that differs, its shape
/// and the first file's shape).
pub fn read_png_folder(dir: &Path) -> Result<Images> {
    let files = list_png_files(dir)?;
    let Some(first) = files.first() else {
        return Err(Error::data(
            dir,
            "zero images: the folder contains no .png files; put 8-bit gray or RGB .png files \
             of one size in it",
        ));
    };
    let (shape, mut pixels) = read_png(first)?;
    pixels.reserve(shape.tokens() * (files.len() - 1));
    for f in &files[1..] {
        let (s, px) = read_png(f)?;
        if s != shape {
            return Err(Error::data(
                f,
                format!(
                    "mixed image sizes: this file is {s} (H×W×C) but the first file, {}, is \
                     {shape}; all images of a folder must have one size and channel count",
                    first.display()
                ),
            ));
        }
        pixels.extend_from_slice(&px);
    }
    Ok(Images {
        shape,
        count: files.len(),
        pixels,
    })
}

/// Tiles `images` (each `L = H·W·C` pixel tokens, (H, W, C) order, C = 1 or 3) into one PNG,
/// `cols` per row (fewer when there are fewer images), [`GRID_GAP`] white pixels between tiles:
///
/// width `= n_cols·W + (n_cols − 1)·GAP`, height `= n_rows·H + (n_rows − 1)·GAP`,
/// `n_rows = ⌈N / n_cols⌉`; empty cells of the last row are white.
///
/// The file is written atomically (a temporary file beside it, then renamed); on error nothing
/// is left behind. Errors ([`Error::Data`] / [`Error::Io`] naming `path`): no images, `cols`
/// of 0, C not 1 or 3, an image of the wrong length, a token > 255, or a failed write.
pub fn write_png_grid<T: AsRef<[u32]>>(
    path: &Path,
    images: &[T],
    shape: ImageShape,
    cols: usize,
) -> Result<()> {
    let bad = |reason: String| Err(Error::data(path, reason));
    if images.is_empty() || cols == 0 || shape.tokens() == 0 {
        return bad(format!(
            "nothing to draw: {} images of {shape} in {cols} columns; pass at least one image \
             and cols ≥ 1",
            images.len()
        ));
    }
    let color = match shape.channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        c => {
            return bad(format!(
                "{c} channels: a PNG grid needs 1 (gray) or 3 (RGB)"
            ));
        }
    };
    check_pixels(path, images, shape)?;
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let n_cols = cols.min(images.len());
    let n_rows = images.len().div_ceil(n_cols);
    let width = n_cols * w + (n_cols - 1) * GRID_GAP;
    let height = n_rows * h + (n_rows - 1) * GRID_GAP;
    let (Ok(width32), Ok(height32)) = (u32::try_from(width), u32::try_from(height)) else {
        return bad(format!(
            "the grid {height}×{width} is too large; draw fewer images"
        ));
    };
    let mut canvas = vec![GAP_VALUE; width * height * c];
    for (k, img) in images.iter().enumerate() {
        let (top, left) = ((k / n_cols) * (h + GRID_GAP), (k % n_cols) * (w + GRID_GAP));
        for (y, row) in img.as_ref().chunks_exact(w * c).enumerate() {
            let start = ((top + y) * width + left) * c;
            for (dst, &v) in canvas[start..start + w * c].iter_mut().zip(row) {
                *dst = v as u8; // < 256, checked above
            }
        }
    }
    write_png_atomic(path, &canvas, width32, height32, color)
}

/// Writes raw 8-bit pixels as a PNG at `path`, atomically: `<name>.<pid>.<n>.tmp` beside it,
/// synced, then renamed over `path`.
pub(crate) fn write_png_atomic(
    path: &Path,
    pixels: &[u8],
    width: u32,
    height: u32,
    color: ExtendedColorType,
) -> Result<()> {
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(pixels, width, height, color)
        .map_err(|e| Error::data(path, format!("cannot encode the PNG ({e})")))?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::test_util::{TempDir, err_text};
    use std::fs;

    /// Writes a PNG of `color` with raw 8-bit `pixels` (for tests).
    pub(crate) fn write_raw(path: &Path, pixels: &[u8], w: u32, h: u32, color: ExtendedColorType) {
        write_png_atomic(path, pixels, w, h, color).unwrap();
    }

    #[test]
    fn png_folder_gray_and_alpha() {
        let dir = TempDir::new("png-gray");
        // b.png: 2×3 gray + alpha (alpha dropped); a.png: 2×3 gray. Sorted: a, b.
        let la: Vec<u8> = (0..6).flat_map(|i| [10 * i, 99]).collect();
        write_raw(&dir.0.join("b.png"), &la, 3, 2, ExtendedColorType::La8);
        write_raw(
            &dir.0.join("a.png"),
            &[1, 2, 3, 4, 5, 6],
            3,
            2,
            ExtendedColorType::L8,
        );
        dir.write("notes.txt", b"ignored");
        let imgs = read_png_folder(&dir.0).unwrap();
        assert_eq!((imgs.count, imgs.shape), (2, ImageShape::new(2, 3, 1)));
        assert_eq!(imgs.pixels, vec![1, 2, 3, 4, 5, 6, 0, 10, 20, 30, 40, 50]);
    }

    #[test]
    fn png_folder_rgb_and_rgba() {
        let dir = TempDir::new("png-rgb");
        // 1×2 RGB: pixel 0 = (1, 2, 3), pixel 1 = (4, 5, 6); the RGBA twin drops its alpha.
        write_raw(
            &dir.0.join("0.png"),
            &[1, 2, 3, 4, 5, 6],
            2,
            1,
            ExtendedColorType::Rgb8,
        );
        let rgba = [7, 8, 9, 0, 10, 11, 12, 255];
        write_raw(&dir.0.join("1.PNG"), &rgba, 2, 1, ExtendedColorType::Rgba8);
        let imgs = read_png_folder(&dir.0).unwrap();
        assert_eq!((imgs.count, imgs.shape), (2, ImageShape::new(1, 2, 3)));
        assert_eq!(imgs.pixels, (1..=12).collect::<Vec<u8>>());
    }

    #[test]
    fn png_folder_errors() {
        let dir = TempDir::new("png-bad");
        let msg = err_text(read_png_folder(&dir.0));
        assert!(msg.contains("no .png files"), "{msg}");
        write_raw(&dir.0.join("a.png"), &[0; 6], 3, 2, ExtendedColorType::L8);
        write_raw(&dir.0.join("b.png"), &[0; 6], 2, 3, ExtendedColorType::L8);
        let msg = err_text(read_png_folder(&dir.0));
        assert!(
            msg.contains("b.png: mixed image sizes: this file is 3×2×1"),
            "{msg}"
        );
        assert!(msg.contains("a.png, is 2×3×1"), "{msg}");
        fs::remove_file(dir.0.join("b.png")).unwrap();
        write_raw(
            &dir.0.join("c.png"),
            &[0; 18],
            3,
            2,
            ExtendedColorType::Rgb8,
        );
        let msg = err_text(read_png_folder(&dir.0));
        assert!(msg.contains("c.png") && msg.contains("is 2×3×3"), "{msg}");
        fs::remove_file(dir.0.join("c.png")).unwrap();
        dir.write("d.png", b"not a png");
        assert!(err_text(read_png_folder(&dir.0)).contains("d.png: not a readable PNG"));
        let wide = [0u8; 12]; // 16-bit gray, 3×2
        write_raw(&dir.0.join("d.png"), &wide, 3, 2, ExtendedColorType::L16);
        assert!(err_text(read_png_folder(&dir.0)).contains("only 8 bits per channel"));
    }

    #[test]
    fn grid_layout_and_errors() {
        let dir = TempDir::new("grid");
        let s = ImageShape::new(2, 2, 1);
        let images: Vec<Vec<u32>> = (0..3).map(|i| vec![i, i + 10, i + 20, i + 30]).collect();
        let p = dir.0.join("grid.png");
        write_png_grid(&p, &images, s, 2).unwrap();
        let (shape, px) = read_png(&p).unwrap();
        // 2 columns, 2 rows: width 2·2 + 2 = 6, height 6; the missing 4th tile is white.
        assert_eq!(shape, ImageShape::new(6, 6, 1));
        #[rustfmt::skip]
        assert_eq!(px, vec![
            0, 10,  255, 255,  1, 11,
            20, 30, 255, 255,  21, 31,
            255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255,
            2, 12,  255, 255,  255, 255,
            22, 32, 255, 255,  255, 255,
        ]);
        // RGB, borrowed slices, one column; no temporary file is left.
        let rgb: [&[u32]; 2] = [&[1, 2, 3], &[4, 5, 6]];
        write_png_grid(&p, &rgb, ImageShape::new(1, 1, 3), 1).unwrap();
        let (shape, px) = read_png(&p).unwrap();
        assert_eq!(shape, ImageShape::new(4, 1, 3));
        assert_eq!(px, vec![1, 2, 3, 255, 255, 255, 255, 255, 255, 4, 5, 6]);
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);

        let big = [vec![0, 256, 0, 0]];
        let msg = err_text(write_png_grid(&p, &big, s, 1));
        assert!(
            msg.contains("grid.png") && msg.contains("is 256, not a pixel value"),
            "{msg}"
        );
        let msg = err_text(write_png_grid::<Vec<u32>>(&p, &[], s, 1));
        assert!(msg.contains("nothing to draw"), "{msg}");
        let msg = err_text(write_png_grid(
            &p,
            &[vec![0; 8]],
            ImageShape::new(2, 2, 2),
            1,
        ));
        assert!(msg.contains("2 channels"), "{msg}");
        let missing = dir.0.join("no/such/dir/grid.png");
        let msg = err_text(write_png_grid(&missing, &images, s, 2));
        assert!(msg.contains("no/such/dir/grid.png"), "{msg}");
    }
}
