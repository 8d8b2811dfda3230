//! `mdm-prime isr`: idle-step ratios by simulating the reveal process (it does not depend on the
//! model, design §10.1), next to the closed form and the expected NFE.

use anyhow::bail;
use mdm_prime::eval::mean_stderr;
use mdm_prime_core::Schedule;
use mdm_prime_core::limits::check_fits;
use mdm_prime_core::rng::step_seed;
use mdm_prime_core::sampling::{isr_closed_form, nfe_expected, simulate_idle_steps};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use crate::args::IsrArgs;

pub fn run(args: IsrArgs) -> anyhow::Result<()> {
    let schedule = match args.schedule.as_str() {
        "linear" => Schedule::LINEAR,
        "loglinear" => Schedule::default(),
        other => bail!("unknown --schedule {other}: use linear or loglinear"),
    };
    if args.ell.contains(&0) || args.len == 0 || args.runs == 0 || args.steps.contains(&0) {
        bail!("--ell, --len, --steps and --runs must be ≥ 1");
    }
    // Sizes before anything is allocated: the time grid holds T + 1 times, the runs one count
    // each, and ℓ·L must be a count.
    for &steps in &args.steps {
        check_fits(&format!("--steps {steps}"), steps as u128 + 1, 8)?;
    }
    check_fits(&format!("--runs {}", args.runs), args.runs as u128, 8)?;
    for &ell in &args.ell {
        if ell
            .checked_mul(args.len)
            .is_none_or(|n| n > i32::MAX as usize)
        {
            bail!(
                "--ell {ell} × --len {} sub-tokens is more than this command simulates (at most \
                 {}); lower --ell or --len",
                args.len,
                i32::MAX
            );
        }
    }
    if !args.json {
        println!(
            "L = {}, {} runs per setting, {} schedule; ISR = idle steps / T",
            args.len, args.runs, args.schedule
        );
        println!(
            "{:>4} {:>6} {:>12} {:>9} {:>12} {:>12} {:>10} {:>10}",
            "ell",
            "T",
            "ISR meas.",
            "± s.e.",
            "closed form",
            "(1-1/T)^lL",
            "idle meas.",
            "NFE exp."
        );
    }
    for &steps in &args.steps {
        for &ell in &args.ell {
            let n_sub = ell * args.len;
            let idle: Vec<f64> = (0..args.runs)
                .map(|r| {
                    let mut rng = StdRng::seed_from_u64(step_seed(
                        args.seed,
                        r as u64,
                        (ell as u64)
                            .wrapping_mul(100_003)
                            .wrapping_add(steps as u64),
                    ));
                    simulate_idle_steps(&schedule, steps, n_sub, &mut rng) as f64
                })
                .collect();
            let (idle_mean, idle_se) = mean_stderr(&idle);
            let isr = idle_mean / steps as f64;
            let se = idle_se / steps as f64;
            let cf = isr_closed_form(&schedule, steps, n_sub);
            let paper = (1.0 - 1.0 / steps as f64).powi(n_sub as i32);
            let nfe = nfe_expected(&schedule, steps, n_sub);
            if args.json {
                println!(
                    "{}",
                    json!({"ell": ell, "len": args.len, "steps": steps, "runs": args.runs,
                        "isr_measured": isr, "isr_stderr": se, "isr_closed_form": cf,
                        "isr_paper_formula": paper, "idle_steps_measured": idle_mean,
                        "idle_steps_expected": cf * steps as f64, "nfe_expected": nfe,
                        "schedule": args.schedule})
                );
            } else {
                println!(
                    "{ell:>4} {steps:>6} {:>11.4}% {:>8.4}% {:>11.4}% {:>11.4}% {:>10.1} {:>10.1}",
                    isr * 100.0,
                    se * 100.0,
                    cf * 100.0,
                    paper * 100.0,
                    idle_mean,
                    nfe
                );
            }
        }
    }
    Ok(())
}
