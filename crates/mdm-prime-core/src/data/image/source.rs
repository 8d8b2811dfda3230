//! [`ImageSource`]: which image data set, parsed from a spec string, and [`load_image_dataset`],
//! which turns it into a [`Dataset`] whose blocks are images.
//!
//! Splits: IDX and CIFAR-10 folders keep their official split (train files → train, `t10k` /
//! `test_batch` → validation). A PNG folder, a lone IDX file or a lone CIFAR batch uses its
//! last `max(1, ⌈N · val_fraction⌉)` images as validation (at most N − 1).

use std::fs;
use std::path::{Path, PathBuf};

use super::cifar::{CIFAR_RECORD_BYTES, read_cifar_batch};
use super::idx::{looks_like_idx, read_idx_images};
use super::png::{list_png_files, read_png_folder};
use super::{Images, PIXEL_VOCAB};
use crate::data::Dataset;
use crate::data::blocks::{check_val_fraction, n_val_blocks};
use crate::data::corpus::has_extension;
use crate::error::{Error, Result};

/// Where the Debian package `dataset-fashion-mnist` (MIT) installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// IDX file stems of the MNIST layout (train / validation), each plain or `.gz`.
const IDX_TRAIN: &str = "train-images-idx3-ubyte";
const IDX_VAL: &str = "t10k-images-idx3-ubyte";
/// The folder `cifar-10-binary.tar.gz` unpacks to.
const CIFAR_SUBDIR: &str = "cifar-10-batches-bin";

/// What [`ImageSource::parse`] accepts, for error messages.
const ACCEPTED: &str = "accepted: `fashion-mnist` (install it with: apt-get install \
     dataset-fashion-mnist); a folder with train-images-idx3-ubyte[.gz] (and \
     t10k-images-idx3-ubyte[.gz]), e.g. MNIST; a single IDX images file; a CIFAR-10 folder with \
     data_batch_*.bin / test_batch.bin (or its cifar-10-batches-bin subfolder; download the \
     binary version from https://www.cs.toronto.edu/~kriz/cifar.html and give its path); a \
     folder of 8-bit .png files of one size (e.g. ImageNet-32: download it, convert it to PNG \
     files and give the folder)";

/// Where an image data set comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// IDX image files (MNIST layout): `train`, and `val` when the folder has a `t10k` file
    /// (otherwise the last images of `train` are validation).
    Idx {
        train: PathBuf,
        val: Option<PathBuf>,
    },
    /// CIFAR-10 binary batches: `train` (data_batch_*.bin, sorted by name), `val`
    /// (test_batch.bin) when present (otherwise the last images of `train` are validation).
    Cifar10 {
        train: Vec<PathBuf>,
        val: Option<PathBuf>,
    },
    /// Every `*.png` file of a folder, sorted by name.
    PngFolder(PathBuf),
}

impl ImageSource {
    /// Parses an image data spec:
    /// - `fashion-mnist`: the IDX files of [`FASHION_MNIST_DIR`] (Debian `dataset-fashion-mnist`);
    /// - a folder with `train-images-idx3-ubyte[.gz]` (+ `t10k-images-idx3-ubyte[.gz]`): IDX;
    /// - a folder with `data_batch_*.bin` / `test_batch.bin`, or whose `cifar-10-batches-bin`
    ///   subfolder has them: CIFAR-10;
    /// - a folder with `*.png` files: [`ImageSource::PngFolder`];
    /// - a file that starts like an IDX image file (gzip or not): IDX; a `.bin` file whose
    ///   length is a multiple of 3073: one CIFAR-10 batch.
    ///
    /// Anything else is an error naming the path and listing what is accepted.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        match spec.to_ascii_lowercase().as_str() {
            "" => return Err(Error::config("image data", format!("empty; {ACCEPTED}"))),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => {
                return fashion_mnist(Path::new(FASHION_MNIST_DIR));
            }
            "mnist" | "cifar10" | "cifar-10" | "imagenet32" | "imagenet-32" => {
                return Err(Error::data(
                    spec,
                    format!(
                        "not bundled: download the data set yourself and give its path; \
                         {ACCEPTED}"
                    ),
                ));
            }
            _ => {}
        }
        let path = PathBuf::from(spec);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => from_dir(&path)?
                .ok_or_else(|| Error::data(&path, format!("no image data found; {ACCEPTED}"))),
            Ok(meta) if !meta.is_file() => Err(crate::fsutil::not_regular(&path, &meta)),
            Ok(_) if looks_like_idx(&path) => Ok(ImageSource::Idx {
                train: path,
                val: None,
            }),
            Ok(meta)
                if has_extension(&path, &["bin"])
                    && meta.len() > 0
                    && meta.len().is_multiple_of(CIFAR_RECORD_BYTES as u64) =>
            {
                Ok(ImageSource::Cifar10 {
                    train: vec![path],
                    val: None,
                })
            }
            Ok(_) => Err(Error::data(
                &path,
                format!("not an image data set (neither IDX nor CIFAR-10); {ACCEPTED}"),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::data(
                &path,
                format!("no such file or directory; {ACCEPTED}"),
            )),
            Err(e) => Err(Error::data(
                &path,
                format!("cannot access it ({e}); check the path and its permissions"),
            )),
        }
    }

    /// A one-line human description for logs.
    pub fn describe(&self) -> String {
        let tail = |val: &Option<PathBuf>| match val {
            Some(v) => format!(", validation {}", v.display()),
            None => ", validation = its last images".to_owned(),
        };
        match self {
            ImageSource::Idx { train, val } => {
                format!("IDX images {}{}", train.display(), tail(val))
            }
            ImageSource::Cifar10 { train, val } => {
                let dir = train
                    .first()
                    .and_then(|p| p.parent())
                    .unwrap_or(Path::new(""));
                format!(
                    "CIFAR-10 {} ({} train batches{})",
                    dir.display(),
                    train.len(),
                    tail(val)
                )
            }
            ImageSource::PngFolder(dir) => format!(
                "PNG folder {} (validation = its last images)",
                dir.display()
            ),
        }
    }

    /// Reads the images: `(train, Some(val))` for an official split, `(all, None)` otherwise.
    pub fn read(&self) -> Result<(Images, Option<Images>)> {
        match self {
            ImageSource::Idx { train, val } => Ok((
                read_idx_images(train)?,
                val.as_deref().map(read_idx_images).transpose()?,
            )),
            ImageSource::Cifar10 { train, val } => Ok((
                read_cifar_batches(train)?,
                val.as_deref().map(read_cifar_batch).transpose()?,
            )),
            ImageSource::PngFolder(dir) => Ok((read_png_folder(dir)?, None)),
        }
    }
}

impl std::str::FromStr for ImageSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ImageSource::parse(s)
    }
}

/// The IDX files of the Fashion-MNIST package folder `dir`, or the install hint.
fn fashion_mnist(dir: &Path) -> Result<ImageSource> {
    match from_dir(dir) {
        Ok(Some(src @ ImageSource::Idx { .. })) => Ok(src),
        _ => Err(Error::data(
            dir,
            "Fashion-MNIST is not installed here: install it with: apt-get install \
             dataset-fashion-mnist (Debian package, MIT), or pass a folder with the IDX files \
             (train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz)",
        )),
    }
}

/// The existing file `dir/stem` or `dir/stem.gz` (plain first).
fn find_idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_owned(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// The CIFAR-10 batches of `dir` (`data_batch_*.bin` sorted by name, `test_batch.bin`), if any.
fn find_cifar(dir: &Path) -> Result<Option<ImageSource>> {
    let entries = fs::read_dir(dir).map_err(|e| {
        Error::data(
            dir,
            format!("cannot list the folder ({e}); check that it is readable"),
        )
    })?;
    let mut train: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("data_batch_") && n.ends_with(".bin"))
        })
        .collect();
    train.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let test = dir.join("test_batch.bin");
    let val = test.is_file().then_some(test);
    Ok(match (train.is_empty(), val) {
        (true, None) => None,
        (true, Some(test)) => Some(ImageSource::Cifar10 {
            train: vec![test],
            val: None,
        }),
        (false, val) => Some(ImageSource::Cifar10 { train, val }),
    })
}

/// The image source a folder holds: IDX, CIFAR-10 (also in `cifar-10-batches-bin/`), PNG.
fn from_dir(dir: &Path) -> Result<Option<ImageSource>> {
    if let Some(train) = find_idx(dir, IDX_TRAIN) {
        let val = find_idx(dir, IDX_VAL);
        return Ok(Some(ImageSource::Idx { train, val }));
    }
    if let Some(src) = find_cifar(dir)? {
        return Ok(Some(src));
    }
    let sub = dir.join(CIFAR_SUBDIR);
    if sub.is_dir()
        && let Some(src) = find_cifar(&sub)?
    {
        return Ok(Some(src));
    }
    if !list_png_files(dir)?.is_empty() {
        return Ok(Some(ImageSource::PngFolder(dir.to_path_buf())));
    }
    Ok(None)
}

/// Several CIFAR-10 batches concatenated in order.
fn read_cifar_batches(files: &[PathBuf]) -> Result<Images> {
    let mut all: Option<Images> = None;
    for f in files {
        let imgs = read_cifar_batch(f)?;
        match &mut all {
            None => all = Some(imgs),
            Some(a) => {
                a.count += imgs.count;
                a.pixels.extend_from_slice(&imgs.pixels);
            }
        }
    }
    all.ok_or_else(|| Error::data("", format!("no CIFAR-10 batch files; {ACCEPTED}")))
}

/// Loads an image data set as a [`Dataset`] whose blocks are images: `seq_len = H·W·C`,
/// `vocab_size = 256`, `image = Some(shape)`, tokens in (H, W, C) order.
///
/// The split is the official one when the source has it, otherwise the last
/// `max(1, ⌈N · val_fraction⌉)` of the N images (at most N − 1) are validation. Then the first
/// `max_train` train and `max_val` validation images are kept (0 = no limit).
///
/// Errors: `val_fraction` outside (0, 1) (checked first), those of the readers, a validation
/// split whose shape differs from the train split, and fewer than 2 images when splitting.
pub fn load_image_dataset(
    source: &ImageSource,
    val_fraction: f64,
    max_train: usize,
    max_val: usize,
) -> Result<Dataset> {
    check_val_fraction(val_fraction)?;
    let (mut train, val) = source.read()?;
    let mut val = match val {
        Some(v) if v.shape != train.shape => {
            return Err(Error::data(
                source.describe(),
                format!(
                    "the validation images are {} but the train images are {}; give matching files",
                    v.shape, train.shape
                ),
            ));
        }
        Some(v) => v,
        None if train.count < 2 => {
            return Err(Error::data(
                source.describe(),
                format!(
                    "{} image(s): at least 2 are needed (one to train on, one to validate)",
                    train.count
                ),
            ));
        }
        None => {
            let n_val = n_val_blocks(train.count, val_fraction);
            train.split_off_last(n_val)
        }
    };
    if max_train > 0 {
        train.truncate(max_train);
    }
    if max_val > 0 {
        val.truncate(max_val);
    }
    let (train_tokens, val_tokens) = (train.tokens(), val.tokens());
    Ok(Dataset {
        seq_len: train.shape.tokens(),
        vocab_size: PIXEL_VOCAB,
        n_documents: train.count + val.count,
        n_tokens: train_tokens.len() + val_tokens.len(),
        train: train_tokens,
        val: val_tokens,
        source: source.describe(),
        from_cache: false,
        image: Some(train.shape),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::ImageShape;
    use crate::data::image::cifar::tests::record;
    use crate::data::image::idx::idx_bytes;
    use crate::data::image::idx::tests::{gzip, two_images};
    use crate::data::image::png::tests::write_raw;
    use crate::data::test_util::{TempDir, err_text};
    use ::image::ExtendedColorType;

    /// `n` 1×2 gray images, image i = [i, 100 + i].
    fn idx_of(n: u8) -> Vec<u8> {
        idx_bytes(&Images {
            shape: ImageShape::new(1, 2, 1),
            count: n as usize,
            pixels: (0..n).flat_map(|i| [i, 100 + i]).collect(),
        })
    }

    #[test]
    fn parse_idx_folder_and_file() {
        let dir = TempDir::new("src-idx");
        let train = dir.write("train-images-idx3-ubyte.gz", &gzip(&idx_of(5)));
        let spec = dir.0.to_str().unwrap();
        // Without t10k: no official split.
        let src = ImageSource::parse(spec).unwrap();
        assert_eq!(
            src,
            ImageSource::Idx {
                train: train.clone(),
                val: None
            }
        );
        let val = dir.write("t10k-images-idx3-ubyte", &idx_of(2));
        let src: ImageSource = spec.parse().unwrap();
        assert_eq!(
            src,
            ImageSource::Idx {
                train: train.clone(),
                val: Some(val.clone())
            }
        );
        assert!(
            src.describe().contains("t10k-images-idx3-ubyte"),
            "{}",
            src.describe()
        );
        // A lone IDX file, found by its content, whatever its name.
        let lone = dir.write("digits.data", &idx_of(3));
        let src = ImageSource::parse(lone.to_str().unwrap()).unwrap();
        assert_eq!(
            src,
            ImageSource::Idx {
                train: lone,
                val: None
            }
        );
    }

    #[test]
    fn idx_official_split_and_limits() {
        let dir = TempDir::new("src-split");
        dir.write("train-images-idx3-ubyte", &idx_of(5));
        dir.write("t10k-images-idx3-ubyte.gz", &gzip(&idx_of(3)));
        let src = ImageSource::parse(dir.0.to_str().unwrap()).unwrap();
        // val_fraction is unused by an official split.
        let d = load_image_dataset(&src, 0.5, 0, 0).unwrap();
        assert_eq!(
            (d.seq_len, d.vocab_size, d.image),
            (2, 256, Some(ImageShape::new(1, 2, 1)))
        );
        assert_eq!(
            (d.n_train(), d.n_val(), d.n_documents, d.n_tokens),
            (5, 3, 8, 16)
        );
        assert_eq!(d.train_block(4), &[4, 104]);
        assert_eq!(d.val, vec![0, 100, 1, 101, 2, 102]);
        // Limits keep the first images.
        let d = load_image_dataset(&src, 0.5, 2, 1).unwrap();
        assert_eq!((d.train, d.val), (vec![0, 100, 1, 101], vec![0, 100]));
        // Flipping a 1×2×1 image swaps its two pixels.
        let d = load_image_dataset(&src, 0.5, 0, 0).unwrap();
        assert_eq!(d.train_example(3, true).as_ref(), &[103, 3]);
        assert_eq!(d.train_example(3, false).as_ref(), &[3, 103]);
        let msg = err_text(load_image_dataset(&src, 1.0, 0, 0));
        assert!(msg.contains("val_fraction"), "{msg}");
    }

    #[test]
    fn lone_file_split_by_fraction() {
        let dir = TempDir::new("src-lone");
        let p = dir.write("imgs.idx", &idx_of(10));
        let src = ImageSource::parse(p.to_str().unwrap()).unwrap();
        // ⌈10 · 0.25⌉ = 3 validation images: the last three.
        let d = load_image_dataset(&src, 0.25, 0, 0).unwrap();
        assert_eq!((d.n_train(), d.n_val()), (7, 3));
        assert_eq!(d.val_block(0), &[7, 107]);
        // At least one.
        let d = load_image_dataset(&src, 0.01, 0, 0).unwrap();
        assert_eq!((d.n_train(), d.n_val()), (9, 1));
        let p = dir.write("one.idx", &idx_of(1));
        let src = ImageSource::parse(p.to_str().unwrap()).unwrap();
        let msg = err_text(load_image_dataset(&src, 0.1, 0, 0));
        assert!(
            msg.contains("one.idx") && msg.contains("at least 2"),
            "{msg}"
        );
    }

    #[test]
    fn parse_cifar_folder_and_subfolder() {
        let dir = TempDir::new("src-cifar");
        let sub = dir.0.join(CIFAR_SUBDIR);
        fs::create_dir(&sub).unwrap();
        let two: Vec<u8> = record(0).into_iter().chain(record(1)).collect();
        for name in ["data_batch_2.bin", "data_batch_1.bin"] {
            fs::write(sub.join(name), &two).unwrap();
        }
        fs::write(sub.join("test_batch.bin"), record(1)).unwrap();
        fs::write(sub.join("batches.meta.txt"), "airplane\n").unwrap();
        let want = ImageSource::Cifar10 {
            train: vec![sub.join("data_batch_1.bin"), sub.join("data_batch_2.bin")],
            val: Some(sub.join("test_batch.bin")),
        };
        assert_eq!(ImageSource::parse(dir.0.to_str().unwrap()).unwrap(), want);
        assert_eq!(ImageSource::parse(sub.to_str().unwrap()).unwrap(), want);
        assert!(
            want.describe().starts_with("CIFAR-10 "),
            "{}",
            want.describe()
        );
        let d = load_image_dataset(&want, 0.1, 0, 0).unwrap();
        assert_eq!((d.seq_len, d.n_train(), d.n_val()), (3072, 4, 1));
        // Image 1 of batch 1 is record 1: pixel (31, 31) = (63, 130, 223).
        assert_eq!(&d.train_block(1)[3069..], &[63, 130, 223]);
        assert_eq!(d.val_block(0), d.train_block(3));
        // A lone batch file is one CIFAR batch, split by fraction.
        let lone = sub.join("data_batch_1.bin");
        let src = ImageSource::parse(lone.to_str().unwrap()).unwrap();
        assert_eq!(
            src,
            ImageSource::Cifar10 {
                train: vec![lone],
                val: None
            }
        );
        // A truncated batch fails the load, naming the file.
        fs::write(sub.join("data_batch_2.bin"), &two[..3000]).unwrap();
        let msg = err_text(load_image_dataset(&want, 0.1, 0, 0));
        assert!(
            msg.contains("data_batch_2.bin") && msg.contains("truncated"),
            "{msg}"
        );
    }

    #[test]
    fn png_folder_source() {
        let dir = TempDir::new("src-png");
        for i in 0..4u8 {
            let px = [i, 10 + i, 20 + i, 30 + i, 40 + i, 50 + i];
            write_raw(
                &dir.0.join(format!("{i}.png")),
                &px,
                2,
                1,
                ExtendedColorType::Rgb8,
            );
        }
        let src = ImageSource::parse(dir.0.to_str().unwrap()).unwrap();
        assert_eq!(src, ImageSource::PngFolder(dir.0.clone()));
        let d = load_image_dataset(&src, 0.5, 0, 0).unwrap();
        assert_eq!(
            (d.image, d.n_train(), d.n_val()),
            (Some(ImageShape::new(1, 2, 3)), 2, 2)
        );
        assert_eq!(d.val_block(1), &[3, 13, 23, 33, 43, 53]);
        // Flip keeps each pixel's RGB order.
        assert_eq!(d.train_example(0, true).as_ref(), &[30, 40, 50, 0, 10, 20]);
    }

    #[test]
    fn parse_errors_name_the_path_and_list_what_is_accepted() {
        let dir = TempDir::new("src-err");
        let missing = dir.0.join("nothing-here");
        let msg = err_text(ImageSource::parse(missing.to_str().unwrap()));
        assert!(
            msg.contains("nothing-here") && msg.contains("no such file"),
            "{msg}"
        );
        assert!(
            msg.contains("apt-get install dataset-fashion-mnist"),
            "{msg}"
        );
        let empty = dir.0.join("empty");
        fs::create_dir(&empty).unwrap();
        let msg = err_text(ImageSource::parse(empty.to_str().unwrap()));
        assert!(msg.contains("empty: no image data found"), "{msg}");
        assert!(
            msg.contains("data_batch_*.bin") && msg.contains(".png"),
            "{msg}"
        );
        let txt = dir.write("notes.txt", b"hello");
        let msg = err_text(ImageSource::parse(txt.to_str().unwrap()));
        assert!(msg.contains("notes.txt: not an image data set"), "{msg}");
        for name in ["cifar10", "ImageNet32"] {
            let msg = err_text(ImageSource::parse(name));
            assert!(
                msg.contains("download the data set yourself and give its path"),
                "{msg}"
            );
            assert!(
                msg.contains("ImageNet-32") && msg.contains("cifar-10-batches-bin"),
                "{msg}"
            );
        }
        assert!(err_text(ImageSource::parse(" ")).contains("image data"));
        // The package folder missing, or without the IDX files: the install hint.
        for d in [missing, empty] {
            let msg = err_text(fashion_mnist(&d));
            assert!(msg.contains("Fashion-MNIST is not installed"), "{msg}");
            assert!(
                msg.contains(
                    "install it with: apt-get install dataset-fashion-mnist (Debian package, MIT)"
                ),
                "{msg}"
            );
        }
    }

    /// The Debian package `dataset-fashion-mnist`; skipped with a note where it is absent.
    #[test]
    fn fashion_mnist_from_debian_package() {
        let start = std::time::Instant::now();
        let src = match ImageSource::parse("fashion-mnist") {
            Ok(src) => src,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("apt-get install dataset-fashion-mnist"),
                    "{msg}"
                );
                println!("skipped: Fashion-MNIST is not installed ({msg})");
                return;
            }
        };
        let ImageSource::Idx {
            train,
            val: Some(val),
        } = &src
        else {
            panic!("fashion-mnist parsed as {src:?}");
        };
        let train = read_idx_images(train).unwrap();
        let val = read_idx_images(val).unwrap();
        assert_eq!((train.count, val.count), (60_000, 10_000));
        assert_eq!(
            (train.shape, val.shape),
            (ImageShape::new(28, 28, 1), ImageShape::new(28, 28, 1))
        );
        println!("Fashion-MNIST read in {:?}", start.elapsed());
    }

    #[test]
    fn two_images_fixture_is_consistent() {
        // The IDX fixture shared with idx.rs parses through the source path too.
        let dir = TempDir::new("src-fixture");
        let p = dir.write("t.gz", &gzip(&idx_bytes(&two_images())));
        let src = ImageSource::parse(p.to_str().unwrap()).unwrap();
        let d = load_image_dataset(&src, 0.5, 0, 0).unwrap();
        assert_eq!((d.seq_len, d.n_train(), d.n_val()), (6, 1, 1));
        assert_eq!(d.train_example(0, true).as_ref(), &[2, 1, 0, 12, 11, 10]);
    }
}
