//! `mdm-prime sweep-report`: the ℓ sweep's tables and plots (`mdm_prime_core::sweep`).

use anyhow::Context;
use mdm_prime_core::sweep;

use crate::args::SweepReportArgs;

pub fn run(args: SweepReportArgs) -> anyhow::Result<()> {
    let by_tok = sweep::load(&args.dir)?;
    let out = args.out.unwrap_or_else(|| args.dir.join("results.md"));
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut plots = Vec::new();
    for (tok, runs) in &by_tok {
        plots.extend(sweep::plots(tok, runs, dir)?);
    }
    let md = sweep::markdown(&by_tok, &plots);
    mdm_prime::checkpoint::write_atomic(&out, md.as_bytes())?;
    let runs: usize = by_tok.values().map(Vec::len).sum();
    eprintln!("{runs} runs; {} plots", plots.len());
    println!("{}", out.display());
    Ok(())
}
