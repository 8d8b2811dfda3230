//! `mdm-prime impute`: complete partially observed validation images of an image run.

use anyhow::{Context, bail};
use mdm_prime::checkpoint::RunDir;
use mdm_prime_core::data::image::{ImageSource, load_image_dataset};
use mdm_prime_core::observe::{Observe, observed_slots};
use rand::SeedableRng;

use super::image;
use super::run::{bar, ensure_same_images, load_ema, run_config};
use crate::args::ImputeArgs;

pub fn run(args: ImputeArgs) -> anyhow::Result<()> {
    let device = mdm_prime::device::parse_one(&args.device, "imputation")?;
    let run = RunDir::new(&args.run);
    let cfg = run_config(&run, &args.overrides, &["sample"])?;
    let shape = image::shape_of(&cfg, "impute")?;
    if args.num == 0 || args.completions == 0 || args.batch_size == 0 || args.steps == Some(0) {
        bail!("--num, --completions, --batch-size and --steps must be ≥ 1");
    }
    let obs: Vec<Observe> = args
        .observe
        .iter()
        .map(|o| o.parse())
        .collect::<Result<_, _>>()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let observed = observed_slots(&obs, shape, cfg.prime.ell, &mut rng)?;
    let source = args.data.clone().unwrap_or_else(|| cfg.data.source.clone());
    // Only validation images are used: keep one training image (the validation split is taken
    // before the limits, so it is the same).
    let src = ImageSource::parse(&source)?;
    let data = load_image_dataset(&src, cfg.data.val_fraction, 1, cfg.data.max_val)
        .with_context(|| format!("loading images {}", src.describe()))?;
    ensure_same_images(&cfg, &data)?;
    let n = args.num.min(data.n_val());
    mdm_prime_core::limits::check_fits(
        "--num × --completions templates",
        n as u128 * args.completions as u128 * cfg.data.seq_len as u128 * cfg.prime.ell as u128,
        8,
    )?;
    let originals: Vec<&[u32]> = (0..n).map(|i| data.val_block(i)).collect();

    let (model, tables) = load_ema(&cfg, &run, &device)?;
    let steps = args.steps.unwrap_or(cfg.sample_steps());
    let settings = super::run::sample_settings(&cfg, steps, args.seed, args.batch_size);
    let tag: String = args
        .observe
        .join("+")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let out = args.out.clone().unwrap_or_else(|| {
        run.root
            .join("samples")
            .join(format!("impute-{tag}-seed{}.png", args.seed))
    });
    let pb = bar(
        steps as u64,
        "imputing step {pos}/{len} [{bar:30}] ETA {eta}",
    );
    let t0 = std::time::Instant::now();
    let samples = image::impute_grid(
        &model,
        &tables,
        &cfg,
        &settings,
        &originals,
        &observed,
        args.completions,
        &out,
        &device,
        &mut |k, _| pb.set_position(k as u64),
    )?;
    pb.finish_and_clear();
    let fixed = observed.iter().filter(|&&o| o).count();
    let nfe = samples.iter().map(|s| s.nfe).sum::<usize>() as f64 / samples.len() as f64;
    eprintln!(
        "{n} images × {} completions, {fixed} of {} sub-tokens observed, {steps} steps (mean NFE \
         {nfe:.1}) in {:.1} s",
        args.completions,
        observed.len(),
        t0.elapsed().as_secs_f64()
    );
    println!("{}", out.display());
    Ok(())
}
