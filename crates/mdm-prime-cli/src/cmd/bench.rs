//! `mdm-prime bench`: fixed, named workloads timed after warm-up (median, min, max), with peak
//! RSS and achieved GFLOP/s from an analytic FLOP count next to this machine's measured f32 GEMM
//! peak (model FLOP utilisation). A benchmark, not a test: nothing here asserts a time.

use std::time::Instant;

use anyhow::bail;
use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use mdm_prime::checkpoint::RunDir;
use mdm_prime::eval::mean_stderr;
use mdm_prime::sampler::{CacheMode, Template, sample};
use mdm_prime::train::Trainer;
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::data::Dataset;
use mdm_prime_core::flops::forward_flops;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use crate::args::BenchArgs;

/// configs/fmnist-cpu.toml, the image workload's network and sampler.
const FMNIST_PRESET: &str = include_str!("../../../../configs/fmnist-cpu.toml");

/// The lengths of the `cpu-bytes-L<L>` sweep (issue #10 point 6).
const SWEEP_LENGTHS: [usize; 4] = [128, 512, 1024, 2048];
/// Tokens per step in the sweep: batch = `SWEEP_TOKENS / L`.
const SWEEP_TOKENS: usize = 2048;

/// The named configurations: `cpu-gpt2` / `cpu-bytes` (the text workloads: ℓ = 4, D = 256,
/// 4 layers, 4 heads, L = 128, batch 16, with the GPT-2 or the byte vocabulary), `cpu-bytes-L<L>`
/// for L in 128, 512, 1024, 2048 (the byte config with no dropout and batch 2048 / L, so every
/// step has 2048 tokens: how attention scales with L) and `cpu-fmnist` (the image quick start's
/// U-Net on 28 × 28 × 1 images, ℓ = 2, batch 32, T = 196).
fn bench_config(name: &str) -> anyhow::Result<RunConfig> {
    let sweep = name
        .strip_prefix("cpu-bytes-L")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| SWEEP_LENGTHS.contains(l));
    let (seq_len, batch, dropout) = match sweep {
        Some(l) => (l, SWEEP_TOKENS / l, "0.0"),
        None => (128, 16, "0.1"),
    };
    let tokenizer = match name {
        "cpu-gpt2" => "gpt2",
        _ if name == "cpu-bytes" || sweep.is_some() => "bytes",
        "cpu-fmnist" => {
            let o = [
                "data.image={height=28,width=28,channels=1}".to_string(),
                "data.seq_len=784".into(),
                "name=\"bench\"".into(),
            ];
            return Ok(RunConfig::from_toml_str(
                FMNIST_PRESET,
                "configs/fmnist-cpu.toml",
                &o,
            )?);
        }
        other => bail!(
            "unknown bench config {other}: use cpu-gpt2, cpu-bytes, cpu-bytes-L<L> (L in \
             {SWEEP_LENGTHS:?}) or cpu-fmnist"
        ),
    };
    let o: Vec<String> = [
        format!("data.tokenizer={tokenizer}"),
        "prime.ell=4".into(),
        "model.d_model=256".into(),
        "model.n_layers=4".into(),
        "model.n_heads=4".into(),
        "model.cond_dim=128".into(),
        format!("data.seq_len={seq_len}"),
        format!("train.batch_size={batch}"),
        format!("model.dropout={dropout}"),
        "train.lr=3e-4".into(),
        "train.warmup_steps=10".into(),
        "train.ema_decay=0.9999".into(),
        "name=\"bench\"".into(),
    ]
    .to_vec();
    Ok(RunConfig::from_toml_str("", name, &o)?)
}

/// The expected fraction of tokens with at least one masked sub-token in a training batch,
/// `E_t[1 − (1 − m(t))^ℓ]` over the training times (where the head runs; 1 − 1/(ℓ+1) for the
/// log-linear schedule).
fn masked_token_fraction(cfg: &RunConfig) -> f64 {
    let ell = cfg.prime.ell as i32;
    mdm_prime_core::schedule::gauss_legendre_01(16)
        .iter()
        .map(|&(t, w)| w * (1.0 - (1.0 - cfg.schedule.mask_prob(t)).powi(ell)))
        .sum()
}

/// Median / min / max in milliseconds.
fn stats(ms: &mut [f64]) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let mid = ms.len() / 2;
    let median = if ms.len() % 2 == 1 {
        ms[mid]
    } else {
        0.5 * (ms[mid - 1] + ms[mid])
    };
    (median, ms[0], ms[ms.len() - 1])
}

/// The f32 GEMM throughput of the backend on this machine (GFLOP/s, best of two shapes).
fn gemm_peak(device: &Device) -> f64 {
    let mut best: f64 = 0.0;
    for (m, k, n) in [(2048usize, 256usize, 1024usize), (1024, 1024, 1024)] {
        let a = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), device);
        let b = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), device);
        let _ = a.clone().matmul(b.clone()).into_data();
        let mut ms: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                let _ = a.clone().matmul(b.clone()).into_data();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let (med, _, _) = stats(&mut ms);
        best = best.max(2.0 * (m * k * n) as f64 / (med * 1e-3) / 1e9);
    }
    best
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn synthetic_data(cfg: &RunConfig, vocab: u32) -> Dataset {
    let mut rng = StdRng::seed_from_u64(17);
    let l = cfg.data.seq_len;
    let mut block = |n: usize| {
        (0..n * l)
            .map(|_| rng.random_range(0..vocab))
            .collect::<Vec<u32>>()
    };
    let train = block(256);
    let val = block(16);
    Dataset {
        seq_len: l,
        vocab_size: vocab,
        n_tokens: train.len() + val.len(),
        train,
        val,
        n_documents: 1,
        source: "synthetic uniform tokens".into(),
        from_cache: false,
        image: cfg.data.image,
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.repeats == 0 {
        bail!("--repeats must be ≥ 1");
    }
    // One time per repetition is kept.
    mdm_prime_core::limits::check_fits(
        &format!("--warmup {} + --repeats {}", args.warmup, args.repeats),
        args.warmup as u128 + args.repeats as u128,
        8,
    )?;
    let cache = match args.cache.as_str() {
        "sequence" => CacheMode::Sequence,
        "batch" => CacheMode::Batch,
        "off" => CacheMode::Off,
        other => bail!("--cache {other}: use sequence, batch or off"),
    };
    let device = mdm_prime::device::parse_one(&args.device, "bench")?;
    let peak = gemm_peak(&device);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for name in &args.config {
        let cfg = bench_config(name)?;
        let codec = cfg.codec()?;
        let vocab = codec.vocab_size();
        let data = synthetic_data(&cfg, vocab);
        let (b, l) = (cfg.train.batch_size, cfg.data.seq_len);
        // FLOPs of the work done (`gflops`, `mfu`) and of the model as the reference runs it,
        // with the head on every position of every evaluation (`model_gflop`).
        let f = forward_flops(&cfg.model, l, vocab, cfg.data.image);
        let (body, head) = (f.body, f.head);
        for workload in &args.workload {
            let dir = std::env::temp_dir().join(format!("mdm-prime-bench-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut trainer = Trainer::open(&cfg, RunDir::new(&dir), false, &device)?;
            let (mut ms, flops, extra) = match workload.as_str() {
                "train-step" => {
                    for _ in 0..args.warmup {
                        trainer.step(&data)?;
                    }
                    let ms: Vec<f64> = (0..args.repeats)
                        .map(|_| {
                            let t = Instant::now();
                            trainer.step(&data).map(|_| t.elapsed().as_secs_f64() * 1e3)
                        })
                        .collect::<Result<_, _>>()?;
                    let mut extra = json!({});
                    if args.profile {
                        mdm_prime::profile::enable();
                        let t = Instant::now();
                        for _ in 0..args.repeats {
                            trainer.step(&data)?;
                        }
                        let total = t.elapsed().as_secs_f64();
                        let phases = mdm_prime::profile::take();
                        let covered: f64 = phases.values().sum();
                        let mut per_step: serde_json::Map<String, serde_json::Value> = phases
                            .iter()
                            .map(|(k, v)| (k.to_string(), json!(v * 1e3 / args.repeats as f64)))
                            .collect();
                        per_step.insert(
                            "other".into(),
                            json!((total - covered) * 1e3 / args.repeats as f64),
                        );
                        extra = json!({"phases_ms": per_step});
                    }
                    // Forward + backward ≈ 3 × forward; the head runs on masked positions.
                    let done =
                        3.0 * b as f64 * (body + masked_token_fraction(&cfg) * l as f64 * head);
                    let model = 3.0 * b as f64 * (body + l as f64 * head);
                    if let Some(o) = extra.as_object_mut() {
                        o.insert("model_gflop".into(), json!(model / 1e9));
                    }
                    (ms, done, extra)
                }
                "sample" => {
                    let model = trainer.ema.clone().valid();
                    let steps = cfg.sample_steps();
                    let mut settings = super::run::sample_settings(&cfg, steps, 1, b);
                    settings.cache = cache;
                    let free = Template::free(l, codec.ell());
                    let mut ms = Vec::new();
                    let (mut nfe, mut net, mut other, mut head_s) = (Vec::new(), 0.0, 0.0, 0.0);
                    let mut head_rows = 0usize;
                    for rep in 0..args.warmup + args.repeats {
                        let t = Instant::now();
                        let (samples, timing) = sample(
                            &model,
                            &trainer.tables,
                            cfg.solver(),
                            &settings,
                            &free,
                            b,
                            0,
                            &device,
                            &mut |_, _| {},
                        )?;
                        if rep >= args.warmup {
                            ms.push(t.elapsed().as_secs_f64() * 1e3);
                            nfe.extend(samples.iter().map(|s| s.nfe as f64));
                            net += timing.network_s;
                            other += timing.other_s;
                            head_rows += timing.head_rows;
                            head_s += timing.head_s;
                        }
                    }
                    let (nfe_mean, _) = mean_stderr(&nfe);
                    let reps = args.repeats as f64;
                    let done = body * nfe_mean * b as f64 + head * head_rows as f64 / reps;
                    let model = (body + l as f64 * head) * nfe_mean * b as f64;
                    (
                        ms,
                        done,
                        json!({"steps": steps, "nfe_mean": nfe_mean, "cache": args.cache,
                        "head_rows_per_run": head_rows as f64 / reps,
                        "model_gflop": model / 1e9,
                        "outside_network_fraction": other / (net + other),
                        "phases_ms": {"body": (net - head_s) * 1e3 / reps,
                            "head+filter+log_softmax": head_s * 1e3 / reps,
                            "sampler (reveals, draws)": other * 1e3 / reps}}),
                    )
                }
                other => bail!("unknown workload {other}: use train-step or sample"),
            };
            let _ = std::fs::remove_dir_all(&dir);
            let (median, min, max) = stats(&mut ms);
            let gflops = flops / (median * 1e-3) / 1e9;
            let mut v = json!({
                "impl": "rust-burn-flex", "config": name, "workload": workload,
                "warmup": args.warmup, "repeats": args.repeats, "threads": threads,
                "median_ms": median, "min_ms": min, "max_ms": max,
                "tokens_per_s": (b * l) as f64 / (median * 1e-3),
                "peak_rss_mib": peak_rss_mib(),
                "gflops": gflops, "gemm_peak_gflops": peak, "mfu": gflops / peak,
            });
            if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
                obj.extend(more.clone());
            }
            if args.json {
                println!("{v}");
            } else {
                println!(
                    "{name:>10} {workload:>10}: median {median:8.1} ms (min {min:.1}, max {max:.1}), {:.0} tokens/s, {gflops:.1} GFLOP/s = {:.0}% of GEMM peak {peak:.1}, peak RSS {:.0} MiB{}",
                    (b * l) as f64 / (median * 1e-3),
                    100.0 * gflops / peak,
                    peak_rss_mib(),
                    extra
                        .get("nfe_mean")
                        .map_or(String::new(), |n| format!(", NFE {n:.1}"))
                );
                if let Some(phases) = extra.get("phases_ms").and_then(|p| p.as_object()) {
                    let per = if workload == "sample" { "run" } else { "step" };
                    for (phase, ms) in phases {
                        println!(
                            "{phase:>30}: {:8.1} ms/{per}",
                            ms.as_f64().unwrap_or(f64::NAN)
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
