//! `mdm-prime train`: resolve the config, load the data, train with a progress bar, and print the
//! validation numbers at the end. Ctrl-C saves a checkpoint before exiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use mdm_prime::checkpoint::RunDir;
use mdm_prime::train::{self, TrainEvent, Trainer};
use mdm_prime_core::config::RunConfig;

use mdm_prime_core::data::Dataset;

use super::eval::print_report;
use super::image;
use super::run::{CPU_PRESET, bar, load_data};
use crate::args::TrainArgs;

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut overrides = Vec::new();
    if let Some(name) = &args.name {
        overrides.push(format!("name={}", toml_string(name)));
    }
    if let Some(steps) = args.steps {
        overrides.push(format!("train.steps={steps}"));
    }
    if let Some(seed) = args.seed {
        overrides.push(format!("seed={seed}"));
    }
    if let Some(policy) = &args.on_write_error {
        overrides.push(format!("train.on_write_error={policy}"));
    }
    if let Some(data) = &args.data {
        overrides.push(format!("data.source={}", toml_string(data)));
    }
    if let Some(device) = &args.device {
        overrides.push(format!("train.device={}", toml_string(device)));
    }
    overrides.extend(args.overrides.iter().cloned());

    // The config: an explicit preset, else the run's own config on --resume, else the CPU preset.
    let guess_dir = args.run_dir.clone();
    let cfg = match (&args.config, args.resume, &guess_dir) {
        (Some(path), _, _) => RunConfig::load(path, &overrides)?,
        (None, true, Some(dir)) if RunDir::new(dir).config().exists() => {
            RunConfig::load(&RunDir::new(dir).config(), &overrides)?
        }
        _ => {
            let base = RunConfig::from_toml_str(CPU_PRESET, "configs/cpu.toml", &overrides)?;
            let dir = RunDir::new(format!("runs/{}", base.name));
            if args.resume && args.config.is_none() && dir.config().exists() {
                RunConfig::load(&dir.config(), &overrides)?
            } else {
                base
            }
        }
    };
    let run = RunDir::new(
        args.run_dir
            .clone()
            .unwrap_or_else(|| format!("runs/{}", cfg.name).into()),
    );

    // The device before the data: a GPU this binary or machine lacks is reported at once.
    let devices = mdm_prime::device::open(&cfg.device()?)?;
    // Sizes before anything is allocated (images again once their shape is known).
    cfg.check_training_memory()?;
    let data = load_data(&cfg, &cfg.data.source)?;
    let mut cfg = cfg;
    if let Some(shape) = data.image {
        // The image shape (and so L) comes from the data and is recorded in the run's config.
        cfg.data.image = Some(shape);
        cfg.data.seq_len = shape.tokens();
        cfg.validate()?;
        cfg.check_training_memory()?;
        eprintln!(
            "data: {} — {} train / {} validation images of {shape} ({} tokens each, V = 256){}",
            data.source,
            data.n_train(),
            data.n_val(),
            data.seq_len,
            if cfg.data.flip {
                ", random horizontal flips"
            } else {
                ""
            }
        );
    } else {
        eprintln!(
            "data: {} — {} tokens, {} train / {} validation blocks of {} ({}){}",
            data.source,
            data.n_tokens,
            data.n_train(),
            data.n_val(),
            data.seq_len,
            cfg.data.tokenizer,
            if data.from_cache { ", from cache" } else { "" }
        );
    }
    let unigram = data.unigram_baseline();

    let mut trainer = Trainer::open_parallel(&cfg, run.clone(), args.resume, &devices)
        .with_context(|| format!("opening run directory {}", run.root.display()))?;
    let fixed = trainer.recovery;
    if fixed.completed_renames > 0 {
        eprintln!(
            "completed a checkpoint that a crash interrupted ({} files installed from {})",
            fixed.completed_renames,
            mdm_prime::checkpoint::JOURNAL
        );
    }
    if fixed.removed_temps > 0 {
        eprintln!(
            "removed {} temporary files left by a crashed writer",
            fixed.removed_temps
        );
    }
    if devices.len() > 1 {
        eprintln!(
            "data-parallel over {} devices ({}): {} sequences each per micro-batch",
            devices.len(),
            cfg.train.device,
            cfg.train.shard_size(devices.len())?
        );
    }
    let codec = cfg.codec()?;
    eprintln!(
        "model: ell = {}, base = {}, {}; objective {}; run dir {}",
        codec.ell(),
        codec.base(),
        cfg.model.describe(),
        cfg.metric_names().0,
        run.root.display()
    );

    if cfg.train.fid_every > 0 {
        trainer.add_probe(Box::new(fid_probe(&cfg, &data, trainer.device())?));
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without saving");
                std::process::exit(130);
            }
            eprintln!(
                "\nCtrl-C: finishing this step and saving a checkpoint (Ctrl-C again to abort)"
            );
        })
        .context("installing the Ctrl-C handler")?;
    }

    let pb = bar(
        cfg.train.steps,
        "{spinner} step {pos}/{len} [{bar:30}] {msg} ETA {eta}",
    );
    if args.quiet {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let quiet = args.quiet;
    let outcome = train::run(&mut trainer, &data, &stop, &mut |ev| match ev {
        TrainEvent::Start {
            step,
            params,
            resumed,
            ..
        } => {
            pb.set_position(*step);
            pb.reset_eta();
            let what = if *resumed {
                "resuming at"
            } else {
                "starting at"
            };
            let line = format!("{params} parameters; {what} step {step}");
            match quiet {
                true => eprintln!("{line}"),
                false => pb.println(line),
            }
        }
        TrainEvent::Step {
            step,
            loss,
            lr,
            grad_norm,
            tokens_per_s,
        } => {
            pb.set_position(*step);
            pb.set_message(format!(
                "loss {loss:.4} lr {lr:.2e} |g| {grad_norm:.2} {tokens_per_s:.0} tok/s"
            ));
            if quiet && step % cfg.train.log_every == 0 {
                eprintln!(
                    "step {step} loss {loss:.4} lr {lr:.2e} grad_norm {grad_norm:.3} {tokens_per_s:.0} tok/s"
                );
            }
        }
        TrainEvent::Eval { step, report } => pb.println(format!(
            "step {step}: val elbo {:.4} nats/token (ppl {:.3}), paper objective {:.4}",
            report.elbo_nats_per_token, report.elbo_ppl, report.paper_objective_nats_per_token
        )),
        TrainEvent::Probe { step, name, value } => {
            pb.println(format!("step {step}: {name} {value:.3} (EMA)"))
        }
        TrainEvent::Checkpoint { .. } => {}
        TrainEvent::WriteFailed { step, error } => pb.println(format!(
            "step {step}: checkpoint not written ({error}); the previous one is intact, \
             retrying after the next step"
        )),
        TrainEvent::Skipped {
            step,
            loss,
            grad_norm,
            consecutive,
        } => pb.println(format!(
            "step {step} skipped: loss {loss}, gradient norm {grad_norm} ({consecutive} in a row; \
             no update applied)"
        )),
    })?;
    pb.finish_and_clear();

    if outcome.interrupted {
        eprintln!(
            "interrupted at step {}; checkpoint saved in {}. Continue with: mdm-prime train --run-dir {} --resume",
            outcome.step,
            run.root.display(),
            run.root.display()
        );
        std::process::exit(130);
    }
    println!(
        "trained {} steps; run directory {}",
        outcome.step,
        run.root.display()
    );
    if let Some(report) = &outcome.last_eval {
        println!(
            "validation ({} of {} blocks, EMA weights):",
            report.sequences,
            data.n_val()
        );
        print_report(report, unigram, data.image.is_some());
    }
    if data.image.is_some() {
        image_grids(&trainer, &cfg, &data)?;
    } else {
        print_samples(&trainer, &cfg)?;
    }
    println!(
        "next: mdm-prime eval --run {} (full validation set); loss curve: {}",
        run.root.display(),
        run.loss_plot().display()
    );
    Ok(())
}

/// For an image run: a grid of 16 samples and an imputation grid (8 validation images, left half
/// observed, 2 completions each) from the EMA weights, under `<run>/samples/`.
fn image_grids(trainer: &Trainer, cfg: &RunConfig, data: &Dataset) -> anyhow::Result<()> {
    use burn::module::Module;
    use mdm_prime_core::observe::{Observe, observed_slots};
    use rand::SeedableRng;
    let model = trainer.ema.clone().valid();
    let steps = cfg.sample_steps();
    let settings = super::run::sample_settings(cfg, steps, cfg.seed, 16);
    let dir = trainer.run.root.join("samples");
    let png = dir.join(format!("samples-seed{}.png", cfg.seed));
    let jsonl = dir.join(format!("samples-seed{}.jsonl", cfg.seed));
    let pb = bar(
        32 * steps as u64,
        "sampling {pos}/{len} [{bar:30}] ETA {eta}",
    );
    let samples = image::sample_grid(
        &model,
        &trainer.tables,
        cfg,
        &settings,
        16,
        &png,
        &jsonl,
        trainer.device(),
        &mut |k, _| pb.set_position(k as u64),
    )?;
    let nfe = samples.iter().map(|s| s.nfe).sum::<usize>() as f64 / samples.len() as f64;
    println!(
        "16 samples ({steps} steps, mean NFE {nfe:.1}): {}",
        png.display()
    );
    let shape = image::shape_of(cfg, "train")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let observed = observed_slots(&[Observe::LeftHalf], shape, cfg.prime.ell, &mut rng)?;
    let originals: Vec<&[u32]> = (0..8.min(data.n_val()))
        .map(|i| data.val_block(i))
        .collect();
    let png = dir.join("impute-left-half.png");
    image::impute_grid(
        &model,
        &trainer.tables,
        cfg,
        &settings,
        &originals,
        &observed,
        2,
        &png,
        trainer.device(),
        &mut |k, _| pb.set_position((16 * steps + k) as u64),
    )?;
    pb.finish_and_clear();
    println!(
        "imputation (rows: original, left half observed, 2 completions): {}",
        png.display()
    );
    println!(
        "more: mdm-prime sample --run {0} --num 64; mdm-prime impute --run {0} --observe digits:0",
        trainer.run.root.display()
    );
    Ok(())
}

/// Two samples from the EMA weights (T = L steps), to see what the model learned.
fn print_samples(trainer: &Trainer, cfg: &RunConfig) -> anyhow::Result<()> {
    use burn::module::Module;
    use mdm_prime::sampler::{Template, sample};
    use mdm_prime_core::Tokenizer;
    let tok = Tokenizer::new(cfg.data.tokenizer)?;
    let l = cfg.data.seq_len;
    let settings = super::run::sample_settings(cfg, l, cfg.seed, 2);
    let free = Template::free(l, cfg.prime.ell);
    let model = trainer.ema.clone().valid();
    let (samples, _) = sample(
        &model,
        &trainer.tables,
        &cfg.schedule,
        &settings,
        &free,
        2,
        tok.eos(),
        trainer.device(),
        &mut |_, _| {},
    )?;
    for (k, s) in samples.iter().enumerate() {
        let body: Vec<u32> = s
            .tokens
            .iter()
            .copied()
            .filter(|&x| x != tok.eos())
            .collect();
        println!(
            "sample {k} (NFE {}, {} idle of {} steps): {:?}",
            s.nfe,
            s.idle_steps,
            s.steps,
            tok.decode_lossy(&body)?
        );
    }
    println!(
        "more: mdm-prime sample --run {} --num 8",
        trainer.run.root.display()
    );
    Ok(())
}

/// Quotes a string as a TOML literal for an override.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The training-time FID of `[train] fid_every`: the Inception-v3 from `train.fid_inception`
/// (or `$MDM_PRIME_FID_WEIGHTS`) and the first `fid_samples` validation images as reference.
fn fid_probe(
    cfg: &RunConfig,
    data: &Dataset,
    device: &burn::tensor::Device,
) -> anyhow::Result<mdm_prime::inception::FidProbe> {
    use mdm_prime_core::data::image::Images;
    use mdm_prime_core::metrics::inception::{HOW_TO_GET, InceptionWeights};
    let t = &cfg.train;
    let path = match (
        t.fid_inception.as_str(),
        std::env::var_os("MDM_PRIME_FID_WEIGHTS"),
    ) {
        ("", Some(p)) if !p.is_empty() => std::path::PathBuf::from(p),
        ("", _) => anyhow::bail!(
            "config key `train.fid_every`: training-time FID needs the Inception-v3 weights; set \
             train.fid_inception = \"…/default_1.pt\" or MDM_PRIME_FID_WEIGHTS ({HOW_TO_GET})"
        ),
        (p, _) => std::path::PathBuf::from(p),
    };
    let shape = data
        .image
        .context("config key `train.fid_every`: FID needs image data")?;
    let n = t.fid_samples.min(data.n_val());
    let reference = Images::from_tokens(shape, (0..n).map(|i| data.val_block(i)))?;
    let net = mdm_prime::inception::Inception::new(&InceptionWeights::load(&path)?, device);
    eprintln!(
        "FID every {} steps: {} EMA samples against {n} validation images ({})",
        t.fid_every,
        t.fid_samples,
        path.display()
    );
    Ok(mdm_prime::inception::FidProbe::new(
        net,
        &reference,
        t.fid_samples,
        t.fid_every,
        cfg.seed,
    )?)
}
