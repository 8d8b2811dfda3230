//! `mdm-prime eval`: the valid bound (elbo) in nats/token, bits/token and perplexity with its
//! Monte-Carlo standard error, the paper's objective under its own name, and the unigram floor.
//! With several `--data` sets (zero-shot evaluation, design §9.2) one table, one row per set; an
//! autoregressive run's row is its exact perplexity.

use mdm_prime::checkpoint::RunDir;
use mdm_prime::eval::{EvalReport, EvalSettings, evaluate};
use mdm_prime_core::data::{Dataset, unigram_nll};

use super::run::{bar, ensure_same_images, load_data, load_ema, run_config};
use crate::args::EvalArgs;

/// The `--data` value that names the run's own validation split (`./validation` is a file).
const VALIDATION: &str = "validation";

/// One evaluated set: what the table row and the JSON object show.
struct SetResult {
    /// What the user passed (`--data`), or `validation` for the run's own split.
    name: String,
    /// The corpus and which blocks, e.g. `text file a.txt (all blocks)`.
    label: String,
    report: EvalReport,
    /// The unigram floor in nats/token.
    unigram: f64,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let device = mdm_prime::device::parse_one(&args.device, "evaluation")?;
    let run = RunDir::new(&args.run);
    let cfg = run_config(&run, &args.overrides, &["eval"])?;
    let codec = cfg.codec()?;
    let (model, tables) = load_ema(&cfg, &run, &device)?;
    let exact = cfg.model.kind() == "ar";

    // The run's own corpus gives the training split (for the unigram floor) and the validation
    // blocks (`--data validation`, the default). An imported run records none (docs/import.md):
    // there other `--data` sets are required, and each set's own training split gives its floor.
    let specs: Vec<String> = if args.data.is_empty() {
        vec![VALIDATION.to_owned()]
    } else {
        args.data.clone()
    };
    let train_data = match cfg.data.source.as_str() {
        "" if specs.iter().any(|s| s == VALIDATION) => anyhow::bail!(
            "{} records no training corpus (an imported checkpoint), so it has no validation \
             split: pass --data <corpus or images> to evaluate on",
            args.run.display()
        ),
        "" => None,
        source => Some(load_data(&cfg, source)?),
    };
    // Every set is read before any is evaluated, so that a missing file stops at once.
    let others = specs
        .iter()
        .filter(|s| *s != VALIDATION)
        .map(|source| {
            let d = load_data(&cfg, source)?;
            ensure_same_images(&cfg, &d)?;
            Ok((source.clone(), d))
        })
        .collect::<anyhow::Result<Vec<(String, Dataset)>>>()?;
    let mut others = others.iter();
    let mut sets: Vec<(String, String, Vec<&[u32]>, &Dataset)> = Vec::new();
    for spec in &specs {
        match (spec == VALIDATION, &train_data) {
            (true, Some(own)) => sets.push((
                spec.clone(),
                format!("{} (validation split)", own.source),
                (0..own.n_val()).map(|i| own.val_block(i)).collect(),
                own,
            )),
            _ => {
                let Some((name, d)) = others.next() else {
                    anyhow::bail!("internal: --data {spec} was not loaded");
                };
                let blocks = (0..d.n_train())
                    .map(|i| d.train_block(i))
                    .chain((0..d.n_val()).map(|i| d.val_block(i)))
                    .collect();
                let floor = train_data.as_ref().unwrap_or(d);
                sets.push((
                    name.clone(),
                    format!("{} (all blocks)", d.source),
                    blocks,
                    floor,
                ));
            }
        }
    }

    let settings = EvalSettings::from_config(&cfg);
    let mut results = Vec::new();
    for (name, label, blocks, floor) in sets {
        let blocks: Vec<&[u32]> = match cfg.eval.max_sequences {
            0 => blocks,
            n => blocks.into_iter().take(n).collect(),
        };
        anyhow::ensure!(
            !blocks.is_empty(),
            "{label}: no block of {} tokens to evaluate; give a longer corpus",
            cfg.data.seq_len
        );
        let eval_tokens: Vec<u32> = blocks.concat();
        let unigram = unigram_nll(&floor.train, &eval_tokens, codec.vocab_size());
        let pb = bar(
            blocks.len() as u64,
            "eval {msg} {pos}/{len} sequences [{bar:30}] ETA {eta}",
        );
        pb.set_message(name.clone());
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
        let result = SetResult {
            name,
            label,
            report,
            unigram,
        };
        if args.json {
            let mut v = serde_json::to_value(&result.report)?;
            let r = &result.report;
            v["set"] = result.name.clone().into();
            v["data"] = result.label.clone().into();
            v["unigram_nats_per_token"] = unigram.into();
            v["unigram_ppl"] = unigram.exp().into();
            v["elbo_ppl_stderr"] = (r.elbo_ppl * r.elbo_stderr).into();
            v["exact"] = exact.into();
            v["ell"] = codec.ell().into();
            if cfg.data.image.is_some() {
                v["elbo_bits_per_dim"] = r.elbo_bits_per_token.into();
                v["paper_objective_bits_per_dim"] =
                    (r.paper_objective_nats_per_token / std::f64::consts::LN_2).into();
                v["histogram_bits_per_dim"] = (unigram / std::f64::consts::LN_2).into();
            }
            println!("{v}");
        }
        results.push(result);
    }
    if args.json {
        return Ok(());
    }
    if let [r] = results.as_slice() {
        println!(
            "{}: {} sequences × {} tokens, {} time draws each, EMA weights of {}",
            r.label,
            r.report.sequences,
            cfg.data.seq_len,
            r.report.time_draws,
            run.root.display()
        );
        print_report(&r.report, r.unigram, cfg.data.image.is_some());
    } else {
        println!(
            "{} sets, EMA weights of {} ({}, ell = {}, {} tokens per sequence, {} time draws \
             each)",
            results.len(),
            run.root.display(),
            cfg.model.kind(),
            codec.ell(),
            cfg.data.seq_len,
            results[0].report.time_draws
        );
        print!("{}", table(&results, exact));
    }
    Ok(())
}

/// The zero-shot table: one row per set, perplexities with their standard errors (first order:
/// s.e.(exp x) ≈ exp(x)·s.e.(x)), then the sets' descriptions.
fn table(results: &[SetResult], exact: bool) -> String {
    let ppl = |nats: f64, se: f64| format!("{:.3} ± {:.3}", nats.exp(), nats.exp() * se);
    let head = [
        "set",
        "sequences",
        "tokens",
        if exact {
            "perplexity (exact)"
        } else {
            "perplexity ≤ (valid bound)"
        },
        "paper objective exp(·)",
        "unigram ppl",
    ];
    let rows: Vec<[String; 6]> = results
        .iter()
        .map(|r| {
            let rep = &r.report;
            [
                r.name.clone(),
                rep.sequences.to_string(),
                rep.tokens.to_string(),
                ppl(rep.elbo_nats_per_token, rep.elbo_stderr),
                if exact {
                    "= exact".to_owned()
                } else {
                    ppl(
                        rep.paper_objective_nats_per_token,
                        rep.paper_objective_stderr,
                    )
                },
                format!("{:.3}", r.unigram.exp()),
            ]
        })
        .collect();
    let width = |i: usize| {
        rows.iter()
            .map(|row| row[i].chars().count())
            .chain([head[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..6).map(width).collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i == 0 {
                out.push_str(&format!("  {c}{}", " ".repeat(pad)));
            } else {
                out.push_str(&format!("  {}{c}", " ".repeat(pad)));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(head.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if !exact {
        out.push_str(
            "  paper objective: the token-joint objective the paper reports; not a bound when \
             ell > 1 (design §4.5)\n",
        );
    }
    for r in results {
        out.push_str(&format!("  {}: {}\n", r.name, r.label));
    }
    out
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
