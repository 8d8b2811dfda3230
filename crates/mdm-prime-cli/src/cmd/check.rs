//! `mdm-prime check-device`: does a device compute what the CPU computes?
//!
//! On a small fixed configuration (bytes, ℓ = 2, a 2-layer D = 64 DiT, L = 64, batch 8, no
//! dropout, the embedded corpus), with every random draw made on the host (examples, times,
//! masks, sampling noise), so the CPU and the device see the same inputs:
//! - the first training steps' losses on the device against the CPU (relative difference);
//! - data-parallel: two replicas on the device (each half of every batch) against one;
//! - bf16: the same steps with `[train] precision = "bf16"` on the device against the CPU's f32;
//! - sampling: the CPU run's EMA weights copied to the device, 4 sequences with one seed, and
//!   the fraction of sampled ids that agree.
//!
//! One JSON object on stdout; the exit status is non-zero when a check fails. With
//! `--device cpu` it checks the check (every number must agree exactly): what CI and a machine
//! without a GPU run (`scripts/gpu-check.sh --device cpu`).

use anyhow::bail;
use burn::module::Module;
use burn::tensor::Device;
use mdm_prime::checkpoint::RunDir;
use mdm_prime::sampler::{Template, sample};
use mdm_prime::subtoken::PrimeTables;
use mdm_prime::train::Trainer;
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::data::Dataset;
use serde_json::json;

use super::run::{load_data, sample_settings};
use crate::args::CheckDeviceArgs;

const CONFIG: &[&str] = &[
    "data.tokenizer=\"bytes\"",
    "data.seq_len=64",
    "data.cache_dir=\"\"",
    "prime.ell=2",
    "model.d_model=64",
    "model.n_layers=2",
    "model.n_heads=4",
    "model.cond_dim=32",
    "model.dropout=0",
    "train.batch_size=8",
    "train.lr=1e-3",
    "train.warmup_steps=0",
    "seed=3",
];

/// Losses of `steps` training steps on `devices` (one replica each), and the trainer.
fn train(
    cfg: &RunConfig,
    data: &Dataset,
    devices: &[Device],
    steps: usize,
    tag: &str,
) -> anyhow::Result<(Vec<f64>, Trainer)> {
    let dir = std::env::temp_dir().join(format!("mdm-prime-check-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut trainer = Trainer::open_parallel(cfg, RunDir::new(&dir), false, devices)?;
    let losses = (0..steps)
        .map(|_| trainer.step(data).map(|(loss, _, _)| loss))
        .collect::<Result<Vec<_>, _>>()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((losses, trainer))
}

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1e-12))
        .fold(0.0, f64::max)
}

pub fn run(args: CheckDeviceArgs) -> anyhow::Result<()> {
    let spec = mdm_prime::device::parse(&args.device)?;
    let device = mdm_prime::device::open_one(&spec, "check-device")?;
    if args.steps == 0 {
        bail!("--steps must be ≥ 1");
    }
    let overrides: Vec<String> = CONFIG.iter().map(|s| s.to_string()).collect();
    let cfg = RunConfig::from_toml_str("", "check-device", &overrides)?;
    let data = load_data(&cfg, "moby-dick")?;
    let cpu = mdm_prime::device::cpu();

    eprintln!("training {} steps on the CPU and on {spec}", args.steps);
    let (cpu_losses, cpu_trainer) =
        train(&cfg, &data, std::slice::from_ref(&cpu), args.steps, "cpu")?;
    let (dev_losses, _) = train(
        &cfg,
        &data,
        std::slice::from_ref(&device),
        args.steps,
        "device",
    )?;
    let (dp_losses, _) = train(
        &cfg,
        &data,
        &[device.clone(), device.clone()],
        args.steps,
        "parallel",
    )?;
    let mut bf16_cfg = cfg.clone();
    bf16_cfg.train.precision = mdm_prime_core::config::Precision::Bf16;
    let (bf16_losses, _) = train(
        &bf16_cfg,
        &data,
        std::slice::from_ref(&device),
        args.steps,
        "bf16",
    )?;
    let train_diff = max_rel_diff(&cpu_losses, &dev_losses);
    let dp_diff = max_rel_diff(&dev_losses, &dp_losses);
    let bf16_diff = max_rel_diff(&cpu_losses, &bf16_losses);

    eprintln!("sampling 4 sequences on the CPU and on {spec}");
    let codec = cfg.codec()?;
    let settings = sample_settings(&cfg, cfg.data.seq_len, 11, 4);
    let free = Template::free(cfg.data.seq_len, cfg.prime.ell);
    let ema = cpu_trainer.ema.clone().valid();
    let mut ids = Vec::new();
    for d in [&cpu, &device] {
        let model = ema.clone().to_device(d);
        let tables = PrimeTables::new(&codec, d);
        let (samples, _) = sample(
            &model,
            &tables,
            cfg.solver(),
            &settings,
            &free,
            4,
            0,
            d,
            &mut |_, _| {},
        )?;
        ids.push(
            samples
                .into_iter()
                .flat_map(|s| s.tokens)
                .collect::<Vec<u32>>(),
        );
    }
    let same = ids[0].iter().zip(&ids[1]).filter(|(a, b)| a == b).count();
    let same_fraction = same as f64 / ids[0].len() as f64;

    let exact = spec.accelerator == mdm_prime_core::device::Accelerator::Cpu;
    let pass_train = if exact {
        train_diff == 0.0
    } else {
        train_diff <= args.tolerance
    };
    let pass_dp = dp_diff <= args.tolerance;
    let pass_bf16 = bf16_diff <= args.bf16_tolerance;
    let pass = pass_train && pass_dp && pass_bf16;
    let report = json!({
        "device": spec.to_string(),
        "config": CONFIG,
        "train": {
            "steps": args.steps,
            "loss_cpu": cpu_losses,
            "loss_device": dev_losses,
            "max_rel_diff": train_diff,
            "tolerance": if exact { 0.0 } else { args.tolerance },
            "pass": pass_train,
        },
        "data_parallel": {
            "replicas": 2,
            "loss": dp_losses,
            "max_rel_diff_vs_one": dp_diff,
            "tolerance": args.tolerance,
            "pass": pass_dp,
        },
        "bf16": {
            "loss": bf16_losses,
            "max_rel_diff_vs_cpu_f32": bf16_diff,
            "tolerance": args.bf16_tolerance,
            "pass": pass_bf16,
        },
        "sampling": {
            "sequences": 4,
            "seed": 11,
            "ids_equal_fraction": same_fraction,
        },
        "pass": pass,
    });
    println!("{report}");
    if !pass {
        bail!("{spec} does not compute what the CPU computes (see the JSON above)");
    }
    Ok(())
}
