//! `mdm-prime sample`: text from a trained run with the idle-step-aware ancestral sampler;
//! prompts, infilling templates and fixed sub-tokens; JSON lines with NFE and idle steps.

use std::io::Write;

use anyhow::{Context, bail};
use burn::tensor::Device;
use mdm_prime::checkpoint::{RunDir, write_atomic};
use mdm_prime::sampler::{CacheMode, SampleSettings, Template, sample};
use mdm_prime_core::sampling::NoisePrecision;
use mdm_prime_core::template::{parse_fix, parse_infill};
use mdm_prime_core::{Codec, Tokenizer};
use serde_json::json;

use mdm_prime_core::config::{DataKind, RunConfig};

use super::image;
use super::run::{bar, load_ema, run_config};
use crate::args::SampleArgs;

pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    let device = mdm_prime::device::parse_one(&args.device, "sampling")?;
    let run = RunDir::new(&args.run);
    let cfg = run_config(&run, &args.overrides, &["sample"])?;
    if cfg.data.kind == DataKind::Image {
        return sample_images(&args, &cfg, &run, &device);
    }
    let codec = cfg.codec()?;
    let tokenizer = Tokenizer::new(cfg.data.tokenizer)?;
    let precision = match args.noise.as_str() {
        "f64" => NoisePrecision::F64,
        "f32" => NoisePrecision::F32,
        other => bail!("--noise {other}: use f64 or f32"),
    };
    let cache = match args.cache.as_str() {
        "sequence" => CacheMode::Sequence,
        "batch" => CacheMode::Batch,
        "off" => CacheMode::Off,
        other => bail!("--cache {other}: use sequence, batch or off"),
    };
    let valid = args.temperature > 0.0 && args.top_p > 0.0 && args.top_p <= 1.0;
    if !valid {
        bail!("--temperature must be > 0 and --top-p in (0, 1]");
    }
    if args.num == 0 || args.batch_size == 0 || args.steps == Some(0) {
        bail!("--num, --batch-size and --steps must be ≥ 1");
    }
    let (template, len) = build_template(&args, &codec, &tokenizer, cfg.data.seq_len)?;
    let configured = (cfg.sample.steps > 0).then_some(cfg.sample.steps);
    let steps = args.steps.or(configured).unwrap_or(len);

    let (model, tables) = load_ema(&cfg, &run, &device)?;
    let settings = SampleSettings {
        steps,
        seq_len: len,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        precision,
        carry_over: cfg.prime.carry_over,
        cache,
        batch_size: args.batch_size,
    };
    let pb = bar(
        steps as u64,
        "sampling step {pos}/{len} [{bar:30}] ETA {eta}",
    );
    let t0 = std::time::Instant::now();
    let (samples, _) = sample(
        &model,
        &tables,
        cfg.solver(),
        &settings,
        &template,
        args.num,
        tokenizer.eos(),
        &device,
        &mut |k, _| pb.set_position(k as u64),
    )?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();

    let out_path = args.out.clone().unwrap_or_else(|| {
        run.root
            .join("samples")
            .join(format!("samples-seed{}.jsonl", args.seed))
    });
    if let Some(parent) = out_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut lines = String::new();
    let mut stdout = std::io::stdout().lock();
    for (k, s) in samples.iter().enumerate() {
        let text = render(&tokenizer, &s.tokens, !args.no_truncate)?;
        let line = json!({"index": k, "text": text, "tokens": s.tokens, "nfe": s.nfe,
            "idle_steps": s.idle_steps, "steps": s.steps, "invalid_codes": s.invalid_codes, "seed": args.seed,
            "tokenizer": tokenizer.kind(), "truncated": !args.no_truncate});
        lines.push_str(&format!("{line}\n"));
        if args.json {
            writeln!(stdout, "{line}")?;
        } else {
            writeln!(
                stdout,
                "=== sample {k}: NFE {} , idle steps {}/{} ===",
                s.nfe, s.idle_steps, s.steps
            )?;
            writeln!(stdout, "{text}")?;
        }
    }
    write_atomic(&out_path, lines.as_bytes())?;
    let nfe: usize = samples.iter().map(|s| s.nfe).sum();
    eprintln!(
        "{} samples × {len} tokens in {secs:.1} s ({steps} steps, mean NFE {:.1}); written to {}",
        samples.len(),
        nfe as f64 / samples.len() as f64,
        out_path.display()
    );
    Ok(())
}

/// An image run: `--num` samples as a PNG grid beside the JSON lines.
fn sample_images(
    args: &SampleArgs,
    cfg: &RunConfig,
    run: &RunDir,
    device: &Device,
) -> anyhow::Result<()> {
    if args.prompt.is_some() || args.infill.is_some() || args.len.is_some() {
        bail!(
            "--prompt, --infill and --len are for text runs; {} is an image run (use \
             `mdm-prime impute` to complete partial images)",
            run.root.display()
        );
    }
    if args.num == 0 || args.batch_size == 0 || args.steps == Some(0) {
        bail!("--num, --batch-size and --steps must be ≥ 1");
    }
    let (model, tables) = load_ema(cfg, run, device)?;
    let steps = args.steps.unwrap_or(cfg.sample_steps());
    let mut settings = super::run::sample_settings(cfg, steps, args.seed, args.batch_size);
    settings.temperature = args.temperature;
    settings.top_p = args.top_p;
    let jsonl = args.out.clone().unwrap_or_else(|| {
        run.root
            .join("samples")
            .join(format!("samples-seed{}.jsonl", args.seed))
    });
    let png = jsonl.with_extension("png");
    let pb = bar(
        steps as u64,
        "sampling step {pos}/{len} [{bar:30}] ETA {eta}",
    );
    let t0 = std::time::Instant::now();
    let samples = image::sample_grid(
        &model,
        &tables,
        cfg,
        &settings,
        args.num,
        &png,
        &jsonl,
        device,
        &mut |k, _| pb.set_position(k as u64),
    )?;
    pb.finish_and_clear();
    if let Some(dir) = &args.png_dir {
        let shape = image::shape_of(cfg, "sample")?;
        image::write_pngs(&samples, shape, dir, &format!("s{}-", args.seed))?;
        eprintln!("{} PNG files in {}", samples.len(), dir.display());
    }
    let nfe = samples.iter().map(|s| s.nfe).sum::<usize>() as f64 / samples.len() as f64;
    let idle = samples.iter().map(|s| s.idle_steps).sum::<usize>() as f64 / samples.len() as f64;
    eprintln!(
        "{} images in {:.1} s ({steps} steps, mean NFE {nfe:.1}, mean idle steps {idle:.1}); \
         raw samples: {}",
        samples.len(),
        t0.elapsed().as_secs_f64(),
        jsonl.display()
    );
    println!("{}", png.display());
    Ok(())
}

/// Text of a sample: without the leading BOS, cut at the first EOS (unless `truncate` is off).
fn render(tok: &Tokenizer, ids: &[u32], truncate: bool) -> anyhow::Result<String> {
    let body = if ids.first() == Some(&tok.eos()) {
        &ids[1..]
    } else {
        ids
    };
    let body = match body.iter().position(|&x| x == tok.eos()) {
        Some(end) if truncate => &body[..end],
        _ => body,
    };
    Ok(tok.decode_lossy(body)?)
}

/// Fixed sub-tokens from --prompt / --infill / --fix, and the sequence length.
fn build_template(
    args: &SampleArgs,
    codec: &Codec,
    tok: &Tokenizer,
    seq_len: usize,
) -> anyhow::Result<(Template, usize)> {
    let eos = tok.eos();
    let mut fixed: Vec<Option<u32>> = Vec::new(); // per token
    if let Some(prompt) = &args.prompt {
        fixed.push(Some(eos));
        fixed.extend(tok.encode(prompt).into_iter().map(Some));
    }
    if let Some(infill) = &args.infill {
        fixed.push(Some(eos));
        fixed.extend(parse_infill(infill, tok)?);
        fixed.push(Some(eos));
    }
    let len = args.len.unwrap_or(if args.infill.is_some() {
        fixed.len()
    } else {
        seq_len
    });
    if fixed.len() > len {
        bail!(
            "the prompt/template is {} tokens (with BOS/EOS) but --len is {len}; raise --len",
            fixed.len()
        );
    }
    mdm_prime_core::limits::check_fits(
        "--len (tokens × ell)",
        len as u128 * codec.ell() as u128,
        8,
    )?;
    let mut template = Template::free(len, codec.ell());
    for (i, f) in fixed.iter().enumerate() {
        if let Some(x) = f {
            template.fix_tokens(codec, i, &[*x])?;
        }
    }
    for spec in &args.fix {
        let (i, j, v) = parse_fix(spec)?;
        template.fix_digit(codec, i, j, v)?;
    }
    Ok((template, len))
}
