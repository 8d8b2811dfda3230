//! `mdm-prime eval`: the valid bound (elbo) in nats/token, bits/token and perplexity with its
//! Monte-Carlo standard error, the paper's objective under its own name, and the unigram floor.

use mdm_prime::checkpoint::RunDir;
use mdm_prime::eval::{EvalReport, EvalSettings, evaluate};
use mdm_prime_core::data::unigram_nll;

use super::run::{bar, ensure_same_images, load_data, load_ema, run_config};
use crate::args::EvalArgs;

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let device = mdm_prime::device::parse_one(&args.device, "evaluation")?;
    let run = RunDir::new(&args.run);
    let cfg = run_config(&run, &args.overrides, &["eval"])?;
    let codec = cfg.codec()?;
    let (model, tables) = load_ema(&cfg, &run, &device)?;

    // The run's own corpus gives the training split (for the unigram floor) and, by default,
    // the validation blocks. An imported run records none (docs/import.md): there `--data` is
    // required, and its training split gives the unigram floor.
    let own_source = match (cfg.data.source.as_str(), &args.data) {
        ("", Some(source)) => source.clone(),
        ("", None) => anyhow::bail!(
            "{} records no training corpus (an imported checkpoint): pass --data <corpus or \
             images> to evaluate on",
            args.run.display()
        ),
        (source, _) => source.to_string(),
    };
    let train_data = load_data(&cfg, &own_source)?;
    let (blocks, label): (Vec<&[u32]>, String);
    let other;
    match &args.data {
        None => {
            blocks = (0..train_data.n_val())
                .map(|i| train_data.val_block(i))
                .collect();
            label = format!("{} (validation split)", train_data.source);
        }
        Some(source) => {
            other = load_data(&cfg, source)?;
            ensure_same_images(&cfg, &other)?;
            blocks = (0..other.n_train())
                .map(|i| other.train_block(i))
                .chain((0..other.n_val()).map(|i| other.val_block(i)))
                .collect();
            label = format!("{} (all blocks)", other.source);
        }
    }
    let blocks: Vec<&[u32]> = match cfg.eval.max_sequences {
        0 => blocks,
        n => blocks.into_iter().take(n).collect(),
    };
    let eval_tokens: Vec<u32> = blocks.concat();
    let unigram = unigram_nll(&train_data.train, &eval_tokens, codec.vocab_size());

    let settings = EvalSettings::from_config(&cfg);
    let pb = bar(
        blocks.len() as u64,
        "eval {pos}/{len} sequences [{bar:30}] ETA {eta}",
    );
    let report = evaluate(
        &model,
        &tables,
        &codec,
        &cfg.schedule,
        &blocks,
        &settings,
        &device,
        &mut |done, _| pb.set_position(done as u64),
    )?;
    pb.finish_and_clear();

    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["unigram_nats_per_token"] = unigram.into();
        v["unigram_ppl"] = unigram.exp().into();
        v["data"] = label.into();
        v["ell"] = codec.ell().into();
        if cfg.data.image.is_some() {
            v["elbo_bits_per_dim"] = report.elbo_bits_per_token.into();
            v["paper_objective_bits_per_dim"] =
                (report.paper_objective_nats_per_token / std::f64::consts::LN_2).into();
            v["histogram_bits_per_dim"] = (unigram / std::f64::consts::LN_2).into();
        }
        println!("{v}");
    } else {
        println!(
            "{label}: {} sequences × {} tokens, {} time draws each, EMA weights of {}",
            report.sequences,
            cfg.data.seq_len,
            report.time_draws,
            run.root.display()
        );
        print_report(&report, unigram, cfg.data.image.is_some());
    }
    Ok(())
}

/// The human-readable report: per token for text, per dimension (pixel channel) for images.
pub fn print_report(r: &EvalReport, unigram_nats: f64, image: bool) {
    if image {
        let ln2 = std::f64::consts::LN_2;
        println!(
            "  elbo (valid bound):      {:.4} ± {:.4} bits/dim ({:.4} nats/dim)",
            r.elbo_bits_per_token,
            r.elbo_stderr / ln2,
            r.elbo_nats_per_token
        );
        println!(
            "  paper joint objective (not a bound when ell > 1): {:.4} ± {:.4} bits/dim",
            r.paper_objective_nats_per_token / ln2,
            r.paper_objective_stderr / ln2
        );
        println!(
            "  floor: per-pixel-value histogram of the training split: {:.4} bits/dim",
            unigram_nats / ln2
        );
        return;
    }
    println!(
        "  elbo (valid bound):      {:.4} ± {:.4} nats/token = {:.4} bits/token, perplexity ≤ {:.3}",
        r.elbo_nats_per_token, r.elbo_stderr, r.elbo_bits_per_token, r.elbo_ppl
    );
    println!(
        "  paper objective (not a bound when ell > 1): {:.4} ± {:.4} nats/token (exp = {:.3})",
        r.paper_objective_nats_per_token, r.paper_objective_stderr, r.paper_objective_ppl
    );
    println!(
        "  unigram baseline (training-split frequencies): {:.4} nats/token, perplexity {:.3}",
        unigram_nats,
        unigram_nats.exp()
    );
}
