//! What `train`, `eval` and `sample` share: the built-in preset, loading a run's config and data,
//! progress bars.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use mdm_prime::checkpoint::{RunDir, load_module};
use mdm_prime::model::{Denoiser, Network};
use mdm_prime::subtoken::PrimeTables;
use mdm_prime_core::Tokenizer;
use mdm_prime_core::config::DataKind;
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::data::image::{ImageSource, load_image_dataset};
use mdm_prime_core::data::{CorpusSource, Dataset, load_dataset};

/// configs/cpu.toml, compiled in so that `mdm-prime train` works from any directory.
pub const CPU_PRESET: &str = include_str!("../../../../configs/cpu.toml");

/// Loads the run's kind of data from `source`: a corpus (tokenised, or read from the cache, and
/// wrapped into blocks) or an image set (each image one block of H·W·C tokens).
pub fn load_data(cfg: &RunConfig, source: &str) -> anyhow::Result<Dataset> {
    match cfg.data.kind {
        DataKind::Text => {
            let tokenizer = Tokenizer::new(cfg.data.tokenizer)?;
            let src = CorpusSource::parse(source)?;
            let cache = (!cfg.data.cache_dir.is_empty()).then(|| Path::new(&cfg.data.cache_dir));
            let d = &cfg.data;
            Ok(
                load_dataset(&src, &tokenizer, d.seq_len, d.val_fraction, cache)
                    .with_context(|| format!("loading corpus {}", src.describe()))?,
            )
        }
        DataKind::Image => {
            let src = ImageSource::parse(source)?;
            let d = &cfg.data;
            Ok(
                load_image_dataset(&src, d.val_fraction, d.max_train, d.max_val)
                    .with_context(|| format!("loading images {}", src.describe()))?,
            )
        }
    }
}

/// `data`'s images are the shape the run was trained on (an error naming both otherwise).
pub fn ensure_same_images(cfg: &RunConfig, data: &Dataset) -> anyhow::Result<()> {
    anyhow::ensure!(
        data.image == cfg.data.image,
        "{}: its images are {:?} but the run was trained on {:?}",
        data.source,
        data.image,
        cfg.data.image
    );
    Ok(())
}

/// The sampler's defaults for a run: the model's distribution (temperature 1, no nucleus), f64
/// noise, the run's carry-over, per-sequence caching.
pub fn sample_settings(
    cfg: &RunConfig,
    steps: usize,
    seed: u64,
    batch_size: usize,
) -> mdm_prime::sampler::SampleSettings {
    mdm_prime::sampler::SampleSettings {
        steps,
        seq_len: cfg.data.seq_len,
        temperature: 1.0,
        top_p: 1.0,
        seed,
        precision: mdm_prime_core::sampling::NoisePrecision::F64,
        carry_over: cfg.prime.carry_over,
        cache: mdm_prime::sampler::CacheMode::Sequence,
        batch_size,
    }
}

/// Reads a run directory's resolved config, with `overrides` restricted to `allowed` sections.
pub fn run_config(
    run: &RunDir,
    overrides: &[String],
    allowed: &[&str],
) -> anyhow::Result<RunConfig> {
    for o in overrides {
        let section = o.split(['.', '=']).next().unwrap_or("");
        anyhow::ensure!(
            allowed.contains(&section),
            "--set {o}: only {} keys can change for a trained run (the rest would not match its weights)",
            allowed.join(", ")
        );
    }
    anyhow::ensure!(
        run.config().exists(),
        "{} is not a run directory (no config.toml); train one with `mdm-prime train`",
        run.root.display()
    );
    Ok(RunConfig::load(&run.config(), overrides)?)
}

/// The run's network with its EMA weights (what `eval`, `sample` and `impute` use), without
/// autodiff, and the digit tables of its codec.
pub fn load_ema(
    cfg: &RunConfig,
    run: &RunDir,
    device: &burn::tensor::Device,
) -> anyhow::Result<(Network, PrimeTables)> {
    use burn::module::Module;
    let codec = cfg.codec()?;
    cfg.check_model_memory()?;
    let model = load_module(Network::init(cfg, &codec, device)?, &run.ema())
        .with_context(|| format!("loading the EMA weights of {}", run.root.display()))?
        .valid();
    Ok((model, PrimeTables::new(&codec, device)))
}

/// A progress bar on stderr.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}
