//! `mdm-prime import`: an official checkpoint → a run directory (docs/import.md).

use anyhow::Context;
use mdm_prime_core::import::{ImportOptions, Progress, read_official};

use crate::args::ImportArgs;

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let opts = ImportOptions {
        unet_groups: args.unet_groups,
        unet_head_channels: args.unet_head_channels,
        ..ImportOptions::default()
    };
    let imported = read_official(&args.checkpoint, &opts)
        .with_context(|| format!("importing {}", args.checkpoint.display()))?;
    let device = burn::tensor::Device::default();
    mdm_prime::import::write_run(&imported, &args.checkpoint, &args.to, &device)
        .with_context(|| format!("writing the run directory {}", args.to.display()))?;
    let c = &imported.config;
    let params: usize = imported.model.iter().map(|t| t.values.len()).sum();
    let progress = match imported.progress {
        Progress::Steps(n) => format!("{n} steps"),
        Progress::Epochs(n) => format!("{n} epochs"),
    };
    eprintln!(
        "imported {} ({} network, ℓ = {}, carry-over {}, {params} parameters, {} tensors, EMA {}, \
         trained {progress}) into {}",
        args.checkpoint.display(),
        c.model.kind(),
        c.prime.ell,
        c.prime.carry_over,
        imported.model.len(),
        if imported.ema.is_some() {
            "yes"
        } else {
            "no (copied from the weights)"
        },
        args.to.display()
    );
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    eprintln!(
        "next: mdm-prime eval --run {} --data <corpus or images>",
        args.to.display()
    );
    Ok(())
}
