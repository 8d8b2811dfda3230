//! `mdm-prime genppl`: generative perplexity of samples under a judge (an autoregressive run or
//! a GPT-2) and their mean unigram entropy (docs/genppl.md).

use mdm_prime::genppl::{Judge, evaluate};
use mdm_prime_core::metrics::genppl::{Source, read_samples};

use super::run::bar;
use crate::args::GenpplArgs;

pub fn run(args: GenpplArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be ≥ 1");
    let device = mdm_prime::device::parse_one(&args.device, "genppl")?;
    // The samples first: a missing or empty file stops before the judge is loaded.
    let samples = read_samples(&args.samples)?;
    let judge = Judge::load(&args.judge, &device)?;
    let pb = bar(0, "genppl {pos}/{len} windows [{bar:30}] ETA {eta}");
    let report = evaluate(
        &judge,
        &args.samples,
        &samples,
        args.batch_size,
        &device,
        &mut |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    let from_text = report
        .per_sample
        .iter()
        .filter(|s| s.source == Source::Text)
        .count();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["judge"] = judge.describe().into();
        v["context"] = judge.context().into();
        v["samples_file"] = args.samples.display().to_string().into();
        v["retokenized"] = from_text.into();
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} samples of {} scored by {}",
        report.samples,
        args.samples.display(),
        judge.describe()
    );
    println!(
        "  generative perplexity: {:.3} (exp of {:.4} nats/token over {} scored tokens, \
         token-weighted)",
        report.gen_ppl, report.nll_per_token, report.scored_tokens
    );
    println!(
        "  mean NLL per sample:   {:.4} ± {:.4} nats/token",
        report.mean_sample_nll, report.mean_sample_nll_stderr
    );
    println!(
        "  unigram entropy:       {:.4} ± {:.4} nats per sample (diversity; repetitive samples \
         score low)",
        report.entropy, report.entropy_stderr
    );
    println!(
        "  {} of {} samples re-tokenised from their text; windows of {} tokens",
        from_text,
        report.samples,
        judge.context()
    );
    Ok(())
}
