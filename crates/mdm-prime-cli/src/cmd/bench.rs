//! `mdm-prime bench`: fixed, named workloads timed after warm-up (median, min, max), with peak
//! RSS and achieved GFLOP/s from an analytic FLOP count next to this device's measured GEMM peak
//! (model FLOP utilisation) in the precision of the workload's matmuls. A benchmark, not a test:
//! nothing here asserts a time.

use std::time::Instant;

use anyhow::bail;
use burn::module::Module;
use burn::tensor::{Device, Distribution, FloatDType, Tensor};
use mdm_prime::checkpoint::RunDir;
use mdm_prime::eval::mean_stderr;
use mdm_prime::sampler::{CacheMode, Template, sample};
use mdm_prime::train::Trainer;
use mdm_prime_core::Objective;
use mdm_prime_core::config::{Precision, RunConfig};
use mdm_prime_core::data::Dataset;
use mdm_prime_core::device::Accelerator;
use mdm_prime_core::flops::forward_flops;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use crate::args::BenchArgs;

/// configs/fmnist-cpu.toml, the image workload's network and sampler.
const FMNIST_PRESET: &str = include_str!("../../../../configs/fmnist-cpu.toml");

/// configs/owt-small.toml, the model of the `owt-small` and `owt-tiny` workloads.
const OWT_PRESET: &str = include_str!("../../../../configs/owt-small.toml");

/// The lengths of the `cpu-bytes-L<L>` sweep (issue #10 point 6).
const SWEEP_LENGTHS: [usize; 4] = [128, 512, 1024, 2048];
/// Tokens per step in the sweep: batch = `SWEEP_TOKENS / L`.
const SWEEP_TOKENS: usize = 2048;

/// The named configurations: `cpu-gpt2` / `cpu-bytes` (the text workloads: ℓ = 4, D = 256,
/// 4 layers, 4 heads, L = 128, batch 16, with the GPT-2 or the byte vocabulary), `cpu-bytes-L<L>`
/// for L in 128, 512, 1024, 2048 (the byte config with no dropout and batch 2048 / L, so every
/// step has 2048 tokens: how attention scales with L) and `cpu-fmnist` (the image quick start's
/// U-Net on 28 × 28 × 1 images, ℓ = 2, batch 32, T = 196), `owt-small` / `owt-tiny` (the model
/// of configs/owt-small.toml, see [`owt_config`]).
fn bench_config(name: &str) -> anyhow::Result<RunConfig> {
    if let Some(cfg) = owt_config(name) {
        return cfg;
    }
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
             {SWEEP_LENGTHS:?}), cpu-fmnist, owt-small or owt-tiny"
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

/// `owt-small`: configs/owt-small.toml (GPT-2 vocabulary, ℓ = 4, carry-over, D 768, 12 layers,
/// 12 heads, L = 1024, its schedule and objective) with one micro-batch of 16 sequences a step
/// (`grad_accum` 1: the preset accumulates 32 of them per optimiser step; a timed step here is
/// one of them, forward, backward and an optimiser update). `owt-tiny`: the same vocabulary, ℓ
/// and L with D 128, 2 layers, 2 heads, batch 2 and T = 4 sampling steps, so the code path
/// runs on a CPU in about a minute (a smoke test, not a measurement). The preset's precision is
/// replaced by `--precision`, its device by `--device`.
fn owt_config(name: &str) -> Option<anyhow::Result<RunConfig>> {
    let size: &[&str] = match name {
        "owt-small" => &["train.batch_size=16"],
        "owt-tiny" => &[
            "model.d_model=128",
            "model.n_layers=2",
            "model.n_heads=2",
            "train.batch_size=2",
            "sample.steps=4",
        ],
        _ => return None,
    };
    let o: Vec<String> = ["name=\"bench\"", "train.grad_accum=1"]
        .iter()
        .chain(size)
        .map(|s| s.to_string())
        .collect();
    Some(RunConfig::from_toml_str(OWT_PRESET, "configs/owt-small.toml", &o).map_err(Into::into))
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

/// The GEMM throughput of the backend on `device` (GFLOP/s, best of the shapes), with f32
/// operands or, for bf16, operands cast to bfloat16 as `linear_bf16` (crates/mdm-prime,
/// model/block.rs) casts them (accumulated as the backend does). On a
/// CPU: the shapes of the small models, one product a timing. On a GPU, where such a product
/// takes microseconds and a launch or a sync would dominate: a 4096³ product and owt-small's
/// MLP product (16 × 1024 rows, 768 → 3072), 10 products a timing. Timed to `device.sync()`.
fn gemm_peak(device: &Device, precision: Precision, gpu: bool) -> anyhow::Result<f64> {
    let (shapes, per_timing): (&[(usize, usize, usize)], usize) = match gpu {
        false => (&[(2048, 256, 1024), (1024, 1024, 1024)], 1),
        true => (&[(4096, 4096, 4096), (16384, 768, 3072)], 10),
    };
    let mut best: f64 = 0.0;
    for &(m, k, n) in shapes {
        let operand = |rows, cols| {
            let x = Tensor::<2>::random([rows, cols], Distribution::Normal(0.0, 1.0), device);
            match precision {
                Precision::F32 => x,
                Precision::Bf16 => x.cast(FloatDType::BF16),
            }
        };
        let (a, b) = (operand(m, k), operand(k, n));
        let time_ms = || -> anyhow::Result<f64> {
            let t = Instant::now();
            // Held until the sync, so that no backend can skip a product nobody reads.
            let products: Vec<Tensor<2>> = (0..per_timing)
                .map(|_| a.clone().matmul(b.clone()))
                .collect();
            device.sync()?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(products);
            Ok(ms)
        };
        time_ms()?; // warm-up: allocation, kernel selection
        let mut ms = (0..7)
            .map(|_| time_ms())
            .collect::<anyhow::Result<Vec<f64>>>()?;
        let (med, _, _) = stats(&mut ms);
        best = best.max(2.0 * (m * k * n * per_timing) as f64 / (med * 1e-3) / 1e9);
    }
    Ok(best)
}

/// The GEMM peaks a workload is measured against: f32 always, bf16 when training in bf16.
struct Peaks {
    f32: f64,
    bf16: Option<f64>,
}

impl Peaks {
    fn measure(device: &Device, precision: Precision, gpu: bool) -> anyhow::Result<Self> {
        Ok(Peaks {
            f32: gemm_peak(device, Precision::F32, gpu)?,
            bf16: match precision {
                Precision::F32 => None,
                Precision::Bf16 => Some(gemm_peak(device, Precision::Bf16, gpu)?),
            },
        })
    }

    /// The peak of the precision a workload's matmuls run in: a bf16 training step in bf16;
    /// sampling in f32 whatever the training precision (it runs the EMA, which is f32).
    fn of(&self, workload: &str) -> (&'static str, f64) {
        match (workload, self.bf16) {
            ("train-step", Some(p)) => ("bf16", p),
            _ => ("f32", self.f32),
        }
    }
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
    let precision = match args.precision.as_str() {
        "f32" => Precision::F32,
        "bf16" => Precision::Bf16,
        other => bail!("--precision {other}: use f32 or bf16"),
    };
    let objective: Option<Objective> = match args.objective.as_deref() {
        None => None,
        Some(name) => Some(
            name.parse()
                .map_err(|e| anyhow::anyhow!("--objective: {e}"))?,
        ),
    };
    let spec = mdm_prime::device::parse(&args.device)?;
    let device = mdm_prime::device::open_one(&spec, "bench")?;
    let gpu = spec.accelerator != Accelerator::Cpu;
    let backend = if gpu { spec.accelerator.name() } else { "flex" };
    let peaks = Peaks::measure(&device, precision, gpu)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for name in &args.config {
        let mut cfg = bench_config(name)?;
        cfg.train.precision = precision;
        cfg.train.device = args.device.clone();
        if let Some(objective) = objective {
            cfg.train.objective = objective;
        }
        // Checked as any config is (bf16 is refused for the U-Net, the device must parse).
        cfg.validate()?;
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
            let (matmuls, peak) = peaks.of(workload);
            // One timed train-step is one optimiser step on `batch` sequences (`grad_accum` is
            // 1 in every bench config: for owt-small, one micro-batch of the preset's step).
            let mut v = json!({
                "impl": format!("rust-burn-{backend}"), "device": args.device,
                "config": name, "workload": workload,
                "precision": cfg.train.precision, "matmul_precision": matmuls,
                "objective": cfg.train.objective,
                "batch": b, "seq_len": l, "grad_accum": cfg.train.grad_accum,
                "warmup": args.warmup, "repeats": args.repeats, "threads": threads,
                "median_ms": median, "min_ms": min, "max_ms": max,
                "tokens_per_s": (b * l) as f64 / (median * 1e-3),
                "peak_rss_mib": peak_rss_mib(),
                "gflops": gflops, "gemm_peak_gflops": peaks.f32, "mfu": gflops / peak,
            });
            if let Some(obj) = v.as_object_mut() {
                if let Some(p) = peaks.bf16 {
                    obj.insert("gemm_peak_bf16_gflops".into(), json!(p));
                }
                if let Some(more) = extra.as_object() {
                    obj.extend(more.clone());
                }
            }
            if args.json {
                println!("{v}");
            } else {
                println!(
                    "{name:>10} {workload:>10}: median {median:8.1} ms (min {min:.1}, max {max:.1}), {:.0} tokens/s, {gflops:.1} GFLOP/s = {:.0}% of {matmuls} GEMM peak {peak:.1}, peak RSS {:.0} MiB{}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owt_small_is_the_preset_model_with_one_micro_batch_a_step() {
        let cfg = bench_config("owt-small").unwrap();
        let dit = cfg.model.dit().unwrap();
        let sizes = (
            dit.d_model,
            dit.n_layers,
            dit.n_heads,
            dit.cond_dim,
            dit.mlp_ratio,
        );
        assert_eq!(sizes, (768, 12, 12, 128, 4));
        assert_eq!(dit.dropout, 0.1);
        assert!(!dit.time_conditioning);
        let codec = cfg.codec().unwrap();
        // GPT-2: V = 50257, ℓ = 4, b = 15 (15⁴ = 50625 ≥ 50257 > 14⁴ = 38416).
        assert_eq!(
            (codec.vocab_size(), codec.ell(), codec.base()),
            (50257, 4, 15)
        );
        assert!(cfg.prime.carry_over);
        assert_eq!(cfg.data.seq_len, 1024);
        assert_eq!((cfg.train.batch_size, cfg.train.grad_accum), (16, 1));
        assert_eq!(cfg.sample_steps(), 1024);
        let preset = RunConfig::from_toml_str(OWT_PRESET, "owt-small.toml", &[]).unwrap();
        assert_eq!(cfg.model, preset.model);
        assert_eq!(cfg.schedule, preset.schedule);
        assert_eq!(cfg.train.objective, preset.train.objective);
    }

    #[test]
    fn owt_tiny_keeps_vocabulary_and_length() {
        let cfg = bench_config("owt-tiny").unwrap();
        let dit = cfg.model.dit().unwrap();
        assert_eq!((dit.d_model, dit.n_layers, dit.n_heads), (128, 2, 2));
        assert_eq!(cfg.codec().unwrap().vocab_size(), 50257);
        assert_eq!((cfg.data.seq_len, cfg.train.batch_size), (1024, 2));
        assert_eq!(cfg.sample_steps(), 4);
    }

    #[test]
    fn an_unknown_config_lists_the_owt_ones() {
        let e = bench_config("owt-medium").unwrap_err().to_string();
        assert!(e.contains("owt-small") && e.contains("owt-tiny"), "{e}");
    }
}
